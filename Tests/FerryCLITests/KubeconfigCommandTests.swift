import FerryFakeAPIServer
import Foundation
import Testing

/// One-shot commands against an API server: `get`, `sync --dry-run`, with the errors a user meets.
@Suite("Commands on an API server", .serialized)
struct KubeconfigCommandTests {
    /// A fake API server with TLS and a token, three services, and a kubeconfig for it in `folder`.
    static func withServer(_ body: (FakeAPIServer, _ kubeconfig: String, _ folder: String) throws -> Void) throws {
        try withTemporaryFolder { folder in
            let tls = try FakeCertificates.generate(in: folder)
            let server = FakeAPIServer(tls: tls, token: "t0ken")
            _ = try server.start()
            defer { server.stop() }
            for index in 0..<3 {
                server.upsert(
                    .services,
                    #"{"kind":"Service","apiVersion":"v1","metadata":{"name":"web-\#(index)","namespace":"shop"},"spec":{"type":"ClusterIP","clusterIP":"10.96.0.\#(index + 10)","ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":8080}]}}"#
                )
                server.upsert(
                    .endpointSlices,
                    #"{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{"name":"web-\#(index)-x","namespace":"shop","labels":{"kubernetes.io/service-name":"web-\#(index)"}},"addressType":"IPv4","endpoints":[{"addresses":["10.244.1.\#(index + 1)"],"conditions":{"ready":true}}],"ports":[{"name":"http","protocol":"TCP","port":8080}]}"#
                )
            }
            let kubeconfig = "\(folder)/kubeconfig"
            try server.kubeconfig(token: "t0ken").write(toFile: kubeconfig, atomically: true, encoding: .utf8)
            try body(server, kubeconfig, folder)
        }
    }

    @Test func getListsWhatTheServerHolds() throws {
        try Self.withServer { _, kubeconfig, _ in
            let services = try runFerry(["get", "services", "-A", "--kubeconfig", kubeconfig])
            #expect(services.status == 0, "\(services)")
            #expect(services.stdout.contains("shop        web-1     ClusterIP   10.96.0.11"), "\(services)")
            let endpoints = try runFerry(["get", "endpoints", "-n", "shop", "--kubeconfig", kubeconfig])
            #expect(endpoints.stdout.contains("10.244.1.3:8080"), "\(endpoints)")
            let json = try runFerry(["get", "svc", "-n", "shop", "-o", "json", "--kubeconfig", kubeconfig])
            #expect(json.status == 0 && json.stdout.contains(#""clusterIP" : "10.96.0.10""#) || json.stdout.contains(#""clusterIP": "10.96.0.10""#), "\(json)")
        }
    }

    @Test func kubeconfigFromTheEnvironmentAndMasterOverride() throws {
        try Self.withServer { server, kubeconfig, _ in
            let viaEnvironment = try runFerry(via: ["/usr/bin/env", "KUBECONFIG=\(kubeconfig)", ferryExecutable!, "get", "svc", "-n", "shop"])
            #expect(viaEnvironment.stdout.contains("web-2"), "\(viaEnvironment)")
            // --master replaces the server: here one where nothing listens.
            let elsewhere = try runFerry(["get", "svc", "--kubeconfig", kubeconfig, "--master", "https://127.0.0.1:1"])
            #expect(elsewhere.status == 1, "\(elsewhere)")
            #expect(elsewhere.stderr.contains("API server https://127.0.0.1:1"), "\(elsewhere)")
            _ = server
        }
    }

    @Test func wrongTokenIsExit1NamingTheServerAnd401() throws {
        try Self.withServer { server, _, folder in
            let wrong = "\(folder)/wrong"
            try server.kubeconfig(token: "nope").write(toFile: wrong, atomically: true, encoding: .utf8)
            let result = try runFerry(["get", "svc", "--kubeconfig", wrong])
            #expect(result.status == 1, "\(result)")
            #expect(result.stderr.contains("API server \(server.url)"), "\(result)")
            #expect(result.stderr.contains("401 Unauthorized"), "\(result)")
        }
    }

    @Test func badKubeconfigIsExit2NamingTheFileAndField() throws {
        try withTemporaryFolder { folder in
            let path = "\(folder)/kubeconfig"
            try """
                current-context: c
                contexts: [{name: c, context: {cluster: k}}]
                clusters: [{name: k, cluster: {server: "https://10.0.0.1:99999"}}]
                """.write(toFile: path, atomically: true, encoding: .utf8)
            let result = try runFerry(["get", "svc", "--kubeconfig", path])
            #expect(result.status == 2, "\(result)")
            #expect(result.stderr.contains("kubeconfig \(path): clusters[k].cluster.server"), "\(result)")
            let both = try runFerry(["get", "svc", "--kubeconfig", path, "--manifests", "deploy/examples"])
            #expect(both.status == 2)
            #expect(both.stderr.contains("choose one source"), "\(both)")
        }
    }

    @Test func getWatchFollowsTheServer() async throws {
        let executable = try #require(ferryExecutable, "\(RunError.noExecutable)")
        try await withTemporaryFolder { folder in
            let tls = try FakeCertificates.generate(in: folder)
            let server = FakeAPIServer(tls: tls, token: "t0ken")
            _ = try server.start()
            defer { server.stop() }
            let service = { (port: Int) in
                #"{"kind":"Service","apiVersion":"v1","metadata":{"name":"web","namespace":"default"},"spec":{"clusterIP":"10.96.0.10","ports":[{"protocol":"TCP","port":\#(port)}]}}"#
            }
            server.upsert(.services, service(80))
            try server.kubeconfig(token: "t0ken").write(toFile: "\(folder)/kubeconfig", atomically: true, encoding: .utf8)
            let outPath = "\(folder)/stdout"
            _ = FileManager.default.createFile(atPath: outPath, contents: nil)
            let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
            defer { try? out.close() }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["get", "svc", "--watch", "--kubeconfig", "\(folder)/kubeconfig"]
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            try process.run()
            defer {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            func lines() -> [String] {
                ((try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "").components(separatedBy: "\n").filter { !$0.isEmpty }
            }
            #expect(await eventually(within: .seconds(60)) { lines().count >= 2 }, "\(lines())")
            #expect(await eventually(within: .seconds(60)) { server.activeWatches == 3 })
            server.upsert(.services, service(81))
            #expect(await eventually(within: .seconds(60)) { lines().count >= 3 }, "\(lines())")
            #expect(lines().last?.contains("81/TCP") == true, "\(lines())")
        }
    }

    @Test func syncDryRunPlansFromTheServer() throws {
        try Self.withServer { _, kubeconfig, _ in
            let result = try runFerry(["sync", "--dry-run", "--kubeconfig", kubeconfig, "--node-name", "node-1", "--node-ip", "192.0.2.1"])
            #expect(result.status == 0, "\(result)")
            #expect(result.stdout.contains("10.96.0.12"), "\(result.stdout.prefix(2000))")
            #expect(result.stdout.contains("10.244.1.3"), "\(result.stdout.prefix(2000))")
        }
    }
}
