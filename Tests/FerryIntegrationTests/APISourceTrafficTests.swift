import FerryFakeAPIServer
import FerryTestbed
import Foundation
import Testing

/// `ferry run --kubeconfig` in the node namespace, its API server a fake one listening inside that
/// namespace (so Ferry reaches it at its own address, never through a ClusterIP it programs), with real
/// traffic that follows the watch events.
final class APIBed {
    let traffic: TrafficBed
    let server: FakeAPIServer
    let kubeconfig: String
    let folder: String

    init() throws {
        traffic = try TrafficBed()
        folder = NSTemporaryDirectory() + "ferry-api-bed-\(traffic.bed.prefix)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let tls = try FakeCertificates.generate(in: folder)
        server = FakeAPIServer(tls: tls, token: "node-token")
        let socket = try traffic.bed.listeningSocket(in: traffic.bed.node)
        _ = try server.start(boundSocket: socket.descriptor)
        kubeconfig = folder + "/kubeconfig"
        try server.kubeconfig(token: "node-token").write(toFile: kubeconfig, atomically: true, encoding: .utf8)
        server.upsert(.nodes, #"{"kind":"Node","apiVersion":"v1","metadata":{"name":"node-1","labels":{"topology.kubernetes.io/zone":"zone-a"}},"status":{"addresses":[{"type":"InternalIP","address":"\#(Testbed.nodeAddress)"}]}}"#)
        upsertService("web", ip: "10.96.0.10", nodePort: 30080)
        upsertSlice("web", addresses: ["10.244.1.2", "10.244.2.2", "10.244.2.3"])
    }

    deinit {
        server.stop()
        try? FileManager.default.removeItem(atPath: folder)
    }

    func upsertService(_ name: String, ip: String, nodePort: Int? = nil) {
        let type = nodePort == nil ? "ClusterIP" : "NodePort"
        let node = nodePort.map { #","nodePort":\#($0)"# } ?? ""
        server.upsert(
            .services,
            #"{"kind":"Service","apiVersion":"v1","metadata":{"name":"\#(name)","namespace":"default"},"spec":{"type":"\#(type)","clusterIP":"\#(ip)","ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":80\#(node)}]}}"#)
    }

    func upsertSlice(_ service: String, addresses: [String]) {
        let endpoints = addresses.map { address in
            let node = address.hasPrefix("10.244.1.") ? "node-1" : "node-2"
            return #"{"addresses":["\#(address)"],"conditions":{"ready":true},"nodeName":"\#(node)"}"#
        }.joined(separator: ",")
        // Stamped as the endpoints controller stamps a change, for the network programming latency.
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let trigger = formatter.string(from: Date())
        server.upsert(
            .endpointSlices,
            #"{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{"name":"\#(service)-x","namespace":"default","labels":{"kubernetes.io/service-name":"\#(service)"},"annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"\#(trigger)"}},"addressType":"IPv4","endpoints":[\#(endpoints)],"ports":[{"name":"http","protocol":"TCP","port":80}]}"#)
    }

    /// Starts Ferry on the API server; no --node-ip: the Node object's address serves NodePorts.
    func run(mode: String) throws -> Process {
        try traffic.bed.spawn(
            in: traffic.bed.node,
            [traffic.ferry, "run", "--mode", mode, "--kubeconfig", kubeconfig, "--node-name", "node-1", "--cluster-cidr", "10.244.0.0/16",
             "--min-sync-period", "0.1", "--conntrack-udp-timeout", "45"],
            logName: "ferry-\(mode)")
    }

    func log(_ mode: String) -> String { traffic.bed.log("ferry-\(mode)").stderr }

    /// `/metrics` from the node's namespace, parsed by Prometheus' own Python parser (Debian's
    /// python3-prometheus-client): each sample by name (labels appended as JSON).
    func metrics() throws -> [String: Double] {
        let scraped = try traffic.bed.run(in: traffic.bed.node, ["curl", "-sf", "http://127.0.0.1:10249/metrics"])
        guard scraped.status == 0 else { throw TrafficTestError("scrape failed: \(scraped)") }
        let file = NSTemporaryDirectory() + "ferry-metrics-\(getpid()).txt"
        try scraped.stdout.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let script = """
            import json, sys
            from prometheus_client.parser import text_string_to_metric_families
            out = {}
            for family in text_string_to_metric_families(open(sys.argv[1]).read()):
                for sample in family.samples:
                    out[sample.name + (json.dumps(sorted(sample.labels.items())) if sample.labels else "")] = sample.value
            print(json.dumps(out))
            """
        let parsed = try Testbed.execute(["/usr/bin/python3", "-c", script, file], timeout: .seconds(30))
        guard parsed.status == 0, let data = parsed.stdout.data(using: .utf8),
            let values = try JSONSerialization.jsonObject(with: data) as? [String: Double]
        else { throw TrafficTestError("the Prometheus parser refused the metrics: \(parsed)\n\(scraped.stdout.prefix(2000))") }
        return values
    }
}

@Suite("API server source: real traffic in network namespaces", .serialized)
struct APISourceTrafficTests {
    @Test(arguments: ["nftables", "userspace"])
    func trafficFollowsWatchEvents(mode: String) throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let bed = try APIBed()
        let ferry = try bed.run(mode: mode)
        defer {
            kill(ferry.processIdentifier, SIGTERM)
            ferry.waitUntilExit()
            _ = try? bed.traffic.bed.run(in: bed.traffic.bed.node, [bed.traffic.ferry, "cleanup"])
        }
        try waitUntil("ferry lists the API server and programs") { bed.log(mode).contains("synced") }
        #expect(bed.log(mode).contains("initial sync done"), "\(bed.log(mode))")
        // The UDP conntrack timeout of the node's namespace, as kube-proxy sets it.
        let timeout = try bed.traffic.bed.run(in: bed.traffic.bed.node, ["cat", "/proc/sys/net/netfilter/nf_conntrack_udp_timeout"])
        #expect(timeout.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "45", "\(timeout)")
        // kube-proxy's health endpoints, on its default port in the node's namespace.
        for path in ["/healthz", "/livez"] {
            let health = try bed.traffic.bed.run(
                in: bed.traffic.bed.node, ["curl", "-s", "-w", " %{http_code}", "http://127.0.0.1:10256\(path)"])
            #expect(health.stdout.hasSuffix(" 200") && health.stdout.contains(#""nodeEligible": true"#), "\(path): \(health)")
        }

        let clusterIP = try bed.traffic.probe(from: bed.traffic.podNamespace("10.244.2.2"), to: "10.96.0.10:80", count: 60)
        #expect(Set(clusterIP.answers.keys) == bed.traffic.allPods, "\(clusterIP.answers)")
        #expect(clusterIP.failures == 0)
        let nodePort = try bed.traffic.probe(from: bed.traffic.bed.client, to: "\(Testbed.nodeAddress):30080", count: 60)
        #expect(Set(nodePort.answers.keys) == bed.traffic.allPods, "\(nodePort.answers)")

        let before = try bed.metrics()
        #expect((before["kubeproxy_sync_proxy_rules_last_timestamp_seconds"] ?? 0) > 1_700_000_000, "\(before)")
        #expect((before["kubeproxy_sync_proxy_rules_duration_seconds_count"] ?? 0) >= 1)

        // An endpoint leaves: new connections avoid it once the watch event is programmed.
        bed.upsertSlice("web", addresses: ["10.244.1.2", "10.244.2.2"])
        let removed = bed.traffic.podName("10.244.2.3")
        try waitUntil("the removed endpoint gets no more connections") {
            let report = try? bed.traffic.probe(from: bed.traffic.bed.client, to: "10.96.0.10:80", count: 30)
            return report.map { $0.answers[removed] == nil && $0.total == 30 } ?? false
        }

        let after = try bed.metrics()
        #expect(
            (after["kubeproxy_sync_proxy_rules_endpoint_changes_total"] ?? 0) > (before["kubeproxy_sync_proxy_rules_endpoint_changes_total"] ?? 0),
            "\(after)")
        #expect((after["kubeproxy_network_programming_duration_seconds_count"] ?? 0) >= 1, "the change's trigger time was measured")
        if mode == "userspace" {
            #expect((after["ferry_accepted_total"] ?? 0) >= 120, "\(after)")
            // Per service port: the ClusterIP probes (internal) and the NodePort probes (external) of web.
            let perPort = after.filter { $0.key.hasPrefix("ferry_userspace_connections_total") && $0.key.contains("default/web") }
            #expect(perPort.count == 2 && perPort.values.allSatisfy { $0 >= 60 }, "\(perPort)")
        }

        // A new service appears and is served.
        bed.upsertService("api", ip: "10.96.0.30")
        bed.upsertSlice("api", addresses: ["10.244.2.3"])
        try waitUntil("the new service answers") {
            let report = try? bed.traffic.probe(from: bed.traffic.bed.client, to: "10.96.0.30:80", count: 5, extra: ["--timeout-ms", "300"])
            return report?.answers == [removed: 5]
        }

        // The watch is cut: Ferry resumes and keeps following.
        bed.server.cutWatches(midEvent: true)
        bed.upsertSlice("web", addresses: ["10.244.2.3"])
        try waitUntil("after a cut watch, the next change still arrives") {
            let report = try? bed.traffic.probe(from: bed.traffic.bed.client, to: "10.96.0.10:80", count: 10)
            return report?.answers == [removed: 10]
        }
        let final = try bed.metrics()
        #expect((final["ferry_api_lists_total"] ?? 0) >= 3 && (final["ferry_api_watches_total"] ?? 0) >= 4, "\(final)")
        #expect(ferry.isRunning)
    }
}
