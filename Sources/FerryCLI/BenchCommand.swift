import ArgumentParser
import FerryCore
import Foundation

/// `ferry bench`: benchmarks (programs that report numbers, not tests).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmarks that report numbers.",
        subcommands: [LoadBench.self, SyncBench.self, UserspaceBench.self])
}

/// `ferry bench load`: how long reading S Services and S EndpointSlices and building the tables takes.
struct LoadBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Time reading N Services + N EndpointSlices (JSON and YAML) and building the backend tables.")

    @Option(help: "How many Services (each with one EndpointSlice).")
    var services: Int = 10_000

    @Option(help: "Endpoints per EndpointSlice.")
    var endpoints: Int = 10

    @Option(help: "Repetitions of each measurement; the best is reported.")
    var repeats: Int = 3

    @Option(help: ArgumentHelp("Keep the generated manifests in this folder.", valueName: "dir"))
    var keep: String?

    @Flag(help: "Print the figures as JSON.")
    var json = false

    func validate() throws {
        guard (1...200_000).contains(services) else { throw ValidationError("--services must be 1-200000") }
        guard (1...1000).contains(endpoints) else { throw ValidationError("--endpoints must be 1-1000") }
        guard (1...20).contains(repeats) else { throw ValidationError("--repeats must be 1-20") }
    }

    struct Figures: Codable {
        var format: String
        var bytes: Int
        var objects: Int
        var readSeconds: Double
        var tableSeconds: Double
        var servicePorts: Int
        var backends: Int
    }

    func run() async throws {
        let folder = keep ?? NSTemporaryDirectory() + "ferry-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { if keep == nil { try? FileManager.default.removeItem(atPath: folder) } }
        let generator = SyntheticCluster(services: services, endpointsPerService: endpoints)
        var results: [Figures] = []
        for format in [ManifestFormat.json, .yaml] {
            let path = "\(folder)/cluster.\(format.rawValue)"
            let text = format == .json ? generator.json() : generator.yaml()
            try text.write(toFile: path, atomically: false, encoding: .utf8)
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            var best: Figures?
            for _ in 0..<repeats {
                let clock = ContinuousClock()
                var result = ManifestReadResult()
                let readTime = clock.measure { result = ManifestReader.read(data, format: format, source: path) }
                guard result.errors.isEmpty else {
                    throw CommandFailure.runtime("generated manifests did not read: \(result.errors.prefix(3))")
                }
                var tracker = ChangeTracker(node: NodeContext(name: "node-1"))
                var sync: SyncResult?
                let tableTime = clock.measure {
                    for object in result.objects { tracker.apply(.upsert(object.object)) }
                    sync = tracker.sync()
                }
                let figures = Figures(
                    format: format.rawValue, bytes: data.count, objects: result.objects.count, readSeconds: readTime.seconds,
                    tableSeconds: tableTime.seconds, servicePorts: sync!.tables.count,
                    backends: sync!.tables.sorted.reduce(0) { $0 + $1.endpoints.count })
                if best == nil || figures.readSeconds + figures.tableSeconds < best!.readSeconds + best!.tableSeconds {
                    best = figures
                }
            }
            results.append(best!)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(results), as: UTF8.self))
            return
        }
        print("ferry bench load: \(services) Services + \(services) EndpointSlices x \(endpoints) endpoints, best of \(repeats)")
        var table = TextTable(header: ["FORMAT", "SIZE", "OBJECTS", "READ+VALIDATE", "BUILD TABLES", "TOTAL", "SERVICE PORTS", "BACKENDS"])
        for figures in results {
            table.append([
                figures.format, String(format: "%.1f MB", Double(figures.bytes) / 1e6), String(figures.objects),
                String(format: "%.3f s", figures.readSeconds), String(format: "%.3f s", figures.tableSeconds),
                String(format: "%.3f s", figures.readSeconds + figures.tableSeconds), String(figures.servicePorts),
                String(figures.backends),
            ])
        }
        print(table.render(), terminator: "")
        print("peak RSS: \(String(format: "%.0f", peakResidentMiB())) MiB")
    }
}

/// Synthetic clusters for benchmarks: Service i has cluster IP 10.96.x.y, port 80 (http) and one
/// EndpointSlice of ready endpoints with unique pod IPs in 10.64.0.0/10, spread over two nodes.
struct SyntheticCluster {
    var services: Int
    var endpointsPerService: Int

    func clusterIP(_ index: Int) -> String { "10.\(96 + (index >> 16)).\((index >> 8) & 255).\(index & 255)" }

    /// The same cluster as model objects (no text), every service a NodePort (10000 + index);
    /// `replacing` gives service `replacing` a different first endpoint.
    func objects(replacing changed: Int? = nil) -> [KubeObject] {
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
            let endpoints = (0..<endpointsPerService).map { endpoint -> SliceEndpoint in
                let address = index == changed && endpoint == 0 ? IPAddress("10.127.255.254")! : IPAddress(podIP(index, endpoint))!
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

    func podIP(_ service: Int, _ endpoint: Int) -> String {
        let index = service * endpointsPerService + endpoint
        return "10.\(64 + (index >> 16)).\((index >> 8) & 255).\(index & 255)"
    }

    func json() -> String {
        var items: [String] = []
        items.reserveCapacity(services * 2)
        for index in 0..<services {
            items.append(
                #"{"apiVersion":"v1","kind":"Service","metadata":{"name":"svc-\#(index)","namespace":"bench","creationTimestamp":"2026-11-29T10:00:00Z"},"spec":{"type":"ClusterIP","clusterIP":"\#(clusterIP(index))","clusterIPs":["\#(clusterIP(index))"],"selector":{"app":"svc-\#(index)"},"ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":8080}]}}"#
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

    func yaml() -> String {
        var documents: [String] = []
        documents.reserveCapacity(services * 2)
        for index in 0..<services {
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

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// The process's peak resident memory so far.
func peakResidentMiB() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
}
