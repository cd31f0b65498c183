/// The part of a `v1 Pod` the EndpointSlice controller looks at.
public struct Pod: Sendable, Hashable {
    /// A declared container port (`spec.containers[].ports[]`).
    public struct ContainerPort: Sendable, Hashable {
        public var name: String
        public var containerPort: Int
        public var `protocol`: L4Protocol

        public init(name: String = "", containerPort: Int, protocol: L4Protocol = .tcp) {
            self.name = name
            self.containerPort = containerPort
            self.protocol = `protocol`
        }
    }

    public var meta: ObjectMeta
    public var nodeName: String?
    public var podIPs: [IPAddress]
    /// The `Ready` condition; `nil` when the pod reports no conditions at all.
    public var ready: Bool?
    public var phase: String?
    public var hostname: String?
    public var containerPorts: [ContainerPort]

    public init(
        meta: ObjectMeta, nodeName: String? = nil, podIPs: [IPAddress] = [], ready: Bool? = nil, phase: String? = nil,
        hostname: String? = nil, containerPorts: [ContainerPort] = []
    ) {
        self.meta = meta
        self.nodeName = nodeName
        self.podIPs = podIPs
        self.ready = ready
        self.phase = phase
        self.hostname = hostname
        self.containerPorts = containerPorts
    }

    /// Terminated pods (`Succeeded`/`Failed`) never back a Service.
    public var isTerminal: Bool { phase == "Succeeded" || phase == "Failed" }
    public var isTerminating: Bool { meta.deletionTimestamp != nil }
}

/// The part of a `v1 Node` a proxy needs: its labels (topology zone) and addresses.
public struct Node: Sendable, Hashable {
    public var meta: ObjectMeta
    public var addresses: [IPAddress]

    public init(meta: ObjectMeta, addresses: [IPAddress] = []) {
        self.meta = meta
        self.addresses = addresses
    }

    /// The label carrying a node's zone.
    public static let zoneLabel = "topology.kubernetes.io/zone"

    public var zone: String? { meta.labels[Node.zoneLabel] }
}

/// Any object Ferry reads, validated.
public enum KubeObject: Sendable, Hashable {
    case service(Service)
    case endpointSlice(EndpointSlice)
    case endpoints(Endpoints)
    case pod(Pod)
    case node(Node)

    public var meta: ObjectMeta {
        switch self {
        case .service(let value): return value.meta
        case .endpointSlice(let value): return value.meta
        case .endpoints(let value): return value.meta
        case .pod(let value): return value.meta
        case .node(let value): return value.meta
        }
    }

    public var kind: ObjectKind {
        switch self {
        case .service: return .service
        case .endpointSlice: return .endpointSlice
        case .endpoints: return .endpoints
        case .pod: return .pod
        case .node: return .node
        }
    }

    public var key: ObjectKey { ObjectKey(kind: kind, namespace: meta.namespace, name: meta.name) }
}
