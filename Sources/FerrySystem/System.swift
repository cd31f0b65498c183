import CLinux
import FerryCore
import Glibc

/// A failed system call: which one and its errno.
public struct SystemError: Error, Sendable, Hashable, CustomStringConvertible {
    public var call: String
    public var errno: Int32

    public init(_ call: String, _ errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }

    public var isDescriptorExhaustion: Bool { errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM }
}

/// The result of a non-blocking call: done, or it would block.
public enum NonBlocking<Value> {
    case done(Value)
    case wouldBlock
}

/// Every system call of the userspace data plane goes through here: EINTR is retried, EAGAIN becomes
/// `.wouldBlock`, any other errno a typed `SystemError`.
public enum System {
    /// Runs `body` until it does not fail with EINTR; a negative result throws. (Inlinable, as is
    /// `nonBlocking`: called from the relay's module unspecialized, each call looked up its generic
    /// metadata at run time; under `ferry debug load` the relay binary's own share of the samples went
    /// from 5.6% to 4.7% with them inlined, the connection rate within noise.)
    @inlinable @discardableResult
    public static func call<T: FixedWidthInteger>(_ name: String, _ body: () -> T) throws(SystemError) -> T {
        while true {
            let result = body()
            if result >= 0 { return result }
            let code = Glibc.errno
            if code == EINTR { continue }
            throw SystemError(name, code)
        }
    }

    /// As `call`, with EAGAIN/EWOULDBLOCK (and EINPROGRESS for connect) as `.wouldBlock`.
    @inlinable
    public static func nonBlocking<T: FixedWidthInteger>(_ name: String, _ body: () -> T) throws(SystemError) -> NonBlocking<T> {
        do {
            return .done(try call(name, body))
        } catch {
            if error.errno == EAGAIN || error.errno == EWOULDBLOCK { return .wouldBlock }
            throw error
        }
    }

    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    public static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, _ label: String) throws(SystemError) {
        var value = value
        try call("setsockopt(\(label))") { setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) }
    }

    /// The pending error of a socket (`SO_ERROR`): 0 when a non-blocking connect succeeded.
    public static func socketError(_ fd: Int32) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) < 0 { return Glibc.errno }
        return value
    }

    /// Makes the next close send RST instead of FIN.
    public static func lingerZero(_ fd: Int32) {
        var value = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &value, socklen_t(MemoryLayout<linger>.size))
    }

    /// A non-blocking TCP socket of the family of `address`.
    public static func tcpSocket(_ family: IPFamily) throws(SystemError) -> Int32 {
        let domain = family == .ipv4 ? AF_INET : AF_INET6
        return try call("socket") {
            socket(domain, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
    }

    /// A non-blocking, close-on-exec UDP socket.
    public static func udpSocket(_ family: IPFamily) throws(SystemError) -> Int32 {
        let domain = family == .ipv4 ? AF_INET : AF_INET6
        return try call("socket") {
            socket(domain, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
    }

    /// A pipe with both ends non-blocking.
    public static func pipe() throws(SystemError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        try call("pipe2") { ferry_pipe2(&fds) }
        return (fds[0], fds[1])
    }

    /// Raises the open-file soft limit to the hard limit; returns the new soft limit.
    @discardableResult
    public static func raiseFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(limit.rlim_cur)
    }
}

/// An IP address and port as a C socket address.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    public var ip: IPAddress
    public var port: Int

    public init(ip: IPAddress, port: Int) {
        self.ip = ip
        self.port = port
    }

    public var description: String { ip.joined(port: port) }

    /// The socket domain for this address: `AF_INET` or `AF_INET6`.
    public var socketFamily: Int32 { ip.family == .ipv4 ? AF_INET : AF_INET6 }

    /// Calls `body` with room for a socket address (for accept, recvfrom, getsockname) and reads back
    /// the address it filled in (`nil` when not IPv4 or IPv6).
    public static func receiving<R, Failure: Error>(
        _ body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) throws(Failure) -> R
    ) throws(Failure) -> (result: R, address: SocketAddress?) {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = try withUnsafeMutablePointer(to: &storage) { (pointer) throws(Failure) -> R in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (raw) throws(Failure) -> R in try body(raw, &length) }
        }
        return (result, SocketAddress(storage))
    }

    /// Calls `body` with the `sockaddr` form.
    public func withSockaddr<R, Failure: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(Failure) -> R) throws(Failure) -> R {
        switch ip.family {
        case .ipv4:
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            let bytes = ip.bytes
            address.sin_addr.s_addr = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            return try withUnsafePointer(to: &address) { (pointer) throws(Failure) -> R in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (raw) throws(Failure) -> R in
                    try body(raw, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        case .ipv6:
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = in_port_t(UInt16(port).bigEndian)
            withUnsafeMutableBytes(of: &address.sin6_addr) { target in
                for (index, byte) in ip.bytes.enumerated() { target[index] = byte }
            }
            return try withUnsafePointer(to: &address) { (pointer) throws(Failure) -> R in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (raw) throws(Failure) -> R in
                    try body(raw, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
    }

    /// Reads a `sockaddr_storage` filled by accept/getpeername.
    public init?(_ storage: sockaddr_storage) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let address = withUnsafeBytes(of: &storage) { $0.loadUnaligned(as: sockaddr_in.self) }
            let bytes = withUnsafeBytes(of: address.sin_addr) { Array($0) }
            guard let ip = IPAddress(bytes: bytes) else { return nil }
            self.init(ip: ip, port: Int(UInt16(bigEndian: address.sin_port)))
        case AF_INET6:
            let address = withUnsafeBytes(of: &storage) { $0.loadUnaligned(as: sockaddr_in6.self) }
            let bytes = withUnsafeBytes(of: address.sin6_addr) { Array($0) }
            guard let ip = IPAddress(bytes: bytes) else { return nil }
            // An IPv4 client of a dual-stack socket: report it as IPv4.
            if bytes.prefix(12) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff], let v4 = IPAddress(bytes: Array(bytes.suffix(4))) {
                self.init(ip: v4, port: Int(UInt16(bigEndian: address.sin6_port)))
            } else {
                self.init(ip: ip, port: Int(UInt16(bigEndian: address.sin6_port)))
            }
        default:
            return nil
        }
    }
}
