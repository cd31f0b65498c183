import CLinux
import FerryCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A node, a client and pods, each in its own network namespace, wired with veth pairs; for tests that
/// send real traffic through Ferry's data planes. Needs root (see `skipUnlessRoot()`).
///
/// ```
///   client ns                 node ns (ip_forward=1)                     pod ns (one per pod)
///   eth0 10.0.0.2/24  <-veth->  <prefix>c 10.0.0.1/24
///   default via 10.0.0.1        <prefix>p1 10.0.0.1/32  <-veth->  eth0 10.244.1.2/32
///                               10.244.1.2/32 dev <prefix>p1        10.0.0.1 dev eth0 scope link
///                               ...                                default via 10.0.0.1 dev eth0
/// ```
/// Every pod hangs off the one node namespace; a pod's `node` is only a label (the second node of the
/// walk-through is simulated). The node-side end of each pod link carries 10.0.0.1/32 so that traffic
/// masqueraded onto that link has a source address, and the pod reaches its gateway through an
/// on-link host route.
///
/// Names are unique to the run: `fy<pid><n>` (n counts the test beds this process made, in base 36),
/// namespaces `<prefix>-node`, `<prefix>-client`, `<prefix>-pod<i>`, and node-side links `<prefix>c`,
/// `<prefix>p<i>` (at most 15 characters, the kernel's limit); the links inside the client and pod
/// namespaces are `eth0`.
///
/// `@unchecked Sendable`: tests share a test bed between tasks and threads. The immutable description
/// (names, pods) is `let`; the mutable bookkeeping (created namespaces, spawned processes, whether torn
/// down, the log counter) is only touched with `lock` held, and `Process` is used only through its
/// thread-safe members (`isRunning`, `processIdentifier`, `terminationStatus`).
public final class Testbed: @unchecked Sendable {
    /// A network namespace, by its `ip netns` name.
    public struct Namespace: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }
    }

    /// A pod to create: its name (as the manifests spell it), IPv4 address and node label.
    public struct PodSpec: Sendable, Hashable {
        public var name: String
        public var ip: String
        public var node: String
        public init(name: String, ip: String, node: String) {
            self.name = name
            self.ip = ip
            self.node = node
        }
    }

    /// A created pod.
    public struct Pod: Sendable, Hashable {
        public let name: String
        public let ip: String
        /// The node label (`node-1`, `node-2`…); all pods live behind the same node namespace.
        public let node: String
        public let namespace: Namespace
        /// The node-side end of the pod's veth pair (in `node`'s namespace).
        public let nodeLink: String
    }

    /// What a command printed and how it ended.
    public struct CommandResult: Sendable, CustomStringConvertible {
        public var status: Int32
        public var stdout: String
        public var stderr: String
        public var timedOut: Bool

        public var description: String {
            "exit \(status)\(timedOut ? " (timed out)" : "")\n--- stdout\n\(stdout)--- stderr\n\(stderr)"
        }
    }

    public enum Failure: Error, CustomStringConvertible {
        /// A set-up command failed.
        case command([String], CommandResult)
        /// Under `CI=true` the root-only tests must run, and cannot.
        case cannotRunUnderCI(String)
        case badPods(String)
        /// A system call failed.
        case systemCall(String, errno: Int32)
        /// A pod's server did not print its readiness line in time (its output so far).
        case serverNotReady(pod: String, stdout: String, stderr: String)

        public var description: String {
            switch self {
            case .command(let command, let result): return "`\(command.joined(separator: " "))` failed: \(result)"
            case .cannotRunUnderCI(let reason):
                return "CI=true, but the network-namespace tests cannot run: \(reason) (they need root and iproute2)"
            case .badPods(let reason): return "bad pods: \(reason)"
            case .systemCall(let call, let code): return "\(call): \(String(cString: strerror(code)))"
            case .serverNotReady(let pod, let stdout, let stderr):
                return "the server in pod \(pod) did not become ready within 5 s\n--- stdout\n\(stdout)--- stderr\n\(stderr)"
            }
        }
    }

    /// The client's address and the node's (its end of every link).
    public static let clientAddress = "10.0.0.2"
    public static let nodeAddress = "10.0.0.1"

    /// The walk-through's pods (deploy/examples/my-service.yaml).
    public static let walkthroughPods = [
        PodSpec(name: "my-app-7c5ddbdf54-2xkqn", ip: "10.244.1.2", node: "node-1"),
        PodSpec(name: "my-app-7c5ddbdf54-9vwtr", ip: "10.244.2.2", node: "node-2"),
        PodSpec(name: "my-app-7c5ddbdf54-lh6zp", ip: "10.244.2.3", node: "node-2"),
    ]

    /// The demo's pods: the walk-through's three and web-nodeport's two (deploy/examples/nodeport.yaml).
    public static let demoPods =
        walkthroughPods + [
            PodSpec(name: "web-nodeport-5f7d9c8b64-k2jxw", ip: "10.244.1.10", node: "node-1"),
            PodSpec(name: "web-nodeport-5f7d9c8b64-q8tzm", ip: "10.244.2.10", node: "node-2"),
        ]

    /// `fy<pid><n>` (or the prefix given): every name this test bed creates starts with it.
    public let prefix: String
    /// Where the proxy under test runs: forwards between the client and the pods.
    public let node: Namespace
    public let client: Namespace
    /// The node-side end of the client's veth pair.
    public let clientLink: String
    public let pods: [Pod]
    /// Spawned processes' output: `<name>.stdout` and `<name>.stderr`.
    public let logDirectory: String

    private let ip: String
    private let lock = NSLock()
    private var createdNamespaces: [Namespace] = []
    private var spawned: [Process] = []
    private var logCounter = 0
    private var tornDown = false
    /// Kept past this value's life (`keep()`): no teardown on deinit.
    private var kept = false

    private static let instances = Counter()

    /// Whether the node has a default route (via the client).
    public let nodeDefaultRoute: Bool

    /// Creates the namespaces and links (in order: node, client, pods). On any failure, what was made
    /// is removed again and the error thrown.
    ///
    /// `nodeDefaultRoute`: give the node `default via 10.0.0.2`, as a real node has a default gateway.
    /// Without it the node has routes only to 10.0.0.0/24 and the pods, so a connection *from the node*
    /// to a ClusterIP fails at once with ENETUNREACH: the route lookup happens before the nat OUTPUT
    /// hook could rewrite the destination. The client does not forward, so what reaches it unrewritten
    /// is dropped (a timeout), as a real upstream would drop it.
    ///
    /// `prefix`: the names' prefix (1-12 letters or digits) for a bed that outlives this process
    /// (`ferry debug testbed up`); by default one unique to this process and bed.
    public init(pods specs: [PodSpec] = Testbed.walkthroughPods, nodeDefaultRoute: Bool = false, prefix given: String? = nil) throws {
        guard let ip = Testbed.ipExecutable else { throw Failure.cannotRunUnderCI("no `ip` executable (iproute2)") }
        guard (1...99).contains(specs.count) else { throw Failure.badPods("1-99 pods, not \(specs.count)") }
        for spec in specs {
            guard case .v4 = IPAddress(spec.ip) else { throw Failure.badPods("\(spec.name): \(spec.ip) is not an IPv4 address") }
            guard !spec.name.isEmpty, !spec.name.contains(where: { $0.isWhitespace }) else {
                throw Failure.badPods("\"\(spec.name)\" is not a pod name")
            }
        }
        guard Set(specs.map(\.ip)).count == specs.count, Set(specs.map(\.name)).count == specs.count else {
            throw Failure.badPods("pod names and IPs must be unique")
        }
        let prefix = try given.map(Testbed.validPrefix) ?? "fy\(getpid())\(String(Testbed.instances.next(), radix: 36))"
        self.ip = ip
        self.nodeDefaultRoute = nodeDefaultRoute
        (self.prefix, node, client, clientLink, pods, logDirectory) = Testbed.layout(prefix: prefix, pods: specs)
        if let existing = ([node, client] + pods.map(\.namespace)).first(where: Testbed.exists) {
            kept = true  // someone else's: never torn down from here
            throw Failure.badPods("namespace \(existing.name) exists already (remove it with `ferry debug testbed down \(prefix)`)")
        }
        do {
            try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
            try build()
        } catch {
            teardown()
            throw error
        }
    }

    /// A bed made earlier by another process with `prefix` and `specs` (`ferry debug testbed serve`):
    /// nothing is created, and nothing is torn down when this value goes.
    public init(existing prefix: String, pods specs: [PodSpec]) throws {
        guard let ip = Testbed.ipExecutable else { throw Failure.cannotRunUnderCI("no `ip` executable (iproute2)") }
        self.ip = ip
        nodeDefaultRoute = false
        (self.prefix, node, client, clientLink, pods, logDirectory) = Testbed.layout(prefix: try Testbed.validPrefix(prefix), pods: specs)
        kept = true
        if let missing = ([node, client] + pods.map(\.namespace)).first(where: { !Testbed.exists($0) }) {
            throw Failure.badPods("no namespace \(missing.name) (make the bed with `ferry debug testbed up \(prefix)`)")
        }
        try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
    }

    /// The names of everything a bed with this prefix and these pods is made of.
    private static func layout(prefix: String, pods specs: [PodSpec]) -> (
        String, Namespace, Namespace, String, [Pod], String
    ) {
        let pods = specs.enumerated().map { index, spec in
            Pod(
                name: spec.name, ip: spec.ip, node: spec.node, namespace: Namespace("\(prefix)-pod\(index + 1)"),
                nodeLink: "\(prefix)p\(index + 1)")
        }
        let logs = (NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-testbed-\(prefix)")
        return (prefix, Namespace("\(prefix)-node"), Namespace("\(prefix)-client"), "\(prefix)c", pods, logs)
    }

    private static func validPrefix(_ prefix: String) throws -> String {
        guard (1...12).contains(prefix.count), prefix.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
            throw Failure.badPods("prefix \"\(prefix)\": 1-12 letters or digits")
        }
        return prefix
    }

    private static func exists(_ namespace: Namespace) -> Bool { FileManager.default.fileExists(atPath: "/run/netns/\(namespace.name)") }

    /// Leaves the namespaces and the processes spawned so far in place when this value goes (the bed of
    /// `ferry debug testbed up`); `Testbed.remove(prefix:)` removes them.
    public func keep() { lock.withLock { kept = true } }

    /// Stops every process in the namespaces whose names start with `prefix-` (SIGTERM, SIGKILL after
    /// 2 s), deletes those namespaces and the bed's log folder. Returns the namespaces deleted.
    @discardableResult
    public static func remove(prefix: String) throws -> [String] {
        let valid = try validPrefix(prefix)
        guard let ip = ipExecutable else { throw Failure.cannotRunUnderCI("no `ip` executable (iproute2)") }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [])
            .filter { $0.hasPrefix("\(valid)-") }.sorted()
        var pids: [Int32] = []
        for name in names {
            let listed = try execute([ip, "netns", "pids", name], timeout: .seconds(10))
            pids += listed.stdout.split(separator: "\n").compactMap { Int32($0) }
        }
        for pid in pids { kill(pid, SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(2)
        while pids.contains(where: { kill($0, 0) == 0 }) && ContinuousClock.now < deadline { usleep(20_000) }
        for pid in pids where kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        // Pods first, the node last: the node's ends of the links go with the pods' namespaces.
        for name in names.sorted(by: { ($0.hasSuffix("-node") ? 1 : 0) < ($1.hasSuffix("-node") ? 1 : 0) }) {
            _ = try execute([ip, "netns", "del", name], timeout: .seconds(30))
        }
        try? FileManager.default.removeItem(atPath: (NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-testbed-\(valid)"))
        return names
    }

    /// The bed as a table: role, namespace, address, node, pod and node-side link.
    public var table: String {
        func row(_ fields: [String]) -> String {
            zip(fields, [8, 19, 13, 9, 0]).map { field, width in width == 0 ? field : field.padding(toLength: max(width, field.count + 1), withPad: " ", startingAt: 0) }
                .joined()
        }
        var lines = [row(["ROLE", "NAMESPACE", "ADDRESS", "NODE", "POD (node-side link)"])]
        lines.append(row(["node", node.name, Testbed.nodeAddress, "-", "(forwards; ip_forward=1)"]))
        lines.append(row(["client", client.name, Testbed.clientAddress, "-", "(\(clientLink))"]))
        for pod in pods { lines.append(row(["pod", pod.namespace.name, pod.ip, pod.node, "\(pod.name) (\(pod.nodeLink))"])) }
        return lines.joined(separator: "\n") + "\n"
    }

    deinit { teardown() }

    private func build() throws {
        let node = node.name, client = client.name
        try addNamespace(self.node)
        try ip(["-n", node, "link", "set", "lo", "up"])
        try check(["ip", "netns", "exec", node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]) {
            try self.run(in: self.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        }

        try addNamespace(self.client)
        try ip(["-n", client, "link", "set", "lo", "up"])
        try ip(["-n", node, "link", "add", clientLink, "type", "veth", "peer", "name", "eth0", "netns", client])
        try ip(["-n", node, "addr", "add", "\(Testbed.nodeAddress)/24", "dev", clientLink])
        try ip(["-n", node, "link", "set", clientLink, "up"])
        try ip(["-n", client, "addr", "add", "\(Testbed.clientAddress)/24", "dev", "eth0"])
        try ip(["-n", client, "link", "set", "eth0", "up"])
        try ip(["-n", client, "route", "add", "default", "via", Testbed.nodeAddress, "dev", "eth0"])
        if nodeDefaultRoute { try ip(["-n", node, "route", "add", "default", "via", Testbed.clientAddress, "dev", clientLink]) }

        for pod in pods {
            let name = pod.namespace.name
            try addNamespace(pod.namespace)
            try ip(["-n", name, "link", "set", "lo", "up"])
            try ip(["-n", node, "link", "add", pod.nodeLink, "type", "veth", "peer", "name", "eth0", "netns", name])
            try ip(["-n", node, "addr", "add", "\(Testbed.nodeAddress)/32", "dev", pod.nodeLink])
            try ip(["-n", node, "link", "set", pod.nodeLink, "up"])
            try ip(["-n", node, "route", "add", "\(pod.ip)/32", "dev", pod.nodeLink])
            try ip(["-n", name, "addr", "add", "\(pod.ip)/32", "dev", "eth0"])
            try ip(["-n", name, "link", "set", "eth0", "up"])
            try ip(["-n", name, "route", "add", Testbed.nodeAddress, "dev", "eth0", "scope", "link"])
            try ip(["-n", name, "route", "add", "default", "via", Testbed.nodeAddress, "dev", "eth0"])
        }
    }

    private func addNamespace(_ namespace: Namespace) throws {
        try ip(["netns", "add", namespace.name])
        lock.lock()
        createdNamespaces.append(namespace)
        lock.unlock()
    }

    /// Runs `ip arguments…` in this (the test's) namespace, throwing when it fails.
    private func ip(_ arguments: [String]) throws {
        try check(["ip"] + arguments) { try Testbed.execute([self.ip] + arguments, timeout: .seconds(30)) }
    }

    private func check(_ command: [String], _ body: () throws -> CommandResult) throws {
        let result = try body()
        guard result.status == 0, !result.timedOut else { throw Failure.command(command, result) }
    }

    // MARK: Running things in namespaces

    /// The pod with this name.
    public func pod(named name: String) -> Pod? { pods.first { $0.name == name } }

    /// Runs `command` in `namespace` (`ip netns exec`) and waits for it, at most `timeout` (then it is
    /// killed and the result says `timedOut`). The command is found on `PATH` inside the namespace.
    public func run(in namespace: Namespace, _ command: [String], timeout: Duration = .seconds(60)) throws -> CommandResult {
        try Testbed.execute([ip, "netns", "exec", namespace.name] + command, timeout: timeout)
    }

    /// Starts `command` in `namespace` and returns at once; the process is killed by `teardown()`.
    /// Its output goes to `<logDirectory>/<logName>.stdout|.stderr` (see `log(_:)`).
    /// `ip netns exec` execs the command in place, so the process's PID is the command's.
    @discardableResult
    public func spawn(in namespace: Namespace, _ command: [String], logName: String? = nil) throws -> Process {
        lock.lock()
        let down = tornDown
        logCounter += 1
        let name = logName ?? "process-\(logCounter)"
        lock.unlock()
        guard !down else { throw Failure.badPods("the test bed was torn down") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ip)
        process.arguments = ["netns", "exec", namespace.name] + command
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try Testbed.createFile("\(logDirectory)/\(name).stdout")
        process.standardError = try Testbed.createFile("\(logDirectory)/\(name).stderr")
        try Testbed.launch(process)
        lock.lock()
        spawned.append(process)
        lock.unlock()
        return process
    }

    /// A TCP socket listening on `address` (port chosen by the kernel) inside `namespace`, for a server
    /// this process runs there (a fake API server the node's Ferry reaches). The socket is made on a
    /// thread of its own that enters the namespace (`setns`), so this process's other threads stay
    /// where they are; a socket keeps the namespace it was made in. Returns the descriptor and the port.
    public func listeningSocket(in namespace: Namespace, address: String = "127.0.0.1") throws -> (descriptor: Int32, port: Int) {
        try Testbed.listeningSocket(inNamespaceNamed: namespace.name, address: address)
    }

    /// `listeningSocket(in:address:)` for any named namespace (`ip netns add NAME`).
    public static func listeningSocket(inNamespaceNamed name: String, address: String = "127.0.0.1") throws -> (descriptor: Int32, port: Int) {
        let result = LockedResult()
        let thread = Thread {
            result.set(Result { try Testbed.listen(inNamespaceAt: "/var/run/netns/\(name)", address: address) })
        }
        thread.start()
        return try result.wait().get()
    }

    private static func listen(inNamespaceAt path: String, address: String) throws -> (descriptor: Int32, port: Int) {
        let namespace = open(path, O_RDONLY | O_CLOEXEC)
        guard namespace >= 0 else { throw Failure.systemCall("open \(path)", errno: errno) }
        defer { close(namespace) }
        guard ferry_setns_net(namespace) == 0 else { throw Failure.systemCall("setns \(path)", errno: errno) }
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socket >= 0 else { throw Failure.systemCall("socket", errno: errno) }
        var on: Int32 = 1
        setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, address, &socketAddress.sin_addr)
        let bound = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(socket, 128) == 0 else {
            let code = errno
            close(socket)
            throw Failure.systemCall("bind/listen \(address)", errno: code)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) }
        }
        return (socket, Int(UInt16(bigEndian: socketAddress.sin_port)))
    }

    /// What a spawned process has written so far.
    public func log(_ logName: String) -> (stdout: String, stderr: String) {
        let read = { (path: String) in (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        return (read("\(logDirectory)/\(logName).stdout"), read("\(logDirectory)/\(logName).stderr"))
    }

    /// Runs `ferry debug serve --name <pod> --tcp … --udp …` in every pod (log name `serve-<pod>`) and
    /// waits, at most 5 s in all, until each has printed its readiness line. Returns the servers, in
    /// the order of `pods`.
    @discardableResult
    public func startPodServers(ferryPath: String, tcp: [Int], udp: [Int] = []) throws -> [Process] {
        let ports = tcp.flatMap { ["--tcp", String($0)] } + udp.flatMap { ["--udp", String($0)] }
        var servers: [(Pod, Process)] = []
        for pod in pods {
            let process = try spawn(
                in: pod.namespace, [ferryPath, "debug", "serve", "--name", pod.name] + ports, logName: "serve-\(pod.name)")
            servers.append((pod, process))
        }
        let deadline = ContinuousClock.now + .seconds(5)
        for (pod, process) in servers {
            var ready = false
            while !ready && ContinuousClock.now < deadline {
                ready = log("serve-\(pod.name)").stdout.contains("serving \(pod.name) on ")
                if !ready {
                    if !process.isRunning { break }
                    usleep(20_000)
                }
            }
            if !ready {
                let output = log("serve-\(pod.name)")
                throw Failure.serverNotReady(pod: pod.name, stdout: output.stdout, stderr: output.stderr)
            }
        }
        return servers.map(\.1)
    }

    /// Kills every process this test bed spawned (SIGTERM; SIGKILL after 2 s) and deletes every
    /// namespace it created (which removes their links). Safe to call more than once.
    public func teardown() {
        lock.lock()
        if tornDown || kept {
            lock.unlock()
            return
        }
        tornDown = true
        let processes = spawned
        let namespaces = createdNamespaces
        spawned = []
        createdNamespaces = []
        lock.unlock()

        Testbed.stop(processes)
        for namespace in namespaces.reversed() {
            _ = try? Testbed.execute([ip, "netns", "del", namespace.name], timeout: .seconds(30))
        }
        try? FileManager.default.removeItem(atPath: logDirectory)
    }

    /// SIGTERM to each running process, up to 2 s for them to exit, then SIGKILL (and up to 2 s more).
    private static func stop(_ processes: [Process]) {
        for process in processes where process.isRunning { kill(process.processIdentifier, SIGTERM) }
        if !waitForExit(processes, within: .seconds(2)) {
            for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
            _ = waitForExit(processes, within: .seconds(2))
        }
    }

    private static func waitForExit(_ processes: [Process], within limit: Duration) -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if !processes.contains(where: \.isRunning) { return true }
            usleep(10_000)
        }
        return !processes.contains(where: \.isRunning)
    }

    // MARK: Whether the tests may run

    /// Whether the network-namespace tests may run here. Not root (or no `ip`): prints
    /// "skipped: needs root and network namespaces" and returns false, except under `CI=true`, where
    /// they must run: then it throws, so the test fails loudly.
    public static func skipUnlessRoot() throws -> Bool {
        var reason: String?
        if geteuid() != 0 {
            reason = "not root"
        } else if ipExecutable == nil {
            reason = "no `ip` executable (iproute2)"
        }
        guard let reason else { return true }
        if ProcessInfo.processInfo.environment["CI"] == "true" { throw Failure.cannotRunUnderCI(reason) }
        print("skipped: needs root and network namespaces (\(reason))")
        return false
    }

    /// `ip` on `PATH`, else in the sbin folders (which a non-login root shell may leave off `PATH`).
    public static let ipExecutable: String? = executable(named: "ip")

    /// The path of an executable on `PATH` or in the system folders (`sbin` ones included, where
    /// `PATH` may lack them), if any.
    public static func executable(named name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let folders = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        return folders.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    // MARK: Processes

    /// Runs `arguments` (the first is the executable's path) with stdin closed, output captured through
    /// files (no pipe to fill up), killed after `timeout`. Started with `launch(_:)`, so signals reach it.
    public static func execute(_ arguments: [String], timeout: Duration = .seconds(60)) throws -> CommandResult {
        let base = NSTemporaryDirectory() + "ferry-testbed-\(getpid())-\(UUID().uuidString)"
        let outPath = base + ".stdout", errPath = base + ".stderr"
        let out = try Testbed.createFile(outPath)
        let err = try Testbed.createFile(errPath)
        defer {
            try? out.close()
            try? err.close()
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        try Testbed.launch(process)
        var timedOut = false
        if exited.wait(timeout: .now() + .milliseconds(Int(timeout.components.seconds * 1000))) == .timedOut {
            timedOut = true
            kill(process.processIdentifier, SIGKILL)
            _ = exited.wait(timeout: .now() + .seconds(5))
        }
        let stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        return CommandResult(status: process.isRunning ? -1 : process.terminationStatus, stdout: stdout, stderr: stderr, timedOut: timedOut)
    }

    /// Starts `process` from a fresh thread that blocks no signal. Foundation's `Process` on Linux
    /// gives the child the signal mask of the thread that calls `run()`, and Dispatch and Swift
    /// concurrency threads (where tests run) block nearly every signal: a child started from them would
    /// begin with SIGTERM blocked, and only SIGKILL would stop it.
    public static func launch(_ process: Process) throws {
        let outcome = LaunchOutcome()
        let thread = Thread {
            var none = sigset_t()
            sigemptyset(&none)
            pthread_sigmask(SIG_SETMASK, &none, nil)
            do { try process.run() } catch { outcome.error = error }
            outcome.done.signal()
        }
        thread.start()
        outcome.done.wait()
        if let error = outcome.error { throw error }
    }

    /// `@unchecked Sendable`: `error` is written by the launching thread before it signals `done`, and
    /// read only after `done` was waited for.
    private final class LaunchOutcome: @unchecked Sendable {
        let done = DispatchSemaphore(value: 0)
        var error: Error?
    }

    private static func createFile(_ path: String) throws -> FileHandle {
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
        return try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    }

    /// Numbers the test beds of this process, so concurrent tests get distinct names.
    /// `@unchecked Sendable`: `value` is only touched with `lock` held.
    private final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0

        func next() -> Int {
            lock.lock()
            defer { lock.unlock() }
            value += 1
            return value
        }
    }

    /// The `ferry` executable built next to the running test bundle (the same scratch path), found by
    /// walking up from the test process's executable.
    public static let ferryExecutable: String? = {
        let starts = [URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]), Bundle.main.bundleURL, Bundle.main.executableURL]
            .compactMap { $0?.resolvingSymlinksInPath() }
        for start in starts {
            var folder = start.deletingLastPathComponent()
            for _ in 0..<4 {
                let candidate = folder.appendingPathComponent("ferry").path
                var isDirectory: ObjCBool = false
                if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue,
                    FileManager.default.isExecutableFile(atPath: candidate)
                {
                    return candidate
                }
                folder.deleteLastPathComponent()
            }
        }
        return nil
    }()
}

/// A result handed from one thread to another.
private final class LockedResult: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: Result<(descriptor: Int32, port: Int), Error>?

    func set(_ result: Result<(descriptor: Int32, port: Int), Error>) {
        condition.lock()
        value = result
        condition.signal()
        condition.unlock()
    }

    func wait() -> Result<(descriptor: Int32, port: Int), Error> {
        condition.lock()
        defer { condition.unlock() }
        while value == nil { condition.wait() }
        return value!
    }
}
