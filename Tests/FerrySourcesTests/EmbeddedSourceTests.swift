import FerryCore
import FerrySources
import Foundation
import Testing

/// The repository's root, from this file's path (`Tests/FerrySourcesTests/<file>`).
func repositoryRoot(_ file: String = #filePath) -> String {
    var url = URL(fileURLWithPath: file)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}

@Suite("EmbeddedSource")
struct EmbeddedSourceTests {
    static var examplePath: String { "\(repositoryRoot())/deploy/examples/my-service.yaml" }

    @Test func readsWithoutErrors() {
        let result = EmbeddedSource.read()
        #expect(result.errors.isEmpty)
        // The Deployment is skipped; three Pods and the Service remain.
        #expect(result.objects.map(\.object.key) == [
            ObjectKey(kind: .pod, namespace: "default", name: "my-app-7c5ddbdf54-2xkqn"),
            ObjectKey(kind: .pod, namespace: "default", name: "my-app-7c5ddbdf54-9vwtr"),
            ObjectKey(kind: .pod, namespace: "default", name: "my-app-7c5ddbdf54-lh6zp"),
            serviceKey("my-service"),
        ])
        #expect(result.skipped.count == 1)
        #expect(result.objects.allSatisfy { $0.location.source == "<embedded>" })
    }

    /// scripts/embed-examples.sh promises that a test fails when the embedded copy and the file
    /// disagree: the text must be the file's, byte for byte.
    @Test func textIsTheExampleFileExactly() throws {
        let file = try String(contentsOfFile: EmbeddedSourceTests.examplePath, encoding: .utf8)
        let embedded = EmbeddedManifests.myService
        let same = embedded == file
        #expect(same, "embedded text differs from the file: \(firstDifference(embedded, file))")
    }

    /// Whatever the bytes, the embedded objects are those of the file.
    @Test func objectsAreTheExampleFilesObjects() throws {
        let fromFile = ManifestReader.read(fileAt: EmbeddedSourceTests.examplePath)
        #expect(fromFile.errors.isEmpty)
        #expect(EmbeddedSource.read().objects.map(\.object) == fromFile.objects.map(\.object))
    }

    @Test func eventsAreOneBatchThenInitialSyncThenTheEnd() async throws {
        var events: [SourceEvent] = []
        for await event in EmbeddedSource().events() { events.append(event) }
        try #require(events.count == 2)
        #expect(events.first?.changes?.count == 4)
        #expect(events.first?.changes?.allSatisfy { !$0.isDelete } == true)
        #expect(events.last?.isInitialSyncDone == true)
        if case .initialSyncDone(let source)? = events.last { #expect(source == "embedded") }
    }
}

/// Where two texts first differ, briefly.
func firstDifference(_ a: String, _ b: String) -> String {
    let left = Array(a.utf8), right = Array(b.utf8)
    let common = zip(left, right).prefix { $0 == $1 }.count
    func excerpt(_ bytes: [UInt8]) -> String {
        String(decoding: bytes[common..<min(bytes.count, common + 40)], as: UTF8.self).debugDescription
    }
    return "\(left.count) bytes vs \(right.count) bytes, first difference at byte \(common): \(excerpt(left)) vs \(excerpt(right))"
}
