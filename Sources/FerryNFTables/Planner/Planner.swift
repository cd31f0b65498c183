import Dispatch
import FerryCore
import Glibc
import Synchronization

/// What the planner needs beyond the backend tables.
public struct PlannerConfig: Sendable, Hashable {
    /// Pod networks; traffic to a ClusterIP from outside them is masqueraded, traffic from inside them to
    /// a Local-policy external address is short-circuited to the Cluster endpoints. One per family.
    public var clusterCIDRs: [CIDR]
    /// Masquerade all service traffic.
    public var masqueradeAll: Bool
    /// NodePorts only on node addresses inside these prefixes; empty: on every local address.
    public var nodePortAddresses: [CIDR]
    /// `--nodeport-addresses primary`: NodePorts only on the node's primary address of each family (the
    /// first of `nodeAddresses`), as kube-proxy's nftables mode does by default since 1.31.
    public var nodePortPrimaryOnly = false
    /// This node's addresses (used with `nodePortAddresses`).
    public var nodeAddresses: [IPAddress]
    /// The packet-mark bit that asks for masquerading.
    public var masqueradeBit: UInt32
    /// The service ranges (`--service-cluster-ip-range`): traffic to an address in them that no Service
    /// owns is dropped, as kube-proxy drops it, so it never leaves the node. Empty: no drop.
    public var serviceCIDRs: [CIDR]

    public init(
        clusterCIDRs: [CIDR] = [], masqueradeAll: Bool = false, nodePortAddresses: [CIDR] = [], nodeAddresses: [IPAddress] = [],
        masqueradeBit: UInt32 = 0x4000, serviceCIDRs: [CIDR] = []
    ) {
        self.serviceCIDRs = serviceCIDRs
        self.clusterCIDRs = clusterCIDRs
        self.masqueradeAll = masqueradeAll
        self.nodePortAddresses = nodePortAddresses
        self.nodeAddresses = nodeAddresses
        self.masqueradeBit = masqueradeBit
    }
}

/// Turns backend tables into the ruleset that forwards them (pure). Fixed base chains; verdict maps
/// keyed by `daddr . l4proto . dport` (and `l4proto . dport` for NodePorts) dispatch each frontend
/// straight to `pick-N`, a chain shared by every service port with N endpoints, whose rule DNATs through
/// an endpoint map keyed by the packet's own destination and a random slot,
/// `dnat ip to ip daddr . meta l4proto . th dport . numgen random mod N map @cluster-endpoints`
/// (a second rule keys NodePorts by `l4proto . dport`). Cluster-policy external frontends go through
/// `external-pick-N` (mark for masquerading, then `pick-N`); traffic to a ClusterIP from outside the
/// pod network is marked by one rule for all ClusterIPs. So an endpoint is map elements, not chains, and
/// most service ports have no chain at all: replacing an endpoint changes elements only, adding one also
/// the frontends' dispatch elements. Hairpin traffic (a pod reaching itself) is found in postrouting by
/// `ip saddr . ip daddr @endpoint-addresses`. A service port has chains of its own only when it needs
/// them: Local external policy (`external-…`, the short-circuit for pods and the node), source ranges
/// (`firewall-…`), ClientIP affinity (below).
///
/// Why this shape (measured with `nft -f`, 10,000 services x 10 endpoints, kernel 6.18; see
/// bench/spikes): a chain per endpoint costs 3.9 s of kernel commit and re-validates the whole table on
/// any change; a map element insert is checked against every rule bound to the map, so one map bound
/// by every service chain is quadratic (14 s), and a named map per service too (sets are found by name
/// in a list: 4.9 s); the `pick-N` chains bind each map a few times only (0.9 s). Keeping the slot in
/// the connection's ct mark instead would be 0.7 s but would take the ct mark from every other agent.
/// And the kernel walks every chain of the table at every commit, and validates them all after any new
/// rule or verdict element with a jump: with a chain per service port (10,000 at 10,000 services) an
/// element-only change committed in 1.9-2.9 ms against 0.13-0.17 ms at 100; with none, in 0.1 ms.
///
/// Service ports with ClientIP affinity keep a service chain that checks the affinity sets and picks a
/// chain per endpoint (its affinity set, then the DNAT) with a cascade of `numgen random mod (N-i) 0`
/// rules: they are few. Services without usable endpoints are in
/// `no-endpoint-*` maps checked by filter chains before NAT, which reject (or drop, for Local policy
/// with endpoints elsewhere) new connections at once.
public enum Planner {
    public static let tableName = "ferry"

    // Fixed chain and map names.
    static let services = "services"
    static let serviceIPs = "service-ips"
    static let serviceNodePorts = "service-nodeports"
    static let noEndpointServices = "no-endpoint-services"
    static let noEndpointNodePorts = "no-endpoint-nodeports"
    static let nodePortIPs = "nodeport-ips"
    static let serviceEndpointsCheck = "service-endpoints-check"
    static let nodePortEndpointsCheck = "nodeport-endpoints-check"
    static let markForMasquerade = "mark-for-masquerade"
    static let masquerading = "masquerading"
    static let rejectChain = "reject-chain"
    static let clusterIPs = "cluster-ips"
    static let clusterIPsCheck = "cluster-ips-check"
    static let firewallIPs = "firewall-ips"
    static let firewallCheck = "firewall-check"
    static let endpointAddresses = "endpoint-addresses"

    /// The endpoint maps: by frontend address or by NodePort, for the cluster-wide endpoints or the
    /// node-local ones (a Local-policy frontend can lead to either, by source).
    static func endpointMap(local: Bool, nodePort: Bool) -> String {
        (nodePort ? "nodeport-" : "") + (local ? "local-endpoints" : "cluster-endpoints")
    }

    /// The chain balancing over N endpoints of the cluster-wide or node-local set: `pick-3`, `pick-local-3`.
    static func pickChainName(local: Bool, modulus: Int) -> String { local ? "pick-local-\(modulus)" : "pick-\(modulus)" }

    static func pickChain(local: Bool, modulus: Int) -> Chain {
        // A packet reached the service through a frontend address, whose key is in the first map, or
        // through a NodePort (no frontend address matches its port), whose key is in the second.
        Chain(
            name: pickChainName(local: local, modulus: modulus),
            rules: [
                Rule([
                    .dnatMap([.destinationAddress, .l4Protocol, .destinationPort], modulus: modulus, map: endpointMap(local: local, nodePort: false))
                ]),
                Rule([.dnatMap([.l4Protocol, .destinationPort], modulus: modulus, map: endpointMap(local: local, nodePort: true))]),
            ])
    }

    public static func plan(_ tables: BackendTables, config: PlannerConfig = PlannerConfig()) -> Ruleset {
        assemble(merged(Array(tables.ports.values), config: config), config: config)
    }

    /// The families that need a table: IPv4 always (it holds the fixed chains even with no service),
    /// IPv6 when some service port has an IPv6 frontend.
    static func families(_ fragments: [NFTFamily: ServicePortFragment]) -> [NFTFamily] {
        NFTFamily.allCases.filter { $0 == .ip || fragments[$0] != nil }
    }

    /// The fixed part of each needed table plus the merged fragments. A map the fixed part leaves empty
    /// takes the fragment's dictionary as it is (shared, not copied).
    public static func assemble(_ fragments: [NFTFamily: ServicePortFragment], config: PlannerConfig) -> Ruleset {
        var ruleset = Ruleset()
        for family in families(fragments) {
            var table = baseTable(family, config: config)
            if let fragment = fragments[family] {
                for (name, elements) in fragment.elements {
                    guard var set = table.sets.removeValue(forKey: name) else { continue }
                    if set.elements.isEmpty {
                        set.elements = elements
                    } else {
                        set.elements.merge(elements) { _, new in new }
                    }
                    table.sets[name] = set
                }
                for (name, counts) in fragment.sharedElements {
                    guard var set = table.sets.removeValue(forKey: name) else { continue }
                    set.elements.reserveCapacity(set.elements.count + counts.count)
                    for key in counts.keys { set.elements[key] = .some(nil) }
                    table.sets[name] = set
                }
                table.chains.merge(fragment.chains) { _, new in new }
                table.chains.merge(fragment.sharedChains.mapValues(\.chain)) { _, new in new }
                table.sets.merge(fragment.sets) { _, new in new }
            }
            ruleset.tables[family] = table
        }
        return ruleset
    }

    /// Many service ports planned into one fragment per family: each element once, in the dictionary it
    /// will be sent from, and each shared object with the number of ports that need it. Planned on all
    /// cores, a chunk per core, then merged. (A fragment per port, assembled afterwards, held every element
    /// twice: 0.26 s + 0.20 s and 59 + 64 MiB at 10,000 services x 10 endpoints.)
    public static func merged(_ entries: [ServicePortTable], config: PlannerConfig) -> [NFTFamily: ServicePortFragment] {
        let chunks = max(1, min(sysconf(Int32(_SC_NPROCESSORS_ONLN)), entries.count / 256))
        let chunkSize = (entries.count + chunks - 1) / max(1, chunks)
        let results = Mutex<[Int: [NFTFamily: ServicePortFragment]]>([:])
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            var local: [NFTFamily: ServicePortFragment] = [:]
            for entry in entries[min(entries.count, chunk * chunkSize)..<min(entries.count, (chunk + 1) * chunkSize)] {
                for family in NFTFamily.allCases {
                    var fragment = local.removeValue(forKey: family) ?? ServicePortFragment()
                    let used = addServicePort(entry, family: family, config: config, to: &fragment)
                    if used || !fragment.isEmpty { local[family] = fragment }
                }
            }
            results.withLock { $0[chunk] = local }
        }
        var merged: [NFTFamily: ServicePortFragment] = [:]
        for (_, part) in results.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
            for (family, fragment) in part {
                if var into = merged.removeValue(forKey: family) {
                    into.absorb(fragment)
                    merged[family] = into
                } else {
                    merged[family] = fragment
                }
            }
        }
        return merged
    }

    /// What one service port contributes to each family's table.
    public static func fragments(for entry: ServicePortTable, config: PlannerConfig) -> [NFTFamily: ServicePortFragment] {
        var result: [NFTFamily: ServicePortFragment] = [:]
        for family in NFTFamily.allCases {
            var fragment = ServicePortFragment()
            if addServicePort(entry, family: family, config: config, to: &fragment) { result[family] = fragment }
        }
        return result
    }

    // MARK: Fixed part

    static func baseTable(_ family: NFTFamily, config: PlannerConfig) -> Table {
        var table = Table(family: family, name: tableName)
        let serviceKey: [KeyField] = [.destinationAddress, .l4Protocol, .destinationPort]
        let nodePortKey: [KeyField] = [.l4Protocol, .destinationPort]
        table.add(NFTSet(name: serviceIPs, key: serviceKey, data: .verdict))
        table.add(NFTSet(name: serviceNodePorts, key: nodePortKey, data: .verdict))
        table.add(NFTSet(name: noEndpointServices, key: serviceKey, data: .verdict))
        table.add(NFTSet(name: noEndpointNodePorts, key: nodePortKey, data: .verdict))
        table.add(NFTSet(name: clusterIPs, key: [.destinationAddress]))
        table.add(NFTSet(name: firewallIPs, key: serviceKey, data: .verdict))
        for local in [false, true] {
            table.add(NFTSet(name: endpointMap(local: local, nodePort: false), key: serviceKey + [.slot], data: .endpoint))
            table.add(NFTSet(name: endpointMap(local: local, nodePort: true), key: nodePortKey + [.slot], data: .endpoint))
        }
        table.add(NFTSet(name: endpointAddresses, key: [.sourceAddress, .destinationAddress]))

        // Where a packet is addressed to a NodePort: every local address but loopback, or the listed ones.
        let nodePortMatch: [Statement]
        if config.nodePortAddresses.isEmpty, !config.nodePortPrimaryOnly {
            nodePortMatch = [.matchLocalAddress(.destinationAddress), .matchNotLoopbackDestination]
        } else {
            let addresses =
                config.nodePortPrimaryOnly
                ? Array(config.nodeAddresses.filter { $0.family == family.ipFamily && !$0.isLoopback }.prefix(1))
                : config.nodeAddresses.filter { address in
                    address.family == family.ipFamily && config.nodePortAddresses.contains { $0.contains(address) }
                }
            var set = NFTSet(name: nodePortIPs, key: [.destinationAddress])
            for address in addresses { set.elements[ElementKey([.address(address)])] = .some(nil) }
            table.add(set)
            nodePortMatch = [.lookup([.destinationAddress], set: nodePortIPs)]
        }
        let bit = config.masqueradeBit
        // Traffic to a ClusterIP from outside the pod network (the node, say) is marked for masquerading,
        // or all of it under masqueradeAll, whatever the service's traffic policy (kube-proxy does it
        // before the policy split). One rule for every ClusterIP, where kube-proxy writes one per service
        // port: a ClusterIP's traffic to a port no service serves is refused anyway, so the mark is moot.
        let clusterCIDR = config.clusterCIDRs.first { $0.address.family == family.ipFamily }
        var clusterIPMasquerade: [Rule] = []
        if config.masqueradeAll {
            clusterIPMasquerade = [Rule([.lookup([.destinationAddress], set: clusterIPs), .verdict(.jump(markForMasquerade))])]
        } else if let clusterCIDR {
            clusterIPMasquerade = [
                Rule([
                    .lookup([.destinationAddress], set: clusterIPs), .matchPrefix(.sourceAddress, clusterCIDR, equal: false),
                    .verdict(.jump(markForMasquerade)),
                ])
            ]
        }
        let chains: [Chain] = [
            Chain(
                name: "nat-prerouting", hook: ChainHook(.nat, .prerouting, priority: ChainHook.dstnat),
                rules: [Rule([.verdict(.jump(services))])]),
            Chain(
                name: "nat-output", hook: ChainHook(.nat, .output, priority: ChainHook.dstnat), rules: [Rule([.verdict(.jump(services))])]),
            Chain(
                name: "nat-postrouting", hook: ChainHook(.nat, .postrouting, priority: ChainHook.srcnat),
                rules: [Rule([.verdict(.jump(masquerading))])]),
            Chain(
                name: "filter-prerouting", hook: ChainHook(.filter, .prerouting, priority: ChainHook.dstnat - 10),
                rules: [
                    Rule([.matchNewConnection, .verdict(.jump(firewallCheck))]),
                    Rule([.matchNewConnection, .verdict(.jump(serviceEndpointsCheck))]),
                    Rule([.matchNewConnection, .verdict(.jump(nodePortEndpointsCheck))]),
                ]),
            Chain(
                name: "filter-output", hook: ChainHook(.filter, .output, priority: ChainHook.dstnat - 10),
                rules: [
                    Rule([.matchNewConnection, .verdict(.jump(firewallCheck))]),
                    Rule([.matchNewConnection, .verdict(.jump(serviceEndpointsCheck))]),
                    Rule([.matchNewConnection, .verdict(.jump(nodePortEndpointsCheck))]),
                ]),
            Chain(
                name: services,
                rules: clusterIPMasquerade
                    + [
                    Rule([.verdictMap([.destinationAddress, .l4Protocol, .destinationPort], map: serviceIPs)]),
                    Rule(nodePortMatch + [.verdictMap([.l4Protocol, .destinationPort], map: serviceNodePorts)]),
                ]),
            // loadBalancerSourceRanges: a load-balancer IP's port whose service lists source ranges goes to
            // that service port's firewall chain, which drops other sources. Checked before DNAT, so it
            // sees the address the client asked for; like kube-proxy, NodePorts are not filtered.
            Chain(
                name: firewallCheck,
                rules: [Rule([.verdictMap([.destinationAddress, .l4Protocol, .destinationPort], map: firewallIPs)])]),
            Chain(
                name: serviceEndpointsCheck,
                rules: [Rule([.verdictMap([.destinationAddress, .l4Protocol, .destinationPort], map: noEndpointServices)])]),
            Chain(
                name: nodePortEndpointsCheck,
                rules: [Rule(nodePortMatch + [.verdictMap([.l4Protocol, .destinationPort], map: noEndpointNodePorts)])]),
            Chain(name: markForMasquerade, rules: [Rule([.setMark(bit)])]),
            Chain(
                name: masquerading,
                rules: [
                    // Hairpin: a pod that reached itself through a service is masqueraded, or its own reply
                    // would skip the DNAT's reversal. After DNAT the destination is the endpoint.
                    Rule([.lookup([.sourceAddress, .destinationAddress], set: endpointAddresses), .verdict(.jump(markForMasquerade))]),
                    Rule([.matchMarkClear(bit), .verdict(.return)]), Rule([.toggleMark(bit)]), Rule([.masqueradeFullyRandom]),
                ]),
            Chain(name: rejectChain, rules: [Rule([.rejectTCPReset]), Rule([.reject])]),
            // A ClusterIP on a port or protocol no service port serves: refused at once, as kube-proxy's
            // `cluster-ips` check does. It runs after DNAT (forward, and output after dstnat), so what
            // still goes to a ClusterIP there is what no service port took.
            Chain(
                name: "filter-forward", hook: ChainHook(.filter, .forward, priority: 0),
                rules: [Rule([.matchNewConnection, .verdict(.jump(clusterIPsCheck))])]),
            Chain(
                name: "filter-output-post-dnat", hook: ChainHook(.filter, .output, priority: ChainHook.dstnat + 10),
                rules: [Rule([.matchNewConnection, .verdict(.jump(clusterIPsCheck))])]),
            Chain(
                name: clusterIPsCheck,
                rules: [Rule([.lookup([.destinationAddress], set: clusterIPs), .verdict(.goto(rejectChain))])]
                    + config.serviceCIDRs.filter { $0.address.family == family.ipFamily }.map { range in
                        // An address of the service range that is no ClusterIP: dropped (no answer, no refusal).
                        Rule([.matchPrefix(.destinationAddress, range, equal: true), .verdict(.drop)])
                    }),
        ]
        for chain in chains { table.add(chain) }
        return table
    }

    // MARK: Per service port

    /// Adds one service port's chains, sets and map elements for `family`; false when it has no frontend
    /// of that family.
    static func addServicePort(_ entry: ServicePortTable, family: NFTFamily, config: PlannerConfig, to table: inout ServicePortFragment)
        -> Bool
    {
        let ipFamily = family.ipFamily
        let clusterIPs = entry.clusterIPs.filter { $0.family == ipFamily }
        let externalAddresses = (entry.externalIPs + entry.loadBalancerIPs).filter { $0.family == ipFamily }
        // A NodePort belongs to the family of the service's primary cluster IP family list.
        let hasNodePort = entry.nodePort != nil && !clusterIPs.isEmpty
        guard !clusterIPs.isEmpty || !externalAddresses.isEmpty else { return false }

        let cluster = entry.categories.cluster.filter { $0.ip.family == ipFamily }
        let local = entry.categories.local.filter { $0.ip.family == ipFamily }
        let l4 = entry.name.protocol
        let clusterCIDR = config.clusterCIDRs.first { $0.address.family == ipFamily }
        let serviceChain = ChainNames.service(entry)
        let localChain = ChainNames.local(entry)
        let externalChain = ChainNames.external(entry)

        // Shared with other service ports: the ClusterIPs (for the unserved-port check) and the endpoint
        // addresses (hairpin). Every endpoint, as kube-proxy marks every endpoint chain: keeping only this
        // node's (a pod's service traffic is translated on its own node) was tried, and broke hairpin for
        // pods whose EndpointSlice names another node than the one they run on (the traffic tests' bed).
        for address in clusterIPs { table.sharedElements[Planner.clusterIPs, default: [:]][ElementKey([.address(address)]), default: 0] += 1 }
        for backend in Set(cluster + local) {
            table.sharedElements[endpointAddresses, default: [:]][ElementKey([.address(backend.ip), .address(backend.ip)]), default: 0] += 1
        }

        let affinityTimeout: Int? = {
            if case .clientIP(let timeout) = entry.sessionAffinity { return timeout }
            return nil
        }()
        // With affinity: a chain per endpoint, which records the client in the endpoint's affinity set.
        if let timeout = affinityTimeout {
            for backend in Set(cluster + local).sorted() {
                let set = ChainNames.affinity(entry, backend, timeout: timeout)
                table.add(NFTSet(name: set, key: [.sourceAddress], timeoutSeconds: timeout))
                table.add(
                    Chain(
                        name: ChainNames.endpoint(entry, backend),
                        rules: [Rule([.updateSet(.sourceAddress, set: set)]), Rule([.dnat(backend.ip, port: backend.port, protocol: l4)])]))
            }
        }

        /// Where a packet goes to be balanced over `backends` (the node-local set when `local`): the shared
        /// `pick-N` chain; with affinity, the service port's own chain (`service-…` or `local-…`), which
        /// checks the affinity sets and then picks an endpoint chain with a `numgen` cascade.
        func balancing(_ backends: [Backend], local isLocal: Bool) -> String {
            guard let timeout = affinityTimeout else {
                let pick = pickChain(local: isLocal, modulus: backends.count)
                table.sharedChains[pick.name, default: SharedChain(pick)].uses += 1
                return pick.name
            }
            var rules: [Rule] = []
            for backend in backends {
                rules.append(
                    Rule([
                        .lookup([.sourceAddress], set: ChainNames.affinity(entry, backend, timeout: timeout)),
                        .verdict(.goto(ChainNames.endpoint(entry, backend))),
                    ]))
            }
            let chains = backends.map { ChainNames.endpoint(entry, $0) }
            for (index, chain) in chains.enumerated() {
                let remaining = chains.count - index
                rules.append(Rule(remaining > 1 ? [.matchRandom(modulus: remaining), .verdict(.goto(chain))] : [.verdict(.goto(chain))]))
            }
            let name = isLocal ? localChain : serviceChain
            table.add(Chain(name: name, rules: rules))
            return name
        }

        /// The endpoint map elements of one frontend (an address and port, or a NodePort) for the set it
        /// can reach (not needed with affinity: its endpoint chains DNAT).
        func endpointElements(_ frontend: ElementKey, local isLocal: Bool) {
            guard affinityTimeout == nil else { return }
            let backends = isLocal ? local : cluster
            let map = endpointMap(local: isLocal, nodePort: frontend.fieldCount == 2)
            for (slot, backend) in backends.enumerated() {
                table.elements[map, default: [:]][frontend.appending(slot: slot)] = .endpoint(backend.ip, port: backend.port)
            }
        }

        // (Traffic to a ClusterIP from outside the pod network, or all of it under masqueradeAll, is marked
        // for masquerading by one shared rule in the `services` chain: see `baseTable`.)
        let clusterTarget: String? = cluster.isEmpty ? nil : balancing(cluster, local: false)
        let localTarget: String? = local.isEmpty ? nil : balancing(local, local: true)

        let noEndpointVerdict: (Bool) -> Verdict = { localPolicy in
            localPolicy && entry.categories.hasAnyEndpoints ? .drop : .goto(rejectChain)
        }

        // Load-balancer source ranges: each load-balancer IP's port goes to a firewall chain that lets the
        // allowed sources return and drops the rest. One rule per allowed source: a few rules per
        // service and no anonymous set (each of which the kernel binds by walking the whole transaction).
        let nodeIP = config.nodeAddresses.first { $0.family == ipFamily }
        if let allowed = entry.loadBalancerAllowedSources(family: ipFamily, nodeIP: nodeIP) {
            let firewallChain = ChainNames.firewall(entry)
            // (A host prefix, /32 or /128, lowers and prints as the one address: no case of its own here.)
            let rules = allowed.map { Rule([.matchPrefix(.sourceAddress, $0, equal: true), .verdict(.return)]) }
            table.add(Chain(name: firewallChain, rules: rules + [Rule([.verdict(.drop)])]))
            for address in entry.loadBalancerIPs where address.family == ipFamily {
                table.elements[firewallIPs, default: [:]][ElementKey([.address(address), .l4Protocol(l4), .port(entry.port)])] =
                    .verdict(.goto(firewallChain))
            }
        }

        // ClusterIP dispatch: straight to the balancing chain.
        let internalTarget = entry.policy.internalLocal ? localTarget : clusterTarget
        for address in clusterIPs {
            let key = ElementKey([.address(address), .l4Protocol(l4), .port(entry.port)])
            if let internalTarget {
                table.elements[serviceIPs, default: [:]][key] = .verdict(.goto(internalTarget))
                endpointElements(key, local: entry.policy.internalLocal)
            } else {
                table.elements[noEndpointServices, default: [:]][key] = .verdict(noEndpointVerdict(entry.policy.internalLocal))
            }
        }

        // External dispatch: NodePort, external IPs and load-balancer IPs share one external chain. Under
        // Cluster policy (and without affinity) it only marks for masquerading and balances, which depends
        // on the endpoint count alone: one `external-pick-N` chain shared by every such service port (a
        // chain per service port was half the chains at 10,000 NodePort services, and the kernel walks
        // every chain at every commit, and all of them again to validate the table after a rule change).
        guard hasNodePort || !externalAddresses.isEmpty else { return true }
        let externalReachable = entry.policy.externalLocal ? (localTarget != nil || clusterTarget != nil) : clusterTarget != nil
        var externalTarget = externalChain
        if externalReachable, !entry.policy.externalLocal, let clusterTarget {
            if affinityTimeout == nil {
                let shared = Chain(
                    name: "external-\(clusterTarget)",
                    rules: [Rule([.verdict(.jump(markForMasquerade))]), Rule([.verdict(.goto(clusterTarget))])])
                table.sharedChains[shared.name, default: SharedChain(shared)].uses += 1
                externalTarget = shared.name
            } else {
                table.add(
                    Chain(name: externalChain, rules: [Rule([.verdict(.jump(markForMasquerade))]), Rule([.verdict(.goto(clusterTarget))])]))
            }
        } else if externalReachable {
            // Local policy. Short-circuit: pods and the node itself may use any endpoint (and the node is
            // masqueraded); others only this node's, and are dropped when there are none here.
            var rules: [Rule] = []
            if let clusterCIDR, let clusterTarget {
                rules.append(Rule([.matchPrefix(.sourceAddress, clusterCIDR, equal: true), .verdict(.goto(clusterTarget))]))
            }
            rules.append(Rule([.matchLocalAddress(.sourceAddress), .verdict(.jump(markForMasquerade))]))
            if let clusterTarget {
                rules.append(Rule([.matchLocalAddress(.sourceAddress), .verdict(.goto(clusterTarget))]))
            }
            rules.append(Rule([.verdict(localTarget.map { .goto($0) } ?? .drop)]))
            table.add(Chain(name: externalChain, rules: rules))
        }
        func dispatch(_ key: ElementKey, map: String, noEndpointMap: String) {
            if externalReachable {
                table.elements[map, default: [:]][key] = .verdict(.goto(externalTarget))
                // The external chain leads to the cluster-wide endpoints (Cluster policy, or the Local
                // policy's short-circuit for pods and the node) and, under Local policy, to the local ones.
                if !cluster.isEmpty { endpointElements(key, local: false) }
                if entry.policy.externalLocal && !local.isEmpty { endpointElements(key, local: true) }
            } else {
                table.elements[noEndpointMap, default: [:]][key] = .verdict(noEndpointVerdict(entry.policy.externalLocal))
            }
        }
        for address in externalAddresses {
            dispatch(
                ElementKey([.address(address), .l4Protocol(l4), .port(entry.port)]), map: serviceIPs, noEndpointMap: noEndpointServices)
        }
        if hasNodePort, let nodePort = entry.nodePort {
            dispatch(ElementKey([.l4Protocol(l4), .port(nodePort)]), map: serviceNodePorts, noEndpointMap: noEndpointNodePorts)
        }
        return true
    }
}

/// The chains, sets and map elements one service port adds to one family's table: the unit the
/// proxier re-plans and diffs when that service port changes. (A full sync plans every port into one.)
public struct ServicePortFragment: Sendable, Hashable {
    public var chains: [String: Chain] = [:]
    public var sets: [String: NFTSet] = [:]
    /// Elements the service ports put in the shared maps, by map name (keys no other port uses).
    public var elements: [String: [ElementKey: ElementValue?]] = [:]
    /// Elements of plain sets several service ports may need alike (`cluster-ips`: a ClusterIP serves
    /// every port of its service; `endpoint-addresses`: a pod backs several ports), with how many of the
    /// planned ports need each: the proxier counts who needs each, so that one port going away never
    /// removes what another still needs.
    public var sharedElements: [String: [ElementKey: Int]] = [:]
    /// Chains every service port with the same number of endpoints uses (`pick-N`), counted likewise.
    public var sharedChains: [String: SharedChain] = [:]

    public init() {}

    var isEmpty: Bool { chains.isEmpty && sets.isEmpty && elements.isEmpty && sharedElements.isEmpty && sharedChains.isEmpty }

    mutating func add(_ chain: Chain) { chains[chain.name] = chain }
    mutating func add(_ set: NFTSet) { sets[set.name] = set }

    /// Takes in another fragment's objects and adds up the uses of shared ones.
    mutating func absorb(_ other: ServicePortFragment) {
        chains.merge(other.chains) { _, new in new }
        sets.merge(other.sets) { _, new in new }
        for (name, entries) in other.elements { elements[name, default: [:]].merge(entries) { _, new in new } }
        for (name, counts) in other.sharedElements { sharedElements[name, default: [:]].merge(counts, uniquingKeysWith: +) }
        for (name, chain) in other.sharedChains { sharedChains[name, default: SharedChain(chain.chain, uses: 0)].uses += chain.uses }
    }

    /// Puts the fragment in `table`; the shared part too unless `shared` is false (the proxier's
    /// partial diffs, which count the shared part themselves).
    func merge(into table: inout Table, shared: Bool = true) {
        for (name, chain) in chains { table.chains[name] = chain }
        for (name, set) in sets { table.sets[name] = set }
        for (map, entries) in elements {
            for (key, value) in entries { table.sets[map]?.elements[key] = value }
        }
        guard shared else { return }
        for (name, chain) in sharedChains { table.chains[name] = chain.chain }
        for (set, counts) in sharedElements {
            for key in counts.keys { table.sets[set]?.elements[key] = .some(nil) }
        }
    }
}

/// A chain several service ports share, with how many of them use it.
public struct SharedChain: Sendable, Hashable {
    public var chain: Chain
    public var uses: Int

    public init(_ chain: Chain, uses: Int = 0) {
        self.chain = chain
        self.uses = uses
    }
}
