import CMnl
import CNftnl
import Dispatch
import FerryCore
import FerrySystem
import Foundation
import Glibc
import Synchronization

extension NetlinkNetfilter {
    // MARK: Reading back

    public func read(table name: String, skippingElementsOf skipped: Set<String> = []) throws(NetfilterError) -> Ruleset {
        var ruleset = Ruleset()
        for family in try dumpTables(named: name) { ruleset.tables[family] = Table(family: family, name: name) }
        guard !ruleset.tables.isEmpty else { return ruleset }
        try dump(NFT_MSG_GETCHAIN) { header in
            let object = nftnl_chain_alloc()!
            defer { nftnl_chain_free(object) }
            guard nftnl_chain_nlmsg_parse(header, object) >= 0,
                let family = NetlinkNetfilter.family(nftnl_chain_get_u32(object, UInt16(NFTNL_CHAIN_FAMILY.rawValue))),
                String(cString: nftnl_chain_get_str(object, UInt16(NFTNL_CHAIN_TABLE.rawValue))) == name, ruleset.tables[family] != nil
            else { return }
            let chainName = String(cString: nftnl_chain_get_str(object, UInt16(NFTNL_CHAIN_NAME.rawValue)))
            var hook: ChainHook?
            if nftnl_chain_is_set(object, UInt16(NFTNL_CHAIN_HOOKNUM.rawValue)) {
                let number = nftnl_chain_get_u32(object, UInt16(NFTNL_CHAIN_HOOKNUM.rawValue))
                let kind =
                    ChainHook.Kind(rawValue: String(cString: nftnl_chain_get_str(object, UInt16(NFTNL_CHAIN_TYPE.rawValue)))) ?? .filter
                let hooks: [ChainHook.Hook] = [.prerouting, .input, .forward, .output, .postrouting]
                if let match = hooks.first(where: { NetlinkNetfilter.hookNumber($0) == number }) {
                    hook = ChainHook(kind, match, priority: nftnl_chain_get_s32(object, UInt16(NFTNL_CHAIN_PRIO.rawValue)))
                }
            }
            ruleset.tables[family]?.chains[chainName] = Chain(name: chainName, hook: hook)
        }
        var dynamicSets: Set<String> = []
        try dump(NFT_MSG_GETSET) { header in
            let object = nftnl_set_alloc()!
            defer { nftnl_set_free(object) }
            guard nftnl_set_nlmsg_parse(header, object) >= 0,
                let family = NetlinkNetfilter.family(nftnl_set_get_u32(object, UInt16(NFTNL_SET_FAMILY.rawValue))),
                String(cString: nftnl_set_get_str(object, UInt16(NFTNL_SET_TABLE.rawValue))) == name, ruleset.tables[family] != nil
            else { return }
            let flags = nftnl_set_get_u32(object, UInt16(NFTNL_SET_FLAGS.rawValue))
            guard flags & NFT_SET_ANONYMOUS.rawValue == 0 else { return }
            let setName = String(cString: nftnl_set_get_str(object, UInt16(NFTNL_SET_NAME.rawValue)))
            let keyType = nftnl_set_get_u32(object, UInt16(NFTNL_SET_KEY_TYPE.rawValue))
            var timeout: Int?
            if flags & NFT_SET_TIMEOUT.rawValue != 0 {
                timeout = Int(nftnl_set_get_u64(object, UInt16(NFTNL_SET_TIMEOUT.rawValue)) / 1000)
                dynamicSets.insert(setName)
            }
            // Sets written before Ferry stored their key in the userdata: affinity sets are the ones keyed
            // by a source address.
            let fields =
                NetlinkNetfilter.userdataKey(of: object)
                ?? NetlinkNetfilter.keyFields(keyType, sourceAddress: setName.hasPrefix("affinity-"))
            var data: SetData?
            if flags & NFT_SET_MAP.rawValue != 0 {
                let type = nftnl_set_get_u32(object, UInt16(NFTNL_SET_DATA_TYPE.rawValue))
                data = type == NFT_DATA_VERDICT.rawValue ? .verdict : .endpoint
            }
            ruleset.tables[family]?.sets[setName] = NFTSet(name: setName, key: fields, data: data, timeoutSeconds: timeout)
        }
        for (family, table) in ruleset.tables {
            for set in table.sets.values where !dynamicSets.contains(set.name) {
                if skipped.contains(set.name) {
                    ruleset.tables[family]?.sets[set.name]?.elementsUnread = true
                    continue
                }
                ruleset.tables[family]?.sets[set.name]?.elements = try readElements(of: set, table: name, family: family)
            }
        }
        // Rules: one table-wide dump, or chain by chain. The kernel re-walks a table's rules from the start
        // for every 32 KiB a dump returns (quadratic in the rule count), while a chain is found by hash; but
        // a request per chain is a round trip per chain. Measured (`ferry bench sync`, restart): with ~2
        // rules per chain, 10,000 chains 1.73-1.79 s table-wide against 1.94-2.01 s chain by chain, 50,000
        // chains 11.1 s against 11.3 s; with the 330,000 rules of the chain-per-endpoint shape, the
        // table-wide dump was the slower by far.
        let chainCount = ruleset.tables.values.reduce(0) { $0 + $1.chains.count }
        if chainCount <= tableWideRuleDumpLimit {
            for (family, _) in ruleset.tables {
                let familyNumber = UInt16(family == .ip ? NFPROTO_IPV4 : NFPROTO_IPV6)
                let query = nftnl_rule_alloc()!
                defer { nftnl_rule_free(query) }
                nftnl_rule_set_str(query, UInt16(NFTNL_RULE_TABLE.rawValue), name)
                var rules: [String: [Rule]] = [:]
                try dump(NFT_MSG_GETRULE, family: familyNumber, payload: { nftnl_rule_nlmsg_build_payload($0, query) }) { header in
                    let object = nftnl_rule_alloc()!
                    defer { nftnl_rule_free(object) }
                    guard nftnl_rule_nlmsg_parse(header, object) >= 0,
                        String(cString: nftnl_rule_get_str(object, UInt16(NFTNL_RULE_TABLE.rawValue))) == name
                    else { return }
                    let chain = String(cString: nftnl_rule_get_str(object, UInt16(NFTNL_RULE_CHAIN.rawValue)))
                    rules[chain, default: []].append(Rule([.unparsed(NetlinkNetfilter.stamp(of: object) ?? "")]))
                }
                for (chain, list) in rules { ruleset.tables[family]?.chains[chain]?.rules = list }
            }
            return ruleset
        }
        for (family, table) in ruleset.tables {
            let familyNumber = UInt16(family == .ip ? NFPROTO_IPV4 : NFPROTO_IPV6)
            for chainName in table.chains.keys {
                let query = nftnl_rule_alloc()!
                defer { nftnl_rule_free(query) }
                nftnl_rule_set_str(query, UInt16(NFTNL_RULE_TABLE.rawValue), name)
                nftnl_rule_set_str(query, UInt16(NFTNL_RULE_CHAIN.rawValue), chainName)
                var rules: [Rule] = []
                try dump(NFT_MSG_GETRULE, family: familyNumber, payload: { nftnl_rule_nlmsg_build_payload($0, query) }) { header in
                    let object = nftnl_rule_alloc()!
                    defer { nftnl_rule_free(object) }
                    guard nftnl_rule_nlmsg_parse(header, object) >= 0 else { return }
                    rules.append(Rule([.unparsed(NetlinkNetfilter.stamp(of: object) ?? "")]))
                }
                ruleset.tables[family]?.chains[chainName]?.rules = rules
            }
        }
        return ruleset
    }

    func dumpTables(named name: String) throws(NetfilterError) -> [NFTFamily] {
        var families: [NFTFamily] = []
        try dump(NFT_MSG_GETTABLE) { header in
            let object = nftnl_table_alloc()!
            defer { nftnl_table_free(object) }
            guard nftnl_table_nlmsg_parse(header, object) >= 0,
                String(cString: nftnl_table_get_str(object, UInt16(NFTNL_TABLE_NAME.rawValue))) == name,
                let family = NetlinkNetfilter.family(nftnl_table_get_u32(object, UInt16(NFTNL_TABLE_FAMILY.rawValue)))
            else { return }
            families.append(family)
        }
        return families.sorted()
    }

    func readElements(of set: NFTSet, table: String, family: NFTFamily) throws(NetfilterError) -> [ElementKey: ElementValue?] {
        let query = setObject(table: table, name: set.name, family: UInt16(family == .ip ? NFPROTO_IPV4 : NFPROTO_IPV6))
        defer { nftnl_set_free(query) }
        var elements: [ElementKey: ElementValue?] = [:]
        var unreadable = 0
        try dump(
            NFT_MSG_GETSETELEM, family: UInt16(family == .ip ? NFPROTO_IPV4 : NFPROTO_IPV6),
            payload: { nftnl_set_elems_nlmsg_build_payload($0, query) }
        ) { header in
            let parsed = nftnl_set_alloc()!
            defer { nftnl_set_free(parsed) }
            guard nftnl_set_elems_nlmsg_parse(header, parsed) >= 0, let iterator = nftnl_set_elems_iter_create(parsed) else {
                unreadable += 1
                return
            }
            defer { nftnl_set_elems_iter_destroy(iterator) }
            while let element = nftnl_set_elems_iter_next(iterator) {
                var length: UInt32 = 0
                guard let data = nftnl_set_elem_get(element, UInt16(NFTNL_SET_ELEM_KEY), &length) else { continue }
                let bytes = Array(UnsafeRawBufferPointer(start: data, count: Int(length)))
                guard let key = NetlinkNetfilter.decodeKey(bytes, fields: set.key, family: family) else { continue }
                var value: ElementValue?
                if nftnl_set_elem_is_set(element, UInt16(NFTNL_SET_ELEM_VERDICT)) {
                    let code = Int32(bitPattern: nftnl_set_elem_get_u32(element, UInt16(NFTNL_SET_ELEM_VERDICT)))
                    let chain =
                        nftnl_set_elem_is_set(element, UInt16(NFTNL_SET_ELEM_CHAIN))
                        ? String(cString: nftnl_set_elem_get_str(element, UInt16(NFTNL_SET_ELEM_CHAIN))) : ""
                    value = NetlinkNetfilter.verdict(code, chain: chain).map(ElementValue.verdict)
                } else if set.data == .endpoint, let raw = nftnl_set_elem_get(element, UInt16(NFTNL_SET_ELEM_DATA), &length) {
                    let bytes = Array(UnsafeRawBufferPointer(start: raw, count: Int(length)))
                    if let decoded = NetlinkNetfilter.decodeKey(bytes, fields: [.destinationAddress, .destinationPort], family: family),
                        case .address(let address) = decoded.values[0], case .port(let port) = decoded.values[1]
                    {
                        value = .endpoint(address, port: port)
                    }
                }
                elements[key] = .some(value)
            }
        }
        // Never a silent partial read: a diff against it would re-add (or leave out) elements.
        if unreadable > 0 {
            throw NetfilterError(kind: .system, message: "\(unreadable) element message(s) of set \(set.name) could not be parsed")
        }
        return elements
    }

    /// Sends a dump request and hands every reply message to `handle` until NLMSG_DONE; restarts when the
    /// kernel says the dump was interrupted by a concurrent change.
    func dump(
        _ type: nf_tables_msg_types, family: UInt16 = UInt16(AF_UNSPEC), payload: ((UnsafeMutablePointer<nlmsghdr>) -> Void)? = nil,
        _ handle: (UnsafePointer<nlmsghdr>) -> Void
    ) throws(NetfilterError) {
        for _ in 0..<5 {
            let number = socket.nextSequence()
            var request = [UInt8](repeating: 0, count: 4096)
            let length = request.withUnsafeMutableBytes { raw -> Int in
                let header = nftnl_nlmsg_build_hdr(
                    raw.baseAddress!.assumingMemoryBound(to: CChar.self), UInt16(type.rawValue), family,
                    UInt16(NLM_F_DUMP), number)!
                payload?(header)
                return Int(header.pointee.nlmsg_len)
            }
            try send(Array(request.prefix(length)))
            var interrupted = false
            try receive { message throws(NetfilterError) in
                guard message.sequence == number else { return false }
                if message.flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted = true }
                if message.isDone { return true }
                if let code = message.errorCode {
                    if code == 0 { return false }
                    if code == ENOENT { return true }
                    throw NetlinkNetfilter.kernelError(code, operation: nil, count: 1)
                }
                handle(message.header)
                return false
            }
            if !interrupted { return }
        }
        throw NetfilterError(kind: .system, message: "the ruleset kept changing while it was read (dump interrupted 5 times)")
    }

    // MARK: Decoding

    static func family(_ value: UInt32) -> NFTFamily? {
        switch Int32(value) {
        case Int32(NFPROTO_IPV4): return .ip
        case Int32(NFPROTO_IPV6): return .ip6
        default: return nil
        }
    }

    static func keyFields(_ type: UInt32, sourceAddress: Bool) -> [KeyField] {
        var fields: [KeyField] = []
        var rest = type
        repeat {
            switch rest & 0x3f {
            case 7, 8: fields.insert(sourceAddress ? .sourceAddress : .destinationAddress, at: 0)
            case 12: fields.insert(.l4Protocol, at: 0)
            case 13: fields.insert(.destinationPort, at: 0)
            case 4: fields.insert(.slot, at: 0)
            default: fields.insert(.destinationAddress, at: 0)
            }
            rest >>= 6
        } while rest != 0
        return fields
    }

    static func decodeKey(_ bytes: [UInt8], fields: [KeyField], family: NFTFamily) -> ElementKey? {
        var values: [KeyValue] = []
        var offset = 0
        for field in fields {
            switch field {
            case .destinationAddress, .sourceAddress:
                let size = family == .ip ? 4 : 16
                guard offset + size <= bytes.count else { return nil }
                let chunk = Array(bytes[offset..<offset + size])
                let address: IPAddress
                if family == .ip {
                    address = .v4(chunk.reduce(0) { $0 << 8 | UInt32($1) })
                } else {
                    address = .v6(
                        high: chunk[0..<8].reduce(0) { $0 << 8 | UInt64($1) }, low: chunk[8..<16].reduce(0) { $0 << 8 | UInt64($1) })
                }
                values.append(.address(address))
                offset += size
            case .l4Protocol:
                guard offset + 1 <= bytes.count, let l4 = L4Protocol.allCases.first(where: { $0.number == bytes[offset] }) else {
                    return nil
                }
                values.append(.l4Protocol(l4))
                offset += 4
            case .destinationPort:
                guard offset + 2 <= bytes.count else { return nil }
                values.append(.port(Int(bytes[offset]) << 8 | Int(bytes[offset + 1])))
                offset += 4
            case .slot:
                guard offset + 4 <= bytes.count else { return nil }
                let slot = bytes[offset..<offset + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
                values.append(.slot(Int(slot)))
                offset += 4
            }
        }
        return ElementKey(values)
    }

    static func verdict(_ code: Int32, chain: String) -> Verdict? {
        switch code {
        case NFT_JUMP.rawValue: return .jump(chain)
        case NFT_GOTO.rawValue: return .goto(chain)
        case NFT_RETURN.rawValue: return .return
        case Int32(NF_ACCEPT): return .accept
        case Int32(NF_DROP): return .drop
        default: return nil
        }
    }

    /// The userdata type under which Ferry stores a set's key fields (nft ignores types it does not know).
    static let setKeyUserdataType: UInt8 = 201

    /// The fingerprint Ferry stamped on a rule, if any.
    static func stamp(of rule: OpaquePointer) -> String? {
        var length: UInt32 = 0
        guard let data = nftnl_rule_get_data(rule, UInt16(NFTNL_RULE_USERDATA.rawValue), &length) else { return nil }
        return userdataString(UnsafeRawBufferPointer(start: data, count: Int(length)), type: RuleFingerprint.userdataType)
    }

    /// The key fields Ferry stored with a set, if any.
    static func userdataKey(of set: OpaquePointer) -> [KeyField]? {
        var length: UInt32 = 0
        guard let data = nftnl_set_get_data(set, UInt16(NFTNL_SET_USERDATA.rawValue), &length),
            let text = userdataString(UnsafeRawBufferPointer(start: data, count: Int(length)), type: setKeyUserdataType)
        else { return nil }
        return KeyField.key(userdataText: text)
    }

    /// The string of type `type` in netlink userdata (type, length, value entries), if present.
    static func userdataString(_ raw: UnsafeRawBufferPointer, type wanted: UInt8) -> String? {
        let bytes = Array(raw)
        var offset = 0
        while offset + 2 <= bytes.count {
            let type = bytes[offset]
            let size = Int(bytes[offset + 1])
            guard offset + 2 + size <= bytes.count else { return nil }
            if type == wanted {
                return String(decoding: bytes[(offset + 2)..<(offset + 2 + size)].prefix { $0 != 0 }, as: UTF8.self)
            }
            offset += 2 + size
        }
        return nil
    }
}
