import NIOCore
import NIOHTTP1

/// Serves the HTTP requests of one connection: admission (stalls, auth, faults), lists and watches.
final class RequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: FakeAPIServer
    private var requestHead: HTTPRequestHead?

    init(server: FakeAPIServer) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            requestHead = head
        case .body:
            break
        case .end:
            guard let head = requestHead else { return }
            requestHead = nil
            serve(head, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func serve(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let admission = server.admit(
            method: head.method.rawValue, uri: head.uri, authorization: head.headers.first(name: "Authorization"))
        switch admission {
        case .stall:
            return
        case .unauthorized:
            return respondWithStatus(401, head: head, context: context)
        case .fault(let code, let retryAfterSeconds):
            return respondWithStatus(code, retryAfterSeconds: retryAfterSeconds, head: head, context: context)
        case .proceed:
            break
        }
        guard head.method == .GET else { return respondWithStatus(405, head: head, context: context) }
        let (path, query) = WireFormat.splitURI(head.uri)
        guard let (resource, namespace) = FakeResource.route(path) else {
            return respondWithStatus(404, head: head, context: context)
        }
        let filter: ObjectFilter
        do {
            filter = try ObjectFilter(
                labelSelector: query["labelSelector"], fieldSelector: query["fieldSelector"], namespace: namespace)
        } catch {
            return respondWithStatus(400, message: error.message, head: head, context: context)
        }
        if query["watch"] == "1" || query["watch"] == "true" {
            watch(resource, filter: filter, query: query, head: head, context: context)
        } else {
            list(resource, filter: filter, query: query, head: head, context: context)
        }
    }

    private func list(
        _ resource: FakeResource, filter: ObjectFilter, query: [String: String], head: HTTPRequestHead,
        context: ChannelHandlerContext
    ) {
        let limit = max(0, query["limit"].flatMap { Int($0) } ?? 0)
        switch server.list(
            resource, filter: filter, limit: limit, continueToken: query["continue"], allocator: context.channel.allocator)
        {
        case .page(let body):
            respond(.ok, body: body, head: head, context: context)
        case .failure(let code, let reason, let message):
            respondWithStatus(code, reason: reason, message: message, head: head, context: context)
        }
    }

    private func watch(
        _ resource: FakeResource, filter: ObjectFilter, query: [String: String], head: HTTPRequestHead,
        context: ChannelHandlerContext
    ) {
        let versionText = query["resourceVersion"] ?? ""
        var requested: Int?
        if !versionText.isEmpty && versionText != "0" {
            guard let version = Int(versionText), version > 0 else {
                return respondWithStatus(
                    400, reason: "BadRequest", message: "resourceVersion: Invalid value: \"\(versionText)\"",
                    head: head, context: context)
            }
            requested = version
        }
        let allowsBookmarks = query["allowWatchBookmarks"] == "true" || query["allowWatchBookmarks"] == "1"
        let timeoutSeconds = query["timeoutSeconds"].flatMap { Int64($0) }.flatMap { $0 > 0 ? $0 : nil } ?? 1800
        let opening = server.openWatch(
            resource, filter: filter, from: requested, allowsBookmarks: allowsBookmarks, keepAlive: head.isKeepAlive,
            channel: context.channel)
        switch opening {
        case .opened(let stream, let initial, let chunking):
            stream.begin(version: head.version, initial: initial, chunking: chunking, timeoutSeconds: timeoutSeconds)
        case .tooOld(let message, asHTTPStatus: true):
            respondWithStatus(410, reason: "Expired", message: message, head: head, context: context)
        case .tooOld(let message, asHTTPStatus: false):
            // kube-apiserver answers 200 and a single ERROR event, then ends the response.
            let keepAlive = head.isKeepAlive
            context.write(
                wrapOutboundOut(.head(WatchStream.streamHead(version: head.version, keepAlive: keepAlive))),
                promise: nil)
            let line = WatchStream.eventLine(type: "ERROR", allocator: context.channel.allocator) {
                $0.writeString(WireFormat.status(code: 410, reason: "Expired", message: message))
            }
            context.write(wrapOutboundOut(.body(.byteBuffer(line))), promise: nil)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }

    private func respondWithStatus(
        _ code: Int, reason: String? = nil, message: String? = nil, retryAfterSeconds: Int? = nil,
        head: HTTPRequestHead, context: ChannelHandlerContext
    ) {
        let body = WireFormat.status(code: code, reason: reason, message: message, retryAfterSeconds: retryAfterSeconds)
        var extraHeaders = HTTPHeaders()
        if let retryAfterSeconds { extraHeaders.add(name: "Retry-After", value: String(retryAfterSeconds)) }
        respond(
            HTTPResponseStatus(statusCode: code), body: context.channel.allocator.buffer(string: body),
            extraHeaders: extraHeaders, head: head, context: context)
    }

    private func respond(
        _ status: HTTPResponseStatus, body: ByteBuffer, extraHeaders: HTTPHeaders = HTTPHeaders(),
        head: HTTPRequestHead, context: ChannelHandlerContext
    ) {
        let keepAlive = head.isKeepAlive
        var headers = HTTPHeaders([
            ("Content-Type", "application/json"), ("Cache-Control", "no-cache, private"),
            ("Content-Length", String(body.readableBytes)),
        ])
        headers.add(contentsOf: extraHeaders)
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
