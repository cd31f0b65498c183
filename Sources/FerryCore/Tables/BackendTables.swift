/// How traffic reaches a service port.
public enum FrontendKind: String, Sendable, Hashable, Comparable {
    case clusterIP = "ClusterIP"
    case nodePort = "NodePort"
    case externalIP = "ExternalIP"
    case loadBalancer = "LoadBalancer"

    /// External frontends follow `externalTrafficPolicy`; the ClusterIP follows `internalTrafficPolicy`.
    public var isExternal: Bool { self != .clusterIP }

    public static func < (lhs: FrontendKind, rhs: FrontendKind) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One address and port a service port is reachable on. `address` is `nil` for a NodePort,
/// which is reachable on every node address.
public struct Frontend: Sendable, Hashable, CustomStringConvertible {
    public var kind: FrontendKind
    public var address: IPAddress?
    public var port: Int

    public init(kind: FrontendKind, address: IPAddress?, port: Int) {
        self.kind = kind
        self.address = address
        self.port = port
    }

    public var description: String {
        guard let address else { return "<node-ip>:\(port)" }
        return address.joined(port: port)
    }
}

/// An endpoint of the service that cannot serve this port, and why (for `ferry explain`).
public struct UnmatchedEndpoint: Sendable, Hashable {
    public var address: IPAddress
    public var slice: String
    public var reason: String

    public init(address: IPAddress, slice: String, reason: String) {
        self.address = address
        self.slice = slice
        self.reason = reason
    }
}

/// Everything a data plane needs to forward one service port.
public struct ServicePortTable: Sendable, Hashable {
    public var name: ServicePortName
    public var serviceType: ServiceType
    public var port: Int
    public var nodePort: Int?
    public var clusterIPs: [IPAddress]
    public var externalIPs: [IPAddress]
    public var loadBalancerIPs: [IPAddress]
    public var sessionAffinity: SessionAffinity
    public var policy: SelectionPolicy
    public var healthCheckNodePort: Int?
    /// Every endpoint of this port, merged across slices and sorted, whatever its condition.
    public var endpoints: [Backend]
    public var categories: EndpointCategories
    /// Endpoints of the service that carry no port matching this one.
    public var unmatched: [UnmatchedEndpoint]
    /// Where the endpoints came from (slices, mirrored Endpoints, or Pods); `nil` when there are none.
    public var origin: SliceOrigin?
    /// The userspace balancer the Service asks for (annotation `ferry.io/userspace-balancer`); `nil`:
    /// the proxy's default.
    public var balancer: BalancerKind? = nil
    /// The clients the load-balancer IPs accept (`loadBalancerSourceRanges`; empty: any).
    public var loadBalancerSourceRanges: [CIDR] = []

    /// The endpoints traffic to the ClusterIP may go to.
    public var internalBackends: [Backend] { policy.internalLocal ? categories.local : categories.cluster }
    /// The endpoints traffic to a NodePort, externalIP or load-balancer IP may go to.
    public var externalBackends: [Backend] { policy.externalLocal ? categories.local : categories.cluster }

    /// The backends for traffic arriving through a frontend of `kind`.
    public func backends(for kind: FrontendKind) -> [Backend] { kind.isExternal ? externalBackends : internalBackends }

    /// Every address and port this service port is reachable on.
    /// The sources the load-balancer IPs of `family` accept, as kube-proxy decides them; `nil`: any source.
    /// Only the ranges of that family count (a service whose ranges are all of the other family is not
    /// filtered in this one, as kube-proxy). When the node's primary address of the family is in a
    /// range, the load-balancer IPs themselves are allowed too: a VIP that is local to the node is the
    /// source the node's own connections to it leave from. Pods get no exception: their address must be
    /// in a range like any client's.
    public func loadBalancerAllowedSources(family: IPFamily, nodeIP: IPAddress?) -> [CIDR]? {
        let ranges = loadBalancerSourceRanges.filter { $0.address.family == family }
        let addresses = loadBalancerIPs.filter { $0.family == family }
        guard !ranges.isEmpty, !addresses.isEmpty else { return nil }
        guard let nodeIP, ranges.contains(where: { $0.contains(nodeIP) }) else { return ranges }
        return ranges + addresses.map { CIDR(host: $0) }
    }

    public var frontends: [Frontend] {
        var result = clusterIPs.map { Frontend(kind: .clusterIP, address: $0, port: port) }
        if let nodePort { result.append(Frontend(kind: .nodePort, address: nil, port: nodePort)) }
        result += externalIPs.map { Frontend(kind: .externalIP, address: $0, port: port) }
        result += loadBalancerIPs.map { Frontend(kind: .loadBalancer, address: $0, port: port) }
        return result
    }
}

/// The per-service-port tables: the one value that flows from the change tracker to the data planes.
public struct BackendTables: Sendable, Hashable {
    public private(set) var ports: [ServicePortName: ServicePortTable] = [:]
    private var portsByService: [ServiceName: [ServicePortName]] = [:]

    public init() {}

    public init(_ tables: [ServicePortTable]) {
        for table in tables { insert(table) }
    }

    /// Every service port, sorted by name.
    public var sorted: [ServicePortTable] { ports.values.sorted { $0.name < $1.name } }
    public var count: Int { ports.count }

    public subscript(name: ServicePortName) -> ServicePortTable? { ports[name] }

    /// The ports of one service, sorted by name.
    public func ports(of service: ServiceName) -> [ServicePortTable] {
        (portsByService[service] ?? []).compactMap { ports[$0] }.sorted { $0.name < $1.name }
    }

    public var services: [ServiceName] { portsByService.keys.sorted() }

    mutating func insert(_ table: ServicePortTable) {
        if ports.updateValue(table, forKey: table.name) == nil {
            portsByService[table.name.service, default: []].append(table.name)
        }
    }

    /// Replaces the ports of `service` with `tables`; returns the names of ports that were added,
    /// removed or changed.
    mutating func replace(service: ServiceName, with tables: [ServicePortTable]) -> Set<ServicePortName> {
        var changed: Set<ServicePortName> = []
        let previous = portsByService.removeValue(forKey: service) ?? []
        var old: [ServicePortName: ServicePortTable] = [:]
        for name in previous {
            old[name] = ports.removeValue(forKey: name)
        }
        for table in tables {
            insert(table)
            if old.removeValue(forKey: table.name) != table { changed.insert(table.name) }
        }
        changed.formUnion(old.keys)
        return changed
    }

    /// The service ports a packet to `address:port` over `protocol` reaches, with how it reaches each.
    /// NodePorts match on any of `nodeAddresses` (and on loopback, as kube-proxy allows on localhost).
    public func match(address: IPAddress, port: Int, protocol l4: L4Protocol, nodeAddresses: [IPAddress])
        -> [(table: ServicePortTable, frontend: Frontend)]
    {
        var result: [(ServicePortTable, Frontend)] = []
        let isNodeAddress = nodeAddresses.contains(address) || address.isLoopback
        for table in sorted where table.name.protocol == l4 {
            for frontend in table.frontends where frontend.port == port {
                if frontend.kind == .nodePort {
                    if isNodeAddress { result.append((table, Frontend(kind: .nodePort, address: address, port: port))) }
                } else if frontend.address == address {
                    result.append((table, frontend))
                }
            }
        }
        return result
    }
}
