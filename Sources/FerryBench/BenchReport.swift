import Foundation

/// The report of a `ferry bench` run: a terminal table, and a folder with report.md, results.json and
/// SVG charts.
public enum BenchReport {
    /// The data-path figures as a Markdown table.
    public static func dataPathTable(_ results: BenchResults) -> String {
        var text =
            "| target | 1 stream | 4 streams | conn/s | p50 | p90 | p99 | p99.9 | HTTP req/s (p99) | UDP q/s (p99) | CPU s/GB | CPU s/1k conn |\n"
        text += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        for figure in results.dataPath {
            let http = figure.httpRequestsPerSecond.map { "\(Int($0)) (\(milliseconds(figure.httpP99Microseconds ?? 0)))" } ?? "-"
            let udp = figure.udpQueriesPerSecond.map { "\(Int($0)) (\(milliseconds(figure.udpP99Microseconds ?? 0)))" } ?? "-"
            text += "| \(figure.target) | \(gbit(figure.gbitOneStream)) | \(gbit(figure.gbitFourStreams)) | \(Int(figure.connectionsPerSecond)) | "
            text += "\(milliseconds(figure.p50Microseconds)) | \(milliseconds(figure.p90Microseconds)) | \(milliseconds(figure.p99Microseconds)) | "
            text += "\(milliseconds(figure.p999Microseconds)) | \(http) | \(udp) | \(String(format: "%.2f", figure.machineCPUSecondsPerGB)) | "
            text += "\(String(format: "%.2f", figure.machineCPUSecondsPerThousandConnections)) |\n"
        }
        return text
    }

    /// Ratios the issue's targets are about, computed from one run's figures.
    public static func ratios(_ results: BenchResults) -> [String] {
        func figures(_ name: String) -> DataPathFigures? { results.dataPath.first { $0.target == name } }
        var lines: [String] = []
        let level = DataPathTarget.ferryUserspace(balancer: "round-robin").name
        let edge = DataPathTarget.ferryUserspace(balancer: "round-robin", epoll: "edge").name
        if let ferry = figures(DataPathTarget.ferryNFTables.name), let kube = figures(DataPathTarget.kubeProxy.name) {
            // With the noise of the pair's own slices beside each ratio, when they were measured in turns.
            func paired(_ name: String, _ key: String, _ value: Double, _ peer: Double) -> String {
                let noise = [ferry.sliceSpread?[key], kube.sliceSpread?[key]].compactMap { $0 }.max()
                return ratio(name, value, peer) + (noise.map { String(format: " (±%.0f%%)", $0 / 2 * 100) } ?? "")
            }
            var parts = [
                paired("1 stream", "1 stream", ferry.gbitOneStream, kube.gbitOneStream),
                paired("4 streams", "4 streams", ferry.gbitFourStreams, kube.gbitFourStreams),
                paired("conn/s", "conn/s", ferry.connectionsPerSecond, kube.connectionsPerSecond),
                paired("p99 (lower is better)", "p99", Double(kube.p99Microseconds), Double(ferry.p99Microseconds)),
            ]
            if let a = ferry.httpRequestsPerSecond, let b = kube.httpRequestsPerSecond { parts.append(paired("HTTP req/s", "HTTP req/s", a, b)) }
            if let a = ferry.udpQueriesPerSecond, let b = kube.udpQueriesPerSecond { parts.append(paired("UDP q/s", "UDP q/s", a, b)) }
            lines.append("Ferry nftables / kube-proxy's ruleset: " + parts.joined(separator: ", "))
        }
        let proxies = results.dataPath.filter { $0.target.hasPrefix("HAProxy") }
        // The default (level-triggered) and, when measured, the edge-triggered relay, each against the
        // better of HAProxy's two modes figure by figure.
        for name in [level, edge] {
            guard let ferry = figures(name), !proxies.isEmpty else { continue }
            let best = { (value: (DataPathFigures) -> Double) in proxies.map(value).max() ?? 0 }
            let bestP99 = proxies.map { Double($0.p99Microseconds) }.min() ?? 0
            lines.append(
                "\(name) / HAProxy's best: "
                    + [
                        ratio("1 stream", ferry.gbitOneStream, best(\.gbitOneStream)),
                        ratio("4 streams", ferry.gbitFourStreams, best(\.gbitFourStreams)),
                        ratio("conn/s", ferry.connectionsPerSecond, best(\.connectionsPerSecond)),
                        ratio("p99 (lower is better)", bestP99, Double(ferry.p99Microseconds)),
                    ].joined(separator: ", "))
        }
        if let ferry = figures(level), let kernel = figures(DataPathTarget.ferryNFTables.name), let a = ferry.udpQueriesPerSecond,
            let b = kernel.udpQueriesPerSecond
        {
            lines.append("UDP: Ferry userspace / Ferry nftables: " + ratio("q/s", a, b))
        }
        return lines
    }

    private static func ratio(_ name: String, _ value: Double, _ peer: Double) -> String {
        peer > 0 ? "\(name) \(String(format: "%.2f", value / peer))x" : "\(name) -"
    }

    /// Everything as Markdown, with the charts beside it.
    public static func markdown(_ results: BenchResults, command: String) -> String {
        var text = "# ferry bench (\(results.profile))\n\n"
        text += "`\(command)` on \(results.date), \(results.cores) cores, \(String(format: "%.0f", results.seconds)) s. "
        text += "A client, a node and three pods in network namespaces; every proxy alone on the node (two threads).\n\n"
        text += "## Data path\n\n" + dataPathTable(results) + "\n"
        text += "Bulk: iperf3 through a one-pod service. conn/s and latency: `ferry debug load`, connect, greeting, 64 bytes each "
        text += "way, close; latency connect to last byte (HdrHistogram). HTTP: wrk, `Connection: close`, nginx in the pods. UDP: "
        text += "a 64-byte query and its answer from a fresh socket each (16 in flight). CPU: the whole machine's busy time "
        text += "(client, pods, proxy, kernel) per GB moved and per 1,000 connections.\n\n"
        if results.dataPath.contains(where: { $0.sliceSpread != nil }) {
            text += "Ferry nftables and kube-proxy's ruleset are measured in turns: each figure in four slices of half the time, "
            text += "A B B A, the rules swapped between slices (Ferry's by `ferry sync`, the daemon's sync run once; kube-proxy's "
            text += "by `nft -f`). Beside each of their ratios, (±N%): how far one ruleset's own slices lay from their mean in this "
            text += "run, the larger of the two: this machine's noise, within which a ratio is a tie.\n\n"
        }
        for line in ratios(results) { text += "- \(line)\n" }
        text += "\n![throughput](throughput.svg)\n![connections](connections.svg)\n![latency](latency.svg)\n![udp](udp.svg)\n\n"
        guard !results.balance.isEmpty else { return text + "## Notes\n\n" + results.notes.map { "- \($0)\n" }.joined() }
        text += "## Balance\n\n| balancer | connections per pod | max/min | chi-square | p | within the bound (p >= 0.001) |\n"
        text += "| --- | --- | --- | --- | --- | --- |\n"
        for figure in results.balance {
            let counts = figure.spread.counts.sorted { $0.key < $1.key }.map { "\($0.value)" }.joined(separator: " / ")
            let verdict = figure.note ?? (figure.spread.isEven ? "yes" : "NO")
            text += "| \(figure.balancer) | \(counts) | \(figure.spread.maxOverMin.map { String(format: "%.3f", $0) } ?? "-") | "
            text += "\(String(format: "%.2f", figure.spread.chiSquare)) | \(String(format: "%.3f", figure.spread.pValue)) | \(verdict) |\n"
        }
        text += "\n![spread](spread.svg)\n\n"
        if let slow = results.slowBackend.first?.slowPod {
            text += "One pod slow (\(slow) answers 5 ms late: its server waits before the greeting; the others answer at once; port \(LoadBalancingBench.slowPort)):\n\n| target | connections per pod | conn/s | p99 |\n| --- | --- | --- | --- |\n"
            for figure in results.slowBackend {
                let counts = figure.spread.counts.sorted { $0.key < $1.key }.map { "\($0.value)" }.joined(separator: " / ")
                text += "| \(figure.target) | \(counts) | \(Int(figure.connectionsPerSecond)) | \(milliseconds(figure.p99Microseconds)) |\n"
            }
            text += "\n"
        }
        text += "Session affinity (ClientIP), one connection, then 200 (4 in flight) from the same client: "
        text += results.affinity.map { "\($0.target) reached \($0.podsReached) pod\($0.podsReached == 1 ? "" : "s")" }.joined(separator: "; ")
        text += ".\n\n## Control plane\n\nChange to traffic (a watched manifest loses a pod, then gets it back, 8 connections in flight):\n\n"
        text += "| mode | last connection to the removed pod after the edit | first connection to the re-added pod | connections | failed |\n"
        text += "| --- | --- | --- | --- | --- |\n"
        for figure in results.changes {
            text += "| \(figure.target) | \(figure.removalMilliseconds.map { String(format: "%.0f ms", $0) } ?? "-") | "
            text += "\(figure.additionMilliseconds.map { String(format: "%.0f ms", $0) } ?? "never") | \(figure.connections) | \(figure.failures) |\n"
        }
        text += "\n![change to traffic](changes.svg)\n\nSync (`ferry bench sync`, 10 endpoints per service):\n\n"
        text += "| services | Ferry full | nft -f of the same rules | kube-proxy's ruleset via nft -f | one endpoint replaced | kube-proxy's partial sync | one added | no-op | restart |\n"
        text += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        for figure in results.sync {
            text += "| \(figure.services) | \(seconds(figure.fullSeconds)) | \(seconds(figure.nftFullSeconds)) | "
            text += "\(figure.kubeProxyFullSeconds.map(seconds) ?? "-") | \(seconds(figure.changeSeconds)) | "
            text += "\(figure.kubeProxyChangeSeconds.map(seconds) ?? "-") | \(seconds(figure.addSeconds)) | \(seconds(figure.noopSeconds)) | "
            text += "\(seconds(figure.restartSeconds)) |\n"
        }
        text += "\n![sync](sync.svg)\n\n## Notes\n\n" + results.notes.map { "- \($0)\n" }.joined()
        return text
    }

    /// Writes report.md, results.json and the charts into `folder`.
    public static func write(_ results: BenchResults, to folder: String, command: String) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(results).write(to: URL(fileURLWithPath: "\(folder)/results.json"))
        try markdown(results, command: command).write(toFile: "\(folder)/report.md", atomically: true, encoding: .utf8)
        for (file, svg) in charts(results) where results.balance.isEmpty ? dataPathCharts.contains(file) : true {
            try svg.write(toFile: "\(folder)/\(file)", atomically: true, encoding: .utf8)
        }
    }

    /// The charts a data-path-only run has.
    static let dataPathCharts: Set<String> = ["throughput.svg", "connections.svg", "latency.svg", "udp.svg"]

    static func charts(_ results: BenchResults) -> [(String, String)] {
        let targets = results.dataPath.map(\.target)
        let names = ["1 stream", "4 streams"]
        var charts: [(String, String)] = [
            (
                "throughput.svg",
                BarChart.grouped(
                    title: "Bulk throughput (iperf3)", unit: "Gbit/s", groups: targets, series: names,
                    values: results.dataPath.map { [$0.gbitOneStream, $0.gbitFourStreams] })
            ),
            (
                "connections.svg",
                BarChart.svg(
                    title: "New connections per second (short request/response)", unit: "conn/s",
                    bars: results.dataPath.map { ($0.target, $0.connectionsPerSecond) })
            ),
            (
                "latency.svg",
                BarChart.grouped(
                    title: "Latency, connect to last byte", unit: "ms", groups: targets, series: ["p50", "p90", "p99", "p99.9"],
                    values: results.dataPath.map {
                        [$0.p50Microseconds, $0.p90Microseconds, $0.p99Microseconds, $0.p999Microseconds].map { Double($0) / 1_000 }
                    })
            ),
        ]
        let udp = results.dataPath.filter { $0.udpQueriesPerSecond != nil }
        charts.append(
            ("udp.svg", BarChart.svg(title: "UDP queries per second (fresh socket each)", unit: "q/s", bars: udp.map { ($0.target, $0.udpQueriesPerSecond!) })))
        // A balancer the spread test does not apply to (a note says why) is left out of the chart.
        let balanced = results.balance.filter { $0.note == nil }
        let pods = Array(Set(balanced.flatMap { $0.spread.counts.keys })).sorted()
        charts.append(
            (
                "spread.svg",
                BarChart.grouped(
                    title: "Share of connections per pod (even: 33.3%)", unit: "%", groups: balanced.map(\.balancer), series: pods,
                    values: balanced.map { figure in
                        let total = Double(max(1, figure.spread.counts.values.reduce(0, +)))
                        return pods.map { Double(figure.spread.counts[$0] ?? 0) * 100 / total }
                    })
            ))
        charts.append(
            (
                "changes.svg",
                BarChart.grouped(
                    title: "Change to traffic (manifest edit to new connections following)", unit: "ms",
                    groups: results.changes.map(\.target), series: ["pod removed", "pod added"],
                    values: results.changes.map { [$0.removalMilliseconds ?? .nan, $0.additionMilliseconds ?? .nan] })
            ))
        charts.append(
            (
                "sync.svg",
                BarChart.grouped(
                    title: "Full sync time by service count", unit: "s", groups: results.sync.map { "\($0.services) services" },
                    series: ["Ferry", "kube-proxy's ruleset (nft -f)"],
                    values: results.sync.map { [$0.fullSeconds, $0.kubeProxyFullSeconds ?? .nan] })
            ))
        return charts
    }

    static func gbit(_ value: Double) -> String { String(format: "%.2f Gbit/s", value) }
    static func milliseconds(_ micros: UInt64) -> String { String(format: "%.2f ms", Double(micros) / 1_000) }
    static func seconds(_ value: Double) -> String { value < 1 ? String(format: "%.1f ms", value * 1_000) : String(format: "%.2f s", value) }
}
