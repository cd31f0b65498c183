import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// A small Kubernetes API server for tests and benchmarks: it lists and watches Services,
/// EndpointSlices and Nodes on 127.0.0.1 with kube-apiserver's wire format (Status bodies, continue
/// tokens, chunked watch streams, bookmarks, 410 after compaction), and fails on demand.
///
/// Every method may be called from any thread while requests are served, except `stop()`, which must
/// not be called from the server's own event loop.
public final class FakeAPIServer: @unchecked Sendable {
    /// The TLS files served with, or nil for plain HTTP.
    public let tls: FakeTLS?
    /// Whether TLS clients must present a certificate signed by the CA.
    public let requireClientCertificate: Bool

    let state: Mutex<ServerState>

    /// A server with `tls` (nil: plain HTTP) that requires `Authorization: Bearer <token>` (nil: no token).
    /// With `requireClientCertificate`, TLS clients must present a certificate signed by `tls`'s CA; a
    /// token is then required as well only if `token` is not nil.
    public init(tls: FakeTLS?, token: String?, requireClientCertificate: Bool = false) {
        precondition(!requireClientCertificate || tls != nil, "FakeAPIServer: client certificates need TLS")
        self.tls = tls
        self.requireClientCertificate = requireClientCertificate
        var initial = ServerState()
        initial.token = token
        state = Mutex(initial)
    }

    deinit {
        let group = state.withLock { $0.group }
        group?.shutdownGracefully { _ in }
    }

    // MARK: - Lifecycle

    /// Listens on 127.0.0.1 on a free port, on one event loop thread, and returns the port.
    @discardableResult
    public func start() throws -> Int {
        try start { $0.bind(host: "127.0.0.1", port: 0) }
    }

    /// Serves on a stream socket the caller has already bound (and possibly put in listening state),
    /// for example one made inside a test network namespace; the server owns it from now on and closes
    /// it on `stop()`. Returns the socket's port. `url` names the socket's own address.
    @discardableResult
    public func start(boundSocket descriptor: CInt) throws -> Int {
        try start { $0.withBoundSocket(descriptor) }
    }

    private func start(_ listen: (ServerBootstrap) -> EventLoopFuture<Channel>) throws -> Int {
        precondition(state.withLock { $0.group == nil }, "FakeAPIServer: already started")
        let sslContext = try tls.map { try Self.makeSSLContext($0, requireClientCertificate: requireClientCertificate) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [weak self] channel in
                guard let self else { return channel.close() }
                state.withLock { $0.connectionsAccepted += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(RequestHandler(server: self))
                }
            }
        let channel: Channel
        do {
            channel = try listen(bootstrap).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
        let port = channel.localAddress?.port ?? 0
        var host = channel.localAddress?.ipAddress ?? "127.0.0.1"
        if host.contains(":") { host = "[\(host)]" }
        state.withLock {
            $0.group = group
            $0.serverChannel = channel
            $0.port = port
            $0.host = host
        }
        return port
    }

    /// Closes the listener, every connection and watch, and shuts the event loop down. Waits for it.
    public func stop() {
        let (group, channel) = state.withLock { state in
            defer {
                state.group = nil
                state.serverChannel = nil
            }
            _ = state.takeAllWatches()
            return (state.group, state.serverChannel)
        }
        try? channel?.close().wait()
        try? group?.syncShutdownGracefully()
    }

    /// The port listened on (0 before `start()`).
    public var port: Int { state.withLock { $0.port } }

    /// `https://127.0.0.1:PORT`, or `http://…` without TLS (the bound socket's address if not 127.0.0.1).
    public var url: String {
        let (host, port) = state.withLock { ($0.host, $0.port) }
        return "\(tls == nil ? "http" : "https")://\(host):\(port)"
    }

    /// A kubeconfig (YAML) for this server: a cluster with its URL and CA (base64 of the CA PEM), a user
    /// with `token` (and the client certificate and key when client certificates are required), and
    /// `context` as the current context.
    public func kubeconfig(token: String?, context: String = "fake") -> String {
        let name = WireFormat.jsonString(context)
        let base64 = { (path: String) in
            (try? Data(contentsOf: URL(fileURLWithPath: path)).base64EncodedString()) ?? ""
        }
        var lines = [
            "apiVersion: v1", "kind: Config", "clusters:", "- name: \(name)", "  cluster:", "    server: \(url)",
        ]
        if let tls { lines.append("    certificate-authority-data: \(base64(tls.caPEMPath))") }
        var user: [String] = []
        if let token { user.append("    token: \(WireFormat.jsonString(token))") }
        if let tls, requireClientCertificate {
            user.append("    client-certificate-data: \(base64(tls.clientCertPath))")
            user.append("    client-key-data: \(base64(tls.clientKeyPath))")
        }
        lines += ["users:", "- name: \(name)"]
        lines += user.isEmpty ? ["  user: {}"] : ["  user:"] + user
        lines += [
            "contexts:", "- name: \(name)", "  context:", "    cluster: \(name)", "    user: \(name)",
            "current-context: \(name)",
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    /// Replaces the accepted bearer token (nil: no token needed). Open watches go on.
    public func setToken(_ token: String?) {
        state.withLock { $0.token = token }
    }

    // MARK: - State

    /// Stores or replaces (by namespace and name) an object given as JSON text, at the next resource
    /// version, and sends ADDED or MODIFIED to the watches. Returns the resource version.
    ///
    /// The text needs a `metadata` object with a `name` (a precondition). The server writes
    /// `metadata.resourceVersion` itself (one given is dropped), leaves `kind` and `apiVersion` out of
    /// list items and puts them in watch events; whitespace outside strings is dropped.
    @discardableResult
    public func upsert(_ resource: FakeResource, _ objectJSON: String) -> Int {
        let parsed = ParsedObject(json: objectJSON, resource: resource)
        return state.withLock { state in
            state.resourceVersion += 1
            let version = state.resourceVersion
            let object = StoredObject(parsed, resourceVersion: version)
            let index = resource.storeIndex
            let previous = state.stores[index].objects.updateValue(object, forKey: object.key)
            state.stores[index].sortedCache = nil
            state.record(
                StoredEvent(
                    kind: previous == nil ? .added : .modified, resourceVersion: version, object: object,
                    previous: previous),
                in: resource)
            return version
        }
    }

    /// Deletes an object and sends DELETED (the object at the new resource version) to the watches.
    /// Returns the new resource version, or nil if there was no such object. `namespace` is ignored for
    /// Nodes.
    @discardableResult
    public func delete(_ resource: FakeResource, namespace: String?, name: String) -> Int? {
        let key = resource.isNamespaced ? "\(namespace ?? "")/\(name)" : name
        return state.withLock { state in
            let index = resource.storeIndex
            guard let previous = state.stores[index].objects.removeValue(forKey: key) else { return nil }
            state.resourceVersion += 1
            state.stores[index].sortedCache = nil
            state.record(
                StoredEvent(
                    kind: .deleted, resourceVersion: state.resourceVersion, object: nil, previous: previous),
                in: resource)
            return state.resourceVersion
        }
    }

    /// Stores many objects (as `upsert` does, one resource version each) without watch events. Watches
    /// on `resource` from a resource version before the load can no longer be served (they get 410):
    /// list first. An empty array changes nothing.
    public func load(_ resource: FakeResource, _ objectsJSON: [String]) {
        guard !objectsJSON.isEmpty else { return }
        let parsed = objectsJSON.map { ParsedObject(json: $0, resource: resource) }
        state.withLock { state in
            let index = resource.storeIndex
            state.stores[index].objects.reserveCapacity(state.stores[index].objects.count + parsed.count)
            for object in parsed {
                state.resourceVersion += 1
                state.stores[index].objects[object.key] = StoredObject(object, resourceVersion: state.resourceVersion)
            }
            state.stores[index].sortedCache = nil
            state.stores[index].history.removeAll()
            state.stores[index].historyFloor = state.resourceVersion
        }
    }

    /// The current resource version (the last change's, across all resources).
    public var resourceVersion: Int { state.withLock { $0.resourceVersion } }

    // MARK: - Faults

    /// The next `count` requests whose URI (path and query) starts with `pathPrefix` (any request if nil)
    /// are answered with `status` and a Status body (reason and message as kube-apiserver gives them:
    /// 500 InternalError "internal error", 429 TooManyRequests "Too many requests", …), plus
    /// `Retry-After` and `details.retryAfterSeconds` when `retryAfterSeconds` is given. Requests without
    /// a valid token get 401 first and do not count.
    public func failNext(_ count: Int, status: Int, retryAfterSeconds: Int? = nil, pathPrefix: String? = nil) {
        guard count > 0 else { return }
        state.withLock {
            $0.faults.append(
                FaultRule(remaining: count, status: status, retryAfterSeconds: retryAfterSeconds, pathPrefix: pathPrefix))
        }
    }

    /// Makes everything up to the current resource version too old, as an etcd compaction does: watches
    /// from an older resource version get 410 (see `compactionAnswersWithHTTPStatus`), open watches get
    /// an ERROR event (Status 410 Expired) and end, and continue tokens issued before get HTTP 410 Expired.
    public func compact() {
        state.withLock { state in
            state.compactedResourceVersion = state.resourceVersion
            state.compactionGeneration += 1
            state.snapshots.removeAll()
            state.snapshotOrder.removeAll()
            for index in state.stores.indices {
                state.stores[index].history.removeAll()
                state.stores[index].historyFloor = max(state.stores[index].historyFloor, state.resourceVersion)
            }
            for watch in state.takeAllWatches() {
                watch.channel.eventLoop.execute { watch.expire() }
            }
        }
    }

    /// How a watch from a too-old resource version is answered: false (the default, as kube-apiserver
    /// does) HTTP 200 with one ERROR event (Status code 410) and the end of the response; true HTTP 410
    /// with a Status body.
    public var compactionAnswersWithHTTPStatus: Bool {
        get { state.withLock { $0.compactionAnswersWithHTTPStatus } }
        set { state.withLock { $0.compactionAnswersWithHTTPStatus = newValue } }
    }

    /// Closes every open watch's connection without ending its response. With `midEvent`, first writes
    /// the start of an event line that is never finished (`{"type":"MODIFIED","object":{"kind":`), which
    /// a client must not apply.
    public func cutWatches(midEvent: Bool) {
        state.withLock { state in
            for watch in state.takeAllWatches() {
                watch.channel.eventLoop.execute { watch.cut(midEvent: midEvent) }
            }
        }
    }

    /// Sends a BOOKMARK at the current resource version on every open watch that asked for bookmarks
    /// (`allowWatchBookmarks=true`).
    public func sendBookmarks() {
        state.withLock { state in
            let version = state.resourceVersion
            let chunking = state.chunking
            for store in state.stores {
                for watch in store.watches.values where watch.allowsBookmarks {
                    watch.channel.eventLoop.execute { watch.bookmark(resourceVersion: version, chunking: chunking) }
                }
            }
        }
    }

    /// The next `count` requests whose URI starts with `pathPrefix` (any if nil) are read and never
    /// answered; their connections stay open until the client closes them or `stop()`.
    public func stallNext(_ count: Int, pathPrefix: String? = nil) {
        guard count > 0 else { return }
        state.withLock { $0.stalls.append(StallRule(remaining: count, pathPrefix: pathPrefix)) }
    }

    /// How watch event lines are cut into HTTP chunks (default `.split`). Applies to events sent after
    /// the change.
    public var chunking: FakeChunking {
        get { state.withLock { $0.chunking } }
        set { state.withLock { $0.chunking = newValue } }
    }

    // MARK: - Observation

    /// Every request received, as `METHOD URI` (`GET /api/v1/services?limit=500`), in arrival order.
    public var requests: [String] { state.withLock { $0.requests } }

    /// How many connections have been accepted.
    public var connectionsAccepted: Int { state.withLock { $0.connectionsAccepted } }

    /// How many watches are open (registered to receive live events).
    public var activeWatches: Int { state.withLock { $0.stores.reduce(0) { $0 + $1.watches.count } } }

    // MARK: - Serving (event loop)

    /// What to do with a request before looking at it.
    enum Admission {
        case stall
        case unauthorized
        case fault(status: Int, retryAfterSeconds: Int?)
        case proceed
    }

    /// Records a request and decides whether it stalls, is refused for its token, or fails on demand.
    func admit(method: String, uri: String, authorization: String?) -> Admission {
        state.withLock { state in
            state.requests.append("\(method) \(uri)")
            let matches = { (prefix: String?) in prefix.map { uri.hasPrefix($0) } ?? true }
            if let index = state.stalls.firstIndex(where: { matches($0.pathPrefix) }) {
                state.stalls[index].remaining -= 1
                if state.stalls[index].remaining == 0 { state.stalls.remove(at: index) }
                return .stall
            }
            if let token = state.token {
                guard let authorization, let space = authorization.firstIndex(of: " "),
                    authorization[..<space].lowercased() == "bearer",
                    authorization[authorization.index(after: space)...] == token
                else { return .unauthorized }
            }
            if let index = state.faults.firstIndex(where: { matches($0.pathPrefix) }) {
                let rule = state.faults[index]
                state.faults[index].remaining -= 1
                if state.faults[index].remaining == 0 { state.faults.remove(at: index) }
                return .fault(status: rule.status, retryAfterSeconds: rule.retryAfterSeconds)
            }
            return .proceed
        }
    }

    /// A list request's answer.
    enum ListOutcome {
        case page(ByteBuffer)
        case failure(code: Int, reason: String, message: String)
    }

    /// Answers a list: the objects passing `filter`, ordered by key, `limit` at a time (0: all) from
    /// where `continueToken` says, in the snapshot the first page was taken from.
    func list(
        _ resource: FakeResource, filter: ObjectFilter, limit: Int, continueToken: String?,
        allocator: ByteBufferAllocator
    ) -> ListOutcome {
        var token: ContinueToken?
        if let continueToken, !continueToken.isEmpty {
            guard let decoded = ContinueToken(encoded: continueToken) else {
                return .failure(code: 400, reason: "BadRequest", message: "continue key is not valid")
            }
            token = decoded
        }
        let snapshot: (objects: [StoredObject], resourceVersion: Int, generation: Int)? = state.withLock { state in
            let index = resource.storeIndex
            guard let token else {
                return (state.stores[index].sortedObjects(), state.resourceVersion, state.compactionGeneration)
            }
            guard token.generation >= state.compactionGeneration else { return nil }
            let objects =
                state.snapshots[SnapshotKey(resource: resource, resourceVersion: token.resourceVersion)]
                ?? state.stores[index].sortedObjects()
            return (objects, token.resourceVersion, state.compactionGeneration)
        }
        guard let snapshot else {
            return .failure(code: 410, reason: "Expired", message: WireFormat.expiredContinueMessage)
        }
        let objects = snapshot.objects
        var cursor = 0
        if let token {
            var high = objects.count
            while cursor < high {
                let middle = (cursor + high) / 2
                if objects[middle].key < token.start { cursor = middle + 1 } else { high = middle }
            }
        }
        var page: [StoredObject] = []
        while cursor < objects.count && (limit == 0 || page.count < limit) {
            if filter.matches(objects[cursor]) { page.append(objects[cursor]) }
            cursor += 1
        }
        var more = false
        if limit > 0 && page.count == limit {
            more = objects[cursor...].contains(where: filter.matches)
        }

        var size = 200
        for object in page { size += object.headMembers.utf8.count + object.tail.utf8.count + 40 }
        var body = allocator.buffer(capacity: size)
        body.writeString(
            "{\"kind\":\"\(resource.listKind)\",\"apiVersion\":\"\(resource.apiVersion)\",\"metadata\":{\"resourceVersion\":\"\(snapshot.resourceVersion)\""
        )
        if more, let last = page.last {
            let next = ContinueToken(
                resourceVersion: snapshot.resourceVersion, start: last.key + "\u{0}", generation: snapshot.generation)
            body.writeString(",\"continue\":\"\(next.encoded)\"")
            if filter.isEverything { body.writeString(",\"remainingItemCount\":\(objects.count - cursor)") }
            state.withLock {
                $0.keepSnapshot(objects, for: SnapshotKey(resource: resource, resourceVersion: snapshot.resourceVersion))
            }
        }
        body.writeStaticString("},\"items\":[")
        for (position, object) in page.enumerated() {
            if position > 0 { body.writeStaticString(",") }
            object.writeListItem(to: &body, resourceVersion: object.resourceVersion)
        }
        body.writeStaticString("]}")
        return .page(body)
    }

    /// How a watch request opens.
    enum WatchOpening {
        case opened(WatchStream, InitialEvents, FakeChunking)
        case tooOld(message: String, asHTTPStatus: Bool)
    }

    /// Registers a watch on `resource` from `resourceVersion` (nil: a synthetic ADDED per current object
    /// first), atomically with taking its initial events, so that no change is missed or sent twice.
    func openWatch(
        _ resource: FakeResource, filter: ObjectFilter, from resourceVersion: Int?, allowsBookmarks: Bool,
        keepAlive: Bool, channel: Channel
    ) -> WatchOpening {
        state.withLock { state in
            let index = resource.storeIndex
            if let resourceVersion {
                let oldest = max(state.compactedResourceVersion, state.stores[index].historyFloor)
                if resourceVersion < oldest {
                    return .tooOld(
                        message: WireFormat.tooOldMessage(requested: resourceVersion, oldest: oldest),
                        asHTTPStatus: state.compactionAnswersWithHTTPStatus)
                }
            }
            state.nextWatchID += 1
            let stream = WatchStream(
                id: state.nextWatchID, resource: resource, channel: channel, filter: filter,
                allowsBookmarks: allowsBookmarks, keepAlive: keepAlive,
                startResourceVersion: resourceVersion ?? 0, server: self)
            state.stores[index].watches[stream.id] = stream
            let initial: InitialEvents =
                if let resourceVersion {
                    .history(state.stores[index].events(after: resourceVersion))
                } else {
                    .snapshot(state.stores[index].sortedObjects())
                }
            return .opened(stream, initial, state.chunking)
        }
    }

    /// Forgets a watch that ended on its own (timeout, closed connection).
    func removeWatch(_ stream: WatchStream) {
        state.withLock { _ = $0.stores[stream.resource.storeIndex].watches.removeValue(forKey: stream.id) }
    }

    private static func makeSSLContext(_ tls: FakeTLS, requireClientCertificate: Bool) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(tls.serverCertPath).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: tls.serverKeyPath, format: .pem)))
        configuration.applicationProtocols = ["http/1.1"]
        if requireClientCertificate {
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .file(tls.caPEMPath)
        }
        return try NIOSSLContext(configuration: configuration)
    }
}
