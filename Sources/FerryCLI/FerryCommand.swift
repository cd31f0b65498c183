import ArgumentParser
import FerryBench
import FerryCore
import Foundation
import Glibc

/// `ferry`: a kube-proxy replacement. The root command only dispatches.
public struct FerryCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "A kube-proxy replacement: Services and EndpointSlices in, forwarding out.",
        discussion: """
            Sources: --kubeconfig FILE or --in-cluster (the Kubernetes API server, listed and watched), or \
            --manifests PATH (a file or a folder of YAML/JSON, watched where it matters). Read-only commands \
            with no source use the embedded walk-through (my-service and three pods); run and sync need a \
            source named, or --demo for the walk-through.
            Exit status: 0 success, 1 runtime failure, 2 bad usage or bad input.
            """,
        version: FerryCommand.version,
        subcommands: [
            RunCommand.self, SyncCommand.self, CleanupCommand.self, GetCommand.self, DescribeCommand.self, ExplainCommand.self,
            BenchCommand.self,
            DebugCommand.self,
        ])

    /// Ferry's version, as `ferry --version` prints it.
    public static let version = "0.5.0"

    public init() {}

    /// Parses the arguments, runs the command and exits with Ferry's exit codes:
    /// 0 success, 1 runtime failure, 2 bad usage or bad input.
    public static func runMain(arguments: [String]? = nil) async -> Never {
        unblockAllSignals()
        if getenv(peakMemoryFileVariable) != nil { atexit(writePeakMemory) }
        do {
            let expanded: [String]
            do {
                expanded = try ProxyConfiguration.expand(arguments ?? Array(CommandLine.arguments.dropFirst()))
            } catch {
                throw CommandFailure.badInput("error: \(error)")
            }
            var command = try parseAsRoot(expanded)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            Glibc.exit(0)
        } catch let failure as CommandFailure {
            if !failure.message.isEmpty {
                // Every message starts the same way: `error: …` (or a kubectl-shaped `Error from server …`).
                let message =
                    failure.message.hasPrefix("error: ") || failure.message.hasPrefix("Error from server") ? failure.message : "error: " + failure.message
                let text = message.hasSuffix("\n") ? message : message + "\n"
                FileHandle.standardError.write(Data(text.utf8))
            }
            Glibc.exit(failure.code)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                self.exit(withError: error)
            }
            var message = fullMessage(for: error)
            // ArgumentParser says `Error: `; Ferry's own messages say `error: `, as git and cargo do.
            if message.hasPrefix("Error: ") { message = "error: " + message.dropFirst(7) }
            FileHandle.standardError.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
            // Usage errors are 2, as for any Unix tool; ArgumentParser would say 64.
            Glibc.exit(code == .validationFailure ? 2 : code.rawValue)
        }
    }
}

private func writePeakMemory() {
    guard let path = getenv(peakMemoryFileVariable).map({ String(cString: $0) }),
        let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
    else { return }
    let kibibytes = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0"
    try? String(kibibytes).write(toFile: path, atomically: false, encoding: .utf8)
}

/// Starts with no signal blocked. A process inherits its parent's mask, and a parent that spawned Ferry
/// from a Dispatch thread (a test, a benchmark) passes on a mask blocking nearly everything, which would
/// stop SIGTERM from ending `ferry run` and SIGCHLD from telling Ferry its own children exited.
func unblockAllSignals() {
    var none = sigset_t()
    sigemptyset(&none)
    pthread_sigmask(SIG_SETMASK, &none, nil)
}

/// A command that failed in a way the user should read: bad input (exit 2) or a runtime failure (exit 1).
public struct CommandFailure: Error, Sendable {
    public var code: Int32
    public var message: String

    public static func badInput(_ message: String) -> CommandFailure { CommandFailure(code: 2, message: message) }
    public static func runtime(_ message: String) -> CommandFailure { CommandFailure(code: 1, message: message) }

    /// Bad input listing each problem on its own line.
    public static func badInput(_ problems: [ManifestError]) -> CommandFailure {
        let plural = problems.count == 1 ? "" : "s"
        return badInput(
            "error: \(problems.count) problem\(plural) in the manifests:\n" + problems.map { "  \($0)" }.joined(separator: "\n"))
    }
}
