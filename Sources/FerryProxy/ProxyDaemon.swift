import FerryCore
import FerrySources
import Foundation
import Logging
import Synchronization

/// What the daemon has done, published for health checks and metrics.
public struct ProxyStatus: Sendable, Hashable {
    /// Every source has delivered its initial view.
    public var initialSyncDone = false
    /// When the last sync succeeded (kube-proxy's healthz `lastUpdated`).
    public var lastSynced: Date?
    /// When the oldest change not yet synced arrived (`nil`: none waiting).
    public var oldestQueued: Date?
    public var syncs = 0
    public var failures = 0
    public var servicePorts = 0

    public init() {}

    /// Healthy as kube-proxy's healthz decides: synced at least once, and no change has waited longer
    /// than `limit` (twice the sync period there).
    public func isHealthy(now: Date, limit: TimeInterval) -> Bool {
        guard lastSynced != nil else { return false }
        guard let oldestQueued else { return true }
        return now.timeIntervalSince(oldestQueued) <= limit
    }
}

/// Where NodePorts listen: the addresses given by flag, else the Node object's, else the host's;
/// worked out again at every sync, so a Node address change reaches the data plane.
public struct NodeAddressResolver: Sendable {
    /// `--node-ip`; empty: not given.
    public var flags: [IPAddress]
    public var host: @Sendable () -> [IPAddress]

    public init(flags: [IPAddress], host: @escaping @Sendable () -> [IPAddress] = HostInfo.localAddresses) {
        self.flags = flags
        self.host = host
    }

    /// The addresses for `node` (the tracker's view, completed by its Node object).
    public func addresses(for node: NodeContext) -> [IPAddress] {
        if !flags.isEmpty { return flags }
        if !node.addresses.isEmpty { return node.addresses }
        return host()
    }
}

/// The node daemon's loop: source events in, syncs out, one at a time, when the `SyncSchedule` says.
///
/// Changes go into the tracker as they arrive; a sync holds the tracker only to build its tables, so
/// changes that arrive while the data plane is programmed go into the next sync. (Queued behind the
/// loop, each change got a sync of its own: at 10,000 services and 50 changes/s with
/// --min-sync-period 0, syncs of 0.2-0.4 s fell 15 s behind, p50.) Nothing wakes the loop but an event
/// or the time the schedule names: there is no polling tick.
public final class ProxyDaemon<C: Clock>: Sendable where C.Duration == Duration {
    private enum Signal: Sendable {
        case changed
        case initialSyncDone(String)
        case timer
        case stop
    }

    private let source: ObjectSource
    private let tracker: Mutex<ChangeTracker>
    private let plane: Mutex<(driver: DataPlaneDriver, nodeAddresses: [IPAddress]?)>
    private let schedule: Mutex<SyncSchedule>
    private let published = Mutex(ProxyStatus())
    private let resolver: NodeAddressResolver
    private let clock: C
    private let logger: Logger
    /// The API server's address, when Ferry reads from one: it must not be a ClusterIP Ferry programs.
    private let apiServerAddress: IPAddress?
    private let warnedAboutAPIServer = Atomic<Bool>(false)
    private let lookedForAPIServer = Atomic<Bool>(false)
    private let wake = Mutex<AsyncStream<Signal>.Continuation?>(nil)
    /// Where the daemon's metrics go, when exported.
    public let metrics: ProxyMetrics?
    /// The health check node ports of Local-policy services, when served.
    public let serviceHealth: ServiceHealthServers?
    /// A stop asked for before the loop started.
    private let stopRequested = Atomic<Bool>(false)
    /// The tables the data plane last accepted: what a sync's log line compares with.
    private let programmed = Mutex(BackendTables())

    public init(
        source: ObjectSource, tracker: ChangeTracker, plane: sending DataPlaneDriver, schedule: SyncSchedule, resolver: NodeAddressResolver,
        clock: C, logger: Logger, apiServerAddress: IPAddress? = nil, metrics: ProxyMetrics? = nil,
        serviceHealth: ServiceHealthServers? = nil
    ) {
        self.metrics = metrics
        self.serviceHealth = serviceHealth
        self.source = source
        self.tracker = Mutex(tracker)
        self.plane = Mutex((plane, nil))
        self.schedule = Mutex(schedule)
        self.resolver = resolver
        self.clock = clock
        self.logger = logger
        self.apiServerAddress = apiServerAddress
    }

    /// The status health checks and metrics read.
    public var status: ProxyStatus { published.withLock { $0 } }

    /// Ends `run()` (from a signal handler, say).
    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
        _ = wake.withLock { $0?.yield(.stop) }
    }

    /// Services said to be ignored (and why), so that each is logged once per reason.
    private let ignoredServices = Mutex<[ServiceName: String]>([:])

    /// Logs, once per service and reason, a Service a node proxy ignores (ExternalName, headless, no
    /// ClusterIP): a user who sees no rules for it learns why.
    private func logIgnoredServices(_ changes: [ObjectChange]) {
        // One lock per batch (an initial list is thousands of changes); the logging after it.
        let newlyIgnored = ignoredServices.withLock { known in
            var found: [(ServiceName, String)] = []
            for change in changes {
                switch change {
                case .upsert(.service(let service)):
                    let reason = service.skipReason
                    if let reason, known[service.name] != reason { found.append((service.name, reason)) }
                    known[service.name] = reason
                case .delete(let key) where key.kind == .service:
                    known[ServiceName(namespace: key.namespace, name: key.name)] = nil
                default:
                    continue
                }
            }
            return found
        }
        for (name, reason) in newlyIgnored { logger.info("service not proxied", metadata: ["service": "\(name)", "reason": "\(reason)"]) }
    }

    /// Follows the source and syncs until `stop()`.
    public func run() async {
        let (signals, continuation) = AsyncStream.makeStream(of: Signal.self)
        wake.withLock { $0 = continuation }
        if stopRequested.load(ordering: .relaxed) { return }
        let origin = clock.now
        let clock = self.clock
        let elapsed = { origin.duration(to: clock.now) }
        let sourceTask = Task { [self] in
            for await event in source.events() {
                switch event {
                case .changes(let changes):
                    logIgnoredServices(changes)
                    let (pending, counts) = tracker.withLock { tracker in
                        for change in changes { tracker.apply(change) }
                        return (tracker.hasPendingChanges, tracker.pendingCounts)
                    }
                    if pending {
                        let now = Date()
                        published.withLock { if $0.oldestQueued == nil { $0.oldestQueued = now } }
                        metrics?.lastQueued.set(now.timeIntervalSince1970)
                        metrics?.serviceChangesPending.set(Double(counts.services))
                        metrics?.endpointChangesPending.set(Double(counts.endpoints))
                        continuation.yield(.changed)
                    }
                case .initialSyncDone(let name): continuation.yield(.initialSyncDone(name))
                case .problems(let problems): for problem in problems { logger.error("\(problem)") }
                }
            }
        }
        var timer: Task<Void, Never>?
        defer {
            sourceTask.cancel()
            timer?.cancel()
            wake.withLock { $0 = nil }
        }
        var synced = false
        for await signal in signals {
            switch signal {
            case .stop:
                logger.info("stopping")
                return
            case .initialSyncDone(let name):
                logger.info("initial sync done", metadata: ["source": "\(name)"])
                synced = true
                published.withLock { $0.initialSyncDone = true }
                schedule.withLock { $0.request(at: elapsed()) }
            case .changed:
                schedule.withLock { $0.request(at: elapsed()) }
            case .timer:
                break
            }
            guard synced else { continue }
            let now = elapsed()
            let (due, periodic) = schedule.withLock { ($0.isDue(at: now), $0.isPeriodic(at: now)) }
            if due {
                schedule.withLock { $0.started(at: now) }
                let succeeded = syncOnce(verify: periodic)
                let end = elapsed()
                schedule.withLock { schedule in
                    schedule.finished(succeeded: succeeded, at: end)
                    // A change that arrived during the sync (the tracker has it) is requested again.
                    if tracker.withLock({ $0.hasPendingChanges }) { schedule.request(at: end) }
                    // Stale chains and sets are deleted one sync later, at least a second on.
                    if plane.withLock({ $0.driver.hasPendingWork }) { schedule.followUp(at: end + .seconds(1)) }
                }
            }
            // One timer, for the next time the schedule names.
            timer?.cancel()
            if let next = schedule.withLock({ $0.nextRun }) {
                timer = Task {
                    try? await clock.sleep(until: origin.advanced(by: next), tolerance: nil)
                    if !Task.isCancelled { continuation.yield(.timer) }
                }
            }
        }
    }

    /// Lets the data plane remove what it set up (userspace: listeners, then after up to `grace` for
    /// established connections, routes), and logs its totals.
    public func shutdown(grace: Duration) {
        plane.withLock { parts in
            do {
                try parts.driver.shutdown(grace: grace)
            } catch {
                logger.error("cleaning up on exit failed", metadata: ["error": "\(error)"])
            }
            var metadata: Logger.Metadata = [:]
            for (key, value) in parts.driver.statistics { metadata[key] = "\(value)" }
            if !metadata.isEmpty { logger.info("totals", metadata: metadata) }
        }
    }

    /// One sync; false when the data plane refused it (the last good state stays).
    private func syncOnce(verify: Bool) -> Bool {
        let start = ContinuousClock.now
        let warned = warnedAboutAPIServer.load(ordering: .relaxed)
        let (result, node, apiService) = tracker.withLock { tracker in
            let result = tracker.sync()
            // Looked for at the first sync and again only when services changed: not a scan of every
            // service at every sync.
            let look = !warned && (result.serviceChanges > 0 || !lookedForAPIServer.exchange(true, ordering: .relaxed))
            let apiService = apiServerAddress.flatMap { address in
                look ? tracker.state.services.values.first { $0.clusterIPs.contains(address) }?.name : nil
            }
            return (result, tracker.node, apiService)
        }
        metrics?.serviceChangesPending.set(to: 0)
        metrics?.endpointChangesPending.set(to: 0)
        // Taken by this sync: what arrives from now on is queued anew (and, if the sync fails, this
        // is still waiting).
        let taken = published.withLock { status in
            defer { status.oldestQueued = nil }
            return status.oldestQueued
        }
        if let address = apiServerAddress, let service = apiService {
            // A proxy that reaches its own control plane through its own rules locks itself out when
            // they break (or before they exist, at boot).
            warnedAboutAPIServer.store(true, ordering: .relaxed)
            logger.warning(
                "the API server is reached through a ClusterIP Ferry programs itself; give its own address with --master or a kubeconfig",
                metadata: ["address": "\(address)", "service": "\(service)"])
        }
        do throws(DataPlaneError) {
            let outcome = try plane.withLock { parts throws(DataPlaneError) -> DataPlaneOutcome in
                let addresses = resolver.addresses(for: node)
                if addresses != parts.nodeAddresses {
                    if parts.nodeAddresses != nil {
                        logger.info("node addresses changed", metadata: ["addresses": "\(addresses.map(\.description))"])
                    }
                    parts.nodeAddresses = addresses
                    parts.driver.setNodeAddresses(addresses)
                }
                return try parts.driver.sync(result.tables, changed: result.changedPorts, verify: verify)
            }
            let finished = Date()
            let before = programmed.withLock { previous in
                defer { previous = result.tables }
                return previous
            }
            if let metrics {
                let duration = ContinuousClock.now - start
                metrics.syncDuration.record(duration)
                (outcome.full ? metrics.fullSyncDuration : metrics.partialSyncDuration).record(duration)
                metrics.lastSync.set(finished.timeIntervalSince1970)
                metrics.serviceChanges.increment(by: Int64(result.serviceChanges))
                metrics.endpointChanges.increment(by: Int64(result.endpointChanges))
                metrics.servicePorts.set(Double(result.tables.count))
                for time in result.triggerTimes {
                    metrics.programmingDuration.record(.milliseconds(Int64(max(0, finished.timeIntervalSince(time)) * 1000)))
                }
            }
            published.withLock { status in
                status.lastSynced = finished
                status.syncs += 1
                status.servicePorts = result.tables.count
            }
            for problem in outcome.problems { logger.error("\(problem)") }
            serviceHealth?.update(result.tables)
            let elapsed = ContinuousClock.now - start
            var metadata: Logger.Metadata = [
                "service-ports": "\(result.tables.count)", "changed": "\(result.changedPorts.count)",
                "service-changes": "\(result.serviceChanges)", "endpoint-changes": "\(result.endpointChanges)",
                "duration": "\(String(format: "%.1f", elapsed.seconds * 1000))ms",
            ]
            if !result.changedPorts.isEmpty {
                metadata["what"] = "\(TableChanges.describe(result.changedPorts, before: before, after: result.tables))"
            }
            for warning in outcome.warnings { logger.warning("\(warning)") }
            for (key, value) in outcome.fields { metadata[key] = "\(value)" }
            // Network programming latency, as kube-proxy measures it: from each endpoint change's trigger
            // time (set by the control plane) to its rules or listeners being in place.
            if !result.triggerTimes.isEmpty {
                let latencies = result.triggerTimes.map { max(0, finished.timeIntervalSince($0)) }.sorted()
                metadata["programming-latency-max"] = "\(String(format: "%.3f", latencies.last!))s"
                logger.debug(
                    "network programming latencies",
                    metadata: ["seconds": "\(latencies.map { String(format: "%.4f", $0) }.joined(separator: ","))"])
            }
            logger.log(level: outcome.quiet ? .debug : .info, "synced", metadata: metadata)
            return true
        } catch {
            // The retry programs the same complete tables again (the planes compare them with what they
            // hold, and nftables reads the kernel back after a refused batch).
            metrics?.syncFailures.increment()
            published.withLock { status in
                status.failures += 1
                if let taken { status.oldestQueued = min(status.oldestQueued ?? taken, taken) }
            }
            logger.error(
                error.isPermissionDenied ? "sync refused: Ferry lacks CAP_NET_ADMIN here" : "sync failed; last good rules stay in force",
                metadata: ["error": "\(error)"])
            return false
        }
    }
}
