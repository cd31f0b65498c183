import Foundation

/// The kinds of Kubernetes object a node proxy reads.
public enum ObjectKind: String, Sendable, Hashable, Comparable, CaseIterable, Codable {
    case service = "Service"
    case endpointSlice = "EndpointSlice"
    case endpoints = "Endpoints"
    case pod = "Pod"
    case node = "Node"

    /// Ordered by name, as the raw values compare, without comparing strings (sorting keys is on the
    /// path of every reload).
    public static func < (lhs: ObjectKind, rhs: ObjectKind) -> Bool { lhs.rank < rhs.rank }

    private var rank: Int {
        switch self {
        case .endpointSlice: return 0
        case .endpoints: return 1
        case .node: return 2
        case .pod: return 3
        case .service: return 4
        }
    }
}

/// Identifies one object: its kind, namespace (empty for cluster-scoped kinds) and name.
public struct ObjectKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var kind: ObjectKind
    public var namespace: String
    public var name: String

    public init(kind: ObjectKind, namespace: String, name: String) {
        self.kind = kind
        self.namespace = namespace
        self.name = name
    }

    /// `Kind namespace/name`, or `Kind name` for cluster-scoped objects.
    public var description: String {
        namespace.isEmpty ? "\(kind.rawValue) \(name)" : "\(kind.rawValue) \(namespace)/\(name)"
    }

    public static func < (lhs: ObjectKey, rhs: ObjectKey) -> Bool {
        (lhs.kind, lhs.namespace, lhs.name) < (rhs.kind, rhs.namespace, rhs.name)
    }
}

/// A Service's identity: namespace and name.
public struct ServiceName: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var namespace: String
    public var name: String

    public init(namespace: String, name: String) {
        self.namespace = namespace
        self.name = name
    }

    public var description: String { "\(namespace)/\(name)" }

    public static func < (lhs: ServiceName, rhs: ServiceName) -> Bool {
        (lhs.namespace, lhs.name) < (rhs.namespace, rhs.name)
    }
}

/// The metadata Ferry keeps of every object.
public struct ObjectMeta: Sendable, Hashable {
    public var name: String
    public var namespace: String
    public var labels: [String: String]
    public var annotations: [String: String]
    public var creationTimestamp: Date?
    public var deletionTimestamp: Date?
    public var resourceVersion: String?

    public init(
        name: String, namespace: String = "", labels: [String: String] = [:], annotations: [String: String] = [:],
        creationTimestamp: Date? = nil, deletionTimestamp: Date? = nil, resourceVersion: String? = nil
    ) {
        self.name = name
        self.namespace = namespace
        self.labels = labels
        self.annotations = annotations
        self.creationTimestamp = creationTimestamp
        self.deletionTimestamp = deletionTimestamp
        self.resourceVersion = resourceVersion
    }
}

/// The transport protocols a Service port can carry.
public enum L4Protocol: String, Sendable, Hashable, Comparable, CaseIterable, Codable {
    case tcp = "TCP"
    case udp = "UDP"
    case sctp = "SCTP"

    /// Parses `TCP`, `tcp`, `Tcp`… ; `nil` for anything else.
    public init?(caseInsensitive text: String) {
        self.init(rawValue: text.uppercased())
    }

    public static func < (lhs: L4Protocol, rhs: L4Protocol) -> Bool { lhs.rawValue < rhs.rawValue }
}
