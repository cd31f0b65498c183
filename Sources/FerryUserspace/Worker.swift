import CLinux
import FerryCore
import FerrySystem
import Foundation
import Glibc
import Synchronization

/// One event loop: its own epoll instance, every TCP listener (with EPOLLEXCLUSIVE, so usually one worker
/// wakes per new connection) and the connections it accepted; the UDP frontends given to it, and their
/// sessions (a connected socket per session toward its backend, `UDPSessionTable` deciding).
final class Worker: @unchecked Sendable {
    private static let listenerTag: UInt64 = 1 << 63
    private static let wakeTag: UInt64 = 1 << 62
    private static let udpFrontendTag: UInt64 = 1 << 61
    private static let udpSessionTag: UInt64 = 1 << 60
    /// Datagrams handled per readiness event before the loop looks at other sockets.
    private static let datagramBatch = 64
    private static let edgeEvents = UInt32(EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue) | EPOLLET.rawValue
    private static let readEvents = UInt32(EPOLLIN.rawValue | EPOLLRDHUP.rawValue)
    private static let writeEvents = UInt32(EPOLLOUT.rawValue)

    let index: Int
    private let config: ForwarderConfig
    private let stats: ForwarderStats
    private let epoll: Int32
    private let wake: Int32
    private let stopping = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private var thread: Thread?
    var listeners: ListenerRegistry?

    // Owned by the worker thread only.
    private var connections: [UInt64: Connection] = [:]
    private var nextConnectionID: UInt64 = 1
    private var paused: [(listener: Listener, until: ContinuousClock.Instant)] = []
    private var random = SystemRandomNumberGenerator()
    /// Empty pipes of closed connections, reused by new ones (saves pipe2 and two closes per pipe).
    private var sparePipes: [(read: Int32, write: Int32)] = []
    private static let sparePipeLimit = 1_024
    private let clock = ContinuousClock()
    private var udp: UDPSessionTable
    /// Sockets toward backends, each serving one UDP session at a time (`session` 0: spare). They stay
    /// registered with epoll (tagged with their index) and are re-connected to the next session's
    /// backend: a new session costs one connect, where a socket per session cost socket, connect,
    /// epoll_ctl and close (the former `ferry bench udp`, fresh socket per query: 14,500 queries/s with a socket
    /// per session, p99 6.6 ms).
    private var udpSlots: [(fd: Int32, family: IPFamily, session: UInt64)] = []
    private var spareSlots: [IPFamily: [Int]] = [:]
    private var vacantSlots: [Int] = []
    private static let spareSlotLimit = 1_024
    /// Each live session's slot, pool and the frontend its replies leave from.
    private var udpSessions: [UInt64: (slot: Int, pool: PoolHandle, frontend: Listener)] = [:]
    private var lastUDPExpiry = ContinuousClock.now
    /// One datagram (the largest UDP payload).
    private let datagram = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 16)

    init(index: Int, config: ForwarderConfig, stats: ForwarderStats) throws(SystemError) {
        self.index = index
        self.config = config
        self.stats = stats
        udp = UDPSessionTable(idleTimeout: config.udpTimeout, limit: config.udpSessionLimit)
        epoll = try System.call("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        wake = try System.call("eventfd") { eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
        let epoll = self.epoll
        let wake = self.wake
        try System.call("epoll_ctl(eventfd)") { ferry_epoll_ctl(epoll, EPOLL_CTL_ADD, wake, UInt32(EPOLLIN.rawValue), Worker.wakeTag) }
    }

    deinit {
        System.close(epoll)
        System.close(wake)
        datagram.deallocate()
    }

    func start() {
        let thread = Thread { [self] in
            run()
            done.signal()
        }
        thread.name = "ferry-worker-\(index)"
        thread.start()
        self.thread = thread
    }

    func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
        done.wait()
    }

    func watch(_ listener: Listener) {
        // (A listening socket per worker with SO_REUSEPORT was tried: it cut no accept4 call, each worker
        // still draining to EAGAIN, and doubled the epoll_wait wake-ups per connection, 0.46 to 0.82.)
        if listener.l4 == .udp {
            _ = ferry_epoll_ctl(epoll, EPOLL_CTL_ADD, listener.descriptor, UInt32(EPOLLIN.rawValue), Worker.udpFrontendTag | listener.id)
            return
        }
        _ = ferry_epoll_ctl(
            epoll, EPOLL_CTL_ADD, listener.descriptor, UInt32(EPOLLIN.rawValue) | EPOLLEXCLUSIVE.rawValue, Worker.listenerTag | listener.id)
    }

    func unwatch(_ listener: Listener) {
        _ = ferry_epoll_ctl(epoll, EPOLL_CTL_DEL, listener.descriptor, 0, 0)
    }

    // MARK: The loop

    private func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        let epoll = self.epoll
        var lastSweep = clock.now
        while !stopping.load(ordering: .acquiring) {
            let count = events.withUnsafeMutableBufferPointer { epoll_wait(epoll, $0.baseAddress, 256, 50) }
            if count < 0 && errno != EINTR { break }
            for position in 0..<max(0, Int(count)) {
                let tag = ferry_epoll_data(&events[position])
                let eventBits = ferry_epoll_events(&events[position])
                if tag == Worker.wakeTag {
                    var value: UInt64 = 0
                    _ = read(wake, &value, 8)
                } else if tag & Worker.listenerTag != 0 {
                    accept(listenerID: tag & ~Worker.listenerTag)
                } else if tag & Worker.udpFrontendTag != 0 {
                    receiveDatagrams(frontendID: tag & ~Worker.udpFrontendTag)
                } else if tag & Worker.udpSessionTag != 0 {
                    receiveReplies(slot: Int(tag & ~Worker.udpSessionTag))
                } else {
                    handle(connectionID: tag >> 1, side: tag & 1 == 0 ? .client : .backend, events: eventBits)
                }
            }
            let now = clock.now
            // UDP sessions expire in deadline order (cheap), every 10 ms, so closing them is spread out.
            if now - lastUDPExpiry >= .milliseconds(10) {
                lastUDPExpiry = now
                for session in udp.expire(now: now) { closeSession(session, release: true) }
            }
            if now - lastSweep >= .milliseconds(50) {
                lastSweep = now
                sweep(now: now)
            }
        }
        for connection in connections.values { connection.closeAll(reset: true) }
        connections = [:]
        for session in udp.removeAll() { closeSession(session, release: true) }
        for slot in udpSlots where slot.fd >= 0 { System.close(slot.fd) }
        udpSlots = []
        for pipe in sparePipes {
            System.close(pipe.read)
            System.close(pipe.write)
        }
        sparePipes = []
    }

    /// Connect timeouts, idle timeouts, and listeners to resume after descriptors ran out.
    private func sweep(now: ContinuousClock.Instant) {
        for connection in Array(connections.values) {
            switch connection.phase {
            case .connecting:
                if let deadline = connection.connectDeadline, now >= deadline { connectFailed(connection, now: now) }
            case .relaying:
                if now - connection.lastActivity >= config.idleTimeout {
                    stats.idleTimeouts.add(1, ordering: .relaxed)
                    connection.machine.timedOut()
                    pump(connection)
                }
            case .closed:
                break
            }
        }
        if !paused.isEmpty {
            let (resume, wait) = paused.reduce(into: ([Listener](), [(listener: Listener, until: ContinuousClock.Instant)]())) {
                if now >= $1.until { $0.0.append($1.listener) } else { $0.1.append($1) }
            }
            paused = wait
            for listener in resume where listener.descriptor >= 0 { watch(listener) }
        }
        // Sessions of frontends that closed (their service port or address went away): each frontend's
        // descriptor looked at once (it is read under the frontend's lock), not once per session.
        var closedFrontend: [UInt64: Bool] = [:]
        for entry in udpSessions.values where closedFrontend[entry.frontend.id] == nil {
            closedFrontend[entry.frontend.id] = entry.frontend.descriptor < 0
        }
        for (frontend, closed) in closedFrontend where closed {
            for session in udp.close(frontend: frontend) { closeSession(session, release: true) }
        }
    }

    // MARK: Accepting

    private func accept(listenerID: UInt64) {
        guard let listener = listeners?.lookup(listenerID) else { return }
        for _ in 0..<64 {
            let (accepted, peer) = SocketAddress.receiving { address, length in
                listener.withDescriptor { fd -> (Int32, Int32) in
                    guard fd >= 0 else { return (-1, EBADF) }
                    let result = ferry_accept4(fd, address, length)
                    return (result, result < 0 ? errno : 0)
                }
            }
            let (result, code) = accepted
            if result < 0 {
                if code == EINTR || code == ECONNABORTED { continue }
                if code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM {
                    // Out of descriptors: stop accepting on this listener for a moment, the backlog waits.
                    stats.acceptPauses.add(1, ordering: .relaxed)
                    unwatch(listener)
                    paused.append((listener, clock.now + .milliseconds(100)))
                }
                return
            }
            stats.accepted.add(1, ordering: .relaxed)
            guard let client = peer else {
                System.close(result)
                continue
            }
            if let allowed = listener.allowedSources, !allowed.contains(where: { $0.contains(client.ip) }) {
                // loadBalancerSourceRanges: the kernel completed the handshake before Ferry could see the
                // source, so the nearest to nftables mode's drop is a reset with nothing relayed.
                stats.sourceRefused.add(1, ordering: .relaxed)
                System.lingerZero(result)
                System.close(result)
                continue
            }
            _ = try? System.setOption(result, Int32(IPPROTO_TCP), TCP_NODELAY, 1, "TCP_NODELAY")
            let connection = Connection(id: nextConnectionID, client: result, clientAddress: client, pool: listener.pool)
            nextConnectionID += 1
            connections[connection.id] = connection
            stats.active.add(1, ordering: .relaxed)
            connection.pool.stats.accepted.add(1, ordering: .relaxed)
            connection.pool.stats.active.add(1, ordering: .relaxed)
            connectNext(connection, now: clock.now)
        }
    }

    // MARK: UDP

    /// Datagrams from clients on a UDP frontend: each goes to its session's backend, a first one opens
    /// a session.
    private func receiveDatagrams(frontendID: UInt64) {
        guard let frontend = listeners?.lookup(frontendID) else { return }
        let handle = frontend.pool
        for _ in 0..<Worker.datagramBatch {
            let (count, peer) = SocketAddress.receiving { address, length in
                frontend.withDescriptor { fd in
                    fd < 0 ? -1 : recvfrom(fd, datagram.baseAddress, datagram.count, Int32(MSG_DONTWAIT), address, length)
                }
            }
            guard count >= 0 else { return }  // EAGAIN: drained (other errors: nothing queued for this frontend)
            guard let client = peer else { continue }
            if let allowed = frontend.allowedSources, !allowed.contains(where: { $0.contains(client.ip) }) {
                stats.sourceRefused.add(1, ordering: .relaxed)
                continue
            }
            let now = clock.now
            let key = UDPSessionTable.Key(frontend: frontendID, client: client)
            // At most twice: a session whose backend turns out unreachable on this send is ended, and the
            // datagram goes to the backend picked next.
            for _ in 0..<2 {
                let generation = handle.generation.load(ordering: .acquiring)
                // The bound is over all workers: their live sessions are counted in one atomic.
                let admit = stats.udpSessions.load(ordering: .relaxed) < config.udpSessionLimit
                let route = handle.pool.withLock { pool in
                    udp.route(key, now: now, pool: &pool, generation: generation, admit: admit, using: &random)
                }
                switch route {
                case .full:
                    stats.udpSessionLimitDrops.add(1, ordering: .relaxed)
                case .noBackend(let replaced):
                    if let replaced { closeSession(replaced, release: false) }
                    stats.udpNoBackend.add(1, ordering: .relaxed)
                case .forward(let session, let opened, let replaced):
                    if let replaced { closeSession(replaced, release: false) }
                    if opened, !openSession(session, frontend: frontend) { break }
                    guard let fd = sessionSocket(session.id) else { break }
                    if send(fd, datagram.baseAddress, count, Int32(MSG_NOSIGNAL)) >= 0 {
                        stats.udpDatagrams.add(1, ordering: .relaxed)
                        handle.stats.bytes.add(count, ordering: .relaxed)
                        stats.bytes.add(count, ordering: .relaxed)
                    } else if errno == ECONNREFUSED {
                        // An ICMP port unreachable from an earlier datagram: this backend is not listening.
                        backendUnreachable(session.id)
                        continue
                    }
                }
                break
            }
        }
    }

    /// A session's socket toward its backend: connected, so the kernel reports the backend's ICMP port
    /// unreachable on it and accepts replies from the backend only; a spare one re-connected when there
    /// is one. False when none could be had (the session is ended and the datagram dropped).
    private func openSession(_ session: UDPSessionTable.Session, frontend: Listener) -> Bool {
        let target = SocketAddress(ip: session.backend.ip, port: session.backend.port)
        var slot = spareSlots[target.ip.family]?.popLast()
        do throws(SystemError) {
            if slot == nil { slot = try makeSlot(target.ip.family) }
            let fd = udpSlots[slot!].fd
            _ = try target.withSockaddr { (pointer, length) throws(SystemError) in
                try System.call("connect(\(target))") { connect(fd, pointer, length) }
            }
        } catch {
            if let slot { retireSlot(slot) }
            if error.isDescriptorExhaustion { stats.descriptorShortages.add(1, ordering: .relaxed) }
            frontend.pool.pool.withLock { _ = udp.end(session.id, pool: &$0) }
            return false
        }
        udpSlots[slot!].session = session.id
        udpSessions[session.id] = (slot!, frontend.pool, frontend)
        stats.udpSessions.add(1, ordering: .relaxed)
        stats.udpSessionsOpened.add(1, ordering: .relaxed)
        frontend.pool.stats.accepted.add(1, ordering: .relaxed)
        frontend.pool.stats.active.add(1, ordering: .relaxed)
        return true
    }

    /// The socket of a session's backend for `datagram`'s send.
    private func sessionSocket(_ sessionID: UInt64) -> Int32? { udpSessions[sessionID].map { udpSlots[$0.slot].fd } }

    /// Replies from a session's backend, sent to the client from the frontend's socket. A spare socket
    /// that is readable holds a late reply of a session that ended: read and dropped.
    private func receiveReplies(slot: Int) {
        guard slot < udpSlots.count, udpSlots[slot].fd >= 0 else { return }
        let fd = udpSlots[slot].fd
        let sessionID = udpSlots[slot].session
        guard sessionID != 0, let entry = udpSessions[sessionID], let session = udp.session(sessionID) else {
            while recv(fd, datagram.baseAddress, datagram.count, Int32(MSG_DONTWAIT)) >= 0 {}
            return
        }
        var touched = false
        for _ in 0..<Worker.datagramBatch {
            let count = recv(fd, datagram.baseAddress, datagram.count, Int32(MSG_DONTWAIT))
            if count < 0 {
                if errno == ECONNREFUSED { backendUnreachable(sessionID) }
                break
            }
            if !touched {
                udp.touch(sessionID, now: clock.now)
                touched = true
            }
            let client = session.key.client
            let sent = entry.frontend.withDescriptor { fd in
                guard fd >= 0 else { return -1 }
                return client.withSockaddr { pointer, length in
                    sendto(fd, datagram.baseAddress, count, Int32(MSG_NOSIGNAL), pointer, length)
                }
            }
            if sent >= 0 {
                stats.udpReplies.add(1, ordering: .relaxed)
                entry.pool.stats.bytes.add(count, ordering: .relaxed)
                stats.bytes.add(count, ordering: .relaxed)
            }
        }
    }

    /// The backend of a session answered ICMP port unreachable: the session ends, the backend is backed
    /// off in its pool (the client's next datagram goes elsewhere).
    private func backendUnreachable(_ sessionID: UInt64) {
        guard let entry = udpSessions[sessionID] else { return }
        stats.udpUnreachable.add(1, ordering: .relaxed)
        entry.pool.stats.connectFailures.add(1, ordering: .relaxed)
        let now = clock.now
        if let session = entry.pool.pool.withLock({ udp.unreachable(sessionID, now: now, pool: &$0) }) {
            closeSession(session, release: false)
        }
    }

    /// Frees an ended session's socket for the next session (beyond a spare limit, closes it);
    /// `release`: it was taken out of the table without being released in its pool yet (expiry,
    /// frontend closed).
    private func closeSession(_ session: UDPSessionTable.Session, release: Bool) {
        guard let entry = udpSessions.removeValue(forKey: session.id) else { return }
        if release { entry.pool.pool.withLock { $0.released(session.backend) } }
        udpSlots[entry.slot].session = 0
        let family = udpSlots[entry.slot].family
        if spareSlots[family, default: []].count < Worker.spareSlotLimit {
            spareSlots[family, default: []].append(entry.slot)
        } else {
            retireSlot(entry.slot)
        }
        stats.udpSessions.subtract(1, ordering: .relaxed)
        entry.pool.stats.active.subtract(1, ordering: .relaxed)
    }

    /// A new socket toward backends of `family`, registered with epoll under its slot's index.
    private func makeSlot(_ family: IPFamily) throws(SystemError) -> Int {
        let fd = try System.udpSocket(family)
        let index = vacantSlots.popLast() ?? udpSlots.count
        if index == udpSlots.count { udpSlots.append((fd, family, 0)) } else { udpSlots[index] = (fd, family, 0) }
        do throws(SystemError) {
            try System.call("epoll_ctl(udp session)") {
                ferry_epoll_ctl(epoll, EPOLL_CTL_ADD, fd, UInt32(EPOLLIN.rawValue), Worker.udpSessionTag | UInt64(index))
            }
        } catch {
            retireSlot(index)
            throw error
        }
        return index
    }

    /// Closes a slot's socket; its index is reused by the next socket made.
    private func retireSlot(_ index: Int) {
        System.close(udpSlots[index].fd)
        udpSlots[index] = (-1, udpSlots[index].family, 0)
        vacantSlots.append(index)
    }

    // MARK: Connecting

    /// Starts a connect to the next backend the pool offers, or gives up.
    private func connectNext(_ connection: Connection, now: ContinuousClock.Instant) {
        while connection.attempts < config.connectTimeouts.count {
            let picked = connection.pool.pool.withLock {
                $0.pick(client: connection.clientAddress.ip, now: now, excluding: connection.tried, using: &random)
            }
            guard let backend = picked else { break }
            connection.connectDeadline = now + config.connectTimeouts[connection.attempts]
            connection.attempts += 1
            connection.backendAddress = backend
            do {
                let fd = try System.tcpSocket(backend.ip.family)
                connection.backend = fd
                // Level-triggered: the connect's completion (writable), and readable too, so that a backend
                // that speaks first (a greeting) is read in the same wake-up as the completion, as HAProxy
                // does; registered for writing alone, that took one more epoll_wait round per connection.
                let events = config.edgeTriggered ? Worker.edgeEvents : Worker.writeEvents | Worker.readEvents
                try System.call("epoll_ctl(backend)") { ferry_epoll_ctl(epoll, EPOLL_CTL_ADD, fd, events, connection.id << 1 | 1) }
                connection.registered[.backend] = events
                let target = SocketAddress(ip: backend.ip, port: backend.port)
                let started = try target.withSockaddr { (pointer, length) throws(SystemError) -> Bool in
                    let result = connect(fd, pointer, length)
                    if result == 0 { return true }
                    if errno == EINPROGRESS || errno == EINTR { return false }
                    throw SystemError("connect(\(target))", errno)
                }
                if started { connected(connection, now: now, readable: true) }
                return
            } catch {
                connection.closeBackend()
                if error.isDescriptorExhaustion {
                    // Ferry's own shortage, not the backend's fault: give this client up, blame no one.
                    stats.descriptorShortages.add(1, ordering: .relaxed)
                    finish(connection, reset: true)
                    return
                }
                // Refused or unreachable at once: count it and try another backend.
                connection.tried.insert(backend)
                stats.connectFailures.add(1, ordering: .relaxed)
                connection.pool.stats.connectFailures.add(1, ordering: .relaxed)
                connection.pool.pool.withLock { $0.failed(backend, now: now) }
            }
        }
        // Nothing left to try: reset the client, as a closed port would.
        stats.noBackend.add(1, ordering: .relaxed)
        finish(connection, reset: true)
    }

    private func connectFailed(_ connection: Connection, now: ContinuousClock.Instant) {
        stats.connectFailures.add(1, ordering: .relaxed)
        connection.pool.stats.connectFailures.add(1, ordering: .relaxed)
        if let backend = connection.backendAddress {
            connection.tried.insert(backend)
            connection.pool.pool.withLock { $0.failed(backend, now: now) }
        }
        connection.closeBackend()
        connectNext(connection, now: now)
    }

    /// The backend connection is up: start relaying. `readable`: the backend may already have sent
    /// something (its event said so, or the connect finished at once).
    private func connected(_ connection: Connection, now: ContinuousClock.Instant, readable: Bool, hungUp: Bool = false) {
        guard let backend = connection.backendAddress, let backendFD = connection.backend else { return }
        connection.phase = .relaying
        connection.connectDeadline = nil
        connection.lastActivity = now
        connection.pool.pool.withLock { $0.connected(backend, client: connection.clientAddress.ip, now: now) }
        connection.counted = true
        stats.established.add(1, ordering: .relaxed)
        _ = try? System.setOption(backendFD, Int32(IPPROTO_TCP), TCP_NODELAY, 1, "TCP_NODELAY")
        do {
            connection.openChannels(
                splice: config.splice, bufferSize: config.bufferSize, pipeSize: config.pipeSize, backendReadable: readable,
                backendHungUp: hungUp,
                levelTriggered: !config.edgeTriggered
            ) {
                [unowned self] () throws(SystemError) in
                stats.splicedDirections.add(1, ordering: .relaxed)
                if let pipe = sparePipes.popLast() { return pipe }
                let pipe = try System.pipe()
                if config.pipeSize > 65_536 { _ = fcntl(pipe.write, FERRY_F_SETPIPE_SZ, Int32(config.pipeSize)) }
                return pipe
            }
            let client = connection.client
            // Level-triggered: the client is registered for reading at once (the relay wants its bytes).
            let events = config.edgeTriggered ? Worker.edgeEvents : Worker.readEvents
            try System.call("epoll_ctl(client)") { ferry_epoll_ctl(epoll, EPOLL_CTL_ADD, client, events, connection.id << 1) }
            connection.registered[.client] = events
        } catch {
            finish(connection, reset: true)
            return
        }
        pump(connection)
    }

    // MARK: Relaying

    private func handle(connectionID: UInt64, side: RelayMachine.Side, events: UInt32) {
        guard let connection = connections[connectionID] else { return }
        switch connection.phase {
        case .connecting:
            guard side == .backend, let fd = connection.backend else { return }
            // Writable without an error or hang-up: connected (SO_ERROR is read only when in doubt).
            let trouble = events & UInt32(EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0
            let error = trouble ? System.socketError(fd) : 0
            if error == 0 && !trouble && events & UInt32(EPOLLOUT.rawValue) != 0 {
                connected(
                    connection, now: clock.now, readable: events & UInt32(EPOLLIN.rawValue | EPOLLRDHUP.rawValue) != 0,
                    hungUp: events & UInt32(EPOLLRDHUP.rawValue) != 0)
            } else if error != 0 || trouble {
                connectFailed(connection, now: clock.now)
            }
        case .relaying:
            if events & UInt32(EPOLLERR.rawValue) != 0, System.socketError(connection.descriptor(side)) != 0 {
                connection.machine.failed(side)
            }
            let trouble = UInt32(EPOLLERR.rawValue | EPOLLHUP.rawValue)
            if events & (UInt32(EPOLLRDHUP.rawValue) | trouble) != 0 {
                connection.machine.hungUp(side)
            } else if events & UInt32(EPOLLIN.rawValue) != 0 {
                connection.machine.readable(side)
            }
            if events & (UInt32(EPOLLOUT.rawValue) | trouble) != 0 { connection.machine.writable(side) }
            pump(connection)
        case .closed:
            break
        }
    }

    /// Runs the relay until it would block or is done.
    private func pump(_ connection: Connection) {
        var moved = 0
        while true {
            let action = connection.machine.next()
            switch action {
            case .wait:
                if moved > 0 {
                    connection.lastActivity = clock.now
                    stats.bytes.add(moved, ordering: .relaxed)
                    connection.pool.stats.bytes.add(moved, ordering: .relaxed)
                }
                if !config.edgeTriggered { updateInterest(connection) }
                return
            case .close:
                stats.bytes.add(moved, ordering: .relaxed)
                connection.pool.stats.bytes.add(moved, ordering: .relaxed)
                finish(connection, reset: false)
                return
            default:
                let outcome = connection.perform(action)
                if case .write = action, case .transferred(let count) = outcome { moved += count }
                connection.machine.record(action, outcome)
            }
        }
    }

    /// Level-triggered mode: ask epoll for exactly what the relay waits for on each socket.
    private func updateInterest(_ connection: Connection) {
        for side in RelayMachine.Side.allCases {
            var wanted: UInt32 = 0
            if connection.machine.wantsRead(side) { wanted |= Worker.readEvents }
            if connection.machine.wantsWrite(side) { wanted |= Worker.writeEvents }
            guard wanted != connection.registered[side] else { continue }
            let fd = connection.descriptor(side)
            if ferry_epoll_ctl(epoll, EPOLL_CTL_MOD, fd, wanted, connection.id << 1 | UInt64(side.rawValue)) == 0 {
                connection.registered[side] = wanted
            }
        }
    }

    private func finish(_ connection: Connection, reset: Bool) {
        guard connection.phase != .closed else { return }
        if connection.counted, let backend = connection.backendAddress {
            connection.pool.pool.withLock { $0.released(backend) }
        }
        for pipe in connection.takeEmptyPipes() {
            if sparePipes.count < Worker.sparePipeLimit {
                sparePipes.append(pipe)
            } else {
                System.close(pipe.read)
                System.close(pipe.write)
            }
        }
        connection.closeAll(reset: reset)
        connections[connection.id] = nil
        stats.active.subtract(1, ordering: .relaxed)
        connection.pool.stats.active.subtract(1, ordering: .relaxed)
    }
}

/// One client connection and its backend: descriptors, pipes or buffers, and its relay machine.
final class Connection {
    enum Phase { case connecting, relaying, closed }

    let id: UInt64
    let client: Int32
    let clientAddress: SocketAddress
    let pool: PoolHandle
    var backend: Int32?
    var backendAddress: BackendAddress?
    /// Backends this connection failed to reach (filled on failure only: the usual connection, whose
    /// first connect succeeds, allocates no set).
    var tried: Set<BackendAddress> = []
    var attempts = 0
    var connectDeadline: ContinuousClock.Instant?
    var phase = Phase.connecting
    var lastActivity: ContinuousClock.Instant
    var counted = false
    var machine = RelayMachine()
    /// The epoll interest registered per side (level-triggered mode).
    var registered = BySide<UInt32>(0)
    /// Per direction (indexed by the side bytes come from): a pipe once in splice mode, else a copy
    /// buffer (allocated at the first read). (Held in place, not in arrays: four allocations less per
    /// connection.)
    private var pipes = BySide<(read: Int32, write: Int32)?>(nil)
    private var buffers = BySide<UnsafeMutableRawBufferPointer?>(nil)
    private var bulk = BySide(false)
    private var bufferSize = 16_384
    private var pipeSize = 65_536
    private var makePipe: (() throws(SystemError) -> (read: Int32, write: Int32))?
    private var levelTriggered = true

    init(id: UInt64, client: Int32, clientAddress: SocketAddress, pool: PoolHandle) {
        self.id = id
        self.client = client
        self.clientAddress = clientAddress
        self.pool = pool
        self.lastActivity = ContinuousClock.now
    }

    /// Each direction starts in copy mode with a buffer of `bufferSize`; with `splice`, a direction whose
    /// read fills the buffer moves to a pipe (from `makePipe`) once the buffer is drained.
    func openChannels(
        splice: Bool, bufferSize: Int, pipeSize: Int, backendReadable: Bool, backendHungUp: Bool, levelTriggered: Bool,
        pipe makePipe: @escaping () throws(SystemError) -> (read: Int32, write: Int32)
    ) {
        // Reads wait for readiness events: the client's registration reports data already there.
        // A copy read stops short only on an empty socket, in both modes (see RelayMachine.init).
        machine = RelayMachine(capacity: bufferSize, readable: false, shortReadDrains: true)
        if backendReadable { machine.readable(.backend) }
        if backendHungUp { machine.hungUp(.backend) }
        self.levelTriggered = levelTriggered
        self.bufferSize = bufferSize
        self.pipeSize = pipeSize
        self.makePipe = splice ? makePipe : nil
    }

    func descriptor(_ side: RelayMachine.Side) -> Int32 { side == .client ? client : (backend ?? -1) }

    /// Performs one relay action on the sockets.
    func perform(_ action: RelayMachine.Action) -> RelayMachine.Outcome {
        switch action {
        case .read(let side, let max):
            let fd = descriptor(side)
            if let pipe = pipes[side] {
                return outcome("splice") { ferry_splice(fd, pipe.write, UInt(max)) }
            }
            let held = machine.heldBytes(from: side)
            if buffers[side] == nil { buffers[side] = .allocate(byteCount: bufferSize, alignment: 16) }
            let result = outcome("read") { read(fd, buffers[side]!.baseAddress! + held, max) }
            // A read that fills the buffer: a bulk transfer, worth a pipe.
            if case .transferred(let count) = result, count == max, held + count == bufferSize, makePipe != nil {
                bulk[side] = true
            }
            return result
        case .write(let side, let count):
            let fd = descriptor(side)
            let source = side.other
            if let pipe = pipes[source] {
                return outcome("splice") { ferry_splice(pipe.read, fd, UInt(count)) }
            }
            let base = buffers[source]!.baseAddress!
            let result = outcome("write") { send(fd, base, count, Int32(MSG_NOSIGNAL)) }
            if case .transferred(let written) = result {
                if written < count {
                    memmove(base, base + written, count - written)
                } else if bulk[source], let makePipe, let pipe = try? makePipe() {
                    // Drained: continue this direction through a pipe.
                    pipes[source] = pipe
                    buffers[source]?.deallocate()
                    buffers[source] = nil
                    machine.setCapacity(from: source, pipeSize)
                    // Edge-triggered, a splice runs until EAGAIN: it can stop short with data left.
                    if !levelTriggered { machine.setShortReadDrains(from: source, false) }
                }
            }
            return result
        case .shutdownWrite(let side):
            return shutdown(descriptor(side), Int32(SHUT_WR)) == 0 || errno == ENOTCONN ? .transferred(0) : .failed
        case .reset(let side):
            System.lingerZero(descriptor(side))
            return .transferred(0)
        case .close, .wait:
            return .transferred(0)
        }
    }

    private func outcome(_ name: String, _ body: () -> Int) -> RelayMachine.Outcome {
        do {
            switch try System.nonBlocking(name, body) {
            case .done(0): return .endOfStream
            case .done(let count): return .transferred(count)
            case .wouldBlock: return .wouldBlock
            }
        } catch {
            return .failed
        }
    }

    /// Hands over the pipes that hold no bytes (for reuse); the rest are closed with the connection.
    func takeEmptyPipes() -> [(read: Int32, write: Int32)] {
        var empty: [(read: Int32, write: Int32)] = []
        for side in RelayMachine.Side.allCases {
            if let pipe = pipes[side], machine.heldBytes(from: side) == 0 {
                empty.append(pipe)
                pipes[side] = nil
            }
        }
        return empty
    }

    func closeBackend() {
        if let backend { System.close(backend) }
        backend = nil
    }

    func closeAll(reset: Bool) {
        if reset {
            System.lingerZero(client)
            if let backend { System.lingerZero(backend) }
        }
        System.close(client)
        closeBackend()
        for side in RelayMachine.Side.allCases {
            if let pipe = pipes[side] {
                System.close(pipe.read)
                System.close(pipe.write)
            }
            buffers[side]?.deallocate()
        }
        pipes = BySide(nil)
        buffers = BySide(nil)
        makePipe = nil
        phase = .closed
    }
}

/// A value for each side of a relayed connection, held in place.
struct BySide<Value> {
    var client: Value
    var backend: Value

    init(_ value: Value) {
        client = value
        backend = value
    }

    subscript(side: RelayMachine.Side) -> Value {
        get { side == .client ? client : backend }
        set {
            if side == .client { client = newValue } else { backend = newValue }
        }
    }
}
