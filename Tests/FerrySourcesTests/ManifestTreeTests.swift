import FerryCore
import FerrySources
import Foundation
import Testing

/// `ManifestTree.reload()`: what changes and problems each reload reports as files come, change, break
/// and go.
@Suite("ManifestTree reload")
struct ManifestTreeTests {
    /// Two files: `a.yaml` (Service web + its EndpointSlice) and `b.yaml` (Service api).
    struct Fixture {
        let root: String
        var a: String { "\(root)/a.yaml" }
        var b: String { "\(root)/b.yaml" }
        static let aText = stream(serviceYAML("web", ip: "10.96.1.1"), sliceYAML("web", addresses: ["10.244.1.1"]))
        static let bText = serviceYAML("api", ip: "10.96.1.2")

        init(root: String) throws {
            self.root = root
            try write(Fixture.aText, to: a)
            try write(Fixture.bText, to: b)
        }
    }

    @Test func initialReloadUpsertsEveryObject() throws {
        try withTemporaryFolder { root in
            let fixture = try Fixture(root: root)
            var tree = ManifestTree(root: fixture.root)
            let (changes, problems) = tree.reload()
            #expect(problems.isEmpty)
            #expect(changes.map(\.key) == [sliceKey("web"), serviceKey("api"), serviceKey("web")])
            #expect(changes.allSatisfy { !$0.isDelete })
            #expect(Set(tree.objects.keys) == [serviceKey("web"), serviceKey("api"), sliceKey("web")])
            #expect(tree.objects[serviceKey("web")]?.location.source == fixture.a)
            #expect(tree.objects[sliceKey("web")]?.location.document == 2)
            #expect(tree.currentProblems.isEmpty)
        }
    }

    @Test func reloadWithoutChangesReportsNothing() throws {
        try withTemporaryFolder { root in
            var tree = ManifestTree(root: try Fixture(root: root).root)
            _ = tree.reload()
            let (changes, problems) = tree.reload()
            #expect(changes.isEmpty)
            #expect(problems.isEmpty)
        }
    }

    @Test func editingOneFieldGivesExactlyOneUpsert() throws {
        try withTemporaryFolder { root in
            let fixture = try Fixture(root: root)
            var tree = ManifestTree(root: fixture.root)
            _ = tree.reload()
            try write(stream(serviceYAML("web", ip: "10.96.1.1", port: "8080"), sliceYAML("web", addresses: ["10.244.1.1"])), to: fixture.a)
            let (changes, problems) = tree.reload()
            #expect(problems.isEmpty)
            try #require(changes.count == 1)
            #expect(changes[0].key == serviceKey("web"))
            #expect(changes[0].upserted?.firstServicePort == 8080)
            #expect(tree.objects[serviceKey("web")]?.object.firstServicePort == 8080)
        }
    }

    /// A way to break `b.yaml` and what the problem must name.
    struct Breakage: Sendable, CustomTestStringConvertible {
        var label: String
        var text: String
        /// Substrings the problem's description must contain (besides the path).
        var document: Int
        var object: String?
        var field: String?
        var message: String

        var testDescription: String { label }
    }

    static let breakages: [Breakage] = [
        Breakage(
            label: "invalid YAML", text: serviceYAML("api", ip: "10.96.1.2") + "  oops: [unclosed\n", document: 1, object: nil,
            field: nil, message: "is not valid YAML"),
        Breakage(
            label: "port 70000", text: serviceYAML("api", ip: "10.96.1.2", port: "70000"), document: 1, object: "Service default/api",
            field: "spec.ports[0].port", message: "70000 is out of range 1-65535"),
        Breakage(
            label: "port of the wrong type", text: serviceYAML("other", ip: "10.96.1.9") + "---\n" + serviceYAML("api", ip: "10.96.1.2", port: "\"abc\""),
            document: 2, object: "Service default/api", field: "spec.ports[0].port", message: "has the wrong type"),
        Breakage(
            label: "billion laughs", text: serviceYAML("api", ip: "10.96.1.2") + billionLaughs, document: 1, object: nil, field: nil,
            message: "excessive aliasing"),
    ]

    /// Ten anchors, each a list of ten aliases to the one before: 10^10 strings once expanded.
    static let billionLaughs: String = {
        var text = "lols:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        for level in 1..<10 {
            text += "  l\(level): &l\(level) [" + Array(repeating: "*l\(level - 1)", count: 10).joined(separator: ", ") + "]\n"
        }
        return text
    }()

    @Test(arguments: breakages)
    func brokenFileKeepsItsLastGoodObjects(_ breakage: Breakage) throws {
        try withTemporaryFolder { root in
            let fixture = try Fixture(root: root)
            var tree = ManifestTree(root: fixture.root)
            _ = tree.reload()
            let before = tree.objects

            try write(breakage.text, to: fixture.b)
            let (changes, problems) = tree.reload()
            #expect(changes.isEmpty, "a broken file must not delete (or change) what it defined: \(changes)")
            #expect(tree.objects == before)
            let problem = try #require(problems.first { $0.location?.source == fixture.b })
            #expect(problem.location?.document == breakage.document)
            #expect(problem.object == breakage.object)
            #expect(problem.field == breakage.field)
            #expect(problem.message.contains(breakage.message))
            let text = problem.description
            #expect(text.hasPrefix("\(fixture.b): document \(breakage.document): "))
            if let object = breakage.object, let field = breakage.field { #expect(text.contains("\(object): \(field): ")) }
            #expect(tree.currentProblems.contains(problem))
            // The user is told the old objects stay in force.
            #expect(problems.contains { $0.description.contains("keeping the 1 object(s)") && $0.description.contains(fixture.b) })

            // Nothing touched the file: nothing new to say.
            let again = tree.reload()
            #expect(again.changes.isEmpty)
            #expect(again.problems.isEmpty)
            #expect(tree.currentProblems.contains(problem), "the file still fails")

            // Fixed (to a new value): back to normal, with the edit applied.
            try write(serviceYAML("api", ip: "10.96.1.2", port: "8443"), to: fixture.b)
            let fixed = tree.reload()
            #expect(fixed.problems.isEmpty)
            #expect(fixed.changes.map(\.key) == [serviceKey("api")])
            #expect(fixed.changes.first?.upserted?.firstServicePort == 8443)
            #expect(tree.currentProblems.isEmpty)
            let quiet = tree.reload()
            #expect(quiet.changes.isEmpty && quiet.problems.isEmpty)
        }
    }

    @Test func fixingAFileBackToItsLastGoodTextChangesNothing() throws {
        try withTemporaryFolder { root in
            let fixture = try Fixture(root: root)
            var tree = ManifestTree(root: fixture.root)
            _ = tree.reload()
            try write(serviceYAML("api", ip: "10.96.1.2", port: "70000"), to: fixture.b)
            #expect(!tree.reload().problems.isEmpty)
            try write(Fixture.bText + "# fixed\n", to: fixture.b)
            let (changes, problems) = tree.reload()
            #expect(changes.isEmpty)
            #expect(problems.isEmpty)
            #expect(tree.currentProblems.isEmpty)
        }
    }

    @Test func aFileBrokenFromTheStartContributesNothing() throws {
        try withTemporaryFolder { root in
            let fixture = try Fixture(root: root)
            try write(serviceYAML("api", ip: "10.96.1.2", port: "0"), to: fixture.b)
            var tree = ManifestTree(root: fixture.root)
            let (changes, problems) = tree.reload()
            #expect(changes.map(\.key) == [sliceKey("web"), serviceKey("web")])
            #expect(problems.map(\.description) == ["\(fixture.b): document 1: Service default/api: spec.ports[0].port: 0 is out of range 1-65535"])
        }
    }

    @Test func deletingAFileDeletesItsObjects() throws {
        try withTemporaryFolder { root in
            let fixture = try Fixture(root: root)
            var tree = ManifestTree(root: fixture.root)
            _ = tree.reload()
            try FileManager.default.removeItem(atPath: fixture.a)
            let (changes, problems) = tree.reload()
            #expect(problems.isEmpty)
            #expect(changes == [.delete(sliceKey("web")), .delete(serviceKey("web"))])
            #expect(Set(tree.objects.keys) == [serviceKey("api")])
        }
    }

    @Test func deletingABrokenFileDeletesTheObjectsItKept() throws {
        try withTemporaryFolder { root in
            let fixture = try Fixture(root: root)
            var tree = ManifestTree(root: fixture.root)
            _ = tree.reload()
            try write("kind: [", to: fixture.b)
            _ = tree.reload()
            #expect(tree.objects[serviceKey("api")] != nil)
            try FileManager.default.removeItem(atPath: fixture.b)
            let (changes, problems) = tree.reload()
            #expect(problems.isEmpty)
            #expect(changes == [.delete(serviceKey("api"))])
            #expect(tree.currentProblems.isEmpty)
        }
    }

    @Test func removingOneObjectFromAFileDeletesOnlyIt() throws {
        try withTemporaryFolder { root in
            let fixture = try Fixture(root: root)
            var tree = ManifestTree(root: fixture.root)
            _ = tree.reload()
            try write(serviceYAML("web", ip: "10.96.1.1"), to: fixture.a)
            let (changes, problems) = tree.reload()
            #expect(problems.isEmpty)
            #expect(changes == [.delete(sliceKey("web"))])
        }
    }

    @Test func theSameObjectInASecondFileIsADuplicate() throws {
        try withTemporaryFolder { root in
            let fixture = try Fixture(root: root)
            let copy = "\(root)/c.yaml"
            try write(serviceYAML("web", ip: "10.96.1.1", port: "9999"), to: copy)
            var tree = ManifestTree(root: fixture.root)
            let (changes, problems) = tree.reload()
            let problem = try #require(problems.first)
            #expect(problems.count == 1)
            #expect(problem.location?.source == copy)
            #expect(problem.object == "Service default/web")
            #expect(problem.description.contains("duplicate object: already defined in \(fixture.a)"))
            #expect(changes.first { $0.key == serviceKey("web") }?.upserted?.firstServicePort == 80)
            #expect(tree.objects[serviceKey("web")]?.location.source == fixture.a)
        }
    }

    /// "The file that defined it first keeps it": first in time, not in path order.
    @Test func theFileThatDefinedAnObjectFirstKeepsIt() throws {
        try withTemporaryFolder { root in
            let late = "\(root)/z.yaml"
            let early = "\(root)/a.yaml"
            try write(serviceYAML("web", ip: "10.96.1.1", port: "80"), to: late)
            var tree = ManifestTree(root: root)
            _ = tree.reload()

            try write(serviceYAML("web", ip: "10.96.1.1", port: "81"), to: early)
            let (changes, problems) = tree.reload()
            #expect(changes.isEmpty)
            #expect(problems.count == 1)
            #expect(problems.first?.location?.source == early)
            #expect(problems.first?.message.contains("already defined in \(late)") == true)
            #expect(tree.objects[serviceKey("web")]?.location.source == late)

            // Once the owner lets go, the other copy takes over.
            try FileManager.default.removeItem(atPath: late)
            let handover = tree.reload()
            #expect(handover.problems.isEmpty)
            #expect(handover.changes.count == 1)
            #expect(handover.changes.first?.upserted?.firstServicePort == 81)
            #expect(tree.objects[serviceKey("web")]?.location.source == early)
        }
    }

    /// README: "a file that stops parsing or validating is reported once"; a duplicate that nothing
    /// touched should not be reported again on every reload (the watcher reloads every poll interval).
    @Test func aDuplicateIsReportedOnceNotOnEveryReload() throws {
        try withTemporaryFolder { root in
            let fixture = try Fixture(root: root)
            try write(serviceYAML("web", ip: "10.96.1.1", port: "9999"), to: "\(root)/c.yaml")
            var tree = ManifestTree(root: fixture.root)
            #expect(tree.reload().problems.count == 1)
            let again = tree.reload()
            #expect(again.changes.isEmpty)
            #expect(again.problems.isEmpty, "reported again although no file changed: \(again.problems.map(\.description))")
        }
    }

    @Test func nestedFoldersAreReadRecursively() throws {
        try withTemporaryFolder { root in
            try write(serviceYAML("top", ip: "10.96.2.1"), to: "\(root)/top.yaml")
            try write(serviceYAML("mid", ip: "10.96.2.2"), to: "\(root)/one/mid.yml")
            try write(serviceJSON("deep", ip: "10.96.2.3"), to: "\(root)/one/two/three/deep.json")
            var tree = ManifestTree(root: root)
            let (changes, problems) = tree.reload()
            #expect(problems.isEmpty)
            #expect(Set(changes.map(\.key)) == [serviceKey("top"), serviceKey("mid"), serviceKey("deep")])
            #expect(try ManifestTree.manifestFiles(under: root) == [
                "\(root)/one/mid.yml", "\(root)/one/two/three/deep.json", "\(root)/top.yaml",
            ])

            // A file added deep down later is picked up too.
            try write(serviceYAML("later", ip: "10.96.2.4"), to: "\(root)/one/two/later.yaml")
            #expect(tree.reload().changes.map(\.key) == [serviceKey("later")])
        }
    }

    @Test func hiddenAndForeignFilesAreIgnored() throws {
        try withTemporaryFolder { root in
            try write(serviceYAML("visible", ip: "10.96.3.1"), to: "\(root)/visible.yaml")
            try write(serviceYAML("upper", ip: "10.96.3.2"), to: "\(root)/UPPER.YAML")
            // Each of these would be a problem (or an object) if read.
            let broken = "kind: [\n"
            try write(broken, to: "\(root)/.hidden.yaml")
            try write(broken, to: "\(root)/.git/config.yaml")
            try write(broken, to: "\(root)/sub/.cache/x.yaml")
            try write(serviceYAML("hidden", ip: "10.96.3.3"), to: "\(root)/.staging/svc.yaml")
            try write(broken, to: "\(root)/notes.txt")
            try write(broken, to: "\(root)/README.md")
            try write(broken, to: "\(root)/visible.yaml.bak")
            try write(broken, to: "\(root)/visible.yaml~")
            try FileManager.default.createDirectory(atPath: "\(root)/folder.yaml", withIntermediateDirectories: true)

            #expect(try ManifestTree.manifestFiles(under: root) == ["\(root)/UPPER.YAML", "\(root)/visible.yaml"])
            var tree = ManifestTree(root: root)
            let (changes, problems) = tree.reload()
            #expect(problems.isEmpty)
            #expect(Set(changes.map(\.key)) == [serviceKey("visible"), serviceKey("upper")])
        }
    }

    @Test func aSingleFileRootIsRead() throws {
        try withTemporaryFolder { root in
            let file = "\(root)/only.yaml"
            try write(serviceYAML("only", ip: "10.96.4.1"), to: file)
            try write(serviceYAML("sibling", ip: "10.96.4.2"), to: "\(root)/sibling.yaml")
            #expect(try ManifestTree.manifestFiles(under: file) == [file])
            var tree = ManifestTree(root: file)
            #expect(tree.reload().changes.map(\.key) == [serviceKey("only")])
        }
    }

    /// The watcher names a single-file root when it changes; its going missing is said at once.
    @Test func aNamedReloadOfAVanishedSingleFileRootSaysSo() throws {
        try withTemporaryFolder { root in
            let file = "\(root)/only.yaml"
            try write(serviceYAML("only", ip: "10.96.4.1"), to: file)
            var tree = ManifestTree(root: file)
            _ = tree.reload()
            try FileManager.default.removeItem(atPath: file)
            let gone = tree.reload(paths: [file])
            #expect(gone.changes == [.delete(serviceKey("only"))])
            #expect(gone.problems.map(\.description) == ["\(file): no such file or directory"])
        }
    }

    @Test func aMissingRootIsAProblem() throws {
        try withTemporaryFolder { root in
            let missing = "\(root)/no/such/folder"
            #expect(throws: ManifestTree.PathError.self) { try ManifestTree.manifestFiles(under: missing) }
            var tree = ManifestTree(root: missing)
            let (changes, problems) = tree.reload()
            #expect(changes.isEmpty)
            #expect(problems.map(\.description) == ["\(missing): no such file or directory"])
            #expect(tree.objects.isEmpty)
        }
    }

    /// A watched folder that disappears is reported, and its objects go; the report is not repeated on
    /// every later reload while it stays missing.
    @Test func aVanishedRootIsReportedOnce() throws {
        try withTemporaryFolder { parent in
            let root = "\(parent)/manifests"
            try write(serviceYAML("web", ip: "10.96.5.1"), to: "\(root)/web.yaml")
            var tree = ManifestTree(root: root)
            _ = tree.reload()
            try FileManager.default.removeItem(atPath: root)
            let gone = tree.reload()
            #expect(gone.problems.map(\.description) == ["\(root): no such file or directory"])
            #expect(gone.changes == [.delete(serviceKey("web"))])
            let again = tree.reload()
            #expect(again.changes.isEmpty)
            #expect(again.problems.isEmpty, "reported again although nothing changed: \(again.problems.map(\.description))")
        }
    }

    /// An edit that keeps the size and the modification time (`cp -p`, `touch -r`, `rsync -t`, `tar x`,
    /// or two same-size writes within one timestamp tick) and the inode must still be seen: the change
    /// time (`st_ctim`) moves on every write and cannot be set back.
    @Test func aSameSizeEditWithARestoredModificationTimeIsSeen() throws {
        try withTemporaryFolder { root in
            let file = "\(root)/web.yaml"
            try write(serviceYAML("web", ip: "10.96.6.1", port: "8080"), to: file)
            var before = stat()
            try #require(stat(file, &before) == 0)
            var tree = ManifestTree(root: root)
            _ = tree.reload()

            try write(serviceYAML("web", ip: "10.96.6.1", port: "9090"), to: file)
            var times = [before.st_atim, before.st_mtim]
            try #require(utimensat(AT_FDCWD, file, &times, 0) == 0)
            var after = stat()
            try #require(stat(file, &after) == 0)
            try #require(after.st_size == before.st_size && after.st_ino == before.st_ino)
            try #require(after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec)

            let (changes, _) = tree.reload()
            #expect(changes.first?.upserted?.firstServicePort == 9090, "the edit to port 9090 was not noticed")
        }
    }
}

/// Watch-mode reloads cost what changed: one small file edited beside 10,000 Services.
@Suite("ManifestTree at scale")
struct ManifestTreeScaleTests {
    /// 10,000 Services in one `kind: List` JSON file.
    static func bigList(count: Int) -> String {
        let items = (0..<count).map { index in
            #"{"apiVersion":"v1","kind":"Service","metadata":{"name":"svc-\#(index)","namespace":"bench"},"spec":{"clusterIP":"10.96.\#(index >> 8).\#(index & 255)","ports":[{"name":"http","port":80}]}}"#
        }
        return #"{"apiVersion":"v1","kind":"List","items":["# + items.joined(separator: ",\n") + "]}\n"
    }

    @Test func oneEditedFileBesideTenThousandServicesYieldsExactlyItsChanges() throws {
        try withTemporaryFolder { root in
            try write(ManifestTreeScaleTests.bigList(count: 10_000), to: "\(root)/big.json")
            let small = "\(root)/small.yaml"
            try write(stream(serviceYAML("edited", ip: "10.97.0.1"), serviceYAML("kept", ip: "10.97.0.2")), to: small)
            var tree = ManifestTree(root: root)
            let initial = tree.reload()
            #expect(initial.problems.isEmpty)
            #expect(initial.changes.count == 10_002)

            try write(stream(serviceYAML("edited", ip: "10.97.0.1", port: "8080"), serviceYAML("kept", ip: "10.97.0.2")), to: small)
            // As the watcher reloads once inotify names the file; paths that are no manifests are ignored.
            let edited = tree.reload(paths: [small, "\(root)/notes.txt", "/elsewhere/x.yaml", "\(root)/.hidden.yaml"])
            #expect(edited.problems.isEmpty)
            #expect(edited.changes.map(\.key) == [serviceKey("edited")])
            #expect(edited.changes.first?.upserted?.firstServicePort == 8080)

            try write(serviceYAML("added", ip: "10.97.0.3"), to: small)
            let replaced = tree.reload()
            #expect(replaced.changes == [.upsert(replaced.changes[0].upserted!), .delete(serviceKey("edited")), .delete(serviceKey("kept"))])
            #expect(replaced.changes.first?.key == serviceKey("added"))

            try FileManager.default.removeItem(atPath: small)
            #expect(tree.reload(paths: [small]).changes == [.delete(serviceKey("added"))])
            #expect(tree.reload().changes.isEmpty, "a walk finds what the named reload found")
            #expect(tree.objects.count == 10_000)
        }
    }
}
