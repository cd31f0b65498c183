import ArgumentParser
import FerryBench
import FerryCore
import FerrySystem
import FerryUserspace
import Foundation
import Glibc

/// `ferry debug stream`: many connections held open at once, each streaming a pseudo-random payload
/// through a `ferry debug serve` pod and checking the echo: payload integrity both ways, half-close
/// (the client ends its stream and still reads the whole echo), and concurrency.
struct StreamCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stream",
        abstract: "Open connections at once, stream a payload through each, check the echo (needs ferry debug serve).",
        discussion: """
            Phase 1 opens every connection and reads each pod's greeting, so all are open at the same time. \
            Phase 2 sends --bytes of pseudo-random data on each (after the first half, waits --pause-ms), \
            shuts down writing (half-close), reads the echo to its end, and compares hashes. Prints \
            "connected POD" lines as phase 1 goes (with --pause-ms), then a JSON report.
            """)

    @Option(help: ArgumentHelp("Where to connect.", valueName: "ip:port"))
    var to: String

    @Option(help: "Connections held open at once.")
    var connections: Int = 1

    @Option(help: "Bytes streamed through each connection.")
    var bytes: Int = 1_000

    @Option(name: .customLong("pause-ms"), help: "Pause after the first half of the payload (one connection's stream outlives a change).")
    var pauseMilliseconds: Int = 0

    @Option(
        name: .customLong("read-pause-ms"),
        help: "Pause after reading the first half of the echo (a slow reader: the rest waits in the relay's socket buffers).")
    var readPauseMilliseconds: Int = 0

    @Flag(help: "After sending, half-close and then reset each connection (SO_LINGER 0), reading none of the echo.")
    var reset = false

    @Option(name: .customLong("timeout-ms"), help: "Connect and read timeout per connection.")
    var timeoutMilliseconds: Int = 10_000

    func validate() throws {
        guard parseHostPort(to) != nil else { throw ValidationError("--to: \"\(to)\" is not IP:PORT") }
        guard (1...20_000).contains(connections) else { throw ValidationError("--connections must be between 1 and 20000") }
        guard bytes >= 0, pauseMilliseconds >= 0, readPauseMilliseconds >= 0, timeoutMilliseconds > 0 else { throw ValidationError("negative values are not allowed") }
    }

    struct Report: Encodable {
        var connections: Int
        var opened = 0
        var verified = 0
        var failed: [String] = []
        var pods: [String: Int] = [:]
        var bytesEchoed = 0
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        System.raiseFileLimit()
        let (ip, port) = parseHostPort(to)!
        let target = SocketAddress(ip: ip, port: port)
        var report = Report(connections: connections)
        var open: [(fd: Int32, pod: String)] = []
        for _ in 0..<connections {
            do {
                let fd = try StreamClient.connect(target, timeoutMilliseconds: timeoutMilliseconds)
                let greeting = try StreamClient.readLine(fd)
                let pod = String(greeting.split(separator: " ").first ?? "?")
                open.append((fd, pod))
                report.pods[pod, default: 0] += 1
                if pauseMilliseconds > 0 {
                    print("connected \(pod)")
                    fflush(nil)
                }
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
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
        if report.verified != connections { throw ExitCode(1) }
    }

}
