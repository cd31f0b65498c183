import FerryCore
import FerrySystem
import FerryNFTables
import FerryProxy
import FerrySources
import FerryUserspace
import Foundation
import Logging
import Synchronization
import Testing

/// A source the test feeds by hand.
final class ManualSource: ObjectSource, @unchecked Sendable {
    let name = "manual"
    private let continuation = Mutex<AsyncStream<SourceEvent>.Continuation?>(nil)

    func events() -> AsyncStream<SourceEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: SourceEvent.self)
        self.continuation.withLock { $0 = continuation }
        return stream
    }

    func send(_ event: SourceEvent) { _ = continuation.withLock { $0?.yield(event) } }
    var started: Bool { continuation.withLock { $0 != nil } }
}

/// A data plane that records what it was asked to program, and fails on demand.
final class RecordingPlane: DataPlaneDriver, @unchecked Sendable {
    private let state = Mutex<(syncs: [(Date, Int, Bool)], failNext: Int, addresses: [[IPAddress]])>(([], 0, []))

    func sync(_ tables: BackendTables, changed: Set<ServicePortName>, verify: Bool) throws(DataPlaneError) -> DataPlaneOutcome {
        try state.withLock { state throws(DataPlaneError) -> DataPlaneOutcome in
            if state.failNext > 0 {
                state.failNext -= 1
                throw .system(SystemError("sendmsg", EINVAL))
            }
            state.syncs.append((Date(), tables.count, verify))
            return DataPlaneOutcome(quiet: false, fields: [])
        }
    }


    var hasPendingWork: Bool { false }
    func shutdown(grace: Duration) throws {}
    var statistics: [(String, String)] { [] }
    func setNodeAddresses(_ addresses: [IPAddress]) { state.withLock { $0.addresses.append(addresses) } }

    var syncs: [(Date, Int, Bool)] { state.withLock { $0.syncs } }
    var addresses: [[IPAddress]] { state.withLock { $0.addresses } }
    func fail(_ count: Int) { state.withLock { $0.failNext = count } }
}

func service(_ name: String, port: Int = 80) -> KubeObject {
    .service(
        Service(
            meta: ObjectMeta(name: name, namespace: "default"), clusterIPs: [IPAddress("10.96.0.\(name.count)")!],
            ports: [ServicePort(name: "http", protocol: .tcp, port: port, targetPort: .number(8080))]))
}

func eventually(within seconds: Double = 60, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// Log lines kept for a test to read.
final class LogRecords: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}

/// A log handler that keeps the messages (with their metadata) for a test to read.
struct RecordingLogHandler: LogHandler {
    let records: LogRecords
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        records.append("\(event.message) \(fields)")
    }
}

@Suite("Proxy daemon")
struct ProxyDaemonTests {
    /// A service a node proxy ignores is logged once with the reason, and again only when the reason changes.
    @Test func ignoredServicesAreLoggedOncePerReason() async throws {
        let source = ManualSource()
        let plane = RecordingPlane()
        let records = LogRecords()
        let handler = RecordingLogHandler(records: records)
        let daemon = Self.daemon(source, plane, minInterval: .milliseconds(10), logger: Logger(label: "test", factory: { _ in handler }))
        let running = Task { await daemon.run() }
        defer { daemon.stop() }
        #expect(await eventually { source.started })
        var headless = Service(meta: ObjectMeta(name: "quiet", namespace: "default"), isHeadless: true)
        let external = Service(meta: ObjectMeta(name: "elsewhere", namespace: "default"), type: .externalName, externalName: "example.com")
        for _ in 0..<3 { source.send(.changes([.upsert(.service(headless)), .upsert(.service(external))])) }
        headless.type = .externalName
        headless.externalName = "example.org"
        source.send(.changes([.upsert(.service(headless))]))
        source.send(.initialSyncDone(source: "manual"))
        #expect(await eventually { plane.syncs.count == 1 })
        let logged = records.all.filter { $0.hasPrefix("service not proxied") }
        #expect(
            logged == [
                "service not proxied reason=headless service (clusterIP: None) service=default/quiet",
                "service not proxied reason=ExternalName service service=default/elsewhere",
                "service not proxied reason=ExternalName service service=default/quiet",
            ], "\(logged)")
        daemon.stop()
        await running.value
    }

    /// Reaching the API server through a ClusterIP Ferry programs is warned about once, also when the
    /// service holding that address comes after the first sync (the services are looked at again only
    /// when some changed).
    @Test func anAPIServerBehindAClusterIPIsWarnedAboutOnce() async throws {
        let source = ManualSource()
        let plane = RecordingPlane()
        let records = LogRecords()
        let handler = RecordingLogHandler(records: records)
        let daemon = Self.daemon(
            source, plane, minInterval: .milliseconds(10), logger: Logger(label: "test", factory: { _ in handler }),
            apiServerAddress: IPAddress("10.96.0.1")!)
        let running = Task { await daemon.run() }
        defer { daemon.stop() }
        #expect(await eventually { source.started })
        source.send(.changes([.upsert(service("alpha"))]))  // 10.96.0.5
        source.send(.initialSyncDone(source: "manual"))
        #expect(await eventually { plane.syncs.count == 1 })
        let warning = "the API server is reached through a ClusterIP Ferry programs itself"
        #expect(!records.all.contains { $0.hasPrefix(warning) })
        var kubernetes = Service(meta: ObjectMeta(name: "kubernetes", namespace: "default"), clusterIPs: [IPAddress("10.96.0.1")!])
        kubernetes.ports = [ServicePort(name: "https", protocol: .tcp, port: 443, targetPort: .number(6443))]
        source.send(.changes([.upsert(.service(kubernetes))]))
        #expect(await eventually { records.all.contains { $0.hasPrefix(warning) } })
        source.send(.changes([.upsert(service("bravo-two"))]))
        #expect(await eventually { plane.syncs.count >= 3 })
        #expect(records.all.filter { $0.hasPrefix(warning) }.count == 1)
        daemon.stop()
        await running.value
    }

    static func daemon(
        _ source: ManualSource, _ plane: RecordingPlane, minInterval: Duration = .milliseconds(300), logger: Logger = Logger(label: "test"),
        apiServerAddress: IPAddress? = nil
    ) -> ProxyDaemon<ContinuousClock> {
        ProxyDaemon(
            source: source, tracker: ChangeTracker(node: NodeContext(name: "node-1")), plane: plane,
            schedule: SyncSchedule(minInterval: minInterval, maxInterval: .seconds(60), retryInitial: .milliseconds(100)),
            resolver: NodeAddressResolver(flags: [], host: { [IPAddress("192.0.2.9")!] }), clock: ContinuousClock(),
            logger: logger, apiServerAddress: apiServerAddress)
    }

    @Test func nothingIsProgrammedBeforeTheInitialSyncThenBurstsCoalesce() async throws {
        let source = ManualSource()
        let plane = RecordingPlane()
        let daemon = Self.daemon(source, plane)
        let running = Task { await daemon.run() }
        defer { daemon.stop() }
        #expect(await eventually { source.started })
        source.send(.changes([.upsert(service("a"))]))
        try await Task.sleep(for: .milliseconds(200))
        #expect(plane.syncs.isEmpty, "a partial view is never programmed")
        #expect(!daemon.status.isHealthy(now: Date(), limit: 60))
        source.send(.initialSyncDone(source: "manual"))
        #expect(await eventually { plane.syncs.count == 1 })
        #expect(daemon.status.isHealthy(now: Date(), limit: 60))
        // NodePorts on the host's addresses: no flag, no Node object.
        #expect(plane.addresses == [[IPAddress("192.0.2.9")!]])
        // Ten changes within the minimum interval: they coalesce, and no two syncs come closer than the
        // minimum interval. (Usually one more sync; a loaded machine may deliver the ten in two bursts.)
        for index in 0..<10 { source.send(.changes([.upsert(service("svc\(index)"))])) }
        #expect(await eventually { plane.syncs.last?.1 == 11 })
        try await Task.sleep(for: .milliseconds(400))
        let syncs = plane.syncs
        #expect(syncs.count <= 3, "coalesced: \(syncs.map(\.1))")
        #expect(syncs.last?.1 == 11)
        for (earlier, later) in zip(syncs, syncs.dropFirst()) { #expect(later.0.timeIntervalSince(earlier.0) >= 0.29) }
        daemon.stop()
        await running.value
    }

    @Test func aRefusedSyncIsRetriedWithBackOffAndHealthReportsTheWait() async throws {
        let source = ManualSource()
        let plane = RecordingPlane()
        let daemon = Self.daemon(source, plane, minInterval: .zero)
        let running = Task { await daemon.run() }
        #expect(await eventually { source.started })
        plane.fail(3)
        source.send(.changes([.upsert(service("a"))]))
        source.send(.initialSyncDone(source: "manual"))
        // 100, 200, 400 ms of back-off, then success.
        #expect(await eventually { plane.syncs.count == 1 })
        #expect(daemon.status.failures == 3)
        #expect(daemon.status.syncs == 1)
        // A change that waits too long makes the daemon unhealthy; syncing it heals.
        plane.fail(100)
        source.send(.changes([.upsert(service("b"))]))
        #expect(await eventually { !daemon.status.isHealthy(now: Date(), limit: 0.2) })
        plane.fail(0)
        #expect(await eventually { plane.syncs.count == 2 })
        #expect(daemon.status.isHealthy(now: Date(), limit: 0.2))
        daemon.stop()
        await running.value
    }

    @Test func aNodeAddressChangeReachesThePlane() async throws {
        let source = ManualSource()
        let plane = RecordingPlane()
        let daemon = Self.daemon(source, plane, minInterval: .zero)
        let running = Task { await daemon.run() }
        #expect(await eventually { source.started })
        let node = { (address: String) in KubeObject.node(Node(meta: ObjectMeta(name: "node-1"), addresses: [IPAddress(address)!])) }
        source.send(.changes([.upsert(node("192.0.2.1"))]))
        source.send(.initialSyncDone(source: "manual"))
        #expect(await eventually { plane.addresses.count == 1 })
        source.send(.changes([.upsert(node("192.0.2.2"))]))
        #expect(await eventually { plane.addresses.count == 2 })
        #expect(plane.addresses == [[IPAddress("192.0.2.1")!], [IPAddress("192.0.2.2")!]])
        daemon.stop()
        await running.value
    }
}

@Suite("Health probes")
struct HealthProbeTests {
    /// GET through curl: status code and body.
    static func get(_ url: String) throws -> (status: Int, body: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-s", "-o", "-", "-w", "\n%{http_code}", url]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    @Test func healthzFollowsTheStatusInKubeProxysShape() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") else { return }
        let status = Mutex(ProxyStatus())
        let server = try ProbeServer.start(host: "127.0.0.1", port: 0) { path in
            path == "/healthz" ? status.withLock { $0 }.healthAnswer(now: Date(), limit: 60) : ProbeServer.Answer(status: 404, body: "")
        }
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.port)/healthz"
        // Before the first sync: 503.
        var answer = try Self.get(url)
        #expect(answer.status == 503)
        #expect(answer.body.hasPrefix(#"{"lastUpdated": "1970-01-01 00:00:00 +0000 UTC","currentTime": ""#), "\(answer.body)")
        // Synced: 200, kube-proxy's fields.
        status.withLock { $0.lastSynced = Date(timeIntervalSince1970: 1_796_205_600.25) }
        answer = try Self.get(url)
        #expect(answer.status == 200)
        #expect(answer.body.contains(#""lastUpdated": "2026-12-02 10:00:00.25 +0000 UTC""#), "\(answer.body)")
        #expect(answer.body.contains(#""nodeEligible": true"#))
        // A change waiting longer than the limit: 503 again.
        status.withLock { $0.oldestQueued = Date().addingTimeInterval(-61) }
        #expect(try Self.get(url).status == 503)
        #expect(try Self.get("http://127.0.0.1:\(server.port)/other").status == 404)
    }

    @Test func bindAddresses() {
        #expect(ProbeServer.splitAddress("0.0.0.0:10256")! == ("0.0.0.0", 10256))
        #expect(ProbeServer.splitAddress("[::]:10256")! == ("::", 10256))
        #expect(ProbeServer.splitAddress("10256") == nil)
        #expect(ProbeServer.splitAddress("0.0.0.0:70000") == nil)
    }
}

@Suite("Health check node ports")
struct ServiceHealthServerTests {
    static func tables(port: Int, endpointNode: String?) -> BackendTables {
        var text = """
            apiVersion: v1
            kind: Service
            metadata: {name: lb, namespace: shop}
            spec: {type: LoadBalancer, clusterIP: 10.96.0.40, externalTrafficPolicy: Local, healthCheckNodePort: \(port), ports: [{port: 80, nodePort: 30400}]}
            """
        if let endpointNode {
            text += """

                ---
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata: {name: lb-1, namespace: shop, labels: {kubernetes.io/service-name: lb}}
                addressType: IPv4
                endpoints: [{addresses: [10.244.1.9], nodeName: \(endpointNode)}]
                ports: [{port: 8080}]
                """
        }
        let read = ManifestReader.read(Data(text.utf8), format: .yaml, source: "test")
        #expect(read.errors.isEmpty, "\(read.errors)")
        var tracker = ChangeTracker(node: NodeContext(name: "node-1"))
        for object in read.objects { tracker.apply(.upsert(object.object)) }
        return tracker.sync().tables
    }

    @Test func answersAsLocalEndpointsComeAndGo() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") else { return }
        let port = Int.random(in: 40_000..<50_000)
        let servers = ServiceHealthServers(host: "127.0.0.1", logger: Logger(label: "test"))
        defer { servers.stop() }
        servers.update(Self.tables(port: port, endpointNode: "node-1"))
        #expect(servers.ports == [port])
        var answer = try HealthProbeTests.get("http://127.0.0.1:\(port)/")
        #expect(answer.status == 200, "\(answer)")
        #expect(answer.body.contains(#""namespace": "shop""#) && answer.body.contains(#""localEndpoints": 1"#), "\(answer.body)")
        // The only endpoint is elsewhere: this node must not get the load balancer's traffic.
        servers.update(Self.tables(port: port, endpointNode: "node-2"))
        answer = try HealthProbeTests.get("http://127.0.0.1:\(port)/")
        #expect(answer.status == 503 && answer.body.contains(#""localEndpoints": 0"#), "\(answer)")
        // A proxy that is not healthy says so too.
        servers.update(Self.tables(port: port, endpointNode: "node-1"))
        servers.setProxyHealth { false }
        answer = try HealthProbeTests.get("http://127.0.0.1:\(port)/")
        #expect(answer.status == 503 && answer.body.contains(#""serviceProxyHealthy": false"#), "\(answer)")
        // The service goes: so does its server.
        servers.update(BackendTables())
        #expect(servers.ports.isEmpty)
        #expect(try HealthProbeTests.get("http://127.0.0.1:\(port)/").status == 0)
    }
}

@Suite("Daemon on the nftables twin")
struct DaemonOnTheTwinTests {
    /// The real nftables plane against the in-memory kernel: a refused first batch is retried until
    /// applied, a later change follows, and the kernel ends with both services. (The kernel is only
    /// looked at before the daemon starts and after it stops: it is not thread-safe.)
    @Test func programsRetriesAndFollows() async throws {
        let twin = LockedTwin()
        twin.kernel.failNext = NetfilterError(kind: .rejected, message: "refused for the test")
        let source = ManualSource()
        let daemon = ProxyDaemon(
            source: source, tracker: ChangeTracker(node: NodeContext(name: "node-1")),
            plane: NFTablesDriver(NFTablesProxier(netfilter: twin, config: PlannerConfig(nodeAddresses: [IPAddress("192.0.2.1")!]))),
            schedule: SyncSchedule(minInterval: .milliseconds(50), maxInterval: .seconds(60), retryInitial: .milliseconds(50)),
            resolver: NodeAddressResolver(flags: [IPAddress("192.0.2.1")!]), clock: ContinuousClock(), logger: Logger(label: "test"))
        let running = Task { await daemon.run() }
        #expect(await eventually { source.started })
        source.send(.changes([.upsert(service("web"))]))
        source.send(.initialSyncDone(source: "manual"))
        #expect(await eventually { daemon.status.syncs == 1 })
        #expect(daemon.status.failures == 1)
        source.send(.changes([.upsert(service("api", port: 8443))]))
        #expect(await eventually { daemon.status.syncs == 2 })
        daemon.stop()
        await running.value
        let text = Renderer.text(twin.kernel.ruleset)
        #expect(text.contains("10.96.0.3") && text.contains("8443"), "\(text)")
    }
}

/// The in-memory kernel behind a reference the test keeps (used by one thread at a time: set up
/// before the daemon runs, read after it stops).
final class LockedTwin: Netfilter, @unchecked Sendable {
    let kernel = InMemoryNetfilter()
    func apply(_ transaction: Transaction) throws(NetfilterError) { try kernel.apply(transaction) }
    func read(table: String, skippingElementsOf skipped: Set<String>) throws(NetfilterError) -> Ruleset {
        try kernel.read(table: table, skippingElementsOf: skipped)
    }
    func deleteTables(named table: String) throws(NetfilterError) -> [NFTFamily] { try kernel.deleteTables(named: table) }
    func generation() throws(NetfilterError) -> UInt32 { try kernel.generation() }
}
