import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A small HTTP/1.1 server for the daemon's probes (`/healthz`, `/livez`): each GET is answered by
/// `respond(path)`, then the connection is closed (probes open one per request).
public final class ProbeServer: Sendable {
    /// An answer: status code, content type, body.
    public struct Answer: Sendable {
        public var status: Int
        public var contentType: String
        public var body: String
        /// More response headers.
        public var headers: [(String, String)]

        public init(status: Int, contentType: String = "application/json", body: String, headers: [(String, String)] = []) {
            self.status = status
            self.contentType = contentType
            self.body = body
            self.headers = headers
        }
    }

    private let channel: Channel
    /// The port listened on (useful when bound to port 0).
    public let port: Int

    private init(channel: Channel) {
        self.channel = channel
        self.port = channel.localAddress?.port ?? 0
    }

    /// Listens on `host:port` (port 0: any) on NIO's shared event loops.
    public static func start(host: String, port: Int, respond: @escaping @Sendable (String) -> Answer) throws -> ProbeServer {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(ProbeHandler(respond: respond))
                }
            }
        return ProbeServer(channel: try bootstrap.bind(host: host, port: port).wait())
    }

    /// Stops listening.
    public func stop() {
        try? channel.close().wait()
    }

    /// Splits `host:port` (`[v6]:port` too) as kube-proxy's bind-address flags are written.
    public static func splitAddress(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }
}

private final class ProbeHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let respond: @Sendable (String) -> ProbeServer.Answer
    private var path = "/"
    private var method = HTTPMethod.GET

    init(respond: @escaping @Sendable (String) -> ProbeServer.Answer) { self.respond = respond }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "/")
            method = head.method
        case .body:
            break
        case .end:
            let answer =
                method == .GET || method == .HEAD
                ? respond(path) : ProbeServer.Answer(status: 405, contentType: "text/plain", body: "method not allowed\n")
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: answer.contentType)
            headers.add(name: "X-Content-Type-Options", value: "nosniff")
            headers.add(name: "Content-Length", value: String(answer.body.utf8.count))
            headers.add(name: "Connection", value: "close")
            for (name, value) in answer.headers { headers.add(name: name, value: value) }
            let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: answer.status), headers: headers)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: answer.body)))), promise: nil)
            }
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
        }
    }
}

/// A moment in UTC, broken down for the fixed formats Go programs write (kube-proxy's healthz, the
/// endpoints controllers' trigger times).
public struct UTCTime: Sendable {
    /// `2006-01-02`
    public let date: String
    /// `15:04:05`
    public let clock: String
    public let nanoseconds: Int

    public init(_ moment: Date) {
        let seconds = moment.timeIntervalSince1970
        let whole = floor(seconds)
        var time = time_t(whole)
        var parts = tm()
        gmtime_r(&time, &parts)
        date = String(format: "%04d-%02d-%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday)
        clock = String(format: "%02d:%02d:%02d", parts.tm_hour, parts.tm_min, parts.tm_sec)
        nanoseconds = Int((seconds - whole) * 1e9)
    }
}

extension ProxyStatus {
    /// kube-proxy's `/healthz` and `/livez` answer: 200 when healthy (see `isHealthy`), else 503, with
    /// `{"lastUpdated": ..., "currentTime": ..., "nodeEligible": ...}` (times as Go prints them).
    public func healthAnswer(now: Date, limit: TimeInterval) -> ProbeServer.Answer {
        let healthy = isHealthy(now: now, limit: limit)
        let body = #"{"lastUpdated": "\#(ProxyStatus.goTime(lastSynced ?? Date(timeIntervalSince1970: 0)))","currentTime": "\#(ProxyStatus.goTime(now))", "nodeEligible": true}"#
        return ProbeServer.Answer(status: healthy ? 200 : 503, body: body + "\n")
    }

    /// `2006-01-02 15:04:05.999999999 +0000 UTC`, as Go's `time.Time.String` writes a UTC time.
    static func goTime(_ date: Date) -> String {
        let time = UTCTime(date)
        var text = "\(time.date) \(time.clock)"
        if time.nanoseconds > 0 {
            var fraction = String(format: "%09d", time.nanoseconds)
            while fraction.hasSuffix("0") { fraction.removeLast() }
            text += "." + fraction
        }
        return text + " +0000 UTC"
    }
}
