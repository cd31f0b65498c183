import Foundation
import Glibc

/// Names a file where Ferry writes its peak resident memory (`VmHWM`, in KiB) when it exits: how
/// `ferry bench load` measures `ferry get` as a child. The child's own rusage cannot tell: Linux keeps
/// the peak across exec, and a posix_spawn child starts out in its parent's memory, so it reports the
/// benchmark's peak (970 MiB where Ferry's own was under 200).
public let peakMemoryFileVariable = "FERRY_PEAK_MEMORY_FILE"

/// The process's peak resident memory so far.
public func peakResidentMiB() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
}

/// A finished child process: what it printed (standard output and error together), how long it ran
/// and the most memory it held.
public struct ChildRun: Sendable {
    public var output: String
    public var succeeded: Bool
    public var seconds: Double
    public var peakResidentMiB: Double
}

/// Runs a command (found on PATH), returns its standard output and error together; throws on failure.
public func runChild(_ arguments: [String]) throws -> String {
    let run = try runChildMeasured(arguments)
    guard run.succeeded else { throw BenchFailure("\(arguments.joined(separator: " ")) failed:\n\(run.output)") }
    return run.output
}

/// Runs a command (found on PATH) and measures it: wall time from spawn to exit, and, for ferry, its
/// peak resident memory as it reports it (see `peakMemoryFileVariable`).
/// Uses posix_spawn and wait4 rather than Foundation's Process: in a fresh network namespace the
/// loopback link is down, Foundation cannot set up its wake-up sockets, and Process never notices that
/// its child exited.
public func runChildMeasured(_ arguments: [String], environment: [String: String] = [:]) throws -> ChildRun {
    let path = NSTemporaryDirectory() + "ferry-child-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).out"
    defer { unlink(path) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var environment = environment
    environment[peakMemoryFileVariable] = path + ".peak"
    defer { unlink(path + ".peak") }
    let assignments = environment.map { "\($0.key)=\($0.value)" }
    let argv: [UnsafeMutablePointer<CChar>?] = (["/usr/bin/env"] + assignments + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let started = ContinuousClock.now
    let spawned = posix_spawn(&pid, "/usr/bin/env", &actions, nil, argv, environ)
    guard spawned == 0 else {
        throw BenchFailure("cannot start \(arguments.joined(separator: " ")): \(String(cString: strerror(spawned)))")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let elapsed = ContinuousClock.now - started
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    let exited = status & 0x7f == 0 && (status >> 8) & 0xff == 0
    // Only a ferry child writes its peak; 0 for other commands.
    let peak = (try? String(contentsOfFile: path + ".peak", encoding: .utf8)).flatMap { Double($0) } ?? 0
    return ChildRun(output: text, succeeded: exited, seconds: elapsed.seconds, peakResidentMiB: peak / 1024)
}
