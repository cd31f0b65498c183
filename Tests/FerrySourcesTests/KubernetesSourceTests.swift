import FerryCore
import FerryFakeAPIServer
import FerrySources
import Foundation
import Synchronization
import Testing

/// Objects as the API server stores them (no resourceVersion: the fake server assigns it).
enum Wire {
    static func service(_ name: String, namespace: String = "default", ip: String, port: Int = 80, labels: [String: String] = [:]) -> String {
        let labelText = labels.map { #""\#($0.key)":"\#($0.value)""# }.joined(separator: ",")
        return #"{"kind":"Service","apiVersion":"v1","metadata":{"name":"\#(name)","namespace":"\#(namespace)","labels":{\#(labelText)}},"spec":{"type":"ClusterIP","clusterIP":"\#(ip)","clusterIPs":["\#(ip)"],"ports":[{"name":"http","protocol":"TCP","port":\#(port),"targetPort":8080}]}}"#
    }

    static func slice(_ service: String, namespace: String = "default", suffix: String = "abcde", addresses: [String], zoneHints: String? = nil) -> String {
        let endpoints = addresses.map { address in
            let hints = zoneHints.map { #","hints":{"forZones":[{"name":"\#($0)"}]}"# } ?? ""
            return #"{"addresses":["\#(address)"],"conditions":{"ready":true,"serving":true,"terminating":false},"nodeName":"node-1","zone":"zone-a"\#(hints)}"#
        }
        return #"{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{"name":"\#(service)-\#(suffix)","namespace":"\#(namespace)","labels":{"kubernetes.io/service-name":"\#(service)"}},"addressType":"IPv4","endpoints":[\#(endpoints.joined(separator: ","))],"ports":[{"name":"http","protocol":"TCP","port":8080}]}"#
    }

    static func node(_ name: String, zone: String, address: String) -> String {
        #"{"kind":"Node","apiVersion":"v1","metadata":{"name":"\#(name)","labels":{"topology.kubernetes.io/zone":"\#(zone)"}},"status":{"addresses":[{"type":"InternalIP","address":"\#(address)"}]}}"#
    }
}

/// A fake API server with TLS and a token, and a client for it; both torn down by `close()`.
final class APIFixture: @unchecked Sendable {
    let folder: String
    let tls: FakeTLS
    let server: FakeAPIServer
    let token = "secret-\(UUID().uuidString.prefix(8))"

    init(chunking: FakeChunking = .split) throws {
        folder = NSTemporaryDirectory() + "ferry-api-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        tls = try FakeCertificates.generate(in: folder)
        server = FakeAPIServer(tls: tls, token: token)
        server.chunking = chunking
        _ = try server.start()
    }

    var caPEM: [UInt8] { Array(FileManager.default.contents(atPath: tls.caPEMPath)!) }

    func access(token: String? = nil, tokenFile: String? = nil) -> ClusterAccess {
        ClusterAccess(
            server: server.url, certificateAuthorityPEM: caPEM, token: tokenFile == nil ? (token ?? self.token) : nil, tokenFile: tokenFile,
            origin: "test")
    }

    func source(access: ClusterAccess? = nil, pageSize: Int = 500, timeouts: KubeAPITimeouts = .tests) throws -> KubernetesSource {
        let client = try KubeAPIClient(access: access ?? self.access(), timeouts: timeouts)
        return KubernetesSource(
            client: client, resources: WatchedResource.proxyResources(nodeName: "node-1"), pageSize: pageSize,
            retry: Backoff(initial: .milliseconds(50), maximum: .milliseconds(400)))
    }

    func close() {
        server.stop()
        try? FileManager.default.removeItem(atPath: folder)
    }
}

extension KubeAPITimeouts {
    /// Generous: the whole suite runs in parallel with root tests that block the cooperative pool's two
    /// threads for seconds at a time, so a list here may wait long for its task to be scheduled.
    static let tests = KubeAPITimeouts(connect: .seconds(10), list: .seconds(30), watch: .seconds(5), watchGrace: .seconds(10))
    /// For the test of a stalled list, which must be abandoned soon.
    static let stalls = KubeAPITimeouts(connect: .seconds(2), list: .seconds(2), watch: .seconds(5), watchGrace: .seconds(2))
}

/// Collects a source's events on a task; `until` waits for a condition on what has arrived.
final class EventRecorder: Sendable {
    private let events = Mutex<[SourceEvent]>([])
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)

    init(_ source: ObjectSource) {
        let stream = source.events()
        let task = Task { [weak self] in
            for await event in stream { self?.record(event) }
        }
        self.task.withLock { $0 = task }
    }

    private func record(_ event: SourceEvent) { events.withLock { $0.append(event) } }

    var all: [SourceEvent] { events.withLock { $0 } }

    var changes: [ObjectChange] {
        all.flatMap { event -> [ObjectChange] in
            if case .changes(let changes) = event { return changes }
            return []
        }
    }

    var problems: [ManifestError] {
        all.flatMap { event -> [ManifestError] in
            if case .problems(let problems) = event { return problems }
            return []
        }
    }

    var synced: Bool { all.contains { if case .initialSyncDone = $0 { return true } else { return false } } }

    /// Changes after the initial sync.
    var changesAfterSync: [ObjectChange] {
        var seen = false
        var result: [ObjectChange] = []
        for event in all {
            switch event {
            case .initialSyncDone: seen = true
            case .changes(let changes) where seen: result += changes
            default: break
            }
        }
        return result
    }

    /// Waits up to `seconds` for `condition`; false when it never held.
    @discardableResult
    /// (The limit is generous for the same reason as `KubeAPITimeouts.tests`; a condition that holds
    /// returns at once.)
    func until(seconds: Double = 60, _ condition: (EventRecorder) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            if condition(self) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition(self)
    }

    func stop() { task.withLock { $0?.cancel() } }
}

/// The objects in force after applying `changes` in order.
func state(_ changes: [ObjectChange]) -> [ObjectKey: KubeObject] {
    var objects: [ObjectKey: KubeObject] = [:]
    for change in changes {
        switch change {
        case .upsert(let object): objects[object.key] = object
        case .delete(let key): objects.removeValue(forKey: key)
        }
    }
    return objects
}

@Suite("KubernetesSource", .serialized)
struct KubernetesSourceTests {
    static func seed(_ server: FakeAPIServer, services: Int = 3) {
        for index in 0..<services {
            server.upsert(.services, Wire.service("svc-\(index)", ip: "10.96.0.\(index + 10)"))
            server.upsert(.endpointSlices, Wire.slice("svc-\(index)", addresses: ["10.244.0.\(index + 10)"]))
        }
        server.upsert(.nodes, Wire.node("node-1", zone: "zone-a", address: "192.0.2.1"))
        server.upsert(.nodes, Wire.node("node-2", zone: "zone-b", address: "192.0.2.2"))
    }

    @Test func initialSyncListsEverythingPagedWithTheSelectors() async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        Self.seed(fixture.server, services: 5)
        // Excluded by kube-proxy's selector: another proxy's, and headless ones.
        fixture.server.upsert(.services, Wire.service("other", ip: "10.96.1.1", labels: ["service.kubernetes.io/service-proxy-name": "x"]))
        fixture.server.upsert(.endpointSlices, Wire.slice("other", addresses: ["10.244.1.1"]).replacingOccurrences(of: #""labels":{"#, with: #""labels":{"service.kubernetes.io/service-proxy-name":"x","#))
        let recorder = EventRecorder(try fixture.source(pageSize: 2))
        defer { recorder.stop() }
        #expect(await recorder.until { $0.synced })
        let objects = state(recorder.changes)
        #expect(objects.keys.filter { $0.kind == .service }.count == 5)
        #expect(objects.keys.filter { $0.kind == .endpointSlice }.count == 5)
        // Only this node's Node.
        #expect(objects.keys.filter { $0.kind == .node }.map(\.name) == ["node-1"])
        let requests = fixture.server.requests
        #expect(requests.contains { $0.contains("/api/v1/services?") && $0.contains("continue=") })
        #expect(requests.contains { $0.contains("labelSelector=%21service.kubernetes.io%2Fservice-proxy-name%2C%21service.kubernetes.io%2Fheadless") })
        #expect(requests.contains { $0.contains("/api/v1/nodes?fieldSelector=metadata.name%3Dnode-1") })
        #expect(recorder.problems.isEmpty)
        // Kept-alive connections: one per resource listed at once, reused by the watches.
        #expect(await recorder.until { _ in fixture.server.activeWatches == 3 })
        #expect(fixture.server.connectionsAccepted <= 3, "\(fixture.server.connectionsAccepted) connections")
    }

    @Test func everyEventKindOfEveryResource() async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        Self.seed(fixture.server)
        let recorder = EventRecorder(try fixture.source())
        defer { recorder.stop() }
        #expect(await recorder.until { $0.synced })
        // Watches open, then: add, modify, delete of each kind.
        #expect(await recorder.until { _ in fixture.server.activeWatches == 3 })
        fixture.server.upsert(.services, Wire.service("new", ip: "10.96.0.99"))
        fixture.server.upsert(.endpointSlices, Wire.slice("new", addresses: ["10.244.0.99"]))
        fixture.server.upsert(.services, Wire.service("svc-0", ip: "10.96.0.10", port: 81))
        fixture.server.upsert(.endpointSlices, Wire.slice("svc-1", addresses: ["10.244.0.11", "10.244.0.12"]))
        fixture.server.upsert(.nodes, Wire.node("node-1", zone: "zone-c", address: "192.0.2.1"))
        fixture.server.upsert(.nodes, Wire.node("node-2", zone: "zone-c", address: "192.0.2.2"))
        fixture.server.delete(.services, namespace: "default", name: "svc-2")
        fixture.server.delete(.endpointSlices, namespace: "default", name: "svc-2-abcde")
        #expect(await recorder.until { $0.changesAfterSync.count == 7 })
        let after = recorder.changesAfterSync
        #expect(after.count == 7)  // node-2 is not this node's: not watched
        let objects = state(recorder.changes)
        guard case .service(let modified)? = objects[ObjectKey(kind: .service, namespace: "default", name: "svc-0")] else {
            Issue.record("svc-0 missing")
            return
        }
        #expect(modified.ports.first?.port == 81)
        guard case .node(let node)? = objects[ObjectKey(kind: .node, namespace: "", name: "node-1")] else {
            Issue.record("node missing")
            return
        }
        #expect(node.zone == "zone-c")
        #expect(objects[ObjectKey(kind: .service, namespace: "default", name: "svc-2")] == nil)
        #expect(objects[ObjectKey(kind: .endpointSlice, namespace: "default", name: "svc-2-abcde")] == nil)
        #expect(objects[ObjectKey(kind: .endpointSlice, namespace: "default", name: "new-abcde")] != nil)
    }

    @Test(arguments: [false, true]) func relistAfter410EmitsOnlyTheRealDifferences(httpStatus: Bool) async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        fixture.server.compactionAnswersWithHTTPStatus = httpStatus
        Self.seed(fixture.server)
        let source = try fixture.source()
        let recorder = EventRecorder(source)
        defer { recorder.stop() }
        #expect(await recorder.until { $0.synced })
        #expect(await recorder.until { _ in fixture.server.activeWatches == 3 })
        // The watches are told their history is gone; meanwhile one service changed and one went away
        // in events they never saw.
        fixture.server.compact()
        fixture.server.load(.services, [])  // (no-op: keeps the state)
        fixture.server.upsert(.services, Wire.service("svc-0", ip: "10.96.0.10", port: 82))
        fixture.server.delete(.services, namespace: "default", name: "svc-1")
        fixture.server.compact()
        #expect(await recorder.until { state($0.changes)[ObjectKey(kind: .service, namespace: "default", name: "svc-1")] == nil })
        try await Task.sleep(for: .milliseconds(300))
        let after = recorder.changesAfterSync
        // Exactly the two differences: no delete-all/add-all.
        #expect(after.count == 2, "\(after.map(\.key))")
        #expect(Set(after.map(\.key)) == [ObjectKey(kind: .service, namespace: "default", name: "svc-0"), ObjectKey(kind: .service, namespace: "default", name: "svc-1")])
        #expect(source.counters.relists.load(ordering: .relaxed) >= 1)
        #expect(source.counters.lists.load(ordering: .relaxed) >= 4, "3 first lists and at least one relist")
    }

    @Test(arguments: [FakeChunking.split, .coalesced, .whole])
    func resumesAfterACutWithoutLosingOrRepeatingAnEvent(chunking: FakeChunking) async throws {
        let fixture = try APIFixture(chunking: chunking)
        defer { fixture.close() }
        Self.seed(fixture.server)
        let recorder = EventRecorder(try fixture.source())
        defer { recorder.stop() }
        #expect(await recorder.until { $0.synced })
        #expect(await recorder.until { _ in fixture.server.activeWatches == 3 })
        for round in 0..<3 {
            fixture.server.upsert(.services, Wire.service("svc-0", ip: "10.96.0.10", port: 100 + round))
            fixture.server.cutWatches(midEvent: round % 2 == 0)
            fixture.server.upsert(.services, Wire.service("cut-\(round)", ip: "10.96.2.\(round + 1)"))
            #expect(await recorder.until { _ in fixture.server.activeWatches == 3 })
        }
        fixture.server.sendBookmarks()
        #expect(await recorder.until { $0.changesAfterSync.count >= 6 })
        try await Task.sleep(for: .milliseconds(300))
        let after = recorder.changesAfterSync
        #expect(after.count == 6, "\(after.map(\.key))")
        guard case .service(let last)? = state(recorder.changes)[ObjectKey(kind: .service, namespace: "default", name: "svc-0")] else {
            Issue.record("svc-0 missing")
            return
        }
        #expect(last.ports.first?.port == 102)
        // The watches resumed from where they were: no relist.
        let lists = fixture.server.requests.filter { $0.hasPrefix("GET /api/v1/services?") && !$0.contains("watch=") }
        #expect(lists.count == 1)
    }

    @Test func anExpiredContinueTokenStartsTheListOver() async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        Self.seed(fixture.server, services: 5)
        // The second page's token has expired (the server compacted between pages): the list restarts.
        fixture.server.failNext(1, status: 410, pathPrefix: "/api/v1/services?limit=2&continue=")
        let client = try KubeAPIClient(access: fixture.access(), timeouts: .tests)
        let source = KubernetesSource(client: client, resources: [WatchedResource(path: "/api/v1/services")], pageSize: 2)
        let listed = try await source.listOnce()
        #expect(listed.objects.count == 5)
        let pages = fixture.server.requests.filter { $0.hasPrefix("GET /api/v1/services?") }
        #expect(pages.count == 5, "\(pages)")  // a first page, an expired second, then three pages again
    }

    @Test func aRejectedTokenIsRetriedUntilTheServerAcceptsIt() async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        Self.seed(fixture.server)
        let recorder = EventRecorder(try fixture.source(access: fixture.access(token: "next")))
        defer { recorder.stop() }
        try await Task.sleep(for: .milliseconds(500))
        #expect(!recorder.synced)
        let refused = fixture.server.requests.count
        #expect(refused >= 3, "retried: \(fixture.server.requests)")
        fixture.server.setToken("next")
        #expect(await recorder.until { $0.synced })
    }

    @Test func wrongTokenNamesTheServerAnd401() async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        let source = try fixture.source(access: fixture.access(token: "wrong"))
        await #expect {
            _ = try await source.listOnce()
        } throws: { error in
            let text = "\(error)"
            return text.contains(fixture.server.url) && text.contains("401 Unauthorized")
        }
    }

    @Test func wrongCertificateAuthorityIsATLSError() async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        let other = try APIFixture()
        defer { other.close() }
        var access = fixture.access()
        access.certificateAuthorityPEM = other.caPEM
        let source = try fixture.source(access: access)
        await #expect {
            _ = try await source.listOnce()
        } throws: { error in
            "\(error)".contains("TLS failed")
        }
    }

    @Test func retriesServerErrorsAndHonoursRetryAfter() async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        Self.seed(fixture.server)
        fixture.server.failNext(2, status: 500, pathPrefix: "/api/v1/services")
        fixture.server.failNext(1, status: 429, retryAfterSeconds: 1, pathPrefix: "/api/v1/nodes")
        let start = ContinuousClock.now
        let recorder = EventRecorder(try fixture.source())
        defer { recorder.stop() }
        #expect(await recorder.until { $0.synced })
        #expect(ContinuousClock.now - start >= .seconds(1))
        #expect(state(recorder.changes).count == 7)
    }

    @Test func aStalledListIsAbandonedAndRetried() async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        Self.seed(fixture.server)
        fixture.server.stallNext(1, pathPrefix: "/apis/discovery.k8s.io/v1/endpointslices")
        let recorder = EventRecorder(try fixture.source(timeouts: .stalls))
        defer { recorder.stop() }
        // The list timeout is 2 s: the second attempt succeeds.
        #expect(await recorder.until { $0.synced })
        #expect(state(recorder.changes).count == 7)
    }

    @Test func rotatedTokenFileIsReadAgain() async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        Self.seed(fixture.server)
        let tokenFile = fixture.folder + "/token"
        try fixture.token.write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let recorder = EventRecorder(try fixture.source(access: fixture.access(tokenFile: tokenFile)))
        defer { recorder.stop() }
        #expect(await recorder.until { $0.synced })
        #expect(await recorder.until { _ in fixture.server.activeWatches == 3 })
        // The token rotates: the server accepts only the new one, the kubelet rewrites the file.
        fixture.server.setToken("rotated")
        try "rotated\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        fixture.server.cutWatches(midEvent: false)
        fixture.server.upsert(.services, Wire.service("after-rotation", ip: "10.96.3.1"))
        #expect(await recorder.until { state($0.changes)[ObjectKey(kind: .service, namespace: "default", name: "after-rotation")] != nil })
    }

    @Test func badObjectsAreReportedAndTheLastGoodVersionStays() async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        Self.seed(fixture.server)
        // A slice for a service that does not exist flows like any other.
        fixture.server.upsert(.endpointSlices, Wire.slice("ghost", addresses: ["10.244.9.9"]))
        let recorder = EventRecorder(try fixture.source())
        defer { recorder.stop() }
        #expect(await recorder.until { $0.synced })
        #expect(state(recorder.changes)[ObjectKey(kind: .endpointSlice, namespace: "default", name: "ghost-abcde")] != nil)
        #expect(await recorder.until { _ in fixture.server.activeWatches == 3 })
        fixture.server.upsert(.endpointSlices, Wire.slice("svc-0", addresses: ["10.244.0.300"]))
        #expect(await recorder.until { !$0.problems.isEmpty })
        let problem = try #require(recorder.problems.first)
        #expect(problem.object == "EndpointSlice default/svc-0-abcde")
        #expect(problem.field == "endpoints[0].addresses[0]")
        // The last good slice stays in force.
        guard case .endpointSlice(let slice)? = state(recorder.changes)[ObjectKey(kind: .endpointSlice, namespace: "default", name: "svc-0-abcde")] else {
            Issue.record("slice gone")
            return
        }
        #expect(slice.endpoints.first?.addresses.first?.description == "10.244.0.10")
        // And a relist keeps it too.
        fixture.server.compact()
        fixture.server.upsert(.services, Wire.service("later", ip: "10.96.4.1"))
        #expect(await recorder.until { state($0.changes)[ObjectKey(kind: .service, namespace: "default", name: "later")] != nil })
        #expect(state(recorder.changes)[ObjectKey(kind: .endpointSlice, namespace: "default", name: "svc-0-abcde")] != nil)
    }

    @Test func aNodeLabelChangeMovesTopology() async throws {
        let fixture = try APIFixture()
        defer { fixture.close() }
        fixture.server.upsert(.services, Wire.service("web", ip: "10.96.0.10"))
        fixture.server.upsert(.endpointSlices, Wire.slice("web", addresses: ["10.244.0.1"], zoneHints: "zone-a"))
        fixture.server.upsert(.nodes, Wire.node("node-1", zone: "zone-a", address: "192.0.2.1"))
        let recorder = EventRecorder(try fixture.source())
        defer { recorder.stop() }
        #expect(await recorder.until { $0.synced })
        var tracker = ChangeTracker(node: NodeContext(name: "node-1"))
        for change in recorder.changes { tracker.apply(change) }
        _ = tracker.sync()
        #expect(tracker.node.zone == "zone-a")
        #expect(tracker.node.addresses.map(\.description) == ["192.0.2.1"])
        #expect(await recorder.until { _ in fixture.server.activeWatches == 3 })
        let before = recorder.changes.count
        fixture.server.upsert(.nodes, Wire.node("node-1", zone: "zone-b", address: "192.0.2.7"))
        #expect(await recorder.until { $0.changes.count > before })
        for change in recorder.changes.dropFirst(before) { tracker.apply(change) }
        _ = tracker.sync()
        #expect(tracker.node.zone == "zone-b")
        #expect(tracker.node.addresses.map(\.description) == ["192.0.2.7"])
    }
}
