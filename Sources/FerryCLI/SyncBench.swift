import ArgumentParser
import FerryBench
import FerryCore
import FerryNFTables
import Foundation

/// `ferry bench sync`: nftables programming time against `nft -f`, at several numbers of services.
struct SyncBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Time nftables programming (full, one-service change, no-op, restart) against nft -f of the same rules.",
        discussion: """
            Needs root. Each size runs in a child process in a fresh network namespace (so peak memory is \
            that size's own): the full sync, a one-service change, a no-op resync and a restart that \
            converges the existing table; then the same ruleset and the same change are loaded with \
            `nft -f` into fresh namespaces. Every service has a NodePort and --endpoints endpoints.
            """)

    @Option(help: "Numbers of services, comma-separated.")
    var sizes: String = "100,1000,10000,50000"

    @Option(help: "Endpoints per service.")
    var endpoints: Int = 10

    @Flag(help: "Print the figures as JSON.")
    var json = false

    @Option(
        name: .customLong("kube-proxy-up-to"),
        help: "Also load kube-proxy's ruleset shape for the same services with nft -f, up to this many services (it grows quadratically: 301 s at 10,000).")
    var kubeProxyUpTo: Int = 3_000

    @Flag(help: .hidden)
    var single = false

    func validate() throws {
        let parsed = sizes.split(separator: ",").compactMap { Int($0) }
        guard !parsed.isEmpty, parsed.count == sizes.split(separator: ",").count, parsed.allSatisfy({ (1...100_000).contains($0) }) else {
            throw ValidationError("--sizes: numbers of services from 1 to 100000, comma-separated")
        }
        guard (1...100).contains(endpoints) else { throw ValidationError("--endpoints must be 1-100") }
        guard getuid() == 0 else { throw ValidationError("ferry bench sync needs root (network namespaces, nftables)") }
    }

    func run() async throws {
        let list = sizes.split(separator: ",").compactMap { Int($0) }
        if single {
            let figures = try SyncBenchmark(endpoints: endpoints, kubeProxyUpTo: kubeProxyUpTo, ferryPath: BenchProcesses.ferryPath)
                .measure(services: list[0])
            let encoder = JSONEncoder()
            print(String(decoding: try encoder.encode(figures), as: UTF8.self))
            return
        }
        var results: [SyncFigures] = []
        for size in list {
            if !json { print("measuring \(size) services x \(endpoints) endpoints…") }
            let output = try runChild([
                "unshare", "-n", CommandLine.arguments[0], "bench", "sync", "--single", "--sizes", String(size), "--endpoints",
                String(endpoints), "--kube-proxy-up-to", String(kubeProxyUpTo),
            ])
            guard let figures = try? JSONDecoder().decode(SyncFigures.self, from: Data(output.utf8)) else {
                throw CommandFailure.runtime("the benchmark for \(size) services failed:\n\(output)")
            }
            results.append(figures)
        }
        if json {
            try printJSON(results)
            return
        }
        print(report(results), terminator: "")
    }

    func report(_ results: [SyncFigures]) -> String {
        func ms(_ seconds: Double) -> String {
            seconds >= 10 ? String(format: "%.1f s", seconds) : String(format: "%.1f ms", seconds * 1000)
        }
        var table = TextTable(header: [
            "SERVICES", "CHAINS", "RULES", "FULL", "(KERNEL)", "OWN/KERNEL", "NFT -F", "SPEED-UP", "1 CHANGE", "NFT -F", "SPEED-UP",
            "1 ADDED", "NO-OP", "RESTART", "PEAK", "END TO END", "(PEAK)", "KUBE-PROXY NFT -F", "1 CHANGE",
        ])
        for figures in results {
            table.append([
                String(figures.services), String(figures.chains), String(figures.rules), ms(figures.fullSeconds),
                ms(figures.fullCommitSeconds),
                String(format: "%.0f%%", figures.fullOwnSeconds / figures.fullCommitSeconds * 100), ms(figures.nftFullSeconds),
                String(format: "%.1fx", figures.nftFullSeconds / figures.fullSeconds), ms(figures.changeSeconds),
                ms(figures.nftChangeSeconds),
                String(format: "%.1fx", figures.nftChangeSeconds / figures.changeSeconds), ms(figures.addSeconds), ms(figures.noopSeconds),
                ms(figures.restartSeconds),
                String(format: "%.0f MiB", figures.peakMiB), ms(figures.endToEndSeconds), String(format: "%.0f MiB", figures.endToEndPeakMiB),
                figures.kubeProxyFullSeconds.map(ms) ?? "skipped",
                figures.kubeProxyChangeSeconds.map(ms) ?? "skipped",
            ])
        }
        var text = "ferry bench sync: \(endpoints) endpoints per service, every service with a NodePort\n" + table.render()
        text += """
            FULL: first sync into an empty namespace (plan, diff, encode, commit); KERNEL: send to the kernel's last reply.
            OWN/KERNEL: Ferry's own time (all but the kernel's commit) over the kernel's. NFT -F: the same ruleset, or the
            same one-service change as an nft script, loaded with nft -f into a fresh namespace. 1 CHANGE: one endpoint of one
            service replaced. 1 ADDED: one endpoint added to another service (its endpoint count changes). NO-OP: a resync
            with nothing to do (the daemon's periodic resync: the nftables generation is checked, nothing sent). RESTART: a
            new Ferry converging the existing table (reads it back, but rewrites maps of 16,384 elements or more). PEAK: this benchmark's peak resident memory.
            END TO END: `ferry sync --manifests DIR` in a fresh namespace, DIR the same services as `kind: List` JSON files
            (what kubectl get -o json writes) of 10,000 services each, with that process's peak resident memory.
            KUBE-PROXY NFT -F: kube-proxy's ruleset shape (pkg/proxy/nftables) for the same services, and its partial sync of the
            same change, loaded with nft -f (skipped above --kube-proxy-up-to).

            """
        return text
    }
}
