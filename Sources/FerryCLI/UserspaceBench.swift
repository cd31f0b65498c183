import ArgumentParser
import FerryBench
import Foundation

/// `ferry bench userspace`: the data path alone, Ferry's userspace relay (level- and edge-triggered)
/// against HAProxy in TCP mode (with and without splice) and the pods reached directly.
struct UserspaceBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "userspace",
        abstract: "Ferry userspace (level and edge) vs HAProxy (splice and not) vs direct: the data-path figures of `ferry bench`.",
        discussion: """
            Needs root, haproxy and iperf3 (`make bench` installs them); nginx and wrk for the HTTP figures. The \
            topology and the figures of `ferry bench` (bulk with 1 and 4 streams, short connections' rate and \
            latency, HTTP, UDP, the machine's CPU per GB and per 1,000 connections), for these targets only, \
            each proxy alone on the node with two threads. Writes report.md, results.json and SVG charts to --report.
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

    func run() throws {
        let profile = LoadBalancingBench.Profile(
            name: "userspace", rounds: rounds, seconds: Double(seconds), concurrency: concurrency, balanceConnections: 0, syncSizes: [],
            bothHAProxyModes: true)
        let bench = LoadBalancingBench(profile: profile, ferry: BenchProcesses.ferryPath) { line in
            FileHandle.standardError.write(Data("  \(line)\n".utf8))
        }
        let results = try withInterruptTeardown { try bench.runUserspaceDataPath() }
        try finish(results, command: "ferry bench userspace --rounds \(rounds) --seconds \(seconds)", report: report, json: json)
    }
}
