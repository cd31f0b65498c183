import FerryCore
import Foundation
import Logging
import Synchronization

/// The `healthCheckNodePort` of each `externalTrafficPolicy: Local` service, answered as kube-proxy
/// answers it, so that cloud load balancers send traffic only to nodes with a local endpoint: 200 with
/// local endpoints (and a healthy proxy), 503 without, and
/// `{"service": {...}, "localEndpoints": N, "serviceProxyHealthy": true}`.
public final class ServiceHealthServers: Sendable {
    private struct Served {
        var service: ServiceName
        var server: ProbeServer
    }

    private let host: String
    private let logger: Logger
    private let servers = Mutex<[Int: Served]>([:])
    private let localEndpoints = Mutex<[ServiceName: Int]>([:])
    private let proxyHealthy = Mutex<@Sendable () -> Bool>({ true })

    /// Serves on `host` (all addresses by default, as kube-proxy; or the node port addresses).
    public init(host: String = "0.0.0.0", logger: Logger) {
        self.host = host
        self.logger = logger
    }

    /// Where the proxy's own health comes from (`serviceProxyHealthy`).
    public func setProxyHealth(_ healthy: @escaping @Sendable () -> Bool) { proxyHealthy.withLock { $0 = healthy } }

    /// The ports served now.
    public var ports: [Int] { servers.withLock { $0.keys.sorted() } }

    /// Opens and closes servers to match `tables`, and updates the counts they answer with.
    public func update(_ tables: BackendTables) {
        var wanted: [Int: ServiceName] = [:]
        var counts: [ServiceName: Int] = [:]
        for entry in tables.ports.values {
            guard let port = entry.healthCheckNodePort, entry.policy.externalLocal else { continue }
            let service = entry.name.service
            wanted[port] = service
            counts[service] = max(counts[service] ?? 0, entry.categories.local.count)
        }
        localEndpoints.withLock { $0 = counts }
        let (stale, missing) = servers.withLock { servers in
            let stale = servers.filter { wanted[$0.key] != $0.value.service }
            for port in stale.keys { servers.removeValue(forKey: port) }
            return (Array(stale.values), wanted.filter { servers[$0.key] == nil })
        }
        for served in stale { served.server.stop() }
        for (port, service) in missing.sorted(by: { $0.key < $1.key }) {
            do {
                let server = try ProbeServer.start(host: host, port: port) { [weak self] _ in
                    self?.answer(service) ?? ProbeServer.Answer(status: 503, body: "")
                }
                servers.withLock { $0[port] = Served(service: service, server: server) }
            } catch {
                logger.error("cannot serve a health check node port", metadata: ["port": "\(port)", "service": "\(service)", "error": "\(error)"])
            }
        }
    }

    /// Closes every server.
    public func stop() {
        let all = servers.withLock { servers in
            defer { servers = [:] }
            return Array(servers.values)
        }
        for served in all { served.server.stop() }
    }

    private func answer(_ service: ServiceName) -> ProbeServer.Answer {
        let count = localEndpoints.withLock { $0[service] ?? 0 }
        let healthy = proxyHealthy.withLock { $0 }()
        let body = """
            {
            \t"service": {
            \t\t"namespace": "\(service.namespace)",
            \t\t"name": "\(service.name)"
            \t},
            \t"localEndpoints": \(count),
            \t"serviceProxyHealthy": \(healthy)
            }
            """
        return ProbeServer.Answer(
            status: count > 0 && healthy ? 200 : 503, body: body, headers: [("X-Load-Balancing-Endpoint-Weight", String(count))])
    }
}
