import FerryCore
import FerrySystem
import FerryUserspace
import Foundation
import Glibc
import Testing

func servicePort(
    _ name: String, clusterIP: String, port: Int = 80, nodePort: Int? = nil, externalIPs: [String] = [], backends: [Backend],
    protocol l4: L4Protocol = .tcp, balancer: BalancerKind? = nil
) -> ServicePortTable {
    let service = Service(
        meta: ObjectMeta(name: name, namespace: "default", annotations: balancer.map { [BalancerKind.annotation: $0.rawValue] } ?? [:]),
        type: nodePort == nil ? .clusterIP : .nodePort, clusterIPs: [IPAddress(clusterIP)!],
        ports: [ServicePort(name: "http", protocol: l4, port: port, targetPort: .number(8080), nodePort: nodePort)],
        externalIPs: externalIPs.map { IPAddress($0)! }, userspaceBalancer: balancer)
    let slice = EndpointSlice(
        meta: ObjectMeta(name: "\(name)-x", namespace: "default", labels: [EndpointSlice.serviceNameLabel: name]), serviceName: name,
        addressType: .ipv4, endpoints: backends.map { SliceEndpoint(addresses: [$0.ip]) },
        ports: [SlicePort(name: "http", protocol: l4, port: 8080)])
    let state = ClusterState([.service(service), .endpointSlice(slice)])
    return TableBuilder.entries(for: service, in: state, node: NodeContext(name: "node-1"))[0]
}

@Suite("Userspace proxier: listeners, pools and routes follow the tables (in-memory twins)")
struct UserspaceProxierTests {
    let node = IPAddress("10.0.0.1")!

    func proxier(_ host: InMemoryListenerHost, _ routes: InMemoryRouteTable) -> UserspaceProxier {
        UserspaceProxier(listeners: host, routes: routes, config: UserspaceConfig(nodeAddresses: [node]))
    }

    @Test func listenersAndRoutesFollowServices() throws {
        let host = InMemoryListenerHost()
        let routes = InMemoryRouteTable()
        let proxier = proxier(host, routes)
        let web = servicePort("web", clusterIP: "10.96.0.10", nodePort: 30080, externalIPs: ["192.0.2.7"], backends: backends(2))
        let api = servicePort("api", clusterIP: "10.96.0.11", backends: backends(1))
        let dns = servicePort("dns", clusterIP: "10.96.0.53", port: 53, backends: backends(1), protocol: .udp)
        // SCTP is not relayed: no listener, no route.
        let sctp = servicePort("sig", clusterIP: "10.96.0.99", port: 3868, backends: backends(1), protocol: .sctp)
        var report = try proxier.sync(BackendTables([web, api, dns, sctp]))
        #expect(host.addresses == ["10.0.0.1:30080", "10.96.0.10:80", "10.96.0.11:80", "10.96.0.53:53/udp", "192.0.2.7:80"])
        #expect(
            routes.addresses == [IPAddress("10.96.0.10")!, IPAddress("10.96.0.11")!, IPAddress("10.96.0.53")!, IPAddress("192.0.2.7")!])
        #expect(report.opened == 5 && report.routesAdded == 4)

        // Nothing changed: nothing done.
        report = try proxier.sync(BackendTables([web, api, dns, sctp]))
        #expect(report.opened == 0 && report.closed == 0 && report.routesAdded == 0 && report.routesDeleted == 0)

        // api goes away, web's port moves to 8080.
        let moved = servicePort(
            "web", clusterIP: "10.96.0.10", port: 8080, nodePort: 30080, externalIPs: ["192.0.2.7"], backends: backends(2))
        report = try proxier.sync(BackendTables([moved]))
        #expect(host.addresses == ["10.0.0.1:30080", "10.96.0.10:8080", "192.0.2.7:8080"])
        #expect(routes.addresses == [IPAddress("10.96.0.10")!, IPAddress("192.0.2.7")!])
        #expect(report.closed == 4 && report.opened == 2 && report.routesDeleted == 2)

        try proxier.shutdown()
        #expect(host.addresses.isEmpty)
        #expect(routes.addresses.isEmpty)
    }

    /// Only load-balancer listeners carry the source ranges (and the LB IPs themselves once the node is
    /// in a range); a change of ranges reopens them.
    @Test func loadBalancerListenersCarryTheSourceRanges() throws {
        let host = InMemoryListenerHost()
        let proxier = proxier(host, InMemoryRouteTable())
        func guarded(_ ranges: [String]) -> ServicePortTable {
            var entry = servicePort("lb", clusterIP: "10.96.0.40", nodePort: 30400, backends: backends(2))
            entry.loadBalancerIPs = [IPAddress("198.51.100.40")!]
            entry.loadBalancerSourceRanges = ranges.map { CIDR($0)! }
            return entry
        }
        _ = try proxier.sync(BackendTables([guarded(["203.0.113.0/24"])]))
        let byAddress = { Dictionary(uniqueKeysWithValues: host.open.values.map { ($0.address.description, $0.allowedSources) }) }
        #expect(byAddress()["198.51.100.40:80"] == .some([CIDR("203.0.113.0/24")!]))
        #expect(byAddress()["10.96.0.40:80"] == .some(nil) && byAddress()["10.0.0.1:30400"] == .some(nil))
        let report = try proxier.sync(BackendTables([guarded(["203.0.113.0/24", "10.0.0.0/24"])]))
        #expect(report.opened == 1 && report.closed == 1)
        #expect(byAddress()["198.51.100.40:80"] == .some([CIDR("203.0.113.0/24")!, CIDR("10.0.0.0/24")!, CIDR("198.51.100.40/32")!]))
    }

    @Test func primaryNodePortAddressOnly() {
        var config = UserspaceConfig(nodeAddresses: [IPAddress("10.0.0.1")!, IPAddress("192.168.50.1")!, IPAddress("fd00::1")!, IPAddress("fd00::2")!])
        config.nodePortPrimaryOnly = true
        #expect(config.nodePortListenAddresses == [IPAddress("10.0.0.1")!, IPAddress("fd00::1")!])
    }

    @Test func poolsTakeNewBackendsWithoutReopening() throws {
        let host = InMemoryListenerHost()
        let proxier = proxier(host, InMemoryRouteTable())
        _ = try proxier.sync(BackendTables([servicePort("web", clusterIP: "10.96.0.10", backends: backends(2))]))
        let pool = try #require(host.open.values.first?.pool)
        let report = try proxier.sync(
            BackendTables([servicePort("web", clusterIP: "10.96.0.10", backends: backends(3, from: 5), balancer: .maglev)]))
        #expect(report.opened == 0 && report.closed == 0)
        let state = pool.pool.withLock { ($0.backends.map(\.description), $0.kind) }
        #expect(state.0 == ["10.244.0.5:8080", "10.244.0.6:8080", "10.244.0.7:8080"])
        #expect(state.1 == .maglev)
    }

    @Test func aFrontendThatCannotBindIsReportedAndRetriedTheRestWorks() throws {
        let host = InMemoryListenerHost()
        host.taken = [SocketAddress(ip: IPAddress("10.0.0.1")!, port: 30080)]
        let proxier = proxier(host, InMemoryRouteTable())
        let web = servicePort("web", clusterIP: "10.96.0.10", nodePort: 30080, backends: backends(2))
        var report = try proxier.sync(BackendTables([web]))
        #expect(
            report.problems.map(\.description) == [
                "Service default/web:http/TCP: listening on 10.0.0.1:30080: bind(10.0.0.1:30080): Address already in use (errno 98)"
            ])
        #expect(host.addresses == ["10.96.0.10:80"])
        host.taken = []
        report = try proxier.sync(BackendTables([web]))
        #expect(report.problems.isEmpty && report.opened == 1)
        #expect(host.addresses == ["10.0.0.1:30080", "10.96.0.10:80"])
    }

    @Test func routesOfAnEarlierRunAreAdoptedAndStaleOnesRemoved() throws {
        let routes = InMemoryRouteTable()
        try routes.add(IPAddress("10.96.0.99")!)
        try routes.add(IPAddress("10.96.0.10")!)
        let proxier = proxier(InMemoryListenerHost(), routes)
        let report = try proxier.sync(BackendTables([servicePort("web", clusterIP: "10.96.0.10", backends: backends(1))]))
        #expect(routes.addresses == [IPAddress("10.96.0.10")!])
        #expect(report.routesAdded == 0 && report.routesDeleted == 1)
    }
}
