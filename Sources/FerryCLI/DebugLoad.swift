import ArgumentParser
import FerryBench
import FerryCore
import FerrySystem
import Foundation

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

    func run() throws {
        let generator = LoadGenerator(
            targets: to.map { text in
                let (ip, port) = parseHostPort(text)!
                return SocketAddress(ip: ip, port: port)
            },
            sources: sources.map { IPAddress($0)! }, seconds: seconds, concurrency: concurrency, maxConnections: maxConnections, udp: udp,
            udpKeepSocket: udpKeepSocket, keepTimeline: timeline != nil)
        let (report, lines) = generator.run()
        if let timeline {
            try (lines.joined(separator: "\n") + "\n").write(toFile: timeline, atomically: true, encoding: .utf8)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    }
}
