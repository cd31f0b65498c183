import CMnl
import CNftnl
import FerryCore
import FerrySystem
import Glibc

/// UDP flows to forget after their endpoint went away: conntrack keeps sending a client's datagrams to
/// the endpoint it first chose, so without this a UDP client stays pinned to a dead backend
/// (kube-proxy's most reported bug).
public struct StaleFlow: Sendable, Hashable {
    /// The original destination: a service frontend address, or `nil` for a NodePort (any local address).
    public var destination: IPAddress?
    public var destinationPort: Int
    /// The endpoint the flow was DNATed to (its reply source), or `nil` for any endpoint.
    public var endpoint: IPAddress?
    public var endpointPort: Int?
    public var family: IPFamily

    public init(destination: IPAddress?, destinationPort: Int, endpoint: IPAddress?, endpointPort: Int?, family: IPFamily) {
        self.destination = destination
        self.destinationPort = destinationPort
        self.endpoint = endpoint
        self.endpointPort = endpointPort
        self.family = family
    }

    func matches(_ entry: ConntrackEntry) -> Bool {
        guard entry.protocolNumber == L4Protocol.udp.number, entry.originalDestinationPort == destinationPort else { return false }
        if let destination, entry.originalDestination != destination { return false }
        if let endpoint, entry.replySource != endpoint { return false }
        if let endpointPort, entry.replySourcePort != endpointPort { return false }
        return true
    }
}

/// Deletes conntrack entries: the kernel's (`NetlinkConntrack`) or a recording twin for tests.
public protocol ConntrackCleaner: AnyObject {
    /// Deletes every UDP entry matching one of `flows`; returns how many were deleted.
    func delete(_ flows: [StaleFlow]) throws(NetfilterError) -> Int
}

/// Records what it was asked to delete.
public final class RecordingConntrack: ConntrackCleaner {
    public private(set) var requests: [[StaleFlow]] = []
    public init() {}
    public func delete(_ flows: [StaleFlow]) throws(NetfilterError) -> Int {
        requests.append(flows)
        return 0
    }
}

/// One conntrack entry, as much of it as matching and deleting need.
struct ConntrackEntry: Hashable {
    var family: IPFamily
    var protocolNumber: UInt8
    var originalSource: IPAddress
    var originalDestination: IPAddress
    var originalSourcePort: Int
    var originalDestinationPort: Int
    var replySource: IPAddress?
    var replySourcePort: Int?
    var zone: UInt16?
}

/// conntrack over ctnetlink: dumps the UDP entries and deletes the matching ones by their original tuple.
public final class NetlinkConntrack: ConntrackCleaner, @unchecked Sendable {
    private let socket: NetlinkSocket

    // ctnetlink attribute numbers (linux/netfilter/nfnetlink_conntrack.h).
    private enum Attribute {
        static let tupleOriginal: UInt16 = 1, tupleReply: UInt16 = 2, zone: UInt16 = 18
        static let tupleIP: UInt16 = 1, tupleProtocol: UInt16 = 2
        static let ipv4Source: UInt16 = 1, ipv4Destination: UInt16 = 2, ipv6Source: UInt16 = 3, ipv6Destination: UInt16 = 4
        static let protocolNumber: UInt16 = 1, sourcePort: UInt16 = 2, destinationPort: UInt16 = 3
        /// CTA_FILTER and its CTA_FILTER_ORIG_FLAGS; the flag for "match the original tuple's L4 protocol"
        /// (CTA_FILTER_F_CTA_PROTO_NUM, from the kernel's nf_internals.h: not in the UAPI headers).
        static let filter: UInt16 = 25, filterOriginalFlags: UInt16 = 1
        static let filterOnProtocolNumber: UInt32 = 1 << 3
    }

    public init() throws(NetfilterError) {
        do {
            socket = try NetlinkSocket(bus: NETLINK_NETFILTER, name: "conntrack")
        } catch {
            throw NetfilterError(error)
        }
    }

    public func delete(_ flows: [StaleFlow]) throws(NetfilterError) -> Int {
        guard !flows.isEmpty else { return 0 }
        var deleted = 0
        for family in Set(flows.map(\.family)) {
            let wanted = flows.filter { $0.family == family }
            let victims = try dump(family).filter { entry in wanted.contains { $0.matches(entry) } }
            deleted += try deleteEntries(victims)
        }
        return deleted
    }

    // MARK: Messages

    /// A ctnetlink message: the netlink header and `struct nfgenmsg` (family, version, resource id).
    private func message(type: UInt32, flags: Int32, family: IPFamily) -> NetlinkMessageBuilder {
        NetlinkMessageBuilder(
            type: UInt16((NFNL_SUBSYS_CTNETLINK << 8) | Int32(type)), flags: UInt16(flags), sequence: socket.nextSequence(),
            familyHeader: [UInt8(family == .ipv4 ? AF_INET : AF_INET6), UInt8(NFNETLINK_V0), 0, 0])
    }

    private func dump(_ family: IPFamily) throws(NetfilterError) -> [ConntrackEntry] {
        let request = message(type: IPCTNL_MSG_CT_GET.rawValue, flags: NLM_F_REQUEST | NLM_F_DUMP, family: family)
        // UDP entries only, chosen by the kernel (Linux 5.9 and later; an older kernel ignores the filter
        // and sends everything, which the caller filters anyway). Why: a node's table is mostly TCP, and
        // receiving and parsing all of it took 280 ms at 31,000 entries, inside the sync, on every
        // endpoint change of a UDP service (`ferry bench`'s change-to-traffic saw the next change wait
        // 500 ms for it).
        request.nest(Attribute.filter) { request.put(Attribute.filterOriginalFlags, u32: Attribute.filterOnProtocolNumber) }
        request.nest(Attribute.tupleOriginal) {
            request.nest(Attribute.tupleProtocol) { request.put(Attribute.protocolNumber, u8: UInt8(IPPROTO_UDP)) }
        }
        let number = request.sequence
        try send(request.bytes)
        var entries: [ConntrackEntry] = []
        try receive { message throws(NetfilterError) -> Bool in
            guard message.sequence == number else { return false }
            if message.isDone { return true }
            if let code = message.errorCode {
                if code == 0 { return true }
                throw NetlinkNetfilter.kernelError(code, operation: nil, count: 1)
            }
            if let entry = parseEntry(message.attributes(after: 4), family: family) { entries.append(entry) }
            return false
        }
        return entries
    }

    private func deleteEntries(_ entries: [ConntrackEntry]) throws(NetfilterError) -> Int {
        guard !entries.isEmpty else { return 0 }
        var batch: [UInt8] = []
        var numbers: Set<UInt32> = []
        for entry in entries {
            let request = message(type: IPCTNL_MSG_CT_DELETE.rawValue, flags: NLM_F_REQUEST | NLM_F_ACK, family: entry.family)
            numbers.insert(request.sequence)
            let v4 = entry.family == .ipv4
            request.nest(Attribute.tupleOriginal) {
                request.nest(Attribute.tupleIP) {
                    request.put(v4 ? Attribute.ipv4Source : Attribute.ipv6Source, entry.originalSource.bytes)
                    request.put(v4 ? Attribute.ipv4Destination : Attribute.ipv6Destination, entry.originalDestination.bytes)
                }
                request.nest(Attribute.tupleProtocol) {
                    request.put(Attribute.protocolNumber, u8: entry.protocolNumber)
                    request.put(Attribute.sourcePort, portBytes(entry.originalSourcePort))
                    request.put(Attribute.destinationPort, portBytes(entry.originalDestinationPort))
                }
            }
            if let zone = entry.zone, zone != 0 { request.put(Attribute.zone, portBytes(Int(zone))) }
            batch += request.bytes
        }
        try send(batch)
        var deleted = 0
        var pending = numbers
        try receive { message throws(NetfilterError) -> Bool in
            guard let code = message.errorCode, pending.remove(message.sequence) != nil else { return pending.isEmpty }
            if code == 0 { deleted += 1 }
            // ENOENT: the entry expired meanwhile; nothing to do.
            return pending.isEmpty
        }
        return deleted
    }

    // MARK: Parsing

    private func parseTuple(_ tuple: NetlinkAttributes, family: IPFamily) -> (IPAddress, IPAddress, UInt8, Int, Int)? {
        guard let ip = tuple.nested(Attribute.tupleIP), let l4 = tuple.nested(Attribute.tupleProtocol) else { return nil }
        let (sourceKey, destinationKey) =
            family == .ipv4 ? (Attribute.ipv4Source, Attribute.ipv4Destination) : (Attribute.ipv6Source, Attribute.ipv6Destination)
        guard let source = ip[sourceKey].flatMap(address), let destination = ip[destinationKey].flatMap(address),
            let number = l4[Attribute.protocolNumber]?.first
        else { return nil }
        let port = { (value: UnsafeRawBufferPointer?) -> Int in
            guard let value, value.count >= 2 else { return 0 }
            return Int(value[0]) << 8 | Int(value[1])
        }
        return (source, destination, number, port(l4[Attribute.sourcePort]), port(l4[Attribute.destinationPort]))
    }

    private func address(_ bytes: UnsafeRawBufferPointer) -> IPAddress? {
        let array = Array(bytes)
        if array.count == 4 { return .v4(array.reduce(0) { $0 << 8 | UInt32($1) }) }
        if array.count == 16 {
            return .v6(high: array[0..<8].reduce(0) { $0 << 8 | UInt64($1) }, low: array[8..<16].reduce(0) { $0 << 8 | UInt64($1) })
        }
        return nil
    }

    private func parseEntry(_ top: NetlinkAttributes, family: IPFamily) -> ConntrackEntry? {
        guard let original = top.nested(Attribute.tupleOriginal).flatMap({ parseTuple($0, family: family) }) else { return nil }
        let reply = top.nested(Attribute.tupleReply).flatMap { parseTuple($0, family: family) }
        let zone = top[Attribute.zone].flatMap { value -> UInt16? in value.count >= 2 ? UInt16(value[0]) << 8 | UInt16(value[1]) : nil }
        return ConntrackEntry(
            family: family, protocolNumber: original.2, originalSource: original.0, originalDestination: original.1,
            originalSourcePort: original.3, originalDestinationPort: original.4, replySource: reply?.0, replySourcePort: reply?.3,
            zone: zone)
    }

    // MARK: Socket

    private func send(_ bytes: [UInt8]) throws(NetfilterError) {
        do {
            try socket.send(bytes)
        } catch {
            throw NetfilterError(error)
        }
    }

    private func receive(_ handle: (NetlinkMessage) throws(NetfilterError) -> Bool) throws(NetfilterError) {
        try socket.receive(handle, socketError: NetfilterError.init)
    }
}
