/// Builds the table entries of one Service from the objects held: pure, and the only place that joins
/// Services to their endpoints.
public enum TableBuilder {
    /// The entries of every Service in `state`.
    public static func build(_ state: ClusterState, node: NodeContext) -> BackendTables {
        var tables = BackendTables()
        for service in state.services.values {
            for table in entries(for: service, in: state, node: node) { tables.insert(table) }
        }
        return tables
    }

    /// One entry per port of `service`, or none when a proxy ignores the service
    /// (ExternalName, headless, or without a cluster IP).
    public static func entries(for service: Service, in state: ClusterState, node: NodeContext) -> [ServicePortTable] {
        guard service.skipReason == nil else { return [] }
        let slices = EffectiveSlices.slices(for: service, in: state).filter { $0.addressType != .fqdn }
        let policy = SelectionPolicy(
            internalLocal: service.internalTrafficPolicy == .local,
            externalLocal: service.externalTrafficPolicy == .local,
            externallyAccessible: service.isExternallyAccessible
                && (service.ports.contains { $0.nodePort != nil } || !service.externalIPs.isEmpty || !service.loadBalancerVIPs.isEmpty))
        return service.ports.map { port in
            let (endpoints, unmatched) = mergedEndpoints(for: port, slices: slices, node: node)
            return ServicePortTable(
                name: ServicePortName(service: service.name, port: port.name, protocol: port.protocol),
                serviceType: service.type, port: port.port, nodePort: port.nodePort, clusterIPs: service.clusterIPs,
                externalIPs: service.externalIPs, loadBalancerIPs: service.loadBalancerVIPs,
                sessionAffinity: service.sessionAffinity, policy: policy, healthCheckNodePort: service.healthCheckNodePort,
                endpoints: endpoints, categories: EndpointSelection.categorize(endpoints, policy: policy, node: node),
                unmatched: unmatched, origin: slices.first?.origin, balancer: service.userspaceBalancer,
                loadBalancerSourceRanges: service.loadBalancerSourceRanges)
        }
    }

    /// The endpoints of one service port across all slices: a slice contributes when it has a port of the
    /// same name and protocol. The first address of each endpoint is used; an endpoint listed in several
    /// slices appears once (the local copy wins, as in kube-proxy).
    static func mergedEndpoints(for port: ServicePort, slices: [EndpointSlice], node: NodeContext)
        -> ([Backend], [UnmatchedEndpoint])
    {
        var byKey: [Backend: Backend] = [:]
        var unmatched: [UnmatchedEndpoint] = []
        for slice in slices {
            let matching = slice.ports.filter { $0.name == port.name && $0.protocol == port.protocol && $0.port != nil }
            if matching.isEmpty {
                let reason: String
                if slice.origin == .pods {
                    reason = "the pod declares no \(port.protocol.rawValue) container port named \"\(port.targetPort)\""
                } else {
                    let wanted =
                        port.name.isEmpty
                        ? "an unnamed \(port.protocol.rawValue) port" : "no \(port.protocol.rawValue) port named \"\(port.name)\""
                    let available = slice.ports.map { "\($0.name.isEmpty ? "<unnamed>" : $0.name)/\($0.protocol.rawValue)" }
                    reason =
                        "slice \(slice.meta.name) has \(port.name.isEmpty ? "no " + wanted.dropFirst(3) : wanted)"
                        + (available.isEmpty ? "" : " (it has \(available.joined(separator: ", ")))")
                }
                for endpoint in slice.endpoints {
                    if let address = endpoint.addresses.first {
                        unmatched.append(UnmatchedEndpoint(address: address, slice: slice.meta.name, reason: reason))
                    }
                }
                continue
            }
            for slicePort in matching {
                for endpoint in slice.endpoints {
                    guard let address = endpoint.addresses.first, let number = slicePort.port else { continue }
                    let isLocal = endpoint.nodeName != nil && endpoint.nodeName == node.name
                    let backend = Backend(
                        ip: address, port: number, nodeName: endpoint.nodeName, zone: endpoint.zone,
                        zoneHints: endpoint.zoneHints, nodeHints: endpoint.nodeHints, ready: endpoint.conditions.ready,
                        serving: endpoint.conditions.serving, terminating: endpoint.conditions.terminating,
                        isLocal: isLocal, targetRef: endpoint.targetRef)
                    let key = Backend(ip: address, port: number)
                    if byKey[key] == nil || isLocal { byKey[key] = backend }
                }
            }
        }
        return (byKey.values.sorted(), unmatched)
    }
}
