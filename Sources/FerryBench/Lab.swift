import FerryCore
import FerryTestbed
import Foundation
import Glibc

/// A data-path target of `ferry bench`.
enum DataPathTarget: Hashable, Sendable {
    case direct
    case ferryNFTables
    case kubeProxy
    case ferryUserspace(balancer: String, epoll: String = "level")
    case haproxy(splice: Bool)

    static func all(haproxy: Bool, both: Bool) -> [DataPathTarget] {
        [.direct, .ferryNFTables, .kubeProxy, .ferryUserspace(balancer: "round-robin"), .ferryUserspace(balancer: "round-robin", epoll: "edge")]
            + (haproxy ? (both ? [.haproxy(splice: false), .haproxy(splice: true)] : [.haproxy(splice: true)]) : [])
    }

    var name: String {
        switch self {
        case .direct: "direct (client to pods)"
        case .ferryNFTables: "Ferry nftables"
        case .kubeProxy: "kube-proxy ruleset (nft -f)"
        case .ferryUserspace(let balancer, let epoll):
            (balancer == "round-robin" ? "Ferry userspace" : "Ferry userspace \(balancer)") + (epoll == "level" ? "" : " (\(epoll)-triggered)")
        case .haproxy(let splice): splice ? "HAProxy, splice-auto" : "HAProxy"
        }
    }
}

/// The bench's test bed and what runs in it: pods serving echo (TCP), DNS-like (UDP), iperf3 and, when
/// installed, nginx; each target started and stopped in the node namespace.
/// (Used from the benchmark's thread; the change-to-traffic load runs on a second thread that only reads it.)
final class Lab: @unchecked Sendable {
    let bed: Testbed
    let ferry: String
    let progress: @Sendable (String) -> Void
    let folder: String
    let hasHAProxy: Bool
    let hasHTTP: Bool
    var notes: [String] = []
    /// The direct connection rate measured before and after the data-path runs.
    var directCheck: [Double] = []

    static let haproxyEcho = 31080
    static let haproxyHTTP = 31081
    static let haproxyBulk = 31201

    init(ferry: String, progress: @escaping @Sendable (String) -> Void) throws {
        self.ferry = ferry
        self.progress = progress
        progress("building the topology: client, node, three pods")
        bed = try BenchProcesses.threePodBed()
        folder = NSTemporaryDirectory() + "ferry-bench-\(bed.prefix)"
        hasHAProxy = Testbed.executable(named: "haproxy") != nil
        hasHTTP = Testbed.executable(named: "nginx") != nil && Testbed.executable(named: "wrk") != nil
        Lab.register(self)
        do {
            try setUp()
        } catch {
            teardown()
            throw error
        }
    }

    /// The lab being used, for `interrupted()`.
    nonisolated(unsafe) private static var active: Lab?
    private static let activeLock = NSLock()

    private static func register(_ lab: Lab?) { activeLock.withLock { active = lab } }

    /// Tears down the lab in use, if any (from a SIGINT or SIGTERM handler: nothing is left behind).
    static func interrupted() {
        activeLock.withLock { active }?.teardown()
    }

    private func setUp() throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        // Why no TIME_WAIT socket is kept anywhere: a first try measured 9-10k connections/s through the
        // first target and 1-4k through every later one. The pods held TIME_WAIT sockets of the earlier
        // targets' connections; a later SYN on the same addresses and ports, with another timestamp
        // offset (Linux derives it from the address pair, which NAT changes), fails PAWS, is answered
        // with an ACK, reset, and retried by the client a second later.
        for namespace in [bed.client, bed.node] + bed.pods.map(\.namespace) {
            _ = try bed.run(
                in: namespace,
                ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.tcp_max_tw_buckets=0"])
        }
        _ = try bed.run(in: bed.node, ["sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=30000-32767"])
        // Many clients for the balancers that hash the client's address: more addresses on the client.
        let batch = "\(folder)/client-addresses.ip"
        try clientSources.map { "addr add \($0)/32 dev eth0" }.joined(separator: "\n").write(toFile: batch, atomically: true, encoding: .utf8)
        let added = try bed.run(in: bed.client, ["ip", "-batch", batch])
        guard added.status == 0 else { throw BenchFailure("adding the client's addresses failed: \(added.stderr.suffix(500))") }
        try bed.startPodServers(ferryPath: ferry, tcp: [LoadBalancingBench.echoPort], udp: [LoadBalancingBench.dnsPort])
        for (index, pod) in bed.pods.enumerated() {
            try bed.spawn(in: pod.namespace, ["iperf3", "-s", "-p", String(LoadBalancingBench.bulkPort)], logName: "iperf3-\(pod.name)")
            let delay = index == 2 ? ["--delay-ms", "5"] : []
            try bed.spawn(
                in: pod.namespace, [ferry, "debug", "serve", "--name", pod.name, "--tcp", String(LoadBalancingBench.slowPort)] + delay,
                logName: "slow-\(pod.name)")
            if hasHTTP {
                let config = "\(folder)/nginx-\(pod.name).conf"
                try nginxConfig(pod).write(toFile: config, atomically: true, encoding: .utf8)
                try bed.spawn(in: pod.namespace, ["nginx", "-c", config, "-p", folder], logName: "nginx-\(pod.name)")
            }
        }
        if !hasHTTP { notes.append("HTTP figures missing: install nginx-light and wrk (`make bench` does).") }
        if !hasHAProxy { notes.append("HAProxy figures missing: install haproxy (`make bench` does).") }
        try writeManifests(without: nil)
        usleep(300_000)
    }

    func teardown() {
        Lab.register(nil)
        bed.teardown()
        try? FileManager.default.removeItem(atPath: folder)
    }

    var manifestFolder: String { "\(folder)/manifests" }

    func writeManifests(without removed: String?) throws {
        try FileManager.default.createDirectory(atPath: manifestFolder, withIntermediateDirectories: true)
        // Written beside the watched folder and renamed in: the watcher sees one whole file.
        let staging = "\(folder)/services.yaml.new"
        try LoadBalancingBench.manifests(pods: bed.pods.map { ($0.name, $0.ip, $0.node) }, without: removed).write(toFile: staging, atomically: false, encoding: .utf8)
        if rename(staging, "\(manifestFolder)/services.yaml") != 0 { throw BenchFailure("rename: \(String(cString: strerror(errno)))") }
    }

    /// The client's extra addresses, one client each for the hashing balancer's spread.
    let clientSources = (10..<250).map { "10.0.0.\($0)" }

    var directEcho: [String] { bed.pods.map { "\($0.ip):\(LoadBalancingBench.echoPort)" } }

    // MARK: Targets

    /// Starts `target` in the node namespace, runs `body`, stops the target and leaves nothing behind.
    func with<T>(_ target: DataPathTarget, _ body: () throws -> T) throws -> T {
        let node = nodeArguments + ["--healthz-bind-address", "", "--metrics-bind-address", ""]
        switch target {
        case .direct:
            return try body()
        case .ferryNFTables:
            let proxy = try bed.spawn(in: bed.node, [ferry, "run", "--mode", "nftables", "--min-sync-period", "0"] + node, logName: "ferry-nft")
            defer {
                BenchProcesses.stop(proxy)
                _ = try? bed.run(in: bed.node, [ferry, "cleanup"])
            }
            try BenchProcesses.waitFor(bed, log: "ferry-nft", text: "synced")
            return try body()
        case .kubeProxy:
            let file = "\(folder)/kube-proxy.nft"
            try KubeProxyShape.render(try tables(), clusterCIDR: CIDR(LoadBalancingBench.clusterCIDR)!)
                .write(toFile: file, atomically: true, encoding: .utf8)
            let loaded = try bed.run(in: bed.node, ["nft", "-f", file])
            guard loaded.status == 0 else { throw BenchFailure("nft -f of kube-proxy's ruleset failed: \(loaded.stderr.suffix(1_000))") }
            defer {
                _ = try? bed.run(in: bed.node, ["nft", "delete", "table", "ip", "kube-proxy"])
            }
            return try body()
        case .ferryUserspace(let balancer, let epoll):
            let proxy = try bed.spawn(
                in: bed.node,
                [
                    ferry, "run", "--mode", "userspace", "--min-sync-period", "0", "--userspace-workers", "2", "--userspace-balancer", balancer,
                    "--userspace-epoll", epoll,
                ] + node, logName: "ferry-userspace")
            defer { BenchProcesses.stop(proxy) }
            try BenchProcesses.waitFor(bed, log: "ferry-userspace", text: "synced")
            return try body()
        case .haproxy(let splice):
            let config = "\(folder)/haproxy.cfg"
            try haproxyConfig(splice: splice).write(toFile: config, atomically: true, encoding: .utf8)
            let proxy = try bed.spawn(in: bed.node, ["haproxy", "-db", "-f", config], logName: "haproxy")
            defer { BenchProcesses.stop(proxy) }
            usleep(500_000)
            guard proxy.isRunning else { throw BenchFailure("haproxy did not start: \(bed.log("haproxy").stderr.suffix(1_000))") }
            return try body()
        }
    }

    /// What Ferry is told of the node and where the manifests are, in `run` and `sync` alike.
    private var nodeArguments: [String] {
        ["--manifests", manifestFolder, "--node-name", "node-1", "--node-ip", Testbed.nodeAddress, "--cluster-cidr", LoadBalancingBench.clusterCIDR]
    }

    /// For one slice of a paired measurement: programs a kernel target's rules, runs `body`, removes
    /// them. Ferry's with `ferry sync` (the daemon's sync run once: the same rules, in about 50 ms
    /// where starting the daemon takes a second), kube-proxy's with `nft -f`.
    func withRules<T>(_ target: DataPathTarget, _ body: () throws -> T) throws -> T {
        guard target == .ferryNFTables else { return try with(target, body) }
        let synced = try bed.run(in: bed.node, [ferry, "sync"] + nodeArguments)
        guard synced.status == 0 else { throw BenchFailure("ferry sync failed: \(synced.stderr.suffix(1_000))") }
        defer { _ = try? bed.run(in: bed.node, [ferry, "cleanup"]) }
        return try body()
    }

    /// The backend tables of the bench's manifests, as Ferry computes them (for kube-proxy's ruleset).
    func tables() throws -> BackendTables {
        let read = ManifestReader.read(fileAt: "\(manifestFolder)/services.yaml")
        guard read.errors.isEmpty else { throw BenchFailure("the bench's manifests: \(read.errors)") }
        var tracker = ChangeTracker(node: NodeContext(name: "node-1", addresses: [IPAddress(Testbed.nodeAddress)!]))
        for object in read.objects { tracker.apply(.upsert(object.object)) }
        return tracker.sync().tables
    }

    // MARK: Measuring

    /// Every figure of `target`, one after the other, `seconds` each.
    func measure(_ target: DataPathTarget, seconds: Double, concurrency: Int) throws -> DataPathFigures {
        var sample = DataPathSample()
        for figure in figures(of: target) {
            try measure(figure, of: target, seconds: seconds, concurrency: concurrency, into: &sample)
        }
        return sample.figures(target: target.name)
    }

    /// The figures `target` can give here (HTTP needs nginx and wrk; HAProxy relays no UDP).
    func figures(of target: DataPathTarget) -> [DataPathFigure] {
        DataPathFigure.allCases.filter { figure in
            switch figure {
            case .http: hasHTTP
            case .udp: addresses(of: target).udp != nil
            default: true
            }
        }
    }

    /// Where the client sends each kind of traffic for `target`.
    private func addresses(of target: DataPathTarget) -> (bulk: String, echo: [String], http: [String], udp: [String]?) {
        let service = LoadBalancingBench.serviceIP
        switch target {
        case .direct:
            return (
                "\(bed.pods[0].ip):\(LoadBalancingBench.bulkPort)", directEcho, bed.pods.map { "\($0.ip):\(LoadBalancingBench.httpPort)" },
                bed.pods.map { "\($0.ip):\(LoadBalancingBench.dnsPort)" }
            )
        case .haproxy:
            return (
                "\(Testbed.nodeAddress):\(Lab.haproxyBulk)", ["\(Testbed.nodeAddress):\(Lab.haproxyEcho)"],
                ["\(Testbed.nodeAddress):\(Lab.haproxyHTTP)"], nil
            )
        default:
            return (
                "\(LoadBalancingBench.bulkIP):\(LoadBalancingBench.bulkPort)", ["\(service):\(LoadBalancingBench.echoPort)"],
                ["\(service):\(LoadBalancingBench.httpPort)"], ["\(service):\(LoadBalancingBench.dnsPort)"]
            )
        }
    }

    /// Measures one figure of `target` for `seconds` and adds it to `sample`.
    func measure(_ figure: DataPathFigure, of target: DataPathTarget, seconds: Double, concurrency: Int, into sample: inout DataPathSample)
        throws
    {
        let to = addresses(of: target)
        var cpu = MachineCPU()
        switch figure {
        case .oneStream, .fourStreams:
            let streams = figure == .oneStream ? 1 : 4
            let result = try iperf(to: to.bulk, streams: streams, seconds: seconds)
            sample.addBulk(streams: streams, bitsPerSecond: result.bitsPerSecond, bytes: result.bytes, cpu: cpu.lap())
        case .connections:
            let report = try connectionRate(to: to.echo, seconds: seconds, concurrency: concurrency)
            sample.addConnections(report, cpu: cpu.lap())
        case .http:
            let result = try wrk(to.http[0], seconds: seconds, concurrency: concurrency)
            sample.http.append(result)
        case .udp:
            guard let udp = to.udp else { return }
            sample.udp.append(try load(["--udp", "--seconds", String(seconds), "--concurrency", "16"], to: udp))
        }
    }

    func connectionRate(to targets: [String], seconds: Double, concurrency: Int) throws -> LoadReport {
        try load(["--seconds", String(seconds), "--concurrency", String(concurrency)], to: targets)
    }

    /// `count` connections (at most 60 s), `concurrency` in flight; from each of `sources` in turn.
    func connections(to targets: [String], count: Int, concurrency: Int, from sources: [String] = []) throws -> LoadReport {
        try load(
            ["--seconds", "60", "--max-connections", String(count), "--concurrency", String(concurrency)] + sources.flatMap { ["--from", $0] },
            to: targets)
    }

    func load(_ arguments: [String], to targets: [String], timeline: String? = nil) throws -> LoadReport {
        let command = [ferry, "debug", "load"] + arguments + targets.flatMap { ["--to", $0] } + (timeline.map { ["--timeline", $0] } ?? [])
        let result = try bed.run(in: bed.client, command, timeout: .seconds(120))
        guard let line = result.stdout.split(separator: "\n").last,
            let report = try? JSONDecoder().decode(LoadReport.self, from: Data(line.utf8))
        else { throw BenchFailure("ferry debug load gave no report: \(result)") }
        return report
    }

    /// iperf3's received rate and bytes; one retry after a second (an iperf3 server answers "busy" while
    /// it still finishes the previous test).
    func iperf(to target: String, streams: Int, seconds: Double) throws -> (bitsPerSecond: Double, bytes: Int) {
        let parts = target.split(separator: ":")
        var failure = ""
        for attempt in 0..<2 {
            if attempt > 0 { sleep(1) }
            let result = try bed.run(
                in: bed.client,
                ["iperf3", "-c", String(parts[0]), "-p", String(parts[1]), "-t", String(max(1, Int(seconds.rounded()))), "-P", String(streams), "-J"],
                timeout: .seconds(Int64(seconds) + 30))
            let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            if let end = object?["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
                let bits = received["bits_per_second"] as? Double, let bytes = received["bytes"] as? Double, bits > 0
            {
                return (bits, Int(bytes))
            }
            failure = (object?["error"] as? String) ?? "\(result.stdout.suffix(300)) \(result.stderr.suffix(300))"
        }
        throw BenchFailure("iperf3 to \(target) failed: \(failure)")
    }

    /// wrk's request rate and p99 with `Connection: close` (a new connection per request).
    func wrk(_ target: String, seconds: Double, concurrency: Int) throws -> (perSecond: Double, p99Microseconds: UInt64) {
        let result = try bed.run(
            in: bed.client,
            ["wrk", "-t", "2", "-c", String(concurrency), "-d", "\(max(1, Int(seconds.rounded())))s", "--latency", "-H", "Connection: close",
             "http://\(target)/"], timeout: .seconds(Int64(seconds) + 30))
        guard let parsed = WrkOutput(result.stdout) else { throw BenchFailure("wrk to \(target) gave no figures: \(result)") }
        return (parsed.requestsPerSecond, parsed.p99Microseconds)
    }

    /// Connections run (8 in flight) while the watched manifest loses the third pod and gets it back.
    func changeToTraffic(target: DataPathTarget) throws -> ChangeFigures {
        let removed = bed.pods[2].name
        let timeline = "\(folder)/timeline-\(bed.prefix).txt"
        let group = DispatchGroup()
        nonisolated(unsafe) var outcome: Result<LoadReport, Error>?
        group.enter()
        let echo = ["\(LoadBalancingBench.serviceIP):\(LoadBalancingBench.echoPort)"]
        Thread.detachNewThread { [self] in
            outcome = Result { try load(["--seconds", "5", "--concurrency", "8"], to: echo, timeline: timeline) }
            group.leave()
        }
        usleep(1_000_000)
        let removedAt = Date().timeIntervalSince1970 * 1000
        try writeManifests(without: removed)
        usleep(2_000_000)
        let addedAt = Date().timeIntervalSince1970 * 1000
        try writeManifests(without: nil)
        group.wait()
        let report = try outcome!.get()
        let entries = try String(contentsOfFile: timeline, encoding: .utf8).split(separator: "\n").compactMap { line -> (Double, String)? in
            let parts = line.split(separator: " ")
            guard parts.count == 2, let time = Double(parts[0]) else { return nil }
            return (time, String(parts[1]))
        }
        let lastToRemoved = entries.filter { $0.0 >= removedAt && $0.0 < addedAt && $0.1 == removed }.map(\.0).max()
        let firstBack = entries.filter { $0.0 >= addedAt && $0.1 == removed }.map(\.0).min()
        return ChangeFigures(
            target: target.name, removalMilliseconds: lastToRemoved.map { $0 - removedAt } ?? 0,
            additionMilliseconds: firstBack.map { $0 - addedAt }, connections: report.connections, failures: report.failures)
    }

    // MARK: Configuration

    private func nginxConfig(_ pod: Testbed.Pod) -> String {
        """
        daemon off;
        worker_processes 1;
        pid \(folder)/nginx-\(pod.name).pid;
        error_log \(folder)/nginx-\(pod.name).log;
        events { worker_connections 4096; }
        http {
          access_log off;
          client_body_temp_path \(folder)/nginx-body-\(pod.name);
          server {
            listen \(pod.ip):\(LoadBalancingBench.httpPort);
            location / { return 200 "\(pod.name)\\n"; }
          }
        }

        """
    }

    private func haproxyConfig(splice: Bool) -> String {
        /// A frontend on the node's address and its round-robin backend of `pods`.
        func frontend(_ name: String, _ listen: Int, _ port: Int, _ pods: [Testbed.Pod]) -> String {
            let servers = pods.map { "  server \($0.name) \($0.ip):\(port)" }.joined(separator: "\n")
            return "frontend \(name)\n  bind \(Testbed.nodeAddress):\(listen)\n  default_backend \(name)\n"
                + "backend \(name)\n  balance roundrobin\n\(servers)"
        }
        return """
            global
              maxconn 4000
              nbthread 2
            defaults
              mode tcp
              timeout connect 2s
              timeout client 60s
              timeout server 60s
            \(splice ? "  option splice-auto\n" : "")\(frontend("echo", Lab.haproxyEcho, LoadBalancingBench.echoPort, bed.pods))
            \(frontend("http", Lab.haproxyHTTP, LoadBalancingBench.httpPort, bed.pods))
            \(frontend("bulk", Lab.haproxyBulk, LoadBalancingBench.bulkPort, [bed.pods[0]]))

            """
    }
}

/// The whole machine's busy CPU time, from /proc/stat, in laps.
struct MachineCPU {
    private var last = MachineCPU.busySeconds()

    /// Busy CPU seconds since the last lap (or since made).
    mutating func lap() -> Double {
        let now = MachineCPU.busySeconds()
        defer { last = now }
        return now - last
    }

    /// user + nice + system + irq + softirq + steal, over all CPUs.
    static func busySeconds() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") })
        else { return 0 }
        let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count >= 8 else { return 0 }
        let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
        return busy / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// The figures of wrk's `--latency` output.
struct WrkOutput {
    var requestsPerSecond: Double
    var p99Microseconds: UInt64

    init?(_ text: String) {
        var rate: Double?
        var p99: UInt64?
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.first == "Requests/sec:", fields.count > 1 { rate = Double(fields[1]) }
            if fields.first == "99%", fields.count > 1 { p99 = WrkOutput.microseconds(fields[1]) }
        }
        guard let rate, let p99 else { return nil }
        requestsPerSecond = rate
        p99Microseconds = p99
    }

    /// "812.00us", "1.23ms", "2.00s" in microseconds.
    static func microseconds(_ text: Substring) -> UInt64? {
        for (unit, scale) in [("us", 1.0), ("ms", 1_000.0), ("s", 1_000_000.0)] where text.hasSuffix(unit) {
            guard let value = Double(text.dropLast(unit.count)) else { return nil }
            return UInt64(value * scale)
        }
        return nil
    }
}
