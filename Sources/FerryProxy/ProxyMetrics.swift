import FerryCore
import FerryUserspace
import Foundation
import Prometheus
import Synchronization

/// The daemon's Prometheus metrics: kube-proxy's names where the meaning is the same (so existing
/// dashboards and alerts work), Ferry's own under `ferry_`. One registry, no global state.
public final class ProxyMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    /// kube-proxy's sync duration buckets: 1 ms doubling to 16 s.
    static let syncBuckets: [Duration] = (0..<15).map { .microseconds(1000 << $0) }
    /// kube-proxy's network programming buckets: 0.25 s to 30 min, finer below a minute.
    static let programmingBuckets: [Duration] =
        [0.25, 0.5].map { Duration.milliseconds(Int64($0 * 1000)) } + (1...59).map { Duration.seconds($0) }
        + (0..<12).map { Duration.seconds(60 + 5 * $0) } + (0..<7).map { Duration.seconds(120 + 30 * $0) }

    let syncDuration: DurationHistogram
    let fullSyncDuration: DurationHistogram
    let partialSyncDuration: DurationHistogram
    let programmingDuration: DurationHistogram
    let lastSync: Gauge
    let lastQueued: Gauge
    let endpointChanges: Counter
    let serviceChanges: Counter
    let endpointChangesPending: Gauge
    let serviceChangesPending: Gauge
    let syncFailures: Counter
    let servicePorts: Gauge
    /// 1 when stale UDP conntrack entries are deleted as endpoints go (nftables mode), 0 when it cannot be.
    public let conntrackCleanup: Gauge
    /// Ferry's own counters, read from the data plane at each scrape (`ferry_<plane statistic>_total`).
    private let planeCounters: Mutex<[String: (counter: Counter, last: Int64)]> = Mutex([:])

    /// `mode`: the data plane, which names the failure counter (kube-proxy names it per mode).
    public init(mode: String) {
        syncDuration = registry.makeDurationHistogram(
            name: "kubeproxy_sync_proxy_rules_duration_seconds", buckets: Self.syncBuckets,
            help: "SyncProxyRules latency in seconds")
        fullSyncDuration = registry.makeDurationHistogram(
            name: "kubeproxy_sync_full_proxy_rules_duration_seconds", buckets: Self.syncBuckets,
            help: "SyncProxyRules latency in seconds for full resyncs")
        partialSyncDuration = registry.makeDurationHistogram(
            name: "kubeproxy_sync_partial_proxy_rules_duration_seconds", buckets: Self.syncBuckets,
            help: "SyncProxyRules latency in seconds for partial resyncs")
        programmingDuration = registry.makeDurationHistogram(
            name: "kubeproxy_network_programming_duration_seconds", buckets: Self.programmingBuckets,
            help: "In Cluster Network Programming Latency in seconds")
        lastSync = registry.makeGauge(
            name: "kubeproxy_sync_proxy_rules_last_timestamp_seconds", help: "The last time proxy rules were successfully synced")
        lastQueued = registry.makeGauge(
            name: "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            help: "The last time a sync of proxy rules was queued")
        endpointChanges = registry.makeCounter(
            name: "kubeproxy_sync_proxy_rules_endpoint_changes_total", help: "Cumulative proxy rules Endpoint changes")
        serviceChanges = registry.makeCounter(
            name: "kubeproxy_sync_proxy_rules_service_changes_total", help: "Cumulative proxy rules Service changes")
        endpointChangesPending = registry.makeGauge(
            name: "kubeproxy_sync_proxy_rules_endpoint_changes_pending", help: "Pending proxy rules Endpoint changes")
        serviceChangesPending = registry.makeGauge(
            name: "kubeproxy_sync_proxy_rules_service_changes_pending", help: "Pending proxy rules Service changes")
        syncFailures = registry.makeCounter(
            name: mode == "nftables" ? "kubeproxy_sync_proxy_rules_nftables_sync_failures_total" : "ferry_sync_failures_total",
            help: "Syncs the data plane refused (the last good state stayed in force)")
        servicePorts = registry.makeGauge(name: "ferry_service_ports", help: "Service ports in the backend tables")
        conntrackCleanup = registry.makeGauge(
            name: "ferry_conntrack_cleanup_enabled", help: "1 when UDP flows to removed endpoints are deleted from conntrack")
    }

    /// Counters the data plane keeps (userspace: connections, bytes, failures), brought up to date.
    public func updatePlaneCounters(_ statistics: [(String, String)]) {
        planeCounters.withLock { counters in
            for (key, text) in statistics {
                guard let value = Int64(text) else { continue }
                let name = "ferry_" + key.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined() + "_total"
                if counters[name] == nil {
                    counters[name] = (registry.makeCounter(name: name, help: "Ferry data plane: \(key)"), 0)
                }
                let delta = value - counters[name]!.last
                if delta > 0 { counters[name]!.counter.increment(by: delta) }
                counters[name]!.last = value
            }
        }
    }

    private struct PoolCounters {
        var connections: Counter
        var active: Gauge
        var failures: Counter
        var bytes: Counter
        var last: (connections: Int, failures: Int, bytes: Int)
    }

    private let poolCounters = Mutex<[String: PoolCounters]>([:])

    /// The userspace relay's counters per service port and frontend kind, brought up to date.
    public func updatePools(_ pools: [(servicePort: ServicePortName, external: Bool, stats: PoolStats)]) {
        poolCounters.withLock { counters in
            for pool in pools {
                let labels = [("service_port", pool.servicePort.description), ("frontend", pool.external ? "external" : "internal")]
                let key = "\(labels[0].1) \(labels[1].1)"
                if counters[key] == nil {
                    counters[key] = PoolCounters(
                        connections: registry.makeCounter(
                            name: "ferry_userspace_connections_total", labels: labels, help: "Connections accepted by the userspace relay"),
                        active: registry.makeGauge(
                            name: "ferry_userspace_connections_active", labels: labels, help: "Connections the userspace relay holds open"),
                        failures: registry.makeCounter(
                            name: "ferry_userspace_connect_failures_total", labels: labels,
                            help: "Connect attempts to a backend that failed (each retried on another when one is left)"),
                        bytes: registry.makeCounter(
                            name: "ferry_userspace_bytes_total", labels: labels, help: "Bytes relayed, both directions"),
                        last: (0, 0, 0))
                }
                let now = (
                    pool.stats.accepted.load(ordering: .relaxed), pool.stats.connectFailures.load(ordering: .relaxed),
                    pool.stats.bytes.load(ordering: .relaxed)
                )
                let entry = counters[key]!
                if now.0 > entry.last.connections { entry.connections.increment(by: Int64(now.0 - entry.last.connections)) }
                if now.1 > entry.last.failures { entry.failures.increment(by: Int64(now.1 - entry.last.failures)) }
                if now.2 > entry.last.bytes { entry.bytes.increment(by: Int64(now.2 - entry.last.bytes)) }
                entry.active.set(to: Double(pool.stats.active.load(ordering: .relaxed)))
                counters[key]!.last = (now.0, now.1, now.2)
            }
        }
    }

    /// The Prometheus text exposition.
    public func render() -> String { registry.emitToString() }
}
