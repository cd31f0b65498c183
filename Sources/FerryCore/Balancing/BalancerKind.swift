/// How the userspace data plane picks a backend for a new connection.
public enum BalancerKind: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Each backend in turn (the legacy userspace proxy's behaviour; the default).
    case roundRobin = "round-robin"
    /// The backend with the fewest open connections; ties in turn.
    case leastConnections = "least-connections"
    /// A uniformly random backend.
    case random
    /// Consistent hashing of the client address (Maglev): a client keeps its backend while others come and go.
    case maglev

    /// The Service annotation that overrides `--userspace-balancer` for one service.
    public static let annotation = "ferry.io/userspace-balancer"

    public var description: String { rawValue }

    /// The accepted spellings, for error messages.
    public static var choices: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// A backend's address: its identity for balancing, affinity and back-off.
public struct BackendAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var ip: IPAddress
    public var port: Int

    public init(ip: IPAddress, port: Int) {
        self.ip = ip
        self.port = port
    }

    public init(_ backend: Backend) { self.init(ip: backend.ip, port: backend.port) }

    public var description: String { ip.joined(port: port) }

    public static func < (lhs: BackendAddress, rhs: BackendAddress) -> Bool { (lhs.ip, lhs.port) < (rhs.ip, rhs.port) }
}
