import Foundation
import Synchronization
import Testing

/// `ferry get endpoints --watch` on a copy of the examples: a row per Service whose endpoints change,
/// errors for a broken file (whose Service keeps its row), `<deleted>` when a file goes.
@Suite("ferry get --watch")
struct WatchTests {
    @Test func followsEditsBreakageAndDeletion() async throws {
        let executable = try #require(ferryExecutable, "\(RunError.noExecutable)")
        try await withTemporaryFolder { folder in
            let examples = "\(folder)/examples"
            try FileManager.default.copyItem(atPath: "\(repositoryRoot)/deploy/examples", toPath: examples)
            let outPath = "\(folder)/stdout", errPath = "\(folder)/stderr"
            _ = FileManager.default.createFile(atPath: outPath, contents: nil)
            _ = FileManager.default.createFile(atPath: errPath, contents: nil)
            let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
            let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
            defer {
                try? out.close()
                try? err.close()
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["get", "endpoints", "--manifests", examples, "--watch"]
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = out
            process.standardError = err
            let exited = Mutex(false)
            process.terminationHandler = { _ in exited.withLock { $0 = true } }
            try process.run()
            defer {
                if !exited.withLock({ $0 }) { kill(process.processIdentifier, SIGKILL) }
                process.waitUntilExit()
            }
            func stdout() -> [String] {
                ((try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "").components(separatedBy: "\n").filter { !$0.isEmpty }
            }
            func stderr() -> String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }

            // The listing first: a header and nine rows.
            #expect(await eventually { stdout().count >= 10 }, "no initial listing: \(stdout()) \(stderr())")
            #expect(stdout().first?.hasPrefix("NAME ") == true)
            // Give the watcher a moment to take its initial view (an edit before that is printed only
            // with the next change).
            try await Task.sleep(for: .milliseconds(300))

            // A pod of my-service is replaced: 10.244.2.3 becomes 10.244.2.4.
            let myService = "\(examples)/my-service.yaml"
            let text = try String(contentsOfFile: myService, encoding: .utf8)
            try replaceByRename(text.replacingOccurrences(of: "10.244.2.3\n", with: "10.244.2.4\n"), at: myService)
            #expect(await eventually { stdout().count >= 11 }, "no row for the edit: \(stdout()) \(stderr())")
            let row = stdout().dropFirst(10).first ?? ""
            #expect(row.hasPrefix("my-service "), "\(row)")
            #expect(row.contains(" 10.244.1.2:80,10.244.2.2:80,10.244.2.4:80 "), "\(row)")
            #expect(stdout().count == 11, "only my-service changed: \(stdout())")

            // sticky's file breaks: an error naming file, document, object and field; sticky stays.
            let sticky = "\(examples)/session-affinity.yaml"
            let good = try String(contentsOfFile: sticky, encoding: .utf8)
            try replaceByRename(good.replacingOccurrences(of: "port: 8080", with: "port: 70000"), at: sticky)
            let expected = "error: \(sticky): document 2: Endpoints default/sticky: subsets[0].ports[0].port: 70000 is out of range 1-65535"
            #expect(await eventually { stderr().contains(expected) }, "\(stderr())")
            #expect(stdout().count == 11, "a broken file changes no row: \(stdout())")

            // Deleted: sticky's row goes.
            try FileManager.default.removeItem(atPath: sticky)
            #expect(await eventually { stdout().contains { $0.hasPrefix("sticky ") && $0.hasSuffix("<deleted>") } }, "\(stdout())")

            process.terminate()
            #expect(await eventually { exited.withLock { $0 } }, "ferry did not stop on SIGTERM")
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns its last value.
func eventually(within timeout: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}

/// Replaces `path` the way editors do: write a hidden sibling, then rename it over the file.
func replaceByRename(_ text: String, at path: String) throws {
    let temporary = (path as NSString).deletingLastPathComponent + "/.\((path as NSString).lastPathComponent).swp"
    try text.write(toFile: temporary, atomically: false, encoding: .utf8)
    guard rename(temporary, path) == 0 else { throw CocoaError(.fileWriteUnknown) }
}
