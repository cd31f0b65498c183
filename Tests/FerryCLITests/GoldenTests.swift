import FerryCore
import Foundation
import Testing

/// `ferry get` and `ferry explain` on the repository's examples, compared with the files in `Golden/`.
/// The AGE column depends on the clock, so it is checked to be a duration and then masked as `<age>`.
/// Run with `FERRY_UPDATE_GOLDEN=1` to rewrite the files (then read every diff before committing).
@Suite("Golden outputs")
struct GoldenTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var golden: String
        var args: [String]
        var testDescription: String { "ferry " + args.joined(separator: " ") }
    }

    static let examples = ["--manifests", "deploy/examples"]
    /// Services written by kubectl 1.32 (`kubectl create service … --dry-run=client -o yaml`): the
    /// copies it wrote; `kubectlWroteTheFixtures` checks them against kubectl where it is installed.
    static let kubectlCreated = "Tests/FerryCLITests/Fixtures/kubectl-create"
    static let kubectlCreateCommands: [String: [String]] = [
        "clusterip": ["clusterip", "my-svc", "--tcp=80:8080"], "headless": ["clusterip", "my-headless", "--clusterip=None", "--tcp=80:8080"],
        "nodeport": ["nodeport", "my-np", "--tcp=80:8080"], "nodeport-fixed": ["nodeport", "my-np-fixed", "--tcp=80:8080", "--node-port=30123"],
        "loadbalancer": ["loadbalancer", "my-lb", "--tcp=443:8443"], "externalname": ["externalname", "my-ext", "--external-name=example.com"],
    ]

    /// The fixtures are kubectl's own output, not hand-written: regenerated here when kubectl is on PATH.
    @Test func kubectlWroteTheFixtures() throws {
        guard let kubectl = ["/usr/local/bin/kubectl", "/usr/bin/kubectl"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            print("kubectl is not installed: the kubectl-create fixtures are checked as committed")
            return
        }
        for (file, arguments) in GoldenTests.kubectlCreateCommands {
            let result = try runFerry(via: [kubectl, "create", "service"] + arguments + ["--dry-run=client", "-o", "yaml"])
            try #require(result.status == 0, "\(result)")
            let committed = try String(contentsOfFile: "\(repositoryRoot)/\(GoldenTests.kubectlCreated)/\(file).yaml", encoding: .utf8)
            #expect(result.stdout == committed, "\(file).yaml differs from what kubectl writes now")
        }
    }
    static func explain(_ destination: String, _ extra: String...) -> [String] {
        ["explain", "--manifests", "deploy/examples", "--node-name", "node-1", "--to", destination] + extra
    }

    static let cases: [Case] = [
        Case(golden: "get-services", args: ["get", "services"] + examples),
        Case(golden: "get-endpoints", args: ["get", "endpoints"] + examples),
        Case(golden: "get-endpoints-wide", args: ["get", "endpoints"] + examples + ["-o", "wide"]),
        Case(golden: "get-svc-wide", args: ["get", "svc"] + examples + ["-o", "wide"]),
        // The walk-through three ways, and embedded: one listing.
        Case(golden: "get-endpoints-walkthrough", args: ["get", "endpoints", "--manifests", "deploy/walkthrough/pods.yaml"]),
        Case(golden: "get-endpoints-walkthrough", args: ["get", "endpoints", "--manifests", "deploy/walkthrough/endpointslices.yaml"]),
        Case(golden: "get-endpoints-walkthrough", args: ["get", "endpoints", "--manifests", "deploy/walkthrough/endpoints.yaml"]),
        Case(golden: "get-endpoints-walkthrough", args: ["get", "endpoints"]),
        // The tutorial's Service as a newcomer writes it (no clusterIP) with its Pods: allocated, derived.
        Case(golden: "describe-svc-tutorial", args: ["describe", "svc", "my-service", "--manifests", "deploy/walkthrough/tutorial"]),
        Case(golden: "describe-ep-tutorial", args: ["describe", "endpoints", "my-service", "--manifests", "deploy/walkthrough/tutorial"]),
        Case(golden: "get-svc-ep-tutorial", args: ["get", "svc,ep", "--manifests", "deploy/walkthrough/tutorial"]),
        // What `kubectl create service … --dry-run=client -o yaml` writes, loaded unedited.
        Case(golden: "get-svc-kubectl-create", args: ["get", "svc", "--manifests", GoldenTests.kubectlCreated]),
        Case(golden: "describe-svc-kubectl-create", args: ["describe", "svc", "--manifests", GoldenTests.kubectlCreated]),
        Case(golden: "describe-svc-examples", args: ["describe", "svc", "public-web", "local-only", "--manifests", "deploy/examples"]),
        Case(golden: "explain-my-service", args: explain("10.96.0.10:80")),
        Case(golden: "explain-draining", args: explain("10.96.0.15:80")),
        Case(golden: "explain-local-only-nodeport", args: explain("10.0.0.1:30081")),
        Case(golden: "explain-zonal", args: explain("10.96.0.17:80")),
        Case(golden: "explain-sticky", args: explain("10.96.0.12:80")),
        Case(golden: "explain-dns-udp", args: explain("10.96.0.53:53", "--protocol", "udp")),
        Case(golden: "explain-external-ip", args: explain("192.0.2.10:443")),
        Case(golden: "explain-load-balancer-ip", args: explain("198.51.100.7:443")),
        Case(golden: "explain-named-port", args: explain("10.96.0.14:80")),
    ]

    @Test(arguments: cases)
    func matchesGolden(_ testCase: Case) throws {
        let result = try runFerry(testCase.args)
        try #require(result.status == 0, "\(result)")
        #expect(result.stderr.isEmpty)
        let (masked, badAges) = maskingAge(result.stdout)
        #expect(badAges.isEmpty, "AGE cells that are not durations: \(badAges)")
        let path = "\(repositoryRoot)/Tests/FerryCLITests/Golden/\(testCase.golden).txt"
        if ProcessInfo.processInfo.environment["FERRY_UPDATE_GOLDEN"] == "1" {
            try masked.write(toFile: path, atomically: true, encoding: .utf8)
            return
        }
        let golden = try #require(
            try? String(contentsOfFile: path, encoding: .utf8), "missing \(path): run with FERRY_UPDATE_GOLDEN=1, then check it by hand")
        #expect(masked == golden, "\(lineDifference(masked, golden))")
    }

    /// The AGE cells are the ages of the objects' creationTimestamps, as kubectl rounds them.
    @Test func ageIsTheAgeOfTheCreationTimestamp() throws {
        let created: [String: String] = [
            "dns": "2026-11-29T10:06:00Z", "draining": "2026-11-29T10:05:00Z", "local-only": "2026-11-29T10:03:00Z",
            "my-service": "2026-11-29T10:00:00Z", "named-port": "2026-11-29T10:04:00Z", "public-web": "2026-11-29T10:07:00Z",
            "sticky": "2026-11-29T10:02:00Z", "web-nodeport": "2026-11-29T10:01:00Z", "zonal": "2026-11-29T10:08:00Z",
        ]
        let before = Date()
        let result = try runFerry(["get", "services"] + GoldenTests.examples)
        let after = Date()
        try #require(result.status == 0, "\(result)")
        let rows = result.stdout.split(separator: "\n").dropFirst().map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        #expect(Set(rows.map { String($0[0]) }) == Set(created.keys))
        for row in rows {
            let name = String(row[0])
            let age = String(row[row.count - 1])
            let creation = try Date(try #require(created[name]), strategy: .iso8601)
            let allowed = [humanDuration(before.timeIntervalSince(creation)), humanDuration(after.timeIntervalSince(creation))]
            #expect(allowed.contains(age), "\(name): AGE \(age), expected \(allowed[0])")
        }
    }

    @Test func walkthroughViewsAgree() throws {
        let outputs = try ["pods", "endpointslices", "endpoints"].map { view in
            let result = try runFerry(["get", "endpoints", "--manifests", "deploy/walkthrough/\(view).yaml"])
            #expect(result.status == 0, "\(result)")
            return maskingAge(result.stdout).masked
        }
        #expect(Set(outputs).count == 1, "\(outputs)")
    }

    @Test func servicesAsJSONAreAListOfNine() throws {
        let result = try runFerry(["get", "svc"] + GoldenTests.examples + ["-o", "json"])
        try #require(result.status == 0, "\(result)")
        let list = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(list["apiVersion"] as? String == "v1")
        #expect(list["kind"] as? String == "List")
        let items = try #require(list["items"] as? [[String: Any]])
        #expect(items.count == 9)
        #expect(items.allSatisfy { $0["kind"] as? String == "Service" && $0["apiVersion"] as? String == "v1" })
        let names = items.compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String }
        #expect(names == ["dns", "draining", "local-only", "my-service", "named-port", "public-web", "sticky", "web-nodeport", "zonal"])
        // Objects come back as written: public-web keeps its load-balancer status and external IP.
        let publicWeb = try #require(items.first { ($0["metadata"] as? [String: Any])?["name"] as? String == "public-web" })
        #expect((publicWeb["spec"] as? [String: Any])?["externalIPs"] as? [String] == ["192.0.2.10"])
        let ingress = ((publicWeb["status"] as? [String: Any])?["loadBalancer"] as? [String: Any])?["ingress"] as? [[String: Any]]
        #expect(ingress?.first?["ip"] as? String == "198.51.100.7")
    }

    @Test func servicesAsYAMLStartWithTheAPIVersion() throws {
        let result = try runFerry(["get", "svc"] + GoldenTests.examples + ["-o", "yaml"])
        try #require(result.status == 0, "\(result)")
        #expect(result.stdout.hasPrefix("apiVersion: v1\n"))
        #expect(result.stdout.contains("\nkind: List\n"))
        // The YAML reads back as the same nine Services.
        let read = ManifestReader.read(Data(result.stdout.utf8), format: .yaml, source: "<stdout>")
        #expect(read.errors.isEmpty, "\(read.errors)")
        #expect(read.objects.count == 9)
    }

    @Test func endpointsAsJSONReadBackAsEndpoints() throws {
        let result = try runFerry(["get", "endpoints"] + GoldenTests.examples + ["-o", "json"])
        try #require(result.status == 0, "\(result)")
        let read = ManifestReader.read(Data(result.stdout.utf8), format: .json, source: "<stdout>")
        #expect(read.errors.isEmpty, "\(read.errors)")
        #expect(read.objects.count == 9)
        #expect(read.objects.allSatisfy { $0.object.kind == .endpoints })
    }
}

/// Replaces the AGE cell of every row (header included) with `<age>` (`AGE`), padded to a fixed width
/// unless it is the last column, so the other columns stay put whatever the ages' widths. Also returns
/// the cells that do not look like kubectl durations.
func maskingAge(_ text: String) -> (masked: String, badAges: [String]) {
    // Several tables (`get svc,ep`) are separated by a blank line: each has its own AGE column.
    let tables = text.components(separatedBy: "\n\n")
    if tables.count > 1 {
        let parts = tables.map(maskingAgeOfOneTable)
        return (parts.map(\.masked).joined(separator: "\n\n"), parts.flatMap(\.badAges))
    }
    return maskingAgeOfOneTable(text)
}

private func maskingAgeOfOneTable(_ text: String) -> (masked: String, badAges: [String]) {
    var lines = text.components(separatedBy: "\n").map { Array($0) }
    guard let header = lines.first else { return (text, []) }
    var starts: [Int] = []
    for index in header.indices where header[index] != " " && (index == 0 || header[index - 1] == " ") { starts.append(index) }
    guard let column = starts.firstIndex(where: { String(header[$0...].prefix { $0 != " " }) == "AGE" }) else { return (text, []) }
    let start = starts[column]
    let end = column + 1 < starts.count ? starts[column + 1] : nil
    let duration = try! Regex("^([0-9]+[smhdy]){1,2}$|^<unknown>$")
    var bad: [String] = []
    for (number, line) in lines.enumerated() where line.count > start {
        let stop = min(end ?? line.count, line.count)
        let cell = String(line[start..<stop]).trimmingCharacters(in: .whitespaces)
        if number > 0 && (try? duration.wholeMatch(in: cell)) == nil { bad.append(cell) }
        var replacement = Array(number == 0 ? "AGE" : "<age>")
        if end != nil { replacement += Array(repeating: " ", count: 10 - replacement.count) }
        lines[number] = Array(line[..<start]) + replacement + (end.map { Array(line[min($0, line.count)...]) } ?? [])
    }
    return (lines.map { String($0) }.joined(separator: "\n"), bad)
}

/// The first line where two texts differ, for readable failures.
func lineDifference(_ actual: String, _ expected: String) -> String {
    let a = actual.components(separatedBy: "\n"), b = expected.components(separatedBy: "\n")
    for index in 0..<max(a.count, b.count) where (index < a.count ? a[index] : nil) != (index < b.count ? b[index] : nil) {
        return "line \(index + 1):\n  actual:   \(index < a.count ? a[index].debugDescription : "<none>")\n  expected: \(index < b.count ? b[index].debugDescription : "<none>")\n--- actual output:\n\(actual)"
    }
    return "identical"
}
