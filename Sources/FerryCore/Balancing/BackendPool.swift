/// The backends of one service port as the userspace data plane balances over them, with the state
/// balancing needs: a round-robin cursor, open connections per backend, client affinity and back-off
/// of backends that refused. Pure: time comes in as an argument, randomness through a generator.
public struct BackendPool: Sendable {
    /// How long a backend that failed to connect is skipped, doubling per failure in a row.
    public static let backoffBase: Duration = .seconds(1)
    public static let backoffLimit: Duration = .seconds(30)

    public private(set) var backends: [BackendAddress] = []
    public private(set) var kind: BalancerKind
    /// ClientIP affinity timeout; `nil` without affinity.
    public private(set) var affinityTimeout: Duration?
    private var cursor = 0
    private var maglev = MaglevTable(names: [])
    /// Open connections per backend (also kept for backends that left, until their connections close).
    public private(set) var openConnections: [BackendAddress: Int] = [:]
    private var affinity: [IPAddress: (backend: BackendAddress, lastUsed: ContinuousClock.Instant)] = [:]
    private var backoff: [BackendAddress: (until: ContinuousClock.Instant, failures: Int)] = [:]

    public init(backends: [Backend] = [], kind: BalancerKind = .roundRobin, affinity: SessionAffinity = .none) {
        self.kind = kind
        update(backends: backends, kind: kind, affinity: affinity)
    }

    /// Follows a new backend set; true when the backends, the balancer or the affinity changed. Affinity
    /// to a backend that left is dropped; open connections to it are left to drain (they are counted
    /// until they close).
    @discardableResult
    public mutating func update(backends newBackends: [Backend], kind newKind: BalancerKind, affinity newAffinity: SessionAffinity) -> Bool
    {
        let before = (backends, kind, affinityTimeout)
        let addresses = newBackends.map(BackendAddress.init).sorted()
        var unique: [BackendAddress] = []
        for address in addresses where unique.last != address { unique.append(address) }
        if unique != backends || newKind != kind {
            backends = unique
            kind = newKind
            if kind == .maglev { maglev = MaglevTable(names: backends.map(\.description)) }
            cursor = backends.isEmpty ? 0 : cursor % backends.count
            let present = Set(backends)
            affinity = affinity.filter { present.contains($0.value.backend) }
            backoff = backoff.filter { present.contains($0.key) }
        }
        switch newAffinity {
        case .none:
            affinityTimeout = nil
            affinity = [:]
        case .clientIP(let seconds):
            affinityTimeout = .seconds(seconds)
        }
        return before != (backends, kind, affinityTimeout)
    }

    /// The backend for a new connection from `client`, or `nil` when none is left to try. `excluding`
    /// holds the backends this connection already failed on. A backend in back-off is used only when
    /// every other candidate is too.
    public mutating func pick(
        client: IPAddress, now: ContinuousClock.Instant, excluding: Set<BackendAddress> = [],
        using generator: inout some RandomNumberGenerator
    ) -> BackendAddress? {
        if let timeout = affinityTimeout, let entry = affinity[client] {
            if now - entry.lastUsed <= timeout, !excluding.contains(entry.backend), !isBackedOff(entry.backend, now: now) {
                return entry.backend
            }
            affinity[client] = nil
        }
        let chosen = choose(client: client, now: now, excluding: excluding, using: &generator)
        // Pinned at once, so a client's concurrent first connections agree (connect refreshes it).
        if let chosen, affinityTimeout != nil { affinity[client] = (chosen, now) }
        return chosen
    }

    private mutating func choose(
        client: IPAddress, now: ContinuousClock.Instant, excluding: Set<BackendAddress>, using generator: inout some RandomNumberGenerator
    ) -> BackendAddress? {
        let candidates = backends.filter { !excluding.contains($0) }
        guard !candidates.isEmpty else { return nil }
        let healthy = candidates.filter { !isBackedOff($0, now: now) }
        let pool = healthy.isEmpty ? candidates : healthy
        switch kind {
        case .roundRobin:
            // Walk the full list from the cursor so each backend gets its turn even when some are skipped.
            for step in 0..<backends.count {
                let backend = backends[(cursor + step) % backends.count]
                if pool.contains(backend) {
                    cursor = (cursor + step + 1) % backends.count
                    return backend
                }
            }
            return pool.first
        case .leastConnections:
            let fewest = pool.map { openConnections[$0] ?? 0 }.min() ?? 0
            let tied = pool.filter { (openConnections[$0] ?? 0) == fewest }
            cursor = (cursor + 1) % max(1, backends.count)
            return tied[cursor % tied.count]
        case .random:
            return pool.randomElement(using: &generator)
        case .maglev:
            if let index = maglev.index(for: client), pool.contains(backends[index]) { return backends[index] }
            // The client's backend is excluded or backed off: the next one along its hash, deterministically.
            let start = Int(MaglevTable.hash(client.description, seed: 7) % UInt64(pool.count))
            return pool[start]
        }
    }

    /// A connection to `backend` was established for `client`.
    public mutating func connected(_ backend: BackendAddress, client: IPAddress, now: ContinuousClock.Instant) {
        openConnections[backend, default: 0] += 1
        backoff[backend] = nil
        if affinityTimeout != nil { affinity[client] = (backend, now) }
    }

    /// A connection to `backend` closed.
    public mutating func released(_ backend: BackendAddress) {
        guard let count = openConnections[backend] else { return }
        openConnections[backend] = count > 1 ? count - 1 : nil
    }

    /// Connecting to `backend` failed: skip it for a while (1 s, doubling per failure in a row, at most 30 s).
    public mutating func failed(_ backend: BackendAddress, now: ContinuousClock.Instant) {
        let failures = (backoff[backend]?.failures ?? 0) + 1
        let delay = min(BackendPool.backoffLimit, BackendPool.backoffBase * (1 << min(failures - 1, 5)))
        backoff[backend] = (now + delay, failures)
    }

    public func isBackedOff(_ backend: BackendAddress, now: ContinuousClock.Instant) -> Bool {
        guard let entry = backoff[backend] else { return false }
        return now < entry.until
    }

    /// The backend `client` is pinned to, if affinity holds at `now`.
    public func affinityBackend(for client: IPAddress, now: ContinuousClock.Instant) -> BackendAddress? {
        guard let timeout = affinityTimeout, let entry = affinity[client], now - entry.lastUsed <= timeout else { return nil }
        return entry.backend
    }

    /// Forgets affinity entries that timed out (call now and then; `pick` also ignores them).
    public mutating func expireAffinity(now: ContinuousClock.Instant) {
        guard let timeout = affinityTimeout else { return }
        affinity = affinity.filter { now - $0.value.lastUsed <= timeout }
    }
}
