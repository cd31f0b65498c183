import NIOCore
import NIOHTTP1

/// What a watch sends before live events: the changes since its resource version, or a synthetic ADDED
/// for every current object.
enum InitialEvents: Sendable {
    case history([StoredEvent])
    case snapshot([StoredObject])
}

/// One open watch response. Everything but the `let`s is touched only on the channel's event loop: the
/// server hands it events with `eventLoop.execute`, in resource-version order.
final class WatchStream: @unchecked Sendable {
    /// The partial event line `cutWatches(midEvent: true)` writes before closing.
    static let partialEventLine = "{\"type\":\"MODIFIED\",\"object\":{\"kind\":"

    let id: Int
    let resource: FakeResource
    let channel: Channel
    let filter: ObjectFilter
    let allowsBookmarks: Bool
    private let keepAlive: Bool
    private let server: FakeAPIServer
    private let startResourceVersion: Int

    private var isFinished = false
    private var pending: ByteBuffer?
    private var coalescedFlushScheduled = false
    private var timeoutTask: Scheduled<Void>?

    init(
        id: Int, resource: FakeResource, channel: Channel, filter: ObjectFilter, allowsBookmarks: Bool,
        keepAlive: Bool, startResourceVersion: Int, server: FakeAPIServer
    ) {
        self.id = id
        self.resource = resource
        self.channel = channel
        self.filter = filter
        self.allowsBookmarks = allowsBookmarks
        self.keepAlive = keepAlive
        self.startResourceVersion = startResourceVersion
        self.server = server
    }

    /// Writes the response head and the initial events, and arms the timeout.
    func begin(version: HTTPVersion, initial: InitialEvents, chunking: FakeChunking, timeoutSeconds: Int64) {
        channel.eventLoop.preconditionInEventLoop()
        channel.writeAndFlush(
            HTTPServerResponsePart.head(Self.streamHead(version: version, keepAlive: keepAlive)), promise: nil)
        switch initial {
        case .history(let events):
            for event in events { deliver(event, chunking: chunking, flush: false) }
        case .snapshot(let objects):
            for object in objects where filter.matches(object) {
                let line = Self.eventLine(type: "ADDED", allocator: channel.allocator) {
                    object.writeWatchObject(to: &$0, resource: resource, resourceVersion: object.resourceVersion)
                }
                send(line, chunking: chunking, flush: false)
            }
        }
        writePending()
        channel.flush()
        timeoutTask = channel.eventLoop.scheduleTask(in: .seconds(timeoutSeconds)) { self.timedOut() }
        channel.closeFuture.whenComplete { _ in self.connectionClosed() }
    }

    /// Sends one change, as the watch cache does: ADDED when the object starts matching the filter,
    /// MODIFIED while it matches, DELETED (the previous object at the new resource version) when it
    /// stops matching or is deleted.
    func deliver(_ event: StoredEvent, chunking: FakeChunking, flush: Bool = true) {
        // A watch from a resource version not reached yet starts after it, as kube-apiserver's does.
        guard !isFinished, event.resourceVersion > startResourceVersion else { return }
        let current = event.kind == .deleted ? nil : event.object.flatMap { filter.matches($0) ? $0 : nil }
        let previousMatched = event.previous.map(filter.matches) ?? false
        let type: String
        let object: StoredObject
        switch (current, previousMatched) {
        case (let current?, false): (type, object) = ("ADDED", current)
        case (let current?, true): (type, object) = ("MODIFIED", current)
        case (nil, true): (type, object) = ("DELETED", event.previous!)
        case (nil, false): return
        }
        let line = Self.eventLine(type: type, allocator: channel.allocator) {
            object.writeWatchObject(to: &$0, resource: resource, resourceVersion: event.resourceVersion)
        }
        send(line, chunking: chunking, flush: flush)
    }

    /// Sends a BOOKMARK at `resourceVersion` if the client asked for bookmarks.
    func bookmark(resourceVersion: Int, chunking: FakeChunking) {
        guard !isFinished, allowsBookmarks else { return }
        let line = Self.eventLine(type: "BOOKMARK", allocator: channel.allocator) {
            $0.writeString("{\"kind\":\"\(resource.kind)\",\"apiVersion\":\"\(resource.apiVersion)\",")
            $0.writeString("\"metadata\":{\"resourceVersion\":\"\(resourceVersion)\"}}")
        }
        send(line, chunking: chunking, flush: true)
    }

    /// Ends the watch with an ERROR event (Status 410 Expired, kube-apiserver's words for a watch whose
    /// history etcd compacted away), after a compaction. The server has already forgotten the watch.
    func expire() {
        guard !isFinished else { return }
        let status = WireFormat.status(
            code: 410, reason: "Expired", message: "The resourceVersion for the provided watch is too old.")
        let line = Self.eventLine(type: "ERROR", allocator: channel.allocator) { $0.writeString(status) }
        send(line, chunking: .whole, flush: false)
        end()
    }

    /// Closes the connection without ending the response, after part of an event line if `midEvent`.
    /// The server has already forgotten the watch.
    func cut(midEvent: Bool) {
        guard !isFinished else { return }
        isFinished = true
        timeoutTask?.cancel()
        writePending()
        let channel = channel
        if midEvent {
            let part = channel.allocator.buffer(string: Self.partialEventLine)
            channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(part))).whenComplete { _ in
                channel.close(promise: nil)
            }
        } else {
            channel.flush()
            channel.close(promise: nil)
        }
    }

    private func timedOut() {
        guard !isFinished else { return }
        server.removeWatch(self)
        end()
    }

    private func connectionClosed() {
        guard !isFinished else { return }
        isFinished = true
        timeoutTask?.cancel()
        server.removeWatch(self)
    }

    /// Ends the response cleanly (the final empty chunk); closes the connection unless kept alive.
    private func end() {
        isFinished = true
        timeoutTask?.cancel()
        writePending()
        let channel = channel
        let keepAlive = keepAlive
        channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }

    /// Writes an event line as the chunking says. `flush` is false for the initial events, which are
    /// flushed once at the end (split pieces included: a flush per piece made a 20,000-object replay
    /// take seconds in debug builds); live events are flushed as they go, piece by piece.
    private func send(_ line: ByteBuffer, chunking: FakeChunking, flush: Bool) {
        switch chunking {
        case .whole:
            writePending()
            channel.write(HTTPServerResponsePart.body(.byteBuffer(line)), promise: nil)
            if flush { channel.flush() }
        case .split:
            writePending()
            let length = line.readableBytes
            guard length >= 3 else {
                channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(line)), promise: nil)
                return
            }
            var cuts = Set<Int>()
            let pieces = Int.random(in: 2...3)
            while cuts.count < pieces - 1 { cuts.insert(Int.random(in: 1..<length)) }
            var start = 0
            for cut in cuts.sorted() + [length] {
                let piece = line.getSlice(at: line.readerIndex + start, length: cut - start)!
                channel.write(HTTPServerResponsePart.body(.byteBuffer(piece)), promise: nil)
                if flush { channel.flush() }
                start = cut
            }
        case .coalesced:
            if pending == nil {
                pending = line
            } else {
                var line = line
                pending!.writeBuffer(&line)
            }
            if flush && !coalescedFlushScheduled {
                // A moment's wait lets the events that follow at once join this chunk.
                coalescedFlushScheduled = true
                channel.eventLoop.scheduleTask(in: .milliseconds(2)) {
                    self.coalescedFlushScheduled = false
                    guard !self.isFinished else { return }
                    self.writePending()
                    self.channel.flush()
                }
            }
        }
    }

    /// Writes the coalesced event lines waiting, as one chunk (not flushed).
    private func writePending() {
        guard let pending, pending.readableBytes > 0 else { return }
        self.pending = nil
        channel.write(HTTPServerResponsePart.body(.byteBuffer(pending)), promise: nil)
    }

    /// The head of a streamed (chunked) JSON response.
    static func streamHead(version: HTTPVersion, keepAlive: Bool) -> HTTPResponseHead {
        var headers = HTTPHeaders([
            ("Content-Type", "application/json"), ("Cache-Control", "no-cache, private"),
            ("Transfer-Encoding", "chunked"),
        ])
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        return HTTPResponseHead(version: version, status: .ok, headers: headers)
    }

    /// One watch event line: `{"type":"…","object":…}\n`.
    static func eventLine(type: String, allocator: ByteBufferAllocator, object: (inout ByteBuffer) -> Void)
        -> ByteBuffer
    {
        var buffer = allocator.buffer(capacity: 512)
        buffer.writeStaticString("{\"type\":\"")
        buffer.writeString(type)
        buffer.writeStaticString("\",\"object\":")
        object(&buffer)
        buffer.writeStaticString("}\n")
        return buffer
    }
}
