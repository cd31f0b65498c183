/// How a Service is exposed (`spec.type`).
public enum ServiceType: String, Sendable, Hashable, Codable, CaseIterable {
    case clusterIP = "ClusterIP"
    case nodePort = "NodePort"
    case loadBalancer = "LoadBalancer"
    case externalName = "ExternalName"
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
public enum TrafficPolicy: String, Sendable, Hashable, Codable, CaseIterable {
    case cluster = "Cluster"
    case local = "Local"
}

/// `sessionAffinity`, with the ClientIP timeout folded in.
public enum SessionAffinity: Sendable, Hashable {
    case none
    /// The same client IP goes to the same endpoint until `timeoutSeconds` after its last connection.
    case clientIP(timeoutSeconds: Int)

    /// kube-proxy's default ClientIP timeout: three hours.
    public static let defaultTimeoutSeconds = 10_800
}

/// A Service port's `targetPort`: a number, or the name of a container port.
public enum TargetPort: Sendable, Hashable, CustomStringConvertible {
    case number(Int)
    case name(String)

    public var description: String {
        switch self {
        case .number(let value): return String(value)
        case .name(let value): return value
        }
    }
}

/// One entry of `spec.ports`.
public struct ServicePort: Sendable, Hashable {
    public var name: String
    public var `protocol`: L4Protocol
    public var port: Int
    public var targetPort: TargetPort
    /// The NodePort, when the Service type allocates one.
    public var nodePort: Int?

    public init(name: String = "", protocol: L4Protocol = .tcp, port: Int, targetPort: TargetPort? = nil, nodePort: Int? = nil) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
        self.targetPort = targetPort ?? .number(port)
        self.nodePort = nodePort
    }
}

/// `status.loadBalancer.ingress[]`: an address the cloud load balancer sends traffic from or to.
public struct LoadBalancerIngress: Sendable, Hashable {
    /// How traffic to `ip` reaches the node: `VIP` (the default; the proxy handles the IP) or `Proxy`
    /// (the load balancer rewrites the destination; the proxy must not capture the IP).
    public enum Mode: String, Sendable, Hashable, Codable, CaseIterable {
        case vip = "VIP"
        case proxy = "Proxy"
    }

    public var ip: IPAddress?
    public var hostname: String?
    public var ipMode: Mode

    public init(ip: IPAddress?, hostname: String? = nil, ipMode: Mode = .vip) {
        self.ip = ip
        self.hostname = hostname
        self.ipMode = ipMode
    }
}

/// `spec.ipFamilyPolicy`.
public enum IPFamilyPolicy: String, Sendable, Hashable, Codable, CaseIterable {
    case singleStack = "SingleStack"
    case preferDualStack = "PreferDualStack"
    case requireDualStack = "RequireDualStack"
}

/// A `v1 Service`, validated: every address parsed, every port in range, every default applied.
public struct Service: Sendable, Hashable {
    public var meta: ObjectMeta
    public var type: ServiceType
    /// `spec.clusterIPs` (or `spec.clusterIP`); empty for headless (`None`) and unallocated services.
    public var clusterIPs: [IPAddress]
    /// `spec.clusterIP: None`.
    public var isHeadless: Bool
    public var ipFamilies: [IPFamily]
    public var ports: [ServicePort]
    /// `spec.selector`; `nil` for a selector-less Service whose endpoints are managed by hand.
    public var selector: [String: String]?
    public var externalIPs: [IPAddress]
    public var externalName: String?
    public var sessionAffinity: SessionAffinity
    public var externalTrafficPolicy: TrafficPolicy
    public var internalTrafficPolicy: TrafficPolicy
    public var healthCheckNodePort: Int?
    public var trafficDistribution: String?
    public var publishNotReadyAddresses: Bool
    public var loadBalancerIngress: [LoadBalancerIngress]
    /// The userspace balancer asked for by the `ferry.io/userspace-balancer` annotation.
    public var userspaceBalancer: BalancerKind?
    /// `spec.loadBalancerSourceRanges`: the clients a LoadBalancer service's load-balancer IPs accept
    /// (empty: any).
    public var loadBalancerSourceRanges: [CIDR]
    /// `spec.ipFamilyPolicy`; `nil` when not written (single-stack then, as the API server defaults it).
    public var ipFamilyPolicy: IPFamilyPolicy?
    /// `spec.allocateLoadBalancerNodePorts` (default true): whether a LoadBalancer gets NodePorts.
    public var allocateLoadBalancerNodePorts: Bool = true
    /// What Ferry filled in, standing in for the API server (manifest mode).
    public var allocated: AllocatedFields = []

    public init(
        meta: ObjectMeta, type: ServiceType = .clusterIP, clusterIPs: [IPAddress] = [], isHeadless: Bool = false,
        ipFamilies: [IPFamily] = [], ports: [ServicePort] = [], selector: [String: String]? = nil,
        externalIPs: [IPAddress] = [], externalName: String? = nil, sessionAffinity: SessionAffinity = .none,
        externalTrafficPolicy: TrafficPolicy = .cluster, internalTrafficPolicy: TrafficPolicy = .cluster,
        healthCheckNodePort: Int? = nil, trafficDistribution: String? = nil, publishNotReadyAddresses: Bool = false,
        loadBalancerIngress: [LoadBalancerIngress] = [], userspaceBalancer: BalancerKind? = nil, loadBalancerSourceRanges: [CIDR] = []
    ) {
        self.loadBalancerSourceRanges = loadBalancerSourceRanges
        self.userspaceBalancer = userspaceBalancer
        self.meta = meta
        self.type = type
        self.clusterIPs = clusterIPs
        self.isHeadless = isHeadless
        self.ipFamilies = ipFamilies.isEmpty ? Array(Set(clusterIPs.map(\.family))).sorted { $0.rawValue < $1.rawValue } : ipFamilies
        self.ports = ports
        self.selector = selector
        self.externalIPs = externalIPs
        self.externalName = externalName
        self.sessionAffinity = sessionAffinity
        self.externalTrafficPolicy = externalTrafficPolicy
        self.internalTrafficPolicy = internalTrafficPolicy
        self.healthCheckNodePort = healthCheckNodePort
        self.trafficDistribution = trafficDistribution
        self.publishNotReadyAddresses = publishNotReadyAddresses
        self.loadBalancerIngress = loadBalancerIngress
    }

    public var name: ServiceName { ServiceName(namespace: meta.namespace, name: meta.name) }

    /// Why a node proxy ignores this Service, or `nil` when it programs it.
    /// kube-proxy skips ExternalName services and those without a cluster IP (headless or unallocated).
    public var skipReason: String? {
        if type == .externalName { return "ExternalName service" }
        if isHeadless { return "headless service (clusterIP: None)" }
        if clusterIPs.isEmpty { return "no cluster IP" }
        return nil
    }

    /// Reachable from outside the cluster: a NodePort, a LoadBalancer, or externalIPs.
    /// Only then does `externalTrafficPolicy` apply (Kubernetes' `ExternallyAccessible`).
    public var isExternallyAccessible: Bool {
        type == .nodePort || type == .loadBalancer || (type == .clusterIP && !externalIPs.isEmpty)
    }

    /// The `ip` of every ingress a proxy should capture (`ipMode: Proxy` ones are left to the load balancer).
    public var loadBalancerVIPs: [IPAddress] {
        guard type == .loadBalancer else { return [] }
        return loadBalancerIngress.compactMap { $0.ipMode == .vip ? $0.ip : nil }
    }
}
