import ArgumentParser
import FerryBench
import FerryCore
import FerrySystem
import FerryUserspace
import Foundation
import Glibc
import Histogram

/// `ferry debug load`: new connections as fast as they go, each a short request/response with a
/// `ferry debug serve` pod (connect, read the greeting, send 64 bytes, read their echo, close), from
/// several threads, for a bounded time and count. Reports the rate, latency percentiles (HdrHistogram,
/// microseconds, connect to last byte) and which pods answered. With `--udp`: DNS-like queries, a
/// 64-byte datagram and its one-datagram answer, each from a fresh socket as glibc's resolver sends
/// them (or one socket per thread with `--udp-keep-socket`); an answer not back within 1 s is lost.
struct LoadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load", abstract: "Short request/response connections in a loop: rate, latency percentiles, spread.")

    @Option(help: ArgumentHelp("Where to connect (repeatable: taken in turn).", valueName: "ip:port"))
    var to: [String]

    @Option(
        name: .customLong("from"),
        help: ArgumentHelp("TCP: a source address to bind (repeatable: connection N uses the Nth in turn, as many clients would).", valueName: "ip"))
    var sources: [String] = []

    @Option(help: "Seconds to run.")
    var seconds: Double = 5

    @Option(help: "Connections in flight (one thread each).")
    var concurrency: Int = 32

    @Option(name: .customLong("max-connections"), help: "Stop after this many connections.")
    var maxConnections: Int = 2_000_000

    @Option(
        help: ArgumentHelp(
            "Write each connection's end (milliseconds since the epoch) and the pod that answered (- when it failed) to FILE.",
            valueName: "file"))
    var timeline: String?

    @Flag(help: "UDP queries instead of TCP connections.")
    var udp = false

    @Flag(name: .customLong("udp-keep-socket"), help: "With --udp: one socket per thread for all its queries (one session each).")
    var udpKeepSocket = false

    func validate() throws {
        guard !to.isEmpty, to.allSatisfy({ parseHostPort($0) != nil }) else { throw ValidationError("--to: give IP:PORT") }
        guard sources.allSatisfy({ IPAddress($0) != nil }) else { throw ValidationError("--from: give IP addresses") }
        guard sources.isEmpty || !udp else { throw ValidationError("--from applies to TCP connections only") }
        guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600]") }
        guard (1...4_096).contains(concurrency) else { throw ValidationError("--concurrency must be between 1 and 4096") }
    }

    /// One thread's tallies.
    final class Tally: @unchecked Sendable {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var pods: [String: Int] = [:]
        var errors: [String: Int] = [:]
        var failures = 0
        /// (end, pod) per connection, with `--timeline`.
        var timeline: [(Double, String)] = []
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        System.raiseFileLimit()
        let targets = to.map { text -> SocketAddress in
            let (ip, port) = parseHostPort(text)!
            return SocketAddress(ip: ip, port: port)
        }
        let bound = sources.map { IPAddress($0)! }
        let claimed = ManagedCounter()
        let limit = maxConnections
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .milliseconds(Int64(seconds * 1000))
        let tallies = (0..<concurrency).map { _ in Tally() }
        let keepTimeline = timeline != nil
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
                            target, from: bound.isEmpty ? nil : bound[number % bound.count], request: request, buffer: &buffer)
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
        let total = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var merged = total
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
        if let timeline {
            let lines = tallies.flatMap(\.timeline).sorted { $0.0 < $1.0 }.map { "\(String(format: "%.3f", $0.0)) \($0.1)" }
            try (lines.joined(separator: "\n") + "\n").write(toFile: timeline, atomically: true, encoding: .utf8)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    }

}


/// A shared counter handing out connection numbers.
final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int {
        lock.withLock {
            defer { value += 1 }
            return value
        }
    }
}
