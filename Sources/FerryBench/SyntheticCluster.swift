import FerryCore

/// Synthetic clusters for benchmarks: Service i has cluster IP 10.96.x.y, port 80 (http) and one
/// EndpointSlice of ready endpoints with unique pod IPs in 10.64.0.0/10, spread over two nodes.
public struct SyntheticCluster: Sendable {
    public var services: Int
    public var endpointsPerService: Int
    /// In the text forms (`json`, `yaml`): every service a NodePort (10000 + index), as `objects` makes them.
    public var withNodePorts = false

    public init(services: Int, endpointsPerService: Int, withNodePorts: Bool = false) {
        self.services = services
        self.endpointsPerService = endpointsPerService
        self.withNodePorts = withNodePorts
    }

    public func clusterIP(_ index: Int) -> String { "10.\(96 + (index >> 16)).\((index >> 8) & 255).\(index & 255)" }

    /// The same cluster as model objects (no text), every service a NodePort (10000 + index);
    /// `replacing` gives service `replacing` a different first endpoint; `adding` gives service `adding`
    /// one endpoint more.
    public func objects(replacing changed: Int? = nil, adding grown: Int? = nil) -> [KubeObject] {
        var result: [KubeObject] = []
        result.reserveCapacity(services * 2)
        for index in 0..<services {
            let name = "svc-\(index)"
            result.append(
                .service(
                    Service(
                        meta: ObjectMeta(name: name, namespace: "bench"), type: .nodePort, clusterIPs: [IPAddress(clusterIP(index))!],
                        ports: [ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .number(8080), nodePort: 10_000 + index)],
                        selector: ["app": name])))
            let endpoints = (0..<(index == grown ? endpointsPerService + 1 : endpointsPerService)).map { endpoint -> SliceEndpoint in
                let address =
                    index == changed && endpoint == 0
                    ? IPAddress("10.127.255.254")!
                    : endpoint == endpointsPerService ? IPAddress("10.127.255.253")! : IPAddress(podIP(index, endpoint))!
                return SliceEndpoint(addresses: [address], nodeName: "node-\(endpoint % 2 + 1)", zone: "zone-a")
            }
            result.append(
                .endpointSlice(
                    EndpointSlice(
                        meta: ObjectMeta(name: "\(name)-abcde", namespace: "bench", labels: [EndpointSlice.serviceNameLabel: name]),
                        serviceName: name, endpoints: endpoints, ports: [SlicePort(name: "http", protocol: .tcp, port: 8080)])))
        }
        return result
    }

    public func podIP(_ service: Int, _ endpoint: Int) -> String {
        let index = service * endpointsPerService + endpoint
        return "10.\(64 + (index >> 16)).\((index >> 8) & 255).\(index & 255)"
    }

    /// Services `range` (all by default) and their slices as one `kind: List` JSON document.
    public func json(_ range: Range<Int>? = nil) -> String {
        let range = range ?? 0..<services
        var items: [String] = []
        items.reserveCapacity(range.count * 2)
        for index in range {
            items.append(
                #"{"apiVersion":"v1","kind":"Service","metadata":{"name":"svc-\#(index)","namespace":"bench","creationTimestamp":"2026-11-29T10:00:00Z"},"spec":{"type":"\#(withNodePorts ? "NodePort" : "ClusterIP")","clusterIP":"\#(clusterIP(index))","clusterIPs":["\#(clusterIP(index))"],"selector":{"app":"svc-\#(index)"},"ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":8080\#(withNodePorts ? ",\"nodePort\":\(10_000 + index)" : "")}]}}"#
            )
            let endpoints = (0..<endpointsPerService).map { endpoint in
                #"{"addresses":["\#(podIP(index, endpoint))"],"conditions":{"ready":true,"serving":true,"terminating":false},"nodeName":"node-\#(endpoint % 2 + 1)","zone":"zone-a"}"#
            }
            items.append(
                #"{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"svc-\#(index)-abcde","namespace":"bench","labels":{"kubernetes.io/service-name":"svc-\#(index)"}},"addressType":"IPv4","endpoints":[\#(endpoints.joined(separator: ","))],"ports":[{"name":"http","protocol":"TCP","port":8080}]}"#
            )
        }
        return #"{"apiVersion":"v1","kind":"List","items":["# + items.joined(separator: ",\n") + "]}\n"
    }

    /// Services `range` (all by default) and their slices as a YAML stream, a document per object.
    public func yaml(_ range: Range<Int>? = nil) -> String {
        let range = range ?? 0..<services
        var documents: [String] = []
        documents.reserveCapacity(range.count * 2)
        for index in range {
            documents.append(
                """
                apiVersion: v1
                kind: Service
                metadata:
                  name: svc-\(index)
                  namespace: bench
                  creationTimestamp: "2026-11-29T10:00:00Z"
                spec:
                  type: ClusterIP
                  clusterIP: \(clusterIP(index))
                  clusterIPs:
                  - \(clusterIP(index))
                  selector:
                    app: svc-\(index)
                  ports:
                  - name: http
                    protocol: TCP
                    port: 80
                    targetPort: 8080
                """)
            let endpoints = (0..<endpointsPerService).map { endpoint in
                """
                - addresses:
                  - \(podIP(index, endpoint))
                  conditions:
                    ready: true
                    serving: true
                    terminating: false
                  nodeName: node-\(endpoint % 2 + 1)
                  zone: zone-a
                """
            }
            documents.append(
                """
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata:
                  name: svc-\(index)-abcde
                  namespace: bench
                  labels:
                    kubernetes.io/service-name: svc-\(index)
                addressType: IPv4
                endpoints:
                \(endpoints.joined(separator: "\n"))
                ports:
                - name: http
                  protocol: TCP
                  port: 8080
                """)
        }
        return documents.joined(separator: "\n---\n") + "\n"
    }
}
