import FerryCore
import Testing

@testable import FerryNFTables

/// The kinds of packet flow kube-proxy's own nftables tests check (its `runPacketFlowTests` tables),
/// in Ferry's cases: three LoadBalancer services (policies Cluster, external Local, internal Local),
/// each with an endpoint on this node and one elsewhere, reached from a pod, from the node and from
/// outside, on the ClusterIP, the NodePort and the load-balancer IP; under the four combinations of
/// `--masquerade-all` and a known pod network (kube-proxy's "local traffic detector": Ferry's
/// `--cluster-cidr`). Plus multi-protocol ports, no-endpoint rejection on every frontend, and
/// terminating fallback per policy.
@Suite("kube-proxy's packet-flow behaviours, in Ferry's cases")
struct KubeProxyBehaviourTests {
    static let services = """
        apiVersion: v1
        kind: Service
        metadata: {name: alpha}
        spec: {type: LoadBalancer, clusterIP: 10.96.5.1, externalIPs: [192.0.2.51], ports: [{port: 80, targetPort: 8080, nodePort: 31501}]}
        status: {loadBalancer: {ingress: [{ip: 198.51.100.51}, {ip: 198.51.100.61}]}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: beta}
        spec: {type: LoadBalancer, clusterIP: 10.96.5.2, externalTrafficPolicy: Local, externalIPs: [192.0.2.52], healthCheckNodePort: 32002, ports: [{port: 80, targetPort: 8080, nodePort: 31502}]}
        status: {loadBalancer: {ingress: [{ip: 198.51.100.52}]}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: gamma}
        spec: {type: LoadBalancer, clusterIP: 10.96.5.3, internalTrafficPolicy: Local, ports: [{port: 80, targetPort: 8080, nodePort: 31503}]}
        status: {loadBalancer: {ingress: [{ip: 198.51.100.53}]}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: alpha-x, labels: {kubernetes.io/service-name: alpha}}
        addressType: IPv4
        endpoints: [{addresses: [10.244.1.51], nodeName: node-1}, {addresses: [10.244.2.51], nodeName: node-2}]
        ports: [{port: 8080}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: beta-x, labels: {kubernetes.io/service-name: beta}}
        addressType: IPv4
        endpoints: [{addresses: [10.244.1.52], nodeName: node-1}, {addresses: [10.244.2.52], nodeName: node-2}]
        ports: [{port: 8080}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: gamma-x, labels: {kubernetes.io/service-name: gamma}}
        addressType: IPv4
        endpoints: [{addresses: [10.244.1.53], nodeName: node-1}, {addresses: [10.244.2.53]}]
        ports: [{port: 8080}]
        """

    enum Source: String, CaseIterable { case pod, node, external }
    enum Target: String, CaseIterable { case clusterIP, nodePort, loadBalancer }
    enum Variant: String, CaseIterable {
        case base, noPodNetwork, masqueradeAll, masqueradeAllNoPodNetwork
        var config: PlannerConfig {
            PlannerConfig(
                clusterCIDRs: self == .base || self == .masqueradeAll ? [podCIDR] : [],
                masqueradeAll: self == .masqueradeAll || self == .masqueradeAllNoPodNetwork)
        }
        var knowsPods: Bool { self == .base || self == .masqueradeAll }
        var masqueradesAll: Bool { self == .masqueradeAll || self == .masqueradeAllNoPodNetwork }
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var variant: Variant
        var service: String
        var testDescription: String { "\(variant.rawValue): \(service)" }
    }

    static let cases: [Case] = Variant.allCases.flatMap { variant in ["alpha", "beta", "gamma"].map { Case(variant: variant, service: $0) } }

    /// What kube-proxy does with each source and target for `service` under `variant`: the endpoints
    /// reached and whether the packet is masqueraded.
    static func expected(_ service: String, _ source: Source, _ target: Target, _ variant: Variant) -> (endpoints: [String], masqueraded: Bool) {
        let number = ["alpha": 51, "beta": 52, "gamma": 53][service]!
        let both = ["10.244.1.\(number):8080", "10.244.2.\(number):8080"]
        let local = ["10.244.1.\(number):8080"]
        if target == .clusterIP {
            // The ClusterIP: internal policy picks the endpoints; masqueraded when the source is outside the
            // pod network (only when the pod network is known), or always under masquerade-all.
            let endpoints = service == "gamma" ? local : both
            let masqueraded = variant.masqueradesAll || (variant.knowsPods && source != .pod)
            return (endpoints, masqueraded)
        }
        // External frontends: external policy picks the endpoints.
        guard service == "beta" else { return (both, true) }
        switch source {
        case .external: return (local, false)
        case .node: return (both, true)  // short-circuited, masqueraded: the node's source would be a node address
        case .pod: return variant.knowsPods ? (both, false) : (local, false)  // short-circuit needs the pod network
        }
    }

    @Test(arguments: cases)
    func masqueradeMatrix(_ testCase: Case) {
        let ruleset = Planner.plan(tables(yaml: Self.services), config: testCase.variant.config)
        let tracer = PacketTracer(ruleset: ruleset, localAddresses: node1.addresses)
        let number = ["alpha": 1, "beta": 2, "gamma": 3][testCase.service]!
        for source in Source.allCases {
            for target in Target.allCases {
                let (destination, port): (String, Int) =
                    switch target {
                    case .clusterIP: ("10.96.5.\(number)", 80)
                    case .nodePort: ("10.0.0.1", 31500 + number)
                    case .loadBalancer: ("198.51.100.5\(number)", 80)
                    }
                let address = ["pod": "10.244.2.9", "node": "10.0.0.1", "external": "203.0.113.9"][source.rawValue]!
                let packet = TracedPacket(source: ip(address), destination: ip(destination), port: port, fromNode: source == .node)
                let (endpoints, masqueraded) = Self.expected(testCase.service, source, target, testCase.variant)
                let want = endpoints.map { TraceOutcome.forwarded(endpoint: $0, masqueraded: masqueraded) }
                #expect(tracer.trace(packet) == want, "\(source) to \(target)")
            }
        }
    }

    /// Every load-balancer IP and external IP of a service is served, like the first.
    @Test func everyLoadBalancerAndExternalIPIsServed() {
        let tracer = PacketTracer(ruleset: Planner.plan(tables(yaml: Self.services), config: PlannerConfig(clusterCIDRs: [podCIDR])), localAddresses: node1.addresses)
        let both = ["10.244.1.51:8080", "10.244.2.51:8080"].map { TraceOutcome.forwarded(endpoint: $0, masqueraded: true) }
        for address in ["198.51.100.51", "198.51.100.61", "192.0.2.51"] {
            #expect(tracer.trace(TracedPacket(source: ip("203.0.113.9"), destination: ip(address), port: 80)) == both, "\(address)")
        }
        // externalTrafficPolicy Local on an external IP: a pod is short-circuited, an outsider goes local.
        #expect(tracer.trace(TracedPacket(source: ip("203.0.113.9"), destination: ip("192.0.2.52"), port: 80)) == [.forwarded(endpoint: "10.244.1.52:8080", masqueraded: false)])
        #expect(tracer.trace(TracedPacket(source: ip("10.244.2.9"), destination: ip("192.0.2.52"), port: 80)).count == 2)
    }

    static let protocolsAndEmpty = """
        apiVersion: v1
        kind: Service
        metadata: {name: names}
        spec:
          clusterIP: 10.96.6.1
          ports:
          - {name: dns-udp, protocol: UDP, port: 53}
          - {name: dns-tcp, protocol: TCP, port: 53, targetPort: 5353}
          - {name: dns-sctp, protocol: SCTP, port: 53}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: names-x, labels: {kubernetes.io/service-name: names}}
        addressType: IPv4
        endpoints: [{addresses: [10.244.1.60], nodeName: node-1}]
        ports: [{name: dns-udp, protocol: UDP, port: 53}, {name: dns-tcp, protocol: TCP, port: 5353}, {name: dns-sctp, protocol: SCTP, port: 53}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: vacant}
        spec: {type: LoadBalancer, clusterIP: 10.96.6.2, externalIPs: [192.0.2.62], ports: [{port: 80, nodePort: 31602}]}
        status: {loadBalancer: {ingress: [{ip: 198.51.100.62}]}}
        """

    /// One port number on three protocols goes where each protocol's service port says.
    @Test(arguments: [(L4Protocol.udp, "10.244.1.60:53"), (.tcp, "10.244.1.60:5353"), (.sctp, "10.244.1.60:53")])
    func samePortDifferentProtocols(_ l4: L4Protocol, _ endpoint: String) {
        let tracer = PacketTracer(ruleset: Planner.plan(tables(yaml: Self.protocolsAndEmpty), config: PlannerConfig(clusterCIDRs: [podCIDR])), localAddresses: node1.addresses)
        #expect(tracer.trace(TracedPacket(source: ip("10.244.2.9"), destination: ip("10.96.6.1"), port: 53, protocol: l4)) == [.forwarded(endpoint: endpoint, masqueraded: false)])
    }

    /// A service without endpoints is refused on every frontend, from pods and from outside.
    @Test func noEndpointsIsRefusedOnEveryFrontend() {
        let tracer = PacketTracer(ruleset: Planner.plan(tables(yaml: Self.protocolsAndEmpty), config: PlannerConfig(clusterCIDRs: [podCIDR])), localAddresses: node1.addresses)
        for source in ["10.244.2.9", "203.0.113.9"] {
            for (destination, port) in [("10.96.6.2", 80), ("192.0.2.62", 80), ("10.0.0.1", 31602), ("198.51.100.62", 80)] {
                #expect(tracer.trace(TracedPacket(source: ip(source), destination: ip(destination), port: port)) == [.rejected], "\(source) to \(destination):\(port)")
            }
        }
    }

    /// Terminating fallback, computed separately for the cluster-wide set and this node's set, as kube-proxy:
    /// ready first; serving-and-terminating only when none is ready; never the not-serving ones.
    @Test(arguments: ["Cluster", "Local"])
    func terminatingFallbackPerPolicy(_ policy: String) {
        func plan(_ endpoints: String) -> PacketTracer {
            let yaml = """
                apiVersion: v1
                kind: Service
                metadata: {name: shifting}
                spec: {type: LoadBalancer, clusterIP: 10.96.7.1, externalTrafficPolicy: \(policy), ports: [{port: 80, nodePort: 31701}]}
                status: {loadBalancer: {ingress: [{ip: 198.51.100.71}]}}
                ---
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata: {name: shifting-x, labels: {kubernetes.io/service-name: shifting}}
                addressType: IPv4
                endpoints: \(endpoints)
                ports: [{port: 80}]
                """
            return PacketTracer(ruleset: Planner.plan(tables(yaml: yaml), config: PlannerConfig(clusterCIDRs: [podCIDR])), localAddresses: node1.addresses)
        }
        let ready = "{ready: true, serving: true, terminating: false}"
        let leaving = "{ready: false, serving: true, terminating: true}"
        let gone = "{ready: false, serving: false, terminating: true}"
        func endpoint(_ address: String, _ node: String, _ conditions: String) -> String {
            "{addresses: [\(address)], nodeName: \(node), conditions: \(conditions)}"
        }
        let local = policy == "Local"
        func reach(_ tracer: PacketTracer, _ source: String, _ destination: String) -> [String] {
            tracer.trace(TracedPacket(source: ip(source), destination: ip(destination), port: 80)).map { outcome in
                if case .forwarded(let endpoint, _) = outcome { return endpoint } else { return "\(outcome)" }
            }
        }
        // Ready endpoints exist: the terminating and not-serving ones get nothing.
        var tracer = plan(
            "[\(endpoint("10.244.1.1", "node-1", ready)), \(endpoint("10.244.1.2", "node-1", ready)), \(endpoint("10.244.1.3", "node-1", leaving)), \(endpoint("10.244.1.4", "node-1", gone)), \(endpoint("10.244.2.5", "node-2", ready))]"
        )
        #expect(reach(tracer, "10.244.2.9", "10.96.7.1") == ["10.244.1.1:80", "10.244.1.2:80", "10.244.2.5:80"])
        #expect(reach(tracer, "203.0.113.9", "198.51.100.71") == (local ? ["10.244.1.1:80", "10.244.1.2:80"] : ["10.244.1.1:80", "10.244.1.2:80", "10.244.2.5:80"]))
        // Only terminating ones here, one ready elsewhere: the ClusterIP uses the ready one; a Local
        // external frontend falls back to this node's serving-terminating ones.
        tracer = plan(
            "[\(endpoint("10.244.1.2", "node-1", leaving)), \(endpoint("10.244.1.3", "node-1", leaving)), \(endpoint("10.244.1.4", "node-1", gone)), \(endpoint("10.244.2.5", "node-2", local ? ready : leaving))]"
        )
        #expect(reach(tracer, "10.244.2.9", "10.96.7.1") == (local ? ["10.244.2.5:80"] : ["10.244.1.2:80", "10.244.1.3:80", "10.244.2.5:80"]))
        #expect(reach(tracer, "203.0.113.9", "198.51.100.71") == ["10.244.1.2:80", "10.244.1.3:80"] + (local ? [] : ["10.244.2.5:80"]))
        // Only a terminating one elsewhere: the ClusterIP uses it; Local outside traffic is dropped.
        tracer = plan("[\(endpoint("10.244.2.5", "node-2", leaving))]")
        #expect(reach(tracer, "10.244.2.9", "10.96.7.1") == ["10.244.2.5:80"])
        #expect(reach(tracer, "203.0.113.9", "198.51.100.71") == (local ? ["dropped"] : ["10.244.2.5:80"]))
        // Nothing serving anywhere: refused on both.
        tracer = plan("[\(endpoint("10.244.1.5", "node-1", gone)), \(endpoint("10.244.2.5", "node-2", gone))]")
        #expect(reach(tracer, "10.244.2.9", "10.96.7.1") == ["rejected"])
        #expect(reach(tracer, "203.0.113.9", "198.51.100.71") == ["rejected"])
    }
}
