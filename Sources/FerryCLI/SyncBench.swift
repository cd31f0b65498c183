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

    /// The figures of one size.
    struct Figures: Codable {
        var services: Int
        var endpoints: Int
        var chains: Int
        var rules: Int
        var batchMiB: Double
        var fullSeconds: Double
        var fullPlanSeconds: Double
        var fullEncodeSeconds: Double
        var fullCommitSeconds: Double
        var changeSeconds: Double
        var changeCommitSeconds: Double
        var changeOperations: Int
        var noopSeconds: Double
        var restartSeconds: Double
        var nftFullSeconds: Double
        var nftChangeSeconds: Double
        /// kube-proxy's shape for the same services, loaded with nft -f (nil: above --kube-proxy-up-to).
        var kubeProxyFullSeconds: Double?
        var kubeProxyChangeSeconds: Double?
        var peakMiB: Double
        /// One endpoint added to one service (its N changes).
        var addSeconds: Double
        /// `ferry sync --manifests DIR` in a fresh namespace, DIR the same services as `kind: List` JSON
        /// files (what `kubectl get svc,endpointslices -o json` writes) of 10,000 services each: reading,
        /// tracking, planning and programming, as a user runs it; and that process's peak resident memory.
        var endToEndSeconds: Double
        var endToEndPeakMiB: Double

        /// Ferry's own share of a full sync: everything but the kernel's commit.
        var fullOwnSeconds: Double { fullSeconds - fullCommitSeconds }
    }

    func run() async throws {
        let list = sizes.split(separator: ",").compactMap { Int($0) }
        if single {
            let figures = try measure(services: list[0])
            let encoder = JSONEncoder()
            print(String(decoding: try encoder.encode(figures), as: UTF8.self))
            return
        }
        var results: [Figures] = []
        for size in list {
            if !json { print("measuring \(size) services x \(endpoints) endpoints…") }
            let output = try runChild([
                "unshare", "-n", CommandLine.arguments[0], "bench", "sync", "--single", "--sizes", String(size), "--endpoints",
                String(endpoints), "--kube-proxy-up-to", String(kubeProxyUpTo),
            ])
            guard let figures = try? JSONDecoder().decode(Figures.self, from: Data(output.utf8)) else {
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

    func report(_ results: [Figures]) -> String {
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

    /// Everything for one size, in this process's (fresh) network namespace.
    func measure(services: Int) throws -> Figures {
        let clock = ContinuousClock()
        let cluster = SyntheticCluster(services: services, endpointsPerService: endpoints)
        let node = NodeContext(name: "node-1", addresses: [IPAddress("10.0.0.1")!])
        var tracker = ChangeTracker(node: node)
        for object in cluster.objects() { tracker.apply(.upsert(object)) }
        let tables = tracker.sync().tables
        let config = PlannerConfig(clusterCIDRs: [CIDR("10.64.0.0/10")!], nodeAddresses: node.addresses)

        let netfilter = try NetlinkNetfilter()
        let proxier = NFTablesProxier(netfilter: netfilter, config: config)
        let fullStart = clock.now
        let full = try proxier.sync(tables)
        let fullSeconds = (clock.now - fullStart).seconds
        let fullApply = netfilter.lastApply
        let chains = full.transaction.summary.chainsAdded
        let rules = full.transaction.summary.rules

        // One endpoint of one service replaced.
        var changed = tracker
        for object in cluster.objects(replacing: services / 2) where object.key.name == "svc-\(services / 2)-abcde" {
            changed.apply(.upsert(object))
        }
        let changedSync = changed.sync()
        let changedTables = changedSync.tables
        let changeStart = clock.now
        let change = try proxier.sync(changedTables, changed: changedSync.changedPorts)
        let changeSeconds = (clock.now - changeStart).seconds
        let changeCommit = netfilter.lastApply.commit.seconds

        // One endpoint added to another service.
        for object in cluster.objects(adding: services / 3) where object.key.name == "svc-\(services / 3)-abcde" {
            changed.apply(.upsert(object))
        }
        let addedSync = changed.sync()
        let addStart = clock.now
        _ = try proxier.sync(addedSync.tables, changed: addedSync.changedPorts)
        let addSeconds = (clock.now - addStart).seconds
        let addedTables = addedSync.tables

        let noopStart = clock.now
        _ = try proxier.sync(addedTables, changed: [])
        let noopSeconds = (clock.now - noopStart).seconds

        let restartStart = clock.now
        let restarted = NFTablesProxier(netfilter: try NetlinkNetfilter(), config: config)
        let restart = try restarted.sync(addedTables)
        let restartSeconds = (clock.now - restartStart).seconds
        // It converges without changing anything, but for the maps too big to read back, which it rewrites
        // whole (emptied and refilled in the one atomic batch).
        let rewritesOnly = restart.transaction.operations.allSatisfy { operation in
            switch operation.kind {
            case .flushSet, .addElements: return true
            default: return false
            }
        }
        guard restart.readBack, rewritesOnly else {
            throw CommandFailure.runtime("the restart changed more than the big maps: \(Renderer.script(restart.transaction).prefix(2_000))")
        }

        // Ferry's own high-water mark, before this benchmark renders the ruleset as text for nft.
        let peak = peakResidentMiB()

        // nft -f: the same ruleset into a fresh namespace, and the same change on top of it.
        let ruleset = Planner.plan(tables, config: config)
        let folder = NSTemporaryDirectory() + "ferry-bench-sync-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }

        // End to end, as a user runs it: the manifest file to rules live, in a fresh namespace.
        var text = SyntheticCluster(services: services, endpointsPerService: endpoints)
        text.withNodePorts = true
        // Files of at most 10,000 services (a manifest file may hold 64 MiB), in one folder.
        try FileManager.default.createDirectory(atPath: "\(folder)/manifests", withIntermediateDirectories: true)
        for start in stride(from: 0, to: services, by: 10_000) {
            try text.json(start..<min(services, start + 10_000))
                .write(toFile: "\(folder)/manifests/cluster-\(start).json", atomically: false, encoding: .utf8)
        }
        let endToEnd = try runChild([
            "unshare", "-n", "/usr/bin/time", "-f", "ELAPSED %e %M", CommandLine.arguments[0], "sync", "--manifests", "\(folder)/manifests",
            "--node-name", "node-1", "--node-ip", "10.0.0.1", "--cluster-cidr", "10.64.0.0/10",
        ])
        guard let line = endToEnd.split(separator: "\n").last(where: { $0.hasPrefix("ELAPSED ") }) else {
            throw CommandFailure.runtime("ferry sync printed no timing:\n\(endToEnd)")
        }
        let fields = line.split(separator: " ")
        let endToEndSeconds = Double(fields[1]) ?? 0
        let endToEndPeakMiB = (Double(fields[2]) ?? 0) / 1024
        try Renderer.text(ruleset).write(toFile: "\(folder)/full.nft", atomically: false, encoding: .utf8)
        try Renderer.script(change.transaction).write(toFile: "\(folder)/change.nft", atomically: false, encoding: .utf8)
        let nftFull = try nanoseconds(
            runChild([
                "unshare", "-n", "sh", "-c", "s=$(date +%s%N); nft -f \(folder)/full.nft || exit 1; e=$(date +%s%N); echo $((e - s))",
            ]))
        let nftChange = try nanoseconds(
            runChild([
                "unshare", "-n", "sh", "-c",
                "nft -f \(folder)/full.nft || exit 1; s=$(date +%s%N); nft -f \(folder)/change.nft || exit 1; e=$(date +%s%N); echo $((e - s))",
            ]))

        // kube-proxy's shape for the same services, and its partial sync of the same change.
        var kubeProxyFull: Double?
        var kubeProxyChange: Double?
        if services <= kubeProxyUpTo {
            let cidr = config.clusterCIDRs[0]
            try KubeProxyShape.render(tables, clusterCIDR: cidr).write(toFile: "\(folder)/kube-proxy.nft", atomically: false, encoding: .utf8)
            let changedName = "svc-\(services / 2)"
            if let before = tables.ports.values.first(where: { $0.name.service.name == changedName }),
                let after = changedTables.ports.values.first(where: { $0.name.service.name == changedName })
            {
                try KubeProxyShape.change(from: before, to: after, clusterCIDR: cidr)
                    .write(toFile: "\(folder)/kube-proxy-change.nft", atomically: false, encoding: .utf8)
            }
            kubeProxyFull = try nanoseconds(
                runChild([
                    "unshare", "-n", "sh", "-c",
                    "s=$(date +%s%N); nft -f \(folder)/kube-proxy.nft || exit 1; e=$(date +%s%N); echo $((e - s))",
                ]))
            kubeProxyChange = try nanoseconds(
                runChild([
                    "unshare", "-n", "sh", "-c",
                    "nft -f \(folder)/kube-proxy.nft || exit 1; s=$(date +%s%N); nft -f \(folder)/kube-proxy-change.nft || exit 1; e=$(date +%s%N); echo $((e - s))",
                ]))
        }

        return Figures(
            services: services, endpoints: endpoints, chains: chains, rules: rules, batchMiB: Double(fullApply.bytes) / 1_048_576,
            fullSeconds: fullSeconds, fullPlanSeconds: full.planDuration.seconds, fullEncodeSeconds: fullApply.encode.seconds,
            fullCommitSeconds: fullApply.commit.seconds, changeSeconds: changeSeconds, changeCommitSeconds: changeCommit,
            changeOperations: change.transaction.operations.count, noopSeconds: noopSeconds, restartSeconds: restartSeconds,
            nftFullSeconds: nftFull, nftChangeSeconds: nftChange, kubeProxyFullSeconds: kubeProxyFull,
            kubeProxyChangeSeconds: kubeProxyChange, peakMiB: peak, addSeconds: addSeconds, endToEndSeconds: endToEndSeconds,
            endToEndPeakMiB: endToEndPeakMiB)
    }

    private func nanoseconds(_ output: String) throws -> Double {
        guard let value = Double(output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").last ?? "") else {
            throw CommandFailure.runtime("nft -f failed: \(output)")
        }
        return value / 1e9
    }
}

/// A finished child process: what it printed (standard output and error together), how long it ran
/// and the most memory it held.
struct ChildRun {
    var output: String
    var succeeded: Bool
    var seconds: Double
    var peakResidentMiB: Double
}

/// Runs a command (found on PATH), returns its standard output and error together; throws on failure.
func runChild(_ arguments: [String]) throws -> String {
    let run = try runChildMeasured(arguments)
    guard run.succeeded else { throw CommandFailure.runtime("\(arguments.joined(separator: " ")) failed:\n\(run.output)") }
    return run.output
}

/// Runs a command (found on PATH) and measures it: wall time from spawn to exit, and, for ferry, its
/// peak resident memory as it reports it (see `peakMemoryFileVariable`).
/// Uses posix_spawn and wait4 rather than Foundation's Process: in a fresh network namespace the
/// loopback link is down, Foundation cannot set up its wake-up sockets, and Process never notices that
/// its child exited.
func runChildMeasured(_ arguments: [String], environment: [String: String] = [:]) throws -> ChildRun {
    let path = NSTemporaryDirectory() + "ferry-child-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).out"
    defer { unlink(path) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var environment = environment
    environment[peakMemoryFileVariable] = path + ".peak"
    defer { unlink(path + ".peak") }
    let assignments = environment.map { "\($0.key)=\($0.value)" }
    let argv: [UnsafeMutablePointer<CChar>?] = (["/usr/bin/env"] + assignments + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let started = ContinuousClock.now
    let spawned = posix_spawn(&pid, "/usr/bin/env", &actions, nil, argv, environ)
    guard spawned == 0 else {
        throw CommandFailure.runtime("cannot start \(arguments.joined(separator: " ")): \(String(cString: strerror(spawned)))")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let elapsed = ContinuousClock.now - started
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    let exited = status & 0x7f == 0 && (status >> 8) & 0xff == 0
    // Only a ferry child writes its peak; 0 for other commands.
    let peak = (try? String(contentsOfFile: path + ".peak", encoding: .utf8)).flatMap { Double($0) } ?? 0
    return ChildRun(output: text, succeeded: exited, seconds: elapsed.seconds, peakResidentMiB: peak / 1024)
}
