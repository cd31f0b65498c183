import Testing
@testable import FerryCore

@Suite("Backend tables")
struct TableBuilderTests {
    func tables(_ yaml: String, node: NodeContext = thisNode) -> BackendTables {
        TableBuilder.build(ClusterState(objects(yaml)), node: node)
    }

    static let twoSlices = """
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          type: NodePort
          clusterIP: 10.96.0.1
          externalIPs: [192.0.2.1]
          ports:
          - {name: http, port: 80, nodePort: 30080}
          - {name: dns, protocol: UDP, port: 53}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-a, labels: {kubernetes.io/service-name: web}}
        addressType: IPv4
        endpoints:
        - {addresses: [10.0.0.2, 10.0.0.99], nodeName: node-2}
        - {addresses: [10.0.0.3], nodeName: node-2}
        ports: [{name: http, port: 8080}, {name: dns, protocol: UDP, port: 5353}, {name: dns, protocol: TCP, port: 5354}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: web-b, labels: {kubernetes.io/service-name: web}}
        addressType: IPv4
        endpoints:
        - {addresses: [10.0.0.3], nodeName: node-1}
        - {addresses: [10.0.0.4], nodeName: node-1}
        ports: [{name: metrics, port: 9090}]
        """

    @Test func portsMatchByNameAndProtocolAndDuplicatesMerge() throws {
        let result = tables(Self.twoSlices)
        let http = try #require(result[ServicePortName(service: ServiceName(namespace: "default", name: "web"), port: "http", protocol: .tcp)])
        #expect(http.endpoints.map(\.description) == ["10.0.0.2:8080", "10.0.0.3:8080"])
        #expect(http.unmatched.map(\.address.description) == ["10.0.0.3", "10.0.0.4"])
        #expect(http.unmatched.first?.reason == "slice web-b has no TCP port named \"http\" (it has metrics/TCP)")
        let dns = try #require(result[ServicePortName(service: ServiceName(namespace: "default", name: "web"), port: "dns", protocol: .udp)])
        #expect(dns.endpoints.map(\.description) == ["10.0.0.2:5353", "10.0.0.3:5353"])
        #expect(http.frontends.map(\.description) == ["10.96.0.1:80", "<node-ip>:30080", "192.0.2.1:80"])
        #expect(result.count == 2)
    }

    @Test func anEndpointInTwoSlicesKeepsTheLocalCopy() throws {
        let yaml = """
            apiVersion: v1
            kind: Service
            metadata: {name: dup}
            spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: dup-a, labels: {kubernetes.io/service-name: dup}}
            addressType: IPv4
            endpoints: [{addresses: [10.0.0.5], nodeName: node-2}]
            ports: [{port: 80}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: dup-b, labels: {kubernetes.io/service-name: dup}}
            addressType: IPv4
            endpoints: [{addresses: [10.0.0.5], nodeName: node-1}]
            ports: [{port: 80}]
            """
        let table = try #require(tables(yaml).sorted.first)
        #expect(table.name.description == "default/dup/TCP")
        #expect(table.endpoints.count == 1)
        #expect(table.endpoints.first?.isLocal == true)
    }

    @Test func skippedServicesHaveNoEntries() {
        let yaml = """
            apiVersion: v1
            kind: Service
            metadata: {name: headless}
            spec: {clusterIP: None, ports: [{port: 80}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: external}
            spec: {type: ExternalName, externalName: db.example.com}
            """
        #expect(tables(yaml).count == 0)
    }

    @Test func loadBalancerProxyModeIngressIsNotAFrontend() throws {
        let yaml = """
            apiVersion: v1
            kind: Service
            metadata: {name: lb}
            spec: {type: LoadBalancer, clusterIP: 10.96.0.3, ports: [{port: 443, nodePort: 30443}], externalTrafficPolicy: Local}
            status: {loadBalancer: {ingress: [{ip: 198.51.100.1}, {ip: 198.51.100.2, ipMode: Proxy}]}}
            """
        let table = try #require(tables(yaml).sorted.first)
        #expect(table.loadBalancerIPs == [ip("198.51.100.1")])
        #expect(table.policy.externalLocal)
        #expect(!table.policy.internalLocal)
    }

    @Test func matchingDestinations() {
        let result = tables(Self.twoSlices)
        let nodeAddresses = thisNode.addresses
        func match(_ address: String, _ port: Int, _ l4: L4Protocol = .tcp) -> [String] {
            result.match(address: ip(address), port: port, protocol: l4, nodeAddresses: nodeAddresses).map { "\($0.table.name) \($0.frontend.kind.rawValue)" }
        }
        #expect(match("10.96.0.1", 80) == ["default/web:http/TCP ClusterIP"])
        #expect(match("10.96.0.1", 53, .udp) == ["default/web:dns/UDP ClusterIP"])
        #expect(match("10.96.0.1", 53, .tcp) == [])
        #expect(match("10.0.0.1", 30080) == ["default/web:http/TCP NodePort"])
        #expect(match("127.0.0.1", 30080) == ["default/web:http/TCP NodePort"])
        #expect(match("10.0.0.7", 30080) == [])
        #expect(match("192.0.2.1", 80) == ["default/web:http/TCP ExternalIP"])
    }
}
