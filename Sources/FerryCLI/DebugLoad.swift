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
                        ? LoadCommand.query(target, request: request, buffer: &buffer, keep: udpKeepSocket, kept: &kept)
                        : LoadCommand.exchange(target, request: request, buffer: &buffer)
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
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
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

    /// One connection: connect, greeting, 64 bytes out and back, close. Returns the pod's name.
    static func exchange(_ target: SocketAddress, request: [UInt8], buffer: inout [UInt8]) -> Result<String, SystemError> {
        let fd = socket(target.socketFamily, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .failure(SystemError("socket", errno)) }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        do throws(SystemError) {
            _ = try target.withSockaddr { (pointer, length) throws(SystemError) in
                try System.call("connect") { connect(fd, pointer, length) }
            }
            // Greeting: "NAME addr:port\n".
            var got = 0
            var newline: Int?
            while newline == nil {
                let count = try System.call("read greeting") { read(fd, &buffer[got], buffer.count - got) }
                if count == 0 { throw SystemError("read greeting", ECONNRESET) }
                got += count
                newline = buffer[0..<got].firstIndex(of: UInt8(ascii: "\n"))
                if newline == nil && got == buffer.count { throw SystemError("read greeting", EMSGSIZE) }
            }
            let pod = String(decoding: buffer[0..<newline!].prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
            try System.call("send") { request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
            var echoed = got - newline! - 1
            while echoed < request.count {
                let count = try System.call("read echo") { read(fd, &buffer[0], buffer.count) }
                if count == 0 { throw SystemError("read echo", ECONNRESET) }
                echoed += count
            }
            return .success(pod)
        } catch {
            return .failure(error)
        }
    }
}

extension LoadCommand {
    /// One UDP query: a datagram out, one back (1 s at most). Returns the pod's name (the answer's first
    /// word). `keep`: reuse one connected socket per target (held in `kept`) instead of a fresh one per query.
    static func query(_ target: SocketAddress, request: [UInt8], buffer: inout [UInt8], keep: Bool, kept: inout [SocketAddress: Int32])
        -> Result<String, SystemError>
    {
        var fd = kept[target] ?? -1
        if fd < 0 {
            fd = socket(target.socketFamily, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { return .failure(SystemError("socket", errno)) }
            var timeout = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            // Connected: answers from any other address or port than the one asked are not received.
            let connected = target.withSockaddr { connect(fd, $0, $1) }
            if connected < 0 {
                let code = errno
                close(fd)
                return .failure(SystemError("connect", code))
            }
            if keep { kept[target] = fd }
        }
        defer { if !keep { close(fd) } }
        do throws(SystemError) {
            try System.call("send") { request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
            // A late answer to an earlier, lost query of a kept socket would be taken for this one's; it
            // names the same pod (one session), which is all that is read.
            let count = try System.call("recv") { recv(fd, &buffer[0], buffer.count, 0) }
            return .success(String(decoding: buffer[0..<count].prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self))
        } catch {
            return .failure(error)
        }
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
