import FerryCore
import FerrySources
import Foundation
import Testing

@Suite("ClusterAccess")
struct ClusterAccessTests {
    /// A folder of its own for each test.
    static func folder() throws -> String {
        let path = NSTemporaryDirectory() + "ferry-access-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static let config = """
        apiVersion: v1
        kind: Config
        current-context: main
        clusters:
        - name: one
          cluster:
            server: https://192.0.2.10:6443
            certificate-authority: ca.pem
        - name: two
          cluster:
            server: https://192.0.2.20:6443
            insecure-skip-tls-verify: true
        users:
        - name: admin
          user:
            token: abc
        - name: reader
          user:
            tokenFile: token.txt
        contexts:
        - name: main
          context: {cluster: one, user: admin}
        - name: other
          context: {cluster: two, user: reader}
        """

    @Test func currentContextWithRelativeCAFile() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.config.write(toFile: "\(dir)/config", atomically: true, encoding: .utf8)
        try "PEM".write(toFile: "\(dir)/ca.pem", atomically: true, encoding: .utf8)
        let access = try ClusterAccess.kubeconfig(paths: "\(dir)/config")
        #expect(access.server == "https://192.0.2.10:6443")
        #expect(access.certificateAuthorityPEM == Array("PEM".utf8))
        #expect(access.token == "abc")
        #expect(access.origin.contains("context main"))
    }

    @Test func namedContextWithTokenFileAndInsecure() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.config.write(toFile: "\(dir)/config", atomically: true, encoding: .utf8)
        let access = try ClusterAccess.kubeconfig(paths: "\(dir)/config", context: "other")
        #expect(access.insecureSkipTLSVerify)
        #expect(access.tokenFile == "\(dir)/token.txt")
        #expect(try access.overridingServer("https://198.51.100.1:443").server == "https://198.51.100.1:443")
    }

    @Test func mergedListFirstWins() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.config.write(toFile: "\(dir)/b", atomically: true, encoding: .utf8)
        try """
            current-context: mine
            clusters: [{name: one, cluster: {server: "http://127.0.0.1:8080"}}]
            contexts: [{name: mine, context: {cluster: one}}]
            """.write(toFile: "\(dir)/a", atomically: true, encoding: .utf8)
        let access = try ClusterAccess.kubeconfig(paths: "\(dir)/missing:\(dir)/a:\(dir)/b")
        #expect(access.server == "http://127.0.0.1:8080")
        #expect(access.token == nil)
    }

    @Test func errorsNameTheFileAndField() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func message(_ text: String, context: String? = nil) throws -> String {
            try text.write(toFile: "\(dir)/config", atomically: true, encoding: .utf8)
            do {
                _ = try ClusterAccess.kubeconfig(paths: "\(dir)/config", context: context)
                return ""
            } catch {
                return error.description
            }
        }
        #expect(try message(Self.config, context: "nope").contains("context \"nope\" is not defined"))
        #expect(try message("clusters: [{name: c, cluster: {server: ftp://x}}]\ncontexts: [{name: x, context: {cluster: c}}]\ncurrent-context: x")
            .contains("clusters[c].cluster.server: server \"ftp://x\" is not an http(s) URL"))
        #expect(try message("clusters: [{name: c, cluster: {server: https://x, certificate-authority-data: '***'}}]\ncontexts: [{name: x, context: {cluster: c}}]\ncurrent-context: x")
            .contains("certificate-authority-data is not valid base64"))
        #expect(try message("users: [{name: u, user: {exec: {command: aws}}}]\nclusters: [{name: c, cluster: {server: https://x}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x")
            .contains("users[u].user.exec: credential plugins are not supported"))
        #expect(try message("clusters: [{name: c, cluster: {server: https://x}}]\ncontexts: [{name: x, context: {cluster: c}}]").contains("no current-context"))
        #expect(try message(": : :").contains("is not valid YAML"))
        #expect(throws: ClusterAccessError.self) { try ClusterAccess.kubeconfig(paths: "\(dir)/absent") }
    }

    @Test func inCluster() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "tok\n".write(toFile: "\(dir)/token", atomically: true, encoding: .utf8)
        try "CA".write(toFile: "\(dir)/ca.crt", atomically: true, encoding: .utf8)
        let environment = ["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"]
        let access = try ClusterAccess.inCluster(environment: environment, directory: dir)
        #expect(access.server == "https://[fd00::1]:443")
        #expect(access.tokenFile == "\(dir)/token")
        #expect(ClusterAccess.looksInCluster(environment: environment, directory: dir))
        #expect(!ClusterAccess.looksInCluster(environment: [:], directory: dir))
        #expect(throws: ClusterAccessError.self) { try ClusterAccess.inCluster(environment: [:], directory: dir) }
    }
}
