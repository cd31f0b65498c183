import FerryTestbed
import Foundation
import Glibc

/// What the benchmarks do alike with the processes they start in their test beds.
enum BenchProcesses {
    /// Waits (at most 10 s) until a spawned process's stderr contains `text`.
    static func waitFor(_ bed: Testbed, log name: String, text: String) throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if bed.log(name).stderr.contains(text) { return }
            usleep(50_000)
        }
        throw CommandFailure.runtime("\(name) did not start: \(bed.log(name).stderr)")
    }

    /// SIGTERM, then SIGKILL after 10 s (said on stderr).
    static func stop(_ process: Process) {
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
