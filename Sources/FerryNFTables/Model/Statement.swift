import FerryCore

/// One statement of a rule, at the level nft's syntax speaks (`ip daddr 10.0.0.1`, `dnat to …`).
/// Each statement renders as nft text (`Renderer`), lowers to netlink expressions (`Lowering`), and is
/// interpreted by the packet tracer, so those three can never disagree about what a rule means.
public enum Statement: Sendable, Hashable {
    /// `ip daddr 10.0.0.1` / `ip saddr != 10.0.0.1`.
    case matchAddress(KeyField, IPAddress, equal: Bool)
    /// `ip saddr != 10.244.0.0/16`.
    case matchPrefix(KeyField, CIDR, equal: Bool)
    /// `meta l4proto tcp`.
    case matchL4Protocol(L4Protocol)
    /// `tcp dport 80` (implies the protocol).
    case matchPort(L4Protocol, Int)
    /// `fib daddr type local` / `fib saddr type local`.
    case matchLocalAddress(KeyField)
    /// `ip daddr != 127.0.0.0/8` / `ip6 daddr != ::1`.
    case matchNotLoopbackDestination
    /// `ct state new`.
    case matchNewConnection
    /// `meta mark & 0x00004000 == 0x00000000`.
    case matchMarkClear(UInt32)
    /// `ip saddr @set`, `ip saddr . ip daddr @set`.
    case lookup([KeyField], set: String)
    /// `ip daddr . meta l4proto . th dport vmap @map`.
    case verdictMap([KeyField], map: String)
    /// `numgen random mod N 0`: matches with probability 1/N. A service chain with ClientIP affinity
    /// balances over its N endpoint chains with rules `numgen random mod (N-i) 0 goto endpoint-i`, the
    /// last one unconditional, which is uniform (the others use `dnatMap`). (An anonymous `numgen … vmap { … }` per service would be one set per service, and the
    /// kernel binds every anonymous set by walking the whole transaction: quadratic in a big batch.)
    case matchRandom(modulus: Int)
    /// `dnat ip to ip daddr . meta l4proto . th dport . numgen random mod N map @map`: picks slot
    /// 0..N-1 at random and rewrites to the endpoint the map holds for the packet's key and that slot.
    /// The key fields come from the packet; the slot is appended. A missing key leaves the rule (the
    /// next rule runs).
    case dnatMap([KeyField], modulus: Int, map: String)
    /// `meta mark set meta mark | 0x00004000`.
    case setMark(UInt32)
    /// `meta mark set meta mark ^ 0x00004000`.
    case toggleMark(UInt32)
    /// `meta l4proto tcp dnat to 10.244.1.2:80`.
    case dnat(IPAddress, port: Int, protocol: L4Protocol)
    /// `masquerade fully-random`.
    case masqueradeFullyRandom
    /// `reject with tcp reset` (TCP only).
    case rejectTCPReset
    /// `reject`: ICMP / ICMPv6 port unreachable.
    case reject
    /// `update @set { ip saddr }`: add or refresh the packet's key in a dynamic set.
    case updateSet(KeyField, set: String)
    /// `counter`.
    case counter
    /// `accept`, `drop`, `return`, `jump chain`, `goto chain`.
    case verdict(Verdict)
    /// A whole rule read back from the kernel, known by the fingerprint Ferry stamped it with
    /// (`RuleFingerprint`). Never written.
    case unparsed(String)

    /// The chains this statement may continue in.
    public var referencedChains: [String] {
        switch self {
        case .verdict(let verdict): return verdict.chain.map { [$0] } ?? []
        default: return []
        }
    }

    /// The named sets this statement reads or writes.
    public var referencedSets: [String] {
        switch self {
        case .lookup(_, let set), .updateSet(_, let set): return [set]
        case .verdictMap(_, let map), .dnatMap(_, _, let map): return [map]
        default: return []
        }
    }

    public func text(_ family: NFTFamily) -> String {
        switch self {
        case .matchAddress(let field, let address, let equal):
            return "\(field.expressionText(family)) \(equal ? "" : "!= ")\(address)"
        case .matchPrefix(let field, let prefix, let equal):
            // A full-length prefix is one address, and nft prints it as one.
            return "\(field.expressionText(family)) \(equal ? "" : "!= ")\(prefix.isHost ? "\(prefix.address)" : "\(prefix)")"
        case .matchL4Protocol(let l4):
            return "meta l4proto \(l4.rawValue.lowercased())"
        case .matchPort(let l4, let port):
            return "\(l4.rawValue.lowercased()) dport \(port)"
        case .matchLocalAddress(let field):
            return "fib \(field == .sourceAddress ? "saddr" : "daddr") type local"
        case .matchNotLoopbackDestination:
            return family == .ip ? "ip daddr != 127.0.0.0/8" : "ip6 daddr != ::1"
        case .matchNewConnection:
            return "ct state new"
        case .matchMarkClear(let mask):
            return "meta mark & \(hex(mask)) == 0x00000000"
        case .lookup(let key, let set):
            return "\(key.map { $0.expressionText(family) }.joined(separator: " . ")) @\(set)"
        case .verdictMap(let key, let map):
            return "\(key.map { $0.expressionText(family) }.joined(separator: " . ")) vmap @\(map)"
        case .matchRandom(let modulus):
            return "numgen random mod \(modulus) 0"
        case .dnatMap(let key, let modulus, let map):
            let fields = key.map { $0.expressionText(family) } + ["numgen random mod \(modulus)"]
            return "dnat \(family.rawValue) to \(fields.joined(separator: " . ")) map @\(map)"
        case .setMark(let bits):
            return "meta mark set meta mark | \(hex(bits))"
        case .toggleMark(let bits):
            return "meta mark set meta mark ^ \(hex(bits))"
        case .dnat(let address, let port, let l4):
            return "meta l4proto \(l4.rawValue.lowercased()) dnat to \(address.joined(port: port))"
        case .masqueradeFullyRandom:
            return "masquerade fully-random"
        case .rejectTCPReset:
            return "reject with tcp reset"
        case .reject:
            return "reject"
        case .updateSet(let field, let set):
            return "update @\(set) { \(field.expressionText(family)) }"
        case .counter:
            return "counter"
        case .verdict(let verdict):
            return verdict.description
        case .unparsed(let text):
            return text
        }
    }

    private func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}

/// A rule: statements evaluated left to right; the rule stops at the first match that fails.
public struct Rule: Sendable, Hashable {
    public var statements: [Statement]

    public init(_ statements: [Statement]) { self.statements = statements }

    public func text(_ family: NFTFamily) -> String { statements.map { $0.text(family) }.joined(separator: " ") }
}
