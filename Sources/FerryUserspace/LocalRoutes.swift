import CMnl
import FerryCore
import Glibc

/// How Ferry makes service addresses local without an interface per address: a `local` route per
/// address in the kernel's `local` table on `lo` (what `ip route add local 10.96.0.10/32 dev lo table
/// local proto 249` does). The kernel then delivers packets for the address to sockets bound to it,
/// whether they come from pods (routed through the node), from the node itself or from outside, and
/// `bind` accepts the address. Ferry's routes carry protocol number 249, so they can be listed and
/// removed without touching anyone else's (`ip route show table local proto 249`).
public protocol LocalRouteTable: AnyObject {
    /// The addresses Ferry has routes for.
    func list() throws(SystemError) -> Set<IPAddress>
    func add(_ address: IPAddress) throws(SystemError)
    func delete(_ address: IPAddress) throws(SystemError)
}

/// The in-memory twin of the routing table, for tests without root.
public final class InMemoryRouteTable: LocalRouteTable, @unchecked Sendable {
    public private(set) var addresses: Set<IPAddress> = []
    public init() {}
    public func list() throws(SystemError) -> Set<IPAddress> { addresses }
    public func add(_ address: IPAddress) throws(SystemError) { addresses.insert(address) }
    public func delete(_ address: IPAddress) throws(SystemError) { addresses.remove(address) }
}

/// Local routes over rtnetlink (libmnl).
public final class NetlinkRouteTable: LocalRouteTable, @unchecked Sendable {
    /// The `rtm_protocol` that marks Ferry's routes.
    public static let routeProtocol: UInt8 = 249

    private let socket: OpaquePointer
    private var sequence: UInt32 = 1

    public init() throws(SystemError) {
        guard let socket = mnl_socket_open(NETLINK_ROUTE) else { throw SystemError("mnl_socket_open(NETLINK_ROUTE)", errno) }
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let code = errno
            mnl_socket_close(socket)
            throw SystemError("mnl_socket_bind(NETLINK_ROUTE)", code)
        }
        self.socket = socket
    }

    deinit { mnl_socket_close(socket) }

    public func list() throws(SystemError) -> Set<IPAddress> {
        var result: Set<IPAddress> = []
        for family in [AF_INET, AF_INET6] {
            var message = header(type: UInt16(RTM_GETROUTE), flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP))
            message += routeMessage(family: UInt8(family), prefixLength: 0)
            finish(&message)
            try send(message)
            try receive { type, payload in
                guard type == UInt16(RTM_NEWROUTE), payload.count >= 12 else { return }
                let base = payload.startIndex
                let prefixLength = payload[base + 1]
                let table = payload[base + 4]
                let proto = payload[base + 5]
                let routeType = payload[base + 7]
                guard proto == NetlinkRouteTable.routeProtocol, routeType == UInt8(RTN_LOCAL),
                    table == UInt8(RT_TABLE_LOCAL.rawValue), prefixLength == (family == AF_INET ? 32 : 128)
                else { return }
                var offset = base + 12
                while offset + 4 <= payload.endIndex {
                    let length = Int(UInt16(payload[offset]) | UInt16(payload[offset + 1]) << 8)
                    let kind = UInt16(payload[offset + 2]) | UInt16(payload[offset + 3]) << 8
                    guard length >= 4, offset + length <= payload.endIndex else { break }
                    if kind == UInt16(RTA_DST.rawValue), let address = IPAddress(bytes: payload[(offset + 4)..<(offset + length)]) {
                        result.insert(address)
                    }
                    offset += (length + 3) & ~3
                }
            }
        }
        return result
    }

    public func add(_ address: IPAddress) throws(SystemError) {
        try change(address, type: UInt16(RTM_NEWROUTE), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE))
    }

    public func delete(_ address: IPAddress) throws(SystemError) {
        do {
            try change(address, type: UInt16(RTM_DELROUTE), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK))
        } catch  where error.errno == ESRCH {
            // Already gone.
        }
    }

    private func change(_ address: IPAddress, type: UInt16, flags: UInt16) throws(SystemError) {
        let family = address.family == .ipv4 ? AF_INET : AF_INET6
        var message = header(type: type, flags: flags)
        message += routeMessage(family: UInt8(family), prefixLength: UInt8(address.bytes.count * 8))
        message += attribute(UInt16(RTA_DST.rawValue), address.bytes)
        message += attribute(UInt16(RTA_OIF.rawValue), withUnsafeBytes(of: Int32(if_nametoindex("lo"))) { Array($0) })
        finish(&message)
        try send(message)
        try receive { _, _ in }
    }

    private func header(type: UInt16, flags: UInt16) -> [UInt8] {
        sequence &+= 1
        var bytes = [UInt8](repeating: 0, count: 16)
        withUnsafeBytes(of: type) { bytes.replaceSubrange(4..<6, with: $0) }
        withUnsafeBytes(of: flags) { bytes.replaceSubrange(6..<8, with: $0) }
        withUnsafeBytes(of: sequence) { bytes.replaceSubrange(8..<12, with: $0) }
        return bytes
    }

    /// `struct rtmsg`: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    private func routeMessage(family: UInt8, prefixLength: UInt8) -> [UInt8] {
        [
            family, prefixLength, 0, 0, UInt8(RT_TABLE_LOCAL.rawValue), NetlinkRouteTable.routeProtocol, UInt8(RT_SCOPE_HOST.rawValue),
            UInt8(RTN_LOCAL),
        ]
            + [0, 0, 0, 0]
    }

    private func attribute(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        var bytes = withUnsafeBytes(of: UInt16(4 + payload.count)) { Array($0) } + withUnsafeBytes(of: type) { Array($0) } + payload
        while bytes.count % 4 != 0 { bytes.append(0) }
        return bytes
    }

    private func finish(_ message: inout [UInt8]) {
        withUnsafeBytes(of: UInt32(message.count)) { message.replaceSubrange(0..<4, with: $0) }
    }

    private func send(_ bytes: [UInt8]) throws(SystemError) {
        let sent = bytes.withUnsafeBytes { mnl_socket_sendto(socket, $0.baseAddress, $0.count) }
        if sent < 0 { throw SystemError("sendto(NETLINK_ROUTE)", errno) }
    }

    /// Reads replies to the last request until its ACK or the end of its dump; an error reply throws.
    private func receive(_ handle: (UInt16, ArraySlice<UInt8>) -> Void) throws(SystemError) {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let received = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(socket, $0.baseAddress, $0.count) }
            if received < 0 {
                if errno == EINTR { continue }
                throw SystemError("recvfrom(NETLINK_ROUTE)", errno)
            }
            var offset = 0
            while offset + 16 <= received {
                let length = Int(buffer[offset..<(offset + 4)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
                let type = buffer[(offset + 4)..<(offset + 6)].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) }
                let seq = buffer[(offset + 8)..<(offset + 12)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
                guard length >= 16, offset + length <= received else { return }
                defer { offset += (length + 3) & ~3 }
                guard seq == sequence else { continue }
                switch Int32(type) {
                case NLMSG_DONE: return
                case NLMSG_ERROR:
                    let code = buffer[(offset + 16)..<(offset + 20)].withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
                    if code != 0 { throw SystemError("rtnetlink", -code) }
                    return
                default:
                    handle(type, buffer[(offset + 16)..<(offset + length)])
                }
            }
        }
    }
}
