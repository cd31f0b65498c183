import Foundation

/// Everything one `ferry bench` run measured (`--json` prints it; the report is drawn from it).
public struct BenchResults: Codable, Sendable {
    public var profile: String
    public var date: String
    public var cores: Int
    /// Wall-clock seconds the whole run took.
    public var seconds: Double = 0
    public var dataPath: [DataPathFigures] = []
    public var balance: [BalanceFigures] = []
    public var slowBackend: [SlowBackendFigures] = []
    public var affinity: [AffinityFigures] = []
    public var changes: [ChangeFigures] = []
    public var sync: [SyncFigures] = []
    /// How the run was made, and what it could not measure.
    public var notes: [String] = []

    public init(profile: String, date: String, cores: Int) {
        self.profile = profile
        self.date = date
        self.cores = cores
    }
}

/// One data-path target's figures (medians over the rounds).
public struct DataPathFigures: Codable, Sendable, Hashable {
    public var target: String
    /// iperf3 through a one-pod service.
    public var gbitOneStream: Double
    public var gbitFourStreams: Double
    /// Short connections (connect, greeting, 64 bytes each way, close), `concurrency` in flight.
    public var connectionsPerSecond: Double
    public var p50Microseconds: UInt64
    public var p90Microseconds: UInt64
    public var p99Microseconds: UInt64
    public var p999Microseconds: UInt64
    public var failures: Int
    /// The whole machine's busy CPU (client, node, pods, proxy: /proc/stat) per GB moved and per
    /// 1,000 connections: comparable between a kernel and a userspace data path.
    public var machineCPUSecondsPerGB: Double
    public var machineCPUSecondsPerThousandConnections: Double
    /// wrk with `Connection: close` against nginx in the pods (nil: wrk or nginx missing).
    public var httpRequestsPerSecond: Double?
    public var httpP99Microseconds: UInt64?
    /// DNS-like UDP queries, each from a fresh socket (nil: the target relays no UDP).
    public var udpQueriesPerSecond: Double?
    public var udpP99Microseconds: UInt64?
    public var udpLost: Int?
    /// Connections per pod in the connection-rate run.
    public var spread: [String: Int]
    /// For a target measured in several slices (a paired run): per figure ("1 stream", "4 streams",
    /// "conn/s", "p99", "HTTP req/s", "UDP q/s"), how far apart its own slices came, (max - min) / mean:
    /// this machine's noise in the same run, against which a ratio to the peer is read.
    public var sliceSpread: [String: Double]?

    static func median(_ rounds: [DataPathFigures]) -> DataPathFigures {
        func middle<T: Comparable>(_ values: [T]) -> T { values.sorted()[values.count / 2] }
        func middle<T: Comparable>(_ values: [T?]) -> T? {
            let present = values.compactMap { $0 }
            return present.isEmpty ? nil : present.sorted()[present.count / 2]
        }
        var result = rounds[0]
        result.gbitOneStream = middle(rounds.map(\.gbitOneStream))
        result.gbitFourStreams = middle(rounds.map(\.gbitFourStreams))
        result.connectionsPerSecond = middle(rounds.map(\.connectionsPerSecond))
        result.p50Microseconds = middle(rounds.map(\.p50Microseconds))
        result.p90Microseconds = middle(rounds.map(\.p90Microseconds))
        result.p99Microseconds = middle(rounds.map(\.p99Microseconds))
        result.p999Microseconds = middle(rounds.map(\.p999Microseconds))
        result.failures = rounds.map(\.failures).reduce(0, +)
        result.machineCPUSecondsPerGB = middle(rounds.map(\.machineCPUSecondsPerGB))
        result.machineCPUSecondsPerThousandConnections = middle(rounds.map(\.machineCPUSecondsPerThousandConnections))
        result.httpRequestsPerSecond = middle(rounds.map(\.httpRequestsPerSecond))
        result.httpP99Microseconds = middle(rounds.map(\.httpP99Microseconds))
        result.udpQueriesPerSecond = middle(rounds.map(\.udpQueriesPerSecond))
        result.udpP99Microseconds = middle(rounds.map(\.udpP99Microseconds))
        result.udpLost = rounds.compactMap(\.udpLost).isEmpty ? nil : rounds.compactMap(\.udpLost).reduce(0, +)
        result.spread = rounds.reduce(into: [:]) { total, round in total.merge(round.spread, uniquingKeysWith: +) }
        let spreads = rounds.compactMap(\.sliceSpread)
        result.sliceSpread = spreads.isEmpty ? nil : spreads.reduce(into: [:]) { widest, round in widest.merge(round, uniquingKeysWith: max) }
        return result
    }
}

/// How one balancer spread connections over the pods.
public struct BalanceFigures: Codable, Sendable, Hashable {
    public var balancer: String
    public var spread: Spread
    public var failures: Int
    /// Why the spread test does not apply, when it does not.
    public var note: String?
}

/// One pod slower than the others: where connections went, and the latency.
public struct SlowBackendFigures: Codable, Sendable, Hashable {
    public var target: String
    public var slowPod: String
    public var spread: Spread
    public var connectionsPerSecond: Double
    public var p99Microseconds: UInt64
}

/// ClientIP affinity: pods one client reached.
public struct AffinityFigures: Codable, Sendable, Hashable {
    public var target: String
    public var connections: Int
    public var podsReached: Int
}

/// A watched manifest edited while connections run.
public struct ChangeFigures: Codable, Sendable, Hashable {
    public var target: String
    /// From the edit removing a pod to the end of the last connection that reached it.
    public var removalMilliseconds: Double?
    /// From the edit adding it back to the end of the first connection that reached it.
    public var additionMilliseconds: Double?
    /// Connections during the whole run, and how many failed.
    public var connections: Int
    public var failures: Int
}

/// `ferry bench sync`'s figures for one size.
public struct SyncFigures: Codable, Sendable, Hashable {
    public var services: Int
    public var endpoints: Int
    public var chains: Int
    public var rules: Int
    public var batchMiB: Double
    /// A first sync into an empty namespace (plan, diff, encode, commit), and its parts.
    public var fullSeconds: Double
    public var fullPlanSeconds: Double
    public var fullEncodeSeconds: Double
    public var fullCommitSeconds: Double
    /// One endpoint of one service replaced.
    public var changeSeconds: Double
    public var changeCommitSeconds: Double
    public var changeOperations: Int
    /// A resync with nothing to do.
    public var noopSeconds: Double
    /// A new Ferry converging the existing table.
    public var restartSeconds: Double
    /// The same ruleset, and the same change, loaded with nft -f.
    public var nftFullSeconds: Double
    public var nftChangeSeconds: Double
    /// kube-proxy's shape for the same services, loaded with nft -f (nil: above the size it is loaded up to).
    public var kubeProxyFullSeconds: Double?
    public var kubeProxyChangeSeconds: Double?
    /// The benchmark's peak resident memory.
    public var peakMiB: Double
    /// One endpoint added to one service.
    public var addSeconds: Double
    /// `ferry sync --manifests DIR` in a fresh namespace, DIR the same services as `kind: List` JSON files
    /// of 10,000 services each, as a user runs it; and that process's peak resident memory.
    public var endToEndSeconds: Double
    public var endToEndPeakMiB: Double

    /// Ferry's own share of a full sync: everything but the kernel's commit.
    public var fullOwnSeconds: Double { fullSeconds - fullCommitSeconds }

    public init(
        services: Int, endpoints: Int, chains: Int, rules: Int, batchMiB: Double, fullSeconds: Double, fullPlanSeconds: Double, fullEncodeSeconds: Double, fullCommitSeconds: Double, changeSeconds: Double, changeCommitSeconds: Double, changeOperations: Int, noopSeconds: Double, restartSeconds: Double, nftFullSeconds: Double, nftChangeSeconds: Double, kubeProxyFullSeconds: Double?, kubeProxyChangeSeconds: Double?, peakMiB: Double, addSeconds: Double, endToEndSeconds: Double, endToEndPeakMiB: Double
    ) {
        self.services = services
        self.endpoints = endpoints
        self.chains = chains
        self.rules = rules
        self.batchMiB = batchMiB
        self.fullSeconds = fullSeconds
        self.fullPlanSeconds = fullPlanSeconds
        self.fullEncodeSeconds = fullEncodeSeconds
        self.fullCommitSeconds = fullCommitSeconds
        self.changeSeconds = changeSeconds
        self.changeCommitSeconds = changeCommitSeconds
        self.changeOperations = changeOperations
        self.noopSeconds = noopSeconds
        self.restartSeconds = restartSeconds
        self.nftFullSeconds = nftFullSeconds
        self.nftChangeSeconds = nftChangeSeconds
        self.kubeProxyFullSeconds = kubeProxyFullSeconds
        self.kubeProxyChangeSeconds = kubeProxyChangeSeconds
        self.peakMiB = peakMiB
        self.addSeconds = addSeconds
        self.endToEndSeconds = endToEndSeconds
        self.endToEndPeakMiB = endToEndPeakMiB
    }
}
