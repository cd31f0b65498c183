import Foundation
import Testing

/// The repository's root, from this file's path (`Tests/FerryCLITests/<file>`).
let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The `ferry` executable built next to this test bundle (the same scratch path `swift test` runs
/// from), found by walking up from the test process's own executable; else the newest
/// `.build*/debug/ferry` under the repository.
let ferryExecutable: String? = {
    let fileManager = FileManager.default
    func executable(in folder: URL) -> String? {
        let candidate = folder.appendingPathComponent("ferry").path
        var isDirectory: ObjCBool = false
        guard fileManager.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue,
            fileManager.isExecutableFile(atPath: candidate)
        else { return nil }
        return candidate
    }
    let starts = [URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]), Bundle.main.bundleURL, Bundle.main.executableURL]
        .compactMap { $0?.resolvingSymlinksInPath() }
    for start in starts {
        var folder = start.deletingLastPathComponent()
        for _ in 0..<4 {
            if let found = executable(in: folder) { return found }
            folder.deleteLastPathComponent()
        }
    }
    let builds = ((try? fileManager.contentsOfDirectory(atPath: repositoryRoot)) ?? []).filter { $0.hasPrefix(".build") }
    let candidates = builds.compactMap { executable(in: URL(fileURLWithPath: "\(repositoryRoot)/\($0)/debug")) }
    return candidates.max { modified($0) < modified($1) }
}()

private func modified(_ path: String) -> Date {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date) ?? .distantPast
}

struct FerryResult: Sendable, CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    var timedOut = false

    var description: String { "exit \(status)\(timedOut ? " (timed out)" : "")\n--- stdout\n\(stdout)--- stderr\n\(stderr)" }
}

enum RunError: Error, CustomStringConvertible {
    case noExecutable
    var description: String { "no ferry executable found next to the test bundle or under \(repositoryRoot)/.build*/debug" }
}

/// A fresh folder under `NSTemporaryDirectory()` (made by `mkdtemp`), removed when `body` returns.
func withTemporaryFolder<T>(_ body: (String) throws -> T) throws -> T {
    var template = Array((NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-cli-tests.XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
    let folder = String(cString: made)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    return try body(folder)
}

func withTemporaryFolder<T>(_ body: (String) async throws -> T) async throws -> T {
    var template = Array((NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-cli-tests.XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
    let folder = String(cString: made)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    return try await body(folder)
}

/// Runs `ferry args…` in the repository's root (so `deploy/examples` resolves), with stdin closed and
/// the output captured through temporary files; killed after `timeout`.
func runFerry(_ args: [String], timeout: Duration = .seconds(30)) throws -> FerryResult {
    guard let executable = ferryExecutable else { throw RunError.noExecutable }
    return try runFerry(via: [executable] + args, timeout: timeout)
}

/// Runs `command` (an executable's path and its arguments) as `runFerry` runs ferry: for wrappers such
/// as a shell that sets limits first.
func runFerry(via command: [String], timeout: Duration = .seconds(30)) throws -> FerryResult {
    try withTemporaryFolder { folder in
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
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        var timedOut = false
        if exited.wait(timeout: .now() + .milliseconds(Int(timeout.components.seconds * 1000))) == .timedOut {
            timedOut = true
            kill(process.processIdentifier, SIGKILL)
            exited.wait()
        }
        let stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        return FerryResult(status: process.terminationStatus, stdout: stdout, stderr: stderr, timedOut: timedOut)
    }
}

@Suite("Test harness")
struct HarnessTests {
    /// The binary under test is the one built in the same scratch path as these tests, not a stale one
    /// from another build folder.
    @Test func ferryIsTheExecutableBuiltWithTheseTests() throws {
        let executable = try #require(ferryExecutable, "\(RunError.noExecutable)")
        let testBinaryFolder = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        #expect(URL(fileURLWithPath: executable).deletingLastPathComponent().path == testBinaryFolder.path)
        let help = try runFerry(["--help"])
        #expect(help.status == 0)
    }
}
