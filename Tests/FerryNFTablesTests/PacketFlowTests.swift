import FerryCore
import Testing

@testable import FerryNFTables

/// Packets traced through the ruleset planned for deploy/examples on node-1 (10.0.0.1), pods in
/// 10.244.0.0/16: which endpoints each can reach, and whether it is masqueraded.
@Suite("Packet flows through the planned rules")
struct PacketFlowTests {
    struct Flow: CustomTestStringConvertible, Sendable {
        var name: String
        var source: String
        var destination: String
        var port: Int
        var l4: L4Protocol = .tcp
        var fromNode = false
        var expected: [TraceOutcome]
        var testDescription: String { name }
    }

    static let myService = ["10.244.1.2:80", "10.244.2.2:80", "10.244.2.3:80"]
    static func to(_ endpoints: [String], masqueraded: Bool) -> [TraceOutcome] {
        endpoints.map { .forwarded(endpoint: $0, masqueraded: masqueraded) }
    }

    static let flows: [Flow] = [
        Flow(
            name: "pod to ClusterIP: every endpoint, not masqueraded", source: "10.244.1.5", destination: "10.96.0.10", port: 80,
            expected: to(myService, masqueraded: false)),
        Flow(
            name: "node to ClusterIP: masqueraded (source outside the pod network)", source: "10.0.0.1", destination: "10.96.0.10",
            port: 80,
            fromNode: true, expected: to(myService, masqueraded: true)),
        Flow(
            name: "pod to its own service (hairpin): masqueraded only toward itself", source: "10.244.1.2", destination: "10.96.0.10",
            port: 80,
            expected: [
                .forwarded(endpoint: "10.244.1.2:80", masqueraded: true), .forwarded(endpoint: "10.244.2.2:80", masqueraded: false),
                .forwarded(endpoint: "10.244.2.3:80", masqueraded: false),
            ]),
        Flow(
            name: "wrong port on a ClusterIP: refused at once (kube-proxy's cluster-ips check)", source: "10.244.1.5",
            destination: "10.96.0.10", port: 81, expected: [.rejected]),
        Flow(
            name: "wrong port on a ClusterIP from the node: refused too", source: "10.0.0.1", destination: "10.96.0.10", port: 81,
            fromNode: true, expected: [.rejected]),
        Flow(
            name: "wrong protocol on a ClusterIP (UDP to a TCP port): refused", source: "10.244.1.5", destination: "10.96.0.10",
            port: 80, l4: .udp, expected: [.rejected]),
        Flow(
            name: "an address that is no ClusterIP is not touched", source: "10.244.1.5", destination: "10.96.200.200", port: 80,
            expected: [.untouched]),
        Flow(
            name: "NodePort from outside: masqueraded", source: "203.0.113.9", destination: "10.0.0.1", port: 30080,
            expected: to(["10.244.1.10:8080", "10.244.2.10:8080"], masqueraded: true)),
        Flow(
            name: "NodePort with Local policy from outside: only this node's endpoint, client IP kept",
            source: "203.0.113.9", destination: "10.0.0.1", port: 30081, expected: to(["10.244.1.12:8080"], masqueraded: false)),
        Flow(
            name: "NodePort with Local policy from a pod: short-circuited to every endpoint",
            source: "10.244.2.9", destination: "10.0.0.1", port: 30081,
            expected: to(["10.244.1.12:8080", "10.244.2.12:8080", "10.244.2.13:8080"], masqueraded: false)),
        Flow(
            name: "NodePort with Local policy from the node itself: every endpoint, masqueraded",
            source: "10.0.0.1", destination: "10.0.0.1", port: 30081, fromNode: true,
            expected: to(["10.244.1.12:8080", "10.244.2.12:8080", "10.244.2.13:8080"], masqueraded: true)),
        Flow(
            name: "internal Local policy: the ClusterIP reaches only this node's endpoint",
            source: "10.244.2.9", destination: "10.96.0.13", port: 80, expected: to(["10.244.1.12:8080"], masqueraded: false)),
        Flow(
            name: "internal Local policy from the node: masqueraded, as kube-proxy does before the policy split",
            source: "10.0.0.1", destination: "10.96.0.13", port: 80, fromNode: true,
            expected: to(["10.244.1.12:8080"], masqueraded: true)),
        Flow(
            name: "internal Local policy from outside the pod network: masqueraded", source: "203.0.113.9", destination: "10.96.0.13",
            port: 80, expected: to(["10.244.1.12:8080"], masqueraded: true)),
        Flow(
            name: "terminating endpoints get no new connections while one is ready", source: "10.244.1.5", destination: "10.96.0.15",
            port: 80,
            expected: to(["10.244.1.15:8080"], masqueraded: false)),
        Flow(
            name: "UDP service", source: "10.244.1.5", destination: "10.96.0.53", port: 53, l4: .udp,
            expected: to(["10.244.1.17:53", "10.244.2.17:53"], masqueraded: false)),
        Flow(
            name: "external IP from outside", source: "203.0.113.9", destination: "192.0.2.10", port: 443,
            expected: to(["10.244.1.18:8443", "10.244.2.18:8443"], masqueraded: true)),
        Flow(
            name: "load-balancer IP from outside", source: "203.0.113.9", destination: "198.51.100.7", port: 443,
            expected: to(["10.244.1.18:8443", "10.244.2.18:8443"], masqueraded: true)),
        Flow(
            name: "topology hints keep traffic in this zone", source: "10.244.1.5", destination: "10.96.0.17", port: 80,
            expected: to(["10.244.1.19:8080", "10.244.2.19:8080"], masqueraded: false)),
        Flow(
            name: "a NodePort on loopback is not served", source: "127.0.0.1", destination: "127.0.0.1", port: 30080, fromNode: true,
            expected: [.untouched]),
    ]

    @Test(arguments: flows)
    func flow(_ flow: Flow) {
        let ruleset = Planner.plan(exampleTables(), config: PlannerConfig(clusterCIDRs: [podCIDR]))
        let tracer = PacketTracer(ruleset: ruleset, localAddresses: node1.addresses)
        let packet = TracedPacket(
            source: ip(flow.source), destination: ip(flow.destination), port: flow.port, protocol: flow.l4, fromNode: flow.fromNode)
        #expect(tracer.trace(packet) == flow.expected.sorted { "\($0)" < "\($1)" })
    }

    static let edgeCases = """
        apiVersion: v1
        kind: Service
        metadata: {name: empty}
        spec: {type: NodePort, clusterIP: 10.96.1.1, ports: [{port: 80, nodePort: 31000}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: elsewhere}
        spec: {type: NodePort, clusterIP: 10.96.1.2, externalTrafficPolicy: Local, ports: [{port: 80, nodePort: 31001}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: elsewhere-x, labels: {kubernetes.io/service-name: elsewhere}}
        addressType: IPv4
        endpoints: [{addresses: [10.244.2.50], nodeName: node-2}]
        ports: [{port: 8080}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: sticky}
        spec: {clusterIP: 10.96.1.3, sessionAffinity: ClientIP, ports: [{port: 80}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: sticky-x, labels: {kubernetes.io/service-name: sticky}}
        addressType: IPv4
        endpoints: [{addresses: [10.244.2.60]}, {addresses: [10.244.2.61]}]
        ports: [{port: 8080}]
        """

    @Test func serviceWithoutEndpointsIsRejectedAtOnce() {
        let ruleset = Planner.plan(tables(yaml: Self.edgeCases), config: PlannerConfig(clusterCIDRs: [podCIDR]))
        let tracer = PacketTracer(ruleset: ruleset, localAddresses: node1.addresses)
        #expect(tracer.trace(TracedPacket(source: ip("10.244.1.5"), destination: ip("10.96.1.1"), port: 80)) == [.rejected])
        #expect(tracer.trace(TracedPacket(source: ip("10.0.0.1"), destination: ip("10.96.1.1"), port: 80, fromNode: true)) == [.rejected])
        #expect(tracer.trace(TracedPacket(source: ip("203.0.113.9"), destination: ip("10.0.0.1"), port: 31000)) == [.rejected])
    }

    @Test func localPolicyWithEndpointsOnlyElsewhereDropsOutsideTraffic() {
        let ruleset = Planner.plan(tables(yaml: Self.edgeCases), config: PlannerConfig(clusterCIDRs: [podCIDR]))
        let tracer = PacketTracer(ruleset: ruleset, localAddresses: node1.addresses)
        #expect(tracer.trace(TracedPacket(source: ip("203.0.113.9"), destination: ip("10.0.0.1"), port: 31001)) == [.dropped])
        // Pods still reach the service through the short-circuit.
        #expect(
            tracer.trace(TracedPacket(source: ip("10.244.1.5"), destination: ip("10.0.0.1"), port: 31001))
                == [.forwarded(endpoint: "10.244.2.50:8080", masqueraded: false)])
    }

    @Test func affinityChecksTheSetsBeforeBalancing() throws {
        let ruleset = Planner.plan(tables(yaml: Self.edgeCases))
        let table = try #require(ruleset.tables[.ip])
        let service = try #require(table.chains.values.first { $0.name.hasPrefix("service-") && $0.name.contains("/sticky/") })
        #expect(service.rules.count == 4)
        #expect(service.rules[0].text(.ip).hasPrefix("ip saddr @affinity-"))
        #expect(service.rules[1].text(.ip).hasPrefix("ip saddr @affinity-"))
        #expect(service.rules[2].text(.ip).hasPrefix("numgen random mod 2 0 goto endpoint-"))
        #expect(service.rules[3].text(.ip).hasPrefix("goto endpoint-"))
        let affinitySets = table.sets.values.filter { $0.name.hasPrefix("affinity-") }
        #expect(affinitySets.count == 2)
        #expect(affinitySets.allSatisfy { $0.timeoutSeconds == 10_800 })
    }

    @Test func masqueradeAllMarksEveryClusterIPConnection() {
        let ruleset = Planner.plan(exampleTables(), config: PlannerConfig(masqueradeAll: true))
        let tracer = PacketTracer(ruleset: ruleset, localAddresses: node1.addresses)
        #expect(
            tracer.trace(TracedPacket(source: ip("10.244.1.5"), destination: ip("10.96.0.15"), port: 80))
                == [.forwarded(endpoint: "10.244.1.15:8080", masqueraded: true)])
    }

    /// masqueradeAll reaches Local-policy ClusterIPs too, with and without a cluster CIDR; external Local
    /// traffic still keeps its source.
    @Test(arguments: [[], [CIDR("10.244.0.0/16")!]])
    func masqueradeAllCoversInternalLocalPolicy(_ cidrs: [CIDR]) {
        let ruleset = Planner.plan(exampleTables(), config: PlannerConfig(clusterCIDRs: cidrs, masqueradeAll: true))
        let tracer = PacketTracer(ruleset: ruleset, localAddresses: node1.addresses)
        #expect(
            tracer.trace(TracedPacket(source: ip("10.244.2.9"), destination: ip("10.96.0.13"), port: 80))
                == [.forwarded(endpoint: "10.244.1.12:8080", masqueraded: true)])
        #expect(
            tracer.trace(TracedPacket(source: ip("203.0.113.9"), destination: ip("10.0.0.1"), port: 30081))
                == [.forwarded(endpoint: "10.244.1.12:8080", masqueraded: false)])
    }

    /// With the service range known, an address in it that no Service owns is dropped (no answer, no
    /// refusal); a ClusterIP's unserved port is still refused, and addresses outside the range pass.
    @Test func unallocatedServiceAddressesAreDropped() {
        let ruleset = Planner.plan(exampleTables(), config: PlannerConfig(clusterCIDRs: [podCIDR], serviceCIDRs: [CIDR("10.96.0.0/12")!]))
        let tracer = PacketTracer(ruleset: ruleset, localAddresses: node1.addresses)
        #expect(tracer.trace(TracedPacket(source: ip("10.244.1.5"), destination: ip("10.96.200.200"), port: 80)) == [.dropped])
        #expect(tracer.trace(TracedPacket(source: ip("10.0.0.1"), destination: ip("10.100.0.1"), port: 80, fromNode: true)) == [.dropped])
        #expect(tracer.trace(TracedPacket(source: ip("10.244.1.5"), destination: ip("10.96.0.10"), port: 81)) == [.rejected])
        #expect(tracer.trace(TracedPacket(source: ip("10.244.1.5"), destination: ip("10.112.0.1"), port: 80)) == [.untouched])
        #expect(
            tracer.trace(TracedPacket(source: ip("10.244.1.5"), destination: ip("10.96.0.10"), port: 80)).allSatisfy {
                if case .forwarded = $0 { return true } else { return false }
            })
        // No range: no drop (as kube-proxy without service CIDRs).
        let open = PacketTracer(ruleset: Planner.plan(exampleTables(), config: PlannerConfig(clusterCIDRs: [podCIDR])), localAddresses: node1.addresses)
        #expect(open.trace(TracedPacket(source: ip("10.244.1.5"), destination: ip("10.96.200.200"), port: 80)) == [.untouched])
    }

    /// `--nodeport-addresses primary`: only the node's primary address (the first of its family) serves
    /// NodePorts, kube-proxy's nftables default since 1.31.
    @Test func primaryNodePortAddressOnly() {
        var config = PlannerConfig(clusterCIDRs: [podCIDR], nodeAddresses: [ip("10.0.0.1"), ip("192.168.50.1")])
        config.nodePortPrimaryOnly = true
        let ruleset = Planner.plan(exampleTables(), config: config)
        let tracer = PacketTracer(ruleset: ruleset, localAddresses: [ip("10.0.0.1"), ip("192.168.50.1")])
        #expect(tracer.trace(TracedPacket(source: ip("203.0.113.9"), destination: ip("10.0.0.1"), port: 30080)).count == 2)
        #expect(tracer.trace(TracedPacket(source: ip("203.0.113.9"), destination: ip("192.168.50.1"), port: 30080)) == [.untouched])
        #expect(ruleset.tables[.ip]?.sets["nodeport-ips"]?.elements.count == 1)
    }

    @Test func nodePortAddressesLimitWhereNodePortsAnswer() {
        let config = PlannerConfig(
            clusterCIDRs: [podCIDR], nodePortAddresses: [CIDR("10.0.0.0/24")!], nodeAddresses: [ip("10.0.0.1"), ip("192.168.50.1")])
        let ruleset = Planner.plan(exampleTables(), config: config)
        let tracer = PacketTracer(ruleset: ruleset, localAddresses: [ip("10.0.0.1"), ip("192.168.50.1")])
        #expect(tracer.trace(TracedPacket(source: ip("203.0.113.9"), destination: ip("10.0.0.1"), port: 30080)).count == 2)
        #expect(tracer.trace(TracedPacket(source: ip("203.0.113.9"), destination: ip("192.168.50.1"), port: 30080)) == [.untouched])
    }

    static let sourceRanges = """
        apiVersion: v1
        kind: Service
        metadata: {name: guarded}
        spec:
          type: LoadBalancer
          clusterIP: 10.96.2.1
          loadBalancerSourceRanges: [203.0.113.0/25, 10.0.0.0/24, "10.244.1.0/24", "2001:db8::/32"]
          ports: [{port: 443, targetPort: 8443, nodePort: 31443}]
        status: {loadBalancer: {ingress: [{ip: 198.51.100.20}]}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: guarded-away}
        spec:
          type: LoadBalancer
          clusterIP: 10.96.2.2
          loadBalancerSourceRanges: [203.0.113.0/25]
          ports: [{port: 443, targetPort: 8443, nodePort: 31444}]
        status: {loadBalancer: {ingress: [{ip: 198.51.100.21}]}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: guarded-v6-only}
        spec:
          type: LoadBalancer
          clusterIP: 10.96.2.3
          loadBalancerSourceRanges: ["2001:db8::/32"]
          ports: [{port: 443, targetPort: 8443, nodePort: 31445}]
        status: {loadBalancer: {ingress: [{ip: 198.51.100.22}]}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: guarded-x, labels: {kubernetes.io/service-name: guarded}}
        addressType: IPv4
        endpoints: [{addresses: [10.244.2.70]}]
        ports: [{port: 8443}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: guarded-away-x, labels: {kubernetes.io/service-name: guarded-away}}
        addressType: IPv4
        endpoints: [{addresses: [10.244.2.71]}]
        ports: [{port: 8443}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: guarded-v6-only-x, labels: {kubernetes.io/service-name: guarded-v6-only}}
        addressType: IPv4
        endpoints: [{addresses: [10.244.2.72]}]
        ports: [{port: 8443}]
        """

    /// loadBalancerSourceRanges, as kube-proxy enforces them: only the load-balancer IP is filtered (not
    /// the ClusterIP, not the NodePort); pods are clients like any other; the node is allowed when its
    /// address is in a range, also when its packet leaves from the load-balancer IP itself (a local
    /// VIP); ranges of the other family only leave this family unfiltered.
    @Test func loadBalancerSourceRangesFilterTheLoadBalancerIP() {
        let ruleset = Planner.plan(tables(yaml: Self.sourceRanges), config: PlannerConfig(clusterCIDRs: [podCIDR], nodeAddresses: [ip("10.0.0.1")]))
        let tracer = PacketTracer(ruleset: ruleset, localAddresses: node1.addresses + [ip("198.51.100.20")])
        let guarded: [TraceOutcome] = [.forwarded(endpoint: "10.244.2.70:8443", masqueraded: true)]
        func trace(_ source: String, _ destination: String, _ port: Int = 443, fromNode: Bool = false) -> [TraceOutcome] {
            tracer.trace(TracedPacket(source: ip(source), destination: ip(destination), port: port, fromNode: fromNode))
        }
        #expect(trace("203.0.113.9", "198.51.100.20") == guarded, "a client in a range")
        #expect(trace("203.0.113.200", "198.51.100.20") == [.dropped], "a client outside every range")
        #expect(trace("10.244.2.9", "198.51.100.20") == [.dropped], "a pod outside the ranges")
        #expect(trace("10.244.1.9", "198.51.100.20") == [.forwarded(endpoint: "10.244.2.70:8443", masqueraded: true)], "a pod inside one")
        #expect(trace("10.0.0.1", "198.51.100.20", fromNode: true) == guarded, "the node, its address in a range")
        #expect(trace("198.51.100.20", "198.51.100.20", fromNode: true) == guarded, "the node from the local VIP")
        #expect(trace("203.0.113.200", "10.0.0.1", 31443) == guarded, "the NodePort is not filtered")
        #expect(trace("203.0.113.200", "10.96.2.1") == [.forwarded(endpoint: "10.244.2.70:8443", masqueraded: true)], "nor the ClusterIP")
        #expect(trace("10.0.0.1", "198.51.100.21", fromNode: true) == [.dropped], "the node outside the ranges")
        #expect(trace("203.0.113.9", "198.51.100.21") == [.forwarded(endpoint: "10.244.2.71:8443", masqueraded: true)])
        #expect(trace("203.0.113.200", "198.51.100.22") == [.forwarded(endpoint: "10.244.2.72:8443", masqueraded: true)], "IPv6 ranges only")
        #expect(trace("203.0.113.200", "198.51.100.20", 444) == [.untouched], "another port of the address")
    }
}
