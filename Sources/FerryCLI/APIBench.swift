import ArgumentParser
import FerryBench
import Foundation

/// `ferry bench api`: Ferry on an API server holding a cluster's worth of objects. Start-up to initial
/// sync and to the first sync programmed, memory, and network programming latency under a steady
/// stream of endpoint changes, for each data plane and minimum sync period.
struct APIBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "Time Ferry on an API server: initial sync, first sync programmed, memory, programming latency under endpoint churn.",
        discussion: """
            A fake API server (TLS, a bearer token, kube-apiserver's wire format) holds N Services and N \
            EndpointSlices of --endpoints endpoints each, in a network namespace of the run's own, where \
            `ferry run --kubeconfig` starts. Reported: time from start to "initial sync done" (the lists of \
            Services, EndpointSlices and the Node fetched and decoded) and to the first sync programmed; \
            then --rate EndpointSlice changes per second for --seconds, each stamped with \
            endpoints.kubernetes.io/last-change-trigger-time when sent, as the endpoints controller stamps \
            it: Ferry's network programming latency (trigger time to rules or listeners in place, \
            kube-proxy's SLI) p50/p99/max; peak and steady resident memory. Needs root.
            """)

    @Option(help: "Services (each with one EndpointSlice).")
    var services: Int = 10_000

    @Option(help: "Endpoints per EndpointSlice.")
    var endpoints: Int = 10

    @Option(help: "EndpointSlice changes per second during the churn.")
    var rate: Int = 50

    @Option(help: "Seconds of churn.")
    var seconds: Int = 30

    @Option(name: .customLong("modes"), help: "Data planes, comma-separated.")
    var modes: String = "nftables,userspace"

    @Option(name: .customLong("min-sync-periods"), help: "Values of --min-sync-period to run with, comma-separated (seconds).")
    var minSyncPeriods: String = "1,0"

    @Flag(help: "Print the figures as JSON.")
    var json = false

    @Option(name: .customLong("logs"), help: ArgumentHelp("Keep each run's Ferry log (info and above) in this folder.", valueName: "dir"))
    var logs: String?

    func validate() throws {
        guard (1...100_000).contains(services) else { throw ValidationError("--services must be 1-100000") }
        guard (1...1_000).contains(endpoints) else { throw ValidationError("--endpoints must be 1-1000") }
        guard (1...1_000).contains(rate), (1...600).contains(seconds) else { throw ValidationError("--rate 1-1000, --seconds 1-600") }
        guard !parsedModes.isEmpty, parsedModes.allSatisfy({ ["nftables", "userspace"].contains($0) }) else {
            throw ValidationError("--modes: nftables and/or userspace")
        }
        guard !parsedPeriods.isEmpty, parsedPeriods.allSatisfy({ $0 >= 0 && $0 <= 10 }) else {
            throw ValidationError("--min-sync-periods: numbers of seconds 0-10")
        }
    }

    var parsedModes: [String] { modes.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
    var parsedPeriods: [Double] { minSyncPeriods.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) } }

    func run() async throws {
        guard getuid() == 0 else { throw CommandFailure.runtime("ferry bench api needs root (network namespaces, nftables)") }
        let quiet = json
        let benchmark = APIBenchmark(
            services: services, endpoints: endpoints, rate: rate, seconds: seconds, modes: parsedModes, minSyncPeriods: parsedPeriods,
            logs: logs, ferryPath: BenchProcesses.ferryPath,
            progress: { line in if !quiet { FileHandle.standardError.write(Data((line + "\n").utf8)) } })
        let results = try benchmark.run()
        if json {
            try printJSON(results)
            return
        }
        print(benchmark.report(results), terminator: "")
    }
}
