import FerryCore
import FerrySystem

/// The UDP relay's sessions, as a pure value: which backend each client of each frontend is talking to,
/// when it last sent or received, and when it ends. The worker performs the socket work (a connected
/// socket per session toward its backend) and reports back; every rule here is tested without sockets.
///
/// Rules: a session is keyed by (frontend, client address and port). The first datagram of a key picks a
/// backend with the frontend's pool (its balancer, affinity and back-off) and opens a session; later
/// datagrams go to the same backend while the session lives. A session ends when it has been idle for
/// `idleTimeout` (no datagram either way), when its backend left the pool (checked when the pool's
/// generation moved: the next datagram then picks a live backend), when the backend answered with ICMP
/// port unreachable (the backend is backed off, so the next pick avoids it), or when its frontend closes.
/// At most `limit` sessions live at once: a datagram that would open one more is dropped and counted.
public struct UDPSessionTable: Sendable {
    /// What a session is known by.
    public struct Key: Sendable, Hashable {
        public var frontend: UInt64
        public var client: SocketAddress

        public init(frontend: UInt64, client: SocketAddress) {
            self.frontend = frontend
            self.client = client
        }
    }

    /// One client's exchange with one backend through one frontend.
    public struct Session: Sendable, Hashable {
        public let id: UInt64
        public let key: Key
        public let backend: BackendAddress
        public internal(set) var lastActivity: ContinuousClock.Instant
        /// The pool generation this session's backend was last known to be in.
        public internal(set) var generation: UInt64
    }

    /// What to do with a datagram from a client.
    public enum Route: Sendable, Hashable {
        /// Send it to the session's backend. `replaced`: a session of the same key that ended first (its
        /// backend left the pool), whose socket the caller closes.
        case forward(Session, opened: Bool, replaced: Session?)
        /// The pool has no backend to offer: drop the datagram (`replaced` as above).
        case noBackend(replaced: Session?)
        /// The session bound is reached: drop the datagram.
        case full
    }

    public let idleTimeout: Duration
    public let limit: Int
    private var sessions: [UInt64: Session] = [:]
    private var byKey: [Key: UInt64] = [:]
    private var nextID: UInt64 = 1
    /// When to look at each session again, in time order (queued at creation, and again each time a
    /// look finds it still active): `expire` looks at the front only.
    private var checks: [(id: UInt64, at: ContinuousClock.Instant)] = []
    private var checksHead = 0
    /// Datagrams dropped because the bound was reached, since the table was made.
    public private(set) var refused = 0

    public init(idleTimeout: Duration, limit: Int) {
        self.idleTimeout = idleTimeout
        self.limit = max(1, limit)
    }

    public var count: Int { sessions.count }

    public func session(_ id: UInt64) -> Session? { sessions[id] }

    /// Routes a datagram from `key.client` arriving on `key.frontend`, whose pool is `pool` at
    /// `generation` (the caller holds the pool's lock). Opening a session records it in the pool as a
    /// connection (least-connections counts it, affinity pins the client); ending one releases it.
    ///
    /// `admit` false: other tables sharing the same bound hold it all (no new session here either).
    public mutating func route(
        _ key: Key, now: ContinuousClock.Instant, pool: inout BackendPool, generation: UInt64, admit: Bool = true,
        using generator: inout some RandomNumberGenerator
    ) -> Route {
        var replaced: Session?
        if let id = byKey[key], var session = sessions[id] {
            if now - session.lastActivity >= idleTimeout {
                // Expired but not swept yet: it ends here, as the sweep would have ended it.
                replaced = end(id, pool: &pool)
            } else if session.generation == generation || pool.backends.contains(session.backend) {
                session.generation = generation
                session.lastActivity = now
                sessions[id] = session
                return .forward(session, opened: false, replaced: nil)
            } else {
                replaced = end(id, pool: &pool)
            }
        }
        // (Never reached with a session just replaced: ending it made room.)
        guard sessions.count < limit, admit || replaced != nil else {
            refused += 1
            return .full
        }
        guard let backend = pool.pick(client: key.client.ip, now: now, using: &generator) else { return .noBackend(replaced: replaced) }
        let session = Session(id: nextID, key: key, backend: backend, lastActivity: now, generation: generation)
        nextID += 1
        sessions[session.id] = session
        byKey[key] = session.id
        checks.append((session.id, now + idleTimeout))
        pool.connected(backend, client: key.client.ip, now: now)
        return .forward(session, opened: true, replaced: replaced)
    }

    /// The backend answered on session `id`: it stays alive.
    public mutating func touch(_ id: UInt64, now: ContinuousClock.Instant) {
        sessions[id]?.lastActivity = now
    }

    /// Ends session `id` (its frontend closed, its socket failed), releasing it in `pool`.
    @discardableResult
    public mutating func end(_ id: UInt64, pool: inout BackendPool) -> Session? {
        guard let session = sessions.removeValue(forKey: id) else { return nil }
        byKey[session.key] = nil
        pool.released(session.backend)
        return session
    }

    /// The backend of session `id` refused (ICMP port unreachable): the session ends and the backend is
    /// backed off in `pool`, so the client's next datagram goes elsewhere.
    @discardableResult
    public mutating func unreachable(_ id: UInt64, now: ContinuousClock.Instant, pool: inout BackendPool) -> Session? {
        guard let session = end(id, pool: &pool) else { return nil }
        pool.failed(session.backend, now: now)
        return session
    }

    /// The sessions idle for `idleTimeout` or more, taken out of the table (the caller releases them in
    /// their pools and closes their sockets). Costs what is due, not what lives: sessions are looked at
    /// in deadline order (a scan of every session every 50 ms is what the first version did).
    public mutating func expire(now: ContinuousClock.Instant) -> [Session] {
        var idle: [Session] = []
        while checksHead < checks.count, checks[checksHead].at <= now {
            let id = checks[checksHead].id
            checksHead += 1
            guard let session = sessions[id] else { continue }  // ended otherwise
            if now - session.lastActivity >= idleTimeout {
                sessions[id] = nil
                byKey[session.key] = nil
                idle.append(session)
            } else {
                // Still active: looked at again when it could be idle, kept in time order (never before
                // the last queued look, which delays this one by less than a timeout).
                checks.append((id, max(session.lastActivity + idleTimeout, checks.last!.at)))
            }
        }
        if checksHead > 4_096 && checksHead * 2 > checks.count {
            checks.removeFirst(checksHead)
            checksHead = 0
        }
        return idle
    }

    /// The sessions of `frontend`, taken out of the table (it closed).
    public mutating func close(frontend: UInt64) -> [Session] {
        let ended = sessions.values.filter { $0.key.frontend == frontend }
        for session in ended {
            sessions[session.id] = nil
            byKey[session.key] = nil
        }
        return ended
    }

    /// Every session, taken out of the table (the worker stops).
    public mutating func removeAll() -> [Session] {
        defer {
            sessions = [:]
            byKey = [:]
            checks = []
            checksHead = 0
        }
        return Array(sessions.values)
    }
}
