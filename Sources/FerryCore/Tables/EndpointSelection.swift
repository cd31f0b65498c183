/// Which topology rule narrowed the Cluster-policy endpoints, decided from the endpoints' hints.
public enum TopologyMode: String, Sendable, Hashable {
    /// No narrowing: every ready endpoint.
    case none = ""
    /// Every ready endpoint has node hints and one names this node.
    case preferSameNode = "PreferSameNode"
    /// Every ready endpoint has zone hints and one names this node's zone.
    case preferSameZone = "PreferSameZone"
}

/// The traffic policies of one service port that endpoint selection depends on.
public struct SelectionPolicy: Sendable, Hashable {
    /// `internalTrafficPolicy: Local`.
    public var internalLocal: Bool
    /// `externalTrafficPolicy: Local` on an externally reachable service.
    public var externalLocal: Bool
    /// Has a NodePort, externalIPs or load-balancer VIPs.
    public var externallyAccessible: Bool

    public init(internalLocal: Bool = false, externalLocal: Bool = false, externallyAccessible: Bool = false) {
        self.internalLocal = internalLocal
        self.externalLocal = externalLocal && externallyAccessible
        self.externallyAccessible = externallyAccessible
    }

    /// Sends some traffic by Cluster policy: internal Cluster traffic, or any external traffic (with Local
    /// external policy, traffic from inside the cluster to external addresses still uses Cluster endpoints).
    public var usesClusterEndpoints: Bool { !internalLocal || externallyAccessible }
    /// Sends some traffic by Local policy.
    public var usesLocalEndpoints: Bool { internalLocal || externalLocal }
}

/// The result of endpoint selection for one service port (kube-proxy's `CategorizeEndpoints`).
public struct EndpointCategories: Sendable, Hashable {
    /// Endpoints for Cluster-policy traffic: ready ones (narrowed by topology hints), or if none is ready
    /// anywhere, the serving-terminating ones. Empty when the port never uses Cluster policy.
    public var cluster: [Backend] = []
    /// Endpoints for Local-policy traffic: this node's ready ones, or if none, this node's serving-terminating
    /// ones. Empty when the port never uses Local policy.
    public var local: [Backend] = []
    /// The union of both: every endpoint this node may send traffic to.
    public var allReachable: [Backend] = []
    /// Some endpoint anywhere in the cluster is usable, even if none is reachable from this node
    /// (then Local-policy traffic is dropped rather than rejected).
    public var hasAnyEndpoints = false
    public var topologyMode: TopologyMode = .none
    /// The Local-policy set fell back to serving-terminating endpoints.
    public var localUsesTerminating = false
    /// The Cluster-policy set fell back to serving-terminating endpoints.
    public var clusterUsesTerminating = false

    public init() {}
}

/// Endpoint selection with kube-proxy's semantics, as one pure function.
public enum EndpointSelection {
    /// Splits a service port's endpoints into those usable by Cluster and by Local traffic policy.
    ///
    /// - Cluster: ready endpoints; when every ready endpoint carries hints, only those hinted for this
    ///   node (`PreferSameNode`) or this node's zone (`PreferSameZone`), if any are; when no endpoint is
    ///   ready anywhere, the serving-terminating ones.
    /// - Local: this node's ready endpoints, else this node's serving-terminating ones.
    /// - `hasAnyEndpoints`: something is usable somewhere (so an empty Local set means drop, not reject).
    public static func categorize(_ endpoints: [Backend], policy: SelectionPolicy, node: NodeContext) -> EndpointCategories {
        var result = EndpointCategories()
        guard !endpoints.isEmpty else { return result }

        if policy.usesClusterEndpoints {
            result.topologyMode = topologyMode(endpoints, node: node)
            result.cluster = endpoints.filter { $0.ready && availableForTopology($0, mode: result.topologyMode, node: node) }
            if result.cluster.isEmpty {
                result.cluster = endpoints.filter(\.isServingTerminating)
                result.clusterUsesTerminating = !result.cluster.isEmpty
            }
            result.hasAnyEndpoints = !result.cluster.isEmpty
        }
        guard policy.usesLocalEndpoints else {
            result.allReachable = result.cluster
            return result
        }

        var hasLocalReady = false
        var hasLocalServingTerminating = false
        for endpoint in endpoints {
            if endpoint.ready {
                result.hasAnyEndpoints = true
                hasLocalReady = hasLocalReady || endpoint.isLocal
            } else if endpoint.isServingTerminating {
                result.hasAnyEndpoints = true
                hasLocalServingTerminating = hasLocalServingTerminating || endpoint.isLocal
            }
        }
        if hasLocalReady {
            result.local = endpoints.filter { $0.isLocal && $0.ready }
        } else if hasLocalServingTerminating {
            result.local = endpoints.filter { $0.isLocal && $0.isServingTerminating }
            result.localUsesTerminating = true
        }
        guard policy.usesClusterEndpoints else {
            result.allReachable = result.local
            return result
        }
        if result.topologyMode == .none && !result.localUsesTerminating {
            result.allReachable = result.cluster
        } else {
            result.allReachable = Array(Set(result.cluster).union(result.local)).sorted()
        }
        return result
    }

    /// Decides the topology mode from the hints of the ready endpoints (kube-proxy's `topologyModeFromHints`).
    public static func topologyMode(_ endpoints: [Backend], node: NodeContext) -> TopologyMode {
        var hasReady = false
        var allHaveNodeHints = true
        var hasEndpointForNode = false
        var allHaveZoneHints = true
        var hasEndpointForZone = false
        for endpoint in endpoints where endpoint.ready {
            hasReady = true
            if endpoint.nodeHints.isEmpty {
                allHaveNodeHints = false
            } else if endpoint.nodeHints.contains(node.name) {
                hasEndpointForNode = true
            }
            if endpoint.zoneHints.isEmpty {
                allHaveZoneHints = false
            } else if let zone = node.zone, endpoint.zoneHints.contains(zone) {
                hasEndpointForZone = true
            }
        }
        guard hasReady else { return .none }
        if allHaveNodeHints && hasEndpointForNode { return .preferSameNode }
        if allHaveZoneHints && hasEndpointForZone { return .preferSameZone }
        return .none
    }

    static func availableForTopology(_ endpoint: Backend, mode: TopologyMode, node: NodeContext) -> Bool {
        switch mode {
        case .none: return true
        case .preferSameNode: return endpoint.nodeHints.contains(node.name)
        case .preferSameZone: return node.zone.map { endpoint.zoneHints.contains($0) } ?? false
        }
    }

    /// Why `endpoint` is not in the set chosen for Cluster (`local == false`) or Local policy,
    /// or `nil` if it is in it. For `ferry explain`.
    public static func exclusionReason(
        _ endpoint: Backend, local: Bool, categories: EndpointCategories, node: NodeContext
    ) -> String? {
        let chosen = local ? categories.local : categories.cluster
        if chosen.contains(endpoint) { return nil }
        if local && !endpoint.isLocal {
            return "on node \(endpoint.nodeName ?? "<unknown>"), not this node \(node.name) (traffic policy Local)"
        }
        if !endpoint.ready && !endpoint.serving {
            return endpoint.terminating ? "terminating and no longer serving" : "not ready"
        }
        if endpoint.isServingTerminating {
            return "terminating: used only when no endpoint is ready"
        }
        switch categories.topologyMode {
        case .preferSameNode:
            return "topology hints send it to nodes \(endpoint.nodeHints.joined(separator: ",")), not this node \(node.name)"
        case .preferSameZone:
            return "topology hints send it to zones \(endpoint.zoneHints.joined(separator: ",")), not this node's zone \(node.zone ?? "")"
        case .none:
            return "not selected"
        }
    }
}
