import Foundation
import Testing

/// Exit status 0 success, 1 runtime failure (or no service at an `explain` destination), 2 bad usage or
/// bad input; bad input names the file, the document, the object and the field.
@Suite("Exit status and messages")
struct ExitStatusTests {
    struct Usage: Sendable, CustomTestStringConvertible {
        var args: [String]
        var message: String
        var testDescription: String { "ferry " + args.joined(separator: " ") }
    }

    static let badUsage: [Usage] = [
        Usage(args: ["frobnicate"], message: "Unexpected argument 'frobnicate'"),
        Usage(args: ["get", "foo"], message: "the server doesn't have a resource type \"foo\""),
        Usage(args: ["get"], message: "Missing expected argument '<resource>'"),
        Usage(args: ["explain", "--manifests", "deploy/examples"], message: "Missing expected argument '--to <ip:port>'"),
        Usage(args: ["explain", "--to", "10.0.0.1"], message: #"--to: "10.0.0.1" is not IP:PORT"#),
        Usage(args: ["explain", "--to", "10.0.0.1:70000"], message: #"--to: "10.0.0.1:70000" is not IP:PORT"#),
        Usage(args: ["explain", "--to", "10.0.0.1:0"], message: #"--to: "10.0.0.1:0" is not IP:PORT"#),
        Usage(args: ["explain", "--to", "10.96.0.10:80", "--protocol", "icmp"], message: #"--protocol: "icmp" is not tcp, udp or sctp"#),
        Usage(args: ["explain", "--to", "10.96.0.10:80", "--from", "somewhere"], message: #"--from: "somewhere" is not a valid IP address"#),
        Usage(args: ["explain", "--to", "10.96.0.10:80", "--node-ip", "10.0.0.256"], message: #"--node-ip: "10.0.0.256" is not a valid IP address"#),
        Usage(args: ["explain", "--to", "10.96.0.10:80", "--cluster-cidr", "10.244.0.0/33"], message: #"--cluster-cidr: "10.244.0.0/33" is not a valid CIDR"#),
        Usage(args: ["get", "svc", "web", "-A"], message: "a resource cannot be retrieved by name across all namespaces"),
        Usage(args: ["get", "svc", "-o", "table"], message: "The value 'table' is invalid for '-o <output>'"),
        Usage(args: ["get", "endpoints", "--watch"], message: "--watch needs --manifests PATH"),
        Usage(args: ["get", "endpoints", "--manifests", "deploy/examples", "-w", "-o", "json"], message: "--watch prints tables"),
        Usage(args: ["bench", "load", "--sizes", "0"], message: "--sizes must list numbers 1-200000"),
    ]

    @Test(arguments: badUsage)
    func badUsageExitsWith2(_ usage: Usage) throws {
        let result = try runFerry(usage.args)
        #expect(result.status == 2, "\(result)")
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.contains(usage.message), "\(result)")
        #expect(result.stderr.contains("Usage: ferry"), "a usage error shows the usage")
    }

    /// `fd00::1:80` is itself an IPv6 address; splitting it at the last colon silently explains a
    /// different destination. The help and the error message both ask for `[addr]:port`, as Go's
    /// `net.SplitHostPort` (and so kubectl) requires.
    @Test func anUnbracketedIPv6DestinationIsBadUsage() throws {
        let result = try runFerry(["explain", "--node-name", "node-1", "--to", "fd00::1:80"])
        #expect(result.status == 2, "\(result)")
        #expect(result.stderr.contains(#"--to: "fd00::1:80" is not IP:PORT (use [addr]:port for IPv6)"#), "\(result)")
    }

    @Test func aBracketedIPv6DestinationIsAccepted() throws {
        let result = try runFerry(["explain", "--node-name", "node-1", "--to", "[fd00::1]:80"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.hasPrefix("[fd00::1]:80/TCP is not a service frontend on node node-1"), "\(result)")
    }

    // MARK: Bad input

    static func service(_ name: String = "web", ip: String = "10.96.1.1", port: String = "80", protocol: String = "TCP") -> String {
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: \(name)
          namespace: default
        spec:
          clusterIP: \(ip)
          selector:
            app: \(name)
          ports:
          - name: http
            port: \(port)
            protocol: \(`protocol`)
            targetPort: 8080

        """
    }

    static func slice(service: String?, name: String = "ghost-abcde") -> String {
        let labels = service.map { "  labels:\n    kubernetes.io/service-name: \($0)\n" } ?? ""
        return """
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: \(name)
              namespace: default
            \(labels)addressType: IPv4
            endpoints:
            - addresses: ["10.244.1.1"]
            ports:
            - name: http
              port: 8080

            """
    }

    struct BadInput: Sendable, CustomTestStringConvertible {
        var label: String
        /// The manifest file's text; `nil` for a path that does not exist.
        var text: String?
        /// The problem lines expected after `error: 1 problem in the manifests:`, with `$FILE` for the
        /// file's path. A line ending in `…` is a prefix.
        var problem: String
        var testDescription: String { label }
    }

    static let badInputs: [BadInput] = [
        BadInput(
            label: "malformed YAML", text: service("first", ip: "10.96.1.9") + "---\n" + service() + "  extra: [unclosed\n",
            problem: "$FILE: document 2: is not valid YAML: line …"),
        BadInput(
            label: "port of the wrong type", text: service(port: "\"abc\""),
            problem: "$FILE: document 1: Service default/web: spec.ports[0].port: has the wrong type: expected an integer, found a string"),
        BadInput(
            label: "invalid clusterIP", text: service(ip: "10.0.0.300"),
            problem: #"$FILE: document 1: Service default/web: spec.clusterIP: "10.0.0.300" is not a valid IP address"#),
        BadInput(
            label: "port 0", text: service(port: "0"),
            problem: "$FILE: document 1: Service default/web: spec.ports[0].port: 0 is out of range 1-65535"),
        BadInput(
            label: "port 70000", text: service("first", ip: "10.96.1.9") + "---\n" + service(port: "70000"),
            problem: "$FILE: document 2: Service default/web: spec.ports[0].port: 70000 is out of range 1-65535"),
        BadInput(
            label: "protocol ICMP", text: service(protocol: "ICMP"),
            problem: #"$FILE: document 1: Service default/web: spec.ports[0].protocol: unknown protocol "ICMP": expected TCP, UDP or SCTP"#),
        BadInput(
            label: "duplicate Service in one file", text: service() + "---\n" + service(),
            problem: "$FILE: document 2: Service default/web: metadata.name: duplicate object: already defined at $FILE: document 1"),
        BadInput(
            label: "EndpointSlice whose Service is missing", text: service() + "---\n" + slice(service: "ghost"),
            problem: #"$FILE: document 2: EndpointSlice default/ghost-abcde: metadata.labels["kubernetes.io/service-name"]: Service default/ghost is not defined in the manifests"#),
        BadInput(
            label: "EndpointSlice without its service-name label", text: service() + "---\n" + slice(service: nil),
            problem: #"$FILE: document 2: EndpointSlice default/ghost-abcde: metadata.labels["kubernetes.io/service-name"]: is required: it names the Service this slice belongs to"#),
        BadInput(label: "missing path", text: nil, problem: "$FILE: no such file or directory"),
    ]

    @Test(arguments: badInputs, [["get", "services"], ["explain", "--node-name", "node-1", "--to", "10.96.1.1:80"]])
    func badInputExitsWith2NamingFileDocumentObjectField(_ input: BadInput, command: [String]) throws {
        try withTemporaryFolder { folder in
            let file = "\(folder)/manifests.yaml"
            if let text = input.text { try text.write(toFile: file, atomically: false, encoding: .utf8) }
            let result = try runFerry(command + ["--manifests", file])
            #expect(result.status == 2, "\(result)")
            // What the good documents define is still shown (never the bad object).
            if command[0] == "get" { #expect(result.stdout.isEmpty || result.stdout.hasPrefix("NAME"), "\(result.stdout)") }
            for bad in ["10.0.0.300", "70000", "protocol ICMP"] { #expect(!result.stdout.contains(bad)) }
            let lines = result.stderr.components(separatedBy: "\n")
            try #require(lines.count == 3 && lines[2].isEmpty, "\(result)")
            #expect(lines[0] == "error: 1 problem in the manifests:")
            let expected = "  " + input.problem.replacingOccurrences(of: "$FILE", with: file)
            if expected.hasSuffix("…") {
                #expect(lines[1].hasPrefix(String(expected.dropLast())), "\(lines[1])")
            } else {
                #expect(lines[1] == expected)
            }
        }
    }

    /// One bad file does not hide the good ones from one-shot commands: they show what the good files
    /// define, list the problems on stderr, and exit 2; `sync` does not program from them unless told to.
    @Test(arguments: [
        (["get", "services"], "web-good"), (["describe", "svc", "web-good"], "Name:                     web-good"),
        (["sync", "--dry-run", "--node-name", "node-1"], "10.96.1.7 . tcp . 80"), (["explain", "--node-name", "node-1", "--to", "10.96.1.7:80"], "web-good"),
    ])
    func oneBadFileDoesNotHideTheGoodOnes(_ command: [String], _ shown: String) throws {
        try withTemporaryFolder { folder in
            try ExitStatusTests.service("web-good", ip: "10.96.1.7").write(toFile: "\(folder)/a.yaml", atomically: false, encoding: .utf8)
            try ExitStatusTests.service("web-bad", ip: "10.96.1.8", port: "0").write(toFile: "\(folder)/b.yaml", atomically: false, encoding: .utf8)
            let result = try runFerry(command + ["--manifests", folder])
            #expect(result.status == 2, "\(result)")
            #expect(result.stdout.contains(shown), "\(result.stdout)")
            #expect(!result.stdout.contains("web-bad"))
            #expect(result.stderr.hasPrefix("error: 1 problem in the manifests:\n  \(folder)/b.yaml: document 1: Service default/web-bad"), "\(result.stderr)")
        }
    }

    @Test func everyProblemIsListedOnItsOwnLine() throws {
        try withTemporaryFolder { folder in
            try ExitStatusTests.service(port: "0").write(toFile: "\(folder)/a.yaml", atomically: false, encoding: .utf8)
            try ExitStatusTests.service("api", ip: "10.96.1.2", protocol: "ICMP").write(toFile: "\(folder)/b.yaml", atomically: false, encoding: .utf8)
            try ExitStatusTests.service(ip: "10.96.1.3").write(toFile: "\(folder)/sub/c.yml".creatingFolder(), atomically: false, encoding: .utf8)
            let result = try runFerry(["get", "endpoints", "--manifests", folder])
            #expect(result.status == 2)
            #expect(result.stderr.hasPrefix("error: 2 problems in the manifests:\n"), "\(result)")
            #expect(result.stderr.contains("\n  \(folder)/a.yaml: document 1: Service default/web: spec.ports[0].port: 0 is out of range 1-65535\n"))
            #expect(result.stderr.contains(#"\#n  \#(folder)/b.yaml: document 1: Service default/api: spec.ports[0].protocol: unknown protocol "ICMP""#))
        }
    }

    @Test func theSameServiceInTwoFilesIsBadInput() throws {
        try withTemporaryFolder { folder in
            try ExitStatusTests.service().write(toFile: "\(folder)/a.yaml", atomically: false, encoding: .utf8)
            try ExitStatusTests.service(port: "81").write(toFile: "\(folder)/b.yaml", atomically: false, encoding: .utf8)
            let result = try runFerry(["get", "svc", "--manifests", folder])
            #expect(result.status == 2)
            #expect(result.stderr == """
                error: 1 problem in the manifests:
                  \(folder)/b.yaml: document 1: Service default/web: metadata.name: duplicate object: already defined in \(folder)/a.yaml; this copy is ignored

                """)
        }
    }

    // MARK: explain to no service

    @Test(arguments: [
        (["--to", "10.1.2.3:80"], "10.1.2.3:80/TCP is not a service frontend on node node-1: no ClusterIP, NodePort, external IP or load-balancer IP matches.\n"),
        (["--to", "10.96.0.10:81"], "10.96.0.10:81/TCP is not a service frontend on node node-1: no ClusterIP, NodePort, external IP or load-balancer IP matches.\nPorts served on 10.96.0.10: 80/TCP (default/my-service:http/TCP)\n"),
        (["--to", "10.96.0.10:80", "--protocol", "udp"], "10.96.0.10:80/UDP is not a service frontend on node node-1: no ClusterIP, NodePort, external IP or load-balancer IP matches.\nPorts served on 10.96.0.10: 80/TCP (default/my-service:http/TCP)\n"),
    ])
    func explainToNoServiceExitsWith1(_ args: [String], _ expected: String) throws {
        let result = try runFerry(["explain", "--manifests", "deploy/examples", "--node-name", "node-1"] + args)
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout == expected)
        #expect(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(result)")
    }

    // MARK: Help

    @Test(arguments: [[], ["get"], ["explain"], ["bench"], ["bench", "load"]])
    func helpExitsWith0(_ command: [String]) throws {
        let result = try runFerry(command + ["--help"])
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.contains("USAGE: ferry" + command.map { " " + $0 }.joined()), "\(result)")
        #expect(result.stderr.isEmpty)
    }
}

extension String {
    /// This path, after making the folder it is in.
    func creatingFolder() throws -> String {
        try FileManager.default.createDirectory(atPath: (self as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        return self
    }
}
