import FerryCore
import FerrySystem
import Foundation
import Glibc

// The test pods' tools behind `ferry debug serve` and `ferry debug probe`: a server that says its name,
// and a client that counts who answered. Plain POSIX sockets: one epoll loop per TCP listener (a
// thread per connection cost the pods more CPU than the proxies they are there to measure), one thread
// per UDP socket.
//
// The protocol, so that one server serves both "who answered" probes and simple request/response:
//   TCP: on accept the server writes `NAME <client-ip>:<client-port>\n` at once, then echoes whatever it
//        reads until the client half-closes (or 30 s pass idle), then closes.
//   UDP: each datagram is answered with one datagram `NAME <client-ip>:<client-port>\n`.
// The client address is the one the pod saw (IPv6 in brackets; IPv4-mapped IPv6 written as IPv4), so
// tests can check masquerading and source-IP preservation.

/// The server's sockets and loops.
public enum DebugServer {
    public enum Kind: Sendable { case tcp, udp }

    /// A TCP connection idle this long (no data either way) is closed.
    static let idleTimeoutSeconds = 30

    /// A bound (and, for TCP, listening) socket and the port it got.
    public static func open(_ kind: Kind, address: IPAddress, port: Int) throws -> (Int32, Int) {
        let endpoint = SocketAddress(ip: address, port: port)
        let type = kind == .tcp ? SOCK_STREAM : SOCK_DGRAM
        let fd = try System.call("socket") { socket(endpoint.socketFamily, Int32(type.rawValue | SOCK_CLOEXEC.rawValue), 0) }
        do {
            try System.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR")
            do {
                _ = try endpoint.withSockaddr { (pointer, length) throws(SystemError) in
                    try System.call("bind") { Glibc.bind(fd, pointer, length) }
                }
            } catch {
                throw SystemError("bind \(kind == .tcp ? "tcp" : "udp")/\(address.joined(port: port))", error.errno)
            }
            if kind == .tcp { try System.call("listen") { listen(fd, 1024) } }
            let bound = try SocketAddress.receiving { (pointer, length) throws(SystemError) in
                try System.call("getsockname") { getsockname(fd, pointer, length) }
            }
            return (fd, bound.address?.port ?? port)
        } catch {
            close(fd)
            throw error
        }
    }

    /// Serves a TCP listener forever on the calling thread (`EchoLoop`): greeting, echo, close.
    public static func acceptLoop(_ listener: Int32, name: String, delayMilliseconds: Int = 0) -> Never {
        EchoLoop(listener: listener, name: name, delay: .milliseconds(delayMilliseconds)).run()
    }

    public static func datagramLoop(_ fd: Int32, name: String) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let received = buffer.withUnsafeMutableBytes { raw in
                try? SocketAddress.receiving { (pointer, length) throws(SystemError) in
                    try System.call("recvfrom") { recvfrom(fd, raw.baseAddress, raw.count, 0, pointer, length) }
                }
            }
            guard let received, let peer = received.address else {
                usleep(10_000)  // e.g. ENOMEM; never spin
                continue
            }
            let reply = Array("\(name) \(peer.ip.joined(port: peer.port))\n".utf8)
            _ = reply.withUnsafeBytes { raw in
                peer.withSockaddr { pointer, length in sendto(fd, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL), pointer, length) }
            }
        }
    }
}

/// The client side: one request per call, and the tally.
public enum DebugProbe {
    public enum Outcome: Sendable {
        case answer(name: String, source: IPAddress?)
        case refused
        case timeout
        case other(String)
    }

    /// Counts, shared by the worker threads.
    /// `@unchecked Sendable`: every stored property is read and written only with `lock` held.
    public final class Tally: @unchecked Sendable {
        public init() {}

        private let lock = NSLock()
        private var claimed = 0
        private var result = Result()

        /// The next request's index, or nil once `total` have been handed out.
        public func claim(_ total: Int) -> Int? {
            lock.lock()
            defer { lock.unlock() }
            guard claimed < total else { return nil }
            claimed += 1
            return claimed - 1
        }

        public func record(_ outcome: Outcome) {
            lock.lock()
            defer { lock.unlock() }
            result.add(outcome)
        }

        public func snapshot() -> Result {
            lock.lock()
            defer { lock.unlock() }
            return result
        }
    }

    public struct Result: Sendable {
        public var answers: [String: Int] = [:]
        var refused = 0
        var timedOut = 0
        var other = 0
        var firstOther: String?
        var sources: Set<IPAddress> = []

        mutating func add(_ outcome: Outcome) {
            switch outcome {
            case .answer(let name, let source):
                answers[name, default: 0] += 1
                if let source { sources.insert(source) }
            case .refused: refused += 1
            case .timeout: timedOut += 1
            case .other(let message):
                other += 1
                if firstOther == nil { firstOther = message }
            }
        }

        var failed: Int { refused + timedOut + other }

        public func text() -> String {
            var table = TextTable(header: ["POD", "ANSWERS"])
            for (name, count) in answers.sorted(by: { $0.key < $1.key }) { table.append([name, String(count)]) }
            var output = table.render()
            output += "failed: \(failed) (refused: \(refused), timeout: \(timedOut), other: \(other))\n"
            if let firstOther { output += "first other failure: \(firstOther)\n" }
            let seen = sources.sorted().map(\.description)
            output += "source addresses seen by pods: \(seen.isEmpty ? "none" : seen.joined(separator: ", "))\n"
            return output
        }

        public func json(elapsed: Duration) -> String {
            let answerItems = answers.sorted(by: { $0.key < $1.key }).map { "\(jsonQuoted($0.key)): \($0.value)" }
            let sourceItems = sources.sorted().map { jsonQuoted($0.description) }
            let seconds = elapsed.seconds
            return """
                {"answers": {\(answerItems.joined(separator: ", "))}, \
                "failed": {"refused": \(refused), "timeout": \(timedOut), "other": \(other)}, \
                "sources": [\(sourceItems.joined(separator: ", "))], \
                "elapsedSeconds": \(String(format: "%.3f", seconds))}

                """
        }
    }

    /// `IP:PORT` or `[IPv6]:PORT`: the one parser `explain` uses too.
    public static func parseHostPort(_ text: String) -> (IPAddress, Int)? { FerryCore.parseHostPort(text) }

    /// `NAME ADDRESS:PORT` → the name and the address (nil when the line has no parsable second word).
    static func parseAnswer(_ line: Substring) -> Outcome {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let name = words.first else { return .other("empty answer") }
        var source: IPAddress?
        if words.count > 1 {
            let word = words[1]
            if word.hasPrefix("["), let close = word.firstIndex(of: "]") {
                source = IPAddress(word[word.index(after: word.startIndex)..<close])
            } else if let colon = word.lastIndex(of: ":") {
                source = IPAddress(word[..<colon])
            } else {
                source = IPAddress(word)
            }
        }
        return .answer(name: String(name), source: source)
    }

    static func classify(_ error: SystemError) -> Outcome {
        switch error.errno {
        case ECONNREFUSED: return .refused
        case ETIMEDOUT: return .timeout
        default: return .other("\(error)")
        }
    }

    /// Connect (non-blocking, within the deadline), read the first line, close with a reset.
    public static func tcp(_ target: SocketAddress, timeout: Duration, source: IPAddress? = nil) -> Outcome {
        let deadline = ContinuousClock.now + timeout
        let fd: Int32
        do {
            fd = try System.tcpSocket(target.ip.family)
        } catch {
            return .other("\(error)")
        }
        defer { close(fd) }
        if let source {
            do throws(SystemError) { try bindSource(fd, source, port: 0) } catch { return .other("\(error)") }
        }
        // Close with RST: a probe of 100,000 connections must not leave 100,000 TIME_WAITs (and run out
        // of ephemeral ports); the answer has been read by then.
        var abort = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, socklen_t(MemoryLayout<linger>.size))
        let started = target.withSockaddr { pointer, length in connect(fd, pointer, length) }
        if started != 0 {
            let code = errno
            // EINTR: the connection attempt goes on asynchronously, as with EINPROGRESS (connect(2)).
            guard code == EINPROGRESS || code == EINTR else { return classify(SystemError("connect", code)) }
            switch DebugSys.wait(fd, for: Int16(POLLOUT), until: deadline) {
            case .failure(let error): return .other("\(error)")
            case .success(false): return .timeout
            case .success(true): break
            }
            var pending: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &pending, &length) == 0 else {
                return .other("\(SystemError("getsockopt(SO_ERROR)", errno))")
            }
            if pending != 0 { return classify(SystemError("connect", pending)) }
        }
        var line: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        while line.count < 4096 {
            switch receive(fd, into: &buffer, until: deadline) {
            case .ended(let outcome): return outcome
            case .bytes(0): return answer(from: line)  // EOF: take what came
            case .bytes(let count):
                line += buffer[0..<count]
                if line.contains(UInt8(ascii: "\n")) { return answer(from: line) }
            }
        }
        return answer(from: line)
    }

    /// What waiting for and receiving data gave: a byte count (0 at end of stream), or the outcome
    /// that ends the probe.
    enum Received {
        case bytes(Int)
        case ended(Outcome)
    }

    /// Waits (until `deadline`) for data on a non-blocking socket and receives it into `buffer`;
    /// EINTR and spurious wake-ups wait again.
    static func receive(_ fd: Int32, into buffer: inout [UInt8], until deadline: ContinuousClock.Instant) -> Received {
        for _ in 0..<10_000 {  // each turn waits; the deadline ends the loop long before the count does
            switch DebugSys.wait(fd, for: Int16(POLLIN), until: deadline) {
            case .failure(let error): return .ended(.other("\(error)"))
            case .success(false): return .ended(.timeout)
            case .success(true): break
            }
            let received = buffer.withUnsafeMutableBytes { raw in recv(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT)) }
            if received >= 0 { return .bytes(received) }
            let code = errno
            if code != EINTR && code != EAGAIN && code != EWOULDBLOCK { return .ended(classify(SystemError("recv", code))) }
        }
        return .ended(.timeout)
    }

    /// One datagram from a fresh (connected, so ICMP port-unreachable reads as ECONNREFUSED) socket.
    public static func udp(_ target: SocketAddress, timeout: Duration, source: IPAddress? = nil, sourcePort: Int? = nil) -> Outcome {
        let deadline = ContinuousClock.now + timeout
        var fd: Int32 = -1
        do throws(SystemError) {
            fd = try System.call("socket") {
                socket(target.socketFamily, Int32(SOCK_DGRAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
            }
            if source != nil || sourcePort != nil {
                var one: Int32 = 1
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
                try bindSource(fd, source ?? IPAddress(target.ip.family == .ipv4 ? "0.0.0.0" : "::")!, port: sourcePort ?? 0)
            }
            _ = try target.withSockaddr { (pointer, length) throws(SystemError) in
                try System.call("connect") { connect(fd, pointer, length) }
            }
        } catch {
            if fd >= 0 { close(fd) }
            return classify(error)
        }
        defer { close(fd) }
        let request = Array("probe\n".utf8)
        do throws(SystemError) {
            try System.call("send") { request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
        } catch {
            return classify(error)
        }
        var buffer = [UInt8](repeating: 0, count: 65_536)
        switch receive(fd, into: &buffer, until: deadline) {
        case .ended(let outcome): return outcome
        case .bytes(let count): return answer(from: Array(buffer[0..<count]))
        }
    }

    /// Binds `fd` to a local address and port (0: any) before it connects.
    static func bindSource(_ fd: Int32, _ address: IPAddress, port: Int) throws(SystemError) {
        _ = try SocketAddress(ip: address, port: port).withSockaddr { (pointer, length) throws(SystemError) in
            try System.call("bind") { bind(fd, pointer, length) }
        }
    }

    static func answer(from bytes: [UInt8]) -> Outcome {
        guard !bytes.isEmpty else { return .other("connection closed before an answer") }
        let text = String(decoding: bytes, as: UTF8.self)
        let line = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return parseAnswer(line.hasSuffix("\r") ? line.dropLast() : line)
    }
}

// MARK: - system calls

enum DebugSys {
    /// Waits until `fd` has `events` (or an error or hang-up to report), or the deadline passes
    /// (`false`). EINTR waits again for what is left.
    static func wait(_ fd: Int32, for events: Int16, until deadline: ContinuousClock.Instant) -> Result<Bool, SystemError> {
        for _ in 0..<1000 {
            let left = deadline - ContinuousClock.now
            if left <= .zero { return .success(false) }
            let milliseconds = Int32(
                clamping: (left.components.seconds * 1000) + (left.components.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
            var entry = pollfd(fd: fd, events: events, revents: 0)
            let ready = poll(&entry, 1, milliseconds)
            if ready > 0 { return .success(true) }
            if ready < 0 && errno != EINTR { return .failure(SystemError("poll", errno)) }
        }
        return .success(false)
    }
}
