import CMnl
import CNftnl
import Dispatch
import FerryCore
import FerrySystem
import Foundation
import Glibc
import Synchronization

extension NetlinkNetfilter {
    func encode(_ operation: Operation, index: Int, into batch: inout BatchBuilder) throws(NetfilterError) {
        let family = UInt16(operation.family == .ip ? NFPROTO_IPV4 : NFPROTO_IPV6)
        let table = operation.table
        let create = UInt16(NLM_F_CREATE)
        switch operation.kind {
        case .addTable, .deleteTable:
            let object = nftnl_table_alloc()!
            defer { nftnl_table_free(object) }
            nftnl_table_set_str(object, UInt16(NFTNL_TABLE_NAME.rawValue), table)
            nftnl_table_set_u32(object, UInt16(NFTNL_TABLE_FAMILY.rawValue), UInt32(family))
            let isAdd = { if case .addTable = operation.kind { return true } else { return false } }()
            batch.message(isAdd ? NFT_MSG_NEWTABLE : NFT_MSG_DELTABLE, family: family, flags: isAdd ? create : 0, operation: index) {
                nftnl_table_nlmsg_build_payload($0, object)
            }
        case .addChain(let chain):
            let object = chainObject(table: table, name: chain.name, family: family)
            defer { nftnl_chain_free(object) }
            if let hook = chain.hook {
                nftnl_chain_set_u32(object, UInt16(NFTNL_CHAIN_HOOKNUM.rawValue), NetlinkNetfilter.hookNumber(hook.hook))
                nftnl_chain_set_s32(object, UInt16(NFTNL_CHAIN_PRIO.rawValue), hook.priority)
                nftnl_chain_set_str(object, UInt16(NFTNL_CHAIN_TYPE.rawValue), hook.kind.rawValue)
                nftnl_chain_set_u32(object, UInt16(NFTNL_CHAIN_POLICY.rawValue), UInt32(NF_ACCEPT))
            }
            batch.message(NFT_MSG_NEWCHAIN, family: family, flags: create, operation: index) { nftnl_chain_nlmsg_build_payload($0, object) }
        case .flushChain(let name):
            let object = nftnl_rule_alloc()!
            defer { nftnl_rule_free(object) }
            nftnl_rule_set_str(object, UInt16(NFTNL_RULE_TABLE.rawValue), table)
            nftnl_rule_set_str(object, UInt16(NFTNL_RULE_CHAIN.rawValue), name)
            nftnl_rule_set_u32(object, UInt16(NFTNL_RULE_FAMILY.rawValue), UInt32(family))
            batch.message(NFT_MSG_DELRULE, family: family, flags: 0, operation: index) { nftnl_rule_nlmsg_build_payload($0, object) }
        case .deleteChain(let name):
            let object = chainObject(table: table, name: name, family: family)
            defer { nftnl_chain_free(object) }
            batch.message(NFT_MSG_DELCHAIN, family: family, flags: 0, operation: index) { nftnl_chain_nlmsg_build_payload($0, object) }
        case .addRule(let chain, let rule):
            let object = nftnl_rule_alloc()!
            defer { nftnl_rule_free(object) }
            nftnl_rule_set_str(object, UInt16(NFTNL_RULE_TABLE.rawValue), table)
            nftnl_rule_set_str(object, UInt16(NFTNL_RULE_CHAIN.rawValue), chain)
            nftnl_rule_set_u32(object, UInt16(NFTNL_RULE_FAMILY.rawValue), UInt32(family))
            let lowering = Lowering(rule: object, family: operation.family)
            for statement in rule.statements { try lowering.lower(statement) }
            let stamp = RuleFingerprint.of(rule, family: operation.family)
            let userdata = nftnl_udata_buf_alloc(64)!
            defer { nftnl_udata_buf_free(userdata) }
            nftnl_udata_put_strz(userdata, RuleFingerprint.userdataType, stamp)
            nftnl_rule_set_data(object, UInt16(NFTNL_RULE_USERDATA.rawValue), nftnl_udata_buf_data(userdata), nftnl_udata_buf_len(userdata))
            batch.message(NFT_MSG_NEWRULE, family: family, flags: create | UInt16(NLM_F_APPEND), operation: index) {
                nftnl_rule_nlmsg_build_payload($0, object)
            }
        case .addSet(let set):
            let object = setObject(table: table, name: set.name, family: family)
            defer { nftnl_set_free(object) }
            let (keyType, keyLength) = NetlinkNetfilter.keyType(set.key, family: operation.family)
            nftnl_set_set_u32(object, UInt16(NFTNL_SET_KEY_TYPE.rawValue), keyType)
            nftnl_set_set_u32(object, UInt16(NFTNL_SET_KEY_LEN.rawValue), keyLength)
            // The key's fields, which the key type alone does not tell (a source address and a destination
            // address are both ipv4_addr): read back from here, not guessed from the set's name. An
            // endpoint map also carries nft's typeof description first (see NFTTypeofUserdata).
            let userdata = nftnl_udata_buf_alloc(64)!
            defer { nftnl_udata_buf_free(userdata) }
            nftnl_udata_put_strz(userdata, NetlinkNetfilter.setKeyUserdataType, KeyField.userdataText(set.key))
            let entries =
                (set.data == .endpoint ? NFTTypeofUserdata.bytes(key: set.key, family: operation.family) ?? [] : [])
                + Array(UnsafeRawBufferPointer(start: nftnl_udata_buf_data(userdata), count: Int(nftnl_udata_buf_len(userdata))))
            nftnl_set_set_data(object, UInt16(NFTNL_SET_USERDATA.rawValue), entries, UInt32(entries.count))
            var flags: UInt32 = 0
            switch set.data {
            case .verdict:
                flags |= NFT_SET_MAP.rawValue
                nftnl_set_set_u32(object, UInt16(NFTNL_SET_DATA_TYPE.rawValue), NFT_DATA_VERDICT.rawValue)
            case .endpoint:
                flags |= NFT_SET_MAP.rawValue
                let (dataType, dataLength) = NetlinkNetfilter.keyType([.destinationAddress, .destinationPort], family: operation.family)
                nftnl_set_set_u32(object, UInt16(NFTNL_SET_DATA_TYPE.rawValue), dataType)
                nftnl_set_set_u32(object, UInt16(NFTNL_SET_DATA_LEN.rawValue), dataLength)
            case nil:
                break
            }
            if let timeout = set.timeoutSeconds {
                flags |= NFT_SET_TIMEOUT.rawValue | NFT_SET_EVAL.rawValue
                nftnl_set_set_u64(object, UInt16(NFTNL_SET_TIMEOUT.rawValue), UInt64(timeout) * 1000)
                nftnl_set_set_u32(object, UInt16(NFTNL_SET_DESC_SIZE.rawValue), UInt32(NFTSet.dynamicSize))
            }
            nftnl_set_set_u32(object, UInt16(NFTNL_SET_FLAGS.rawValue), flags)
            // Unique within the batch without a shared counter: the operation's position.
            nftnl_set_set_u32(object, UInt16(NFTNL_SET_ID.rawValue), UInt32(index + 1))
            batch.message(NFT_MSG_NEWSET, family: family, flags: create, operation: index) { nftnl_set_nlmsg_build_payload($0, object) }
        case .flushSet(let name):
            // An element deletion that names no element empties the set (the kernel's nft_set_flush).
            let object = setObject(table: table, name: name, family: family)
            defer { nftnl_set_free(object) }
            batch.message(NFT_MSG_DELSETELEM, family: family, flags: 0, operation: index) { nftnl_set_elems_nlmsg_build_payload($0, object) }
        case .deleteSet(let name):
            let object = setObject(table: table, name: name, family: family)
            defer { nftnl_set_free(object) }
            batch.message(NFT_MSG_DELSET, family: family, flags: 0, operation: index) { nftnl_set_nlmsg_build_payload($0, object) }
        case .addElements(let name, let elements), .deleteElements(let name, let elements):
            let isAdd = { if case .addElements = operation.kind { return true } else { return false } }()
            // In dictionary order: the kernel does not care, and sorting 100,000 keys cost more than encoding
            // them. A few thousand at a time: libnftnl keeps an object per element until its set is freed
            // (30 MiB for the 330,000 elements of a full sync at 10,000 services, all at once before).
            var pending = elements.makeIterator()
            var more = true
            while more {
                let object = setObject(table: table, name: name, family: family)
                defer { nftnl_set_free(object) }
                var count = 0
                while count < 4_096 {
                    guard let (key, value) = pending.next() else {
                        more = false
                        break
                    }
                    count += 1
                    let element = nftnl_set_elem_alloc()!
                    let bytes = keyBytes(key)
                    bytes.withUnsafeBytes { _ = nftnl_set_elem_set(element, UInt16(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count)) }
                    switch isAdd ? value : nil {
                    case .verdict(let verdict):
                        nftnl_set_elem_set_u32(element, UInt16(NFTNL_SET_ELEM_VERDICT), Lowering.code(verdict))
                        if let chain = verdict.chain { nftnl_set_elem_set_str(element, UInt16(NFTNL_SET_ELEM_CHAIN), chain) }
                    case .endpoint(let address, let port):
                        let data = endpointBytes(address, port: port)
                        data.withUnsafeBytes { _ = nftnl_set_elem_set(element, UInt16(NFTNL_SET_ELEM_DATA), $0.baseAddress, UInt32($0.count)) }
                    case nil:
                        break
                    }
                    nftnl_set_elem_add(object, element)
                }
                if count > 0 {
                    batch.elements(
                        object, type: isAdd ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM, family: family, flags: isAdd ? create : 0,
                        operation: index)
                }
            }
        }
    }

    func chainObject(table: String, name: String, family: UInt16) -> OpaquePointer {
        let object = nftnl_chain_alloc()!
        nftnl_chain_set_str(object, UInt16(NFTNL_CHAIN_TABLE.rawValue), table)
        nftnl_chain_set_str(object, UInt16(NFTNL_CHAIN_NAME.rawValue), name)
        nftnl_chain_set_u32(object, UInt16(NFTNL_CHAIN_FAMILY.rawValue), UInt32(family))
        return object
    }

    func setObject(table: String, name: String, family: UInt16) -> OpaquePointer {
        let object = nftnl_set_alloc()!
        nftnl_set_set_str(object, UInt16(NFTNL_SET_TABLE.rawValue), table)
        nftnl_set_set_str(object, UInt16(NFTNL_SET_NAME.rawValue), name)
        nftnl_set_set_u32(object, UInt16(NFTNL_SET_FAMILY.rawValue), UInt32(family))
        return object
    }

    static func hookNumber(_ hook: ChainHook.Hook) -> UInt32 {
        switch hook {
        case .prerouting: return UInt32(NF_INET_PRE_ROUTING.rawValue)
        case .input: return UInt32(NF_INET_LOCAL_IN.rawValue)
        case .forward: return UInt32(NF_INET_FORWARD.rawValue)
        case .output: return UInt32(NF_INET_LOCAL_OUT.rawValue)
        case .postrouting: return UInt32(NF_INET_POST_ROUTING.rawValue)
        }
    }

    /// nft's packed key type (6 bits per concatenated field) and the key length (fields padded to 4 bytes).
    static func keyType(_ fields: [KeyField], family: NFTFamily) -> (UInt32, UInt32) {
        var type: UInt32 = 0
        var length: UInt32 = 0
        for field in fields {
            let (id, size): (UInt32, UInt32)
            switch field {
            case .destinationAddress, .sourceAddress: (id, size) = family == .ip ? (7, 4) : (8, 16)
            case .l4Protocol: (id, size) = (12, 4)
            case .destinationPort: (id, size) = (13, 4)
            case .slot: (id, size) = (4, 4)  // nft's integer type, as numgen's result
            }
            type = type << 6 | id
            length += size
        }
        return (type, length)
    }
}


/// Builds one netlink batch message by message into a byte array, remembering which operation each
/// sequence number belongs to.
struct BatchBuilder {
    private(set) var bytes: [UInt8] = []
    private(set) var sequence: UInt32
    private(set) var operationIndex: [UInt32: Int] = [:]
    /// Room for the largest single message: an element list is cut before its nest passes 64 KiB.
    private var scratch = [UInt8](repeating: 0, count: 256 * 1024)

    init(firstSequence: UInt32) {
        self.sequence = firstSequence
    }

    mutating func begin() {
        append { nftnl_batch_begin($0, $1) }
    }

    mutating func end() {
        append { nftnl_batch_end($0, $1) }
    }

    mutating func message(
        _ type: nf_tables_msg_types, family: UInt16, flags: UInt16, operation: Int, payload: (UnsafeMutablePointer<nlmsghdr>) -> Void
    ) {
        append(operation: operation) { buffer, number in
            let header = nftnl_nlmsg_build_hdr(buffer, UInt16(type.rawValue), family, flags, number)!
            payload(header)
            return header
        }
    }

    /// A set's elements, over as many messages as their size needs.
    mutating func elements(_ set: OpaquePointer, type: nf_tables_msg_types, family: UInt16, flags: UInt16, operation: Int) {
        guard let iterator = nftnl_set_elems_iter_create(set) else { return }
        defer { nftnl_set_elems_iter_destroy(iterator) }
        var more = true
        while more {
            append(operation: operation) { buffer, number in
                let header = nftnl_nlmsg_build_hdr(buffer, UInt16(type.rawValue), family, flags, number)!
                more = nftnl_set_elems_nlmsg_build_payload_iter(header, iterator) > 0
                return header
            }
        }
    }

    private mutating func append(operation: Int? = nil, _ build: (UnsafeMutablePointer<CChar>, UInt32) -> UnsafeMutablePointer<nlmsghdr>?) {
        sequence &+= 1
        let number = sequence
        let length = scratch.withUnsafeMutableBytes { raw -> Int in
            guard let header = build(raw.baseAddress!.assumingMemoryBound(to: CChar.self), number) else { return 0 }
            return Int(header.pointee.nlmsg_len)
        }
        bytes.append(contentsOf: scratch[0..<((length + 3) & ~3)])
        if let operation { operationIndex[number] = operation }
    }
}
