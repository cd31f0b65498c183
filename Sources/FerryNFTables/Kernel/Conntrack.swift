import CMnl
import CNftnl
import FerryCore
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
    private let socket: OpaquePointer
    private var sequence = UInt32(truncatingIfNeeded: time(nil))
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)

    // ctnetlink attribute numbers (linux/netfilter/nfnetlink_conntrack.h).
    private enum Attribute {
        static let tupleOriginal: UInt16 = 1, tupleReply: UInt16 = 2, zone: UInt16 = 18
        static let tupleIP: UInt16 = 1, tupleProtocol: UInt16 = 2
        static let ipv4Source: UInt16 = 1, ipv4Destination: UInt16 = 2, ipv6Source: UInt16 = 3, ipv6Destination: UInt16 = 4
        static let protocolNumber: UInt16 = 1, sourcePort: UInt16 = 2, destinationPort: UInt16 = 3
    }

    public init() throws(NetfilterError) {
        guard let socket = mnl_socket_open(NETLINK_NETFILTER) else { throw NetlinkNetfilter.systemError("mnl_socket_open (conntrack)") }
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            mnl_socket_close(socket)
            throw NetlinkNetfilter.systemError("mnl_socket_bind (conntrack)")
        }
        self.socket = socket
        var size: Int32 = 8 << 20
        _ = setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        _ = setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { mnl_socket_close(socket) }

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

    private func header(type: UInt16, flags: UInt16, family: IPFamily) -> [UInt8] {
        sequence &+= 1
        var bytes = [UInt8](repeating: 0, count: 16)
        store(UInt16((NFNL_SUBSYS_CTNETLINK << 8) | Int32(type)), at: 4, in: &bytes)
        store(flags, at: 6, in: &bytes)
        store(sequence, at: 8, in: &bytes)
        // struct nfgenmsg: family, version, resource id (big endian).
        bytes += [UInt8(family == .ipv4 ? AF_INET : AF_INET6), UInt8(NFNETLINK_V0), 0, 0]
        return bytes
    }

    private func finish(_ message: inout [UInt8]) {
        store(UInt32(message.count), at: 0, in: &message)
        while message.count % 4 != 0 { message.append(0) }
    }

    private func attribute(_ type: UInt16, _ payload: [UInt8], nested: Bool = false) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 4)
        store(UInt16(4 + payload.count), at: 0, in: &bytes)
        store(nested ? type | UInt16(NLA_F_NESTED) : type, at: 2, in: &bytes)
        bytes += payload
        while bytes.count % 4 != 0 { bytes.append(0) }
        return bytes
    }

    private func dump(_ family: IPFamily) throws(NetfilterError) -> [ConntrackEntry] {
        var request = header(type: UInt16(IPCTNL_MSG_CT_GET.rawValue), flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP), family: family)
        finish(&request)
        let number = sequence
        try send(request)
        var entries: [ConntrackEntry] = []
        try receive { (type, seq, payload) throws(NetfilterError) -> Bool in
            guard seq == number else { return false }
            if type == UInt16(NLMSG_DONE) { return true }
            if type == UInt16(NLMSG_ERROR) {
                let code = payload.prefix(4).withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
                if code == 0 { return true }
                throw NetlinkNetfilter.kernelError(-code, operation: nil, count: 1)
            }
            if let entry = parseEntry(payload.dropFirst(4), family: family) { entries.append(entry) }
            return false
        }
        return entries
    }

    private func deleteEntries(_ entries: [ConntrackEntry]) throws(NetfilterError) -> Int {
        guard !entries.isEmpty else { return 0 }
        var batch: [UInt8] = []
        var numbers: Set<UInt32> = []
        for entry in entries {
            var message = header(
                type: UInt16(IPCTNL_MSG_CT_DELETE.rawValue), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK), family: entry.family)
            numbers.insert(sequence)
            let v4 = entry.family == .ipv4
            let ip =
                attribute(v4 ? Attribute.ipv4Source : Attribute.ipv6Source, entry.originalSource.bytes)
                + attribute(v4 ? Attribute.ipv4Destination : Attribute.ipv6Destination, entry.originalDestination.bytes)
            let l4 =
                attribute(Attribute.protocolNumber, [entry.protocolNumber])
                + attribute(Attribute.sourcePort, portBytes(entry.originalSourcePort))
                + attribute(Attribute.destinationPort, portBytes(entry.originalDestinationPort))
            message += attribute(
                Attribute.tupleOriginal,
                attribute(Attribute.tupleIP, ip, nested: true) + attribute(Attribute.tupleProtocol, l4, nested: true), nested: true)
            if let zone = entry.zone, zone != 0 { message += attribute(Attribute.zone, portBytes(Int(zone))) }
            finish(&message)
            batch += message
        }
        try send(batch)
        var deleted = 0
        var pending = numbers
        try receive { (type, seq, payload) throws(NetfilterError) -> Bool in
            guard type == UInt16(NLMSG_ERROR), pending.remove(seq) != nil else { return pending.isEmpty }
            let code = payload.prefix(4).withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
            if code == 0 { deleted += 1 }
            // ENOENT: the entry expired meanwhile; nothing to do.
            return pending.isEmpty
        }
        return deleted
    }

    // MARK: Parsing

    private func attributes(_ bytes: ArraySlice<UInt8>) -> [UInt16: ArraySlice<UInt8>] {
        var result: [UInt16: ArraySlice<UInt8>] = [:]
        var index = bytes.startIndex
        while index + 4 <= bytes.endIndex {
            let length = Int(UInt16(bytes[index]) | UInt16(bytes[index + 1]) << 8)
            let type = (UInt16(bytes[index + 2]) | UInt16(bytes[index + 3]) << 8) & 0x3fff
            guard length >= 4, index + length <= bytes.endIndex else { break }
            result[type] = bytes[(index + 4)..<(index + length)]
            index += (length + 3) & ~3
        }
        return result
    }

    private func parseTuple(_ bytes: ArraySlice<UInt8>, family: IPFamily) -> (IPAddress, IPAddress, UInt8, Int, Int)? {
        let tuple = attributes(bytes)
        guard let ipBytes = tuple[Attribute.tupleIP], let l4Bytes = tuple[Attribute.tupleProtocol] else { return nil }
        let ip = attributes(ipBytes)
        let l4 = attributes(l4Bytes)
        let (sourceKey, destinationKey) =
            family == .ipv4 ? (Attribute.ipv4Source, Attribute.ipv4Destination) : (Attribute.ipv6Source, Attribute.ipv6Destination)
        guard let source = ip[sourceKey].flatMap(address), let destination = ip[destinationKey].flatMap(address),
            let number = l4[Attribute.protocolNumber]?.first
        else { return nil }
        let port = { (value: ArraySlice<UInt8>?) -> Int in
            guard let value, value.count >= 2 else { return 0 }
            return Int(value[value.startIndex]) << 8 | Int(value[value.startIndex + 1])
        }
        return (source, destination, number, port(l4[Attribute.sourcePort]), port(l4[Attribute.destinationPort]))
    }

    private func address(_ bytes: ArraySlice<UInt8>) -> IPAddress? {
        let array = Array(bytes)
        if array.count == 4 { return .v4(array.reduce(0) { $0 << 8 | UInt32($1) }) }
        if array.count == 16 {
            return .v6(high: array[0..<8].reduce(0) { $0 << 8 | UInt64($1) }, low: array[8..<16].reduce(0) { $0 << 8 | UInt64($1) })
        }
        return nil
    }

    private func parseEntry(_ bytes: ArraySlice<UInt8>, family: IPFamily) -> ConntrackEntry? {
        let top = attributes(bytes)
        guard let original = top[Attribute.tupleOriginal].flatMap({ parseTuple($0, family: family) }) else { return nil }
        let reply = top[Attribute.tupleReply].flatMap { parseTuple($0, family: family) }
        let zone = top[Attribute.zone].flatMap { value -> UInt16? in
            value.count >= 2 ? UInt16(value[value.startIndex]) << 8 | UInt16(value[value.startIndex + 1]) : nil
        }
        return ConntrackEntry(
            family: family, protocolNumber: original.2, originalSource: original.0, originalDestination: original.1,
            originalSourcePort: original.3, originalDestinationPort: original.4, replySource: reply?.0, replySourcePort: reply?.3,
            zone: zone)
    }

    // MARK: Socket

    private func send(_ bytes: [UInt8]) throws(NetfilterError) {
        let sent = bytes.withUnsafeBytes { mnl_socket_sendto(socket, $0.baseAddress, $0.count) }
        guard sent == bytes.count else { throw NetlinkNetfilter.systemError("sendto (conntrack)") }
    }

    /// Receives messages until `handle` returns true; `handle` gets each message's type, sequence number and payload.
    private func receive(_ handle: (UInt16, UInt32, ArraySlice<UInt8>) throws(NetfilterError) -> Bool) throws(NetfilterError) {
        var local: [UInt8] = []
        swap(&local, &buffer)
        defer { swap(&local, &buffer) }
        while true {
            let received = local.withUnsafeMutableBytes { mnl_socket_recvfrom(socket, $0.baseAddress, $0.count) }
            guard received > 0 else { throw NetlinkNetfilter.systemError("recvfrom (conntrack)") }
            var offset = 0
            while offset + 16 <= received {
                let length = Int(load(UInt32.self, at: offset, in: local))
                guard length >= 16, offset + length <= received else { break }
                let type = load(UInt16.self, at: offset + 4, in: local)
                let number = load(UInt32.self, at: offset + 8, in: local)
                if try handle(type, number, local[(offset + 16)..<(offset + length)]) { return }
                offset += (length + 3) & ~3
            }
        }
    }
}

private func store<T: FixedWidthInteger>(_ value: T, at offset: Int, in bytes: inout [UInt8]) {
    withUnsafeBytes(of: value) { raw in
        for index in 0..<raw.count { bytes[offset + index] = raw[index] }
    }
}

private func load<T: FixedWidthInteger>(_ type: T.Type, at offset: Int, in bytes: [UInt8]) -> T {
    bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
}
