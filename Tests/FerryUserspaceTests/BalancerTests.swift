import FerryCore
import Foundation
import Testing

/// A deterministic generator for the random balancer.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return state >> 11 | state << 53
    }
}

func backends(_ count: Int, from start: Int = 1) -> [Backend] {
    (start..<(start + count)).map { Backend(ip: IPAddress("10.244.0.\($0)")!, port: 8080) }
}

func client(_ index: Int) -> IPAddress { IPAddress("192.168.\(index / 250).\(index % 250 + 1)")! }

@Suite("Userspace balancers, affinity and back-off")
struct BalancerTests {
    let start = ContinuousClock.now
    var generator = SeededGenerator(state: 42)

    @Test mutating func roundRobinIsExact() {
        var pool = BackendPool(backends: backends(3))
        let picks = (0..<9).map { pool.pick(client: client($0), now: start, using: &generator)!.ip.description }
        #expect(
            picks == [
                "10.244.0.1", "10.244.0.2", "10.244.0.3", "10.244.0.1", "10.244.0.2", "10.244.0.3", "10.244.0.1", "10.244.0.2",
                "10.244.0.3",
            ])
    }

    @Test mutating func roundRobinSkipsExcludedAndBackedOffBackends() {
        var pool = BackendPool(backends: backends(3))
        let second = BackendAddress(backends(3)[1])
        pool.failed(second, now: start)
        let picks = (0..<4).map { pool.pick(client: client($0), now: start, using: &generator)! }
        #expect(!picks.contains(second))
        // After the back-off it is used again.
        let later = (0..<3).map { pool.pick(client: client($0), now: start + .seconds(2), using: &generator)! }
        #expect(later.contains(second))
        // Excluded (already tried by this connection) beats everything.
        let excluded = pool.pick(
            client: client(1), now: start, excluding: Set(BackendAddress.all(backends(3)).prefix(2)), using: &generator)
        #expect(excluded == BackendAddress(backends(3)[2]))
        #expect(pool.pick(client: client(1), now: start, excluding: Set(BackendAddress.all(backends(3))), using: &generator) == nil)
    }

    @Test mutating func backoffDoublesAndAllBackedOffStillServes() {
        var pool = BackendPool(backends: backends(1))
        let only = BackendAddress(backends(1)[0])
        pool.failed(only, now: start)
        pool.failed(only, now: start)
        #expect(pool.isBackedOff(only, now: start + .milliseconds(1_500)))
        #expect(!pool.isBackedOff(only, now: start + .milliseconds(2_100)))
        // Every candidate backed off: try one anyway rather than refuse the client.
        #expect(pool.pick(client: client(0), now: start, using: &generator) == only)
        pool.connected(only, client: client(0), now: start)
        #expect(!pool.isBackedOff(only, now: start))
    }

    @Test mutating func leastConnectionsFollowsSkew() {
        var pool = BackendPool(backends: backends(3), kind: .leastConnections)
        let all = BackendAddress.all(backends(3))
        // Backend 1 holds 5 long connections, backend 2 holds 2.
        for _ in 0..<5 { pool.connected(all[0], client: client(0), now: start) }
        for _ in 0..<2 { pool.connected(all[1], client: client(0), now: start) }
        var counts: [BackendAddress: Int] = [:]
        for index in 0..<6 {
            let picked = pool.pick(client: client(index), now: start, using: &generator)!
            counts[picked, default: 0] += 1
            pool.connected(picked, client: client(index), now: start)
        }
        // The idle backend catches up first, then they share: final open counts 5, 4, 4.
        #expect(counts[all[0]] == nil)
        #expect(counts[all[2]] == 4)
        #expect(counts[all[1]] == 2)
        pool.released(all[0])
        #expect(pool.openConnections[all[0]] == 4)
    }

    @Test mutating func randomSpreadsOverAll() {
        var pool = BackendPool(backends: backends(4), kind: .random)
        var counts: [BackendAddress: Int] = [:]
        for index in 0..<4_000 { counts[pool.pick(client: client(index), now: start, using: &generator)!, default: 0] += 1 }
        #expect(counts.count == 4)
        #expect(counts.values.allSatisfy { (850...1_150).contains($0) }, "\(counts)")
    }

    @Test mutating func maglevIsStableAndSpreads() {
        var pool = BackendPool(backends: backends(10), kind: .maglev)
        var first: [IPAddress: BackendAddress] = [:]
        var counts: [BackendAddress: Int] = [:]
        for index in 0..<10_000 {
            let picked = pool.pick(client: client(index), now: start, using: &generator)!
            first[client(index)] = picked
            counts[picked, default: 0] += 1
        }
        #expect(counts.count == 10)
        #expect(counts.values.allSatisfy { (800...1_200).contains($0) }, "\(counts)")
        // The same client always lands on the same backend.
        for index in 0..<100 { #expect(pool.pick(client: client(index), now: start, using: &generator) == first[client(index)]) }
    }

    @Test mutating func maglevDisruptionIsBoundedWhenOneOfNLeaves() {
        let all = backends(10)
        var before = BackendPool(backends: all, kind: .maglev)
        var after = BackendPool(backends: all.filter { $0.ip != IPAddress("10.244.0.4")! }, kind: .maglev)
        let clients = 20_000
        var moved = 0
        var movedFromSurvivors = 0
        for index in 0..<clients {
            let old = before.pick(client: client(index), now: start, using: &generator)!
            let new = after.pick(client: client(index), now: start, using: &generator)!
            if old != new {
                moved += 1
                if old.ip != IPAddress("10.244.0.4")! { movedFromSurvivors += 1 }
            }
        }
        // About 1/10 must move (the leaving backend's clients); Maglev moves only a few more.
        #expect(Double(moved) / Double(clients) < 0.10 + 0.03, "moved \(moved)")
        #expect(Double(movedFromSurvivors) / Double(clients) < 0.03, "survivors' clients moved: \(movedFromSurvivors)")
        // Round robin, for contrast, has no such property: it is not keyed by client at all.
    }

    @Test mutating func clientIPAffinityHoldsUntilTheTimeoutAfterTheLastConnection() {
        var pool = BackendPool(backends: backends(3), affinity: .clientIP(timeoutSeconds: 10))
        let alice = client(1)
        let first = pool.pick(client: alice, now: start, using: &generator)!
        pool.connected(first, client: alice, now: start)
        // Renewed by each connection: 8 s, 16 s, 24 s after the start, always the same backend.
        for seconds in [8, 16, 24] {
            let now = start + .seconds(seconds)
            let picked = pool.pick(client: alice, now: now, using: &generator)!
            #expect(picked == first)
            pool.connected(picked, client: alice, now: now)
        }
        // 10 s after the last connection (at 24 s) it still holds; just after, it is gone.
        #expect(pool.affinityBackend(for: alice, now: start + .seconds(34)) == first)
        #expect(pool.affinityBackend(for: alice, now: start + .milliseconds(34_001)) == nil)
        // Another client is balanced as usual.
        let bob = pool.pick(client: client(2), now: start, using: &generator)!
        #expect(bob != first || pool.backends.count == 1)
    }

    @Test mutating func affinityToARemovedBackendIsDropped() {
        var pool = BackendPool(backends: backends(3), affinity: .clientIP(timeoutSeconds: 100))
        let alice = client(1)
        let first = pool.pick(client: alice, now: start, using: &generator)!
        pool.connected(first, client: alice, now: start)
        let remaining = backends(3).filter { BackendAddress($0) != first }
        pool.update(backends: remaining, kind: .roundRobin, affinity: .clientIP(timeoutSeconds: 100))
        #expect(pool.affinityBackend(for: alice, now: start) == nil)
        let next = pool.pick(client: alice, now: start, using: &generator)!
        #expect(next != first)
    }

    @Test mutating func removedBackendsGetNoNewConnectionsButStayCountedUntilClosed() {
        var pool = BackendPool(backends: backends(3), kind: .leastConnections)
        let gone = BackendAddress(backends(3)[0])
        pool.connected(gone, client: client(0), now: start)
        pool.update(backends: Array(backends(3).dropFirst()), kind: .leastConnections, affinity: .none)
        for index in 0..<20 { #expect(pool.pick(client: client(index), now: start, using: &generator) != gone) }
        #expect(pool.openConnections[gone] == 1)
        pool.released(gone)
        #expect(pool.openConnections[gone] == nil)
    }

    @Test func annotationPicksTheBalancerAndABadValueNamesTheField() throws {
        let good = """
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: default, annotations: {ferry.io/userspace-balancer: maglev}}
            spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
            """
        let parsed = ManifestReader.read(Data(good.utf8), format: .yaml, source: "svc.yaml")
        #expect(parsed.errors.isEmpty)
        let service = try #require(parsed.objects.first.flatMap { if case .service(let s) = $0.object { s } else { nil } })
        #expect(service.userspaceBalancer == .maglev)
        let bad = ManifestReader.read(
            Data(good.replacingOccurrences(of: "maglev", with: "fastest").utf8), format: .yaml, source: "svc.yaml")
        #expect(
            bad.errors.map(\.description) == [
                "svc.yaml: document 1: Service default/web: metadata.annotations[\"ferry.io/userspace-balancer\"]: unknown balancer \"fastest\": expected round-robin, least-connections, random, maglev"
            ])
    }
}

extension BackendAddress {
    static func all(_ backends: [Backend]) -> [BackendAddress] { backends.map(BackendAddress.init) }
}
