import Foundation
import Testing

@Suite("ferry bench")
struct BenchTests {
    struct Figures: Decodable {
        var format: String
        var bytes: Int
        var objects: Int
        var readSeconds: Double
        var tableSeconds: Double
        var servicePorts: Int
        var backends: Int
    }

    @Test func loadReportsBothFormatsAsJSON() throws {
        let result = try runFerry(["bench", "load", "--services", "200", "--endpoints", "3", "--repeats", "1", "--json"], timeout: .seconds(60))
        try #require(result.status == 0, "\(result)")
        let figures = try JSONDecoder().decode([Figures].self, from: Data(result.stdout.utf8))
        #expect(figures.map(\.format) == ["json", "yaml"])
        for entry in figures {
            #expect(entry.servicePorts == 200)
            #expect(entry.objects == 400)
            #expect(entry.backends == 600)
            #expect(entry.bytes > 0)
            #expect(entry.readSeconds >= 0 && entry.tableSeconds >= 0)
        }
    }
}
