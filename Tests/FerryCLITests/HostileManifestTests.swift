import Foundation
import Testing

/// Files built to make a reader hang or run out of memory: each is refused with exit 2 naming the file,
/// quickly, under an address-space limit of a few hundred MB (a run that needed more would crash instead
/// of exiting 2).
@Suite("Hostile manifests")
struct HostileManifestTests {
    /// `ulimit -v` for the command, in KiB: 500 MB (ferry itself needs under 200 MB of address space).
    static let addressSpaceKiB = 500_000

    struct Hostile: Sendable, CustomTestStringConvertible {
        var label: String
        var fileName: String
        /// Writes the file at the given path.
        var write: @Sendable (String) throws -> Void
        /// What the error must say besides the file's path.
        var message: String
        var testDescription: String { label }
    }

    /// Ten anchors, each a list of ten aliases to the one before: 10^10 strings once expanded.
    static func billionLaughs(kind: String) -> String {
        var text =
            kind == "Service"
            ? "apiVersion: v1\nkind: Service\nmetadata:\n  name: lol\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n"
            : "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\n"
        text += "lols:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        for level in 1..<10 {
            text += "  l\(level): &l\(level) [" + Array(repeating: "*l\(level - 1)", count: 10).joined(separator: ", ") + "]\n"
        }
        return text
    }

    /// One anchored list of 10,000 strings and a list of 10,000 aliases to it: 10^8 strings from 20,000 written.
    static let quadraticAliases: String = {
        var text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: quadratic\nspec:\n  clusterIP: 10.96.0.11\n  ports: [{port: 80}]\n"
        text += "base: &b [" + Array(repeating: "x", count: 10_000).joined(separator: ", ") + "]\n"
        text += "copies: [" + Array(repeating: "*b", count: 10_000).joined(separator: ", ") + "]\n"
        return text
    }()

    static let hostiles: [Hostile] = [
        Hostile(
            label: "billion laughs in a Service", fileName: "lol-service.yaml",
            write: { try billionLaughs(kind: "Service").write(toFile: $0, atomically: false, encoding: .utf8) },
            message: "excessive aliasing"),
        Hostile(
            label: "billion laughs in a ConfigMap", fileName: "lol-configmap.yaml",
            write: { try billionLaughs(kind: "ConfigMap").write(toFile: $0, atomically: false, encoding: .utf8) },
            message: "excessive aliasing"),
        Hostile(
            label: "quadratic alias blow-up", fileName: "quadratic.yaml",
            write: { try quadraticAliases.write(toFile: $0, atomically: false, encoding: .utf8) }, message: "excessive aliasing"),
        Hostile(
            label: "100 MB file", fileName: "huge.json",
            write: { path in
                // One Service whose annotation is 100 MB: a real file, written in 1 MB pieces.
                FileManager.default.createFile(atPath: path, contents: nil)
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
                defer { try? handle.close() }
                try handle.write(
                    contentsOf: Data(#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"huge","annotations":{"a":""#.utf8))
                let piece = Data(repeating: UInt8(ascii: "x"), count: 1 << 20)
                for _ in 0..<100 { try handle.write(contentsOf: piece) }
                try handle.write(contentsOf: Data(#""}},"spec":{"clusterIP":"10.96.0.12","ports":[{"port":80}]}}"#.utf8))
            },
            message: "more than the 64 MiB a manifest file may hold"),
        Hostile(
            label: "100,000-deep JSON", fileName: "deep.json",
            write: { path in
                let text =
                    #"{"apiVersion":"v1","kind":"Service","metadata":{"name":"deep"},"x":"# + String(repeating: "[", count: 100_000)
                    + String(repeating: "]", count: 100_000) + "}"
                try text.write(toFile: path, atomically: false, encoding: .utf8)
            },
            message: "nested too deeply"),
        Hostile(
            label: "100,000-deep YAML", fileName: "deep.yaml",
            write: { path in
                let text =
                    "apiVersion: v1\nkind: Service\nmetadata: {name: deep}\nx: " + String(repeating: "[", count: 100_000)
                    + String(repeating: "]", count: 100_000) + "\n"
                try text.write(toFile: path, atomically: false, encoding: .utf8)
            },
            message: "nested too deeply"),
    ]

    @Test(arguments: hostiles)
    func refusedQuicklyWithExit2NamingTheFile(_ hostile: Hostile) throws {
        try withTemporaryFolder { folder in
            let path = "\(folder)/\(hostile.fileName)"
            try hostile.write(path)
            let started = ContinuousClock.now
            let result = try runFerryLimited(["get", "endpoints", "-A", "--manifests", path])
            let elapsed = ContinuousClock.now - started
            #expect(result.status == 2, "\(result)")
            #expect(result.stderr.contains(path), "\(result)")
            #expect(result.stderr.contains(hostile.message), "\(result)")
            #expect(elapsed < .seconds(1), "took \(elapsed)")
        }
    }

    /// Runs ferry under `ulimit -v` through the shell.
    func runFerryLimited(_ args: [String]) throws -> FerryResult {
        guard let executable = ferryExecutable else { throw RunError.noExecutable }
        return try runFerry(
            via: ["/bin/sh", "-c", "ulimit -v \(HostileManifestTests.addressSpaceKiB) && exec \"$0\" \"$@\"", executable] + args)
    }
}
