import Foundation
import Testing

@testable import FerryCore

/// The bounds that keep a hostile or mistaken file from hanging the reader or exhausting memory, and
/// the inputs near them that must still read.
@Suite("Reader limits")
struct ReaderLimitsTests {
    static let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n"

    @Test func anchorsUsedAsKubernetesUsersUseThemRead() {
        // Shared labels and selectors, a few hundred nodes of aliases: far below the bound.
        var text = Self.service + "x-shared: &shared {" + (0..<50).map { "k\($0): v\($0)" }.joined(separator: ", ") + "}\n"
        text += "x-copies: [" + Array(repeating: "*shared", count: 20).joined(separator: ", ") + "]\n"
        let result = readYAML(text)
        #expect(result.errors.isEmpty, "\(result.errors)")
        #expect(result.objects.count == 1)
    }

    @Test func excessiveAliasingNamesTheFileAndDocument() {
        var text = "kind: ConfigMap\napiVersion: v1\nmetadata: {name: a}\n---\n" + Self.service
        text += "l0: &l0 [a, b, c, d, e, f, g, h, i, j]\n"
        for level in 1..<9 {
            text += "l\(level): &l\(level) [" + Array(repeating: "*l\(level - 1)", count: 10).joined(separator: ", ") + "]\n"
        }
        let started = ContinuousClock.now
        let result = readYAML(text)
        #expect(ContinuousClock.now - started < .seconds(1))
        #expect(result.errors.count == 1)
        let error = result.errors.first?.description ?? ""
        #expect(error.hasPrefix("test.yaml: document 2: line "), "\(error)")
        #expect(error.contains("excessive aliasing"), "\(error)")
        #expect(result.objects.isEmpty)
    }

    @Test func anAliasDoesNotCrossDocuments() {
        let result = readYAML("kind: ConfigMap\napiVersion: v1\nmetadata: {name: a}\nx: &a 1\n---\n" + Self.service + "y: *a\n")
        #expect(
            result.errors.map(\.description).first?.contains("document 2: line 13: found undefined alias *a") == true, "\(result.errors)")
    }

    @Test func duplicateYAMLKeysAreRefused() {
        let result = readYAML(Self.service + "spec: {}\n")
        #expect(result.errors.map(\.description) == [#"test.yaml: document 1: line 8: duplicate key "spec""#])
    }

    @Test func nonScalarKeysAreRefused() {
        let result = readYAML(Self.service + "? [a, b]\n: c\n")
        #expect(result.errors.first?.description.contains("mapping keys must be plain strings") == true, "\(result.errors)")
    }

    /// Duplicate keys are found with a set past 16 keys: 100,000 keys would be 5 * 10^9 comparisons.
    @Test(arguments: [ManifestFormat.json, .yaml])
    func aMappingOf100000KeysIsNotQuadratic(_ format: ManifestFormat) {
        let keys = (0..<100_000).map { "key-\($0)" }
        let text =
            format == .json
            ? #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"#
                + keys.map { #""\#($0)":"v""# }.joined(separator: ",")
                + "}}"
            : "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n" + keys.map { "  \($0): v\n" }.joined()
        let started = ContinuousClock.now
        let result = ManifestReader.read(Data(text.utf8), format: format, source: "big")
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(result.errors.isEmpty)
        #expect(result.skipped.count == 1)
        let duplicated = text.replacingOccurrences(
            of: format == .json ? #""key-99999""# : "key-99999:", with: format == .json ? #""key-5""# : "key-5:")
        #expect(
            ManifestReader.read(Data(duplicated.utf8), format: format, source: "big").errors.first?.description.contains(
                #"duplicate key "key-5""#) == true)
    }

    @Test func aFileOverTheLimitIsRefusedBeforeItIsRead() {
        let limits = ManifestLimits(maximumFileBytes: 1 << 20)
        let text = Self.service + "# " + String(repeating: "x", count: 1 << 20) + "\n"
        let result = ManifestReader.read(Data(text.utf8), format: .yaml, source: "big.yaml", limits: limits)
        #expect(
            result.errors.map(\.description) == [
                "big.yaml: is \(text.utf8.count) bytes, more than the 1 MiB a manifest file may hold: split it into several files"
            ])
    }

    @Test(arguments: [ManifestFormat.json, .yaml])
    func nestingDeeperThan512IsRefusedAndShallowerReads(_ format: ManifestFormat) {
        func document(depth: Int) -> String {
            let nested = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
            return format == .json
                ? #"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deep"},"x":"# + nested + "}"
                : "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\nx: " + nested + "\n"
        }
        let shallow = ManifestReader.read(Data(document(depth: 500).utf8), format: format, source: "deep")
        #expect(shallow.errors.isEmpty, "\(shallow.errors)")
        let deep = ManifestReader.read(Data(document(depth: 600).utf8), format: format, source: "deep")
        #expect(deep.errors.first?.description.contains("nested too deeply") == true, "\(deep.errors)")
    }

    @Test func invalidUTF8IsNamedAsSuch() {
        var bytes = Array(Self.service.utf8)
        bytes.insert(0xff, at: 30)
        let result = ManifestReader.read(Data(bytes), format: .yaml, source: "bad.yaml")
        #expect(result.errors.map(\.description) == ["bad.yaml: document 1: is not UTF-8 text"])
    }
}
