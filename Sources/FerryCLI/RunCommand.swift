import ArgumentParser
import Dispatch
import FerryCore
import FerryNFTables
import FerrySources
import FerryUserspace
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
            (run `ferry cleanup` to remove them). In userspace mode Ferry itself accepts and relays TCP \
            connections; on exit it closes its listeners and removes its local routes.
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var node: NodeOptions
    @OptionGroup var nftables: NFTablesOptions
    @OptionGroup var userspace: UserspaceOptions

    @Option(help: "The data plane.")
    var mode: DataPlaneMode = .nftables

    @Option(name: .customLong("sync-period"), help: "Seconds between full resyncs.")
    var syncPeriod: Double = 30

    @Option(name: .customLong("min-sync-period"), help: "Minimum seconds between two syncs (bursts are coalesced).")
    var minSyncPeriod: Double = 1

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func validate() throws {
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
        let objects = try source.objectSource(nodeName: node.nodeName ?? HostInfo.hostName())
        // Flags only: the Node object's addresses (then the host's) come in as the sources report it,
        // and NodePorts follow them when they change.
        let context = NodeContext(name: node.nodeName ?? HostInfo.hostName(), addresses: try node.parsedIPs())
        let plane: DataPlaneDriver
        switch mode {
        case .nftables:
            let netfilter = try openNetfilter()
            if let removed = try? UserspaceProxier.removeRoutes(NetlinkRouteTable()), removed > 0 {
                logger.info("removed the userspace mode's local routes", metadata: ["routes": "\(removed)"])
            }
            plane = NFTablesDriver(
                NFTablesProxier(
                    netfilter: netfilter, config: try nftables.plannerConfig(node: node, context: context),
                    conntrack: try? NetlinkConntrack()))
        case .userspace:
            // The nftables mode's rules would DNAT service traffic before it reaches Ferry's sockets.
            if let removed = try? openNetfilter().deleteTables(named: Planner.tableName), !removed.isEmpty {
                logger.info("removed the nftables mode's tables", metadata: ["tables": "\(removed.map(\.rawValue))"])
            }
            plane = try userspace.driver(node: context, nodePortAddresses: try nftables.parsedNodePortAddresses())
        }
        let loop = SyncLoop(
            source: objects, tracker: ChangeTracker(node: context), plane: plane, logger: logger,
            syncPeriod: .milliseconds(Int64(syncPeriod * 1000)), minSyncPeriod: .milliseconds(Int64(minSyncPeriod * 1000)),
            apiServerAddress: (objects as? KubernetesSource).flatMap { URL(string: $0.client.access.server)?.host }
                .flatMap { IPAddress($0.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))) })
        logger.info("ferry starting", metadata: ["mode": "\(mode.rawValue)", "source": "\(objects.name)", "node": "\(context.name)"])
        await loop.run()
        switch mode {
        case .nftables: logger.info("ferry stopped; rules left in place")
        case .userspace:
            loop.shutdown()
            logger.info("ferry stopped; listeners closed and local routes removed")
        }
    }
}

/// The daemon's loop: source events in, syncs out, one at a time.
final class SyncLoop: Sendable {
    private enum Signal: Sendable {
        case events(SourceEvent)
        /// The source's changes were applied to the tracker.
        case changed
        case tick
        case stop
    }

    private let source: ObjectSource
    /// The tracker and the data plane are locked apart: a sync takes the tracker only to build its
    /// tables, so the source keeps applying changes while the data plane is programmed, and the next
    /// sync takes everything that arrived meanwhile.
    private let tracker: Mutex<ChangeTracker>
    private let plane: Mutex<(driver: DataPlaneDriver, nodeAddresses: [IPAddress]?)>
    private let logger: Logger
    private let syncPeriod: Duration
    private let minSyncPeriod: Duration
    /// The API server's address, when Ferry reads from one: it must not be a ClusterIP Ferry programs.
    private let apiServerAddress: IPAddress?
    private let warnedAboutAPIServer = Atomic<Bool>(false)

    init(
        source: ObjectSource, tracker: ChangeTracker, plane: sending DataPlaneDriver, logger: Logger, syncPeriod: Duration,
        minSyncPeriod: Duration, apiServerAddress: IPAddress? = nil
    ) {
        self.source = source
        self.apiServerAddress = apiServerAddress
        self.tracker = Mutex(tracker)
        self.plane = Mutex((plane, nil))
        self.logger = logger
        self.syncPeriod = syncPeriod
        self.minSyncPeriod = minSyncPeriod
    }

    func run() async {
        let (signals, continuation) = AsyncStream.makeStream(of: Signal.self)
        let sourceTask = Task {
            for await event in source.events() {
                // Changes go into the tracker as they arrive, not behind the loop: while a sync runs,
                // the next ones pile up there and the following sync takes them all. (Queued behind the
                // loop, each change got a sync of its own: at 10,000 services and 50 changes/s with
                // --min-sync-period 0, syncs of 0.4 s fell 15 s behind, p50.)
                if case .changes(let changes) = event {
                    tracker.withLock { tracker in for change in changes { tracker.apply(change) } }
                    continuation.yield(.changed)
                } else {
                    continuation.yield(.events(event))
                }
            }
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
            case .changed, .events(.changes):
                // Already applied; a sync that ran meanwhile may have taken them.
                dirty = tracker.withLock { $0.hasPendingChanges }
            case .tick:
                break
            }
            guard synced else { continue }
            let now = clock.now
            let periodic = now - lastSync >= syncPeriod
            let pendingDeletion = plane.withLock { $0.driver.hasPendingWork } && now - lastSync >= .seconds(1)
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

    /// Lets the data plane remove what it set up (userspace: listeners and routes).
    func shutdown() {
        plane.withLock { parts in
            do {
                try parts.driver.shutdown()
            } catch {
                logger.error("cleaning up on exit failed", metadata: ["error": "\(error)"])
            }
            var metadata: Logger.Metadata = [:]
            for (key, value) in parts.driver.statistics { metadata[key] = "\(value)" }
            if !metadata.isEmpty { logger.info("totals", metadata: metadata) }
        }
    }

    private func syncOnce(verify: Bool) throws {
        let clock = ContinuousClock()
        let start = clock.now
        let warned = warnedAboutAPIServer.load(ordering: .relaxed)
        let (result, node, apiService) = tracker.withLock { tracker in
            let result = tracker.sync()
            let apiService = apiServerAddress.flatMap { address in
                warned ? nil : tracker.state.services.values.first { $0.clusterIPs.contains(address) }?.name
            }
            return (result, tracker.node, apiService)
        }
        try plane.withLock { parts in
            if let address = apiServerAddress, let service = apiService {
                // A proxy that reaches its own control plane through its own rules locks itself out when
                // they break (or before they exist, at boot).
                warnedAboutAPIServer.store(true, ordering: .relaxed)
                logger.warning(
                    "the API server is reached through a ClusterIP Ferry programs itself; give its own address with --master or a kubeconfig",
                    metadata: ["address": "\(address)", "service": "\(service)"])
            }
            // NodePort addresses: the flags, else the Node object's, else the host's.
            var addresses = node.addresses
            if addresses.isEmpty { addresses = HostInfo.localAddresses() }
            if addresses != parts.nodeAddresses {
                if parts.nodeAddresses != nil {
                    logger.info("node addresses changed", metadata: ["addresses": "\(addresses.map(\.description))"])
                }
                parts.nodeAddresses = addresses
                parts.driver.setNodeAddresses(addresses)
            }
            let outcome = try parts.driver.sync(result.tables, verify: verify)
            for problem in outcome.problems { logger.error("\(problem)") }
            var metadata: Logger.Metadata = [
                "service-ports": "\(result.tables.count)", "changed": "\(result.changedPorts.count)",
                "service-changes": "\(result.serviceChanges)", "endpoint-changes": "\(result.endpointChanges)",
                "duration": "\(clock.now - start)",
            ]
            for (key, value) in outcome.fields { metadata[key] = "\(value)" }
            // Network programming latency, as kube-proxy measures it: from each endpoint change's trigger
            // time (set by the control plane) to its rules or listeners being in place.
            if !result.triggerTimes.isEmpty {
                let now = Date()
                let latencies = result.triggerTimes.map { max(0, now.timeIntervalSince($0)) }.sorted()
                metadata["programming-latency-max"] = "\(String(format: "%.3f", latencies.last!))s"
                logger.debug(
                    "network programming latencies",
                    metadata: ["seconds": "\(latencies.map { String(format: "%.4f", $0) }.joined(separator: ","))"])
            }
            logger.log(level: outcome.quiet ? .debug : .info, "synced", metadata: metadata)
        }
    }
}
