import ArgumentParser
import FerryBench
import FerryCore
import FerrySystem
import Foundation

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

    func run() throws {
        let (ip, port) = parseHostPort(to)!
        let check = StreamCheck(
            target: SocketAddress(ip: ip, port: port), connections: connections, bytes: bytes, pauseMilliseconds: pauseMilliseconds,
            readPauseMilliseconds: readPauseMilliseconds, reset: reset, timeoutMilliseconds: timeoutMilliseconds)
        let pausing = pauseMilliseconds > 0
        let report = check.run { pod in
            // Printed as each opens, so that a test can change the service while the streams are held.
            if pausing {
                print("connected \(pod)")
                fflush(nil)
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
        if report.verified != connections { throw ExitCode(1) }
    }
}
