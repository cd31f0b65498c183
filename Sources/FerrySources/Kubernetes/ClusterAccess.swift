import FerryCore
import Foundation
import Synchronization

/// How to reach and authenticate to a Kubernetes API server: from a kubeconfig, from a pod's
/// service-account files, or given by hand.
public struct ClusterAccess: Sendable, Hashable {
    /// `https://host:port` (or `http://` for a plain test server), without a trailing slash.
    public var server: String
    /// PEM of the certificate authorities to trust; `nil`: the system's.
    public var certificateAuthorityPEM: [UInt8]?
    /// `insecure-skip-tls-verify`: any server certificate is accepted.
    public var insecureSkipTLSVerify: Bool
    /// `tls-server-name`: the name the server certificate must carry, when not the URL's host.
    public var tlsServerName: String?
    /// A bearer token given as text.
    public var token: String?
    /// A file holding the bearer token, re-read when it changes (projected tokens rotate).
    public var tokenFile: String?
    /// A client certificate and its key, PEM.
    public var clientCertificatePEM: [UInt8]?
    public var clientKeyPEM: [UInt8]?
    /// Where this came from, for messages: `kubeconfig /root/.kube/config (context kind-kind)`.
    public var origin: String

    public init(
        server: String, certificateAuthorityPEM: [UInt8]? = nil, insecureSkipTLSVerify: Bool = false, tlsServerName: String? = nil,
        token: String? = nil, tokenFile: String? = nil, clientCertificatePEM: [UInt8]? = nil, clientKeyPEM: [UInt8]? = nil,
        origin: String
    ) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.certificateAuthorityPEM = certificateAuthorityPEM
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.tlsServerName = tlsServerName
        self.token = token
        self.tokenFile = tokenFile
        self.clientCertificatePEM = clientCertificatePEM
        self.clientKeyPEM = clientKeyPEM
        self.origin = origin
    }

    /// The same access with another server URL (`--master`, as kube-proxy's flag).
    public func overridingServer(_ url: String) throws(ClusterAccessError) -> ClusterAccess {
        var copy = self
        copy.server = try ClusterAccess.validatedServer(url, origin: "--master")
        copy.origin += ", server from --master"
        return copy
    }

    /// The service-account files of a pod, as client-go's in-cluster configuration reads them.
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// The in-cluster configuration: `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, the token
    /// file (re-read as it rotates) and the CA bundle of the service account.
    public static func inCluster(
        environment: [String: String] = ProcessInfo.processInfo.environment, directory: String = serviceAccountDirectory
    ) throws(ClusterAccessError) -> ClusterAccess {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
            let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty
        else {
            throw ClusterAccessError(
                "in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not running in a pod?)")
        }
        let tokenPath = directory + "/token"
        guard FileManager.default.isReadableFile(atPath: tokenPath) else {
            throw ClusterAccessError("in-cluster configuration: cannot read the service-account token \(tokenPath)")
        }
        let caPath = directory + "/ca.crt"
        let ca = try readFile(caPath, what: "in-cluster configuration: the service-account CA")
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return ClusterAccess(
            server: "https://\(hostPart):\(port)", certificateAuthorityPEM: ca, tokenFile: tokenPath, origin: "in-cluster configuration")
    }

    /// True inside a pod: the service host is set and the service-account token is there.
    public static func looksInCluster(
        environment: [String: String] = ProcessInfo.processInfo.environment, directory: String = serviceAccountDirectory
    ) -> Bool {
        environment["KUBERNETES_SERVICE_HOST"].map { !$0.isEmpty } == true
            && FileManager.default.fileExists(atPath: directory + "/token")
    }

    /// Reads a kubeconfig (or a `:`-separated list of them, merged as kubectl merges: the first file
    /// that names a cluster, user, context or the current context wins), and picks `context` or the
    /// current one.
    public static func kubeconfig(paths: String, context: String? = nil) throws(ClusterAccessError) -> ClusterAccess {
        let files = paths.split(separator: ":").map(String.init).filter { !$0.isEmpty }
        guard !files.isEmpty else { throw ClusterAccessError("kubeconfig: no file given") }
        var merged = KubeconfigFile(origin: files.joined(separator: ":"))
        for file in files {
            // kubectl skips files of the list that do not exist; a single named file must exist.
            if files.count > 1, !FileManager.default.fileExists(atPath: file) { continue }
            merged.merge(try KubeconfigFile.read(file))
        }
        return try merged.access(context: context)
    }

    static func validatedServer(_ text: String, origin: String) throws(ClusterAccessError) -> String {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), ["https", "http"].contains(scheme),
            let host = url.host, !host.isEmpty
        else {
            throw ClusterAccessError("\(origin): server \"\(text)\" is not an http(s) URL such as https://192.0.2.10:6443")
        }
        if let port = url.port, !(1...65535).contains(port) {
            throw ClusterAccessError("\(origin): server \"\(text)\" has port \(port), out of range 1-65535")
        }
        return text
    }

    static func readFile(_ path: String, what: String) throws(ClusterAccessError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ClusterAccessError("\(what): cannot read \(path)")
        }
        return [UInt8](data)
    }
}

/// A kubeconfig or in-cluster configuration that cannot be used; the message names the file and field.
public struct ClusterAccessError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The parts of kubeconfig files, merged by name.
struct KubeconfigFile {
    struct Named {
        var value: JSONValue
        /// The file it came from: relative paths in it are relative to that file's folder.
        var file: String
    }

    var origin: String
    var currentContext: String?
    var clusters: [String: Named] = [:]
    var users: [String: Named] = [:]
    var contexts: [String: Named] = [:]

    static func read(_ path: String) throws(ClusterAccessError) -> KubeconfigFile {
        let bytes = try ClusterAccess.readFile(path, what: "kubeconfig")
        let document: JSONValue
        do {
            document = try JSONValue.parseDocument(Data(bytes), format: path.hasSuffix(".json") ? .json : .yaml)
        } catch {
            throw ClusterAccessError("kubeconfig \(path): \(error)")
        }
        var file = KubeconfigFile(origin: path)
        if case .null = document { return file }
        guard case .object = document else { throw ClusterAccessError("kubeconfig \(path): expected a mapping") }
        if case .string(let current)? = document["current-context"], !current.isEmpty { file.currentContext = current }
        for (field, store) in [("clusters", \KubeconfigFile.clusters), ("users", \.users), ("contexts", \.contexts)] {
            guard let list = document[field] else { continue }
            if case .null = list { continue }
            guard case .array(let entries) = list else { throw ClusterAccessError("kubeconfig \(path): \(field) must be a list") }
            let inner = String(field.dropLast())
            for (index, entry) in entries.enumerated() {
                guard case .string(let name)? = entry["name"], !name.isEmpty else {
                    throw ClusterAccessError("kubeconfig \(path): \(field)[\(index)].name is required")
                }
                guard let value = entry[inner], case .object = value else {
                    throw ClusterAccessError("kubeconfig \(path): \(field)[\(index)].\(inner) must be a mapping")
                }
                if file[keyPath: store][name] == nil { file[keyPath: store][name] = Named(value: value, file: path) }
            }
        }
        return file
    }

    mutating func merge(_ other: KubeconfigFile) {
        if currentContext == nil { currentContext = other.currentContext }
        clusters.merge(other.clusters) { first, _ in first }
        users.merge(other.users) { first, _ in first }
        contexts.merge(other.contexts) { first, _ in first }
    }

    func access(context requested: String?) throws(ClusterAccessError) -> ClusterAccess {
        guard let contextName = requested ?? currentContext else {
            throw ClusterAccessError("kubeconfig \(origin): no current-context is set and no --context was given")
        }
        guard let context = contexts[contextName] else {
            throw ClusterAccessError("kubeconfig \(origin): context \"\(contextName)\" is not defined (contexts: \(contexts.keys.sorted()))")
        }
        let origin = "kubeconfig \(context.file) (context \(contextName))"
        guard case .string(let clusterName)? = context.value["cluster"], let cluster = clusters[clusterName] else {
            throw ClusterAccessError("\(origin): contexts[\(contextName)].cluster names no defined cluster")
        }
        let clusterFields = Fields(value: cluster.value, file: cluster.file, path: "clusters[\(clusterName)].cluster")
        guard let server = try clusterFields.string("server") else { throw ClusterAccessError("\(clusterFields.where("server")) is required") }
        var access = ClusterAccess(
            server: try ClusterAccess.validatedServer(server, origin: clusterFields.where("server")), origin: origin)
        access.certificateAuthorityPEM = try clusterFields.bytes(data: "certificate-authority-data", file: "certificate-authority")
        access.insecureSkipTLSVerify = try clusterFields.bool("insecure-skip-tls-verify") ?? false
        access.tlsServerName = try clusterFields.string("tls-server-name")
        if case .string(let userName)? = context.value["user"], !userName.isEmpty {
            guard let user = users[userName] else { throw ClusterAccessError("\(origin): user \"\(userName)\" is not defined") }
            let userFields = Fields(value: user.value, file: user.file, path: "users[\(userName)].user")
            for unsupported in ["exec", "auth-provider"] where user.value[unsupported] != nil {
                throw ClusterAccessError(
                    "\(userFields.where(unsupported)): credential plugins are not supported; use a token, a token file or a client certificate")
            }
            access.token = try userFields.string("token")
            access.tokenFile = try userFields.path("tokenFile")
            access.clientCertificatePEM = try userFields.bytes(data: "client-certificate-data", file: "client-certificate")
            access.clientKeyPEM = try userFields.bytes(data: "client-key-data", file: "client-key")
            if (access.clientCertificatePEM == nil) != (access.clientKeyPEM == nil) {
                throw ClusterAccessError("\(userFields.where("client-key")): a client certificate and its key go together")
            }
        }
        return access
    }

    /// Typed reads of one kubeconfig mapping, naming `file: path.field` in errors.
    struct Fields {
        var value: JSONValue
        var file: String
        var path: String

        func `where`(_ field: String) -> String { "kubeconfig \(file): \(path).\(field)" }

        func string(_ field: String) throws(ClusterAccessError) -> String? {
            switch value[field] {
            case nil, .null?: return nil
            case .string(let text)?: return text.isEmpty ? nil : text
            default: throw ClusterAccessError("\(self.where(field)) must be a string")
            }
        }

        func bool(_ field: String) throws(ClusterAccessError) -> Bool? {
            switch value[field] {
            case nil, .null?: return nil
            case .bool(let flag)?: return flag
            default: throw ClusterAccessError("\(self.where(field)) must be true or false")
            }
        }

        /// A path field, resolved against the kubeconfig's folder as kubectl resolves it.
        func path(_ field: String) throws(ClusterAccessError) -> String? {
            guard let text = try string(field) else { return nil }
            if text.hasPrefix("/") { return text }
            return URL(fileURLWithPath: file).deletingLastPathComponent().appendingPathComponent(text).path
        }

        /// `<field>-data` (base64) or the file `<field>`; the data wins when both are given, as in kubectl.
        func bytes(data: String, file fileField: String) throws(ClusterAccessError) -> [UInt8]? {
            if let encoded = try string(data) {
                guard let decoded = Data(base64Encoded: encoded, options: .ignoreUnknownCharacters) else {
                    throw ClusterAccessError("\(self.where(data)) is not valid base64")
                }
                return [UInt8](decoded)
            }
            guard let path = try path(fileField) else { return nil }
            return try ClusterAccess.readFile(path, what: self.where(fileField))
        }
    }
}

/// The bearer token of a `ClusterAccess`: fixed, or read from a file and re-read when the file
/// changes, and at least once a minute (client-go's rule for projected service-account tokens).
final class TokenSource: Sendable {
    private struct Cached {
        var token: String?
        var readAt: ContinuousClock.Instant
        var modified: timespec
    }

    private let fixed: String?
    private let file: String?
    private let cached: Mutex<Cached?>

    init(access: ClusterAccess) {
        fixed = access.token
        file = access.tokenFile
        cached = Mutex(nil)
    }

    /// The token to send now; `nil` when there is none.
    func current() throws(ClusterAccessError) -> String? {
        if let fixed { return fixed }
        guard let file else { return nil }
        var info = stat()
        let statted = stat(file, &info) == 0
        let now = ContinuousClock.now
        if let entry = cached.withLock({ $0 }), statted, entry.modified.tv_sec == info.st_mtim.tv_sec,
            entry.modified.tv_nsec == info.st_mtim.tv_nsec, now - entry.readAt < .seconds(60)
        {
            return entry.token
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ClusterAccessError("cannot read the token file \(file)")
        }
        let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        cached.withLock { $0 = Cached(token: token, readAt: now, modified: statted ? info.st_mtim : timespec()) }
        return token.isEmpty ? nil : token
    }
}
