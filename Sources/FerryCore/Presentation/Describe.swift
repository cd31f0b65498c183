import Foundation

/// Aligns tab-separated cells as Go's `text/tabwriter` does with kubectl's settings (padding 2, spaces):
/// a column's width is set by the run of consecutive lines that have a cell in it, so lines without a
/// tab (`Subsets:`) start a new alignment, and a line's last cell is never padded.
public enum TabAligner {
    public static func align(_ text: String, padding: Int = 2) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        if lines.last == [""] { lines.removeLast() }
        var output = ""
        var widths: [Int] = []
        func write(_ range: Range<Int>) {
            for line in lines[range] {
                for (index, cell) in line.enumerated() {
                    output += cell
                    if index < widths.count, index < line.count - 1 {
                        output += String(repeating: " ", count: max(0, widths[index] - cell.count))
                    }
                }
                output += "\n"
            }
        }
        func format(_ start: Int, _ end: Int) {
            let column = widths.count
            var first = start
            var current = start
            while current < end {
                guard column < lines[current].count - 1 else {
                    current += 1
                    continue
                }
                write(first..<current)
                first = current
                var width = 0
                while current < end, column < lines[current].count - 1 {
                    width = max(width, lines[current][column].count + padding)
                    current += 1
                }
                widths.append(width)
                format(first, current)
                widths.removeLast()
                first = current
            }
            write(first..<end)
        }
        format(0, lines.count)
        return output
    }
}

/// `ferry describe service NAME`, in `kubectl describe service`'s layout, with the defaults the API
/// server would have filled in; values Ferry allocated are marked.
public enum ServiceDescription {
    public static func render(_ service: Service, endpoints: Endpoints?) -> String {
        var text = ""
        func line(_ key: String, _ value: String) { text += "\(key):\t\(value)\n" }
        let allocatedMark = "  (allocated by Ferry)"
        line("Name", service.meta.name)
        line("Namespace", service.meta.namespace)
        text += multiline("Labels", service.meta.labels)
        text += multiline("Annotations", service.meta.annotations)
        line("Selector", ServiceListing.selectorText(service.selector))
        line("Type", service.type.rawValue)
        if service.type != .externalName {
            line("IP Family Policy", (service.ipFamilyPolicy ?? .singleStack).rawValue)
        }
        let families = service.ipFamilies.isEmpty ? service.clusterIPs.map(\.family) : service.ipFamilies
        line("IP Families", families.isEmpty ? "<none>" : families.map(\.rawValue).joined(separator: ","))
        let mark = service.allocated.contains(.clusterIPs) ? allocatedMark : ""
        if service.isHeadless {
            line("IP", "None")
            line("IPs", "None")
        } else {
            line("IP", (service.clusterIPs.first?.description ?? "") + (service.clusterIPs.isEmpty ? "" : mark))
            line("IPs", service.clusterIPs.isEmpty ? "<none>" : service.clusterIPs.map(\.description).joined(separator: ",") + mark)
        }
        if !service.externalIPs.isEmpty { line("External IPs", service.externalIPs.map(\.description).joined(separator: ",")) }
        if let name = service.externalName, !name.isEmpty { line("External Name", name) }
        let ingress = service.loadBalancerIngress.compactMap { entry -> String? in
            guard let ip = entry.ip else { return entry.hostname }
            return "\(ip) (\(entry.ipMode.rawValue))"
        }
        if !ingress.isEmpty { line("LoadBalancer Ingress", ingress.joined(separator: ", ")) }
        for (index, port) in service.ports.enumerated() {
            let name = port.name.isEmpty ? "<unset>" : port.name
            let l4 = port.protocol.rawValue
            text += "Port:\t\(name)\t\(port.port)/\(l4)\n"
            switch port.targetPort {
            case .number(let number): line("TargetPort", "\(number)/\(l4)")
            case .name(let text): line("TargetPort", "\(text)/\(l4)")
            }
            if let nodePort = port.nodePort {
                text += "NodePort:\t\(name)\t\(nodePort)/\(l4)\(service.allocated.contains(.nodePort(portIndex: index)) ? allocatedMark : "")\n"
            }
            line("Endpoints", endpointsText(endpoints, portName: port.name))
        }
        line("Session Affinity", service.sessionAffinity == .none ? "None" : "ClientIP")
        if service.type == .nodePort || service.type == .loadBalancer {
            line("External Traffic Policy", service.externalTrafficPolicy == .local ? "Local" : "Cluster")
        }
        if let health = service.healthCheckNodePort {
            line("HealthCheck NodePort", "\(health)\(service.allocated.contains(.healthCheckNodePort) ? allocatedMark : "")")
        }
        if !service.loadBalancerSourceRanges.isEmpty {
            line("LoadBalancer Source Ranges", service.loadBalancerSourceRanges.map(\.description).joined(separator: ","))
        }
        if service.type != .externalName {
            line("Internal Traffic Policy", service.internalTrafficPolicy == .local ? "Local" : "Cluster")
        }
        if let reason = service.skipReason { line("Not proxied", "\(reason): a node proxy (kube-proxy too) ignores it") }
        line("Events", "<none>")
        return TabAligner.align(text)
    }

    /// kubectl's endpoints cell for one port: ready `ip:port`s, at most three, then `+ N more...`.
    static func endpointsText(_ endpoints: Endpoints?, portName: String) -> String {
        guard let endpoints, !endpoints.subsets.isEmpty else { return "<none>" }
        var shown: [String] = []
        var count = 0
        for subset in endpoints.subsets {
            for port in subset.ports where port.name == portName {
                guard let number = port.port else { continue }
                for address in subset.addresses {
                    if shown.count < 3 { shown.append(address.ip.joined(port: number)) }
                    count += 1
                }
            }
        }
        if shown.isEmpty { return "<none>" }
        return shown.joined(separator: ",") + (count > shown.count ? " + \(count - shown.count) more..." : "")
    }

    /// `Labels:  a=b` then one `key=value` per line; `<none>` when empty.
    static func multiline(_ title: String, _ values: [String: String]) -> String {
        guard !values.isEmpty else { return "\(title):\t<none>\n" }
        let sorted = values.sorted { $0.key < $1.key }
        let separator = title == "Annotations" ? ": " : "="
        return sorted.enumerated().map { index, entry in
            (index == 0 ? "\(title):" : "") + "\t\(entry.key)\(separator)\(entry.value)\n"
        }.joined()
    }
}

/// `ferry describe endpoints NAME`, in `kubectl describe endpoints`' layout.
public enum EndpointsDescription {
    public static func render(_ endpoints: Endpoints) -> String {
        var text = "Name:\t\(endpoints.meta.name)\nNamespace:\t\(endpoints.meta.namespace)\n"
        text += ServiceDescription.multiline("Labels", endpoints.meta.labels)
        text += ServiceDescription.multiline("Annotations", endpoints.meta.annotations)
        text += "Subsets:\n"
        for subset in endpoints.subsets {
            let ready = subset.addresses.map(\.ip.description).joined(separator: ",")
            let notReady = subset.notReadyAddresses.map(\.ip.description).joined(separator: ",")
            text += "  Addresses:\t\(ready.isEmpty ? "<none>" : ready)\n"
            text += "  NotReadyAddresses:\t\(notReady.isEmpty ? "<none>" : notReady)\n"
            if !subset.ports.isEmpty {
                text += "  Ports:\n    Name\tPort\tProtocol\n    ----\t----\t--------\n"
                for port in subset.ports {
                    text += "    \(port.name.isEmpty ? "<unset>" : port.name)\t\(port.port.map(String.init) ?? "<unset>")\t\(port.protocol.rawValue)\n"
                }
            }
            text += "\n"
        }
        text += "Events:\t<none>\n"
        return TabAligner.align(text)
    }
}
