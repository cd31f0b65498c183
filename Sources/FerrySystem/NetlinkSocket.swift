import CLinux
import CMnl
import Dispatch
import Foundation
import Glibc
import Synchronization

/// One netlink socket (libmnl): the transport under Ferry's three netlink users, nftables (batches and
/// dumps), ctnetlink (conntrack) and rtnetlink (local routes). Every send and receive retries EINTR; a
/// receive waits at most `NetlinkSocket.receiveTimeout`, so a kernel that never answers is an error
/// (EAGAIN), not a hang; failures are `SystemError`s naming the call and the socket's user.
///
/// Not thread-safe: one owner at a time (its sequence numbers and receive buffer are not shared).
public final class NetlinkSocket: @unchecked Sendable {
    /// How long a receive waits for the next datagram. The kernel answers a request in the sender's own
    /// system call (an nftables batch is committed inside `sendto`), so replies are queued by the time
    /// Ferry reads them: a wait this long means the kernel is not answering at all.
    public static let receiveTimeout: Duration = .seconds(10)

    /// Who uses the socket, in errors: `nftables`, `conntrack`, `rtnetlink`.
    public let name: String
    public let portID: UInt32
    private let socket: OpaquePointer
    private var sequence: UInt32
    /// Reused for every receive: dumps read many datagrams.
    private var buffer: [UInt8]

    /// Opens and binds a socket on netlink `bus` (NETLINK_NETFILTER, NETLINK_ROUTE).
    public init(bus: Int32, name: String, receiveBufferBytes: Int32 = 8 << 20, bufferBytes: Int = 1 << 20) throws(SystemError) {
        guard let socket = mnl_socket_open(bus) else { throw SystemError("mnl_socket_open (\(name))", errno) }
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let code = errno
            mnl_socket_close(socket)
            throw SystemError("mnl_socket_bind (\(name))", code)
        }
        self.socket = socket
        self.name = name
        self.portID = mnl_socket_get_portid(socket)
        self.sequence = UInt32(truncatingIfNeeded: time(nil))
        self.buffer = [UInt8](repeating: 0, count: bufferBytes)
        var one: Int32 = 1
        _ = mnl_socket_setsockopt(socket, NETLINK_CAP_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = mnl_socket_setsockopt(socket, NETLINK_EXT_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        var size = receiveBufferBytes
        _ = setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        let seconds = Int(NetlinkSocket.receiveTimeout.components.seconds)
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { mnl_socket_close(socket) }

    /// A fresh sequence number.
    public func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    /// Moves the counter so that the next number is after `number` (a batch numbered its own messages).
    public func advanceSequence(past number: UInt32) { sequence = number }

    /// Sends one datagram (a message or a whole batch). A datagram bigger than the socket's send buffer
    /// grows it first: an nftables batch is sent whole, so that the kernel applies it atomically.
    public func send(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        if bytes.count > 200_000 {
            var size = Int32(clamping: bytes.count + 65_536)
            _ = setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        while true {
            let sent = mnl_socket_sendto(socket, bytes.baseAddress, bytes.count)
            if sent == bytes.count { return }
            if sent < 0 && errno == EINTR { continue }
            throw SystemError("sendto (\(name), \(bytes.count) bytes)", sent < 0 ? errno : EMSGSIZE)
        }
    }

    public func send(_ bytes: [UInt8]) throws(SystemError) {
        var failure: SystemError?
        bytes.withUnsafeBytes { raw in
            do throws(SystemError) { try send(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Receives datagrams and hands each of their messages to `handle` until it returns true. A socket
    /// failure (timeout included) becomes `Failure` through `socketError`.
    public func receive<Failure: Error>(
        _ handle: (NetlinkMessage) throws(Failure) -> Bool, socketError: (SystemError) -> Failure
    ) throws(Failure) {
        // Taken out of the property (not copied: one reference, so writing does not duplicate it).
        var local: [UInt8] = []
        swap(&local, &buffer)
        defer { swap(&local, &buffer) }
        while true {
            let received = local.withUnsafeMutableBytes { mnl_socket_recvfrom(socket, $0.baseAddress, $0.count) }
            if received < 0 && errno == EINTR { continue }
            guard received > 0 else { throw socketError(SystemError("recvfrom (\(name))", received < 0 ? errno : EPIPE)) }
            var finished = false
            var failure: Failure?
            local.withUnsafeBytes { raw in
                var offset = 0
                let headerSize = MemoryLayout<nlmsghdr>.size
                while offset + headerSize <= received {
                    let header = raw.baseAddress!.advanced(by: offset).assumingMemoryBound(to: nlmsghdr.self)
                    let length = Int(header.pointee.nlmsg_len)
                    guard length >= headerSize, offset + length <= received else { break }
                    let message = NetlinkMessage(
                        header: header, payload: UnsafeRawBufferPointer(start: raw.baseAddress! + offset + headerSize, count: length - headerSize))
                    do throws(Failure) {
                        if try handle(message) {
                            finished = true
                            break
                        }
                    } catch {
                        failure = error
                        break
                    }
                    offset += (length + 3) & ~3
                }
            }
            if let failure { throw failure }
            if finished { return }
        }
    }

    /// Runs `open` on a short-lived thread that joins the network namespace at `path` (e.g.
    /// `/run/netns/NAME`): the socket it opens keeps talking to that namespace, while the calling thread
    /// and the process stay where they are. For tests and benchmarks.
    public static func inNetworkNamespace<T: Sendable>(_ path: String, _ open: @escaping @Sendable () throws -> T) throws -> T {
        let outcome = Mutex<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            let descriptor = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            defer { if descriptor >= 0 { Glibc.close(descriptor) } }
            guard descriptor >= 0, ferry_setns_net(descriptor) == 0 else {
                let error = SystemError("setns \(path)", errno)
                outcome.withLock { $0 = .failure(error) }
                return
            }
            let result = Result { try open() }
            outcome.withLock { $0 = result }
        }
        thread.start()
        done.wait()
        return try outcome.withLock({ $0 })!.get()
    }
}

/// One message of a received datagram; valid during the `receive` callback only.
public struct NetlinkMessage {
    public let header: UnsafePointer<nlmsghdr>
    /// What follows the header.
    public let payload: UnsafeRawBufferPointer

    public var type: UInt16 { header.pointee.nlmsg_type }
    public var flags: UInt16 { header.pointee.nlmsg_flags }
    public var sequence: UInt32 { header.pointee.nlmsg_seq }

    /// For an NLMSG_ERROR message: the errno it reports (positive), 0 for an acknowledgement.
    public var errorCode: Int32? {
        guard Int32(type) == NLMSG_ERROR, payload.count >= 4 else { return nil }
        return -payload.loadUnaligned(as: Int32.self)
    }

    public var isDone: Bool { Int32(type) == NLMSG_DONE }

    /// The route attributes after a fixed `headerSize`-byte family header (`struct rtmsg`, `nfgenmsg`).
    public func attributes(after headerSize: Int) -> NetlinkAttributes {
        NetlinkAttributes(payload.count > headerSize ? UnsafeRawBufferPointer(rebasing: payload[headerSize...]) : UnsafeRawBufferPointer(start: nil, count: 0))
    }
}

/// Netlink attributes (type, length, value, padded to 4 bytes) read in place: the first of each type.
public struct NetlinkAttributes {
    private var values: [UInt16: UnsafeRawBufferPointer] = [:]

    public init(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        while offset + 4 <= bytes.count {
            let length = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            // The nested and byte-order flags sit in the type's top bits.
            let type = bytes.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self) & 0x3fff
            guard length >= 4, offset + length <= bytes.count else { break }
            if values[type] == nil { values[type] = UnsafeRawBufferPointer(rebasing: bytes[(offset + 4)..<(offset + length)]) }
            offset += (length + 3) & ~3
        }
    }

    public subscript(_ type: UInt16) -> UnsafeRawBufferPointer? { values[type] }

    /// A nested attribute's own attributes.
    public func nested(_ type: UInt16) -> NetlinkAttributes? { values[type].map(NetlinkAttributes.init) }
}

/// Builds one netlink message with libmnl: header, family header, attributes (nested ones too).
public final class NetlinkMessageBuilder {
    private let storage: UnsafeMutableRawPointer
    private let capacity: Int
    private let header: UnsafeMutablePointer<nlmsghdr>

    /// A message of `type` with `flags`, numbered `sequence`, starting with the fixed family header
    /// `familyHeader` (`struct rtmsg`, `nfgenmsg`).
    public init(type: UInt16, flags: UInt16, sequence: UInt32, familyHeader: [UInt8], capacity: Int = 4096) {
        self.capacity = capacity
        storage = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: capacity)
        header = mnl_nlmsg_put_header(storage)
        header.pointee.nlmsg_type = type
        header.pointee.nlmsg_flags = flags
        header.pointee.nlmsg_seq = sequence
        let extra = mnl_nlmsg_put_extra_header(header, familyHeader.count)!
        familyHeader.withUnsafeBytes { extra.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    deinit { storage.deallocate() }

    /// Adds an attribute holding `bytes` as they are (network-order values are the caller's to order).
    public func put(_ type: UInt16, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { _ = mnl_attr_put_check(header, capacity, type, $0.count, $0.baseAddress) }
    }

    public func put(_ type: UInt16, u8 value: UInt8) { _ = mnl_attr_put_u8_check(header, capacity, type, value) }

    /// Adds a 32-bit attribute in host order (NLA_U32).
    public func put(_ type: UInt16, u32 value: UInt32) { _ = mnl_attr_put_u32_check(header, capacity, type, value) }

    /// Adds a nested attribute whose content `body` puts.
    public func nest(_ type: UInt16, _ body: () -> Void) {
        guard let start = mnl_attr_nest_start_check(header, capacity, type) else { return }
        body()
        mnl_attr_nest_end(header, start)
    }

    /// The message's sequence number.
    public var sequence: UInt32 { header.pointee.nlmsg_seq }

    /// The message so far.
    public var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: storage, count: Int(header.pointee.nlmsg_len))) }
}
