import FerryTestbed
import Foundation
import Glibc

/// What the benchmarks do alike with their test beds and the processes they start in them.
public enum BenchProcesses {
    /// The data-path benchmarks' bed: a client, a node and three pods (one on node-1, two on node-2).
    public static func threePodBed() throws -> Testbed {
        try Testbed(
            pods: [
                Testbed.PodSpec(name: "pod-1", ip: "10.244.1.2", node: "node-1"),
                Testbed.PodSpec(name: "pod-2", ip: "10.244.2.2", node: "node-2"),
                Testbed.PodSpec(name: "pod-3", ip: "10.244.2.3", node: "node-2"),
            ], nodeDefaultRoute: true)
    }

    /// This executable's own path, for the processes the benchmarks start in their beds.
    public static var ferryPath: String { URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path }

    /// Waits (at most 10 s) until a spawned process's stderr contains `text`.
    public static func waitFor(_ bed: Testbed, log name: String, text: String) throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if bed.log(name).stderr.contains(text) { return }
            usleep(50_000)
        }
        throw BenchFailure("\(name) did not start: \(bed.log(name).stderr)")
    }

    /// SIGTERM, then SIGKILL after 10 s (said on stderr).
    public static func stop(_ process: Process) {
        kill(process.processIdentifier, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(10)
        while kill(process.processIdentifier, 0) == 0 && ContinuousClock.now < deadline { usleep(20_000) }
        if kill(process.processIdentifier, 0) == 0 {
            FileHandle.standardError.write(Data("  process \(process.processIdentifier) ignored SIGTERM for 10 s; killed\n".utf8))
            kill(process.processIdentifier, SIGKILL)
            usleep(200_000)
        }
    }
}

/// A benchmark that could not measure: what failed, said for its user.
public struct BenchFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
