import FerryCore
import FerryTestbed
import Foundation
import Glibc

/// `ferry bench`: load balancing end to end, in one run, on one network-namespace topology (a client,
/// a node and three pods): the data path of Ferry's two modes beside kube-proxy's nftables ruleset,
/// HAProxy and the pods reached directly; how evenly each balancer spreads connections, with one
/// backend slow and with one removed mid-run; and the control plane (sync time, change to traffic).
public struct LoadBalancingBench {
    /// How long and how often each figure is measured.
    public struct Profile: Sendable {
        public var name: String
        /// Rounds over the data-path targets (each round starts at another target); figures are medians.
        public var rounds: Int
        /// Seconds per data-path measurement.
        public var seconds: Double
        /// Connections in flight for the connection-rate runs.
        public var concurrency: Int
        /// Connections per balancer for the spread figures.
        public var balanceConnections: Int
        /// Service counts for the sync figures.
        public var syncSizes: [Int]
        /// HAProxy with and without splice, or with splice-auto only.
        public var bothHAProxyModes: Bool

        public init(
            name: String, rounds: Int, seconds: Double, concurrency: Int, balanceConnections: Int, syncSizes: [Int], bothHAProxyModes: Bool
        ) {
            self.name = name
            self.rounds = rounds
            self.seconds = seconds
            self.concurrency = concurrency
            self.balanceConnections = balanceConnections
            self.syncSizes = syncSizes
            self.bothHAProxyModes = bothHAProxyModes
        }

        /// Under two minutes on a 2-core machine.
        public static let quick = Profile(
            name: "quick", rounds: 1, seconds: 2, concurrency: 32, balanceConnections: 3_000, syncSizes: [100, 1_000],
            bothHAProxyModes: true)
        /// Three rounds of 5 s figures, sync up to 10,000 services: 538-544 s here before the
        /// edge-triggered relay joined the targets (three more runs of about 30 s).
        public static let full = Profile(
            name: "full", rounds: 3, seconds: 5, concurrency: 32, balanceConnections: 12_000, syncSizes: [100, 1_000, 10_000],
            bothHAProxyModes: true)
    }

    public let profile: Profile
    /// The Ferry executable run in the namespaces.
    public let ferry: String
    /// Called with a line of progress.
    public let progress: @Sendable (String) -> Void

    public init(profile: Profile, ferry: String, progress: @escaping @Sendable (String) -> Void) {
        precondition(profile.rounds >= 1 && profile.seconds > 0 && profile.concurrency >= 1)
        self.profile = profile
        self.ferry = ferry
        self.progress = progress
    }

    // MARK: The topology's services

    static let echoPort = 8080
    static let httpPort = 8081
    /// Served with a 5 ms delay before the greeting by the third pod, at once by the others.
    static let slowPort = 8082
    static let dnsPort = 53
    static let bulkPort = 5201
    static let serviceIP = "10.96.0.10"
    static let bulkIP = "10.96.0.11"
    static let stickyIP = "10.96.0.12"
    static let clusterCIDR = "10.244.0.0/16"

    /// The services as manifests: one service with the three pods behind an echo (TCP), an HTTP and a
    /// DNS-like (UDP) port; a bulk service with one pod (iperf3's control and data connections must meet
    /// the same pod); the echo port again with ClientIP affinity. `without` leaves a pod out.
    static func manifests(pods all: [(name: String, ip: String, node: String)], without removed: String? = nil) -> String {
        let pods = all.filter { $0.name != removed }.map { "{addresses: [\($0.ip)], nodeName: \($0.node)}" }
        let endpoints = "[\(pods.joined(separator: ", "))]"
        return """
            apiVersion: v1
            kind: Service
            metadata: {name: bench, namespace: default}
            spec:
              clusterIP: \(serviceIP)
              ports:
              - {name: echo, port: \(echoPort)}
              - {name: http, port: \(httpPort)}
              - {name: slow, port: \(slowPort)}
              - {name: dns, port: \(dnsPort), protocol: UDP}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: bench-x, namespace: default, labels: {kubernetes.io/service-name: bench}}
            addressType: IPv4
            endpoints: \(endpoints)
            ports:
            - {name: echo, port: \(echoPort)}
            - {name: http, port: \(httpPort)}
            - {name: slow, port: \(slowPort)}
            - {name: dns, port: \(dnsPort), protocol: UDP}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: bulk, namespace: default}
            spec: {clusterIP: \(bulkIP), ports: [{name: iperf, port: \(bulkPort)}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: bulk-x, namespace: default, labels: {kubernetes.io/service-name: bulk}}
            addressType: IPv4
            endpoints: [{addresses: [\(all[0].ip)], nodeName: \(all[0].node)}]
            ports: [{name: iperf, port: \(bulkPort)}]
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: sticky, namespace: default}
            spec: {clusterIP: \(stickyIP), sessionAffinity: ClientIP, ports: [{name: echo, port: \(echoPort)}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: sticky-x, namespace: default, labels: {kubernetes.io/service-name: sticky}}
            addressType: IPv4
            endpoints: \(endpoints)
            ports: [{name: echo, port: \(echoPort)}]

            """
    }

    // MARK: Running

    /// Tears down the topology of the run in progress (call from a SIGINT or SIGTERM handler, then exit).
    public static func interrupted() { Lab.interrupted() }

    /// Builds the topology, measures everything, tears the topology down (also when a step fails).
    public func run() throws -> BenchResults {
        try inLab(command: "ferry bench", needing: ["iperf3", "nft"]) { lab, results in
            results.dataPath = try measureDataPath(lab, targets: DataPathTarget.all(haproxy: lab.hasHAProxy, both: profile.bothHAProxyModes))
            results.balance = try measureBalance(lab, dataPath: results.dataPath)
            results.slowBackend = try measureSlowBackend(lab)
            results.affinity = try measureAffinity(lab)
            results.changes = try measureChanges(lab)
            results.sync = try measureSync(lab)
        }
    }

    // MARK: Data path

    /// The data path alone: Ferry userspace (level- and edge-triggered) against HAProxy with and without
    /// splice and direct (`ferry bench userspace`).
    public func runUserspaceDataPath() throws -> BenchResults {
        try inLab(command: "ferry bench userspace", needing: ["iperf3", "haproxy"]) { lab, results in
            results.dataPath = try measureDataPath(
                lab,
                targets: [
                    .direct, .ferryUserspace(balancer: "round-robin"), .ferryUserspace(balancer: "round-robin", epoll: "edge"),
                    .haproxy(splice: false), .haproxy(splice: true),
                ])
        }
    }

    /// Checks what the run needs, builds the lab, runs `body`, and tears the lab down (also when `body`
    /// throws); the results carry the lab's notes, the direct-rate check and the run's duration.
    private func inLab(command: String, needing tools: [String], _ body: (Lab, inout BenchResults) throws -> Void) throws -> BenchResults {
        guard getuid() == 0 else { throw BenchFailure("\(command) needs root (network namespaces)") }
        for tool in tools where Testbed.executable(named: tool) == nil {
            throw BenchFailure("\(command) needs \(tool) (`make bench` installs what it needs)")
        }
        let started = ContinuousClock.now
        var results = BenchResults(
            profile: profile.name, date: ISO8601DateFormatter().string(from: Date()), cores: ProcessInfo.processInfo.activeProcessorCount)
        let lab = try Lab(ferry: ferry, progress: progress)
        defer { lab.teardown() }
        results.notes += lab.notes
        try body(lab, &results)
        results.notes.append(Self.directCheckNote(lab))
        results.seconds = (ContinuousClock.now - started).seconds
        return results
    }

    func measureDataPath(_ lab: Lab, targets: [DataPathTarget]) throws -> [DataPathFigures] {
        progress("data path: \(profile.rounds) round(s) of \(targets.count) targets")
        var rounds: [[DataPathFigures]] = []
        lab.directCheck.append(try lab.connectionRate(to: lab.directEcho, seconds: profile.seconds, concurrency: profile.concurrency).perSecond)
        let paired = targets.contains(.ferryNFTables) && targets.contains(.kubeProxy)
        for round in 1...profile.rounds {
            var results: [DataPathTarget: DataPathFigures] = [:]
            for offset in 0..<targets.count {
                let target = targets[(offset + round - 1) % targets.count]
                if paired && target == .kubeProxy { continue }
                if paired && target == .ferryNFTables {
                    progress("round \(round)/\(profile.rounds): \(target.name) and \(DataPathTarget.kubeProxy.name), in turns")
                    let pair = try measurePair(lab, .ferryNFTables, .kubeProxy, round: round)
                    results[.ferryNFTables] = pair.0
                    results[.kubeProxy] = pair.1
                    continue
                }
                progress("round \(round)/\(profile.rounds): \(target.name)")
                results[target] = try lab.with(target) {
                    try lab.measure(target, seconds: profile.seconds, concurrency: profile.concurrency)
                }
            }
            rounds.append(targets.map { results[$0]! })
        }
        lab.directCheck.append(try lab.connectionRate(to: lab.directEcho, seconds: profile.seconds, concurrency: profile.concurrency).perSecond)
        return (0..<targets.count).map { index in DataPathFigures.median(rounds.map { $0[index] }) }
    }

    /// Two kernel targets measured in turns, each figure in four slices of half the profile's seconds,
    /// A B B A (B A A B in even rounds), their rules swapped between slices (`Lab.withRules`). Why:
    /// measured one after the other, ten seconds apart, Ferry's ruleset came out 0.82-1.20x of
    /// kube-proxy's from one figure and run to the next, either ahead, where alternating the two by hand
    /// in one bed put Ferry at 1.02x on the connection rate: this machine's noise comes in bursts of
    /// seconds, which slices of a second share out between the two.
    func measurePair(_ lab: Lab, _ first: DataPathTarget, _ second: DataPathTarget, round: Int) throws -> (DataPathFigures, DataPathFigures) {
        var samples = [first: DataPathSample(), second: DataPathSample()]
        let order = round % 2 == 1 ? [first, second, second, first] : [second, first, first, second]
        let slice = profile.seconds / 2
        for figure in lab.figures(of: first) {
            for target in order {
                try lab.withRules(target) {
                    try lab.measure(figure, of: target, seconds: slice, concurrency: profile.concurrency, into: &samples[target]!)
                }
            }
        }
        return (samples[first]!.figures(target: first.name), samples[second]!.figures(target: second.name))
    }

    /// How the bench keeps one target from slowing the next, with the figures that check it.
    static func directCheckNote(_ lab: Lab) -> String {
        "Direct connection rate at the start and at the end of the data-path runs: "
            + String(format: "%.0f and %.0f conn/s", lab.directCheck.first ?? 0, lab.directCheck.last ?? 0)
            + " (no target slows the next: no TIME_WAIT socket is kept in any namespace, and each round starts at another target)."
    }

    // MARK: Balance

    /// Connections per pod for each userspace balancer, and for nftables' random choice (Ferry's and
    /// kube-proxy's, from the data-path runs' connections).
    func measureBalance(_ lab: Lab, dataPath: [DataPathFigures]) throws -> [BalanceFigures] {
        var figures: [BalanceFigures] = []
        let names = lab.bed.pods.map(\.name)
        for balancer in ["round-robin", "least-connections", "random", "maglev"] {
            progress("balance: userspace \(balancer)")
            // Maglev hashes the client's address: one connection from each of many client addresses
            // (from one address every connection would meet the same pod, by design).
            let hashing = balancer == "maglev"
            let report = try lab.with(.ferryUserspace(balancer: balancer)) {
                try lab.connections(
                    to: ["\(Self.serviceIP):\(Self.echoPort)"], count: hashing ? lab.clientSources.count : profile.balanceConnections,
                    concurrency: 8, from: hashing ? lab.clientSources : [])
            }
            figures.append(
                BalanceFigures(
                    balancer: "userspace \(balancer)" + (hashing ? " (\(lab.clientSources.count) clients)" : ""),
                    spread: Spread(counts: report.pods, backends: names), failures: report.failures))
        }
        for figure in dataPath where figure.target == DataPathTarget.ferryNFTables.name || figure.target == DataPathTarget.kubeProxy.name {
            figures.append(
                BalanceFigures(
                    balancer: figure.target == DataPathTarget.kubeProxy.name ? "kube-proxy ruleset random" : "Ferry nftables random", spread: Spread(counts: figure.spread, backends: names), failures: figure.failures))
        }
        return figures
    }

    /// One pod answering 5 ms late (its server waits before the greeting: netem needs a kernel module
    /// this machine lacks): how each balancer's spread and p99 respond.
    func measureSlowBackend(_ lab: Lab) throws -> [SlowBackendFigures] {
        var figures: [SlowBackendFigures] = []
        let targets: [DataPathTarget] = [
            .ferryUserspace(balancer: "round-robin"), .ferryUserspace(balancer: "least-connections"), .ferryUserspace(balancer: "random"),
            .ferryNFTables,
        ]
        for target in targets {
            progress("slow backend: \(target.name)")
            let report = try lab.with(target) {
                try lab.connectionRate(to: ["\(Self.serviceIP):\(Self.slowPort)"], seconds: profile.seconds, concurrency: profile.concurrency)
            }
            figures.append(
                SlowBackendFigures(
                    target: target.name, slowPod: lab.bed.pods[2].name, spread: Spread(counts: report.pods, backends: lab.bed.pods.map(\.name)),
                    connectionsPerSecond: report.perSecond, p99Microseconds: report.p99Microseconds))
        }
        return figures
    }

    /// ClientIP affinity: how many pods one client reaches over 200 connections (1 expected) after a
    /// first one has made the affinity entry (connections that start together before any entry exists
    /// each pick a backend, in kube-proxy as in Ferry).
    func measureAffinity(_ lab: Lab) throws -> [AffinityFigures] {
        try [DataPathTarget.ferryNFTables, .ferryUserspace(balancer: "round-robin")].map { target in
            progress("affinity: \(target.name)")
            let sticky = ["\(Self.stickyIP):\(Self.echoPort)"]
            let (first, rest) = try lab.with(target) {
                (try lab.connections(to: sticky, count: 1, concurrency: 1), try lab.connections(to: sticky, count: 200, concurrency: 4))
            }
            return AffinityFigures(
                target: target.name, connections: rest.connections, podsReached: Set(first.pods.keys).union(rest.pods.keys).count)
        }
    }

    // MARK: Control plane

    /// Change to traffic: a watched manifest loses a pod, then gets it back, while connections run.
    func measureChanges(_ lab: Lab) throws -> [ChangeFigures] {
        try [DataPathTarget.ferryNFTables, .ferryUserspace(balancer: "round-robin")].map { target in
            progress("change to traffic: \(target.name)")
            return try lab.with(target) { try lab.changeToTraffic(target: target) }
        }
    }

    /// Sync time against `nft -f`: `ferry bench sync` at the profile's sizes, in its own namespace.
    func measureSync(_ lab: Lab) throws -> [SyncFigures] {
        progress("sync: \(profile.syncSizes.map(String.init).joined(separator: ", ")) services")
        let result = try Testbed.execute(
            [ferry, "bench", "sync", "--json", "--sizes", profile.syncSizes.map(String.init).joined(separator: ",")],
            timeout: .seconds(900))
        guard result.status == 0, let start = result.stdout.firstIndex(of: "[") else {
            throw BenchFailure("ferry bench sync failed: \(result.stderr.suffix(2_000))")
        }
        return try JSONDecoder().decode([SyncFigures].self, from: Data(result.stdout[start...].utf8))
    }
}
