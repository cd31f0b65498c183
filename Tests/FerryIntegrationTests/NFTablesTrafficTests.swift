import FerryTestbed
import Foundation
import Testing

/// Manifests for the traffic tests: the walk-through pods (10.244.1.2 on node-1, 10.244.2.2 and
/// 10.244.2.3 on node-2) behind several services.
/// `guarded` is a LoadBalancer (198.51.100.30:80, NodePort 30443) open to `sourceRanges` only.
func trafficManifests(withoutPod3: Bool = false, without removed: String? = nil, sourceRanges: String = "[10.0.0.2/32, 10.0.0.16/28]")
    -> String
{
    let endpoints = [("10.244.1.2", "node-1"), ("10.244.2.2", "node-2"), ("10.244.2.3", "node-2")]
        .filter { !(withoutPod3 && $0.0 == "10.244.2.3") && $0.0 != removed }
        .map { "{addresses: [\($0.0)], nodeName: \($0.1)}" }.joined(separator: ", ")
    func service(
        _ name: String, _ spec: String, ports: String = "[{name: http, port: 80}]", slicePorts: String = "[{name: http, port: 80}]",
        withEndpoints: Bool = true, status: String? = nil
    ) -> String {
        var text = """
            apiVersion: v1
            kind: Service
            metadata: {name: \(name)}
            spec: {\(spec), ports: \(ports)}
            """
        if let status { text += "\nstatus: \(status)" }
        if withEndpoints {
            text += """

                ---
                apiVersion: discovery.k8s.io/v1
                kind: EndpointSlice
                metadata: {name: \(name)-x, labels: {kubernetes.io/service-name: \(name)}}
                addressType: IPv4
                endpoints: [\(endpoints)]
                ports: \(slicePorts)
                """
        }
        return text
    }
    return [
        service("web", "type: NodePort, clusterIP: 10.96.0.10", ports: "[{name: http, port: 80, nodePort: 30080}]"),
        service(
            "local", "type: NodePort, clusterIP: 10.96.0.11, externalTrafficPolicy: Local",
            ports: "[{name: http, port: 80, nodePort: 30081}]"),
        service("sticky", "clusterIP: 10.96.0.12, sessionAffinity: ClientIP"),
        service("internal", "clusterIP: 10.96.0.13, internalTrafficPolicy: Local"),
        service(
            "dns", "type: NodePort, clusterIP: 10.96.0.53", ports: "[{name: dns, protocol: UDP, port: 53, nodePort: 30053}]",
            slicePorts: "[{name: dns, protocol: UDP, port: 53}]"),
        service("empty", "type: NodePort, clusterIP: 10.96.0.20", ports: "[{name: http, port: 80, nodePort: 30090}]", withEndpoints: false),
        service(
            "guarded", "type: LoadBalancer, clusterIP: 10.96.0.31, loadBalancerSourceRanges: \(sourceRanges)",
            ports: "[{name: http, port: 80, nodePort: 30443}]", status: "{loadBalancer: {ingress: [{ip: 198.51.100.30}]}}"),
    ].joined(separator: "\n---\n") + "\n"
}

/// What `ferry debug probe --json` reports.
struct ProbeReport: Decodable {
    struct Failed: Decodable { var refused: Int; var timeout: Int; var other: Int }
    var answers: [String: Int]
    var failed: Failed
    var sources: [String]
    var elapsedSeconds: Double

    var total: Int { answers.values.reduce(0, +) }
    var failures: Int { failed.refused + failed.timeout + failed.other }
}

/// A test bed with pod servers (TCP 80, UDP 53), manifests in a temporary folder, and helpers to run
/// Ferry in the node namespace and probes from anywhere.
final class TrafficBed {
    let bed: Testbed
    let ferry: String
    let manifests: String

    init() throws {
        guard let ferry = Testbed.ferryExecutable else { throw TrafficTestError("no ferry executable next to the tests") }
        self.ferry = ferry
        bed = try Testbed(nodeDefaultRoute: true)
        manifests = NSTemporaryDirectory() + "ferry-traffic-\(bed.prefix)"
        try FileManager.default.createDirectory(atPath: manifests, withIntermediateDirectories: true)
        try write(trafficManifests())
        _ = try bed.startPodServers(ferryPath: ferry, tcp: [80], udp: [53])
    }

    deinit {
        _ = try? bed.run(in: bed.node, [ferry, "cleanup"])
        bed.teardown()
        try? FileManager.default.removeItem(atPath: manifests)
    }

    func write(_ text: String) throws {
        try text.write(toFile: manifests + "/services.yaml", atomically: true, encoding: .utf8)
    }

    var nodeFlags: [String] {
        ["--manifests", manifests, "--node-name", "node-1", "--node-ip", Testbed.nodeAddress, "--cluster-cidr", "10.244.0.0/16"]
    }

    @discardableResult
    func ferryInNode(_ arguments: [String]) throws -> Testbed.CommandResult {
        let result = try bed.run(in: bed.node, [ferry] + arguments)
        guard result.status == 0 else { throw TrafficTestError("ferry \(arguments.joined(separator: " ")) failed: \(result)") }
        return result
    }

    func sync() throws { try ferryInNode(["sync"] + nodeFlags) }

    func probe(from namespace: Testbed.Namespace, to destination: String, udp: Bool = false, count: Int = 60, extra: [String] = []) throws
        -> ProbeReport
    {
        var command = [ferry, "debug", "probe", "--to", destination, "--count", String(count), "--timeout-ms", "1000", "--json"] + extra
        if udp { command += ["--protocol", "udp"] }
        let result = try bed.run(in: namespace, command, timeout: .seconds(120))
        guard let data = result.stdout.data(using: .utf8), let report = try? JSONDecoder().decode(ProbeReport.self, from: data) else {
            throw TrafficTestError("probe \(destination) gave no report: \(result)")
        }
        return report
    }

    func podNamespace(_ ip: String) -> Testbed.Namespace { bed.pods.first { $0.ip == ip }!.namespace }
    func podName(_ ip: String) -> String { bed.pods.first { $0.ip == ip }!.name }
    var allPods: Set<String> { Set(bed.pods.map(\.name)) }
}

@Suite("nftables data plane: real traffic in network namespaces", .serialized)
struct NFTablesTrafficTests {
    @Test func clusterIPFromAPodAndFromTheNodeReachesEveryBackend() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.sync()
        let fromPod = try bed.probe(from: bed.podNamespace("10.244.2.2"), to: "10.96.0.10:80", count: 90)
        #expect(Set(fromPod.answers.keys) == bed.allPods, "\(fromPod.answers)")
        #expect(fromPod.failures == 0)
        let fromNode = try bed.probe(from: bed.bed.node, to: "10.96.0.10:80", count: 90)
        #expect(Set(fromNode.answers.keys) == bed.allPods, "\(fromNode.answers)")
        #expect(fromNode.failures == 0)
    }

    @Test func nodePortFromTheClientReachesEveryBackendMasqueraded() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.sync()
        let report = try bed.probe(from: bed.bed.client, to: "\(Testbed.nodeAddress):30080", count: 90)
        #expect(Set(report.answers.keys) == bed.allPods, "\(report.answers)")
        #expect(report.failures == 0)
        #expect(report.sources == [Testbed.nodeAddress])
    }

    @Test func localPolicyKeepsTheClientAddressAndThisNodesEndpoints() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.sync()
        let report = try bed.probe(from: bed.bed.client, to: "\(Testbed.nodeAddress):30081", count: 30)
        #expect(report.answers == [bed.podName("10.244.1.2"): 30])
        #expect(report.sources == [Testbed.clientAddress])
    }

    /// internalTrafficPolicy: Local from outside the pod network: this node's endpoint only, and
    /// masqueraded (the pod sees the node), as kube-proxy masquerades before the policy split.
    @Test func internalLocalPolicyFromOutsideIsMasqueraded() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.sync()
        let report = try bed.probe(from: bed.bed.client, to: "10.96.0.13:80", count: 20)
        #expect(report.answers == [bed.podName("10.244.1.2"): 20], "\(report.answers)")
        #expect(report.sources == [Testbed.nodeAddress], "\(report.sources)")
        // From a pod it is not masqueraded: the pod's own address arrives.
        let fromPod = try bed.probe(from: bed.podNamespace("10.244.2.2"), to: "10.96.0.13:80", count: 10)
        #expect(fromPod.answers == [bed.podName("10.244.1.2"): 10] && fromPod.sources == ["10.244.2.2"], "\(fromPod)")
    }

    /// The source a pod sees, case by case: a pod reaching itself through its service (hairpin) sees the
    /// node; under --masquerade-all every ClusterIP connection is masqueraded, Local internal policy
    /// included; with no pod network known (no --cluster-cidr) an outside client keeps its address.
    @Test func masqueradingCasesAsThePodSeesThem() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.sync()
        let hairpin = try bed.probe(from: bed.podNamespace("10.244.1.2"), to: "10.96.0.10:80", count: 60)
        #expect(hairpin.failures == 0 && hairpin.answers.count == 3, "\(hairpin)")
        #expect(hairpin.sources == [Testbed.nodeAddress, "10.244.1.2"], "itself through the node, the others directly: \(hairpin.sources)")

        try bed.ferryInNode(["sync", "--masquerade-all"] + bed.nodeFlags)
        for destination in ["10.96.0.10:80", "10.96.0.13:80"] {
            let report = try bed.probe(from: bed.podNamespace("10.244.2.2"), to: destination, count: 20)
            #expect(report.failures == 0 && report.sources == [Testbed.nodeAddress], "masquerade-all, \(destination): \(report)")
        }

        let withoutPodNetwork = bed.nodeFlags.prefix { $0 != "--cluster-cidr" }
        try bed.ferryInNode(["sync"] + withoutPodNetwork)
        let outside = try bed.probe(from: bed.bed.client, to: "10.96.0.10:80", count: 20)
        #expect(outside.failures == 0 && outside.sources == [Testbed.clientAddress], "no pod network known: \(outside)")
    }

    /// `--nodeport-addresses primary`: the NodePort answers on the node's primary address only; on a
    /// second address of the node it is not forwarded (nothing listens there: refused).
    @Test func nodePortsOnThePrimaryAddressOnly() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        let added = try bed.bed.run(in: bed.bed.node, ["ip", "addr", "add", "10.0.0.9/24", "dev", bed.bed.clientLink])
        guard added.status == 0 else { throw TrafficTestError("ip addr add: \(added)") }
        try bed.ferryInNode(["sync"] + bed.nodeFlags + ["--node-ip", "10.0.0.9"])
        #expect(try bed.probe(from: bed.bed.client, to: "10.0.0.9:30080", count: 3).total == 3, "every address by default")
        try bed.ferryInNode(["sync", "--nodeport-addresses", "primary"] + bed.nodeFlags + ["--node-ip", "10.0.0.9"])
        #expect(try bed.probe(from: bed.bed.client, to: "\(Testbed.nodeAddress):30080", count: 3).total == 3)
        let secondary = try bed.probe(from: bed.bed.client, to: "10.0.0.9:30080", count: 3)
        #expect(secondary.total == 0 && secondary.failed.refused == 3, "\(secondary.failed)")
    }

    /// A ClusterIP on a port (or protocol) no service port serves is refused at once, from a pod, from
    /// the node and from outside, instead of leaving by the default route.
    @Test func anUnservedPortOfAClusterIPIsRefused() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.sync()
        for namespace in [bed.podNamespace("10.244.2.2"), bed.bed.node, bed.bed.client] {
            let report = try bed.probe(from: namespace, to: "10.96.0.10:81", count: 5)
            #expect(report.failed.refused == 5, "\(namespace): \(report.failed)")
            #expect(report.elapsedSeconds < 1, "\(namespace): refusals should be immediate")
        }
        // The served port still works.
        #expect(try bed.probe(from: bed.bed.client, to: "10.96.0.10:80", count: 10).failures == 0)
    }

    /// With --service-cluster-ip-range, an unallocated service address gets no answer and no refusal:
    /// the packet is dropped on the node instead of leaving it.
    @Test func anUnallocatedServiceAddressIsDropped() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.ferryInNode(["sync", "--service-cluster-ip-range", "10.96.0.0/12"] + bed.nodeFlags)
        let chain = try bed.bed.run(in: bed.bed.node, ["nft", "list", "chain", "ip", "ferry", "cluster-ips-check"]).stdout
        // (nft prints Ferry's prefix match as the raw payload compare it is: `@nh,128,16 & 0xfff0 == 0xa60`.)
        #expect(chain.contains(" drop"), "\(chain)")
        for namespace in [bed.podNamespace("10.244.2.2"), bed.bed.client] {
            let report = try bed.probe(from: namespace, to: "10.96.200.200:80", count: 3, extra: ["--timeout-ms", "400"])
            #expect(report.total == 0 && report.failed.refused == 0 && report.failed.timeout == 3, "\(namespace): \(report.failed)")
        }
        #expect(try bed.probe(from: bed.bed.client, to: "10.96.0.10:80", count: 10).failures == 0)
        #expect(try bed.probe(from: bed.bed.client, to: "10.96.0.10:81", count: 3).failed.refused == 3)
    }

    /// loadBalancerSourceRanges: the client has three addresses, two of them in the ranges; pods and the
    /// node are clients like any other (the node is let through once its address is in a range); the
    /// NodePort of the same service is not filtered, as in kube-proxy.
    @Test func loadBalancerSourceRangesBlockOtherSources() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        for address in ["10.0.0.3/24", "10.0.0.17/24"] {
            let added = try bed.bed.run(in: bed.bed.client, ["ip", "addr", "add", address, "dev", "eth0"])
            guard added.status == 0 else { throw TrafficTestError("ip addr add \(address): \(added)") }
        }
        try bed.sync()
        let loadBalancer = "198.51.100.30:80"
        func probe(_ namespace: Testbed.Namespace, from source: String? = nil, to destination: String = loadBalancer) throws -> ProbeReport {
            try bed.probe(from: namespace, to: destination, count: 4, extra: ["--timeout-ms", "400"] + (source.map { ["--from", $0] } ?? []))
        }
        for source in ["10.0.0.2", "10.0.0.17"] {
            let report = try probe(bed.bed.client, from: source)
            #expect(report.total == 4, "allowed \(source): \(report.failed)")
        }
        let blocked = try probe(bed.bed.client, from: "10.0.0.3")
        #expect(blocked.total == 0 && blocked.failed.timeout == 4, "blocked 10.0.0.3: \(blocked.failed)")
        let fromPod = try probe(bed.podNamespace("10.244.2.2"))
        #expect(fromPod.total == 0 && fromPod.failed.timeout == 4, "a pod outside the ranges: \(fromPod.failed)")
        let fromNode = try probe(bed.bed.node)
        #expect(fromNode.total == 0 && fromNode.failed.timeout == 4, "the node outside the ranges: \(fromNode.failed)")
        #expect(try probe(bed.bed.client, from: "10.0.0.3", to: "\(Testbed.nodeAddress):30443").total == 4, "the NodePort is not filtered")

        // The node's address in a range: the node gets through; a pod's range lets the pod through.
        try bed.write(trafficManifests(sourceRanges: "[10.0.0.1/32, 10.244.2.2/32]"))
        try bed.sync()
        #expect(try probe(bed.bed.node).total == 4)
        #expect(try probe(bed.podNamespace("10.244.2.2")).total == 4)
        #expect(try probe(bed.bed.client).total == 0)
    }

    @Test func aServiceWithoutEndpointsIsRefusedAtOnce() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.sync()
        for destination in ["10.96.0.20:80", "\(Testbed.nodeAddress):30090"] {
            let report = try bed.probe(from: bed.bed.client, to: destination, count: 20)
            #expect(report.failed.refused == 20, "\(destination): \(report.failed)")
            #expect(report.elapsedSeconds < 1, "\(destination): refusals should be immediate")
        }
    }

    @Test func aRemovedEndpointGetsNoNewConnections() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.sync()
        try bed.write(trafficManifests(withoutPod3: true))
        try bed.sync()
        let report = try bed.probe(from: bed.bed.client, to: "10.96.0.10:80", count: 90)
        #expect(Set(report.answers.keys) == bed.allPods.subtracting([bed.podName("10.244.2.3")]), "\(report.answers)")
        #expect(report.failures == 0)
    }

    @Test func sessionAffinitySticks() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.sync()
        let report = try bed.probe(from: bed.bed.client, to: "10.96.0.12:80", count: 40, extra: ["--concurrency", "1"])
        #expect(report.answers.count == 1, "\(report.answers)")
        #expect(report.total == 40)
    }

    @Test func udpServiceReachesEveryBackend() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.sync()
        for (namespace, destination) in [
            (bed.bed.client, "10.96.0.53:53"), (bed.podNamespace("10.244.2.2"), "10.96.0.53:53"),
            (bed.bed.client, "\(Testbed.nodeAddress):30053"),
        ] {
            let report = try bed.probe(from: namespace, to: destination, udp: true, count: 90)
            #expect(Set(report.answers.keys) == bed.allPods, "\(destination): \(report.answers)")
            #expect(report.failures == 0)
        }
    }

    @Test func theKernelListsWhatTheDryRunPrintsAndCleanupRemovesEverything() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        try bed.sync()
        let dryRun = try bed.ferryInNode(["sync", "--dry-run"] + bed.nodeFlags).stdout
        let listed = try bed.bed.run(in: bed.bed.node, ["nft", "list", "table", "ip", "ferry"])
        #expect(listed.status == 0)
        #expect(normalizedRuleset(listed.stdout) == normalizedRuleset(dryRun))
        let second = try bed.ferryInNode(["sync"] + bed.nodeFlags).stdout
        #expect(second.contains(": 0 operations"), "a second sync sends nothing: \(second)")
        try bed.ferryInNode(["cleanup"])
        try bed.ferryInNode(["cleanup"])
        let tables = try bed.bed.run(in: bed.bed.node, ["nft", "list", "tables"])
        #expect(!tables.stdout.contains("ferry"), "\(tables.stdout)")
    }

    /// A UDP client keeps its source port; conntrack pins it to the endpoint it first reached. When that
    /// endpoint is removed, Ferry deletes the flow, so the client's next datagrams reach a live endpoint.
    /// (Among TCP entries: the kernel is asked for the UDP ones only, and must still give this one.)
    @Test func aUDPClientMovesOffARemovedEndpoint() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        let ferry = try bed.bed.spawn(in: bed.bed.node, [bed.ferry, "run", "--min-sync-period", "0.1"] + bed.nodeFlags, logName: "ferry")
        defer { kill(ferry.processIdentifier, SIGTERM) }
        try waitUntil("ferry programs its rules") { bed.bed.log("ferry").stderr.contains("synced") }
        let pinned = try bed.probe(from: bed.bed.client, to: "10.96.0.53:53", udp: true, count: 5, extra: ["--source-port", "40053"])
        #expect(pinned.answers.count == 1 && pinned.total == 5, "one flow, one endpoint: \(pinned.answers)")
        guard let first = pinned.answers.keys.first, let ip = bed.bed.pods.first(where: { $0.name == first })?.ip else { return }
        let tcp = try bed.probe(from: bed.bed.client, to: "10.96.0.10:80", count: 200)
        #expect(tcp.total == 200)
        try bed.write(trafficManifests(without: ip))
        try waitUntil("ferry removes \(ip) and deletes its UDP flows") { bed.bed.log("ferry").stderr.contains("udp-flows-deleted=1") }
        let moved = try bed.probe(from: bed.bed.client, to: "10.96.0.53:53", udp: true, count: 5, extra: ["--source-port", "40053"])
        #expect(moved.total == 5, "\(moved.failed)")
        #expect(moved.answers[first] == nil, "the flow still goes to the removed endpoint \(first): \(moved.answers)")
    }

    /// Someone flushes Ferry's dispatch chain; the periodic resync notices (the nftables generation moved)
    /// and puts it back.
    @Test func tamperingIsRepairedAtThePeriodicResync() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        let ferry = try bed.bed.spawn(
            in: bed.bed.node, [bed.ferry, "run", "--min-sync-period", "0.1", "--sync-period", "1"] + bed.nodeFlags, logName: "ferry")
        defer { kill(ferry.processIdentifier, SIGTERM) }
        try waitUntil("ferry programs its rules") { bed.bed.log("ferry").stderr.contains("synced") }
        _ = try bed.bed.run(in: bed.bed.node, ["nft", "flush", "chain", "ip", "ferry", "services"])
        let broken = try bed.probe(from: bed.bed.client, to: "10.96.0.10:80", count: 3, extra: ["--timeout-ms", "300"])
        #expect(broken.total == 0, "with the dispatch chain flushed, nothing is forwarded")
        try waitUntil("ferry repairs the chain") {
            let listed = (try? bed.bed.run(in: bed.bed.node, ["nft", "list", "chain", "ip", "ferry", "services"]))?.stdout ?? ""
            return listed.contains("vmap @service-ips")
        }
        let repaired = try bed.probe(from: bed.bed.client, to: "10.96.0.10:80", count: 30)
        #expect(repaired.total == 30)
    }

    static let restartProbes = 40_000

    @Test func aRestartUnderTrafficLosesNoConnection() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try TrafficBed()
        let first = try bed.bed.spawn(in: bed.bed.node, [bed.ferry, "run", "--min-sync-period", "0.1"] + bed.nodeFlags, logName: "ferry-1")
        try waitUntil("the first ferry programs its rules") {
            (try? bed.bed.run(in: bed.bed.node, ["nft", "list", "map", "ip", "ferry", "service-ips"]))?.stdout.contains("10.96.0.10")
                ?? false
        }
        let traffic = try bed.bed.spawn(
            in: bed.bed.client,
            [bed.ferry, "debug", "probe", "--to", "10.96.0.10:80", "--count", "\(Self.restartProbes)", "--concurrency", "4", "--json"],
            logName: "probe")
        Thread.sleep(forTimeInterval: 0.3)
        kill(first.processIdentifier, SIGTERM)
        first.waitUntilExit()
        let second = try bed.bed.spawn(
            in: bed.bed.node, [bed.ferry, "run", "--min-sync-period", "0.1"] + bed.nodeFlags, logName: "ferry-2")
        do {
            try waitUntil("the second ferry to converge the existing table") { bed.bed.log("ferry-2").stderr.contains("synced") }
        } catch {
            Issue.record("ferry-1: \(bed.bed.log("ferry-1")); ferry-2: \(bed.bed.log("ferry-2")); running: \(second.isRunning)")
            throw error
        }
        #expect(traffic.isRunning, "the traffic should still be flowing while the second ferry converges")
        traffic.waitUntilExit()
        kill(second.processIdentifier, SIGTERM)
        second.waitUntilExit()
        let output = bed.bed.log("probe").stdout
        let report = try JSONDecoder().decode(ProbeReport.self, from: Data(output.utf8))
        #expect(report.total == Self.restartProbes, "\(report.failed); ferry-2 log: \(bed.bed.log("ferry-2").stderr)")
        #expect(report.failures == 0)
        let log = bed.bed.log("ferry-2").stderr
        #expect(log.contains("read-back=true") && log.contains("operations=0"), "the restart converged without changing anything: \(log)")
    }
}

/// A ruleset's text as a sorted list of lines, with `elements = { a, b }` split one element a line, so
/// that `nft list` and Ferry's renderer compare by content.
func normalizedRuleset(_ text: String) -> [String] {
    var lines: [String] = []
    var pendingElements = ""
    for raw in text.split(separator: "\n") {
        let line = raw.trimmingCharacters(in: .whitespaces)
        if line.hasPrefix("elements = {") || !pendingElements.isEmpty {
            pendingElements += " " + line
            if line.hasSuffix("}") {
                let inner = pendingElements.drop { $0 != "{" }.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                lines += inner.split(separator: ",").map { "element " + $0.trimmingCharacters(in: .whitespaces) }
                pendingElements = ""
            }
            continue
        }
        if !line.isEmpty { lines.append(line) }
    }
    return lines.sorted()
}

/// Polls `condition` for up to `seconds`.
func waitUntil(_ what: String, seconds: Double = 10, _ condition: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return }
        Thread.sleep(forTimeInterval: 0.1)
    }
    throw TrafficTestError("timed out waiting for \(what)")
}

struct TrafficTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
