import FerryCore
import FerrySources
import Foundation
import Yams

/// `ferry bench load`'s harness: what reading manifests at cluster scale costs, from the parse to a
/// listing. For each size and format the generated manifests go to a folder of files of at most
/// `servicesPerFile` Services each; figures are medians of `repeats` runs with their spread.
public struct ManifestLoadBenchmark: Sendable {
    /// Numbers of Services (each with one EndpointSlice).
    public var sizes: [Int]
    /// Endpoints per EndpointSlice.
    public var endpoints: Int
    /// Repetitions of each measurement.
    public var repeats: Int
    /// Where the generated manifests are kept (a temporary folder, removed, when nil).
    public var keep: String?
    /// The ferry executable `ferry get` runs from.
    public var ferryPath: String
    /// Told what is being measured, as it starts.
    public var progress: @Sendable (String) -> Void

    /// Services per generated file (the manifest file limit is 64 MiB).
    public static let servicesPerFile = 10_000

    public init(
        sizes: [Int], endpoints: Int, repeats: Int, keep: String?, ferryPath: String, progress: @escaping @Sendable (String) -> Void
    ) {
        self.sizes = sizes
        self.endpoints = endpoints
        self.repeats = repeats
        self.keep = keep
        self.ferryPath = ferryPath
        self.progress = progress
    }

    /// A median with its spread.
    public struct Sample: Codable {
        public var median: Double
        public var min: Double
        public var max: Double

        public init(_ values: [Double]) {
            let sorted = values.sorted()
            median = sorted[sorted.count / 2]
            min = sorted.first!
            max = sorted.last!
        }
    }

    public struct Figures: Codable {
        public var services: Int
        public var format: String
        public var files: Int
        public var bytes: Int
        public var objects: Int
        public var readSeconds: Sample
        public var tableSeconds: Sample
        public var getSeconds: Sample
        public var getPeakMiB: Sample
        public var editSeconds: Sample
        public var servicePorts: Int
        public var backends: Int
    }

    /// One edited file in a folder of many one-Service files (a GitOps repository's layout).
    public struct ManyFilesFigures: Codable {
        public var files: Int
        /// The reload after inotify names the file.
        public var editSeconds: Sample
        /// The reload of a poll, which walks the folder.
        public var walkSeconds: Sample
    }

    public struct ParserFigures: Codable {
        public var parser: String
        public var format: String
        public var bytes: Int
        public var seconds: Sample
    }

    /// Everything one run measured.
    public struct Results: Codable {
        public var load: [Figures]
        public var parsers: [ParserFigures]
        public var manyFiles: [ManyFilesFigures]
    }

    /// Generates the manifests and measures them, size by size.
    public func run() throws -> Results {
        let folder = keep ?? NSTemporaryDirectory() + "ferry-bench-load-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { if keep == nil { try? FileManager.default.removeItem(atPath: folder) } }
        var results: [Figures] = []
        var parsers: [ParserFigures] = []
        var manyFiles: [ManyFilesFigures] = []
        for size in sizes {
            let generator = SyntheticCluster(services: size, endpointsPerService: endpoints)
            for format in [ManifestFormat.json, .yaml] {
                progress("measuring \(size) services as \(format.rawValue)…")
                let root = "\(folder)/\(size)-\(format.rawValue)"
                try? FileManager.default.removeItem(atPath: root)
                try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
                var files: [String] = []
                for start in stride(from: 0, to: size, by: Self.servicesPerFile) {
                    let range = start..<min(size, start + Self.servicesPerFile)
                    let path = "\(root)/cluster-\(String(format: "%06d", start)).\(format.rawValue)"
                    try (format == .json ? generator.json(range) : generator.yaml(range)).write(
                        toFile: path, atomically: false, encoding: .utf8)
                    files.append(path)
                }
                // Measured at rest: while the kernel writes 100 MB of new files back, reads of them slow down.
                sync()
                if size == sizes.first { parsers += try compareParsers(file: files[0], format: format) }
                results.append(try measure(root: root, files: files, format: format, services: size, ferry: ferryPath))
                try? FileManager.default.removeItem(atPath: root)
            }
            if size <= 20_000 { manyFiles.append(try measureManyFiles(count: size, folder: "\(folder)/\(size)-files")) }
        }
        return Results(load: results, parsers: parsers, manyFiles: manyFiles)
    }

    private func measure(root: String, files: [String], format: ManifestFormat, services: Int, ferry: String) throws -> Figures {
        let clock = ContinuousClock()
        var reads: [Double] = []
        var tables: [Double] = []
        var objects: [KubeObject] = []
        var servicePorts = 0
        var backends = 0
        for _ in 0..<repeats {
            var tree = ManifestTree(root: root)
            var reloaded: (changes: [ObjectChange], problems: [ManifestError]) = ([], [])
            reads.append(clock.measure { reloaded = tree.reload() }.seconds)
            guard reloaded.problems.isEmpty else {
                throw BenchFailure("generated manifests did not read: \(reloaded.problems.prefix(3))")
            }
            objects = tree.objects.values.map(\.object)
            var tracker = ChangeTracker(node: NodeContext(name: "node-1"))
            var sync: SyncResult?
            tables.append(
                clock.measure {
                    for object in objects { tracker.apply(.upsert(object)) }
                    sync = tracker.sync()
                }.seconds)
            servicePorts = sync!.tables.count
            backends = sync!.tables.sorted.reduce(0) { $0 + $1.endpoints.count }
        }
        var gets: [Double] = []
        var peaks: [Double] = []
        for _ in 0..<repeats {
            let run = try runChildMeasured([ferry, "get", "services", "-A", "--manifests", root])
            guard run.succeeded else { throw BenchFailure("ferry get failed:\n\(run.output.prefix(2000))") }
            gets.append(run.seconds)
            peaks.append(run.peakResidentMiB)
        }
        let edits = try measureEdit(root: root, format: format)
        let bytes = files.reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
        return Figures(
            services: services, format: format.rawValue, files: files.count, bytes: bytes, objects: objects.count,
            readSeconds: Sample(reads), tableSeconds: Sample(tables), getSeconds: Sample(gets), getPeakMiB: Sample(peaks),
            editSeconds: Sample(edits), servicePorts: servicePorts, backends: backends)
    }

    /// Reload time after editing one small file beside all the others, checking it yields exactly one change.
    private func measureEdit(root: String, format: ManifestFormat) throws -> [Double] {
        let path = "\(root)/edited.\(format.rawValue)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        func text(port: Int) -> String {
            format == .json
                ? #"{"apiVersion":"v1","kind":"Service","metadata":{"name":"edited","namespace":"bench"},"spec":{"clusterIP":"10.111.0.1","ports":[{"port":\#(port)}]}}"#
                : "apiVersion: v1\nkind: Service\nmetadata:\n  name: edited\n  namespace: bench\nspec:\n  clusterIP: 10.111.0.1\n  ports:\n  - port: \(port)\n"
        }
        try text(port: 1000).write(toFile: path, atomically: false, encoding: .utf8)
        var tree = ManifestTree(root: root)
        _ = tree.reload()
        // As the watcher reloads after inotify names the file.
        return try (0..<max(5, repeats)).map { round in
            try timeOneEdit(text(port: 1001 + round), to: path) { tree.reload(paths: [path]) }
        }
    }

    /// Writes `text` to `path` (as an editor saves, by rename), times `reload`, and checks that it found
    /// exactly that one change.
    private func timeOneEdit(
        _ text: String, to path: String, _ reload: () -> (changes: [ObjectChange], problems: [ManifestError])
    ) throws -> Double {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        var result: (changes: [ObjectChange], problems: [ManifestError]) = ([], [])
        let elapsed = ContinuousClock().measure { result = reload() }.seconds
        guard result.changes.count == 1, result.problems.isEmpty else {
            throw BenchFailure("editing \(path) gave \(result.changes.count) changes and \(result.problems) problems")
        }
        return elapsed
    }

    /// Reload time after editing one file in a folder of `count` files of one Service each.
    private func measureManyFiles(count: Int, folder: String) throws -> ManyFilesFigures {
        progress("measuring one edit among \(count) files…")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        func text(_ index: Int, port: Int) -> String {
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-\(index)\n  namespace: bench\nspec:\n  clusterIP: \(SyntheticCluster(services: count, endpointsPerService: 1).clusterIP(index))\n  ports:\n  - port: \(port)\n"
        }
        for index in 0..<count {
            try text(index, port: 80).write(
                toFile: "\(folder)/svc-\(String(format: "%06d", index)).yaml", atomically: false, encoding: .utf8)
        }
        // Measured at rest, as a watched folder is, not while the new files are being written back.
        sync()
        var tree = ManifestTree(root: folder)
        _ = tree.reload()
        let edited = "\(folder)/svc-\(String(format: "%06d", count / 2)).yaml"
        var named: [Double] = []
        var walked: [Double] = []
        for round in 0..<max(5, repeats) {
            named.append(try timeOneEdit(text(count / 2, port: 81 + round * 2), to: edited) { tree.reload(paths: [edited]) })
            walked.append(try timeOneEdit(text(count / 2, port: 82 + round * 2), to: edited) { tree.reload() })
        }
        return ManyFilesFigures(files: count, editSeconds: Sample(named), walkSeconds: Sample(walked))
    }

    /// Each parser on the same file, parse only (a tree of values, or Codable mirrors for JSONDecoder).
    private func compareParsers(file: String, format: ManifestFormat) throws -> [ParserFigures] {
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        let clock = ContinuousClock()
        func time(_ name: String, _ body: () throws -> Void) rethrows -> ParserFigures {
            var samples: [Double] = []
            for _ in 0..<repeats { samples.append(try clock.measure(body).seconds) }
            return ParserFigures(parser: name, format: format.rawValue, bytes: data.count, seconds: Sample(samples))
        }
        switch format {
        case .json:
            return [
                try time("Ferry JSONParser (ValueTree)") { _ = try data.withUnsafeBytes { try JSONParser.parseTree($0) } },
                try time("Foundation JSONSerialization") { _ = try JSONSerialization.jsonObject(with: data) },
                try time("Foundation JSONDecoder (Codable)") { _ = try JSONDecoder().decode(CodableList.self, from: data) },
                try time("Ferry read+validate (one file)") {
                    let result = ManifestReader.read(data, format: .json, source: file)
                    guard result.errors.isEmpty else { throw BenchFailure("\(result.errors.prefix(1))") }
                },
            ]
        case .yaml:
            let text = String(decoding: data, as: UTF8.self)
            return [
                try time("Ferry read+validate (libyaml events)") {
                    let result = ManifestReader.read(data, format: .yaml, source: file)
                    guard result.errors.isEmpty else { throw BenchFailure("\(result.errors.prefix(1))") }
                },
                try time("Yams compose (Node)") {
                    let parser = try Yams.Parser(yaml: text, resolver: .basic)
                    while try parser.nextRoot() != nil {}
                },
            ]
        }
    }

    public func report(_ results: Results) -> String {
        let (results, parsers, manyFiles) = (results.load, results.parsers, results.manyFiles)
        func seconds(_ sample: Sample) -> String {
            func text(_ value: Double) -> String {
                if value >= 1 { return String(format: "%.2f s", value) }
                return value >= 0.01 ? String(format: "%.0f ms", value * 1000) : String(format: "%.2f ms", value * 1000)
            }
            return "\(text(sample.median)) (\(text(sample.min))-\(text(sample.max)))"
        }
        var output = "ferry bench load: Services + one EndpointSlice each x \(endpoints) endpoints; medians of \(repeats) (min-max)\n"
        var table = TextTable(header: [
            "SERVICES", "FORMAT", "FILES", "SIZE", "READ+VALIDATE", "BUILD TABLES", "GET -A (END TO END)", "PEAK RSS", "EDIT ONE FILE",
        ])
        for figures in results {
            table.append([
                String(figures.services), figures.format, String(figures.files), String(format: "%.1f MB", Double(figures.bytes) / 1e6),
                seconds(figures.readSeconds), seconds(figures.tableSeconds), seconds(figures.getSeconds),
                String(format: "%.0f MiB", figures.getPeakMiB.median), seconds(figures.editSeconds),
            ])
        }
        output += table.render()
        for figures in manyFiles {
            output += "One edited file among \(figures.files) files of one Service each: \(seconds(figures.editSeconds)) "
            output += "(a poll's reload, walking the folder: \(seconds(figures.walkSeconds)))\n"
        }
        if !parsers.isEmpty {
            output += "\nParsers on one file of \(min(sizes[0], Self.servicesPerFile)) Services + EndpointSlices:\n"
            var parserTable = TextTable(header: ["PARSER", "FORMAT", "SIZE", "TIME", "MB/S"])
            for figures in parsers {
                parserTable.append([
                    figures.parser, figures.format, String(format: "%.1f MB", Double(figures.bytes) / 1e6), seconds(figures.seconds),
                    String(format: "%.0f", Double(figures.bytes) / 1e6 / figures.seconds.median),
                ])
            }
            output += parserTable.render()
        }
        return output
    }}

/// The benchmark's objects as Codable structs: what a Swift user would decode them into with JSONDecoder.
private struct CodableList: Decodable {
    struct Metadata: Decodable {
        var name: String?
        var namespace: String?
        var labels: [String: String]?
        var creationTimestamp: String?
    }
    struct Port: Decodable {
        var name: String?
        var `protocol`: String?
        var port: Int?
        var targetPort: Int?
    }
    struct Spec: Decodable {
        var type: String?
        var clusterIP: String?
        var clusterIPs: [String]?
        var selector: [String: String]?
        var ports: [Port]?
    }
    struct Conditions: Decodable {
        var ready: Bool?
        var serving: Bool?
        var terminating: Bool?
    }
    struct Endpoint: Decodable {
        var addresses: [String]?
        var conditions: Conditions?
        var nodeName: String?
        var zone: String?
    }
    struct Item: Decodable {
        var apiVersion: String?
        var kind: String?
        var metadata: Metadata?
        var spec: Spec?
        var addressType: String?
        var endpoints: [Endpoint]?
        var ports: [Port]?
    }
    var items: [Item]
}
