/// One kind of data-path measurement of `ferry bench`.
enum DataPathFigure: CaseIterable, Sendable {
    /// iperf3, one stream.
    case oneStream
    /// iperf3, four streams.
    case fourStreams
    /// Short connections with `ferry debug load`: rate and latency percentiles.
    case connections
    /// wrk with `Connection: close` against nginx.
    case http
    /// DNS-like UDP queries.
    case udp
}

/// A target's data-path measurements as they are taken, in one or more slices per figure (a paired run
/// measures each figure in slices alternating with its peer's), and the figures they add up to.
struct DataPathSample {
    var oneStream: [Double] = []
    var fourStreams: [Double] = []
    var bulkBytes = 0
    var bulkCPUSeconds = 0.0
    var connections: [LoadReport] = []
    var connectionsCPUSeconds = 0.0
    var http: [(perSecond: Double, p99Microseconds: UInt64)] = []
    var udp: [LoadReport] = []

    mutating func addBulk(streams: Int, bitsPerSecond: Double, bytes: Int, cpu: Double) {
        if streams == 1 { oneStream.append(bitsPerSecond) } else { fourStreams.append(bitsPerSecond) }
        bulkBytes += bytes
        bulkCPUSeconds += cpu
    }

    mutating func addConnections(_ report: LoadReport, cpu: Double) {
        connections.append(report)
        connectionsCPUSeconds += cpu
    }

    /// Rates over all slices (slices are of equal length, so a mean of rates), latency percentiles as
    /// the mean of the slices' (histograms are not kept), CPU over everything moved, spread summed.
    func figures(target: String) -> DataPathFigures {
        func mean(_ values: [Double]) -> Double { values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count) }
        func mean(_ values: [UInt64]) -> UInt64 { values.isEmpty ? 0 : values.reduce(0, +) / UInt64(values.count) }
        func rate(_ reports: [LoadReport]) -> Double {
            let seconds = reports.reduce(0) { $0 + $1.seconds }
            return seconds > 0 ? Double(reports.reduce(0) { $0 + $1.connections }) / seconds : .nan
        }
        let made = connections.reduce(0) { $0 + $1.connections }
        var figures = DataPathFigures(
            target: target, gbitOneStream: mean(oneStream) / 1e9, gbitFourStreams: mean(fourStreams) / 1e9,
            connectionsPerSecond: rate(connections), p50Microseconds: mean(connections.map(\.p50Microseconds)),
            p90Microseconds: mean(connections.map(\.p90Microseconds)), p99Microseconds: mean(connections.map(\.p99Microseconds)),
            p999Microseconds: mean(connections.map(\.p999Microseconds)), failures: connections.reduce(0) { $0 + $1.failures },
            machineCPUSecondsPerGB: bulkCPUSeconds / (Double(bulkBytes) / 1e9),
            machineCPUSecondsPerThousandConnections: connectionsCPUSeconds / Double(max(1, made)) * 1_000,
            spread: connections.reduce(into: [:]) { total, report in total.merge(report.pods, uniquingKeysWith: +) })
        if !http.isEmpty {
            figures.httpRequestsPerSecond = mean(http.map(\.perSecond))
            figures.httpP99Microseconds = mean(http.map(\.p99Microseconds))
        }
        if !udp.isEmpty {
            figures.udpQueriesPerSecond = rate(udp)
            figures.udpP99Microseconds = mean(udp.map(\.p99Microseconds))
            figures.udpLost = udp.reduce(0) { $0 + $1.failures }
        }
        let slices: [(String, [Double])] = [
            ("1 stream", oneStream), ("4 streams", fourStreams), ("conn/s", connections.map(\.perSecond)),
            ("p99", connections.map { Double($0.p99Microseconds) }), ("HTTP req/s", http.map(\.perSecond)), ("UDP q/s", udp.map(\.perSecond)),
        ]
        let spreads = slices.filter { $0.1.count >= 2 }.map { name, values in
            (name, (values.max()! - values.min()!) / mean(values))
        }
        figures.sliceSpread = spreads.isEmpty ? nil : Dictionary(spreads, uniquingKeysWith: max)
        return figures
    }
}
