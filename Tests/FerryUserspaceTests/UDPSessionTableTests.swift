import FerryCore
import FerrySystem
import FerryUserspace
import Testing

@Suite("UDP session table")
struct UDPSessionTableTests {
    let start = ContinuousClock.now
    var generator = SeededGenerator(state: 7)

    func key(_ client: Int, port: Int = 40_000, frontend: UInt64 = 1) -> UDPSessionTable.Key {
        UDPSessionTable.Key(frontend: frontend, client: SocketAddress(ip: FerryUserspaceTests.client(client), port: port))
    }

    /// The backend a route sends to (nil when dropped), and whether it opened a session.
    mutating func send(
        _ table: inout UDPSessionTable, _ key: UDPSessionTable.Key, at offset: Duration = .zero, pool: inout BackendPool,
        generation: UInt64 = 1
    ) -> (backend: String?, opened: Bool) {
        switch table.route(key, now: start + offset, pool: &pool, generation: generation, using: &generator) {
        case .forward(let session, let opened, _): return (session.backend.ip.description, opened)
        case .noBackend, .full: return (nil, false)
        }
    }

    @Test mutating func theFirstDatagramPicksAndLaterOnesStick() {
        var table = UDPSessionTable(idleTimeout: .milliseconds(250), limit: 100)
        var pool = BackendPool(backends: backends(3))
        let first = send(&table, key(1), pool: &pool)
        #expect(first.opened)
        for step in 1...20 {
            let next = send(&table, key(1), at: .milliseconds(10 * step), pool: &pool)
            #expect(next.backend == first.backend && !next.opened)
        }
        // Other clients (or the same address from another port) are other sessions, balanced round robin.
        let others = (2...4).map { send(&table, key($0), pool: &pool).backend! }
        #expect(Set(others + [first.backend!]).count == 3)
        #expect(send(&table, key(1, port: 40_001), pool: &pool).opened)
        #expect(table.count == 5)
        #expect(pool.openConnections.values.reduce(0, +) == 5)
    }

    @Test mutating func idleSessionsExpireAndTheNextDatagramPicksAgain() {
        var table = UDPSessionTable(idleTimeout: .milliseconds(250), limit: 100)
        var pool = BackendPool(backends: backends(2))
        _ = send(&table, key(1), pool: &pool)
        _ = send(&table, key(2), at: .milliseconds(200), pool: &pool)
        // A backend's reply keeps a session alive too.
        let replied = table.expire(now: start + .milliseconds(100))
        #expect(replied.isEmpty)
        let ended = table.expire(now: start + .milliseconds(260))
        #expect(ended.map(\.key) == [key(1)])
        #expect(table.count == 1)
        // Not yet swept: a datagram after the timeout ends the old session and opens a new one.
        #expect(send(&table, key(2), at: .milliseconds(460), pool: &pool).opened)
        #expect(table.count == 1)
    }

    @Test mutating func aRemovedBackendEndsItsSessionsAtTheNextDatagram() {
        var table = UDPSessionTable(idleTimeout: .seconds(10), limit: 100)
        var pool = BackendPool(backends: backends(2))
        let first = send(&table, key(1), pool: &pool).backend!
        let survivor = backends(2).first { $0.ip.description != first }!
        pool.update(backends: [survivor], kind: .roundRobin, affinity: .none)
        // Same generation: the table does not look (the pool did not change for it).
        #expect(send(&table, key(1), pool: &pool, generation: 1).backend == first)
        guard
            case .forward(let session, let opened, let replaced) = table.route(
                key(1), now: start, pool: &pool, generation: 2, using: &generator)
        else {
            Issue.record("no route")
            return
        }
        #expect(opened && session.backend.ip == survivor.ip && replaced?.backend.ip.description == first)
        #expect(pool.openConnections[replaced!.backend] == nil)
        // A backend that stayed keeps its sessions across generations.
        #expect(!send(&table, key(1), pool: &pool, generation: 3).opened)
    }

    @Test mutating func unreachableBackendsAreAvoidedNextTime() {
        var table = UDPSessionTable(idleTimeout: .seconds(10), limit: 100)
        var pool = BackendPool(backends: backends(2))
        guard case .forward(let session, _, _) = table.route(key(1), now: start, pool: &pool, generation: 1, using: &generator) else {
            Issue.record("no route")
            return
        }
        table.unreachable(session.id, now: start, pool: &pool)
        #expect(table.count == 0)
        for client in 1...6 {
            #expect(send(&table, key(client), at: .milliseconds(10), pool: &pool).backend != session.backend.ip.description)
        }
    }

    @Test mutating func theBoundDropsNewSessionsOnly() {
        var table = UDPSessionTable(idleTimeout: .seconds(10), limit: 3)
        var pool = BackendPool(backends: backends(2))
        for client in 1...3 { #expect(send(&table, key(client), pool: &pool).opened) }
        #expect(send(&table, key(4), pool: &pool).backend == nil)
        #expect(table.refused == 1)
        // Existing sessions go on.
        #expect(send(&table, key(2), pool: &pool).backend != nil)
        _ = table.expire(now: start + .seconds(11))
        #expect(send(&table, key(4), at: .seconds(11), pool: &pool).opened)
    }

    @Test mutating func noBackendDropsAndAffinityHolds() {
        var table = UDPSessionTable(idleTimeout: .milliseconds(250), limit: 100)
        var empty = BackendPool()
        #expect(send(&table, key(1), pool: &empty).backend == nil)
        var pool = BackendPool(backends: backends(3), affinity: .clientIP(timeoutSeconds: 60))
        let first = send(&table, key(1), pool: &pool).backend
        _ = table.expire(now: start + .seconds(1))
        // A new session (new source port, or after expiry) of the same client: the same backend.
        for port in 40_001...40_005 { #expect(send(&table, key(1, port: port), at: .seconds(1), pool: &pool).backend == first) }
    }

    @Test mutating func closingAFrontendEndsOnlyItsSessions() {
        var table = UDPSessionTable(idleTimeout: .seconds(10), limit: 100)
        var pool = BackendPool(backends: backends(2))
        _ = send(&table, key(1, frontend: 1), pool: &pool)
        _ = send(&table, key(1, frontend: 2), pool: &pool)
        #expect(table.close(frontend: 1).map(\.key.frontend) == [1])
        #expect(table.count == 1)
    }
}
