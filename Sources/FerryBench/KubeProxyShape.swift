import FerryCore
import FerryNFTables

/// kube-proxy's nftables ruleset for the same tables, as `nft -f` text: what a kube-proxy user's kernel
/// loads, so `ferry bench sync` can time it beside Ferry's. The shape follows `pkg/proxy/nftables`
/// (1.31+): a table `ip kube-proxy` with filter chains at dstnat-10 and dstnat+10, `service-ips` and
/// `service-nodeports` verdict maps, per service port a chain balancing with one
/// `numgen random mod N vmap { … }` (an anonymous map per service), a chain per endpoint (hairpin
/// masquerade, DNAT), an external chain for NodePorts. Cluster policy only (the bench's services).
public enum KubeProxyShape {
    /// `prefix-HASH-namespace/name/protocol/port`, with a stable 8-character hash as kube-proxy has.
    public static func name(_ prefix: String, _ table: ServicePortTable, _ suffix: String = "") -> String {
        let readable = "\(table.name.service.namespace)/\(table.name.service.name)/\(table.name.protocol.rawValue.lowercased())/\(table.name.port)\(suffix)"
        return "\(prefix)-\(ChainNames.hash(prefix + readable))-\(readable)"
    }

    public static func endpointChain(_ table: ServicePortTable, _ backend: Backend) -> String {
        name("endpoint", table, "__\(backend.ip)/\(backend.port)")
    }

    /// The whole ruleset.
    public static func render(_ tables: BackendTables, clusterCIDR: CIDR) -> String {
        var text = """
            table ip kube-proxy {
              comment "rules for kube-proxy"
              chain filter-prerouting { type filter hook prerouting priority -110; policy accept; ct state new jump firewall-check; }
              chain filter-input { type filter hook input priority -110; policy accept; ct state new jump nodeport-endpoints-check; ct state new jump service-endpoints-check; }
              chain filter-forward { type filter hook forward priority -110; policy accept; ct state new jump service-endpoints-check; ct state new jump cluster-ips-check; }
              chain filter-output { type filter hook output priority -110; policy accept; ct state new jump service-endpoints-check; ct state new jump firewall-check; }
              chain filter-output-post-dnat { type filter hook output priority -90; policy accept; ct state new jump cluster-ips-check; }
              chain nat-prerouting { type nat hook prerouting priority -100; policy accept; jump services; }
              chain nat-output { type nat hook output priority -100; policy accept; jump services; }
              chain nat-postrouting { type nat hook postrouting priority 100; policy accept; jump masquerading; }
              set cluster-ips { type ipv4_addr; }
              set nodeport-ips { type ipv4_addr; }
              map no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; }
              map no-endpoint-nodeports { type inet_proto . inet_service : verdict; }
              map firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict; }
              map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }
              map service-nodeports { type inet_proto . inet_service : verdict; }
              chain reject-chain { reject; }
              chain service-endpoints-check { ip daddr . meta l4proto . th dport vmap @no-endpoint-services; }
              chain nodeport-endpoints-check { ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports; }
              chain firewall-check { ip daddr . meta l4proto . th dport vmap @firewall-ips; }
              chain cluster-ips-check { ip daddr @cluster-ips reject; }
              chain mark-for-masquerade { mark set mark or 0x4000; }
              chain masquerading { mark and 0x4000 == 0 return; mark set mark xor 0x4000; masquerade fully-random; }
              chain services { ip daddr . meta l4proto . th dport vmap @service-ips; fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports; }

            """
        var elements: [String] = []
        for table in tables.ports.values.sorted(by: { $0.name < $1.name }) {
            text += chains(table, clusterCIDR: clusterCIDR)
            let l4 = table.name.protocol.rawValue.lowercased()
            for address in table.clusterIPs where address.family == .ipv4 {
                elements.append("add element ip kube-proxy cluster-ips { \(address) }")
                elements.append("add element ip kube-proxy service-ips { \(address) . \(l4) . \(table.port) : goto \(name("service", table)) }")
            }
            if let nodePort = table.nodePort {
                elements.append("add element ip kube-proxy service-nodeports { \(l4) . \(nodePort) : goto \(name("external", table)) }")
            }
        }
        return text + "}\n" + elements.joined(separator: "\n") + "\n"
    }

    /// The chains of one service port (its service, external and endpoint chains), inside the table block.
    public static func chains(_ table: ServicePortTable, clusterCIDR: CIDR) -> String {
        let l4 = table.name.protocol.rawValue.lowercased()
        let endpoints = table.categories.cluster.filter { $0.ip.family == .ipv4 }
        var text = ""
        var serviceRules = table.clusterIPs.filter { $0.family == .ipv4 }.map { address in
            "ip daddr \(address) \(l4) dport \(table.port) ip saddr != \(clusterCIDR) jump mark-for-masquerade"
        }
        if !endpoints.isEmpty {
            let slots = endpoints.enumerated().map { "\($0.offset) : goto \(endpointChain(table, $0.element))" }.joined(separator: " , ")
            serviceRules.append("numgen random mod \(endpoints.count) vmap { \(slots) }")
        }
        text += "  chain \(name("service", table)) { \(serviceRules.joined(separator: "; ")); }\n"
        if table.nodePort != nil {
            text += "  chain \(name("external", table)) { jump mark-for-masquerade; goto \(name("service", table)); }\n"
        }
        for backend in endpoints {
            text += "  chain \(endpointChain(table, backend)) { ip saddr \(backend.ip) jump mark-for-masquerade; meta l4proto \(l4) dnat to \(backend.ip):\(backend.port); }\n"
        }
        return text
    }

    /// What kube-proxy's partial sync sends when one endpoint of `after` replaced one of `before`: every
    /// chain of the service port added and flushed, its rules written again, the old endpoint's chain
    /// flushed (kube-proxy deletes it a second later).
    public static func change(from before: ServicePortTable, to after: ServicePortTable, clusterCIDR: CIDR) -> String {
        var names = [name("service", after)] + (after.nodePort != nil ? [name("external", after)] : [])
        names += after.categories.cluster.filter { $0.ip.family == .ipv4 }.map { endpointChain(after, $0) }
        var text = names.map { "add chain ip kube-proxy \($0)\nflush chain ip kube-proxy \($0)\n" }.joined()
        text += "table ip kube-proxy {\n" + chains(after, clusterCIDR: clusterCIDR) + "}\n"
        for backend in Set(before.categories.cluster).subtracting(after.categories.cluster) {
            text += "flush chain ip kube-proxy \(endpointChain(before, backend))\n"
        }
        return text
    }
}
