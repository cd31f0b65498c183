/// The EndpointSlices that describe a Service's endpoints, wherever they come from, in the control
/// plane's order of precedence:
/// 1. EndpointSlices labelled with the Service's name (what the API serves);
/// 2. otherwise a v1 Endpoints object of the same name, mirrored into slices as the
///    EndpointSliceMirroring controller does;
/// 3. otherwise, for a Service with a selector, slices derived from the matching Pods as the
///    EndpointSlice controller would write them (manifest mode without a cluster).
public enum EffectiveSlices {
    public static func slices(for service: Service, in state: ClusterState) -> [EndpointSlice] {
        if let own = state.slices[service.name], !own.isEmpty {
            return own.values.sorted { $0.meta.name < $1.meta.name }
        }
        if let endpoints = state.endpoints[service.name] {
            return mirror(endpoints)
        }
        if let selector = service.selector, !selector.isEmpty {
            return derive(from: service, pods: state.pods[service.meta.namespace] ?? [:], nodes: state.nodes)
        }
        return []
    }

    // MARK: Endpoints mirroring

    /// Mirrors a v1 Endpoints object into slices: one per subset and address family. Addresses are
    /// ready; `notReadyAddresses` are not ready (and, by the API default, not serving).
    public static func mirror(_ endpoints: Endpoints) -> [EndpointSlice] {
        var result: [EndpointSlice] = []
        for (index, subset) in endpoints.subsets.enumerated() {
            for family in IPFamily.allCases {
                func convert(_ address: Endpoints.Address, ready: Bool) -> SliceEndpoint? {
                    guard address.ip.family == family else { return nil }
                    return SliceEndpoint(
                        addresses: [address.ip], conditions: EndpointConditions(ready: ready), nodeName: address.nodeName,
                        hostname: address.hostname, targetRef: address.targetRef)
                }
                let members =
                    subset.addresses.compactMap { convert($0, ready: true) }
                    + subset.notReadyAddresses.compactMap { convert($0, ready: false) }
                guard !members.isEmpty else { continue }
                let suffix = family == .ipv4 ? "" : "-v6"
                var meta = ObjectMeta(
                    name: "\(endpoints.meta.name)-mirror-\(index)\(suffix)", namespace: endpoints.meta.namespace,
                    labels: [EndpointSlice.serviceNameLabel: endpoints.meta.name],
                    creationTimestamp: endpoints.meta.creationTimestamp)
                meta.resourceVersion = endpoints.meta.resourceVersion
                result.append(
                    EndpointSlice(
                        meta: meta, serviceName: endpoints.meta.name, addressType: family == .ipv4 ? .ipv4 : .ipv6,
                        endpoints: members, ports: subset.ports, origin: .endpoints))
            }
        }
        return result
    }

    // MARK: Pods

    /// Derives slices from the Pods that match a Service's selector, as the EndpointSlice controller does:
    /// pods without an IP and terminated pods are left out; `ready` is the pod's Ready condition unless it
    /// is terminating (`serving` keeps it); `publishNotReadyAddresses` makes every endpoint ready; a named
    /// `targetPort` is resolved per pod from its container ports, and pods whose ports resolve
    /// differently land in different slices.
    public static func derive(from service: Service, pods: [String: Pod], nodes: [String: Node]) -> [EndpointSlice] {
        guard let selector = service.selector, !selector.isEmpty else { return [] }
        let matching = pods.values
            .filter { pod in !pod.isTerminal && !pod.podIPs.isEmpty && selector.allSatisfy { pod.meta.labels[$0.key] == $0.value } }
            .sorted { $0.podIPs[0] < $1.podIPs[0] }
        var groups: [[SlicePort]: [Pod]] = [:]
        var order: [[SlicePort]] = []
        for pod in matching {
            let ports = resolvedPorts(service: service, pod: pod)
            if groups[ports] == nil { order.append(ports) }
            groups[ports, default: []].append(pod)
        }
        var result: [EndpointSlice] = []
        for family in IPFamily.allCases {
            for ports in order {
                let members: [SliceEndpoint] = groups[ports]!.compactMap { pod in
                    guard let address = pod.podIPs.first(where: { $0.family == family }) else { return nil }
                    let serving = pod.ready ?? false
                    let ready = service.publishNotReadyAddresses || (serving && !pod.isTerminating)
                    return SliceEndpoint(
                        addresses: [address],
                        conditions: EndpointConditions(
                            ready: ready, serving: service.publishNotReadyAddresses || serving, terminating: pod.isTerminating),
                        nodeName: pod.nodeName, zone: pod.nodeName.flatMap { nodes[$0]?.zone }, hostname: pod.hostname,
                        targetRef: "Pod \(pod.meta.namespace)/\(pod.meta.name)")
                }
                guard !members.isEmpty else { continue }
                let meta = ObjectMeta(
                    name: "\(service.meta.name)-pods-\(family == .ipv4 ? "" : "v6-")\(result.count)", namespace: service.meta.namespace,
                    labels: [EndpointSlice.serviceNameLabel: service.meta.name])
                result.append(
                    EndpointSlice(
                        meta: meta, serviceName: service.meta.name, addressType: family == .ipv4 ? .ipv4 : .ipv6,
                        endpoints: members, ports: ports, origin: .pods))
            }
        }
        return result
    }

    /// The Service's ports as this pod serves them; a named targetPort the pod does not declare
    /// (with the same protocol) leaves that port out, as the controller's `FindPort` does.
    static func resolvedPorts(service: Service, pod: Pod) -> [SlicePort] {
        service.ports.compactMap { port in
            switch port.targetPort {
            case .number(let number):
                return SlicePort(name: port.name, protocol: port.protocol, port: number)
            case .name(let name):
                guard let match = pod.containerPorts.first(where: { $0.name == name && $0.protocol == port.protocol }) else { return nil }
                return SlicePort(name: port.name, protocol: port.protocol, port: match.containerPort)
            }
        }
    }
}
