import CLinux
import FerryCore
import FerrySystem
import Foundation
import Glibc

/// The TCP side of `ferry debug serve`: one thread, one epoll instance, non-blocking sockets. On
/// accept it greets (`NAME <client-ip>:<client-port>\n`, after `delay` for a slow pod), then echoes what
/// it reads until the client half-closes, writes out what is left and closes; a connection idle for
/// `DebugServer.idleTimeoutSeconds` is closed. While an echo waits to be written the connection is not
/// read (the client's sends back up, as against any server that writes before it reads on).
///
/// Why not a thread per connection, as this server was: in `ferry bench` the pods share the machine's
/// two cores with the client and the proxy, and a thread made and ended per short connection cost the
/// pods more CPU than the proxies being measured (the issue's own warning).
final class EchoLoop {
    private struct Connection {
        var output: [UInt8] = []
        var written = 0
        var lastActive: ContinuousClock.Instant
        /// What epoll watches the socket for; 0 until it is added (after the greeting).
        var interest: UInt32 = 0
    }

    private let listener: Int32
    private let name: String
    private let delay: Duration
    private var epoll: Int32 = -1
    private var connections: [Int32: Connection] = [:]
    /// Accepted connections waiting out `delay` before their greeting, in order of acceptance (so of
    /// their due times): (due, descriptor, greeting).
    private var waiting: [(ContinuousClock.Instant, Int32, [UInt8])] = []
    private var firstWaiting = 0
    private var buffer = [UInt8](repeating: 0, count: 65_536)
    /// Connections served at once at most; beyond, new ones wait in the listen backlog.
    private static let maximumConnections = 16_384
    private var accepting = true
    private var lastSweep = ContinuousClock.now

    init(listener: Int32, name: String, delay: Duration) {
        self.listener = listener
        self.name = name
        self.delay = delay
    }

    func run() -> Never {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { fatalError("ferry debug serve: epoll_create1: \(String(cString: strerror(errno)))") }
        _ = fcntl(listener, F_SETFL, fcntl(listener, F_GETFL) | O_NONBLOCK)
        _ = ferry_epoll_ctl(epoll, EPOLL_CTL_ADD, listener, EPOLLIN.rawValue, UInt64(listener))
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        while true {
            let count = epoll_wait(epoll, &events, Int32(events.count), timeoutMilliseconds())
            if count < 0 && errno != EINTR {
                usleep(10_000)  // never spin on an error
                continue
            }
            for index in 0..<max(0, Int(count)) {
                let fd = Int32(truncatingIfNeeded: ferry_epoll_data(&events[index]))
                if fd == listener { acceptAll() } else { service(fd) }
            }
            greetDue()
            sweepIdle()
        }
    }

    /// Until the next greeting is due, or a second (the idle sweep).
    private func timeoutMilliseconds() -> Int32 {
        guard firstWaiting < waiting.count else { return 1_000 }
        let left = waiting[firstWaiting].0 - ContinuousClock.now
        return Int32(max(0, min(1_000, left.components.seconds * 1_000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)))
    }

    private func acceptAll() {
        while connections.count + (waiting.count - firstWaiting) < Self.maximumConnections {
            let (fd, peer) = SocketAddress.receiving { pointer, length in ferry_accept4(listener, pointer, length) }
            if fd < 0 {
                switch errno {
                case EAGAIN, EINTR: return
                case ECONNABORTED, EPROTO, ENETDOWN, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH:
                    continue  // the connection's problem, not the listener's (see accept(2))
                default:
                    // EMFILE and friends: stop accepting until a connection ends or a second passes.
                    FileHandle.standardError.write(Data("ferry debug serve: accept: \(String(cString: strerror(errno)))\n".utf8))
                    pauseAccepting()
                    return
                }
            }
            guard let peer else {
                close(fd)
                continue
            }
            let greeting = Array("\(name) \(peer.ip.joined(port: peer.port))\n".utf8)
            if delay > .zero {
                waiting.append((ContinuousClock.now + delay, fd, greeting))
            } else {
                greet(fd, greeting)
            }
        }
        pauseAccepting()
    }

    private func pauseAccepting() {
        guard accepting else { return }
        accepting = false
        _ = ferry_epoll_ctl(epoll, EPOLL_CTL_MOD, listener, 0, UInt64(listener))
    }

    private func resumeAccepting() {
        guard !accepting else { return }
        accepting = true
        _ = ferry_epoll_ctl(epoll, EPOLL_CTL_MOD, listener, EPOLLIN.rawValue, UInt64(listener))
    }

    private func greet(_ fd: Int32, _ greeting: [UInt8]) {
        connections[fd] = Connection(output: greeting, lastActive: .now)
        flush(fd)
    }

    private func greetDue() {
        let now = ContinuousClock.now
        while firstWaiting < waiting.count, waiting[firstWaiting].0 <= now {
            let (_, fd, greeting) = waiting[firstWaiting]
            firstWaiting += 1
            greet(fd, greeting)
        }
        if firstWaiting == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            firstWaiting = 0
        }
    }

    /// Ready to write the rest of an echo, or to read (bytes, the client's half-close, a reset).
    private func service(_ fd: Int32) {
        guard var connection = connections[fd] else { return }
        if connection.written < connection.output.count {
            flush(fd)
            return
        }
        let count = buffer.withUnsafeMutableBytes { raw in recv(fd, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT)) }
        if count > 0 {
            connection.output = Array(buffer[0..<count])
            connection.written = 0
            connection.lastActive = .now
            connections[fd] = connection
            flush(fd)
        } else if count == 0 {
            end(fd)  // the client half-closed and every echo is written: done
        } else if errno != EAGAIN && errno != EINTR {
            end(fd)  // reset
        }
    }

    /// Writes what is pending; then watches for room to write the rest, or for the client's next bytes.
    private func flush(_ fd: Int32) {
        guard var connection = connections[fd] else { return }
        while connection.written < connection.output.count {
            let sent = connection.output.withUnsafeBytes { raw in
                send(fd, raw.baseAddress! + connection.written, raw.count - connection.written, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if sent > 0 {
                connection.written += sent
                connection.lastActive = .now
            } else if sent < 0 && errno == EINTR {
                continue
            } else if sent < 0 && errno == EAGAIN {
                break
            } else {
                end(fd)
                return
            }
        }
        let wanted = connection.written < connection.output.count ? EPOLLOUT.rawValue : EPOLLIN.rawValue
        if connection.interest != wanted {
            _ = ferry_epoll_ctl(epoll, connection.interest == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, wanted, UInt64(fd))
            connection.interest = wanted
        }
        connections[fd] = connection
    }

    private func end(_ fd: Int32) {
        connections[fd] = nil
        close(fd)  // also takes it out of the epoll set
        resumeAccepting()
    }

    private func sweepIdle() {
        let now = ContinuousClock.now
        guard now - lastSweep >= .seconds(1) else { return }
        lastSweep = now
        resumeAccepting()
        let limit = Duration.seconds(DebugServer.idleTimeoutSeconds)
        for (fd, connection) in connections where now - connection.lastActive > limit { end(fd) }
    }
}
