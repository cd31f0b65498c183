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

/// The userspace mode with an IPv6 service, end to end in a private network namespace: a local route
/// for the IPv6 ClusterIP, a relayed stream and requests, and no route left after SIGTERM.
@Suite("userspace data plane: IPv6")
struct UserspaceIPv6Tests {
    @Test func anIPv6ServiceIsRoutedRelayedAndCleanedUp() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        guard let ferry = Testbed.ferryExecutable else { throw TrafficTestError("no ferry executable next to the tests") }
        var fixture = URL(fileURLWithPath: #filePath)
        fixture.deleteLastPathComponent()
        let manifests = fixture.appendingPathComponent("Fixtures/userspace-ipv6.yaml").path
        let script = """
            set -e
            ip link set lo up
            ip -6 addr add fd00:244::2/128 dev lo
            \(ferry) debug serve --name pod-v6 --bind :: --tcp 8080 --udp 5353 > /dev/null &
            server=$!
            \(ferry) run --mode userspace --manifests \(manifests) --node-name node-1 --node-ip fd00:10::1 2> /dev/null &
            proxy=$!
            for i in $(seq 50); do ip -6 route show table local proto 249 | grep -q fd00:96::10 && break; sleep 0.1; done
            sleep 0.3
            echo '--- routes'
            ip -6 route show table local proto 249
            echo '--- stream'
            \(ferry) debug stream --to [fd00:96::10]:80 --bytes 1000000
            echo '--- probe'
            \(ferry) debug probe --to [fd00:96::10]:80 --count 5
            echo '--- udp'
            \(ferry) debug probe --protocol udp --to [fd00:96::10]:53 --count 5
            kill -TERM $proxy; wait $proxy || true
            echo '--- after'
            ip -6 route show table local proto 249
            kill $server
            """
        let result = try Testbed.execute(["/usr/bin/unshare", "-n", "sh", "-c", script], timeout: .seconds(60))
        #expect(result.status == 0, "\(result)")
        let output = result.stdout
        #expect(output.contains("--- routes\nlocal fd00:96::10 dev lo"), "\(output)")
        #expect(output.contains("\"verified\":1"), "\(output)")
        #expect(output.contains("pod-v6") && output.contains("failed: 0"), "\(output)")
        // UDP over IPv6: the answer came back from [fd00:96::10]:53 (the probe's socket is connected to it).
        let udp = output.components(separatedBy: "--- udp\n")
        #expect(udp.count == 2 && udp[1].contains("pod-v6") && udp[1].contains("failed: 0"), "\(output)")
        #expect(output.hasSuffix("--- after\n"), "no route left: \(output)")
    }
}
