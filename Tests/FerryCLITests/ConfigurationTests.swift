import Foundation
import Testing

/// `ferry run --config FILE`: kube-proxy's KubeProxyConfiguration, flags winning, errors naming fields.
@Suite("Configuration file")
struct ConfigurationTests {
    static let kubeProxyConfig = """
        apiVersion: kubeproxy.config.k8s.io/v1alpha1
        kind: KubeProxyConfiguration
        mode: nftables
        hostnameOverride: node-7
        bindAddress: 0.0.0.0
        healthzBindAddress: 0.0.0.0:10256
        metricsBindAddress: 127.0.0.1:10249
        clusterCIDR: 10.244.0.0/16
        nodePortAddresses: [192.0.2.0/24]
        clientConnection:
          kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
          qps: 5
        iptables:
          masqueradeAll: false
          syncPeriod: 30s
        conntrack:
          udpTimeout: 45s
          maxPerCore: 32768
        nftables:
          masqueradeAll: true
          syncPeriod: 1m30s
          minSyncPeriod: 500ms
        udpIdleTimeout: 400ms
        ferry:
          userspaceBalancer: maglev
          logFormat: json
          udpMaxSessions: 1000
        """

    @Test func fieldsBecomeSettingsAndFlagsWin() throws {
        try withTemporaryFolder { folder in
            let config = "\(folder)/config.yaml"
            try Self.kubeProxyConfig.write(toFile: config, atomically: true, encoding: .utf8)
            let written = "\(folder)/effective.yaml"
            let result = try runFerry(["run", "--config", config, "--min-sync-period", "2", "--write-config-to", written])
            #expect(result.status == 0, "\(result)")
            let text = try String(contentsOfFile: written, encoding: .utf8)
            for line in [
                "mode: nftables", #"hostnameOverride: "node-7""#, #"clusterCIDR: "10.244.0.0/16""#, #"nodePortAddresses: ["192.0.2.0/24"]"#,
                #"  kubeconfig: "/var/lib/kube-proxy/kubeconfig.conf""#, "  masqueradeAll: true", "  syncPeriod: 90s",
                "  minSyncPeriod: 2s", "  userspaceBalancer: maglev", "  logFormat: json", "  udpTimeout: 45s",
                "udpIdleTimeout: 400ms", "  udpMaxSessions: 1000",
            ] {
                #expect(text.contains(line), "\(line) in:\n\(text)")
            }
            // The written configuration reads back to itself.
            let again = "\(folder)/again.yaml"
            let reread = try runFerry(["run", "--config", written, "--write-config-to", again])
            #expect(reread.status == 0, "\(reread)")
            #expect(try String(contentsOfFile: again, encoding: .utf8) == text)
        }
    }

    @Test(arguments: [
        ("iptables: {}\nproxyMode: fast", "proxyMode: is not a field of KubeProxyConfiguration"),
        ("mode: ipvs", #"mode: "ipvs": Ferry programs nftables or relays in userspace"#),
        ("nftables: {syncPeriod: soon}", #"nftables.syncPeriod: "soon" is not a duration"#),
        ("nftables: {masqueradeAll: yes please}", "nftables.masqueradeAll: must be true or false"),
        ("ferry: {balancer: x}", "ferry.balancer: is not a field of ferry"),
        ("clusterCIDR: 10.244.0.0/33", #"--cluster-cidr: "10.244.0.0/33" is not a valid CIDR"#),
    ])
    func badFieldsAreNamed(_ extra: String, _ message: String) throws {
        try withTemporaryFolder { folder in
            let config = "\(folder)/config.yaml"
            try "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\(extra)\n".write(
                toFile: config, atomically: true, encoding: .utf8)
            let result = try runFerry(["run", "--config", config, "--write-config-to", "\(folder)/out"])
            #expect(result.status == 2, "\(result)")
            #expect(result.stderr.contains(message), "\(result)")
            #expect(!FileManager.default.fileExists(atPath: "\(folder)/out"))
        }
    }

    @Test func notAKubeProxyConfiguration() throws {
        try withTemporaryFolder { folder in
            try "apiVersion: v1\nkind: ConfigMap\n".write(toFile: "\(folder)/c", atomically: true, encoding: .utf8)
            let result = try runFerry(["run", "--config", "\(folder)/c"])
            #expect(result.status == 2 && result.stderr.contains("apiVersion: must be kubeproxy.config.k8s.io/v1alpha1"), "\(result)")
            let missing = try runFerry(["run", "--config", "\(folder)/absent"])
            #expect(missing.status == 2 && missing.stderr.contains("cannot read"), "\(missing)")
        }
    }
}
