import CMnl
import FerryCore
import FerrySystem
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

    private let socket: NetlinkSocket

    public init() throws(SystemError) {
        socket = try NetlinkSocket(bus: NETLINK_ROUTE, name: "rtnetlink", receiveBufferBytes: 1 << 20, bufferBytes: 1 << 16)
    }

    public func list() throws(SystemError) -> Set<IPAddress> {
        var result: Set<IPAddress> = []
        for family in [AF_INET, AF_INET6] {
            let request = message(type: UInt16(RTM_GETROUTE), flags: NLM_F_REQUEST | NLM_F_DUMP, family: UInt8(family), prefixLength: 0)
            try exchange(request) { reply in
                guard reply.type == UInt16(RTM_NEWROUTE), reply.payload.count >= 12 else { return }
                // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
                let route = reply.payload
                guard route[5] == NetlinkRouteTable.routeProtocol, route[7] == UInt8(RTN_LOCAL),
                    route[4] == UInt8(RT_TABLE_LOCAL.rawValue), route[1] == (family == AF_INET ? 32 : 128),
                    let destination = reply.attributes(after: 12)[UInt16(RTA_DST.rawValue)],
                    let address = IPAddress(bytes: destination)
                else { return }
                result.insert(address)
            }
        }
        return result
    }

    public func add(_ address: IPAddress) throws(SystemError) {
        try change(address, type: UInt16(RTM_NEWROUTE), flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
    }

    public func delete(_ address: IPAddress) throws(SystemError) {
        do {
            try change(address, type: UInt16(RTM_DELROUTE), flags: NLM_F_REQUEST | NLM_F_ACK)
        } catch where error.errno == ESRCH {
            // Already gone.
        }
    }

    private func change(_ address: IPAddress, type: UInt16, flags: Int32) throws(SystemError) {
        let request = message(
            type: type, flags: flags, family: UInt8(address.family == .ipv4 ? AF_INET : AF_INET6), prefixLength: UInt8(address.bytes.count * 8))
        request.put(UInt16(RTA_DST.rawValue), address.bytes)
        request.put(UInt16(RTA_OIF.rawValue), withUnsafeBytes(of: Int32(if_nametoindex("lo"))) { Array($0) })
        try exchange(request) { _ in }
    }

    /// A route message: the netlink header and `struct rtmsg` for a host route in the local table,
    /// marked as Ferry's.
    private func message(type: UInt16, flags: Int32, family: UInt8, prefixLength: UInt8) -> NetlinkMessageBuilder {
        NetlinkMessageBuilder(
            type: type, flags: UInt16(flags), sequence: socket.nextSequence(),
            familyHeader: [
                family, prefixLength, 0, 0, UInt8(RT_TABLE_LOCAL.rawValue), NetlinkRouteTable.routeProtocol, UInt8(RT_SCOPE_HOST.rawValue),
                UInt8(RTN_LOCAL), 0, 0, 0, 0,
            ])
    }

    /// Sends `request` and reads its replies until its ACK or the end of its dump; an error reply throws.
    private func exchange(_ request: NetlinkMessageBuilder, _ handle: (NetlinkMessage) -> Void) throws(SystemError) {
        try socket.send(request.bytes)
        let number = request.sequence
        try socket.receive(
            { (reply: NetlinkMessage) throws(SystemError) -> Bool in
                guard reply.sequence == number else { return false }
                if reply.isDone { return true }
                if let code = reply.errorCode {
                    if code != 0 { throw SystemError("rtnetlink", code) }
                    return true
                }
                handle(reply)
                return false
            }, socketError: { $0 })
    }
}
