import Foundation
import Testing

/// The deployment in `deploy/`: valid against the Kubernetes API's schemas (offline, with PyPI's
/// kubernetes-validate, which `make test` installs), and saying what Ferry needs.
@Suite("Deployment manifests")
struct DeploymentTests {
    static var validator: String? {
        ProcessInfo.processInfo.environment["PATH"]?.split(separator: ":").map { "\($0)/kubernetes-validate" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @Test func validAgainstTheKubernetesSchemas() throws {
        guard let validator = Self.validator else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("kubernetes-validate is missing (make test installs it)") }
            return
        }
        let folder = "\(repositoryRoot)/deploy/kubernetes"
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(files == ["configmap.yaml", "daemonset.yaml", "rbac.yaml"])
        let result = try runFerry(via: [validator, "--strict"] + files.map { "\(folder)/\($0)" }, timeout: .seconds(120))
        #expect(result.status == 0, "\(result)")
        #expect(!result.stdout.contains("ERROR") && !result.stderr.contains("ERROR"), "\(result)")
    }

    @Test func theDaemonSetRunsWhatFerryNeeds() throws {
        let daemonSet = try String(contentsOfFile: "\(repositoryRoot)/deploy/kubernetes/daemonset.yaml", encoding: .utf8)
        for needed in ["hostNetwork: true", "NET_ADMIN", "fieldPath: spec.nodeName", "path: /livez", "port: 10256", "--in-cluster", "--config=/etc/ferry/config.conf"] {
            #expect(daemonSet.contains(needed), "\(needed)")
        }
        let rbac = try String(contentsOfFile: "\(repositoryRoot)/deploy/kubernetes/rbac.yaml", encoding: .utf8)
        for needed in ["endpointslices", "services", "nodes", #"verbs: ["get", "list", "watch"]"#] { #expect(rbac.contains(needed), "\(needed)") }
        // The flags in the DaemonSet and the unit are flags ferry accepts.
        let unit = try String(contentsOfFile: "\(repositoryRoot)/deploy/systemd/ferry.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/local/bin/ferry run --kubeconfig"))
        // The ConfigMap's configuration is one ferry reads.
        let configMap = try String(contentsOfFile: "\(repositoryRoot)/deploy/kubernetes/configmap.yaml", encoding: .utf8)
        let body = configMap.components(separatedBy: "config.conf: |\n").last ?? ""
        let config = body.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasPrefix("    ") ? String($0.dropFirst(4)) : String($0) }
        try withTemporaryFolder { folder in
            try config.joined(separator: "\n").write(toFile: "\(folder)/config.conf", atomically: true, encoding: .utf8)
            let check = try runFerry(["run", "--config", "\(folder)/config.conf", "--write-config-to", "\(folder)/effective"])
            #expect(check.status == 0, "\(check)")
            #expect(try String(contentsOfFile: "\(folder)/effective", encoding: .utf8).contains("logFormat: json"))
        }
        let help = try runFerry(["run", "--help"]).stdout
        for flag in ["--in-cluster", "--node-name", "--cluster-cidr", "--healthz-bind-address", "--metrics-bind-address", "--kubeconfig", "--mode"] {
            #expect(help.contains(flag), "\(flag)")
        }
    }
}
