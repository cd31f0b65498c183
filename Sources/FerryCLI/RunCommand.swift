import ArgumentParser
import Dispatch
import FerryCore
import FerryNFTables
import FerrySources
import Foundation
import Logging
import Synchronization

/// `ferry run`: the node proxy. Reads its sources, keeps the backend tables, programs the data plane.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the proxy: follow the sources and keep the data plane programmed until stopped.",
        discussion: """
            Nothing is programmed before the sources' initial sync. Changes are coalesced (at most one sync \
            per --min-sync-period); a full resync every --sync-period reads Ferry's tables back if anything \
            else changed nftables, and repairs them. SIGTERM/SIGINT stop Ferry and leave the rules in place \
            (run `ferry cleanup` to remove them).
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var node: NodeOptions
    @OptionGroup var nftables: NFTablesOptions

    @Option(help: "The data plane.")
    var mode: DataPlaneMode = .nftables

    @Option(name: .customLong("sync-period"), help: "Seconds between full resyncs.")
    var syncPeriod: Double = 30

    @Option(name: .customLong("min-sync-period"), help: "Minimum seconds between two syncs (bursts are coalesced).")
    var minSyncPeriod: Double = 1

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func validate() throws {
        if mode == .userspace { throw ValidationError("--mode userspace is not available yet; use --mode nftables") }
        guard syncPeriod >= 1, minSyncPeriod >= 0, minSyncPeriod <= syncPeriod else {
            throw ValidationError("--sync-period must be at least 1 and --min-sync-period between 0 and it")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level \"\(logLevel)\"") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            return handler
        }
        let logger = Logger(label: "ferry")
        let objects: ObjectSource = source.manifests.map { ManifestSource(path: $0, watch: true) } ?? EmbeddedSource()
        let netfilter = try openNetfilter()
        let context = try node.context(state: ClusterState())
        let proxier = NFTablesProxier(
            netfilter: netfilter, config: try nftables.plannerConfig(node: node, context: context), conntrack: try? NetlinkConntrack())
        let loop = SyncLoop(
            source: objects, tracker: ChangeTracker(node: context), proxier: proxier, logger: logger,
            syncPeriod: .milliseconds(Int64(syncPeriod * 1000)), minSyncPeriod: .milliseconds(Int64(minSyncPeriod * 1000)))
        logger.info("ferry starting", metadata: ["mode": "\(mode.rawValue)", "source": "\(objects.name)", "node": "\(context.name)"])
        await loop.run()
        logger.info("ferry stopped; rules left in place")
    }
}

/// The daemon's loop: source events in, syncs out, one at a time.
final class SyncLoop: Sendable {
    private enum Signal: Sendable {
        case events(SourceEvent)
        case tick
        case stop
    }

    private let source: ObjectSource
    private let state: Mutex<(tracker: ChangeTracker, proxier: NFTablesProxier)>
    private let logger: Logger
    private let syncPeriod: Duration
    private let minSyncPeriod: Duration

    init(
        source: ObjectSource, tracker: ChangeTracker, proxier: sending NFTablesProxier, logger: Logger, syncPeriod: Duration,
        minSyncPeriod: Duration
    ) {
        self.source = source
        self.state = Mutex((tracker, proxier))
        self.logger = logger
        self.syncPeriod = syncPeriod
        self.minSyncPeriod = minSyncPeriod
    }

    func run() async {
        let (signals, continuation) = AsyncStream.makeStream(of: Signal.self)
        let sourceTask = Task {
            for await event in source.events() { continuation.yield(.events(event)) }
        }
        let tickTask = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                continuation.yield(.tick)
            }
        }
        let stopSources = [SIGTERM, SIGINT].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let handler = DispatchSource.makeSignalSource(signal: number)
            handler.setEventHandler { continuation.yield(.stop) }
            handler.resume()
            return handler
        }
        defer {
            sourceTask.cancel()
            tickTask.cancel()
            for handler in stopSources { handler.cancel() }
        }

        let clock = ContinuousClock()
        var synced = false
        var dirty = false
        var lastSync = clock.now - syncPeriod
        var retryAt: ContinuousClock.Instant?
        var failures = 0
        for await signal in signals {
            switch signal {
            case .stop:
                logger.info("stopping on signal")
                return
            case .events(.initialSyncDone(let name)):
                logger.info("initial sync done", metadata: ["source": "\(name)"])
                synced = true
                dirty = true
            case .events(.problems(let problems)):
                for problem in problems { logger.error("\(problem)") }
            case .events(.changes(let changes)):
                state.withLock { for change in changes { $0.tracker.apply(change) } }
                dirty = true
            case .tick:
                break
            }
            guard synced else { continue }
            let now = clock.now
            let periodic = now - lastSync >= syncPeriod
            let pendingDeletion = state.withLock { $0.proxier.hasPendingDeletions } && now - lastSync >= .seconds(1)
            let retry = retryAt.map { now >= $0 } ?? false
            guard (dirty && now - lastSync >= minSyncPeriod) || periodic || pendingDeletion || retry else { continue }
            lastSync = now
            dirty = false
            do {
                try syncOnce(verify: periodic)
                failures = 0
                retryAt = nil
            } catch {
                failures += 1
                let backoff = Duration.milliseconds(min(30_000, 500 << min(failures, 6)))
                retryAt = clock.now + backoff
                logger.error(
                    "sync failed; last good rules stay in force",
                    metadata: ["error": "\(error)", "retry-in": "\(backoff)", "failures": "\(failures)"])
            }
        }
    }

    private func syncOnce(verify: Bool) throws {
        try state.withLock { parts in
            let clock = ContinuousClock()
            let start = clock.now
            let result = parts.tracker.sync()
            let report = try parts.proxier.sync(result.tables, verify: verify)
            let counts = report.transaction.summary
            let total = clock.now - start
            let level: Logger.Level = report.transaction.isEmpty && !report.readBack ? .debug : .info
            logger.log(
                level: level, "synced",
                metadata: [
                    "service-ports": "\(result.tables.count)", "changed": "\(result.changedPorts.count)",
                    "service-changes": "\(result.serviceChanges)", "endpoint-changes": "\(result.endpointChanges)",
                    "operations": "\(report.transaction.operations.count)", "elements+": "\(counts.elementsAdded)",
                    "elements-": "\(counts.elementsDeleted)",
                    "rules": "\(counts.rules)", "chains-": "\(counts.chainsDeleted)", "read-back": "\(report.readBack)",
                    "duration": "\(total)", "kernel": "\(report.kernelDuration)", "udp-flows-deleted": "\(report.flowsDeleted)",
                ])
        }
    }
}
