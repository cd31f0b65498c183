import FerryCore

/// The nftables address families Ferry programs: one table for IPv4 services, one for IPv6.
public enum NFTFamily: String, Sendable, Hashable, CaseIterable, Comparable {
    case ip
    case ip6

    public var ipFamily: IPFamily { self == .ip ? .ipv4 : .ipv6 }

    public init(_ family: IPFamily) { self = family == .ipv4 ? .ip : .ip6 }

    public static func < (lhs: NFTFamily, rhs: NFTFamily) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Where a rule sends a packet when it matches.
public enum Verdict: Sendable, Hashable, CustomStringConvertible {
    case accept
    case drop
    case `return`
    case jump(String)
    case goto(String)

    public var description: String {
        switch self {
        case .accept: return "accept"
        case .drop: return "drop"
        case .return: return "return"
        case .jump(let chain): return "jump \(chain)"
        case .goto(let chain): return "goto \(chain)"
        }
    }

    /// The chain this verdict continues in, if any.
    public var chain: String? {
        switch self {
        case .jump(let chain), .goto(let chain): return chain
        default: return nil
        }
    }
}

/// A base chain's attachment to a netfilter hook.
public struct ChainHook: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable { case filter, nat }
    public enum Hook: String, Sendable, Hashable { case prerouting, input, forward, output, postrouting }

    public var kind: Kind
    public var hook: Hook
    public var priority: Int32

    public init(_ kind: Kind, _ hook: Hook, priority: Int32) {
        self.kind = kind
        self.hook = hook
        self.priority = priority
    }

    /// Standard priorities, as nft names them.
    public static let dstnat: Int32 = -100
    public static let srcnat: Int32 = 100

    /// `type nat hook prerouting priority dstnat; policy accept;` as `nft list` prints it.
    public var text: String {
        "type \(kind.rawValue) hook \(hook.rawValue) priority \(ChainHook.priorityText(priority, hook: hook)); policy accept;"
    }

    /// nft names a standard priority only on the hooks it belongs to: `dstnat` on prerouting, `srcnat`
    /// on postrouting, `filter` everywhere; anything else is a number.
    static func priorityText(_ value: Int32, hook: Hook) -> String {
        var names: [(String, Int32)] = [("filter", 0)]
        if hook == .prerouting { names.append(("dstnat", dstnat)) }
        if hook == .postrouting { names.append(("srcnat", srcnat)) }
        for (name, base) in names {
            if value == base { return name }
            if abs(value - base) <= 10 { return value < base ? "\(name) - \(base - value)" : "\(name) + \(value - base)" }
        }
        return String(value)
    }
}

/// A chain: a base chain when `hook` is set, else a regular chain reached by jump/goto/vmap.
public struct Chain: Sendable, Hashable {
    public var name: String
    public var hook: ChainHook?
    public var rules: [Rule]

    public init(name: String, hook: ChainHook? = nil, rules: [Rule] = []) {
        self.name = name
        self.hook = hook
        self.rules = rules
    }
}

/// One field of a set key.
public enum KeyField: Sendable, Hashable, CaseIterable {
    case destinationAddress
    case sourceAddress
    case l4Protocol
    case destinationPort
    /// The slot a `numgen random mod N` expression picks (0..N-1): the last field of an endpoint map's key.
    case slot

    /// The field's name in the userdata Ferry stores with a set (`saddr.l4proto.dport`): the kernel's key
    /// type says `ipv4_addr` for a source and a destination address alike, so the set says which it is.
    var userdataName: String {
        switch self {
        case .destinationAddress: "daddr"
        case .sourceAddress: "saddr"
        case .l4Protocol: "l4proto"
        case .destinationPort: "dport"
        case .slot: "slot"
        }
    }

    /// `daddr.l4proto.dport` for a key.
    static func userdataText(_ key: [KeyField]) -> String { key.map(\.userdataName).joined(separator: ".") }

    /// The key a set's userdata names; `nil` when the text is not one Ferry wrote.
    static func key(userdataText text: String) -> [KeyField]? {
        let fields = text.split(separator: ".").map { name in KeyField.allCases.first { $0.userdataName == name } }
        guard !fields.isEmpty, fields.allSatisfy({ $0 != nil }) else { return nil }
        return fields.compactMap { $0 }
    }

    /// nft's type name in a set declaration.
    func typeName(_ family: NFTFamily) -> String {
        switch self {
        case .destinationAddress, .sourceAddress: return family == .ip ? "ipv4_addr" : "ipv6_addr"
        case .l4Protocol: return "inet_proto"
        case .destinationPort: return "inet_service"
        case .slot: return "integer"
        }
    }

    /// The expression text in a rule: `ip daddr`, `meta l4proto`, `th dport`.
    func expressionText(_ family: NFTFamily) -> String {
        switch self {
        case .destinationAddress: return "\(family.rawValue) daddr"
        case .sourceAddress: return "\(family.rawValue) saddr"
        case .l4Protocol: return "meta l4proto"
        case .destinationPort: return "th dport"
        // How a `typeof` declaration names the slot's type: any modulus gives the same 32-bit integer.
        case .slot: return "numgen random mod 1"
        }
    }
}

/// One value of a set element's key.
public enum KeyValue: Sendable, Hashable, Comparable, CustomStringConvertible {
    case address(IPAddress)
    case l4Protocol(L4Protocol)
    case port(Int)
    case slot(Int)

    public var description: String {
        switch self {
        case .address(let address): return address.description
        case .l4Protocol(let value): return value.rawValue.lowercased()
        case .port(let port), .slot(let port): return String(port)
        }
    }

    private var order: (Int, IPAddress?, Int) {
        switch self {
        case .address(let address): return (0, address, 0)
        case .l4Protocol(let value): return (1, nil, Int(value.number))
        case .port(let port): return (2, nil, port)
        case .slot(let slot): return (3, nil, slot)
        }
    }

    public static func < (lhs: KeyValue, rhs: KeyValue) -> Bool {
        let (a, b) = (lhs.order, rhs.order)
        if a.0 != b.0 { return a.0 < b.0 }
        if let x = a.1, let y = b.1, x != y { return x < y }
        return a.2 < b.2
    }
}

/// A set element's key: one value per key field (`10.96.0.10 . tcp . 80`), at most four.
///
/// Packed into five words and a tag: a full sync at 10,000 services holds ~300,000 keys, some several
/// times (fragments, tables, counts). Measured there (`ferry bench sync`, 10 endpoints per service,
/// three runs each): an array of values per key (a heap allocation, a reference count and a pointer
/// chase per hash) planned in 0.70-0.85 s and encoded in 0.46-0.60 s, peak 422 MiB; four inline
/// optional values (96 bytes) 0.81-0.94 s and 0.34-0.38 s, 644-685 MiB; this (48 bytes, hashed as six
/// integers) 0.49-0.62 s and 0.32-0.35 s, 452-491 MiB.
public struct ElementKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    private var words: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
    /// Three bits per field (its kind), from the lowest; the field count above bit 12.
    private var shape: UInt16 = 0

    public init(_ values: [KeyValue]) {
        precondition((1...4).contains(values.count), "a set key has one to four fields")
        for value in values { append(value) }
    }

    /// This key with a slot field after its others (an endpoint map's key from its frontend's).
    public func appending(slot: Int) -> ElementKey {
        var key = self
        key.append(.slot(slot))
        return key
    }

    /// Writes one more field after the others (no array on the way: a key is made per map element).
    private mutating func append(_ value: KeyValue) {
        let index = Int(shape >> 12)
        precondition(index < 4, "a set key has one to four fields")
        var offset = 0
        for field in 0..<index { offset += shape >> (3 * field) & 7 == 1 ? 2 : 1 }
        var kind: UInt16 = 0
        withUnsafeMutableBytes(of: &words) { raw in
            func store(_ word: UInt64) {
                raw.storeBytes(of: word, toByteOffset: offset * 8, as: UInt64.self)
                offset += 1
            }
            switch value {
            case .address(.v4(let bits)):
                kind = 0
                store(UInt64(bits))
            case .address(.v6(let high, let low)):
                kind = 1
                store(high)
                store(low)
            case .l4Protocol(let l4):
                kind = 2
                store(UInt64(l4.number))
            case .port(let port):
                kind = 3
                store(UInt64(UInt16(truncatingIfNeeded: port)))
            case .slot(let slot):
                kind = 4
                store(UInt64(UInt32(truncatingIfNeeded: slot)))
            }
        }
        shape = (shape & 0x0FFF) | kind << (3 * index) | UInt16(index + 1) << 12
    }

    /// How many fields the key has.
    public var fieldCount: Int { Int(shape >> 12) }

    /// The values, in key order.
    public var values: [KeyValue] {
        withUnsafeBytes(of: words) { raw in
            var values: [KeyValue] = []
            var offset = 0
            func next() -> UInt64 {
                defer { offset += 8 }
                return raw.load(fromByteOffset: offset, as: UInt64.self)
            }
            for index in 0..<Int(shape >> 12) {
                switch shape >> (3 * index) & 7 {
                case 0: values.append(.address(.v4(UInt32(next()))))
                case 1: values.append(.address(.v6(high: next(), low: next())))
                case 2:
                    let number = UInt8(next())
                    values.append(.l4Protocol(L4Protocol.allCases.first { $0.number == number } ?? .tcp))
                case 3: values.append(.port(Int(next())))
                default: values.append(.slot(Int(next())))
                }
            }
            return values
        }
    }

    public var description: String { values.map(\.description).joined(separator: " . ") }

    public static func == (lhs: ElementKey, rhs: ElementKey) -> Bool {
        lhs.shape == rhs.shape && lhs.words.0 == rhs.words.0 && lhs.words.1 == rhs.words.1 && lhs.words.2 == rhs.words.2
            && lhs.words.3 == rhs.words.3 && lhs.words.4 == rhs.words.4
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(shape)
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
        hasher.combine(words.4)
    }

    public static func < (lhs: ElementKey, rhs: ElementKey) -> Bool { lhs.values.lexicographicallyPrecedes(rhs.values) }
}

/// What a map's elements map to.
public enum SetData: Sendable, Hashable {
    /// A verdict map (`: verdict`): dispatch to a chain.
    case verdict
    /// An endpoint map (`: ip daddr . th dport`): the address and port a `dnat … map` rewrites to.
    case endpoint
}

/// The data of one map element.
public enum ElementValue: Sendable, Hashable, CustomStringConvertible {
    case verdict(Verdict)
    case endpoint(IPAddress, port: Int)

    public var description: String {
        switch self {
        case .verdict(let verdict): return verdict.description
        case .endpoint(let address, let port): return "\(address) . \(port)"
        }
    }

    /// The chain a verdict element continues in, if any.
    public var chain: String? {
        if case .verdict(let verdict) = self { return verdict.chain }
        return nil
    }

    /// The kind of map that holds such values.
    public var data: SetData {
        switch self {
        case .verdict: return .verdict
        case .endpoint: return .endpoint
        }
    }
}

/// A named set or map.
public struct NFTSet: Sendable, Hashable {
    public var name: String
    public var key: [KeyField]
    /// What the elements map to; `nil` for a plain set.
    public var data: SetData?
    /// A dynamic set filled by the data path (`flags dynamic,timeout`) with this timeout in seconds.
    public var timeoutSeconds: Int?
    /// The elements and, in a map, their data; `nil` data in a plain set.
    public var elements: [ElementKey: ElementValue?]
    /// Read back without its elements (`Netfilter.read`'s `skippingElementsOf`): what the kernel holds
    /// is not known, so a diff flushes the set and adds every element.
    public var elementsUnread = false

    public init(name: String, key: [KeyField], data: SetData? = nil, timeoutSeconds: Int? = nil, elements: [ElementKey: ElementValue?] = [:]) {
        self.name = name
        self.key = key
        self.data = data
        self.timeoutSeconds = timeoutSeconds
        self.elements = elements
    }

    /// A map (`map … { type … : … }`) rather than a plain set.
    public var isMap: Bool { data != nil }

    /// The set with its declaration only (no elements): what decides whether it must be recreated.
    public var declaration: NFTSet {
        var copy = self
        copy.elements = [:]
        copy.elementsUnread = false
        return copy
    }

    /// The size nft gives dynamic sets by default; declared so that `nft list` and Ferry agree.
    public static let dynamicSize = 65_535
}

/// One table: Ferry's own, per family.
public struct Table: Sendable, Hashable {
    public var family: NFTFamily
    public var name: String
    public var chains: [String: Chain]
    public var sets: [String: NFTSet]

    public init(family: NFTFamily, name: String = "ferry", chains: [String: Chain] = [:], sets: [String: NFTSet] = [:]) {
        self.family = family
        self.name = name
        self.chains = chains
        self.sets = sets
    }

    public mutating func add(_ chain: Chain) { chains[chain.name] = chain }
    public mutating func add(_ set: NFTSet) { sets[set.name] = set }
}

/// Everything Ferry programs: one table per family that has services.
public struct Ruleset: Sendable, Hashable {
    public var tables: [NFTFamily: Table]

    public init(tables: [NFTFamily: Table] = [:]) { self.tables = tables }

    public var sortedTables: [Table] { tables.values.sorted { $0.family < $1.family } }
}

extension L4Protocol {
    /// The IP protocol number.
    public var number: UInt8 {
        switch self {
        case .tcp: return 6
        case .udp: return 17
        case .sctp: return 132
        }
    }
}
