import FerryCore
import FerrySystem
import FerryUserspace
import Foundation
import Glibc

/// `ferry debug stream`'s check: many connections held open at once, each streaming a pseudo-random
/// payload through a `ferry debug serve` pod and checking the echo: payload integrity both ways,
/// half-close (the client ends its stream and still reads the whole echo), and concurrency. Phase 1
/// opens every connection and reads each pod's greeting, so all are open at the same time; phase 2
/// sends `bytes` on each (pausing `pauseMilliseconds` after the first half), shuts down writing, reads
/// the echo to its end and compares hashes.
public struct StreamCheck: Sendable {
    public var target: SocketAddress
    /// Connections held open at once.
    public var connections: Int
    /// Bytes streamed through each connection.
    public var bytes: Int
    /// Pause after sending the first half (one connection's stream outlives a change).
    public var pauseMilliseconds: Int
    /// Pause after reading the first half of the echo (a slow reader).
    public var readPauseMilliseconds: Int
    /// Half-close and then reset each connection (SO_LINGER 0), reading none of the echo.
    public var reset: Bool
    /// Connect and read timeout per connection.
    public var timeoutMilliseconds: Int

    public init(
        target: SocketAddress, connections: Int, bytes: Int, pauseMilliseconds: Int, readPauseMilliseconds: Int, reset: Bool,
        timeoutMilliseconds: Int
    ) {
        self.target = target
        self.connections = connections
        self.bytes = bytes
        self.pauseMilliseconds = pauseMilliseconds
        self.readPauseMilliseconds = readPauseMilliseconds
        self.reset = reset
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// What the check found.
    public struct Report: Encodable, Sendable {
        public var connections: Int
        public var opened = 0
        public var verified = 0
        public var failed: [String] = []
        public var pods: [String: Int] = [:]
        public var bytesEchoed = 0
    }

    /// Runs both phases; `connected` is told each pod as its connection opens in phase 1.
    public func run(connected: (String) -> Void = { _ in }) -> Report {
        signal(SIGPIPE, SIG_IGN)
        System.raiseFileLimit()
        var report = Report(connections: connections)
        var open: [(fd: Int32, pod: String)] = []
        for _ in 0..<connections {
            do {
                let fd = try StreamClient.connect(target, timeoutMilliseconds: timeoutMilliseconds)
                let greeting = try StreamClient.readLine(fd)
                let pod = String(greeting.split(separator: " ").first ?? "?")
                open.append((fd, pod))
                report.pods[pod, default: 0] += 1
                connected(pod)
            } catch {
                report.failed.append("connect: \(error)")
            }
        }
        report.opened = open.count
        if reset {
            // Send, then reset while the echo is still coming back.
            for connection in open {
                let chunk = [UInt8](repeating: 7, count: 65_536)
                var sent = 0
                while sent < bytes {
                    let count = chunk.withUnsafeBytes {
                        send(connection.fd, $0.baseAddress, min($0.count, bytes - sent), Int32(MSG_NOSIGNAL))
                    }
                    if count <= 0 { break }
                    sent += count
                }
                // Half-close first: a reset after a FIN finds the proxy's socket in CLOSE_WAIT, where the
                // kernel reports EPIPE (and raises SIGPIPE) on its next write.
                shutdown(connection.fd, Int32(SHUT_WR))
                usleep(20_000)
                var linger = linger(l_onoff: 1, l_linger: 0)
                setsockopt(connection.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
                close(connection.fd)
                report.verified += 1
            }
            open = []
        }
        for (index, connection) in open.enumerated() {
            defer { close(connection.fd) }
            do {
                let (sent, received, count) = try StreamClient.roundTrip(
                    connection.fd, seed: UInt64(index + 1), bytes: bytes, pauseMilliseconds: pauseMilliseconds,
                    readPauseMilliseconds: readPauseMilliseconds)
                if sent == received && count == bytes {
                    report.verified += 1
                    report.bytesEchoed += count
                } else {
                    report.failed.append("\(connection.pod): echo differs (\(count) of \(bytes) bytes back)")
                }
            } catch {
                report.failed.append("\(connection.pod): \(error)")
            }
        }
        return report
    }
}
