import ArgumentParser
import FerryBench
import FerryCore
import FerryTestbed
import Foundation
import Glibc

/// `ferry bench udp`: DNS-like queries through Ferry's userspace relay, through its nftables rules and
/// straight to the pods, on one namespace topology in one run.
struct UDPBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udp",
        abstract: "UDP queries per second and latency: Ferry userspace vs Ferry nftables vs direct.",
        discussion: """
            Needs root. Builds a client, a node and three pods in network namespaces of this run; the pods \
            answer every datagram (`ferry debug serve --udp`). `ferry debug load --udp` sends 64-byte queries \
            from --concurrency threads for --seconds, each from a fresh socket as glibc's resolver does (a new \
            session in the userspace relay, a new conntrack flow in nftables mode), and, as a second figure, \
            from one socket per thread. Targets: the pods directly (taken in turn), and a UDP NodePort of the \
            node for each Ferry mode (the userspace relay with --userspace-workers 2). Rounds interleave the \
            targets; each figure is the median over rounds, with the min-max.
            """)

    @Option(help: "Seconds per measurement.")
    var seconds: Int = 5

    @Option(help: "Rounds over all targets.")
    var rounds: Int = 3

    @Option(help: "Queries in flight (one thread each).")
    var concurrency: Int = 16

    @Option(help: "Targets to measure, comma-separated (default: all).")
    var targets: String = UDPBench.allTargets.joined(separator: ",")

    @Flag(help: "Print the results as JSON.")
    var json = false

    var chosen: [String] { UDPBench.allTargets.filter { targets.split(separator: ",").map(String.init).contains($0) } }

    func validate() throws {
        guard (1...60).contains(seconds) else { throw ValidationError("--seconds must be between 1 and 60") }
        guard (1...9).contains(rounds) else { throw ValidationError("--rounds must be between 1 and 9") }
        guard (1...512).contains(concurrency) else { throw ValidationError("--concurrency must be between 1 and 512") }
        guard !chosen.isEmpty else { throw ValidationError("--targets: choose from \(UDPBench.allTargets.joined(separator: ", "))") }
    }

    /// One target's figures for one round.
    struct Figures: Codable {
        var target: String
        var freshPerSecond: Double
        var freshP99Microseconds: UInt64
        var freshLost: Int
        var keptPerSecond: Double
        var keptP99Microseconds: UInt64
        var keptLost: Int
    }

    static let dnsPort = 53
    static let nodePort = 30053
    static let allTargets = ["direct", "ferry nftables", "ferry userspace"]

    func run() throws {
        guard getuid() == 0 else { throw CommandFailure.runtime("ferry bench udp needs root (network namespaces)") }
        let ferry = BenchProcesses.ferryPath
        let bed = try BenchProcesses.threePodBed()
        defer { bed.teardown() }
        try bed.startPodServers(ferryPath: ferry, tcp: [], udp: [Self.dnsPort])
        let folder = NSTemporaryDirectory() + "ferry-bench-udp-\(bed.prefix)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try manifests(bed).write(toFile: "\(folder)/services.yaml", atomically: true, encoding: .utf8)
        let nodeFlags = [
            "--manifests", folder, "--node-name", "node-1", "--node-ip", Testbed.nodeAddress, "--cluster-cidr", "10.244.0.0/16",
        ]
        usleep(300_000)

        var results: [String: [Figures]] = [:]
        for round in 1...rounds {
            let chosen = self.chosen
            for offset in 0..<chosen.count {
                let target = chosen[(offset + round - 1) % chosen.count]
                FileHandle.standardError.write(Data("round \(round)/\(rounds): measuring \(target)…\n".utf8))
                let figures: Figures
                switch target {
                case "direct":
                    figures = try measure(bed, name: target, ferry: ferry, to: bed.pods.map { "\($0.ip):\(Self.dnsPort)" })
                case "ferry nftables":
                    let synced = try bed.run(in: bed.node, [ferry, "sync"] + nodeFlags)
                    guard synced.status == 0 else { throw CommandFailure.runtime("ferry sync failed: \(synced)") }
                    defer { _ = try? bed.run(in: bed.node, [ferry, "cleanup"]) }
                    figures = try measure(bed, name: target, ferry: ferry, to: ["\(Testbed.nodeAddress):\(Self.nodePort)"])
                default:
                    let logName = "ferry-userspace-\(round)"
                    let proxy = try bed.spawn(
                        in: bed.node, [ferry, "run", "--mode", "userspace", "--userspace-workers", "2"] + nodeFlags, logName: logName)
                    try BenchProcesses.waitFor(bed, log: logName, text: "synced")
                    figures = try measure(bed, name: target, ferry: ferry, to: ["\(Testbed.nodeAddress):\(Self.nodePort)"])
                    BenchProcesses.stop(proxy)
                    // The relay's totals (sessions, datagrams, drops), as it logs them on exit.
                    if let totals = bed.log(logName).stderr.split(separator: "\n").last(where: { $0.contains("totals") }) {
                        FileHandle.standardError.write(Data("  \(totals)\n".utf8))
                    }
                }
                results[target, default: []].append(figures)
            }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(results), as: UTF8.self))
        } else {
            print(table(results))
        }
    }

    private func measure(_ bed: Testbed, name: String, ferry: String, to targets: [String]) throws -> Figures {
        func load(keep: Bool) throws -> LoadReport {
            let result = try bed.run(
                in: bed.client,
                [ferry, "debug", "load", "--udp", "--seconds", String(seconds), "--concurrency", String(concurrency)]
                    + (keep ? ["--udp-keep-socket"] : []) + targets.flatMap { ["--to", $0] },
                timeout: .seconds(Int64(seconds) + 60))
            guard let data = result.stdout.split(separator: "\n").last.map({ Data($0.utf8) }),
                let report = try? JSONDecoder().decode(LoadReport.self, from: data)
            else { throw CommandFailure.runtime("\(name): ferry debug load --udp gave no report: \(result)") }
            return report
        }
        let fresh = try load(keep: false)
        let kept = try load(keep: true)
        return Figures(
            target: name, freshPerSecond: fresh.perSecond, freshP99Microseconds: fresh.p99Microseconds, freshLost: fresh.failures,
            keptPerSecond: kept.perSecond, keptP99Microseconds: kept.p99Microseconds, keptLost: kept.failures)
    }

    private func table(_ results: [String: [Figures]]) -> String {
        func spread(_ values: [Double], _ format: String) -> String {
            let sorted = values.sorted()
            return String(format: "\(format) (\(format)-\(format))", sorted[sorted.count / 2], sorted.first!, sorted.last!)
        }
        var lines = [
            "ferry bench udp: \(concurrency) queries in flight, \(seconds) s per figure, median (min-max) of \(rounds) rounds",
            "TARGET            FRESH SOCKET q/s          P99 us                 LOST   ONE SOCKET PER THREAD q/s   P99 us                 LOST",
        ]
        for target in chosen {
            let rounds = results[target] ?? []
            guard !rounds.isEmpty else { continue }
            lines.append(
                target.padding(toLength: 18, withPad: " ", startingAt: 0)
                    + spread(rounds.map(\.freshPerSecond), "%.0f").padding(toLength: 26, withPad: " ", startingAt: 0)
                    + spread(rounds.map { Double($0.freshP99Microseconds) }, "%.0f").padding(toLength: 23, withPad: " ", startingAt: 0)
                    + String(rounds.map(\.freshLost).reduce(0, +)).padding(toLength: 7, withPad: " ", startingAt: 0)
                    + spread(rounds.map(\.keptPerSecond), "%.0f").padding(toLength: 28, withPad: " ", startingAt: 0)
                    + spread(rounds.map { Double($0.keptP99Microseconds) }, "%.0f").padding(toLength: 23, withPad: " ", startingAt: 0)
                    + String(rounds.map(\.keptLost).reduce(0, +)))
        }
        let median = { (target: String) -> Double in
            let values = (results[target] ?? []).map(\.freshPerSecond).sorted()
            return values.isEmpty ? 0 : values[values.count / 2]
        }
        if median("ferry nftables") > 0 {
            lines.append(
                String(format: "userspace / nftables (fresh sockets, medians): %.2fx", median("ferry userspace") / median("ferry nftables"))
            )
        }
        return lines.joined(separator: "\n")
    }

    private func manifests(_ bed: Testbed) -> String {
        let pods = bed.pods.map { "{addresses: [\($0.ip)], nodeName: \($0.node)}" }.joined(separator: ", ")
        return """
            apiVersion: v1
            kind: Service
            metadata: {name: dns, namespace: default}
            spec: {type: NodePort, clusterIP: 10.96.0.53, ports: [{name: dns, protocol: UDP, port: \(Self.dnsPort), nodePort: \(Self.nodePort)}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: dns-x, namespace: default, labels: {kubernetes.io/service-name: dns}}
            addressType: IPv4
            endpoints: [\(pods)]
            ports: [{name: dns, protocol: UDP, port: \(Self.dnsPort)}]

            """
    }
}
