@testable import FerryBench
import FerryCore
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing

@Suite("ferry bench: its manifests, its parsers and its report")
struct BenchReportTests {
    static let pods = [("pod-1", "10.244.1.2", "node-1"), ("pod-2", "10.244.2.2", "node-2"), ("pod-3", "10.244.2.3", "node-2")]

    @Test func theBenchManifestsAreValidAndLeaveOutTheRemovedPod() {
        let all = ManifestReader.read(Data(LoadBalancingBench.manifests(pods: Self.pods).utf8), format: .yaml, source: "bench")
        #expect(all.errors.isEmpty, "\(all.errors)")
        #expect(all.objects.count == 6)
        let without = LoadBalancingBench.manifests(pods: Self.pods, without: "pod-3")
        #expect(!without.contains("10.244.2.3") && without.contains("10.244.2.2"))
    }

    @Test func wrkOutputIsRead() {
        let text = """
            Running 2s test @ http://10.96.0.10:8081/
              2 threads and 32 connections
              Latency Distribution
                 50%    1.53ms
                 75%    2.02ms
                 90%    2.71ms
                 99%  812.00us
              9123 requests in 2.00s, 1.40MB read
            Requests/sec:   4561.50
            Transfer/sec:    716.11KB
            """
        let parsed = WrkOutput(text)
        #expect(parsed?.requestsPerSecond == 4561.5 && parsed?.p99Microseconds == 812)
        #expect(WrkOutput.microseconds("2.00s") == 2_000_000 && WrkOutput.microseconds("1.5ms") == 1_500)
        #expect(WrkOutput("no figures") == nil)
    }

    @Test func theReportHasEveryFigureAndItsChartsAreWellFormed() throws {
        var results = BenchResults(profile: "quick", date: "2026-12-03T00:00:00Z", cores: 2)
        let figure = DataPathFigures(
            target: "Ferry nftables", gbitOneStream: 10, gbitFourStreams: 12, connectionsPerSecond: 5_000, p50Microseconds: 1_000,
            p90Microseconds: 2_000, p99Microseconds: 3_000, p999Microseconds: 4_000, failures: 0, machineCPUSecondsPerGB: 0.5,
            machineCPUSecondsPerThousandConnections: 0.3, httpRequestsPerSecond: 4_000, httpP99Microseconds: 5_000,
            udpQueriesPerSecond: 30_000, udpP99Microseconds: 900, udpLost: 0, spread: ["pod-1": 10, "pod-2": 11, "pod-3": 9])
        var peer = figure
        peer.target = "kube-proxy ruleset (nft -f)"
        peer.connectionsPerSecond = 4_000
        results.dataPath = [figure, peer]
        results.balance = [BalanceFigures(balancer: "userspace round-robin", spread: Spread(counts: ["pod-1": 5, "pod-2": 5, "pod-3": 5]), failures: 0)]
        results.changes = [ChangeFigures(target: "Ferry nftables", removalMilliseconds: 120, additionMilliseconds: 130, connections: 900, failures: 0)]
        let markdown = BenchReport.markdown(results, command: "ferry bench --quick")
        #expect(markdown.contains("| Ferry nftables | 10.00 Gbit/s | 12.00 Gbit/s | 5000 |"))
        #expect(BenchReport.ratios(results).first?.contains("conn/s 1.25x") == true)
        for (file, svg) in BenchReport.charts(results) {
            let parser = XMLParser(data: Data(svg.utf8))
            #expect(parser.parse(), "\(file) is not well-formed XML")
        }
    }

    @Test func aPairedTargetsSlicesAddUpAndTheirNoiseStandsBesideTheRatio() {
        func report(_ connections: Int, p99: UInt64, pods: [String: Int]) -> LoadReport {
            LoadReport(
                connections: connections, failures: 1, seconds: 1, perSecond: Double(connections), p50Microseconds: 100, p90Microseconds: 200,
                p99Microseconds: p99, p999Microseconds: 400, pods: pods, errors: [:])
        }
        var ferry = DataPathSample()
        ferry.addBulk(streams: 1, bitsPerSecond: 9e9, bytes: 1_000_000_000, cpu: 0.5)
        ferry.addBulk(streams: 1, bitsPerSecond: 11e9, bytes: 1_000_000_000, cpu: 0.5)
        ferry.addConnections(report(4_500, p99: 1_000, pods: ["pod-1": 2_000, "pod-2": 2_500]), cpu: 1)
        ferry.addConnections(report(5_500, p99: 3_000, pods: ["pod-1": 3_000, "pod-3": 2_500]), cpu: 1)
        let figures = ferry.figures(target: "Ferry nftables")
        #expect(figures.gbitOneStream == 10)
        #expect(figures.connectionsPerSecond == 5_000)
        #expect(figures.p99Microseconds == 2_000)
        #expect(figures.failures == 2)
        #expect(figures.spread == ["pod-1": 5_000, "pod-2": 2_500, "pod-3": 2_500])
        #expect(figures.machineCPUSecondsPerGB == 0.5)
        #expect(figures.machineCPUSecondsPerThousandConnections == 0.2)
        // (max - min) / mean of the target's own slices; a figure measured once has none.
        #expect(figures.sliceSpread?["1 stream"] == 0.2)
        #expect(figures.sliceSpread?["conn/s"] == 0.2)
        #expect(figures.sliceSpread?["4 streams"] == nil)

        var kube = DataPathSample()
        kube.addBulk(streams: 1, bitsPerSecond: 10e9, bytes: 1_000_000_000, cpu: 0.5)
        kube.addBulk(streams: 1, bitsPerSecond: 10e9, bytes: 1_000_000_000, cpu: 0.5)
        kube.addConnections(report(4_000, p99: 2_000, pods: [:]), cpu: 1)
        kube.addConnections(report(6_000, p99: 2_000, pods: [:]), cpu: 1)
        var results = BenchResults(profile: "quick", date: "2026-12-03T00:00:00Z", cores: 2)
        results.dataPath = [figures, kube.figures(target: "kube-proxy ruleset (nft -f)")]
        // The larger of the two targets' spreads, halved: how far a slice lay from the mean.
        #expect(BenchReport.ratios(results).first?.contains("1 stream 1.00x (±10%), 4 streams -") == true)
        #expect(BenchReport.ratios(results).first?.contains("conn/s 1.00x (±20%)") == true)
        #expect(BenchReport.markdown(results, command: "ferry bench --quick").contains("measured in turns"))
        // Medians over rounds keep the widest spread of each figure.
        var quieter = figures
        quieter.sliceSpread = ["1 stream": 0.05, "conn/s": 0.3]
        #expect(DataPathFigures.median([figures, quieter, figures]).sliceSpread == ["1 stream": 0.2, "conn/s": 0.3, "p99": 1])
    }
}
