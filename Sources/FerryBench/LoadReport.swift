/// What `ferry debug load` prints as its last line: the rate, latency percentiles (HdrHistogram,
/// microseconds, connect to last byte) and which pods answered.
public struct LoadReport: Codable, Sendable, Hashable {
    public var connections: Int
    public var failures: Int
    public var seconds: Double
    public var perSecond: Double
    public var p50Microseconds: UInt64
    public var p90Microseconds: UInt64
    public var p99Microseconds: UInt64
    public var p999Microseconds: UInt64
    /// Connections (or queries) per pod that answered.
    public var pods: [String: Int]
    /// Failures by system call and error.
    public var errors: [String: Int]

    public init(
        connections: Int, failures: Int, seconds: Double, perSecond: Double, p50Microseconds: UInt64, p90Microseconds: UInt64,
        p99Microseconds: UInt64, p999Microseconds: UInt64, pods: [String: Int], errors: [String: Int]
    ) {
        self.connections = connections
        self.failures = failures
        self.seconds = seconds
        self.perSecond = perSecond
        self.p50Microseconds = p50Microseconds
        self.p90Microseconds = p90Microseconds
        self.p99Microseconds = p99Microseconds
        self.p999Microseconds = p999Microseconds
        self.pods = pods
        self.errors = errors
    }
}
