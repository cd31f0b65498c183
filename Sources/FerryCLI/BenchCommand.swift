import ArgumentParser
import FerryBench
import FerryCore
import Glibc
import Foundation

/// `ferry bench`: benchmarks (programs that report numbers, not tests).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmarks that report numbers (`ferry bench`: load balancing end to end).",
        subcommands: [LoadBalancingBenchCommand.self, LoadBench.self, SyncBench.self, UserspaceBench.self, APIBench.self],
        defaultSubcommand: LoadBalancingBenchCommand.self)
}

/// Prints a benchmark's figures as indented JSON with sorted keys (`--json`).
func printJSON<Figures: Encodable>(_ figures: Figures) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(figures), as: UTF8.self))
}

/// `ferry bench` (or `ferry bench all`): load balancing end to end, both modes beside their peers.
struct LoadBalancingBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "all",
        abstract: "Load balancing end to end: data path, balance, control plane; Ferry's two modes beside kube-proxy's ruleset, HAProxy and direct.",
        discussion: """
            Needs root, iperf3 and nft; HAProxy, nginx and wrk for their figures (`make bench` installs them). Builds a \
            client, a node and three pods in network namespaces of this run (removed at the end, on failure and on Ctrl-C). \
            Data path: bulk (iperf3, 1 and 4 streams), short connections (rate, p50-p99.9), HTTP with wrk against nginx, UDP \
            queries, the machine's CPU per GB and per 1,000 connections, for Ferry nftables, kube-proxy's nftables ruleset \
            for the same services (nft -f), Ferry userspace, HAProxy and the pods directly. Balance: connections per pod for \
            each balancer with a chi-square test, one pod answering 5 ms late, ClientIP affinity. Control plane: a watched \
            manifest edited while connections run (change to traffic) and `ferry bench sync`.
            """)

    @Flag(help: "The quick profile: one round, 2 s per figure (under two minutes here). Default: three rounds of 5 s.")
    var quick = false

    @Flag(help: "Print every figure as JSON on stdout.")
    var json = false

    @Option(help: "Folder for report.md, results.json and the SVG charts.")
    var report: String = "bench-report"

    @Option(help: ArgumentHelp("Measure nothing: write the report of an earlier run's results.json.", valueName: "results.json"))
    var render: String?

    func run() throws {
        if let render {
            let results: BenchResults
            do {
                results = try JSONDecoder().decode(BenchResults.self, from: Data(contentsOf: URL(fileURLWithPath: render)))
            } catch let error as DecodingError {
                throw CommandFailure.badInput("--render \(render): not the results.json of this version of ferry bench (\(error.field))")
            } catch {
                throw CommandFailure.badInput("--render \(render): \(error.localizedDescription)")
            }
            try finish(results, command: "ferry bench" + (results.profile == "quick" ? " --quick" : ""), report: report, json: json)
            return
        }
        let bench = LoadBalancingBench(profile: quick ? .quick : .full, ferry: BenchProcesses.ferryPath) { line in
            FileHandle.standardError.write(Data("  \(line)\n".utf8))
        }
        let results = try withInterruptTeardown { try bench.run() }
        try finish(results, command: "ferry bench" + (quick ? " --quick" : ""), report: report, json: json)
    }
}

/// Writes a load-balancing run's report folder, then prints its figures (JSON, or the data-path table
/// and the ratios the targets are about).
func finish(_ results: BenchResults, command: String, report: String, json: Bool) throws {
    try BenchReport.write(results, to: report, command: command)
    if json {
        try printJSON(results)
    } else {
        print(BenchReport.dataPathTable(results))
        for line in BenchReport.ratios(results) { print(line) }
        print("report: \(report)/report.md")
    }
}

/// Runs a benchmark that builds a test bed, tearing the bed down on SIGINT or SIGTERM before exiting
/// (130): namespaces and processes of the run are never left behind.
func withInterruptTeardown<T>(_ body: () throws -> T) throws -> T {
    unblockAllSignals()
    let sources = [SIGINT, SIGTERM].map { number -> DispatchSourceSignal in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler {
            FileHandle.standardError.write(Data("interrupted: removing the test bed\n".utf8))
            LoadBalancingBench.interrupted()
            // _exit: no atexit handlers, which could wait on a lock the measuring thread holds.
            _exit(130)
        }
        source.resume()
        return source
    }
    defer {
        for (number, source) in zip([SIGINT, SIGTERM], sources) {
            source.cancel()
            signal(number, SIG_DFL)
        }
    }
    return try body()
}

extension DecodingError {
    /// The field a decoding error is about, as a path (`sync[0].chains`), and what went wrong with it.
    var field: String {
        func path(_ context: Context, _ last: CodingKey? = nil) -> String {
            let keys = context.codingPath + (last.map { [$0] } ?? [])
            return keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().replacingOccurrences(of: "^\\.", with: "", options: .regularExpression)
        }
        switch self {
        case .keyNotFound(let key, let context): return "\(path(context, key)) is missing"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default: return "\(self)"
        }
    }
}
