import AsyncHTTPClient
import FerryCore
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// What went wrong talking to the API server, naming the server and the request.
public enum KubeAPIError: Error, Sendable, CustomStringConvertible {
    /// The configuration cannot be used (a bad CA, an unreadable token file).
    case access(ClusterAccessError)
    /// No answer: connection refused, TLS failure, timeout, connection cut.
    case transport(server: String, request: String, problem: String)
    /// An HTTP error status, with the `Status` message the server gave and its `Retry-After`.
    case status(server: String, request: String, code: Int, reason: String, message: String, retryAfter: Duration?)
    /// A body that is not what the API server sends.
    case decoding(server: String, request: String, problem: String)

    public var description: String {
        switch self {
        case .access(let error): return error.description
        case .transport(let server, let request, let problem): return "API server \(server): \(request): \(problem)"
        case .status(let server, let request, let code, let reason, let message, _):
            let phrase = HTTPResponseStatus(statusCode: code).reasonPhrase
            var text = "API server \(server): \(request): \(code) \(phrase)"
            if !message.isEmpty, message != phrase { text += ": \(message)" } else if !reason.isEmpty, reason != phrase { text += " (\(reason))" }
            if code == 401 { text += " (check the token or client certificate)" }
            if code == 403 { text += " (the credentials may not list or watch this resource)" }
            return text
        case .decoding(let server, let request, let problem): return "API server \(server): \(request): \(problem)"
        }
    }

    /// 410 Gone: the resourceVersion or continue token is too old; list again.
    public var isGone: Bool {
        if case .status(_, _, 410, _, _, _) = self { return true }
        return false
    }

    /// How long the server asked to wait (429, 503), if it did.
    public var retryAfter: Duration? {
        if case .status(_, _, _, _, _, let after) = self { return after }
        return nil
    }
}

/// Timeouts of the API client. The defaults are client-go's spirit: a list that takes a minute is
/// dead; a watch is renewed every 5-10 minutes and abandoned when silent past its own deadline.
public struct KubeAPITimeouts: Sendable, Hashable {
    public var connect: Duration
    /// A whole list page, request to last byte.
    public var list: Duration
    /// The server-side `timeoutSeconds` of a watch (randomized up to twice this, as client-go does).
    public var watch: Duration
    /// How long past the server-side timeout a watch may stay open before it is considered dead.
    public var watchGrace: Duration

    public init(connect: Duration = .seconds(10), list: Duration = .seconds(60), watch: Duration = .seconds(300), watchGrace: Duration = .seconds(30)) {
        self.connect = connect
        self.list = list
        self.watch = watch
        self.watchGrace = watchGrace
    }
}

/// An HTTP client for one API server: GETs of lists, and watches read line by line. One
/// AsyncHTTPClient (SwiftNIO; TLS with swift-nio-ssl) with its connection pool: requests reuse kept-alive
/// connections, and HTTP/2 is negotiated where the server offers it, so that all watches share one.
public final class KubeAPIClient: Sendable {
    public let access: ClusterAccess
    public let timeouts: KubeAPITimeouts
    /// The largest list page or watch event accepted: Kubernetes objects are at most ~1.5 MiB in etcd.
    public let maximumBodyBytes: Int
    private let http: HTTPClient
    private let tokens: TokenSource

    public init(access: ClusterAccess, timeouts: KubeAPITimeouts = KubeAPITimeouts(), maximumBodyBytes: Int = 64 << 20) throws(KubeAPIError) {
        self.access = access
        self.timeouts = timeouts
        self.maximumBodyBytes = maximumBodyBytes
        self.tokens = TokenSource(access: access)
        var tls = TLSConfiguration.makeClientConfiguration()
        do {
            if let pem = access.certificateAuthorityPEM {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(pem))
            }
            if let certificate = access.clientCertificatePEM, let key = access.clientKeyPEM {
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(certificate).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: key, format: .pem))
            }
        } catch {
            throw .access(ClusterAccessError("\(access.origin): the certificate authority or client certificate is not valid PEM: \(error)"))
        }
        if access.insecureSkipTLSVerify { tls.certificateVerification = .none }
        if access.tlsServerName != nil {
            throw .access(ClusterAccessError("\(access.origin): tls-server-name is not supported yet; name the server by an address its certificate carries"))
        }
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow,
            timeout: .init(connect: .nanoseconds(Int64(timeouts.connect.components.seconds) * 1_000_000_000)))
        configuration.httpVersion = .automatic
        // Kept-alive connections are reused by every list and watch; a few spare ones are enough.
        configuration.connectionPool = .init(idleTimeout: .seconds(90), concurrentHTTP1ConnectionsPerHostSoftLimit: 8)
        // A refused connection or a TLS failure is reported at once: the reflectors retry with their own
        // back-off (and log each failure), and `ferry get` should not sit out the connect timeout (10 s).
        configuration.connectionPool.retryConnectionEstablishment = false
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// Closes the connections.
    public func shutdown() async {
        try? await http.shutdown()
    }

    deinit {
        // AsyncHTTPClient insists on a shutdown; one already done is answered with an error, ignored.
        http.shutdown { _ in }
    }

    /// GETs `pathAndQuery` and returns the whole body (a list page).
    public func get(_ pathAndQuery: String) async throws(KubeAPIError) -> ByteBuffer {
        let response = try await send(pathAndQuery, deadline: timeouts.list)
        do {
            return try await response.body.collect(upTo: maximumBodyBytes)
        } catch is NIOTooManyBytesError {
            throw .decoding(server: access.server, request: "GET \(pathAndQuery)", problem: "the response is larger than \(maximumBodyBytes >> 20) MiB")
        } catch {
            throw transport("GET \(pathAndQuery)", error)
        }
    }

    /// Opens a watch; `onLine` gets each complete line of the body (an event), and the call returns
    /// when the server ends the stream. A line longer than `maximumBodyBytes` is an error.
    public func watch(
        _ pathAndQuery: String, serverTimeout: Duration, onLine: (UnsafeRawBufferPointer) throws(KubeAPIError) -> Void
    ) async throws(KubeAPIError) {
        let request = "GET \(pathAndQuery)"
        let response = try await send(pathAndQuery, deadline: serverTimeout + timeouts.watchGrace)
        var pending = ByteBuffer()
        do {
            for try await var chunk in response.body {
                pending.writeBuffer(&chunk)
                while let newline = pending.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                    let length = newline - pending.readerIndex
                    if length > 0 {
                        try pending.withUnsafeReadableBytes { bytes in try onLine(UnsafeRawBufferPointer(rebasing: bytes[..<length])) }
                    }
                    pending.moveReaderIndex(forwardBy: length + 1)
                }
                if pending.readableBytes > maximumBodyBytes {
                    throw KubeAPIError.decoding(server: access.server, request: request, problem: "a watch event is larger than \(maximumBodyBytes >> 20) MiB")
                }
                pending.discardReadBytes()
            }
        } catch let error as KubeAPIError {
            throw error
        } catch {
            throw transport(request, error)
        }
        // A last line without a newline is a cut event: it is not applied.
        if pending.readableBytes > 0 {
            throw KubeAPIError.transport(server: access.server, request: request, problem: "the watch ended in the middle of an event")
        }
    }

    private func send(_ pathAndQuery: String, deadline: Duration) async throws(KubeAPIError) -> HTTPClientResponse {
        let requestText = "GET \(pathAndQuery)"
        var request = HTTPClientRequest(url: access.server + pathAndQuery)
        request.method = .GET
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "ferry (kube-proxy replacement)")
        do {
            if let token = try tokens.current() { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        } catch {
            throw .access(error)
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .nanoseconds(Int64(deadline.components.seconds) * 1_000_000_000 + deadline.components.attoseconds / 1_000_000_000))
        } catch {
            throw transport(requestText, error)
        }
        guard (200..<300).contains(Int(response.status.code)) else {
            let body = (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer()
            let status = body.withUnsafeReadableBytes { APIResponseDecoder.status($0) }
            let retryAfter = response.headers.first(name: "Retry-After").flatMap(Int.init).map { Duration.seconds($0) }
            throw .status(
                server: access.server, request: requestText, code: Int(response.status.code), reason: status?.reason ?? "",
                message: status?.message ?? "", retryAfter: retryAfter)
        }
        return response
    }

    private func transport(_ request: String, _ error: any Error) -> KubeAPIError {
        var problem = String(describing: error)
        if let client = error as? HTTPClientError {
            switch client {
            case .deadlineExceeded, .readTimeout: problem = "no answer in time (the request timed out)"
            case .connectTimeout: problem = "cannot connect: timed out"
            case .remoteConnectionClosed: problem = "the server closed the connection"
            default: problem = "\(client)"
            }
        } else if let ssl = error as? NIOSSLError {
            problem = "TLS failed: \(ssl) (is the certificate authority right?)"
        } else if let ssl = error as? BoringSSLError {
            problem = "TLS failed: \(ssl) (is the certificate authority right?)"
        } else if error is CancellationError {
            problem = "cancelled"
        }
        return .transport(server: access.server, request: request, problem: problem)
    }
}
