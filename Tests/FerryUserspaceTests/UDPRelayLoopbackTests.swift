import FerryCore
import FerrySystem
import FerryUserspace
import Foundation
import Glibc
import Testing

/// UDP sockets on loopback for the relay tests (no root needed).
enum UDPLoopback {
    /// A UDP socket bound to `host` (network order) with a kernel-chosen port.
    static func bound(host: UInt32 = 0x7f00_0001) throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = host.bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw SystemError("bind", errno) }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// `forwarder` listening for UDP on a free port of 127.0.0.2, which it returns. A port found free (bound,
    /// then closed) can be taken by a test running beside this one before the forwarder binds it (seen
    /// once: EADDRINUSE); then another port is tried.
    static func frontend(_ forwarder: Forwarder, pool: PoolHandle) throws -> Int {
        var attempts = 1
        while true {
            let free = try bound(host: 0x7f00_0002)
            close(free.fd)
            let address = SocketAddress(ip: IPAddress("127.0.0.2")!, port: free.port)
            let listened = Result { () throws(SystemError) in try forwarder.listen(on: address, protocol: .udp, pool: pool) }
            if case .failure(let error) = listened, error.errno == EADDRINUSE, attempts < 10 {
                attempts += 1
                continue
            }
            _ = try listened.get()
            return free.port
        }
    }

    /// Answers every datagram with `name`, a space, and the datagram itself, until stopped.
    static func server(name: String) throws -> (port: Int, stop: () -> Void) {
        let (fd, port) = try bound()
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let stopping = Atomic64()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 2_048)
            let prefix = Array("\(name) ".utf8)
            while stopping.get() == nil {
                var peer = sockaddr_storage()
                var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let count = withUnsafeMutablePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, 0, $0, &length) }
                }
                guard count > 0 else { continue }
                let reply = prefix + buffer[0..<count]
                _ = withUnsafePointer(to: &peer) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, reply, reply.count, 0, $0, length) }
                }
            }
            close(fd)
            done.signal()
        }
        return (
            port,
            {
                stopping.set(1); done.wait()
            }
        )
    }

    /// A client socket connected to 127.0.0.2:`port`: the kernel accepts replies from exactly that
    /// address and port only, as a resolver does.
    static func client(to port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0002).bigEndian
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let ok = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard ok else { throw SystemError("connect", errno) }
        // Generous: the suites run in parallel, some of them moving bulk data on this same machine.
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Sends `text` and returns the reply (nil on timeout or error).
    static func exchange(_ fd: Int32, _ text: String) -> String? {
        let bytes = Array(text.utf8)
        guard send(fd, bytes, bytes.count, 0) == bytes.count else { return nil }
        var buffer = [UInt8](repeating: 0, count: 2_048)
        let count = recv(fd, &buffer, buffer.count, 0)
        return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : nil
    }
}

@Suite("UDP relay on loopback: sessions, stickiness, expiry, unreachable backends", .serialized)
struct UDPRelayLoopbackTests {
    func pool(_ ports: [Int]) -> PoolHandle {
        PoolHandle(name: "udp", pool: BackendPool(backends: ports.map { Backend(ip: IPAddress("127.0.0.1")!, port: $0) }))
    }

    func forwarder(timeout: Duration = .milliseconds(250), limit: Int = 4_096) throws -> Forwarder {
        var config = ForwarderConfig(workers: 2)
        config.udpTimeout = timeout
        config.udpSessionLimit = limit
        return try Forwarder(config: config)
    }

    @Test func repliesComeBackFromTheFrontendAndASessionSticks() throws {
        let a = try UDPLoopback.server(name: "a")
        defer { a.stop() }
        let b = try UDPLoopback.server(name: "b")
        defer { b.stop() }
        let forwarder = try forwarder()
        defer { forwarder.stop() }
        let port = try UDPLoopback.frontend(forwarder, pool: pool([a.port, b.port]))
        // Each client: its answers all from one backend, echoed intact (the client socket is connected
        // to the frontend, so an answer from any other address would never arrive).
        var answeredBy: [String] = []
        for client in 0..<6 {
            let fd = try UDPLoopback.client(to: port)
            defer { close(fd) }
            var names: Set<String> = []
            for query in 0..<20 {
                let reply = UDPLoopback.exchange(fd, "q\(client)-\(query)")
                #expect(reply?.hasSuffix(" q\(client)-\(query)") == true, "reply: \(reply ?? "none")")
                if let name = reply?.split(separator: " ").first { names.insert(String(name)) }
            }
            #expect(names.count == 1, "client \(client) answered by \(names)")
            answeredBy += names
        }
        // Round robin over sessions: both backends served clients.
        #expect(Set(answeredBy) == ["a", "b"])
        // (A reply's counter moves just after its sendto: the client may read the reply first.)
        for _ in 0..<100 where forwarder.stats.udpReplies.load(ordering: .relaxed) < 120 { usleep(10_000) }
        #expect(forwarder.stats.udpSessionsOpened.load(ordering: .relaxed) == 6)
        #expect(forwarder.stats.udpDatagrams.load(ordering: .relaxed) == 120)
        #expect(forwarder.stats.udpReplies.load(ordering: .relaxed) == 120)
        // Idle sessions end after the timeout (250 ms; the sweep runs every 50 ms).
        for _ in 0..<120 where forwarder.stats.udpSessions.load(ordering: .relaxed) > 0 { usleep(25_000) }
        #expect(forwarder.stats.udpSessions.load(ordering: .relaxed) == 0)
    }

    @Test func aBackendAnsweringPortUnreachableIsLeftForTheNextOne() throws {
        let live = try UDPLoopback.server(name: "live")
        defer { live.stop() }
        let dead = try UDPLoopback.bound()
        close(dead.fd)  // nothing listens there: the kernel answers ICMP port unreachable
        let forwarder = try forwarder()
        defer { forwarder.stop() }
        let port = try UDPLoopback.frontend(forwarder, pool: pool([dead.port, live.port]))
        var answered = 0
        for query in 0..<10 {
            let fd = try UDPLoopback.client(to: port)
            defer { close(fd) }
            // A query that went to the dead backend is lost (UDP); the client asks again, as resolvers do.
            if UDPLoopback.exchange(fd, "q\(query)") ?? UDPLoopback.exchange(fd, "q\(query) again") != nil { answered += 1 }
        }
        #expect(answered == 10)
        #expect(forwarder.stats.udpUnreachable.load(ordering: .relaxed) >= 1)
    }

    @Test func aRemovedBackendMovesItsClientsAtTheirNextDatagram() throws {
        let a = try UDPLoopback.server(name: "a")
        defer { a.stop() }
        let b = try UDPLoopback.server(name: "b")
        defer { b.stop() }
        let forwarder = try forwarder(timeout: .seconds(30))
        defer { forwarder.stop() }
        let handle = pool([a.port, b.port])
        let port = try UDPLoopback.frontend(forwarder, pool: handle)
        let clients = try (0..<4).map { _ in try UDPLoopback.client(to: port) }
        defer { for fd in clients { close(fd) } }
        let first = clients.map { UDPLoopback.exchange($0, "hello")?.split(separator: " ").first.map(String.init) }
        #expect(Set(first.compactMap { $0 }) == ["a", "b"])
        // b leaves the pool (as UserspaceProxier does it): every client now hears from a.
        handle.pool.withLock {
            _ = $0.update(backends: [Backend(ip: IPAddress("127.0.0.1")!, port: a.port)], kind: .roundRobin, affinity: .none)
        }
        handle.generation.add(1, ordering: .releasing)
        for fd in clients { #expect(UDPLoopback.exchange(fd, "again")?.hasPrefix("a ") == true) }
    }

    @Test func theSessionBoundDropsNewClientsAndCountsThem() throws {
        let a = try UDPLoopback.server(name: "a")
        defer { a.stop() }
        let forwarder = try forwarder(timeout: .seconds(30), limit: 2)
        defer { forwarder.stop() }
        let port = try UDPLoopback.frontend(forwarder, pool: pool([a.port]))
        let clients = try (0..<3).map { _ in try UDPLoopback.client(to: port) }
        defer { for fd in clients { close(fd) } }
        #expect(UDPLoopback.exchange(clients[0], "1") != nil)
        #expect(UDPLoopback.exchange(clients[1], "2") != nil)
        #expect(UDPLoopback.exchange(clients[2], "3") == nil)
        #expect(forwarder.stats.udpSessionLimitDrops.load(ordering: .relaxed) == 1)
        // The sessions in place go on.
        #expect(UDPLoopback.exchange(clients[0], "1 again") != nil)
    }
}
