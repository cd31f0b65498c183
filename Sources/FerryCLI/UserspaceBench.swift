import ArgumentParser
import FerryBench
import FerryCore
import FerryTestbed
import Foundation
import Glibc

/// `ferry bench userspace`: Ferry's userspace data plane against HAProxy in TCP mode (with and without
/// splice) and against the client reaching the pods directly, on one namespace topology in one run.
struct UserspaceBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "userspace",
        abstract: "Ferry userspace vs HAProxy (TCP mode, splice and not) vs direct: throughput, connection rate, latency, CPU, spread.",
        discussion: """
            Needs root, haproxy and iperf3 (`make bench` installs them). Builds a client, a node and three \
            pods in network namespaces of this run. Each proxy runs alone on the node with two threads \
            (Ferry: --userspace-workers 2; HAProxy: nbthread 2). Bulk throughput: iperf3 for --seconds with \
            1 and 4 streams through a one-pod service (iperf3's control and data connections must meet the \
            same pod). Connection rate and latency: `ferry debug load` (connect, greeting, 64 bytes each way, \
            close) with --concurrency connections in flight over the three pods; latency is connect to last \
            byte, from HdrHistogram. CPU: the proxy's user+system seconds during the bulk runs per GB moved. \
            Spread: connections per pod. Writes report.md, results.json and SVG charts to --report.
            """)

    @Option(help: "Seconds per measurement.")
    var seconds: Int = 5

    @Option(help: "Rounds over all targets; each figure is the median.")
    var rounds: Int = 3

    @Option(help: "Connections in flight for the rate and latency runs.")
    var concurrency: Int = 32

    @Option(help: "Folder for report.md, results.json and the charts.")
    var report: String = "bench-report"

    @Flag(help: "Print the results as JSON.")
    var json = false

    func validate() throws {
        guard (1...60).contains(seconds) else { throw ValidationError("--seconds must be between 1 and 60") }
        guard (1...9).contains(rounds) else { throw ValidationError("--rounds must be between 1 and 9") }
        guard (1...1_024).contains(concurrency) else { throw ValidationError("--concurrency must be between 1 and 1024") }
    }

    /// One proxy's (or direct) figures.
    struct Figures: Codable {
        var target: String
        var gbitOneStream: Double
        var gbitFourStreams: Double
        var connectionsPerSecond: Double
        var p50Microseconds: UInt64
        var p99Microseconds: UInt64
        var p999Microseconds: UInt64
        var failures: Int
        /// Proxy CPU seconds per GB moved in the bulk runs (nil for direct).
        var cpuSecondsPerGB: Double?
        var spread: [String: Int]

        /// The median of each figure over rounds of the same target (spread and failures summed).
        static func median(_ rounds: [Figures]) -> Figures {
            func middle<T: Comparable>(_ values: [T]) -> T { values.sorted()[values.count / 2] }
            return Figures(
                target: rounds[0].target, gbitOneStream: middle(rounds.map(\.gbitOneStream)),
                gbitFourStreams: middle(rounds.map(\.gbitFourStreams)), connectionsPerSecond: middle(rounds.map(\.connectionsPerSecond)),
                p50Microseconds: middle(rounds.map(\.p50Microseconds)), p99Microseconds: middle(rounds.map(\.p99Microseconds)),
                p999Microseconds: middle(rounds.map(\.p999Microseconds)), failures: rounds.map(\.failures).reduce(0, +),
                cpuSecondsPerGB: rounds[0].cpuSecondsPerGB == nil ? nil : middle(rounds.compactMap(\.cpuSecondsPerGB)),
                spread: rounds.reduce(into: [:]) { total, round in total.merge(round.spread, uniquingKeysWith: +) })
        }
    }

    static let bulkPort = 5201
    static let echoPort = 8080

    func run() throws {
        guard getuid() == 0 else { throw CommandFailure.runtime("ferry bench userspace needs root (network namespaces)") }
        for tool in ["haproxy", "iperf3"] where Testbed.executable(named: tool) == nil {
            throw CommandFailure.runtime("ferry bench userspace needs \(tool) (Debian: apt-get install -y \(tool); `make bench` does it)")
        }
        let ferry = BenchProcesses.ferryPath
        let bed = try BenchProcesses.threePodBed()
        defer { bed.teardown() }
        // Short connections leave TIME_WAIT sockets on the client and on the proxy's backend side: a wide
        // port range with reuse; the node keeps the NodePort range out of it (as Kubernetes nodes do),
        // or a proxy's outgoing connection could take the port the next proxy listens on.
        // TIME_WAIT sockets are not kept at all (tcp_max_tw_buckets 0): tens of thousands left by one
        // target's run would otherwise slow the port search of the next one.
        for namespace in [bed.client, bed.node] {
            _ = try bed.run(
                in: namespace,
                ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.tcp_max_tw_buckets=0"])
        }
        _ = try bed.run(in: bed.node, ["sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=30000-32767"])
        try bed.startPodServers(ferryPath: ferry, tcp: [Self.echoPort])
        for pod in bed.pods {
            try bed.spawn(in: pod.namespace, ["iperf3", "-s", "-p", String(Self.bulkPort)], logName: "iperf3-\(pod.name)")
        }
        let folder = NSTemporaryDirectory() + "ferry-bench-\(bed.prefix)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try manifests(bed).write(toFile: "\(folder)/services.yaml", atomically: true, encoding: .utf8)
        usleep(300_000)

        // Rounds interleave the targets, so a slow spell of this machine hits them all alike; each figure
        // is the median over the rounds.
        var rounds: [[Figures]] = []
        let echoTargets = bed.pods.map { "\($0.ip):\(Self.echoPort)" }
        let targets = ["direct", "level", "edge", "haproxy", "haproxy splice"]
        for round in 1...self.rounds {
            // Each round starts at another target, so no target always follows the same one.
            var results: [String: Figures] = [:]
            for offset in 0..<targets.count {
                let target = targets[(offset + round - 1) % targets.count]
                switch target {
                case "direct":
                    log("direct: client to the pods", round: round)
                    results[target] = try measure(
                        bed, name: "direct", ferry: ferry, bulk: "\(bed.pods[0].ip):\(Self.bulkPort)", echo: echoTargets, proxyPID: nil)
                case "edge", "level":
                    // Level-triggered is Ferry's default; edge-triggered is measured beside it.
                    let name = target == "level" ? "ferry userspace" : "ferry (edge-trig.)"
                    log(name, round: round)
                    let logName = "ferry-\(target)-\(round)"
                    let proxy = try bed.spawn(
                        in: bed.node,
                        [
                            ferry, "run", "--mode", "userspace", "--manifests", folder, "--node-name", "node-1", "--node-ip",
                            Testbed.nodeAddress, "--userspace-workers", "2", "--userspace-epoll", target,
                        ], logName: logName)
                    try BenchProcesses.waitFor(bed, log: logName, text: "synced")
                    do {
                        results[target] = try measure(
                            bed, name: name, ferry: ferry, bulk: "\(Testbed.nodeAddress):30201", echo: ["\(Testbed.nodeAddress):30080"],
                            proxyPID: proxy.processIdentifier)
                    } catch {
                        throw CommandFailure.runtime(
                            "\(error)\nFerry (running: \(proxy.isRunning)) logged:\n\(bed.log(logName).stderr.suffix(3_000))")
                    }
                    BenchProcesses.stop(proxy)
                default:
                    let splice = target == "haproxy splice"
                    log(target, round: round)
                    let config = "\(folder)/haproxy-\(splice).cfg"
                    try haproxyConfig(bed, splice: splice).write(toFile: config, atomically: true, encoding: .utf8)
                    let logName = "haproxy-\(splice)-\(round)"
                    let haproxy = try bed.spawn(in: bed.node, ["haproxy", "-db", "-f", config], logName: logName)
                    usleep(500_000)
                    guard haproxy.isRunning else { throw CommandFailure.runtime("haproxy did not start: \(bed.log(logName).stderr)") }
                    results[target] = try measure(
                        bed, name: target, ferry: ferry, bulk: "\(Testbed.nodeAddress):31201", echo: ["\(Testbed.nodeAddress):31080"],
                        proxyPID: haproxy.processIdentifier)
                    BenchProcesses.stop(haproxy)
                }
            }
            rounds.append(targets.map { results[$0]! })
        }
        let results = (0..<rounds[0].count).map { index in Figures.median(rounds.map { $0[index] }) }
        try writeReport(results)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(results), as: UTF8.self))
        } else {
            print(table(results))
            print("report: \(report)/report.md")
        }
    }

    // MARK: Measuring

    private func measure(_ bed: Testbed, name: String, ferry: String, bulk: String, echo: [String], proxyPID: Int32?) throws -> Figures {
        let cpuBefore = proxyPID.map(cpuSeconds) ?? 0
        let one = try iperf(bed, to: bulk, streams: 1)
        let four = try iperf(bed, to: bulk, streams: 4)
        let cpu = (proxyPID.map(cpuSeconds) ?? 0) - cpuBefore
        let bytes = one.bytes + four.bytes
        let load = try bed.run(
            in: bed.client,
            [ferry, "debug", "load", "--seconds", String(seconds), "--concurrency", String(concurrency)] + echo.flatMap { ["--to", $0] },
            timeout: .seconds(Int64(seconds) + 60))
        guard let data = load.stdout.split(separator: "\n").last.map({ Data($0.utf8) }),
            let rate = try? JSONDecoder().decode(LoadReport.self, from: data)
        else { throw CommandFailure.runtime("\(name): ferry debug load gave no report: \(load)") }
        return Figures(
            target: name, gbitOneStream: one.bitsPerSecond / 1e9, gbitFourStreams: four.bitsPerSecond / 1e9,
            connectionsPerSecond: rate.perSecond, p50Microseconds: rate.p50Microseconds, p99Microseconds: rate.p99Microseconds,
            p999Microseconds: rate.p999Microseconds, failures: rate.failures,
            cpuSecondsPerGB: proxyPID == nil ? nil : cpu / (Double(bytes) / 1e9), spread: rate.pods)
    }

    /// iperf3's figures; one retry after a second (an iperf3 server answers "busy" while it still
    /// finishes the previous test).
    private func iperf(_ bed: Testbed, to target: String, streams: Int) throws -> (bitsPerSecond: Double, bytes: Int) {
        let (host, port) = parseHostPort(target)!
        var failure = ""
        for attempt in 0..<2 {
            if attempt > 0 { sleep(1) }
            let result = try bed.run(
                in: bed.client, ["iperf3", "-c", host.description, "-p", String(port), "-t", String(seconds), "-P", String(streams), "-J"],
                timeout: .seconds(Int64(seconds) + 30))
            let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            if let end = object?["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
                let bits = received["bits_per_second"] as? Double, let bytes = received["bytes"] as? Double, bits > 0
            {
                return (bits, Int(bytes))
            }
            failure = (object?["error"] as? String) ?? "\(result.stdout.suffix(300)) \(result.stderr.suffix(300))"
            log("iperf3 to \(target) failed (\(failure))\(attempt == 0 ? ", retrying" : "")", round: 0)
        }
        throw CommandFailure.runtime("iperf3 to \(target) failed: \(failure)")
    }

    /// User plus system CPU seconds of a process so far (`/proc/PID/stat`, fields 14 and 15). `ip netns
    /// exec` execs in place, so the spawned PID is the proxy's.
    private func cpuSeconds(_ pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else {
            return 0
        }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    private func log(_ text: String, round: Int) {
        FileHandle.standardError.write(Data((round > 0 ? "round \(round)/\(rounds): measuring \(text)…\n" : "  \(text)\n").utf8))
    }

    // MARK: Configuration

    private func manifests(_ bed: Testbed) -> String {
        let pods = bed.pods.map { "{addresses: [\($0.ip)], nodeName: \($0.node)}" }.joined(separator: ", ")
        return """
            apiVersion: v1
            kind: Service
            metadata: {name: echo, namespace: default}
            spec: {type: NodePort, clusterIP: 10.96.0.10, ports: [{name: echo, port: 80, targetPort: \(Self.echoPort), nodePort: 30080}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: echo-x, namespace: default, labels: {kubernetes.io/service-name: echo}}
            addressType: IPv4
            endpoints: [\(pods)]
            ports: [{name: echo, port: \(Self.echoPort)}]
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: bulk, namespace: default}
            spec: {type: NodePort, clusterIP: 10.96.0.11, ports: [{name: iperf, port: \(Self.bulkPort), nodePort: 30201}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: bulk-x, namespace: default, labels: {kubernetes.io/service-name: bulk}}
            addressType: IPv4
            endpoints: [{addresses: [\(bed.pods[0].ip)], nodeName: \(bed.pods[0].node)}]
            ports: [{name: iperf, port: \(Self.bulkPort)}]

            """
    }

    private func haproxyConfig(_ bed: Testbed, splice: Bool) -> String {
        let servers = bed.pods.enumerated().map { "  server \($0.element.name) \($0.element.ip):\(Self.echoPort)" }.joined(separator: "\n")
        return """
            global
              maxconn 4000
              nbthread 2
            defaults
              mode tcp
              timeout connect 2s
              timeout client 60s
              timeout server 60s
            \(splice ? "  option splice-auto\n" : "")frontend echo
              bind \(Testbed.nodeAddress):31080
              default_backend echo
            backend echo
              balance roundrobin
            \(servers)
            frontend bulk
              bind \(Testbed.nodeAddress):31201
              default_backend bulk
            backend bulk
              server \(bed.pods[0].name) \(bed.pods[0].ip):\(Self.bulkPort)

            """
    }

    // MARK: Reporting

    private func table(_ results: [Figures]) -> String {
        var table = TextTable(header: ["TARGET", "1 STREAM", "4 STREAMS", "CONN/S", "P50", "P99", "P99.9", "CPU S/GB", "FAILED", "SPREAD"])
        for figures in results {
            table.append([
                figures.target, String(format: "%.2f Gbit/s", figures.gbitOneStream),
                String(format: "%.2f Gbit/s", figures.gbitFourStreams),
                String(format: "%.0f", figures.connectionsPerSecond), "\(figures.p50Microseconds) µs", "\(figures.p99Microseconds) µs",
                "\(figures.p999Microseconds) µs", figures.cpuSecondsPerGB.map { String(format: "%.2f", $0) } ?? "-", "\(figures.failures)",
                figures.spread.sorted { $0.key < $1.key }.map { "\($0.value)" }.joined(separator: "/"),
            ])
        }
        return table.render()
    }

    private func writeReport(_ results: [Figures]) throws {
        try FileManager.default.createDirectory(atPath: report, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(results).write(to: URL(fileURLWithPath: "\(report)/results.json"))
        let charts: [(file: String, title: String, unit: String, value: (Figures) -> Double)] = [
            ("throughput-1.svg", "Bulk throughput, 1 stream", "Gbit/s", { $0.gbitOneStream }),
            ("throughput-4.svg", "Bulk throughput, 4 streams", "Gbit/s", { $0.gbitFourStreams }),
            ("connections.svg", "New connections per second (short request/response)", "conn/s", { $0.connectionsPerSecond }),
            ("p99.svg", "Latency p99 (connect to last byte)", "µs", { Double($0.p99Microseconds) }),
        ]
        for chart in charts {
            try BarChart.svg(title: chart.title, unit: chart.unit, bars: results.map { ($0.target, chart.value($0)) })
                .write(toFile: "\(report)/\(chart.file)", atomically: true, encoding: .utf8)
        }
        var markdown = "# ferry bench userspace\n\n"
        markdown +=
            "Median of \(rounds) rounds, \(seconds) s per measurement, \(concurrency) connections in flight for the rate runs, 2 proxy threads, \(ProcessInfo.processInfo.activeProcessorCount) cores.\n\n"
        markdown +=
            "| target | 1 stream | 4 streams | conn/s | p50 | p99 | p99.9 | CPU s/GB | failed | spread |\n|---|---|---|---|---|---|---|---|---|---|\n"
        for figures in results {
            markdown +=
                "| \(figures.target) | \(String(format: "%.2f", figures.gbitOneStream)) Gbit/s | \(String(format: "%.2f", figures.gbitFourStreams)) Gbit/s | \(String(format: "%.0f", figures.connectionsPerSecond)) | \(figures.p50Microseconds) µs | \(figures.p99Microseconds) µs | \(figures.p999Microseconds) µs | \(figures.cpuSecondsPerGB.map { String(format: "%.2f", $0) } ?? "-") | \(figures.failures) | \(figures.spread.sorted { $0.key < $1.key }.map { "\($0.value)" }.joined(separator: "/")) |\n"
        }
        markdown += "\n" + charts.map { "![\($0.title)](\($0.file))" }.joined(separator: "\n") + "\n"
        try markdown.write(toFile: "\(report)/report.md", atomically: true, encoding: .utf8)
    }
}
