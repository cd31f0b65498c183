/// What `ferry explain` is asked: a destination, and optionally who sends to it.
public struct ExplainQuery: Sendable, Hashable {
    public var destination: IPAddress
    public var port: Int
    public var `protocol`: L4Protocol
    public var source: IPAddress?
    /// Pod networks (`--cluster-cidr`): sources inside them are pods.
    public var clusterCIDRs: [CIDR]

    public init(destination: IPAddress, port: Int, protocol: L4Protocol = .tcp, source: IPAddress? = nil, clusterCIDRs: [CIDR] = []) {
        self.destination = destination
        self.port = port
        self.protocol = `protocol`
        self.source = source
        self.clusterCIDRs = clusterCIDRs
    }
}

/// The answer: which service ports the destination reaches, which backends may serve it and why the
/// others may not.
public struct ExplainReport: Sendable {
    public var matched: Bool
    public var text: String
}

/// Explains how Ferry forwards traffic to one destination. Pure: tables and node in, text out.
public enum Explainer {
    public static func explain(_ query: ExplainQuery, tables: BackendTables, node: NodeContext) -> ExplainReport {
        let destination = "\(query.destination.joined(port: query.port))/\(query.protocol.rawValue)"
        let matches = tables.match(address: query.destination, port: query.port, protocol: query.protocol, nodeAddresses: node.addresses)
        guard !matches.isEmpty else {
            var text =
                "\(destination) is not a service frontend on node \(node.name): no ClusterIP, NodePort, external IP or load-balancer IP matches.\n"
            if let near = nearMisses(query, tables: tables, node: node) { text += near }
            return ExplainReport(matched: false, text: text)
        }
        var text = ""
        for (index, match) in matches.enumerated() {
            if index > 0 { text += "\n" }
            text += section(query, destination: destination, table: match.table, frontend: match.frontend, node: node)
        }
        return ExplainReport(matched: true, text: text)
    }

    private static func section(_ query: ExplainQuery, destination: String, table: ServicePortTable, frontend: Frontend, node: NodeContext)
        -> String
    {
        var lines: [String] = []
        let via: String
        switch frontend.kind {
        case .clusterIP: via = "its ClusterIP"
        case .nodePort: via = "its NodePort \(frontend.port) on node \(node.name)"
        case .externalIP: via = "its external IP"
        case .loadBalancer: via = "its load-balancer IP"
        }
        lines.append("\(destination) reaches service port \(table.name) through \(via).")
        let policyName = frontend.kind.isExternal ? "externalTrafficPolicy" : "internalTrafficPolicy"
        var useLocal = frontend.kind.isExternal ? table.policy.externalLocal : table.policy.internalLocal
        var policyNote = "\(policyName): \(useLocal ? "Local" : "Cluster")"
        if frontend.kind.isExternal && useLocal, let source = query.source, isInsideCluster(source, query: query, node: node) {
            useLocal = false
            policyNote += " (but \(source) is inside the cluster, so it is short-circuited to Cluster endpoints)"
        }
        lines.append("  service type \(table.serviceType.rawValue); \(policyNote)")
        if let origin = table.origin {
            let originText: String
            switch origin {
            case .endpointSlice: originText = "EndpointSlices"
            case .endpoints: originText = "a v1 Endpoints object (mirrored into slices)"
            case .pods: originText = "Pods matching the selector (derived as the EndpointSlice controller would)"
            }
            lines.append("  endpoints from \(originText)")
        }
        if case .clientIP(let timeout) = table.sessionAffinity {
            lines.append(
                "  sessionAffinity ClientIP: a client sticks to the backend it first reached until \(timeout)s after its last connection")
        }
        if let topology = topologyNote(table.categories, node: node) { lines.append("  \(topology)") }

        let chosen = useLocal ? table.categories.local : table.categories.cluster
        let fellBack = useLocal ? table.categories.localUsesTerminating : table.categories.clusterUsesTerminating
        lines.append("")
        if chosen.isEmpty {
            if useLocal && table.categories.hasAnyEndpoints {
                lines.append("No usable backend on this node: packets are dropped (Local policy; endpoints exist elsewhere).")
            } else {
                lines.append("No usable backends: connections are refused at once (TCP reset, ICMP port unreachable for UDP).")
            }
        } else {
            let share = chosen.count == 1 ? "all traffic" : "1/\(chosen.count) of new connections each"
            lines.append("Backends (\(chosen.count)), \(share)\(fellBack ? ", serving-terminating fallback because none is ready" : ""):")
            var rows = TextTable(header: ["  ENDPOINT", "NODE", "ZONE", "STATE", "TARGET"])
            for backend in chosen {
                let hairpin = query.source == backend.ip ? " (hairpin: masqueraded)" : ""
                rows.append([
                    "  " + backend.description, nodeText(backend, node: node), backend.zone ?? "-", stateText(backend),
                    (backend.targetRef ?? "-") + hairpin,
                ])
            }
            lines.append(rows.render().trimmingTrailingNewline())
        }
        let leftOut: [(String, String)] =
            table.endpoints.compactMap { backend in
                EndpointSelection.exclusionReason(backend, local: useLocal, categories: table.categories, node: node)
                    .map { (backend.description, $0) }
            } + table.unmatched.map { ($0.address.description, $0.reason) }
        if !leftOut.isEmpty {
            lines.append("")
            lines.append("Left out:")
            for (endpoint, reason) in leftOut { lines.append("  \(endpoint): \(reason)") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func isInsideCluster(_ source: IPAddress, query: ExplainQuery, node: NodeContext) -> Bool {
        source.isLoopback || node.addresses.contains(source) || query.clusterCIDRs.contains { $0.contains(source) }
    }

    private static func nodeText(_ backend: Backend, node: NodeContext) -> String {
        guard let name = backend.nodeName else { return "-" }
        return backend.isLocal ? "\(name) (this node)" : name
    }

    private static func stateText(_ backend: Backend) -> String {
        if backend.ready { return "ready" }
        if backend.isServingTerminating { return "serving,terminating" }
        return backend.terminating ? "terminating" : "not-ready"
    }

    private static func topologyNote(_ categories: EndpointCategories, node: NodeContext) -> String? {
        switch categories.topologyMode {
        case .none: return nil
        case .preferSameZone: return "topology: hints keep traffic in zone \(node.zone ?? "")"
        case .preferSameNode: return "topology: hints keep traffic on node \(node.name)"
        }
    }

    /// A hint when the address is a frontend but the port or protocol is not.
    private static func nearMisses(_ query: ExplainQuery, tables: BackendTables, node: NodeContext) -> String? {
        let candidates = tables.sorted.filter { table in
            table.frontends.contains { $0.address == query.destination }
                || (table.nodePort != nil && (node.addresses.contains(query.destination) || query.destination.isLoopback))
        }
        guard !candidates.isEmpty else { return nil }
        let ports = candidates.prefix(10).map { table in
            let number = table.frontends.contains { $0.address == query.destination } ? table.port : table.nodePort!
            return "\(number)/\(table.name.protocol.rawValue) (\(table.name))"
        }
        return "Ports served on \(query.destination): \(ports.joined(separator: ", "))\(candidates.count > 10 ? ", …" : "")\n"
    }
}

extension String {
    func trimmingTrailingNewline() -> String {
        hasSuffix("\n") ? String(dropLast()) : self
    }
}
