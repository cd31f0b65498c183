import FerryCore
import FerrySystem
import Foundation
import Glibc
import Synchronization

/// Settings of the userspace forwarder.
public struct ForwarderConfig: Sendable, Hashable {
    /// Event loops (threads); each accepts and relays its own connections. Default: one per core.
    public var workers: Int
    /// Connect attempts per client connection, each to another backend, with these timeouts (the
    /// legacy userspace proxy's 250 ms, 500 ms, 1 s, 2 s).
    public var connectTimeouts: [Duration]
    /// A connection with no bytes moving either way for this long is reset.
    public var idleTimeout: Duration
    /// Relay bulk transfers with `splice` through pipes (zero-copy): each direction starts with a small
    /// copy buffer and moves to a pipe once a read fills it (short exchanges cost no pipe syscalls).
    /// False: always read/write through the buffer.
    public var splice: Bool
    /// Connection sockets edge-triggered (registered once, never modified), or level-triggered (interest
    /// updated with EPOLL_CTL_MOD as the relay's needs change). Both take a short `read` for "drained"
    /// (edge-triggered, until the side hangs up; a spliced direction reads until EAGAIN there). Level is
    /// the default. Edge makes fewer system calls per short connection (18.7 against 20.7, 2 epoll_ctl
    /// against 4; HAProxy 22.7 and 3.2; perf stat, one test bed) but no more connections: 4,253 against
    /// 4,319 conn/s (means of five alternating 4 s runs), and in three `ferry bench userspace` runs
    /// 4,454 / 3,842 / 4,192 against 4,208 / 3,612 / 4,578; and it spends more CPU per GB in bulk
    /// (0.34-0.36 s against 0.29-0.40, median 0.35 against 0.31: a wake-up for every ACK that frees room).
    public var edgeTriggered: Bool
    /// Bytes held per direction in copy mode.
    public var bufferSize: Int
    /// Bytes held per direction in splice mode (the pipe's size).
    public var pipeSize: Int
    /// A UDP session with no datagram either way for this long ends (kube-proxy's legacy userspace
    /// mode: 250 ms; a DNS exchange needs less).
    public var udpTimeout: Duration = .milliseconds(250)
    /// UDP sessions held at most, over all workers (each is one socket toward its backend); a datagram
    /// that would open one more is dropped and counted. Queries from a fresh socket each (glibc's
    /// resolver) open a session each, alive for `udpTimeout`: 8,192 sessions carry 32,768 such queries a
    /// second at 250 ms, within a 20,000-descriptor limit that TCP connections (six each) share.
    public var udpSessionLimit = 8_192

    public init(
        workers: Int = ProcessInfo.processInfo.activeProcessorCount,
        connectTimeouts: [Duration] = [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2)],
        idleTimeout: Duration = .seconds(3600), splice: Bool = true, bufferSize: Int = 16_384, pipeSize: Int = 1_048_576,
        edgeTriggered: Bool = false
    ) {
        self.edgeTriggered = edgeTriggered
        self.pipeSize = pipeSize
        self.workers = max(1, workers)
        self.connectTimeouts = connectTimeouts.isEmpty ? [.seconds(1)] : connectTimeouts
        self.idleTimeout = idleTimeout
        self.splice = splice
        self.bufferSize = bufferSize
    }
}

/// Counters of the forwarder, read by metrics and tests.
public final class ForwarderStats: Sendable {
    public let accepted = Atomic<Int>(0)
    public let established = Atomic<Int>(0)
    public let active = Atomic<Int>(0)
    /// Connect attempts that failed (refused, unreachable, timed out); each one was retried elsewhere if possible.
    public let connectFailures = Atomic<Int>(0)
    /// Client connections closed because no backend could be reached.
    public let noBackend = Atomic<Int>(0)
    /// Connections to a load-balancer IP from a source outside its `loadBalancerSourceRanges`, reset.
    public let sourceRefused = Atomic<Int>(0)
    /// Times a worker stopped accepting because descriptors ran out.
    public let acceptPauses = Atomic<Int>(0)
    /// Client connections given up because a socket or pipe for them could not be made (EMFILE, ENFILE).
    public let descriptorShortages = Atomic<Int>(0)
    public let idleTimeouts = Atomic<Int>(0)
    public let bytes = Atomic<Int>(0)
    /// Directions that moved from the copy buffer to a pipe (bulk transfers).
    public let splicedDirections = Atomic<Int>(0)
    /// UDP: sessions open now, opened so far, datagrams relayed each way, and datagrams dropped: no
    /// backend to send to, the session bound reached (`udpSessionLimit`), or a source outside the
    /// load-balancer's ranges. `udpUnreachable`: sessions ended by an ICMP port unreachable.
    public let udpSessions = Atomic<Int>(0)
    public let udpSessionsOpened = Atomic<Int>(0)
    public let udpDatagrams = Atomic<Int>(0)
    public let udpReplies = Atomic<Int>(0)
    public let udpNoBackend = Atomic<Int>(0)
    public let udpSessionLimitDrops = Atomic<Int>(0)
    public let udpUnreachable = Atomic<Int>(0)
    init() {}
}

/// The backends of one frontend group, shared by the listeners that lead to it and the connections
/// that use it.
public final class PoolHandle: Sendable {
    public let name: String
    public let pool: Mutex<BackendPool>
    /// This pool's share of the forwarder's counters (per service port, for metrics).
    public let stats = PoolStats()
    /// Moves when the pool's backends change: a UDP session then checks its backend is still there.
    public let generation = Atomic<UInt64>(0)

    public init(name: String, pool: BackendPool) {
        self.name = name
        self.pool = Mutex(pool)
    }
}

/// Counters of one pool: its connections (UDP sessions for a UDP port), failed connect attempts (each
/// retried elsewhere when it can be) and bytes relayed.
public final class PoolStats: Sendable {
    public let accepted = Atomic<Int>(0)
    public let active = Atomic<Int>(0)
    public let connectFailures = Atomic<Int>(0)
    public let bytes = Atomic<Int>(0)
    init() {}
}

/// The userspace data plane's engine: listening sockets for service frontends, one epoll event loop per
/// worker thread, non-blocking connects with retry, and a splice relay per connection driven by
/// `RelayMachine`.
public final class Forwarder: ListenerHost, @unchecked Sendable {
    public let config: ForwarderConfig
    public let stats = ForwarderStats()
    private let workers: [Worker]
    private let listeners = ListenerRegistry()
    private let nextListenerID = Atomic<UInt64>(1)

    public init(config: ForwarderConfig = ForwarderConfig()) throws(SystemError) {
        self.config = config
        System.raiseFileLimit()
        // splice(2) into a socket whose peer is gone raises SIGPIPE (it has no MSG_NOSIGNAL): the relay
        // handles EPIPE itself, so the signal must not end the process.
        signal(SIGPIPE, SIG_IGN)
        var workers: [Worker] = []
        for index in 0..<config.workers { workers.append(try Worker(index: index, config: config, stats: stats)) }
        self.workers = workers
        for worker in workers { worker.listeners = listeners }
        for worker in workers { worker.start() }
    }

    deinit { stop() }

    /// Stops every worker and closes every socket (listeners and connections).
    public func stop() {
        for worker in workers { worker.stop() }
        let all = listeners.removeAll()
        for listener in all { listener.close() }
    }

    /// Opens a listening socket on `address` leading to `pool`; with `allowedSources`, connections from
    /// any other source are reset as soon as they are accepted (UDP: their datagrams dropped). A TCP
    /// listener is watched by every worker (EPOLLEXCLUSIVE: usually one wakes per connection); a UDP
    /// frontend by one worker, which holds its sessions.
    public func listen(on address: SocketAddress, protocol l4: L4Protocol, pool: PoolHandle, allowedSources: [CIDR]? = nil)
        throws(SystemError) -> UInt64
    {
        let udp = l4 == .udp
        let fd = try udp ? System.udpSocket(address.ip.family) : System.tcpSocket(address.ip.family)
        do {
            try System.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR")
            if address.ip.family == .ipv6 { try System.setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1, "IPV6_V6ONLY") }
            // Service addresses are made local by routes; FREEBIND lets the bind succeed even in the
            // moment before the route exists.
            if address.ip.family == .ipv4 {
                try System.setOption(fd, Int32(IPPROTO_IP), IP_FREEBIND, 1, "IP_FREEBIND")
            } else {
                try System.setOption(fd, Int32(IPPROTO_IPV6), 78 /* IPV6_FREEBIND */, 1, "IPV6_FREEBIND")
            }
            // Bound to the frontend's own address, so replies leave from exactly the address and port the
            // client sent to (a resolver drops any other).
            _ = try address.withSockaddr { (pointer, length) throws(SystemError) in
                try System.call("bind(\(address))") { bind(fd, pointer, length) }
            }
            if !udp { try System.call("listen(\(address))") { Glibc.listen(fd, 4096) } }
        } catch {
            System.close(fd)
            throw error
        }
        let id = nextListenerID.wrappingAdd(1, ordering: .relaxed).oldValue
        let listener = Listener(id: id, fd: fd, address: address, l4: l4, pool: pool, allowedSources: allowedSources)
        listeners.insert(listener)
        if udp {
            workers[Int(id % UInt64(workers.count))].watch(listener)
        } else {
            for worker in workers { worker.watch(listener) }
        }
        return id
    }

    /// Closes a listening socket; its established connections go on.
    public func closeListener(_ id: UInt64) {
        guard let listener = listeners.remove(id) else { return }
        for worker in workers { worker.unwatch(listener) }
        // A UDP frontend's worker ends its sessions at its next sweep, seeing the descriptor closed.
        listener.close()
    }

    /// Open relayed connections, over all workers.
    public var activeConnections: Int { stats.active.load(ordering: .relaxed) }
}

/// A listening socket (TCP) or a frontend's datagram socket (UDP), and the pool its clients balance over.
final class Listener: @unchecked Sendable {
    let id: UInt64
    let address: SocketAddress
    let l4: L4Protocol
    let pool: PoolHandle
    /// The clients this listener serves (`nil`: any).
    let allowedSources: [CIDR]?
    private let state: Mutex<Int32>

    init(id: UInt64, fd: Int32, address: SocketAddress, l4: L4Protocol = .tcp, pool: PoolHandle, allowedSources: [CIDR]?) {
        self.id = id
        self.address = address
        self.l4 = l4
        self.pool = pool
        self.allowedSources = allowedSources
        self.state = Mutex(fd)
    }

    /// The descriptor while open (-1 after `close`). Accepting under the lock keeps a closed descriptor
    /// number from being reused under a worker's feet.
    func withDescriptor<R>(_ body: (Int32) -> R) -> R { state.withLock { body($0) } }

    var descriptor: Int32 { state.withLock { $0 } }

    func close() {
        state.withLock { fd in
            if fd >= 0 { System.close(fd) }
            fd = -1
        }
    }
}

/// The open listeners by id, shared by the forwarder and its workers.
final class ListenerRegistry: Sendable {
    private let table = Mutex<[UInt64: Listener]>([:])

    func insert(_ listener: Listener) { table.withLock { $0[listener.id] = listener } }
    func lookup(_ id: UInt64) -> Listener? { table.withLock { $0[id] } }
    func remove(_ id: UInt64) -> Listener? { table.withLock { $0.removeValue(forKey: id) } }
    func removeAll() -> [Listener] {
        table.withLock { entries in
            defer { entries = [:] }
            return Array(entries.values)
        }
    }
}
