/// Identifies one port of one Service: `namespace/name:port-name/PROTOCOL`
/// (`default/web:http/TCP`; the port name is left out with its colon for an unnamed port).
public struct ServicePortName: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var service: ServiceName
    public var port: String
    public var `protocol`: L4Protocol

    public init(service: ServiceName, port: String, protocol: L4Protocol) {
        self.service = service
        self.port = port
        self.protocol = `protocol`
    }

    public var description: String {
        port.isEmpty ? "\(service)/\(`protocol`.rawValue)" : "\(service):\(port)/\(`protocol`.rawValue)"
    }

    public static func < (lhs: ServicePortName, rhs: ServicePortName) -> Bool {
        (lhs.service, lhs.port, lhs.protocol) < (rhs.service, rhs.port, rhs.protocol)
    }
}

/// One endpoint of one service port, as the data plane sees it: where to send traffic, and the
/// conditions and topology that decide whether it may.
public struct Backend: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var ip: IPAddress
    public var port: Int
    public var nodeName: String?
    public var zone: String?
    public var zoneHints: [String]
    public var nodeHints: [String]
    public var ready: Bool
    public var serving: Bool
    public var terminating: Bool
    /// On this node (its `nodeName` is the node Ferry runs on).
    public var isLocal: Bool
    /// What the endpoint points at, e.g. `Pod default/web-1`, for display.
    public var targetRef: String?

    public init(
        ip: IPAddress, port: Int, nodeName: String? = nil, zone: String? = nil, zoneHints: [String] = [],
        nodeHints: [String] = [], ready: Bool = true, serving: Bool? = nil, terminating: Bool = false,
        isLocal: Bool = false, targetRef: String? = nil
    ) {
        self.ip = ip
        self.port = port
        self.nodeName = nodeName
        self.zone = zone
        self.zoneHints = zoneHints
        self.nodeHints = nodeHints
        self.ready = ready
        self.serving = serving ?? ready
        self.terminating = terminating
        self.isLocal = isLocal
        self.targetRef = targetRef
    }

    /// `ip:port`, the endpoint's identity within a service port.
    public var description: String { ip.joined(port: port) }

    /// Usable when no endpoint is ready: still serving while shutting down.
    public var isServingTerminating: Bool { serving && terminating }

    public static func < (lhs: Backend, rhs: Backend) -> Bool { (lhs.ip, lhs.port) < (rhs.ip, rhs.port) }
}

/// The node Ferry runs on, as endpoint selection and frontend matching need it.
public struct NodeContext: Sendable, Hashable {
    public var name: String
    /// `topology.kubernetes.io/zone` of this node, for topology hints.
    public var zone: String?
    /// The addresses NodePorts are reachable on.
    public var addresses: [IPAddress]

    public init(name: String, zone: String? = nil, addresses: [IPAddress] = []) {
        self.name = name
        self.zone = zone
        self.addresses = addresses
    }
}
