import FerryCore
import FerrySystem
import Glibc
import Synchronization

/// Where listening sockets are opened: the forwarder, or an in-memory twin in tests.
public protocol ListenerHost: AnyObject {
    /// Starts serving `l4` (TCP connections or UDP datagrams) on `address`, balancing over `pool`, from
    /// `allowedSources` only (`nil`: from anyone); returns an id for `closeListener`.
    func listen(on address: SocketAddress, protocol l4: L4Protocol, pool: PoolHandle, allowedSources: [CIDR]?) throws(SystemError)
        -> UInt64
    /// Stops accepting; established TCP connections go on, UDP sessions end.
    func closeListener(_ id: UInt64)
}

extension ListenerHost {
    /// A TCP listener.
    public func listen(on address: SocketAddress, pool: PoolHandle, allowedSources: [CIDR]? = nil) throws(SystemError) -> UInt64 {
        try listen(on: address, protocol: .tcp, pool: pool, allowedSources: allowedSources)
    }
}

/// A frontend as the listings show it: its address, with `/udp` for a UDP one.
func frontendText(_ address: SocketAddress, _ l4: L4Protocol) -> String { "\(address)\(l4 == .udp ? "/udp" : "")" }

/// The in-memory twin of the forwarder's listeners: records what is open, and fails binds it is told to.
public final class InMemoryListenerHost: ListenerHost, @unchecked Sendable {
    public private(set) var open: [UInt64: (address: SocketAddress, l4: L4Protocol, pool: PoolHandle, allowedSources: [CIDR]?)] = [:]
    /// Addresses whose bind fails with EADDRINUSE.
    public var taken: Set<SocketAddress> = []
    private var next: UInt64 = 1

    public init() {}

    public func listen(on address: SocketAddress, protocol l4: L4Protocol, pool: PoolHandle, allowedSources: [CIDR]?) throws(SystemError)
        -> UInt64
    {
        if taken.contains(address) { throw SystemError("bind(\(address))", EADDRINUSE) }
        defer { next += 1 }
        open[next] = (address, l4, pool, allowedSources)
        return next
    }

    public func closeListener(_ id: UInt64) { open[id] = nil }

    /// The open addresses, sorted, as text (UDP ones with a `/udp` suffix).
    public var addresses: [String] { open.values.map { frontendText($0.address, $0.l4) }.sorted() }
}

/// What the userspace proxier needs beyond the backend tables.
public struct UserspaceConfig: Sendable, Hashable {
    /// The balancer for services without the `ferry.io/userspace-balancer` annotation.
    public var defaultBalancer: BalancerKind
    /// NodePorts listen on these node addresses.
    public var nodeAddresses: [IPAddress]
    /// When set, only node addresses inside these prefixes get NodePort listeners.
    public var nodePortAddresses: [CIDR]
    /// Only the node's primary address of each family (the first of `nodeAddresses`) gets them.
    public var nodePortPrimaryOnly = false

    public init(defaultBalancer: BalancerKind = .roundRobin, nodeAddresses: [IPAddress] = [], nodePortAddresses: [CIDR] = []) {
        self.defaultBalancer = defaultBalancer
        self.nodeAddresses = nodeAddresses
        self.nodePortAddresses = nodePortAddresses
    }

    /// The node addresses NodePorts listen on.
    public var nodePortListenAddresses: [IPAddress] {
        if nodePortPrimaryOnly {
            return IPFamily.allCases.compactMap { family in nodeAddresses.first { $0.family == family && !$0.isLoopback } }
        }
        return nodePortAddresses.isEmpty ? nodeAddresses : nodeAddresses.filter { address in nodePortAddresses.contains { $0.contains(address) } }
    }
}

/// A frontend the userspace data plane could not open (the rest keep working).
public struct ListenerProblem: Error, Sendable, Hashable, CustomStringConvertible {
    public var servicePort: ServicePortName
    public var address: String
    public var error: SystemError

    public var description: String { "Service \(servicePort): listening on \(address): \(error)" }
}

/// What one userspace sync did.
public struct UserspaceSyncReport: Sendable {
    public var opened = 0
    public var closed = 0
    public var routesAdded = 0
    public var routesDeleted = 0
    /// Pools created or whose backends, balancer or affinity changed.
    public var poolsUpdated = 0
    public var problems: [ListenerProblem] = []
}

/// Keeps the forwarder's listeners, backend pools and local routes equal to what the backend tables
/// call for (TCP and UDP service ports; SCTP is not relayed). A listener per frontend address:
/// each ClusterIP, external IP and load-balancer IP on the service port, and each NodePort on every
/// NodePort address of the node. Listeners follow the tables: a new service opens its listeners, a
/// removed one closes them (established connections drain), a changed port moves.
public final class UserspaceProxier {
    /// A pool's identity: the service port and whether it serves external frontends (their backends
    /// follow externalTrafficPolicy, the ClusterIP's internalTrafficPolicy).
    struct PoolKey: Hashable {
        var port: ServicePortName
        var external: Bool
    }

    struct ListenKey: Hashable {
        var address: SocketAddress
        var pool: PoolKey
        var l4: L4Protocol { pool.port.protocol }
        /// A change of the source ranges reopens the listener (rare, and a listener's filter is fixed).
        var allowedSources: [CIDR]? = nil
    }

    /// The pools' counters, readable from any thread (metrics scrapes) while syncs run.
    public let poolBoard = PoolBoard()

    public let listeners: ListenerHost
    public let routes: LocalRouteTable
    public private(set) var config: UserspaceConfig
    private var pools: [PoolKey: PoolHandle] = [:]
    private var open: [ListenKey: UInt64] = [:]
    private var routed: Set<IPAddress> = []
    private var routesRead = false

    public init(listeners: ListenerHost, routes: LocalRouteTable, config: UserspaceConfig) {
        self.listeners = listeners
        self.routes = routes
        self.config = config
    }

    /// The node's addresses changed (its Node object did): NodePort listeners follow on the next sync.
    public func setNodeAddresses(_ addresses: [IPAddress]) { config.nodeAddresses = addresses }

    /// The listening addresses, for display and tests.
    public var listening: [String] { open.keys.map { "\(frontendText($0.address, $0.l4)) -> \($0.pool.port)" }.sorted() }

    /// Brings listeners, pools and routes to `tables`. A frontend that cannot be opened is reported
    /// and retried on the next sync; everything else is applied.
    public func sync(_ tables: BackendTables) throws(SystemError) -> UserspaceSyncReport {
        var report = UserspaceSyncReport()
        if !routesRead {
            routed = try routes.list()
            routesRead = true
        }
        var wantedListeners: [ListenKey: Void] = [:]
        var wantedRoutes: Set<IPAddress> = []
        var wantedPools: [PoolKey: (ServicePortTable, [Backend])] = [:]
        for entry in tables.ports.values where entry.name.protocol != .sctp {
            for frontend in entry.frontends {
                let key = PoolKey(port: entry.name, external: frontend.kind.isExternal)
                wantedPools[key] = (entry, entry.backends(for: frontend.kind))
                if let address = frontend.address {
                    wantedRoutes.insert(address)
                    let allowed =
                        frontend.kind == .loadBalancer
                        ? entry.loadBalancerAllowedSources(
                            family: address.family, nodeIP: config.nodeAddresses.first { $0.family == address.family }) : nil
                    let listenKey = ListenKey(address: SocketAddress(ip: address, port: frontend.port), pool: key, allowedSources: allowed)
                    wantedListeners[listenKey] = ()
                } else {
                    for address in config.nodePortListenAddresses {
                        wantedListeners[ListenKey(address: SocketAddress(ip: address, port: frontend.port), pool: key)] = ()
                    }
                }
            }
        }
        // Routes first, so new listeners receive traffic at once. An address already local (a node
        // address used as an external IP) keeps its own route: the kernel answers EEXIST.
        for address in wantedRoutes.subtracting(routed).sorted() {
            do {
                try routes.add(address)
                routed.insert(address)
                report.routesAdded += 1
            } catch  where error.errno == EEXIST {
                // Already local.
            }
        }
        for (key, value) in wantedPools {
            let (entry, backends) = value
            let kind = entry.balancer ?? config.defaultBalancer
            if let handle = pools[key] {
                if handle.pool.withLock({ $0.update(backends: backends, kind: kind, affinity: entry.sessionAffinity) }) {
                    // UDP sessions check their backend is still in the pool when this moves.
                    handle.generation.add(1, ordering: .releasing)
                    report.poolsUpdated += 1
                }
            } else {
                pools[key] = PoolHandle(
                    name: "\(key.port)\(key.external ? " (external)" : "")",
                    pool: BackendPool(backends: backends, kind: kind, affinity: entry.sessionAffinity))
                report.poolsUpdated += 1
            }
        }
        for (key, id) in open where wantedListeners[key] == nil {
            listeners.closeListener(id)
            open[key] = nil
            report.closed += 1
        }
        for key in wantedListeners.keys.sorted(by: { $0.address.description < $1.address.description }) where open[key] == nil {
            guard let pool = pools[key.pool] else { continue }
            do {
                open[key] = try listeners.listen(on: key.address, protocol: key.l4, pool: pool, allowedSources: key.allowedSources)
                report.opened += 1
            } catch {
                report.problems.append(ListenerProblem(servicePort: key.pool.port, address: key.address.description, error: error))
            }
        }
        for key in pools.keys where wantedPools[key] == nil { pools[key] = nil }
        poolBoard.publish(pools.map { (servicePort: $0.key.port, external: $0.key.external, stats: $0.value.stats) })
        for address in routed.subtracting(wantedRoutes).sorted() {
            try routes.delete(address)
            routed.remove(address)
            report.routesDeleted += 1
        }
        return report
    }

    /// The service addresses routed to this node now.
    public var routedAddresses: Set<IPAddress> { routed }

    /// Closes every listener and removes Ferry's routes (on exit and for `ferry cleanup`).
    public func shutdown() throws(SystemError) {
        stopAccepting()
        try UserspaceProxier.removeRoutes(routes)
        routed = []
    }

    /// Closes every listener; established connections go on (their service addresses stay local until
    /// `shutdown()` removes the routes).
    public func stopAccepting() {
        for id in open.values { listeners.closeListener(id) }
        open = [:]
    }

    /// Removes every route Ferry made, including those of an earlier run.
    @discardableResult
    public static func removeRoutes(_ routes: LocalRouteTable) throws(SystemError) -> Int {
        let all = try routes.list()
        for address in all { try routes.delete(address) }
        return all.count
    }
}

/// The current pools' counters, published by each sync for readers on other threads (metrics).
public final class PoolBoard: Sendable {
    private let pools = Mutex<[(servicePort: ServicePortName, external: Bool, stats: PoolStats)]>([])

    init() {}

    func publish(_ current: [(servicePort: ServicePortName, external: Bool, stats: PoolStats)]) { pools.withLock { $0 = current } }

    /// Each pool's counters: its service port, and whether it serves external frontends (NodePorts,
    /// external and load-balancer IPs) or internal ones.
    public var current: [(servicePort: ServicePortName, external: Bool, stats: PoolStats)] { pools.withLock { $0 } }
}
