import FerryCore
import FerryFakeAPIServer
import FerryProxy
import FerryTestbed
import Foundation
import Synchronization

/// `ferry bench api`'s harness: Ferry on a fake API server holding a cluster's worth of objects, in a
/// network namespace of the run's own. Start-up to initial sync and to the first sync programmed,
/// memory, and network programming latency under a steady stream of endpoint changes, for each data
/// plane and minimum sync period. Needs root.
public struct APIBenchmark: Sendable {
    /// Services (each with one EndpointSlice).
    public var services: Int
    /// Endpoints per EndpointSlice.
    public var endpoints: Int
    /// EndpointSlice changes per second during the churn.
    public var rate: Int
    /// Seconds of churn.
    public var seconds: Int
    /// Data planes to run (`nftables`, `userspace`).
    public var modes: [String]
    /// Values of `--min-sync-period` to run with (seconds).
    public var minSyncPeriods: [Double]
    /// Where each run's Ferry log is kept, if anywhere.
    public var logs: String?
    /// The ferry executable to run.
    public var ferryPath: String
    /// Told what is being measured, as it starts.
    public var progress: @Sendable (String) -> Void

    public init(
        services: Int, endpoints: Int, rate: Int, seconds: Int, modes: [String], minSyncPeriods: [Double], logs: String?,
        ferryPath: String, progress: @escaping @Sendable (String) -> Void
    ) {
        self.services = services
        self.endpoints = endpoints
        self.rate = rate
        self.seconds = seconds
        self.modes = modes
        self.minSyncPeriods = minSyncPeriods
        self.logs = logs
        self.ferryPath = ferryPath
        self.progress = progress
    }

    /// One run's figures.
    public struct Figures: Codable {
        public var mode: String
        public var minSyncPeriod: Double
        public var services: Int
        public var endpoints: Int
        public var initialSyncSeconds: Double
        public var firstSyncSeconds: Double
        public var changesSent: Int
        public var latenciesMeasured: Int
        public var latencyP50: Double
        public var latencyP99: Double
        public var latencyMax: Double
        public var peakResidentMiB: Double
        public var steadyResidentMiB: Double
    }

    /// One run per mode and period, in that order.
    public func run() throws -> [Figures] {
        let folder = NSTemporaryDirectory() + "ferry-bench-api-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let tls = try FakeCertificates.generate(in: folder)
        let cluster = APIBenchCluster(services: services, endpoints: endpoints)
        var results: [Figures] = []
        var round = 0
        for mode in modes {
            for period in minSyncPeriods {
                round += 1
                progress("measuring \(mode), --min-sync-period \(period)…")
                results.append(
                    try measure(mode: mode, period: period, cluster: cluster, tls: tls, ferry: ferryPath, folder: folder, round: round))
            }
        }
        return results
    }

    public func report(_ results: [Figures]) -> String {
        func s(_ value: Double) -> String { value < 1 ? String(format: "%.0f ms", value * 1000) : String(format: "%.2f s", value) }
        var table = TextTable(
            header: ["MODE", "MIN-SYNC", "INITIAL SYNC", "FIRST SYNC", "CHANGES", "MEASURED", "P50", "P99", "MAX", "PEAK RSS", "STEADY RSS"])
        for figures in results {
            table.append([
                figures.mode, "\(figures.minSyncPeriod) s", s(figures.initialSyncSeconds), s(figures.firstSyncSeconds),
                "\(figures.changesSent)", "\(figures.latenciesMeasured)", s(figures.latencyP50), s(figures.latencyP99), s(figures.latencyMax),
                String(format: "%.0f MiB", figures.peakResidentMiB), String(format: "%.0f MiB", figures.steadyResidentMiB),
            ])
        }
        return "ferry bench api: \(services) Services + EndpointSlices x \(endpoints) endpoints; \(rate) slice changes/s for \(seconds) s\n"
            + table.render()
    }

    private func measure(mode: String, period: Double, cluster: APIBenchCluster, tls: FakeTLS, ferry: String, folder: String, round: Int)
        throws -> Figures
    {
        let namespace = "ferry-bench-api-\(getpid())-\(round)"
        _ = try runChild(["ip", "netns", "add", namespace])
        defer { _ = try? runChild(["ip", "netns", "delete", namespace]) }
        _ = try runChild(["ip", "-n", namespace, "link", "set", "lo", "up"])

        let server = FakeAPIServer(tls: tls, token: "bench-token")
        let socket = try Testbed.listeningSocket(inNamespaceNamed: namespace)
        try server.start(boundSocket: socket.descriptor)
        defer { server.stop() }
        server.load(.services, cluster.services)
        server.load(.endpointSlices, (0..<services).map { cluster.slice($0, generation: 0, triggerTime: nil) })
        server.upsert(.nodes, cluster.node)
        let kubeconfig = "\(folder)/kubeconfig-\(round)"
        try server.kubeconfig(token: "bench-token").write(toFile: kubeconfig, atomically: true, encoding: .utf8)

        let child = try LineReadingChild(
            ["ip", "netns", "exec", namespace, ferry, "run", "--mode", mode, "--kubeconfig", kubeconfig, "--node-name", "node-1",
             "--min-sync-period", String(period), "--log-level", "debug"])
        defer {
            child.stop()
            _ = try? runChild(["ip", "netns", "exec", namespace, ferry, "cleanup"])
        }
        guard let initial = child.wait(for: "initial sync done", within: .seconds(120)) else {
            throw BenchFailure("ferry did not finish its initial sync:\n\(child.text.suffix(3000))")
        }
        guard let first = child.wait(for: "] synced", within: .seconds(300)) else {
            throw BenchFailure("ferry did not sync:\n\(child.text.suffix(3000))")
        }
        // Churn: slice changes at a steady rate, each stamped with its trigger time as it is sent.
        let interval = Duration.seconds(1) / rate
        let total = rate * seconds
        let start = ContinuousClock.now
        var random = SystemRandomNumberGenerator()
        for index in 0..<total {
            let due = start + interval * index
            let now = ContinuousClock.now
            if due > now { Thread.sleep(forTimeInterval: (due - now).seconds) }
            let service = Int.random(in: 0..<services, using: &random)
            server.upsert(.endpointSlices, cluster.slice(service, generation: index + 1, triggerTime: Date()))
        }
        // The last changes are programmed within a sync period or so.
        _ = child.wait(within: .seconds(period + 5)) { child in child.latencies.count >= total }
        let latencies = child.latencies.sorted()
        if let logs {
            try? FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
            try? child.text.write(toFile: "\(logs)/ferry-\(mode)-\(period).log", atomically: true, encoding: .utf8)
        }
        let memory = child.memory()
        func percentile(_ fraction: Double) -> Double {
            latencies.isEmpty ? .nan : latencies[min(latencies.count - 1, Int((Double(latencies.count) * fraction).rounded(.up)) - 1)]
        }
        return Figures(
            mode: mode, minSyncPeriod: period, services: services, endpoints: endpoints, initialSyncSeconds: (initial - child.started).seconds,
            firstSyncSeconds: (first - child.started).seconds, changesSent: total, latenciesMeasured: latencies.count,
            latencyP50: percentile(0.5), latencyP99: percentile(0.99), latencyMax: latencies.last ?? .nan,
            peakResidentMiB: memory.peak, steadyResidentMiB: memory.current)
    }
}

/// The objects of the benchmark's cluster, as the API server stores them.
public struct APIBenchCluster: Sendable {
    let count: Int
    let endpoints: Int
    let services: [String]
    let node = #"{"kind":"Node","apiVersion":"v1","metadata":{"name":"node-1","labels":{"topology.kubernetes.io/zone":"zone-a"}},"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.1"}]}}"#

    public init(services count: Int, endpoints: Int) {
        self.count = count
        self.endpoints = endpoints
        let synthetic = SyntheticCluster(services: count, endpointsPerService: endpoints)
        services = (0..<count).map { index in
            #"{"kind":"Service","apiVersion":"v1","metadata":{"name":"svc-\#(index)","namespace":"bench"},"spec":{"type":"ClusterIP","clusterIP":"\#(synthetic.clusterIP(index))","clusterIPs":["\#(synthetic.clusterIP(index))"],"ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":8080}]}}"#
        }
    }

    /// Service `index`'s slice; `generation` moves its first endpoint to another address, so each
    /// change is a real one.
    public func slice(_ index: Int, generation: Int, triggerTime: Date?) -> String {
        let synthetic = SyntheticCluster(services: count, endpointsPerService: endpoints)
        let list = (0..<endpoints).map { endpoint in
            let address =
                endpoint == 0 && generation > 0
                ? "10.\(200 + (generation >> 16) % 50).\((generation >> 8) & 255).\(generation & 255)" : synthetic.podIP(index, endpoint)
            return #"{"addresses":["\#(address)"],"conditions":{"ready":true,"serving":true,"terminating":false},"nodeName":"node-\#(endpoint % 2 + 1)","zone":"zone-a"}"#
        }
        let annotation = triggerTime.map { #","annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"\#(APIBenchCluster.rfc3339Nano($0))"}"# } ?? ""
        return #"{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{"name":"svc-\#(index)-abcde","namespace":"bench","labels":{"kubernetes.io/service-name":"svc-\#(index)"}\#(annotation)},"addressType":"IPv4","endpoints":[\#(list.joined(separator: ","))],"ports":[{"name":"http","protocol":"TCP","port":8080}]}"#
    }

    /// RFC 3339 with nanoseconds, as the endpoints controllers write trigger times (Go's RFC3339Nano).
    public static func rfc3339Nano(_ date: Date) -> String {
        let time = UTCTime(date)
        return "\(time.date)T\(time.clock).\(String(format: "%09d", time.nanoseconds))Z"
    }
}

/// A child process whose output (standard output and error) is read line by line as it comes, each
/// line stamped with when it arrived.
public final class LineReadingChild: @unchecked Sendable {
    public let pid: pid_t
    public let started: ContinuousClock.Instant
    private let lines = Mutex<[(ContinuousClock.Instant, String)]>([])
    private let collected = Mutex<[Double]>([])
    private let reader: Thread
    private let descriptor: Int32

    public init(_ arguments: [String]) throws {
        var pipe: [Int32] = [0, 0]
        guard Glibc.pipe(&pipe) == 0 else { throw BenchFailure("pipe: \(String(cString: strerror(errno)))") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, pipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, pipe[1], 2)
        posix_spawn_file_actions_addclose(&actions, pipe[0])
        let argv: [UnsafeMutablePointer<CChar>?] = (["/usr/bin/env"] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        started = ContinuousClock.now
        let spawned = posix_spawn(&pid, "/usr/bin/env", &actions, nil, argv, environ)
        close(pipe[1])
        guard spawned == 0 else {
            close(pipe[0])
            throw BenchFailure("cannot start \(arguments.joined(separator: " ")): \(String(cString: strerror(spawned)))")
        }
        self.pid = pid
        descriptor = pipe[0]
        let box = ReaderBox()
        reader = Thread { box.child?.readLoop() }
        box.child = self
        reader.start()
    }

    private final class ReaderBox: @unchecked Sendable { weak var child: LineReadingChild? }

    private func readLoop() {
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = read(descriptor, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            let now = ContinuousClock.now
            pending += buffer[0..<count]
            while let newline = pending.firstIndex(of: 0x0a) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                record(line, at: now)
            }
        }
    }

    private func record(_ line: String, at instant: ContinuousClock.Instant) {
        if line.contains("network programming latencies"), let range = line.range(of: "seconds=") {
            let values = line[range.upperBound...].prefix { $0 == "." || $0 == "," || $0.isNumber }.split(separator: ",").compactMap { Double($0) }
            collected.withLock { $0 += values }
            return
        }
        // Only the lines a run waits for are kept: debug lines at 50 changes a second add up.
        lines.withLock { $0.append((instant, line)) }
    }

    public var text: String { lines.withLock { $0.map(\.1).joined(separator: "\n") } }
    public var latencies: [Double] { collected.withLock { $0 } }

    /// When a line containing `needle` arrived, waiting up to `limit`.
    public func wait(for needle: String, within limit: Duration) -> ContinuousClock.Instant? {
        var found: ContinuousClock.Instant?
        _ = wait(within: limit) { child in
            found = child.lines.withLock { $0.first { $0.1.contains(needle) }?.0 }
            return found != nil
        }
        return found
    }

    /// Polls `condition` until it holds or `limit` passes (or the child exits).
    public func wait(within limit: Duration, _ condition: (LineReadingChild) -> Bool) -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if condition(self) { return true }
            if kill(pid, 0) != 0 { return condition(self) }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return condition(self)
    }

    /// Resident memory now and at its peak (MiB), from /proc.
    public func memory() -> (current: Double, peak: Double) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Double {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return .nan }
            return Double(line.split(separator: " ").dropFirst().first ?? "").map { $0 / 1024 } ?? .nan
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    /// SIGTERM, then SIGKILL after 5 s; reaps the child.
    public func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<250 {
            if waitpid(pid, &status, WNOHANG) == pid { close(descriptor); return }
            Thread.sleep(forTimeInterval: 0.02)
        }
        kill(pid, SIGKILL)
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        close(descriptor)
    }
}
