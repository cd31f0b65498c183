/// When the daemon syncs: kube-proxy's `BoundedFrequencyRunner` as a pure value.
///
/// A sync runs when one is requested (a change arrived) but never sooner than `minInterval` after the
/// previous one, so bursts coalesce; at least every `maxInterval` (the periodic resync that repairs
/// drift); and, after a failure, again after a back-off that doubles from `retryInitial` to
/// `retryMaximum`. Time is a `Duration` since an arbitrary origin, so tests drive it by hand.
public struct SyncSchedule: Sendable, Hashable {
    public var minInterval: Duration
    public var maxInterval: Duration
    public var retryInitial: Duration
    public var retryMaximum: Duration
    /// When the last sync started; `nil` before the first.
    public private(set) var lastRun: Duration?
    /// A change is waiting for a sync (since `requestedAt`).
    public private(set) var requestedAt: Duration?
    /// After a failure: when to try again.
    public private(set) var retryAt: Duration?
    /// Consecutive failures.
    public private(set) var failures = 0
    /// A sync the data plane asked for (stale chains to delete one sync later).
    public private(set) var followUpAt: Duration?

    public init(
        minInterval: Duration, maxInterval: Duration, retryInitial: Duration = .milliseconds(500), retryMaximum: Duration = .seconds(30)
    ) {
        self.minInterval = minInterval
        self.maxInterval = maxInterval
        self.retryInitial = retryInitial
        self.retryMaximum = retryMaximum
    }

    /// A change arrived at `now`: a sync is wanted. The first request of a burst is the one kept.
    public mutating func request(at now: Duration) {
        if requestedAt == nil { requestedAt = now }
    }

    /// The data plane has work left (objects to delete one sync later): a sync at `time`, whatever else.
    public mutating func followUp(at time: Duration) {
        followUpAt = min(followUpAt ?? time, time)
    }

    /// When the next sync is due, or `nil` when nothing is scheduled (before the first request).
    public var nextRun: Duration? {
        var due: [Duration] = []
        if let requestedAt { due.append(lastRun.map { max(requestedAt, $0 + minInterval) } ?? requestedAt) }
        if let lastRun { due.append(lastRun + maxInterval) }
        if let retryAt { due.append(retryAt) }
        if let followUpAt { due.append(followUpAt) }
        return due.min()
    }

    /// Whether a sync is due at `now`.
    public func isDue(at now: Duration) -> Bool { nextRun.map { $0 <= now } ?? false }

    /// Whether the sync due at `now` is the periodic one (nothing requested): the one that verifies what
    /// the kernel holds.
    public func isPeriodic(at now: Duration) -> Bool {
        guard let lastRun else { return false }
        return requestedAt == nil && retryAt == nil && followUpAt == nil && now >= lastRun + maxInterval
    }

    /// A sync started at `now`: pending requests are taken by it.
    public mutating func started(at now: Duration) {
        lastRun = now
        requestedAt = nil
        retryAt = nil
        followUpAt = nil
    }

    /// The sync ended at `now`; a failure schedules a retry after the back-off.
    public mutating func finished(succeeded: Bool, at now: Duration) {
        if succeeded {
            failures = 0
            return
        }
        failures += 1
        var backoff = retryInitial
        for _ in 1..<min(failures, 16) { backoff = min(retryMaximum, backoff * 2) }
        retryAt = now + min(retryMaximum, backoff)
    }

    /// How long the oldest unsynced change has waited at `now` (zero when none).
    public func waiting(at now: Duration) -> Duration {
        requestedAt.map { now - $0 } ?? .zero
    }
}
