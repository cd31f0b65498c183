import ArgumentParser
import FerryBench
import FerryCore
import Glibc
import Foundation

/// `ferry bench`: benchmarks (programs that report numbers, not tests).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmarks that report numbers (`ferry bench`: load balancing end to end).",
        subcommands: [LoadBalancingBenchCommand.self, LoadBench.self, SyncBench.self, UserspaceBench.self, UDPBench.self, APIBench.self],
        defaultSubcommand: LoadBalancingBenchCommand.self)
}

/// Synthetic clusters for benchmarks: Service i has cluster IP 10.96.x.y, port 80 (http) and one
/// EndpointSlice of ready endpoints with unique pod IPs in 10.64.0.0/10, spread over two nodes.
struct SyntheticCluster {
    var services: Int
    var endpointsPerService: Int
    /// In the text forms (`json`, `yaml`): every service a NodePort (10000 + index), as `objects` makes them.
    var withNodePorts = false

    func clusterIP(_ index: Int) -> String { "10.\(96 + (index >> 16)).\((index >> 8) & 255).\(index & 255)" }

    /// The same cluster as model objects (no text), every service a NodePort (10000 + index);
    /// `replacing` gives service `replacing` a different first endpoint; `adding` gives service `adding`
    /// one endpoint more.
    func objects(replacing changed: Int? = nil, adding grown: Int? = nil) -> [KubeObject] {
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

    func podIP(_ service: Int, _ endpoint: Int) -> String {
        let index = service * endpointsPerService + endpoint
        return "10.\(64 + (index >> 16)).\((index >> 8) & 255).\(index & 255)"
    }

    /// Services `range` (all by default) and their slices as one `kind: List` JSON document.
    func json(_ range: Range<Int>? = nil) -> String {
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
    func yaml(_ range: Range<Int>? = nil) -> String {
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

/// Prints a benchmark's figures as indented JSON with sorted keys (`--json`).
func printJSON<Figures: Encodable>(_ figures: Figures) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(figures), as: UTF8.self))
}


/// The process's peak resident memory so far.
func peakResidentMiB() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
}

/// `ferry bench` (or `ferry bench all`): load balancing end to end, both modes beside their peers.
struct LoadBalancingBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "all",
        abstract: "Load balancing end to end: data path, balance, control plane; Ferry's two modes beside kube-proxy's ruleset, HAProxy and direct.",
        discussion: """
            Needs root, iperf3, nft and tc; HAProxy, nginx and wrk for their figures (`make bench` installs them). Builds a \
            client, a node and three pods in network namespaces of this run (removed at the end, on failure and on Ctrl-C). \
            Data path: bulk (iperf3, 1 and 4 streams), short connections (rate, p50-p99.9), HTTP with wrk against nginx, UDP \
            queries, the machine's CPU per GB and per 1,000 connections, for Ferry nftables, kube-proxy's nftables ruleset \
            for the same services (nft -f), Ferry userspace, HAProxy and the pods directly. Balance: connections per pod for \
            each balancer with a chi-square test, one pod slowed with netem, ClientIP affinity. Control plane: a watched \
            manifest edited while connections run (change to traffic) and `ferry bench sync`.
            """)

    @Flag(help: "The quick profile: one round, 2 s per figure (under two minutes here). Default: three rounds of 5 s.")
    var quick = false

    @Flag(help: "Print every figure as JSON on stdout.")
    var json = false

    @Option(help: "Folder for report.md, results.json and the SVG charts.")
    var report: String = "bench-report"

    func run() throws {
        unblockAllSignals()
        let signals = [SIGINT, SIGTERM].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                FileHandle.standardError.write(Data("interrupted: removing the test bed\n".utf8))
                LoadBalancingBench.interrupted()
                Glibc.exit(130)
            }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        let bench = LoadBalancingBench(profile: quick ? .quick : .full, ferry: BenchProcesses.ferryPath) { line in
            FileHandle.standardError.write(Data("  \(line)\n".utf8))
        }
        let results = try bench.run()
        let command = "ferry bench" + (quick ? " --quick" : "")
        try BenchReport.write(results, to: report, command: command)
        if json {
            try printJSON(results)
        } else {
            print(BenchReport.dataPathTable(results))
            for line in BenchReport.ratios(results) { print(line) }
            print("report: \(report)/report.md")
        }
    }
}
