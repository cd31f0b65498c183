import FerryCore
import FerryNFTables
import Foundation
import Glibc

/// `ferry bench sync`'s measurement of one size, in this process's (fresh) network namespace: a full
/// sync, a one-endpoint change, one added, a no-op, a restart, `ferry sync` end to end, and `nft -f` of
/// the same ruleset and of kube-proxy's shape for the same services.
public struct SyncBenchmark: Sendable {
    public var endpoints: Int
    /// kube-proxy's shape is loaded up to this many services (it grows quadratically).
    public var kubeProxyUpTo: Int
    /// The Ferry executable run for the end-to-end figure.
    public var ferryPath: String

    public init(endpoints: Int, kubeProxyUpTo: Int, ferryPath: String) {
        self.endpoints = endpoints
        self.kubeProxyUpTo = kubeProxyUpTo
        self.ferryPath = ferryPath
    }

    /// Everything for one size, in this process's (fresh) network namespace.
    public func measure(services: Int) throws -> SyncFigures {
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
            throw BenchFailure("the restart changed more than the big maps: \(Renderer.script(restart.transaction).prefix(2_000))")
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
            "unshare", "-n", "/usr/bin/time", "-f", "ELAPSED %e %M", ferryPath, "sync", "--manifests", "\(folder)/manifests",
            "--node-name", "node-1", "--node-ip", "10.0.0.1", "--cluster-cidr", "10.64.0.0/10",
        ])
        guard let line = endToEnd.split(separator: "\n").last(where: { $0.hasPrefix("ELAPSED ") }) else {
            throw BenchFailure("ferry sync printed no timing:\n\(endToEnd)")
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

        return SyncFigures(
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
            throw BenchFailure("nft -f failed: \(output)")
        }
        return value / 1e9
    }
}
