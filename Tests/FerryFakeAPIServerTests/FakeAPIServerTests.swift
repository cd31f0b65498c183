import FerryFakeAPIServer
import Foundation
import Testing

/// The fake API server over the wire, through curl: lists, watches, auth, TLS and compaction.
@Suite("FakeAPIServer")
struct FakeAPIServerTests {
    @Test func listPagesWithContinueTokensInKeyOrder() throws {
        let server = FakeAPIServer(tls: nil, token: nil)
        try server.start()
        defer { server.stop() }
        server.load(.services, [service("b", "web"), service("a", "web"), service("c", "db", namespace: "other")])

        var names: [String] = []
        var token = ""
        var pages = 0
        repeat {
            let (code, body) = try curl(["\(server.url)/api/v1/services?limit=1&continue=\(token)"])
            #expect(code == 200)
            let list = try json(body)
            #expect(list["kind"] as? String == "ServiceList")
            #expect(list["apiVersion"] as? String == "v1")
            let metadata = try #require(list["metadata"] as? [String: Any])
            #expect(metadata["resourceVersion"] as? String == "3")
            let items = try #require(list["items"] as? [[String: Any]])
            #expect(items.count == 1)
            #expect(items[0]["kind"] == nil && items[0]["apiVersion"] == nil)
            let itemMetadata = try #require(items[0]["metadata"] as? [String: Any])
            names.append("\(itemMetadata["namespace"]!)/\(itemMetadata["name"]!)")
            token = metadata["continue"] as? String ?? ""
            #expect((metadata["remainingItemCount"] as? Int).map { $0 == 2 - pages } ?? token.isEmpty)
            pages += 1
        } while !token.isEmpty && pages < 5
        #expect(names == ["default/a", "default/b", "other/c"])

        // One curl run, two requests: one kept-alive connection.
        let before = server.connectionsAccepted
        let (code, _) = try curl(["\(server.url)/api/v1/nodes", "\(server.url)/api/v1/nodes"])
        #expect(code == 200)
        #expect(server.connectionsAccepted == before + 1)

        // A compaction expires the tokens issued before it.
        let (_, first) = try curl(["\(server.url)/api/v1/services?limit=1"])
        let firstToken = try #require((try json(first)["metadata"] as? [String: Any])?["continue"] as? String)
        server.compact()
        let (expiredCode, expired) = try curl(["\(server.url)/api/v1/services?limit=1&continue=\(firstToken)"])
        #expect(expiredCode == 410)
        #expect(try json(expired)["reason"] as? String == "Expired")
    }

    @Test func watchSendsChangesAsLinesFollowingTheSelector() throws {
        let server = FakeAPIServer(tls: nil, token: nil)
        try server.start()
        defer { server.stop() }
        let created = server.upsert(.services, service("a", "web"))

        let watch = try startCurl([
            "-N", "\(server.url)/api/v1/services?watch=1&resourceVersion=\(created)&labelSelector=app%3Dweb&timeoutSeconds=1",
        ])
        try waitUntil { server.activeWatches == 1 }
        let modified = server.upsert(.services, service("a", "web", port: 81))
        let movedAway = server.upsert(.services, service("a", "db"))
        server.upsert(.services, service("b", "db"))
        let (code, output) = try finish(watch)
        #expect(code == 200)

        let events = try output.split(separator: "\n").map { try json(String($0)) }
        #expect(events.map { $0["type"] as? String } == ["MODIFIED", "DELETED"])
        let objects = events.compactMap { $0["object"] as? [String: Any] }
        #expect(objects.map { $0["kind"] as? String } == ["Service", "Service"])
        #expect(objects.map { $0["apiVersion"] as? String } == ["v1", "v1"])
        let versions = objects.map { ($0["metadata"] as? [String: Any])?["resourceVersion"] as? String }
        #expect(versions == ["\(modified)", "\(movedAway)"])
        #expect(server.activeWatches == 0)
    }

    @Test func watchFromACompactedVersionGetsOneErrorEvent() throws {
        let server = FakeAPIServer(tls: nil, token: nil)
        try server.start()
        defer { server.stop() }
        let old = server.upsert(.nodes, #"{"metadata":{"name":"n1"}}"#)
        server.upsert(.nodes, #"{"metadata":{"name":"n2"}}"#)
        server.compact()

        let (code, body) = try curl(["\(server.url)/api/v1/nodes?watch=true&resourceVersion=\(old)"])
        #expect(code == 200)
        #expect(
            body
                == #"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (2)","reason":"Expired","code":410}}"#
                + "\n")
        server.compactionAnswersWithHTTPStatus = true
        let (statusCode, _) = try curl(["\(server.url)/api/v1/nodes?watch=true&resourceVersion=\(old)"])
        #expect(statusCode == 410)
    }

    @Test func tokenIsRequiredAndFaultsAnswerWithStatus() throws {
        let server = FakeAPIServer(tls: nil, token: "secret")
        try server.start()
        defer { server.stop() }

        let (code, body) = try curl(["\(server.url)/api/v1/nodes"])
        #expect(code == 401)
        #expect(
            body
                == #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
        )
        server.failNext(1, status: 429, retryAfterSeconds: 3, pathPrefix: "/api/v1/nodes")
        let (throttled, throttledBody) = try curl(["-i", "-H", "Authorization: Bearer secret", "\(server.url)/api/v1/nodes"])
        #expect(throttled == 429)
        #expect(throttledBody.lowercased().contains("retry-after: 3"))
        #expect(throttledBody.contains(#""reason":"TooManyRequests""#))
        let (allowed, _) = try curl(["-H", "Authorization: Bearer secret", "\(server.url)/api/v1/nodes"])
        #expect(allowed == 200)
        let (missing, _) = try curl(["-H", "Authorization: Bearer secret", "\(server.url)/api/v1/pods"])
        #expect(missing == 404)
        #expect(server.requests.first == "GET /api/v1/nodes")
    }

    @Test func tlsWithGeneratedCertificatesAndClientCertificates() throws {
        let folder = NSTemporaryDirectory() + "ferry-fake-tls-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let tls = try FakeCertificates.generate(in: folder)
        let server = FakeAPIServer(tls: tls, token: nil, requireClientCertificate: true)
        try server.start()
        defer { server.stop() }
        #expect(server.url.hasPrefix("https://127.0.0.1:"))
        #expect(server.kubeconfig(token: nil).contains("certificate-authority-data: "))

        let (code, body) = try curl([
            "--cacert", tls.caPEMPath, "--cert", tls.clientCertPath, "--key", tls.clientKeyPath,
            "\(server.url)/apis/discovery.k8s.io/v1/endpointslices",
        ])
        #expect(code == 200)
        #expect(try json(body)["kind"] as? String == "EndpointSliceList")
        let (refused, _) = try curl(["--cacert", tls.caPEMPath, "\(server.url)/api/v1/nodes"])
        #expect(refused != 200)
    }
}

// MARK: - Helpers

func service(_ name: String, _ app: String, namespace: String = "default", port: Int = 80) -> String {
    """
    {"apiVersion":"v1","kind":"Service","metadata":{"name":"\(name)","namespace":"\(namespace)",
     "labels":{"app":"\(app)"}},"spec":{"clusterIP":"10.96.0.10","ports":[{"port":\(port)}]}}
    """
}

func json(_ text: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
}

/// Starts curl writing the body and then a last line with the HTTP status code.
func startCurl(_ arguments: [String]) throws -> (Process, Pipe) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    process.arguments = ["-s", "--max-time", "10", "-w", "\n%{http_code}"] + arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    return (process, output)
}

/// Waits for curl and returns the HTTP status code (0 if none) and the body.
func finish(_ started: (Process, Pipe)) throws -> (Int, String) {
    let text = String(decoding: started.1.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    started.0.waitUntilExit()
    guard let newline = text.lastIndex(of: "\n") else { return (0, text) }
    return (Int(text[text.index(after: newline)...]) ?? 0, String(text[..<newline]))
}

func curl(_ arguments: [String]) throws -> (Int, String) {
    try finish(try startCurl(arguments))
}

func waitUntil(_ condition: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(5)
    while !condition() {
        guard Date() < deadline else { throw CancellationError() }
        usleep(5_000)
    }
}
