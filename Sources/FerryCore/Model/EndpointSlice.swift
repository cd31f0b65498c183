/// The conditions of one endpoint, with the API's nil defaults already applied.
public struct EndpointConditions: Sendable, Hashable {
    /// Ready to receive new traffic. API default when absent: `true`.
    public var ready: Bool
    /// Serving regardless of termination. API default when absent: the value of `ready`.
    public var serving: Bool
    /// Shutting down. API default when absent: `false`.
    public var terminating: Bool

    public init(ready: Bool = true, serving: Bool? = nil, terminating: Bool = false) {
        self.ready = ready
        self.serving = serving ?? ready
        self.terminating = terminating
    }

    /// Applies the API's defaults to conditions as they appear on the wire.
    public init(readyField: Bool?, servingField: Bool?, terminatingField: Bool?) {
        self.init(ready: readyField ?? true, serving: servingField, terminating: terminatingField ?? false)
    }
}

/// One entry of an EndpointSlice's `endpoints`.
public struct SliceEndpoint: Sendable, Hashable {
    public var addresses: [IPAddress]
    public var conditions: EndpointConditions
    public var nodeName: String?
    public var zone: String?
    public var hostname: String?
    /// `hints.forZones[].name`.
    public var zoneHints: [String]
    /// `hints.forNodes[].name`.
    public var nodeHints: [String]
    /// `targetRef` as `Kind namespace/name`, for display.
    public var targetRef: String?

    public init(
        addresses: [IPAddress], conditions: EndpointConditions = EndpointConditions(), nodeName: String? = nil,
        zone: String? = nil, hostname: String? = nil, zoneHints: [String] = [], nodeHints: [String] = [],
        targetRef: String? = nil
    ) {
        self.addresses = addresses
        self.conditions = conditions
        self.nodeName = nodeName
        self.zone = zone
        self.hostname = hostname
        self.zoneHints = zoneHints
        self.nodeHints = nodeHints
        self.targetRef = targetRef
    }
}

/// One entry of an EndpointSlice's `ports`. `name` is empty for the unnamed port.
public struct SlicePort: Sendable, Hashable {
    public var name: String
    public var `protocol`: L4Protocol
    public var port: Int?

    public init(name: String = "", protocol: L4Protocol = .tcp, port: Int?) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
    }
}

/// Where an EndpointSlice Ferry holds came from.
public enum SliceOrigin: String, Sendable, Hashable {
    /// Read as an EndpointSlice.
    case endpointSlice = "EndpointSlice"
    /// Mirrored from a v1 Endpoints object.
    case endpoints = "Endpoints"
    /// Derived from Pods matching the Service's selector.
    case pods = "Pods"
}

/// A `discovery.k8s.io/v1 EndpointSlice`, validated.
public struct EndpointSlice: Sendable, Hashable {
    /// `IPv4`, `IPv6` or `FQDN`; FQDN slices are kept but never used for forwarding.
    public enum AddressType: String, Sendable, Hashable, Codable, CaseIterable {
        case ipv4 = "IPv4"
        case ipv6 = "IPv6"
        case fqdn = "FQDN"
    }

    public var meta: ObjectMeta
    /// The owning Service's name, from the label `kubernetes.io/service-name`.
    public var serviceName: String
    public var addressType: AddressType
    public var endpoints: [SliceEndpoint]
    public var ports: [SlicePort]
    public var origin: SliceOrigin

    /// The label that joins a slice to its Service.
    public static let serviceNameLabel = "kubernetes.io/service-name"

    public init(
        meta: ObjectMeta, serviceName: String, addressType: AddressType = .ipv4, endpoints: [SliceEndpoint] = [],
        ports: [SlicePort] = [], origin: SliceOrigin = .endpointSlice
    ) {
        self.meta = meta
        self.serviceName = serviceName
        self.addressType = addressType
        self.endpoints = endpoints
        self.ports = ports
        self.origin = origin
    }

    public var service: ServiceName { ServiceName(namespace: meta.namespace, name: serviceName) }
}

/// A legacy `v1 Endpoints` object: subsets of addresses sharing a port list.
public struct Endpoints: Sendable, Hashable {
    /// One address of a subset.
    public struct Address: Sendable, Hashable {
        public var ip: IPAddress
        public var nodeName: String?
        public var hostname: String?
        public var targetRef: String?

        public init(ip: IPAddress, nodeName: String? = nil, hostname: String? = nil, targetRef: String? = nil) {
            self.ip = ip
            self.nodeName = nodeName
            self.hostname = hostname
            self.targetRef = targetRef
        }
    }

    /// Addresses that share one set of ports.
    public struct Subset: Sendable, Hashable {
        public var addresses: [Address]
        public var notReadyAddresses: [Address]
        public var ports: [SlicePort]

        public init(addresses: [Address] = [], notReadyAddresses: [Address] = [], ports: [SlicePort] = []) {
            self.addresses = addresses
            self.notReadyAddresses = notReadyAddresses
            self.ports = ports
        }
    }

    public var meta: ObjectMeta
    public var subsets: [Subset]

    public init(meta: ObjectMeta, subsets: [Subset] = []) {
        self.meta = meta
        self.subsets = subsets
    }

    public var service: ServiceName { ServiceName(namespace: meta.namespace, name: meta.name) }
}
