import Testing

@testable import FerryCore

@Suite("Allocation of ClusterIPs and NodePorts, as the API server would")
struct ServiceAllocatorTests {
    func service(
        _ name: String, namespace: String = "default", type: ServiceType = .clusterIP, clusterIP: String? = nil, nodePort: Int? = nil,
        ports: Int = 1, policy: IPFamilyPolicy? = nil, families: [IPFamily] = [], externalLocal: Bool = false
    ) -> Service {
        var service = Service(
            meta: ObjectMeta(name: name, namespace: namespace), type: type, clusterIPs: clusterIP.map { [ip($0)] } ?? [],
            ipFamilies: families,
            ports: (0..<ports).map { index in
                ServicePort(name: ports > 1 ? "p\(index)" : "", protocol: .tcp, port: 80 + index, targetPort: .number(8080), nodePort: index == 0 ? nodePort : nil)
            },
            externalTrafficPolicy: externalLocal ? .local : .cluster)
        service.ipFamilyPolicy = policy
        return service
    }

    /// The services as they come out of an allocator fed `changes` in batches, by name.
    struct Fed {
        var allocator: ServiceAllocator
        var services: [ServiceName: Service] = [:]
        var problems: [ServiceAllocator.Problem] = []

        init(ranges: AllocationRanges = AllocationRanges()) { allocator = ServiceAllocator(ranges: ranges) }

        @discardableResult
        mutating func apply(_ changes: [ObjectChange]) -> [ObjectChange] {
            let result = allocator.apply(changes)
            problems += result.problems
            for change in result.changes {
                switch change {
                case .upsert(.service(let service)): services[service.name] = service
                case .delete(let key): services[ServiceName(namespace: key.namespace, name: key.name)] = nil
                default: break
                }
            }
            return result.changes
        }
    }

    func run(_ services: [Service], ranges: AllocationRanges = AllocationRanges()) -> (services: [ServiceName: Service], problems: [ServiceAllocator.Problem]) {
        var fed = Fed(ranges: ranges)
        fed.apply(services.map { .upsert(.service($0)) })
        return (fed.services, fed.problems)
    }

    static let many: [String] = (0..<300).map { "svc-\($0)" }

    @Test func aServiceWithoutAClusterIPGetsOneFromTheRangeAndNodePortsFromTheirs() throws {
        let (services, problems) = run([service("my-service"), service("my-np", type: .nodePort, ports: 2)])
        #expect(problems.isEmpty)
        let plain = try #require(services[ServiceName(namespace: "default", name: "my-service")])
        #expect(plain.clusterIPs.count == 1 && CIDR("10.96.0.0/12")!.contains(plain.clusterIPs[0]))
        #expect(plain.allocated == [.clusterIPs] && plain.ipFamilies == [.ipv4])
        let nodePort = try #require(services[ServiceName(namespace: "default", name: "my-np")])
        #expect(nodePort.ports.allSatisfy { (30_000...32_767).contains($0.nodePort ?? 0) })
        #expect(nodePort.allocated == [.clusterIPs, .nodePort(portIndex: 0), .nodePort(portIndex: 1)])
    }

    /// Whatever the order they are read in, and whatever else comes and goes, a service gets the same
    /// address and ports.
    @Test func allocationIsStableAcrossOrderAndOtherServices() {
        let all = Self.many.map { service($0, type: .nodePort) }
        let first = run(all).services
        var generator = SystemRandomNumberGenerator()
        let shuffled = run(all.shuffled(using: &generator)).services
        #expect(first == shuffled)
        // Half of them read alone (another run): every address is the same (a /12 has a million, so
        // first choices almost never collide); a NodePort moves only where its first choice had been
        // taken by a service (earlier by name) that is now absent: 300 services on 2,682 ports collide
        // ~17 times (birthday bound), so a few of the 150 may move, never more.
        let half = run(Array(all.prefix(150))).services
        #expect(half.allSatisfy { first[$0.key]?.clusterIPs == $0.value.clusterIPs })
        let moved = half.filter { first[$0.key]?.ports[0].nodePort != $0.value.ports[0].nodePort }
        #expect(moved.count <= 17, "\(moved.count) moved")

        // In one allocator: others added later go around what is held; removing some moves no one.
        var fed = Fed()
        fed.apply(all.prefix(150).map { .upsert(.service($0)) })
        let held = fed.services
        fed.apply(all.suffix(150).map { .upsert(.service($0)) })
        fed.apply(all.prefix(50).map { .delete(ObjectKey(kind: .service, namespace: "default", name: $0.meta.name)) })
        for (name, service) in held where fed.services[name] != nil { #expect(fed.services[name] == service) }
        let values = fed.services.values
        #expect(Set(values.flatMap(\.clusterIPs)).count == values.count, "no address given twice")
        #expect(Set(values.compactMap(\.ports[0].nodePort)).count == values.count, "no NodePort given twice")
    }

    /// An explicit value beats an allocation: the service holding it by allocation moves, and says so.
    @Test func anExplicitValueMovesAnAllocatedOne() throws {
        var fed = Fed()
        fed.apply([.upsert(.service(service("first", type: .nodePort)))])
        let first = try #require(fed.services[ServiceName(namespace: "default", name: "first")])
        let taken = first.clusterIPs[0].description
        let port = first.ports[0].nodePort!
        let changes = fed.apply([.upsert(.service(service("second", type: .nodePort, clusterIP: taken, nodePort: port)))])
        #expect(fed.problems.isEmpty)
        let moved = try #require(fed.services[ServiceName(namespace: "default", name: "first")])
        #expect(moved.clusterIPs[0].description != taken && moved.ports[0].nodePort != port)
        #expect(changes.count == 2, "the new service and the moved one")
    }

    /// Two services writing the same value: an error naming both; the later one is left out.
    @Test func duplicateExplicitValuesNameBothServices() {
        let (services, problems) = run([service("a", clusterIP: "10.96.0.50"), service("b", clusterIP: "10.96.0.50")])
        #expect(services.keys.map(\.name) == ["a"])
        #expect(problems.map(\.description) == ["Service default/b: spec.clusterIPs: 10.96.0.50 is already the ClusterIP of Service default/a; this Service is left out"])
        let ports = run([service("a", type: .nodePort, nodePort: 30_100), service("b", type: .nodePort, nodePort: 30_100)])
        #expect(ports.problems.first?.description.contains("30100/TCP is already a NodePort of Service default/a") == true)
        // Outside the range is accepted, as the API server accepts it.
        #expect(run([service("far", clusterIP: "192.168.7.7", nodePort: 80, ports: 1)]).problems.isEmpty)
    }

    @Test func anExhaustedRangeNamesTheService() {
        // A /29 holds 8 addresses: network, .1 and broadcast left out, 5 to give.
        let ranges = AllocationRanges(serviceCIDRs: [CIDR("10.200.0.0/29")!], nodePorts: 30_000...30_002)
        let (services, problems) = run((0..<6).map { service("s\($0)") }, ranges: ranges)
        #expect(services.count == 5)
        #expect(problems.map(\.description) == ["Service default/s5: spec.clusterIPs: the service range 10.200.0.0/29 is full"])
        let ports = run((0..<4).map { service("n\($0)", type: .nodePort) }, ranges: AllocationRanges(serviceCIDRs: [CIDR("10.96.0.0/12")!], nodePorts: 30_000...30_002))
        #expect(ports.problems.map(\.description) == ["Service default/n3: spec.ports[0].nodePort: the NodePort range 30000...30002 is full"])
    }

    @Test func dualStackFollowsThePolicy() throws {
        let ranges = AllocationRanges(serviceCIDRs: [CIDR("10.96.0.0/12")!, CIDR("fd00:10:96::/112")!])
        let (services, problems) = run(
            [
                service("single"), service("prefer", policy: .preferDualStack), service("require6", policy: .requireDualStack, families: [.ipv6, .ipv4]),
                service("only6", families: [.ipv6]),
            ], ranges: ranges)
        #expect(problems.isEmpty)
        func families(_ name: String) -> [IPFamily] { services[ServiceName(namespace: "default", name: name)]!.clusterIPs.map(\.family) }
        #expect(families("single") == [.ipv4])
        #expect(families("prefer") == [.ipv4, .ipv6])
        #expect(families("require6") == [.ipv6, .ipv4])
        #expect(families("only6") == [.ipv6])
        let v4only = run([service("require", policy: .requireDualStack), service("v6", families: [.ipv6])])
        #expect(v4only.problems.map(\.field) == ["spec.ipFamilyPolicy", "spec.ipFamilies[0]"])
    }

    @Test func loadBalancersGetAHealthCheckPortWithLocalPolicyAndHeadlessGetsNothing() throws {
        var headless = service("headless")
        headless.isHeadless = true
        var noPorts = service("lb-no-nodeports", type: .loadBalancer)
        noPorts.allocateLoadBalancerNodePorts = false
        let (services, _) = run([service("lb", type: .loadBalancer, externalLocal: true), headless, noPorts])
        let lb = try #require(services[ServiceName(namespace: "default", name: "lb")])
        #expect(lb.healthCheckNodePort != nil && lb.allocated.contains(.healthCheckNodePort) && lb.ports[0].nodePort != nil)
        #expect(services[ServiceName(namespace: "default", name: "headless")]!.clusterIPs.isEmpty)
        #expect(services[ServiceName(namespace: "default", name: "lb-no-nodeports")]!.ports[0].nodePort == nil)
    }

    /// Dynamic allocation starts above the static band, leaving low addresses (10.96.0.10 for DNS, say)
    /// to explicit choices, as the API server does.
    @Test func dynamicAllocationAvoidsTheStaticBand() {
        let (services, _) = run(Self.many.map { service($0) })
        let lowest = services.values.map { service -> UInt32 in
            if case .v4(let value) = service.clusterIPs[0] { return value - 0x0A60_0000 } else { return 0 }
        }.min()!
        #expect(lowest >= 256 + 2)
    }
}
