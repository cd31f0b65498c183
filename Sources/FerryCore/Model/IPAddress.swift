#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The address family of an IP address, spelled as Kubernetes spells it (`IPv4`, `IPv6`).
public enum IPFamily: String, Sendable, Hashable, Codable, CaseIterable {
    case ipv4 = "IPv4"
    case ipv6 = "IPv6"
}

/// An IPv4 or IPv6 address held as plain integers, so it can be compared, hashed and sorted cheaply.
public enum IPAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// An IPv4 address in host byte order.
    case v4(UInt32)
    /// An IPv6 address as its high and low 64 bits, in host byte order.
    case v6(high: UInt64, low: UInt64)

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text; `nil` when the text is not an address.
    /// Leading zeros in IPv4 octets are rejected, as Kubernetes' validation does.
    public init?(_ text: some StringProtocol) {
        if let v4 = IPAddress.parseIPv4(text.utf8) {
            self = .v4(v4)
            return
        }
        guard text.contains(":"), text.utf8.count <= 45 else { return nil }
        var storage = in6_addr()
        let ok = String(text).withCString { inet_pton(AF_INET6, $0, &storage) } == 1
        guard ok else { return nil }
        let bytes = withUnsafeBytes(of: storage) { Array($0) }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for index in 0..<8 { high = high << 8 | UInt64(bytes[index]) }
        for index in 8..<16 { low = low << 8 | UInt64(bytes[index]) }
        self = .v6(high: high, low: low)
    }

    /// An address from its network-byte-order bytes (4 or 16); `nil` for any other length.
    public init?(bytes: some Collection<UInt8>) {
        switch bytes.count {
        case 4:
            self = .v4(bytes.reduce(0) { $0 << 8 | UInt32($1) })
        case 16:
            let all = Array(bytes)
            self = .v6(
                high: all[0..<8].reduce(0) { $0 << 8 | UInt64($1) }, low: all[8..<16].reduce(0) { $0 << 8 | UInt64($1) })
        default:
            return nil
        }
    }

    private static func parseIPv4(_ utf8: some Collection<UInt8>) -> UInt32? {
        var result: UInt32 = 0
        var octet: UInt32 = 0
        var digits = 0
        var dots = 0
        var leadingZero = false
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                if leadingZero { return nil }
                if digits == 0 && byte == UInt8(ascii: "0") { leadingZero = true }
                octet = octet * 10 + UInt32(byte - UInt8(ascii: "0"))
                digits += 1
                if digits > 3 || octet > 255 { return nil }
            case UInt8(ascii: "."):
                guard digits > 0, dots < 3 else { return nil }
                result = result << 8 | octet
                octet = 0
                digits = 0
                dots += 1
                leadingZero = false
            default:
                return nil
            }
        }
        guard dots == 3, digits > 0 else { return nil }
        return result << 8 | octet
    }

    /// The family of this address.
    public var family: IPFamily {
        switch self {
        case .v4: return .ipv4
        case .v6: return .ipv6
        }
    }

    /// The address in network byte order (4 or 16 bytes).
    public var bytes: [UInt8] {
        switch self {
        case .v4(let value):
            return [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
        case .v6(let high, let low):
            return (0..<8).map { UInt8(high >> (56 - 8 * UInt64($0)) & 0xff) }
                + (0..<8).map { UInt8(low >> (56 - 8 * UInt64($0)) & 0xff) }
        }
    }

    /// Canonical text: dotted quad, or RFC 5952 compressed IPv6.
    public var description: String {
        switch self {
        case .v4(let value):
            return "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
        case .v6:
            var storage = in6_addr()
            let raw = bytes
            withUnsafeMutableBytes(of: &storage) { buffer in
                for index in 0..<16 { buffer[index] = raw[index] }
            }
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            _ = inet_ntop(AF_INET6, &storage, &text, socklen_t(text.count))
            return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    /// `host:port`, with IPv6 in brackets, as Go's `net.JoinHostPort` writes it.
    public func joined(port: Int) -> String {
        switch self {
        case .v4: return "\(self):\(port)"
        case .v6: return "[\(self)]:\(port)"
        }
    }

    /// Whether this is the unspecified address (0.0.0.0 or ::), "all addresses" in a bind address.
    public var isUnspecified: Bool {
        switch self {
        case .v4(let value): return value == 0
        case .v6(let high, let low): return high == 0 && low == 0
        }
    }

    /// Whether this is a loopback address (127.0.0.0/8 or ::1).
    public var isLoopback: Bool {
        switch self {
        case .v4(let value): return value >> 24 == 127
        case .v6(let high, let low): return high == 0 && low == 1
        }
    }

    /// The special range this address is in, as the API server names it when it refuses such an
    /// address for a Service's externalIPs (`ValidateNonSpecialIP`); `nil` for an ordinary address.
    public var specialRange: String? {
        if isUnspecified { return "unspecified (0.0.0.0, ::)" }
        if isLoopback { return "in the loopback range (127.0.0.0/8, ::1/128)" }
        switch self {
        case .v4(let value):
            if value >> 16 == 0xA9FE { return "in the link-local range (169.254.0.0/16, fe80::/10)" }
            if value >> 28 == 0xE { return "in the multicast range (224.0.0.0/4, ff00::/8)" }
        case .v6(let high, _):
            if high >> 54 == 0x3FA { return "in the link-local range (169.254.0.0/16, fe80::/10)" }
            if high >> 56 == 0xFF { return "in the multicast range (224.0.0.0/4, ff00::/8)" }
        }
        return nil
    }

    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs, rhs) {
        case (.v4(let a), .v4(let b)): return a < b
        case (.v4, .v6): return true
        case (.v6, .v4): return false
        case (.v6(let ah, let al), .v6(let bh, let bl)): return (ah, al) < (bh, bl)
        }
    }
}

extension IPAddress {
    /// This address plus `offset` (wrapping within the family's address space).
    public func adding(_ offset: UInt64) -> IPAddress {
        switch self {
        case .v4(let value): return .v4(value &+ UInt32(truncatingIfNeeded: offset))
        case .v6(let high, let low):
            let (sum, overflow) = low.addingReportingOverflow(offset)
            return .v6(high: overflow ? high &+ 1 : high, low: sum)
        }
    }
}

/// An IP prefix such as `10.244.0.0/16` or `fd00::/64`.
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    /// The network address (host bits cleared).
    public let address: IPAddress
    /// The prefix length in bits.
    public let prefixLength: Int

    /// Parses `address/length`; `nil` when either part is invalid.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPAddress(parts[0]), let length = Int(parts[1]) else { return nil }
        let maximum = address.family == .ipv4 ? 32 : 128
        guard (0...maximum).contains(length) else { return nil }
        self.prefixLength = length
        self.address = CIDR.masked(address, length)
    }

    /// The prefix holding only `address` (/32 or /128).
    public init(host address: IPAddress) {
        self.address = address
        self.prefixLength = address.family == .ipv4 ? 32 : 128
    }

    /// Whether the prefix is a single address.
    public var isHost: Bool { prefixLength == (address.family == .ipv4 ? 32 : 128) }

    private static func masked(_ address: IPAddress, _ length: Int) -> IPAddress {
        switch address {
        case .v4(let value):
            let mask: UInt32 = length == 0 ? 0 : UInt32.max << (32 - length)
            return .v4(value & mask)
        case .v6(let high, let low):
            let highMask: UInt64 = length >= 64 ? .max : (length == 0 ? 0 : UInt64.max << (64 - length))
            let lowMask: UInt64 = length <= 64 ? 0 : (length == 128 ? .max : UInt64.max << (128 - length))
            return .v6(high: high & highMask, low: low & lowMask)
        }
    }

    /// Whether `other` lies inside this prefix.
    public func contains(_ other: IPAddress) -> Bool {
        guard other.family == address.family else { return false }
        return CIDR.masked(other, prefixLength) == address
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

/// Splits `10.0.0.1:80` or `[fd00::1]:80`; `nil` when malformed or the port is out of range.
public func parseHostPort(_ text: String) -> (IPAddress, Int)? {
    let host: Substring
    let portText: Substring
    if text.hasPrefix("[") {
        guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
        host = text[text.index(after: text.startIndex)..<close]
        portText = text[text.index(close, offsetBy: 2)...]
    } else {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        host = text[..<colon]
        // `fd00::1:80` is itself an IPv6 address: IPv6 needs brackets to carry a port.
        guard !host.contains(":") else { return nil }
        portText = text[text.index(after: colon)...]
    }
    guard let address = IPAddress(host), let port = Int(portText), (1...65_535).contains(port) else { return nil }
    return (address, port)
}
