import Foundation
import Testing

@Suite("ferry bench")
struct BenchTests {
    struct Sample: Decodable {
        var median: Double
        var min: Double
        var max: Double
    }

    struct Figures: Decodable {
        var services: Int
        var format: String
        var files: Int
        var bytes: Int
        var objects: Int
        var readSeconds: Sample
        var tableSeconds: Sample
        var getSeconds: Sample
        var getPeakMiB: Sample
        var editSeconds: Sample
        var servicePorts: Int
        var backends: Int
    }

    struct ParserFigures: Decodable {
        var parser: String
        var format: String
        var seconds: Sample
    }

    struct Report: Decodable {
        var load: [Figures]
        var parsers: [ParserFigures]
    }

    /// `ferry bench --render` redraws a report from results.json; a file from another version (or no
    /// results at all) is bad input naming the field, not a crash.
    @Test func renderNamesTheFieldAResultsFileLacks() throws {
        try withTemporaryFolder { folder in
            try #"{"profile": "quick", "date": "2026-12-03", "cores": 2, "seconds": 1, "dataPath": [], "balance": [], "slowBackend": [], "affinity": [], "changes": [], "sync": [{"services": 100}], "notes": []}"#
                .write(toFile: "\(folder)/old.json", atomically: true, encoding: .utf8)
            let old = try runFerry(["bench", "--render", "\(folder)/old.json", "--report", "\(folder)/report"])
            #expect(old.status == 2 && old.stderr.contains("sync[0].endpoints is missing"), "\(old)")
            try #"{"profile": "quick", "date": "2026-12-03", "cores": 2, "seconds": 1, "dataPath": [], "balance": [], "slowBackend": [], "affinity": [], "changes": [], "sync": [], "notes": ["n"]}"#
                .write(toFile: "\(folder)/empty.json", atomically: true, encoding: .utf8)
            let empty = try runFerry(["bench", "--render", "\(folder)/empty.json", "--report", "\(folder)/report"])
            #expect(empty.status == 0, "\(empty)")
            #expect(FileManager.default.fileExists(atPath: "\(folder)/report/report.md"))
        }
    }

    @Test func loadReportsBothFormatsAsJSON() throws {
        let result = try runFerry(
            ["bench", "load", "--sizes", "200", "--endpoints", "3", "--repeats", "1", "--json"], timeout: .seconds(120))
        try #require(result.status == 0, "\(result)")
        let report = try JSONDecoder().decode(Report.self, from: Data(result.stdout.utf8))
        #expect(report.load.map(\.format) == ["json", "yaml"])
        for entry in report.load {
            #expect(entry.services == 200 && entry.files == 1)
            #expect(entry.servicePorts == 200)
            #expect(entry.objects == 400)
            #expect(entry.backends == 600)
            #expect(entry.bytes > 0)
            #expect(entry.readSeconds.median >= 0 && entry.tableSeconds.median >= 0)
            #expect(entry.getSeconds.median > 0 && entry.getPeakMiB.median > 0)
            #expect(entry.editSeconds.min <= entry.editSeconds.median && entry.editSeconds.median <= entry.editSeconds.max)
        }
        #expect(Set(report.parsers.map(\.format)) == ["json", "yaml"])
        #expect(report.parsers.contains { $0.parser.contains("JSONSerialization") })
        #expect(report.parsers.contains { $0.parser.contains("Yams") })
    }
}
