import FerryCore
import FerrySources
import Foundation
import Synchronization
import Testing

/// Everything that starts a file watcher, one test at a time, so counts of watchers are this test's.
@Suite("Watching", .serialized)
struct WatchingTests {
    // MARK: ManifestSource

    @Test func oneShotSourceEmitsChangesThenInitialSyncAndEnds() async throws {
        try await withTemporaryFolder { root in
            try write(serviceYAML("web", ip: "10.96.7.1"), to: "\(root)/web.yaml")
            var events: [SourceEvent] = []
            for await event in ManifestSource(path: root, watch: false).events() { events.append(event) }
            try #require(events.count == 2)
            #expect(events[0].changes?.map(\.key) == [serviceKey("web")])
            #expect(events[1].isInitialSyncDone)
            if case .initialSyncDone(let source) = events[1] { #expect(source == "manifests:\(root)") }
        }
    }

    @Test func problemsAtStartComeFirst() async throws {
        try await withTemporaryFolder { root in
            try write(serviceYAML("web", ip: "10.96.7.1"), to: "\(root)/web.yaml")
            try write(serviceYAML("bad", ip: "10.96.7.2", port: "70000"), to: "\(root)/bad.yaml")
            var events: [SourceEvent] = []
            for await event in ManifestSource(path: root, watch: false).events() { events.append(event) }
            try #require(events.count == 3)
            #expect(events[0].problems?.map(\.description) == [
                "\(root)/bad.yaml: document 1: Service default/bad: spec.ports[0].port: 70000 is out of range 1-65535"
            ])
            #expect(events[1].changes?.map(\.key) == [serviceKey("web")])
            #expect(events[2].isInitialSyncDone)
        }
    }

    @Test func watchingSourceFollowsEditsAndBreakage() async throws {
        try await withTemporaryFolder { root in
            let web = "\(root)/web.yaml"
            let api = "\(root)/sub/api.yaml"
            try write(serviceYAML("web", ip: "10.96.8.1"), to: web)
            try write(serviceYAML("api", ip: "10.96.8.2"), to: api)
            let watchersBefore = await settledWatcherCount()

            let recorder = Recorder<SourceEvent>()
            let consumer = record(ManifestSource(path: root, watch: true).events(), into: recorder)
            defer { consumer.cancel() }

            #expect(await eventually { recorder.count >= 2 })
            let initial = recorder.all
            try #require(initial.count == 2, "\(initial)")
            #expect(initial[0].changes?.map(\.key) == [serviceKey("api"), serviceKey("web")])
            #expect(initial[1].isInitialSyncDone)
            #expect(await eventually { openInotifyInstances() == watchersBefore + 1 })

            // An edit on disk arrives as a batch with one upsert.
            try write(serviceYAML("web", ip: "10.96.8.1", port: "8080"), to: web)
            #expect(await eventually { recorder.all.dropFirst(2).contains { $0.changes != nil } }, "no .changes within 5 s")
            let edits = recorder.all.dropFirst(2).compactMap(\.changes).flatMap { $0 }
            #expect(edits.map(\.key) == [serviceKey("web")])
            #expect(edits.first?.upserted?.firstServicePort == 8080)

            // A broken file is reported, and its objects are not deleted.
            let seen = recorder.count
            try write(serviceYAML("api", ip: "10.96.8.2", port: "70000"), to: api)
            #expect(await eventually { recorder.all.dropFirst(seen).contains { $0.problems != nil } }, "no .problems within 5 s")
            let problems = recorder.all.dropFirst(seen).compactMap(\.problems).flatMap { $0 }
            #expect(problems.contains { $0.description == "\(api): document 1: Service default/api: spec.ports[0].port: 70000 is out of range 1-65535" })
            #expect(!recorder.all.dropFirst(seen).compactMap(\.changes).flatMap { $0 }.contains { $0.isDelete })

            // Cancelling the consumer ends the stream and stops the watcher thread.
            consumer.cancel()
            #expect(await eventually { openInotifyInstances() == watchersBefore }, "the watcher thread is still running")
        }
    }

    @Test func aFileReplacedByRenameIsPickedUp() async throws {
        try await withTemporaryFolder { root in
            let web = "\(root)/web.yaml"
            try write(serviceYAML("web", ip: "10.96.9.1"), to: web)
            let recorder = Recorder<SourceEvent>()
            let consumer = record(ManifestSource(path: root, watch: true).events(), into: recorder)
            defer { consumer.cancel() }
            #expect(await eventually { recorder.count >= 2 })

            try replaceByRename(serviceYAML("web", ip: "10.96.9.1", port: "8081"), at: web)
            #expect(await eventually { recorder.all.dropFirst(2).contains { $0.changes != nil } }, "no .changes within 5 s")
            let edits = recorder.all.dropFirst(2).compactMap(\.changes).flatMap { $0 }
            #expect(edits.map(\.key) == [serviceKey("web")])
            #expect(edits.first?.upserted?.firstServicePort == 8081)
            // The editor's hidden temporary file was never read.
            #expect(!recorder.all.contains { $0.problems != nil })
        }
    }

    @Test func aSingleWatchedFileReplacedByRenameIsPickedUp() async throws {
        try await withTemporaryFolder { root in
            let web = "\(root)/web.yaml"
            try write(serviceYAML("web", ip: "10.96.9.2"), to: web)
            let recorder = Recorder<SourceEvent>()
            let consumer = record(ManifestSource(path: web, watch: true).events(), into: recorder)
            defer { consumer.cancel() }
            #expect(await eventually { recorder.count >= 2 })

            try replaceByRename(serviceYAML("web", ip: "10.96.9.2", port: "8082"), at: web)
            #expect(await eventually { recorder.all.dropFirst(2).contains { $0.changes != nil } }, "no .changes within 5 s")
            #expect(recorder.all.dropFirst(2).compactMap(\.changes).flatMap { $0 }.first?.upserted?.firstServicePort == 8082)
        }
    }

    // MARK: FileWatcher

    /// With a poll interval far beyond the deadline, only inotify can deliver the edit.
    @Test func inotifyReportsAnEditWithinTheSettleTime() async throws {
        try await withTemporaryFolder { root in
            let calls = Recorder<ContinuousClock.Instant>()
            let watcher = FileWatcher(root: root, settle: .milliseconds(50), pollInterval: .seconds(600)) { calls.append(.now) }
            watcher.start()
            defer { watcher.stop() }
            try #require(watcher.usesInotify, "inotify is not available here")
            try await Task.sleep(for: .milliseconds(100))
            #expect(calls.count == 0)
            try write("a: 1\n", to: "\(root)/x.yaml")
            #expect(await eventually { calls.count >= 1 })
        }
    }

    /// inotify names the edited file, so a reload need not walk the folder; a new folder (or a hidden
    /// name, such as a ConfigMap volume's `..data` swap) cannot be pinned down to files: walk everything.
    @Test func inotifyNamesTheEditedFileAndAFolderMeansEverything() async throws {
        try await withTemporaryFolder { root in
            try write("a: 1\n", to: "\(root)/x.yaml")
            let changes = Recorder<FileWatcher.Change>()
            let watcher = FileWatcher(root: root, settle: .milliseconds(50), pollInterval: .seconds(600)) { changes.append($0) }
            watcher.start()
            defer { watcher.stop() }
            try #require(watcher.usesInotify, "inotify is not available here")
            try await Task.sleep(for: .milliseconds(100))
            try write("a: 2\n", to: "\(root)/x.yaml")
            #expect(await eventually { changes.count >= 1 })
            #expect(changes.all.first == .paths(["\(root)/x.yaml"]))
            try FileManager.default.createDirectory(atPath: "\(root)/sub", withIntermediateDirectories: false)
            #expect(await eventually { changes.count >= 2 })
            #expect(changes.all.dropFirst().first == .everything)
            try write("a: 3\n", to: "\(root)/.x.yaml.swp")
            #expect(await eventually { changes.count >= 3 })
            #expect(changes.all.dropFirst(2).first == .everything)
        }
    }

    /// The poll alone: the watched file's folder does not exist yet, so inotify has nothing to watch,
    /// and the edit is seen because the watcher polls every 200 ms.
    @Test func pollingFallbackReportsAnEdit() async throws {
        try await withTemporaryFolder { root in
            let file = "\(root)/not/yet/web.yaml"
            let tree = RecordingTree(root: file)
            let watcher = FileWatcher(root: file, settle: .milliseconds(50), pollInterval: .milliseconds(200)) { tree.reload() }
            watcher.start()
            defer { watcher.stop() }
            #expect(await eventually(within: .seconds(3)) { tree.reloads >= 2 }, "the poll did not call back")

            try write(serviceYAML("web", ip: "10.96.10.1"), to: file)
            #expect(await eventually { tree.keys.contains(serviceKey("web")) }, "the new file was not seen within 5 s")
            try write(serviceYAML("web", ip: "10.96.10.1", port: "8080"), to: file)
            #expect(await eventually { tree.port(of: "web") == 8080 }, "the edit was not seen within 5 s")
        }
    }

    /// "Bursts are coalesced: the callback runs once the path has been quiet for `settle`": the
    /// periodic poll must not call back in the middle of a burst either, or a file being rewritten in
    /// place is read half-written (an empty, truncated file reads as "all its objects deleted").
    @Test func thePollWaitsForABurstToSettle() async throws {
        try await withTemporaryFolder { root in
            let calls = Recorder<ContinuousClock.Instant>()
            let watcher = FileWatcher(root: root, settle: .seconds(2), pollInterval: .milliseconds(100)) { calls.append(.now) }
            watcher.start()
            defer { watcher.stop() }
            try #require(watcher.usesInotify, "inotify is not available here")

            // A burst: a write every 50 ms for 1 s, so the path is never quiet for 2 s.
            let start = ContinuousClock.now
            var last = start
            var longestGap = Duration.zero
            for index in 0..<20 {
                try write("step: \(index)\n", to: "\(root)/x.yaml")
                let now = ContinuousClock.now
                longestGap = max(longestGap, now - last)
                last = now
                try await Task.sleep(for: .milliseconds(50))
            }
            let end = ContinuousClock.now
            // On a machine loaded by the other suites a 50 ms sleep can last seconds: then the path was
            // quiet for the settle time and callbacks in between are right; only a real burst is judged.
            guard longestGap < .milliseconds(1_500) else {
                print("the burst was not a burst (a gap of \(longestGap) between writes): not judged")
                return
            }
            let during = calls.all.filter { $0 > start + .milliseconds(150) && $0 < end }
            #expect(during.count == 0, "callbacks while the file was still being written")
        }
    }

    @Test func stopEndsTheThreadAndTheCallbacks() async throws {
        try await withTemporaryFolder { root in
            let before = await settledWatcherCount()
            let calls = Recorder<Int>()
            let watcher = FileWatcher(root: root, settle: .milliseconds(20), pollInterval: .milliseconds(50)) { calls.append(1) }
            watcher.start()
            #expect(await eventually { openInotifyInstances() == before + 1 })
            #expect(await eventually { calls.count >= 2 })
            watcher.stop()
            #expect(await eventually { openInotifyInstances() == before }, "the watcher thread is still running")
            let settled = calls.count
            try await Task.sleep(for: .milliseconds(300))
            #expect(calls.count == settled, "callbacks after stop()")
        }
    }

    /// A subfolder deleted and made again (as `rm -rf sub && mkdir sub`, a `git checkout` or an
    /// unpacked archive do) must be watched again, not left with the dead watch of the old folder.
    @Test func aRecreatedSubfolderIsWatchedAgain() async throws {
        try await withTemporaryFolder { root in
            try FileManager.default.createDirectory(atPath: "\(root)/sub", withIntermediateDirectories: true)
            let calls = Recorder<Int>()
            let watcher = FileWatcher(root: root, settle: .milliseconds(50), pollInterval: .seconds(600)) { calls.append(1) }
            watcher.start()
            defer { watcher.stop() }
            try #require(watcher.usesInotify, "inotify is not available here")

            try FileManager.default.removeItem(atPath: "\(root)/sub")
            try FileManager.default.createDirectory(atPath: "\(root)/sub", withIntermediateDirectories: true)
            #expect(await eventually { calls.count >= 1 })
            try await Task.sleep(for: .milliseconds(200))
            let settled = calls.count

            try write("a: 1\n", to: "\(root)/sub/x.yaml")
            #expect(await eventually(within: .seconds(3)) { calls.count > settled }, "a file written in the recreated folder was not reported")
        }
    }

    /// The control for the test above: when the old folder is gone long enough for the watcher to
    /// forget it before the new one appears, the new one is watched.
    @Test func aSubfolderMadeAfterTheOldOneIsForgottenIsWatched() async throws {
        try await withTemporaryFolder { root in
            try FileManager.default.createDirectory(atPath: "\(root)/sub", withIntermediateDirectories: true)
            let calls = Recorder<Int>()
            let watcher = FileWatcher(root: root, settle: .milliseconds(50), pollInterval: .seconds(600)) { calls.append(1) }
            watcher.start()
            defer { watcher.stop() }
            try #require(watcher.usesInotify, "inotify is not available here")

            try FileManager.default.removeItem(atPath: "\(root)/sub")
            #expect(await eventually { calls.count >= 1 })
            try FileManager.default.createDirectory(atPath: "\(root)/sub", withIntermediateDirectories: true)
            #expect(await eventually { calls.count >= 2 })
            try await Task.sleep(for: .milliseconds(200))
            let settled = calls.count

            try write("a: 1\n", to: "\(root)/sub/x.yaml")
            #expect(await eventually(within: .seconds(3)) { calls.count > settled }, "a file written in the new folder was not reported")
        }
    }

    /// The same for the watched folder itself.
    @Test func aRecreatedRootIsWatchedAgain() async throws {
        try await withTemporaryFolder { parent in
            let root = "\(parent)/manifests"
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            let calls = Recorder<Int>()
            let watcher = FileWatcher(root: root, settle: .milliseconds(50), pollInterval: .seconds(600)) { calls.append(1) }
            watcher.start()
            defer { watcher.stop() }
            try #require(watcher.usesInotify, "inotify is not available here")

            try FileManager.default.removeItem(atPath: root)
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            #expect(await eventually { calls.count >= 1 })
            try await Task.sleep(for: .milliseconds(200))
            let settled = calls.count

            try write("a: 1\n", to: "\(root)/x.yaml")
            #expect(await eventually(within: .seconds(3)) { calls.count > settled }, "a file written in the recreated root was not reported")
        }
    }
}

/// The watchers still open once those of earlier tests have wound down (normally 0).
func settledWatcherCount() async -> Int {
    _ = await eventually(within: .seconds(2)) { openInotifyInstances() == 0 }
    return openInotifyInstances()
}

/// A `ManifestTree` reloaded from a watcher's callback, readable from the test.
final class RecordingTree: Sendable {
    private let tree: Mutex<ManifestTree>
    private let latest = Mutex<(reloads: Int, objects: [ObjectKey: ManifestObject])>((0, [:]))

    init(root: String) { tree = Mutex(ManifestTree(root: root)) }

    func reload() {
        let objects = tree.withLock { tree in
            _ = tree.reload()
            return tree.objects
        }
        latest.withLock { $0 = ($0.reloads + 1, objects) }
    }

    var reloads: Int { latest.withLock { $0.reloads } }
    var keys: Set<ObjectKey> { latest.withLock { Set($0.objects.keys) } }
    func port(of service: String) -> Int? { latest.withLock { $0.objects[serviceKey(service)]?.object.firstServicePort } }
}
