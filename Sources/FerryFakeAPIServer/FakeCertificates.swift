import Foundation

/// The PEM files of a fake API server's TLS: its CA, its serving certificate, and a client certificate.
public struct FakeTLS: Sendable {
    /// The CA certificate that signed the server and client certificates.
    public var caPEMPath: String
    /// The server certificate (for IP 127.0.0.1 and DNS localhost).
    public var serverCertPath: String
    /// The server certificate's private key.
    public var serverKeyPath: String
    /// A client certificate signed by the CA (CN `ferry-test`, O `system:masters`).
    public var clientCertPath: String
    /// The client certificate's private key.
    public var clientKeyPath: String

    /// Names existing PEM files.
    public init(
        caPEMPath: String, serverCertPath: String, serverKeyPath: String, clientCertPath: String,
        clientKeyPath: String
    ) {
        self.caPEMPath = caPEMPath
        self.serverCertPath = serverCertPath
        self.serverKeyPath = serverKeyPath
        self.clientCertPath = clientCertPath
        self.clientKeyPath = clientKeyPath
    }
}

/// Why `FakeCertificates.generate(in:)` failed.
public enum FakeCertificatesError: Error, CustomStringConvertible {
    /// No `openssl` command on the PATH.
    case opensslNotFound
    /// An `openssl` command exited non-zero.
    case opensslFailed(arguments: [String], status: Int32, output: String)

    /// What went wrong, with openssl's own words.
    public var description: String {
        switch self {
        case .opensslNotFound:
            "the openssl command is not on the PATH (Debian: apt-get install openssl)"
        case .opensslFailed(let arguments, let status, let output):
            "openssl \(arguments.joined(separator: " ")) exited \(status): \(output)"
        }
    }
}

/// Makes throwaway certificates for tests, with the `openssl` command (P-256 keys, valid ten years).
public enum FakeCertificates {
    /// Generates, with the `openssl` command, a CA, a server certificate for 127.0.0.1/localhost
    /// (SAN IP:127.0.0.1, DNS:localhost) and a client certificate signed by the CA, into `directory`
    /// (created if missing): `ca.crt`, `server.crt`, `server.key`, `client.crt`, `client.key`.
    public static func generate(in directory: String) throws -> FakeTLS {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = { (name: String) in (directory as NSString).appendingPathComponent(name) }
        let tls = FakeTLS(
            caPEMPath: path("ca.crt"), serverCertPath: path("server.crt"), serverKeyPath: path("server.key"),
            clientCertPath: path("client.crt"), clientKeyPath: path("client.key"))
        let keyOptions = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

        try write(
            """
            [req]
            distinguished_name = dn
            prompt = no
            x509_extensions = ca
            [dn]
            CN = ferry-fake-ca
            [ca]
            basicConstraints = critical, CA:TRUE
            keyUsage = critical, keyCertSign, cRLSign
            subjectKeyIdentifier = hash
            """, to: path("ca.cnf"))
        try openssl(
            ["req", "-x509", "-config", path("ca.cnf")] + keyOptions
                + ["-keyout", path("ca.key"), "-out", tls.caPEMPath, "-days", "3650"])

        for (name, subject, usage, extra) in [
            ("server", "CN = 127.0.0.1", "serverAuth", "subjectAltName = IP:127.0.0.1, DNS:localhost\n"),
            ("client", "CN = ferry-test\nO = system:masters", "clientAuth", ""),
        ] {
            try write(
                """
                [req]
                distinguished_name = dn
                prompt = no
                [dn]
                \(subject)
                [leaf]
                basicConstraints = critical, CA:FALSE
                keyUsage = critical, digitalSignature, keyEncipherment
                extendedKeyUsage = \(usage)
                authorityKeyIdentifier = keyid
                \(extra)
                """, to: path("\(name).cnf"))
            try openssl(
                ["req", "-new", "-config", path("\(name).cnf")] + keyOptions
                    + ["-keyout", path("\(name).key"), "-out", path("\(name).csr")])
            let serial = "0x" + String(UInt64.random(in: 1..<UInt64.max), radix: 16)
            try openssl([
                "x509", "-req", "-in", path("\(name).csr"), "-CA", tls.caPEMPath, "-CAkey", path("ca.key"),
                "-set_serial", serial, "-days", "3650", "-extfile", path("\(name).cnf"), "-extensions", "leaf",
                "-out", path("\(name).crt"),
            ])
        }
        return tls
    }

    private static func write(_ text: String, to path: String) throws {
        try Data((text + "\n").utf8).write(to: URL(fileURLWithPath: path))
    }

    private static func openssl(_ arguments: [String]) throws {
        let searchPath = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        guard
            let executable = (searchPath.split(separator: ":").map { "\($0)/openssl" } + ["/usr/bin/openssl"])
                .first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else { throw FakeCertificatesError.opensslNotFound }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw FakeCertificatesError.opensslFailed(
                arguments: arguments, status: process.terminationStatus, output: text)
        }
    }
}
