import FerryBench
import FerryCore
import FerrySystem
import FerryUserspace
import Foundation
import Glibc
import Testing

/// Blocking-socket helpers for relaying tests on loopback (no root needed).
enum Loopback {
    /// A listening socket on 127.0.0.1 with a kernel-chosen port.
    static func listener() throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound, listen(fd, 512) == 0 else { throw SystemError("bind/listen", errno) }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// A free port on 127.0.0.1 (bound once, then released).
    static func freePort() throws -> Int {
        let (fd, port) = try listener()
        close(fd)
        return port
    }

    /// Serves each connection by echoing every byte and ending its stream when the client ends its own.
    static func echoServer() throws -> (port: Int, stop: () -> Void) {
        let (fd, port) = try listener()
        let thread = Thread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                Thread.detachNewThread {
                    var buffer = [UInt8](repeating: 0, count: 65_536)
                    while true {
                        let count = read(client, &buffer, buffer.count)
                        if count <= 0 { break }
                        var offset = 0
                        while offset < count {
                            let written = buffer[offset..<count].withUnsafeBytes {
                                send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                            }
                            if written <= 0 { break }
                            offset += written
                        }
                    }
                    shutdown(client, Int32(SHUT_WR))
                    close(client)
                }
            }
        }
        thread.start()
        return (
            port,
            {
                shutdown(fd, Int32(SHUT_RDWR)); close(fd)
            }
        )
    }

    static func connect(to port: Int, host: UInt32 = 0x7f00_0002, from source: UInt32? = nil) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        do {
            if let source { try call("bind", fd, host: source, port: 0, Glibc.bind) }
            try call("connect", fd, host: host, port: port, Glibc.connect)
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Calls bind or connect with an IPv4 address.
    private static func call(
        _ name: String, _ fd: Int32, host: UInt32, port: Int, _ body: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32
    ) throws {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = host.bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result != 0 { throw SystemError(name, errno) }
    }

    /// Sends `count` pseudo-random bytes, ends the stream (half-close), reads until the peer ends its
    /// stream (20 s at most); returns hashes of what was sent and what came back (`ferry debug
    /// stream`'s client).
    static func echoRoundTrip(port: Int, bytes count: Int, seed: UInt64) throws -> (sent: UInt64, received: UInt64, receivedCount: Int) {
        let fd = try StreamClient.connect(SocketAddress(ip: IPAddress("127.0.0.2")!, port: port), timeoutMilliseconds: 20_000)
        defer { close(fd) }
        let round = try StreamClient.roundTrip(fd, seed: seed, bytes: count)
        return (round.sent, round.received, round.count)
    }
}

/// A value set by one thread and read by another.
final class Atomic64: @unchecked Sendable {
    private let lock = NSLock()
    private var value: UInt64?
    func set(_ new: UInt64) { lock.withLock { value = new } }
    func get() -> UInt64? { lock.withLock { value } }
}

@Suite("Forwarder on loopback: real sockets, splice and copy", .serialized)
struct ForwarderLoopbackTests {
    func pool(_ ports: [Int], kind: BalancerKind = .roundRobin) -> PoolHandle {
        PoolHandle(
            name: "test", pool: BackendPool(backends: ports.map { Backend(ip: IPAddress("127.0.0.1")!, port: $0) }, kind: kind))
    }

    @Test(arguments: [true, false], [true, false])
    func payloadIntegrityBothWaysWithHalfClose(splice: Bool, edgeTriggered: Bool) throws {
        let echo = try Loopback.echoServer()
        defer { echo.stop() }
        let forwarder = try Forwarder(config: ForwarderConfig(workers: 2, splice: splice, edgeTriggered: edgeTriggered))
        defer { forwarder.stop() }
        let port = try Loopback.freePort()
        _ = try forwarder.listen(on: SocketAddress(ip: IPAddress("127.0.0.2")!, port: port), pool: pool([echo.port]))
        // 24 MiB through the relay and back; the client half-closes and still reads the whole echo.
        let result = try Loopback.echoRoundTrip(port: port, bytes: 24 << 20, seed: 7)
        #expect(result.receivedCount == 24 << 20)
        #expect(result.sent == result.received)
        // Several at once.
        let results = Atomic64()
        DispatchQueue.concurrentPerform(iterations: 8) { index in
            if let round = try? Loopback.echoRoundTrip(port: port, bytes: 1 << 20, seed: UInt64(index)), round.sent == round.received,
                round.receivedCount == 1 << 20
            {
            } else {
                results.set(1)
            }
        }
        #expect(results.get() == nil, "a concurrent round trip failed")
        // Bulk transfers moved to pipes (both directions of each connection); copy mode never does.
        let spliced = forwarder.stats.splicedDirections.load(ordering: .relaxed)
        #expect(splice ? spliced >= 2 : spliced == 0, "spliced directions: \(spliced)")
        for _ in 0..<100 where forwarder.activeConnections > 0 { usleep(10_000) }
        #expect(forwarder.activeConnections == 0)
    }

    /// Short exchanges whose bytes and FIN arrive together, both ways: edge-triggered, the FIN's event
    /// comes once, so a relay that took a short read for "drained" would wait for an event that never
    /// comes (the client would hang until the idle timeout).
    @Test(arguments: [true, false])
    func bytesAndTheirEndInOneEventAreBothRelayed(edgeTriggered: Bool) throws {
        // A backend that greets and closes at once.
        let (greeter, greeterPort) = try Loopback.listener()
        let greeterThread = Thread {
            while true {
                let client = accept(greeter, nil, nil)
                if client < 0 { return }
                _ = "hello".withCString { send(client, $0, 5, Int32(MSG_NOSIGNAL)) }
                close(client)
            }
        }
        greeterThread.start()
        defer { shutdown(greeter, Int32(SHUT_RDWR)); close(greeter) }
        let echo = try Loopback.echoServer()
        defer { echo.stop() }
        let forwarder = try Forwarder(
            config: ForwarderConfig(workers: 2, idleTimeout: .seconds(30), edgeTriggered: edgeTriggered))
        defer { forwarder.stop() }
        let greeterFront = try Loopback.freePort()
        let echoFront = try Loopback.freePort()
        _ = try forwarder.listen(on: SocketAddress(ip: IPAddress("127.0.0.2")!, port: greeterFront), pool: pool([greeterPort]))
        _ = try forwarder.listen(on: SocketAddress(ip: IPAddress("127.0.0.2")!, port: echoFront), pool: pool([echo.port]))
        /// Reads to the end of the stream (2 s at most): what came.
        func readToEnd(_ fd: Int32) -> (bytes: Int, ended: Bool) {
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 256)
            var total = 0
            while true {
                let count = read(fd, &buffer, buffer.count)
                if count == 0 { return (total, true) }
                if count < 0 { return (total, false) }
                total += count
            }
        }
        for round in 0..<100 {
            let greeted = try Loopback.connect(to: greeterFront)
            let greeting = readToEnd(greeted)
            close(greeted)
            #expect(greeting.bytes == 5 && greeting.ended, "greeting \(round): \(greeting)")
            // The client's request and its FIN, sent before the relay reads either.
            let asking = try Loopback.connect(to: echoFront)
            _ = [UInt8](repeating: 1, count: 64).withUnsafeBytes { send(asking, $0.baseAddress, 64, Int32(MSG_NOSIGNAL)) }
            shutdown(asking, Int32(SHUT_WR))
            let echoed = readToEnd(asking)
            close(asking)
            #expect(echoed.bytes == 64 && echoed.ended, "echo \(round): \(echoed)")
            if greeting.bytes != 5 || !greeting.ended || echoed.bytes != 64 || !echoed.ended { break }
        }
    }

    @Test func aClientThatResetsDuringABulkTransferEndsOnlyItsConnection() throws {
        let echo = try Loopback.echoServer()
        defer { echo.stop() }
        let forwarder = try Forwarder(config: ForwarderConfig(workers: 1))
        defer { forwarder.stop() }
        let port = try Loopback.freePort()
        _ = try forwarder.listen(on: SocketAddress(ip: IPAddress("127.0.0.2")!, port: port), pool: pool([echo.port]))
        // Send 4 MiB, read none of the echo, half-close, then reset: the relay's splice into the client
        // meets EPIPE (and, unless ignored, SIGPIPE, which would end this whole test process).
        for _ in 0..<3 {
            let fd = try Loopback.connect(to: port)
            let chunk = [UInt8](repeating: 7, count: 65_536)
            var timeout = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            for _ in 0..<64 { if chunk.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) <= 0 { break } }
            // FIN, then RST: the relay's socket is in CLOSE_WAIT, where a reset turns into EPIPE.
            shutdown(fd, Int32(SHUT_WR))
            usleep(20_000)
            var reset = linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, socklen_t(MemoryLayout<linger>.size))
            close(fd)
        }
        for _ in 0..<300 where forwarder.activeConnections > 0 { usleep(10_000) }
        #expect(forwarder.activeConnections == 0)
        let result = try Loopback.echoRoundTrip(port: port, bytes: 100_000, seed: 3)
        #expect(result.receivedCount == 100_000 && result.sent == result.received)
    }

    @Test func aRefusingBackendIsSkippedAndBackedOff() throws {
        let echo = try Loopback.echoServer()
        defer { echo.stop() }
        let dead = try Loopback.freePort()
        let forwarder = try Forwarder(config: ForwarderConfig(workers: 1))
        defer { forwarder.stop() }
        let port = try Loopback.freePort()
        let handle = pool([dead, echo.port])
        _ = try forwarder.listen(on: SocketAddress(ip: IPAddress("127.0.0.2")!, port: port), pool: handle)
        for index in 0..<20 {
            let result = try Loopback.echoRoundTrip(port: port, bytes: 1_000, seed: UInt64(index))
            #expect(result.receivedCount == 1_000 && result.sent == result.received)
        }
        // The first connection that met the dead backend retried on the live one; then it was backed off.
        #expect(forwarder.stats.connectFailures.load(ordering: .relaxed) == 1)
        #expect(forwarder.stats.noBackend.load(ordering: .relaxed) == 0)
    }

    @Test func noReachableBackendResetsTheClient() throws {
        let forwarder = try Forwarder(config: ForwarderConfig(workers: 1))
        defer { forwarder.stop() }
        let port = try Loopback.freePort()
        _ = try forwarder.listen(on: SocketAddress(ip: IPAddress("127.0.0.2")!, port: port), pool: pool([try Loopback.freePort()]))
        let fd = try Loopback.connect(to: port)
        defer { close(fd) }
        var byte: UInt8 = 0
        let result = read(fd, &byte, 1)
        #expect(result <= 0, "the client gets no data: reset or end of stream")
        #expect(forwarder.stats.noBackend.load(ordering: .relaxed) == 1)
    }

    /// A load-balancer listener with source ranges resets other clients at once, relays nothing to a
    /// backend for them, and serves the allowed ones.
    @Test func aListenerWithAllowedSourcesResetsOthers() throws {
        let echo = try Loopback.echoServer()
        defer { echo.stop() }
        let forwarder = try Forwarder(config: ForwarderConfig(workers: 1))
        defer { forwarder.stop() }
        let port = try Loopback.freePort()
        _ = try forwarder.listen(
            on: SocketAddress(ip: IPAddress("127.0.0.2")!, port: port), pool: pool([echo.port]), allowedSources: [CIDR("127.0.0.3/32")!])
        let refused = try Loopback.connect(to: port, from: 0x7f00_0001)
        defer { close(refused) }
        var byte: UInt8 = 0
        #expect(read(refused, &byte, 1) <= 0, "an outside source gets no data")
        #expect(forwarder.stats.sourceRefused.load(ordering: .relaxed) == 1)
        let allowed = try Loopback.connect(to: port, from: 0x7f00_0003)
        defer { close(allowed) }
        var message: [UInt8] = Array("hello".utf8)
        #expect(write(allowed, &message, message.count) == message.count)
        var answer = [UInt8](repeating: 0, count: 5)
        #expect(read(allowed, &answer, 5) == 5 && answer == message)
        #expect(forwarder.stats.sourceRefused.load(ordering: .relaxed) == 1)
    }

    @Test(arguments: [true, false])
    func idleConnectionsAreReset(edgeTriggered: Bool) throws {
        let echo = try Loopback.echoServer()
        defer { echo.stop() }
        let forwarder = try Forwarder(config: ForwarderConfig(workers: 1, idleTimeout: .milliseconds(300), edgeTriggered: edgeTriggered))
        defer { forwarder.stop() }
        let port = try Loopback.freePort()
        _ = try forwarder.listen(on: SocketAddress(ip: IPAddress("127.0.0.2")!, port: port), pool: pool([echo.port]))
        let fd = try Loopback.connect(to: port)
        defer { close(fd) }
        var byte: UInt8 = 0
        let start = ContinuousClock.now
        let result = read(fd, &byte, 1)
        #expect(result <= 0)
        #expect(ContinuousClock.now - start < .seconds(3))
        #expect(forwarder.stats.idleTimeouts.load(ordering: .relaxed) == 1)
    }

    @Test func closingAListenerLeavesEstablishedConnectionsAlone() throws {
        let echo = try Loopback.echoServer()
        defer { echo.stop() }
        let forwarder = try Forwarder(config: ForwarderConfig(workers: 2))
        defer { forwarder.stop() }
        let port = try Loopback.freePort()
        let id = try forwarder.listen(on: SocketAddress(ip: IPAddress("127.0.0.2")!, port: port), pool: pool([echo.port]))
        let fd = try Loopback.connect(to: port)
        defer { close(fd) }
        for _ in 0..<100 where forwarder.stats.established.load(ordering: .relaxed) == 0 { usleep(10_000) }
        forwarder.closeListener(id)
        #expect(throws: SystemError.self) { _ = try Loopback.connect(to: port) }
        let message: [UInt8] = Array("still here".utf8)
        _ = message.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = read(fd, &buffer, buffer.count)
        #expect(Array(buffer.prefix(max(0, count))) == message)
    }
}
