import FerryCore
import FerrySystem
import FerryUserspace
import Foundation
import Glibc
import Histogram

/// `ferry debug load`'s generator: new connections as fast as they go, each a short request/response
/// with a `ferry debug serve` pod (connect, read the greeting, send 64 bytes, read their echo, close),
/// from one thread per connection in flight, for a bounded time and count. Or, with `udp`, DNS-like
/// queries: a 64-byte datagram and its one-datagram answer, each from a fresh socket as glibc's
/// resolver sends them (one socket per thread with `udpKeepSocket`); an answer not back within 1 s is
/// lost.
public struct LoadGenerator: Sendable {
    /// Where to connect, taken in turn.
    public var targets: [SocketAddress]
    /// TCP source addresses to bind, connection N the Nth in turn (none: the kernel's choice).
    public var sources: [IPAddress]
    public var seconds: Double
    /// Connections (or queries) in flight, one thread each.
    public var concurrency: Int
    /// Stop after this many connections.
    public var maxConnections: Int
    public var udp: Bool
    public var udpKeepSocket: Bool
    /// Whether to record each connection's end and the pod that answered.
    public var keepTimeline: Bool

    public init(
        targets: [SocketAddress], sources: [IPAddress], seconds: Double, concurrency: Int, maxConnections: Int, udp: Bool,
        udpKeepSocket: Bool, keepTimeline: Bool
    ) {
        self.targets = targets
        self.sources = sources
        self.seconds = seconds
        self.concurrency = concurrency
        self.maxConnections = maxConnections
        self.udp = udp
        self.udpKeepSocket = udpKeepSocket
        self.keepTimeline = keepTimeline
    }

    /// One thread's tallies.
    private final class Tally: @unchecked Sendable {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var pods: [String: Int] = [:]
        var errors: [String: Int] = [:]
        var failures = 0
        /// (end, pod) per connection, with `--timeline`.
        var timeline: [(Double, String)] = []
    }

    /// Runs the load; returns its report and, with `keepTimeline`, one line per connection in order of
    /// their ends: milliseconds since the epoch and the pod that answered (`-` when it failed).
    public func run() -> (report: LoadReport, timeline: [String]) {
        signal(SIGPIPE, SIG_IGN)
        System.raiseFileLimit()
        let claimed = ManagedCounter()
        let limit = maxConnections
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .milliseconds(Int64(seconds * 1000))
        let tallies = (0..<concurrency).map { _ in Tally() }
        // One thread per connection in flight (concurrentPerform would run only one per core).
        let finished = DispatchGroup()
        for index in 0..<concurrency {
            finished.enter()
            let thread = Thread {
                defer { finished.leave() }
                let tally = tallies[index]
                var request = [UInt8](repeating: UInt8(ascii: "x"), count: 64)
                request[63] = UInt8(ascii: "\n")
                var buffer = [UInt8](repeating: 0, count: 512)
                var kept: [SocketAddress: Int32] = [:]
                defer { for fd in kept.values { close(fd) } }
                while clock.now < deadline {
                    let number = claimed.next()
                    guard number < limit else { break }
                    let target = targets[number % targets.count]
                    let begin = clock.now
                    let outcome =
                        udp
                        ? LoadClient.query(target, request: request, buffer: &buffer, keep: udpKeepSocket, kept: &kept)
                        : LoadClient.exchange(
                            target, from: sources.isEmpty ? nil : sources[number % sources.count], request: request, buffer: &buffer)
                    if keepTimeline {
                        let pod = (try? outcome.get()) ?? "-"
                        tally.timeline.append((Date().timeIntervalSince1970 * 1000, pod))
                    }
                    switch outcome {
                    case .success(let pod):
                        let elapsed = clock.now - begin
                        let micros = UInt64(
                            max(0, elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000))
                        _ = tally.histogram.record(micros)
                        tally.pods[pod, default: 0] += 1
                    case .failure(let error):
                        tally.failures += 1
                        tally.errors[error.call + ": " + String(cString: strerror(error.errno)), default: 0] += 1
                    }
                }
            }
            thread.stackSize = 1 << 18
            thread.start()
        }
        finished.wait()
        let elapsed = clock.now - start
        var merged = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var pods: [String: Int] = [:]
        var errors: [String: Int] = [:]
        var failures = 0
        for tally in tallies {
            merged.add(tally.histogram)
            pods.merge(tally.pods, uniquingKeysWith: +)
            errors.merge(tally.errors, uniquingKeysWith: +)
            failures += tally.failures
        }
        let seconds = elapsed.seconds
        let count = Int(merged.totalCount)
        let report = LoadReport(
            connections: count, failures: failures, seconds: seconds, perSecond: Double(count) / seconds,
            p50Microseconds: merged.valueAtPercentile(50), p90Microseconds: merged.valueAtPercentile(90),
            p99Microseconds: merged.valueAtPercentile(99), p999Microseconds: merged.valueAtPercentile(99.9), pods: pods,
            errors: errors)
        let lines = tallies.flatMap(\.timeline).sorted { $0.0 < $1.0 }.map { "\(String(format: "%.3f", $0.0)) \($0.1)" }
        return (report, lines)
    }
}

/// A shared counter handing out connection numbers.
private final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int {
        lock.withLock {
            defer { value += 1 }
            return value
        }
    }
}
