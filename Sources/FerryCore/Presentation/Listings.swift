import Foundation

/// The rows of `ferry get services`, in kubectl's shape:
/// `NAME  TYPE  CLUSTER-IP  EXTERNAL-IP  PORT(S)  AGE` (`-A` adds NAMESPACE, wide adds SELECTOR).
public enum ServiceListing {
    /// `kindPrefix`: `service/` before each name, as kubectl writes it when several kinds are listed.
    /// Wide adds kubectl's SELECTOR and Ferry's PROXIED (`yes`, or why a node proxy ignores the service).
    public static func render(_ services: [Service], allNamespaces: Bool, wide: Bool, now: Date, kindPrefix: String = "") -> String {
        var header = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
        if wide { header += ["SELECTOR", "PROXIED"] }
        if allNamespaces { header.insert("NAMESPACE", at: 0) }
        var table = TextTable(header: header)
        for service in services.sorted(by: { $0.name < $1.name }) {
            var row = [
                kindPrefix + service.meta.name, service.type.rawValue, clusterIPText(service), externalIPText(service, wide: wide),
                portsText(service), ageText(service.meta.creationTimestamp, now: now),
            ]
            if wide { row += [selectorText(service.selector), service.skipReason.map { "no: \($0)" } ?? "yes"] }
            if allNamespaces { row.insert(service.meta.namespace, at: 0) }
            table.append(row)
        }
        return table.render()
    }

    static func clusterIPText(_ service: Service) -> String {
        if service.isHeadless { return "None" }
        return service.clusterIPs.first?.description ?? "<none>"
    }

    static func externalIPText(_ service: Service, wide: Bool) -> String {
        let external = service.externalIPs.map(\.description)
        switch service.type {
        case .clusterIP, .nodePort:
            return external.isEmpty ? "<none>" : external.joined(separator: ",")
        case .loadBalancer:
            var ingress = service.loadBalancerIngress.compactMap { $0.ip?.description ?? $0.hostname }.joined(separator: ",")
            if !wide && ingress.count > 16 { ingress = String(ingress.prefix(13)) + "..." }
            let all = (ingress.isEmpty ? [] : [ingress]) + external
            return all.isEmpty ? "<pending>" : all.joined(separator: ",")
        case .externalName:
            return service.externalName ?? ""
        }
    }

    static func portsText(_ service: Service) -> String {
        if service.ports.isEmpty { return "<none>" }
        return service.ports.map { port in
            if let nodePort = port.nodePort { return "\(port.port):\(nodePort)/\(port.protocol.rawValue)" }
            return "\(port.port)/\(port.protocol.rawValue)"
        }.joined(separator: ",")
    }

    static func selectorText(_ selector: [String: String]?) -> String {
        guard let selector, !selector.isEmpty else { return "<none>" }
        return selector.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }
}

/// A Service's endpoints as kubectl's `get endpoints` shows them: for each port, the ready addresses.
public struct EndpointsView: Sendable, Hashable {
    public var service: ServiceName
    /// Ready `ip:port` strings, port by port, addresses sorted.
    public var ready: [String]
    public var notReady: [String]
    public var created: Date?
    /// The model as a v1 Endpoints object (one subset per distinct port list).
    public var endpoints: Endpoints

    /// Builds the view of one Service (or of slices whose Service is absent, with `service` `nil`).
    public static func make(name: ServiceName, service: Service?, slices: [EndpointSlice]) -> EndpointsView {
        let usable = slices.filter { $0.addressType != .fqdn }
        var portOrder: [SlicePort] = []
        for port in service?.ports ?? [] {
            portOrder.append(SlicePort(name: port.name, protocol: port.protocol, port: nil))
        }
        for slice in usable {
            for port in slice.ports where !portOrder.contains(where: { $0.name == port.name && $0.protocol == port.protocol }) {
                portOrder.append(SlicePort(name: port.name, protocol: port.protocol, port: nil))
            }
        }
        var ready: [String] = []
        var notReady: [String] = []
        for wanted in portOrder {
            var readySet: [Backend: Bool] = [:]
            for slice in usable {
                for port in slice.ports where port.name == wanted.name && port.protocol == wanted.protocol {
                    guard let number = port.port else { continue }
                    for endpoint in slice.endpoints {
                        guard let address = endpoint.addresses.first else { continue }
                        let key = Backend(ip: address, port: number)
                        readySet[key] = (readySet[key] ?? false) || endpoint.conditions.ready
                    }
                }
            }
            for (backend, isReady) in readySet.sorted(by: { $0.key < $1.key }) {
                if isReady { ready.append(backend.description) } else { notReady.append(backend.description) }
            }
        }
        var subsets: [Endpoints.Subset] = []
        for slice in usable {
            let ports = slice.ports.filter { $0.port != nil }
            func address(_ endpoint: SliceEndpoint) -> Endpoints.Address? {
                guard let ip = endpoint.addresses.first else { return nil }
                return Endpoints.Address(ip: ip, nodeName: endpoint.nodeName, hostname: endpoint.hostname, targetRef: endpoint.targetRef)
            }
            let addresses = slice.endpoints.filter(\.conditions.ready).compactMap(address)
            let others = slice.endpoints.filter { !$0.conditions.ready }.compactMap(address)
            if let index = subsets.firstIndex(where: { $0.ports == ports }) {
                subsets[index].addresses += addresses
                subsets[index].notReadyAddresses += others
            } else if !addresses.isEmpty || !others.isEmpty {
                subsets.append(Endpoints.Subset(addresses: addresses, notReadyAddresses: others, ports: ports))
            }
        }
        for index in subsets.indices {
            subsets[index].addresses.sort { $0.ip < $1.ip }
            subsets[index].notReadyAddresses.sort { $0.ip < $1.ip }
        }
        let created = usable.compactMap(\.meta.creationTimestamp).min() ?? service?.meta.creationTimestamp
        let meta = ObjectMeta(name: name.name, namespace: name.namespace, labels: service?.meta.labels ?? [:], creationTimestamp: created)
        return EndpointsView(
            service: name, ready: ready, notReady: notReady, created: created, endpoints: Endpoints(meta: meta, subsets: subsets))
    }

    /// The view of `name`: its Service's effective endpoints, or those of slices or Endpoints whose
    /// Service is absent; `nil` when there is none of them.
    public static func of(_ name: ServiceName, in state: ClusterState) -> EndpointsView? {
        if let service = state.services[name] {
            return make(name: name, service: service, slices: EffectiveSlices.slices(for: service, in: state))
        }
        let slices = state.slices[name].map { Array($0.values) } ?? state.endpoints[name].map(EffectiveSlices.mirror)
        return slices.map { make(name: name, service: nil, slices: $0) }
    }

    /// kubectl's ENDPOINTS cell: at most three, then `+ N more...`; `<none>` when nothing is ready.
    public func endpointsText(limit: Int? = 3) -> String {
        guard !ready.isEmpty else { return "<none>" }
        guard let limit, ready.count > limit else { return ready.joined(separator: ",") }
        return ready.prefix(limit).joined(separator: ",") + " + \(ready.count - limit) more..."
    }
}

/// The rows of `ferry get endpoints`: `NAME  ENDPOINTS  AGE` (`-A` adds NAMESPACE; wide lists every
/// ready endpoint and adds NOT-READY).
public enum EndpointListing {
    public static func render(_ views: [EndpointsView], allNamespaces: Bool, wide: Bool, now: Date, kindPrefix: String = "") -> String {
        var header = ["NAME", "ENDPOINTS", "AGE"]
        if wide { header.insert("NOT-READY", at: 2) }
        if allNamespaces { header.insert("NAMESPACE", at: 0) }
        var table = TextTable(header: header)
        for view in views.sorted(by: { $0.service < $1.service }) {
            var row = [kindPrefix + view.service.name, view.endpointsText(limit: wide ? nil : 3), ageText(view.created, now: now)]
            if wide { row.insert(view.notReady.isEmpty ? "<none>" : view.notReady.joined(separator: ","), at: 2) }
            if allNamespaces { row.insert(view.service.namespace, at: 0) }
            table.append(row)
        }
        return table.render()
    }
}

/// The rows of `ferry get endpointslices`: `NAME  ADDRESSTYPE  PORTS  ENDPOINTS  AGE`, as kubectl
/// prints them (PORTS the port numbers, ENDPOINTS every address whatever its conditions, three at most).
public enum EndpointSliceListing {
    public static func render(_ slices: [EndpointSlice], allNamespaces: Bool, now: Date, kindPrefix: String = "") -> String {
        var header = ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
        if allNamespaces { header.insert("NAMESPACE", at: 0) }
        var table = TextTable(header: header)
        for slice in slices {
            let ports = slice.ports.compactMap(\.port).map(String.init)
            let addresses = slice.endpoints.flatMap(\.addresses).map(\.description)
            let shown = addresses.prefix(3).joined(separator: ",") + (addresses.count > 3 ? " + \(addresses.count - 3) more..." : "")
            var row = [
                kindPrefix + slice.meta.name, slice.addressType.rawValue, ports.isEmpty ? "<unset>" : ports.joined(separator: ","),
                addresses.isEmpty ? "<unset>" : shown, ageText(slice.meta.creationTimestamp, now: now),
            ]
            if allNamespaces { row.insert(slice.meta.namespace, at: 0) }
            table.append(row)
        }
        return table.render()
    }
}
