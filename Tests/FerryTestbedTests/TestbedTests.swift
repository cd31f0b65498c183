import FerryTestbed
import Foundation
import Testing

/// The `ferry` executable built with these tests.
let ferryPath: String? = Testbed.ferryExecutable

struct Output: Sendable, CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    var description: String { "exit \(status)\n--- stdout\n\(stdout)--- stderr\n\(stderr)" }
}

/// Runs a short-lived command (killed after `timeout`), output through temporary files.
func runCommand(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(60)) throws -> Output {
    let result = try Testbed.execute([executable] + arguments, timeout: timeout)
    return Output(status: result.status, stdout: result.stdout, stderr: result.stderr)
}

/// The parts of `ferry debug probe --json` the tests look at.
struct ProbeReport: Sendable {
    var answers: [String: Int]
    var refused: Int
    var timeout: Int
    var other: Int
    var sources: [String]

    init(_ output: Output) throws {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any], "\(output)")
        answers = try #require(object["answers"] as? [String: Int], "\(output)")
        let failed = try #require(object["failed"] as? [String: Int], "\(output)")
        refused = failed["refused"] ?? -1
        timeout = failed["timeout"] ?? -1
        other = failed["other"] ?? -1
        sources = try #require(object["sources"] as? [String], "\(output)")
        _ = try #require(object["elapsedSeconds"] as? Double, "\(output)")
    }
}

/// A `ferry debug serve` on loopback with free ports; killed (by PID) when the test ends.
final class LoopbackServer: @unchecked Sendable {
    let process = Process()
    let outPath = NSTemporaryDirectory() + "ferry-serve-\(getpid())-\(UUID().uuidString).out"
    var tcpPort = 0
    var udpPort = 0

    init(ferry: String, name: String, bind: String = "127.0.0.1") throws {
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: ferry)
        process.arguments = ["debug", "serve", "--name", name, "--tcp", "0", "--udp", "0", "--bind", bind]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        try process.run()
        let deadline = ContinuousClock.now + .seconds(5)
        var line = ""
        while ContinuousClock.now < deadline && process.isRunning {
            line = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
            if line.hasSuffix("\n") { break }
            usleep(20_000)
        }
        // serving NAME on tcp/P udp/Q
        for word in line.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            if word.hasPrefix("tcp/") { tcpPort = Int(word.dropFirst(4)) ?? 0 }
            if word.hasPrefix("udp/") { udpPort = Int(word.dropFirst(4)) ?? 0 }
        }
        guard tcpPort > 0, udpPort > 0, line.hasPrefix("serving \(name) on ") else {
            stop()
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "no readiness line: \(line)"])
        }
    }

    /// SIGTERM, and the exit status (nil when it had to be killed).
    @discardableResult
    func stop() -> Int32? {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(2)
        while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { stop() }
}

@Suite("ferry debug serve and probe, on loopback")
struct DebugLoopbackTests {
    @Test func tcpAndUDPProbesCountTheServersAnswers() throws {
        let ferry = try #require(ferryPath)
        let server = try LoopbackServer(ferry: ferry, name: "pod-a")
        for (proto, port) in [("tcp", server.tcpPort), ("udp", server.udpPort)] {
            let output = try runCommand(
                ferry, ["debug", "probe", "--to", "127.0.0.1:\(port)", "--protocol", proto, "--count", "50", "--json"])
            #expect(output.status == 0, "\(output)")
            let report = try ProbeReport(output)
            #expect(report.answers == ["pod-a": 50])
            #expect(report.sources == ["127.0.0.1"])
            #expect(report.refused + report.timeout + report.other == 0)
        }
        let text = try runCommand(ferry, ["debug", "probe", "--to", "127.0.0.1:\(server.tcpPort)", "--count", "3"])
        #expect(text.stdout.hasPrefix("POD       ANSWERS\npod-a     3\n"), "\(text)")
        #expect(text.stdout.contains("failed: 0 (refused: 0, timeout: 0, other: 0)\n"))
        #expect(text.stdout.contains("source addresses seen by pods: 127.0.0.1\n"))
        #expect(server.stop() == 0, "SIGTERM exits 0")
    }

    @Test func theServerGreetsThenEchoesUntilTheClientHalfCloses() throws {
        let ferry = try #require(ferryPath)
        let server = try LoopbackServer(ferry: ferry, name: "echo-pod")
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(server.tcpPort).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(connected == 0)
        let request = Array("hello\nworld\n".utf8)
        #expect(send(fd, request, request.count, 0) == request.count)
        shutdown(fd, Int32(SHUT_WR))
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<100 {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received += buffer[0..<count]
        }
        let text = String(decoding: received, as: UTF8.self)
        #expect(text.hasPrefix("echo-pod 127.0.0.1:"), "\(text)")
        #expect(text.hasSuffix("\nhello\nworld\n"), "\(text)")
    }

    @Test func aDualStackServerAnswersIPv6AndReportsIPv4ClientsAsIPv4() throws {
        let ferry = try #require(ferryPath)
        let server: LoopbackServer
        do {
            server = try LoopbackServer(ferry: ferry, name: "pod-6", bind: "::")
        } catch {
            print("skipped: no IPv6 here (\(error))")
            return
        }
        let v6 = try runCommand(ferry, ["debug", "probe", "--to", "[::1]:\(server.tcpPort)", "--count", "5", "--json"])
        let v6Report = try ProbeReport(v6)
        #expect(v6Report.answers == ["pod-6": 5] && v6Report.sources == ["::1"], "\(v6)")
        let v4 = try runCommand(
            ferry, ["debug", "probe", "--to", "127.0.0.1:\(server.udpPort)", "--protocol", "udp", "--count", "5", "--json"])
        let v4Report = try ProbeReport(v4)
        #expect(v4Report.answers == ["pod-6": 5] && v4Report.sources == ["127.0.0.1"], "\(v4)")
    }

    /// Refused is ECONNREFUSED at once (TCP reset, or ICMP port unreachable for UDP), not a timeout.
    @Test(arguments: ["tcp", "udp"])
    func aClosedPortIsRefusedQuicklyAndExits1(_ proto: String) throws {
        let ferry = try #require(ferryPath)
        // A port just freed: bind to 0, read the port, close.
        let server = try LoopbackServer(ferry: ferry, name: "gone")
        let port = proto == "tcp" ? server.tcpPort : server.udpPort
        server.stop()
        let started = ContinuousClock.now
        let output = try runCommand(
            ferry, ["debug", "probe", "--to", "127.0.0.1:\(port)", "--protocol", proto, "--count", "20", "--timeout-ms", "5000", "--json"])
        #expect(ContinuousClock.now - started < .seconds(3), "refusals must not wait for the 5 s timeout")
        #expect(output.status == 1, "\(output)")
        let report = try ProbeReport(output)
        #expect(report.answers.isEmpty && report.refused == 20 && report.timeout == 0, "\(output)")
        #expect(output.stderr.contains("no answer"), "\(output)")
    }

    @Test(arguments: [
        (["debug", "probe", "--to", "fd00::1:80"], "is not IP:PORT (use [addr]:port for IPv6)"),
        (["debug", "probe", "--to", "10.0.0.1:80", "--protocol", "sctp"], "--protocol: \"sctp\" is not tcp or udp"),
        (["debug", "probe", "--to", "10.0.0.1:80", "--count", "100001"], "--count must be 1-100000"),
        (["debug", "serve", "--name", "x"], "give at least one --tcp or --udp port"),
        (["debug", "serve", "--name", "x", "--tcp", "80", "--bind", "nowhere"], "--bind: \"nowhere\" is not a valid IP address"),
    ])
    func badUsageExits2(_ arguments: [String], _ message: String) throws {
        let ferry = try #require(ferryPath)
        let output = try runCommand(ferry, arguments)
        #expect(output.status == 2, "\(output)")
        #expect(output.stderr.contains(message), "\(output)")
    }
}

@Suite("Network-namespace test bed", .serialized)
struct TestbedTests {
    /// Client → each pod IP through the node's routing, TCP and UDP: the pod answers with its name and
    /// sees the client's own address; the node reaches each pod from 10.0.0.1.
    @Test func theClientAndTheNodeReachEveryPod() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let ferry = try #require(ferryPath)
        let bed = try Testbed()
        defer { bed.teardown() }
        try bed.startPodServers(ferryPath: ferry, tcp: [80], udp: [53])
        for pod in bed.pods {
            for (proto, port) in [("tcp", 80), ("udp", 53)] {
                for (from, source) in [(bed.client, Testbed.clientAddress), (bed.node, Testbed.nodeAddress)] {
                    let output = try bed.run(
                        in: from, [ferry, "debug", "probe", "--to", "\(pod.ip):\(port)", "--protocol", proto, "--count", "20", "--json"])
                    #expect(output.status == 0, "\(from) → \(pod.name) \(proto): \(output)")
                    let report = try ProbeReport(Output(status: output.status, stdout: output.stdout, stderr: output.stderr))
                    #expect(report.answers == [pod.name: 20], "\(from) → \(pod.ip):\(port)/\(proto)")
                    #expect(report.sources == [source], "\(from) → \(pod.ip):\(port)/\(proto)")
                }
            }
        }
        // A pod's closed port is refused (the pod's kernel resets), an address nobody routes is not.
        let closed = try bed.run(in: bed.client, [ferry, "debug", "probe", "--to", "\(bed.pods[0].ip):81", "--count", "5", "--json"])
        let closedReport = try ProbeReport(Output(status: closed.status, stdout: closed.stdout, stderr: closed.stderr))
        #expect(closed.status == 1 && closedReport.refused == 5, "\(closed)")
    }

    /// Teardown kills the servers it started and deletes every namespace; a second call does nothing.
    @Test func teardownLeavesNothingBehind() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let ferry = try #require(ferryPath)
        let bed = try Testbed(pods: [Testbed.PodSpec(name: "solo", ip: "10.244.9.2", node: "node-1")])
        let names = [bed.node.name, bed.client.name] + bed.pods.map(\.namespace.name)
        #expect(names.allSatisfy { $0.hasPrefix("fy\(getpid())") })
        #expect(([bed.clientLink] + bed.pods.map(\.nodeLink)).allSatisfy { $0.count <= 15 })
        let servers = try bed.startPodServers(ferryPath: ferry, tcp: [80])
        let sleeper = try bed.spawn(in: bed.pods[0].namespace, ["sleep", "30"])
        let pids = (servers + [sleeper]).map(\.processIdentifier)
        #expect(Set(try namespaceList()).isSuperset(of: names))
        let started = ContinuousClock.now
        bed.teardown()
        // SIGTERM was enough (no 2 s wait for SIGKILL): the children did not inherit a blocked SIGTERM.
        #expect(ContinuousClock.now - started < .milliseconds(1500))
        bed.teardown()
        #expect(Set(try namespaceList()).isDisjoint(with: names))
        for pid in pids { #expect(kill(pid, 0) == -1 && errno == ESRCH, "process \(pid) is gone") }
        #expect(servers.allSatisfy { $0.terminationReason == .exit && $0.terminationStatus == 0 }, "ferry debug serve exits 0 on SIGTERM")
        #expect(sleeper.terminationReason == .uncaughtSignal && sleeper.terminationStatus == SIGTERM)
    }

    /// `ferry debug testbed` (what scripts/testbed.sh runs): a bed kept between commands, pods serving,
    /// the same prefix refused while it exists, and down removing every namespace and process.
    @Test func theDemoBedIsKeptBetweenCommandsAndRemovedByPrefix() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let ferry = try #require(ferryPath)
        let prefix = "tb\(getpid() % 100_000)"
        defer { _ = try? Testbed.remove(prefix: prefix) }
        let up = try runCommand(ferry, ["debug", "testbed", "up", prefix])
        #expect(up.status == 0 && up.stdout.contains("\(prefix)-pod5"), "\(up)")
        let again = try runCommand(ferry, ["debug", "testbed", "up", prefix])
        #expect(again.status != 0 && again.stderr.contains("exists already"), "\(again)")
        #expect(Set(try namespaceList()).isSuperset(of: ["\(prefix)-node", "\(prefix)-client", "\(prefix)-pod1"]))
        let serve = try runCommand(ferry, ["debug", "testbed", "serve", prefix])
        #expect(serve.status == 0, "\(serve)")
        let probe = try runCommand(try #require(Testbed.executable(named: "ip")), ["netns", "exec", "\(prefix)-client", ferry, "debug", "probe", "--to", "10.244.2.10:80", "--count", "3", "--json"])
        #expect(try ProbeReport(probe).answers == ["web-nodeport-5f7d9c8b64-q8tzm": 3])
        let servers = try runCommand(try #require(Testbed.executable(named: "ip")), ["netns", "pids", "\(prefix)-pod1"]).stdout.split(separator: "\n").compactMap { Int32($0) }
        #expect(!servers.isEmpty, "the pod's server outlived the command that started it")
        let down = try runCommand(ferry, ["debug", "testbed", "down", prefix])
        #expect(down.status == 0 && down.stdout.contains("deleted \(prefix)-pod5"), "\(down)")
        #expect(try namespaceList().allSatisfy { !$0.hasPrefix("\(prefix)-") })
        for pid in servers { #expect(kill(pid, 0) == -1 && errno == ESRCH, "server \(pid) is gone") }
    }

    /// Without a default route the node cannot even start a connection to a ClusterIP (ENETUNREACH
    /// before any nat OUTPUT rule runs); with `nodeDefaultRoute` the packet leaves, and with no rule to
    /// rewrite it, goes unanswered.
    @Test func aNodeDefaultRouteLetsNodeLocalTrafficToAClusterIPLeave() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let ferry = try #require(ferryPath)
        for withRoute in [false, true] {
            let bed = try Testbed(pods: [Testbed.PodSpec(name: "solo", ip: "10.244.9.2", node: "node-1")], nodeDefaultRoute: withRoute)
            defer { bed.teardown() }
            let output = try bed.run(
                in: bed.node, [ferry, "debug", "probe", "--to", "10.96.0.10:80", "--count", "2", "--timeout-ms", "300", "--json"])
            let report = try ProbeReport(Output(status: output.status, stdout: output.stdout, stderr: output.stderr))
            #expect(output.status == 1)
            if withRoute {
                #expect(report.timeout == 2 && report.other == 0, "\(output)")
            } else {
                #expect(report.other == 2 && report.timeout == 0, "\(output)")
                let text = try bed.run(in: bed.node, [ferry, "debug", "probe", "--to", "10.96.0.10:80", "--count", "1"])
                #expect(text.stdout.contains("first other failure: connect: Network is unreachable (errno 101)"), "\(text)")
            }
        }
    }

    func namespaceList() throws -> [String] {
        let output = try runCommand(Testbed.ipExecutable ?? "/usr/sbin/ip", ["netns", "list"])
        return output.stdout.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
    }
}
