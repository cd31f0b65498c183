import Foundation
import Testing

/// What `run` and `sync` refuse before touching the node.
@Suite("Commands that change the node")
struct LifecycleTests {
    /// No source: the embedded walk-through (10.96.0.10:80, kube-dns's ClusterIP on kubeadm clusters) is
    /// not proxied on a node by default.
    @Test(arguments: [["run"], ["sync"], ["run", "--mode", "userspace"]])
    func noSourceIsRefusedNamingTheChoices(_ arguments: [String]) throws {
        let result = try runFerry(arguments + ["--healthz-bind-address", "", "--metrics-bind-address", ""].filter { _ in arguments[0] == "run" })
        #expect(result.status == 2, "\(result)")
        #expect(result.stderr.contains("--kubeconfig FILE") && result.stderr.contains("--manifests PATH") && result.stderr.contains("--demo"))
        // The walk-through on request, and read-only commands keep it as their default.
        let dryRun = try runFerry(["sync", "--dry-run", "--demo", "--node-name", "node-1", "--node-ip", "192.0.2.1"])
        #expect(dryRun.status == 0 && dryRun.stdout.contains("10.96.0.10"), "\(dryRun)")
        #expect(try runFerry(["get", "svc"]).stdout.contains("my-service"))
    }

    /// Without CAP_NET_ADMIN every batch would be refused: say so at once, exit 1.
    @Test(arguments: ["run", "sync"])
    func withoutNetAdminTheCommandFailsAtOnce(_ command: String) throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), let ferry = ferryExecutable else { return }
        // nobody must be able to reach the binary and the manifests.
        guard access(ferry, X_OK) == 0 else { return }
        let result = try runFerry(
            via: ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ferry, command, "--demo"], timeout: .seconds(10))
        guard !result.stderr.contains("Permission denied") else { return }  // a home nobody cannot enter
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("needs root or CAP_NET_ADMIN"), "\(result)")
        #expect(!result.timedOut)
    }

    @Test func versionAndLogFormat() throws {
        let version = try runFerry(["--version"])
        #expect(version.status == 0 && version.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3, "\(version)")
        let verbose = try runFerry(["run", "--demo", "-v=4", "--write-config-to", "/dev/null"])
        #expect(verbose.status == 0, "kube-proxy's -v=N is accepted: \(verbose)")
        let bad = try runFerry(["run", "--demo", "--log-format", "xml"])
        #expect(bad.status == 2 && bad.stderr.contains("--log-format: expected text or json"), "\(bad)")
    }
}
