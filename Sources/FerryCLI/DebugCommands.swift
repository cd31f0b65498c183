import ArgumentParser
import FerryBench
import FerryCore
import FerrySystem
import FerryUserspace
import Foundation
import Glibc

// `ferry debug`: argument parsing and wiring for the test-pod tools of FerryBench (TestPods.swift).

/// `ferry debug`: tools for test beds and demos.
struct DebugCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug",
        abstract: "Tools for test beds and demos: a pod that says its name, and a client that counts who answered.",
        subcommands: [ServeCommand.self, ProbeCommand.self, StreamCommand.self, LoadCommand.self, TestbedCommand.self])
}

// MARK: - serve

/// `ferry debug serve --name NAME --tcp PORT --udp PORT`: the server test pods run.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "A tiny server for test pods: answers with its name and the client's address, then echoes.",
        discussion: """
            TCP: on accept, writes "NAME <client-ip>:<client-port>" and a newline, then echoes what it reads \
            until the client half-closes, then closes. UDP: answers each datagram with that same line.
            Prints "serving NAME on tcp/PORT udp/PORT" once listening (port 0 picks a free port and prints \
            the one chosen). Runs until SIGTERM or SIGINT, then exits 0.
            """)

    @Option(help: "The name to answer with (a pod's name; no spaces).")
    var name: String

    @Option(name: .customLong("tcp"), help: ArgumentHelp("A TCP port to listen on (repeatable; 0: any free port).", valueName: "port"))
    var tcpPorts: [Int] = []

    @Option(name: .customLong("udp"), help: ArgumentHelp("A UDP port to listen on (repeatable; 0: any free port).", valueName: "port"))
    var udpPorts: [Int] = []

    @Option(help: ArgumentHelp("The address to listen on; an IPv6 one (e.g. ::) listens on IPv6.", valueName: "ip"))
    var bind: String = "0.0.0.0"

    @Option(
        name: .customLong("delay-ms"),
        help: ArgumentHelp("TCP: wait this long before the greeting (a slow backend; netem needs a kernel module).", valueName: "ms"))
    var delayMilliseconds: Int = 0

    func validate() throws {
        guard !name.isEmpty, !name.contains(where: { $0.isWhitespace }) else {
            throw ValidationError("--name: \"\(name)\" must be non-empty and contain no spaces")
        }
        guard !(tcpPorts.isEmpty && udpPorts.isEmpty) else { throw ValidationError("give at least one --tcp or --udp port") }
        for port in tcpPorts + udpPorts where !(0...65_535).contains(port) {
            throw ValidationError("port \(port) is out of range 0-65535")
        }
        guard IPAddress(bind) != nil else { throw ValidationError("--bind: \"\(bind)\" is not a valid IP address") }
        guard (0...60_000).contains(delayMilliseconds) else { throw ValidationError("--delay-ms must be 0-60000") }
    }

    func run() throws {
        // Nothing to flush or release: the listeners die with the process.
        signal(SIGTERM) { _ in _exit(0) }
        signal(SIGINT) { _ in _exit(0) }
        signal(SIGPIPE, SIG_IGN)
        // A parent may hand down a mask that blocks them (Foundation's Process passes on the mask of the
        // Dispatch thread that started it, which blocks nearly everything): unblock them here, in the
        // thread that waits below and that creates the listener threads.
        var stopping = sigset_t()
        sigemptyset(&stopping)
        sigaddset(&stopping, SIGTERM)
        sigaddset(&stopping, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &stopping, nil)
        let address = IPAddress(bind)!
        var listeners: [(kind: DebugServer.Kind, fd: Int32)] = []
        var spelled: [String] = []
        do {
            for port in tcpPorts {
                let (fd, actual) = try DebugServer.open(.tcp, address: address, port: port)
                listeners.append((.tcp, fd))
                spelled.append("tcp/\(actual)")
            }
            for port in udpPorts {
                let (fd, actual) = try DebugServer.open(.udp, address: address, port: port)
                listeners.append((.udp, fd))
                spelled.append("udp/\(actual)")
            }
        } catch {
            throw CommandFailure.runtime("ferry debug serve: \(error)")
        }
        let reply = name
        let delay = delayMilliseconds
        for listener in listeners {
            let thread: Thread
            switch listener.kind {
            case .tcp: thread = Thread { DebugServer.acceptLoop(listener.fd, name: reply, delayMilliseconds: delay) }
            case .udp: thread = Thread { DebugServer.datagramLoop(listener.fd, name: reply) }
            }
            thread.stackSize = 1 << 19
            thread.start()
        }
        print("serving \(name) on \(spelled.joined(separator: " "))")
        fflush(nil)
        // The listener threads do the work; this thread waits for SIGTERM or SIGINT, whose handlers exit.
        while true { pause() }
    }
}

// MARK: - probe

/// `ferry debug probe --to IP:PORT`: N independent requests, counted by the name that answered.
struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Send N independent requests to IP:PORT and count which pod answered each.",
        discussion: """
            TCP: connect, read the first line, close (with a reset, so no TIME_WAIT is left behind). UDP: one \
            datagram from a fresh socket, one reply line awaited. Each answer is counted under its first word \
            (the pod's name); its second word is the source address the pod saw.
            Exit status 0 when at least one request was answered, 1 when none was.
            """)

    @Option(help: ArgumentHelp("The destination, IP:PORT or [IPv6]:PORT.", valueName: "ip:port"))
    var to: String

    @Option(name: .customLong("protocol"), help: "tcp or udp.")
    var l4Protocol: String = "tcp"

    @Option(help: "How many requests (1-100000).")
    var count: Int = 100

    @Option(name: .customLong("timeout-ms"), help: "How long each request may take, in milliseconds.")
    var timeoutMilliseconds: Int = 1000

    @Option(help: "How many requests are in flight at once (1-1000).")
    var concurrency: Int = 8

    @Flag(help: "Print the counts as JSON.")
    var json = false

    @Option(
        name: .customLong("source-port"),
        help: "UDP only: send every request from this local port, one at a time (as a client with a long-lived socket would).")
    var sourcePort: Int?

    @Option(
        name: .customLong("from"),
        help: ArgumentHelp("Send from this local address (one of this host's), as a client with several addresses would.", valueName: "ip"))
    var sourceAddress: String?

    func validate() throws {
        _ = try destination()
        if let sourceAddress {
            guard let address = IPAddress(sourceAddress) else { throw ValidationError("--from: \"\(sourceAddress)\" is not a valid IP address") }
            guard address.family == (try destination()).ip.family else { throw ValidationError("--from: \(address) is not of --to's family") }
        }
        if let sourcePort {
            guard (1...65_535).contains(sourcePort) else { throw ValidationError("--source-port must be 1-65535") }
            guard l4Protocol.lowercased() == "udp" else { throw ValidationError("--source-port is for --protocol udp") }
        }
        guard ["tcp", "udp"].contains(l4Protocol.lowercased()) else {
            throw ValidationError("--protocol: \"\(l4Protocol)\" is not tcp or udp")
        }
        guard (1...100_000).contains(count) else { throw ValidationError("--count must be 1-100000") }
        guard (1...600_000).contains(timeoutMilliseconds) else { throw ValidationError("--timeout-ms must be 1-600000") }
        guard (1...1000).contains(concurrency) else { throw ValidationError("--concurrency must be 1-1000") }
    }

    func destination() throws -> SocketAddress {
        guard let (address, port) = DebugProbe.parseHostPort(to) else {
            throw ValidationError("--to: \"\(to)\" is not IP:PORT (use [addr]:port for IPv6) with a port in 1-65535")
        }
        return SocketAddress(ip: address, port: port)
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let target = try destination()
        let tally = DebugProbe.Tally()
        let timeout = Duration.milliseconds(timeoutMilliseconds)
        let udp = l4Protocol.lowercased() == "udp"
        let source = sourceAddress.flatMap(IPAddress.init)
        let total = count
        let clock = ContinuousClock()
        let start = clock.now
        let done = DispatchGroup()
        for _ in 0..<(sourcePort == nil ? min(concurrency, count) : 1) {
            done.enter()
            let worker = Thread {
                defer { done.leave() }
                while let _ = tally.claim(total) {
                    tally.record(
                        udp
                            ? DebugProbe.udp(target, timeout: timeout, source: source, sourcePort: sourcePort)
                            : DebugProbe.tcp(target, timeout: timeout, source: source))
                }
            }
            worker.stackSize = 1 << 18
            worker.start()
        }
        done.wait()  // bounded: every request ends by its own deadline
        let elapsed = clock.now - start
        let result = tally.snapshot()
        print(json ? result.json(elapsed: elapsed) : result.text(), terminator: "")
        fflush(nil)
        if result.answers.isEmpty {
            throw CommandFailure.runtime("ferry debug probe: no answer from \(to) (\(udp ? "udp" : "tcp"))")
        }
    }
}
