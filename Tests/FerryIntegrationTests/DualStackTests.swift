import FerryTestbed
import Foundation
import Testing

/// IPv6 and dual-stack services programmed into a kernel (a private network namespace): the kernel
/// accepts every IPv6 encoding, lists what the dry run prints, and a second sync sends nothing.
@Suite("nftables data plane: IPv6 and dual stack in the kernel", .serialized)
struct DualStackTests {
    @Test func ipv6RulesLoadListAsPrintedAndConverge() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        guard let ferry = Testbed.ferryExecutable else { throw TrafficTestError("no ferry executable next to the tests") }
        var fixture = URL(fileURLWithPath: #filePath)
        fixture.deleteLastPathComponent()
        let manifests = fixture.appendingPathComponent("Fixtures/dual-stack.yaml").path
        let flags = "--manifests \(manifests) --node-name node-1 --cluster-cidr 10.244.0.0/16,fd00:244::/64"
        let script = """
            set -e
            \(ferry) sync \(flags)
            echo '--- listed'
            nft list table ip6 ferry
            echo '--- second'
            \(ferry) sync \(flags)
            """
        let output = try runInPrivateNamespace(script)
        let listed = output.components(separatedBy: "--- listed\n")[1].components(separatedBy: "--- second\n")[0]
        let second = output.components(separatedBy: "--- second\n")[1]
        let dryRun = try runInPrivateNamespace("\(ferry) sync --dry-run \(flags)")
        let ip6 = String(dryRun[dryRun.range(of: "table ip6 ferry")!.lowerBound...])
        #expect(normalizedRuleset(listed) == normalizedRuleset(ip6))
        #expect(listed.contains("meta l4proto tcp dnat to [fd00:244::2]:8080"))
        #expect(listed.contains("fd00:96::77 . udp . 53 : goto reject-chain"), "the dual-stack service has no IPv6 endpoint")
        #expect(second.contains(": 0 operations"), "\(second)")
    }

    /// Runs a shell script in a new network namespace (gone when it exits); throws on failure.
    func runInPrivateNamespace(_ script: String) throws -> String {
        let result = try Testbed.execute(["/usr/bin/unshare", "-n", "sh", "-c", script])
        guard result.status == 0 else { throw TrafficTestError("unshare -n script failed: \(result)") }
        return result.stdout + result.stderr
    }
}
