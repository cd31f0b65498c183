import CNftnl
import FerryCore

/// Turns statements into nf_tables VM expressions on a libnftnl rule, register by register, exactly
/// as nft itself encodes them (checked against `nft --debug=netlink`). Single-use, one rule at a time.
struct Lowering {
    let rule: OpaquePointer
    let family: NFTFamily
    init(rule: OpaquePointer, family: NFTFamily) {
        self.rule = rule
        self.family = family
    }

    // Registers: 0 is the verdict; 1 (= 32-bit register 8) the first data register.
    private static let verdictRegister: UInt32 = 0
    private static let register1: UInt32 = 1
    private static let register2: UInt32 = 2
    private static let firstRegister32: UInt32 = 8

    func lower(_ statement: Statement) throws(NetfilterError) {
        switch statement {
        case .matchAddress(let field, let address, let equal):
            payloadAddress(field, into: Self.register1)
            cmp(equal ? NFT_CMP_EQ : NFT_CMP_NEQ, Self.register1, address.bytes)
        case .matchPrefix(let field, let prefix, let equal):
            let length = (prefix.prefixLength + 7) / 8
            payload(base: NFT_PAYLOAD_NETWORK_HEADER, offset: addressOffset(field), length: UInt32(length), into: Self.register1)
            let network = Array(prefix.address.bytes.prefix(length))
            if prefix.prefixLength % 8 != 0 {
                var mask = [UInt8](repeating: 0xff, count: length)
                mask[length - 1] = UInt8(truncatingIfNeeded: 0xff << (8 - prefix.prefixLength % 8))
                bitwise(Self.register1, length: UInt32(length), mask: mask, xor: [UInt8](repeating: 0, count: length))
            }
            cmp(equal ? NFT_CMP_EQ : NFT_CMP_NEQ, Self.register1, network)
        case .matchL4Protocol(let l4):
            meta(NFT_META_L4PROTO, into: Self.register1)
            cmp(NFT_CMP_EQ, Self.register1, [l4.number])
        case .matchPort(let l4, let port):
            meta(NFT_META_L4PROTO, into: Self.register1)
            cmp(NFT_CMP_EQ, Self.register1, [l4.number])
            payload(base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, length: 2, into: Self.register1)
            cmp(NFT_CMP_EQ, Self.register1, portBytes(port))
        case .matchLocalAddress(let field):
            let expression = add("fib")
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_FIB_DREG), Self.register1)
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_FIB_RESULT), NFT_FIB_RESULT_ADDRTYPE.rawValue)
            let flag = field == .sourceAddress ? NFTA_FIB_F_SADDR.rawValue : NFTA_FIB_F_DADDR.rawValue
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_FIB_FLAGS), flag)
            cmp(NFT_CMP_EQ, Self.register1, hostBytes(2))  // RTN_LOCAL
        case .matchNotLoopbackDestination:
            if family == .ip {
                payload(base: NFT_PAYLOAD_NETWORK_HEADER, offset: 16, length: 1, into: Self.register1)
                cmp(NFT_CMP_NEQ, Self.register1, [127])
            } else {
                payload(base: NFT_PAYLOAD_NETWORK_HEADER, offset: 24, length: 16, into: Self.register1)
                cmp(NFT_CMP_NEQ, Self.register1, IPAddress("::1")!.bytes)
            }
        case .matchNewConnection:
            let expression = add("ct")
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_CT_KEY), NFT_CT_STATE.rawValue)
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_CT_DREG), Self.register1)
            let newBit = UInt32(1) << (IP_CT_NEW.rawValue + 1)
            bitwise(Self.register1, length: 4, mask: hostBytes(newBit), xor: hostBytes(0))
            cmp(NFT_CMP_NEQ, Self.register1, hostBytes(0))
        case .matchMarkClear(let bits):
            meta(NFT_META_MARK, into: Self.register1)
            bitwise(Self.register1, length: 4, mask: hostBytes(bits), xor: hostBytes(0))
            cmp(NFT_CMP_EQ, Self.register1, hostBytes(0))
        case .lookup(let key, let set):
            _ = loadKey(key)
            let expression = add("lookup")
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_LOOKUP_SREG), Self.register1)
            nftnl_expr_set_str(expression, UInt16(NFTNL_EXPR_LOOKUP_SET), set)
        case .verdictMap(let key, let map):
            _ = loadKey(key)
            let expression = add("lookup")
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_LOOKUP_SREG), Self.register1)
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_LOOKUP_DREG), Self.verdictRegister)
            nftnl_expr_set_str(expression, UInt16(NFTNL_EXPR_LOOKUP_SET), map)
        case .matchRandom(let modulus):
            let expression = add("numgen")
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_NG_DREG), Self.register1)
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_NG_MODULUS), UInt32(modulus))
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_NG_TYPE), NFT_NG_RANDOM.rawValue)
            cmp(NFT_CMP_EQ, Self.register1, hostBytes(0))
        case .dnatMap(let key, let modulus, let map):
            // As nft: the key's fields, then the slot, in consecutive 32-bit registers from register 1;
            // the lookup writes the endpoint's address to register 1 and its port to the word after it.
            let slotRegister = loadKey(key)
            let generator = add("numgen")
            nftnl_expr_set_u32(generator, UInt16(NFTNL_EXPR_NG_DREG), slotRegister)
            nftnl_expr_set_u32(generator, UInt16(NFTNL_EXPR_NG_MODULUS), UInt32(modulus))
            nftnl_expr_set_u32(generator, UInt16(NFTNL_EXPR_NG_TYPE), NFT_NG_RANDOM.rawValue)
            let lookup = add("lookup")
            nftnl_expr_set_u32(lookup, UInt16(NFTNL_EXPR_LOOKUP_SREG), Self.register1)
            nftnl_expr_set_u32(lookup, UInt16(NFTNL_EXPR_LOOKUP_DREG), Self.register1)
            nftnl_expr_set_str(lookup, UInt16(NFTNL_EXPR_LOOKUP_SET), map)
            let nat = add("nat")
            nftnl_expr_set_u32(nat, UInt16(NFTNL_EXPR_NAT_TYPE), NFT_NAT_DNAT.rawValue)
            nftnl_expr_set_u32(nat, UInt16(NFTNL_EXPR_NAT_FAMILY), UInt32(family == .ip ? NFPROTO_IPV4 : NFPROTO_IPV6))
            nftnl_expr_set_u32(nat, UInt16(NFTNL_EXPR_NAT_REG_ADDR_MIN), Self.register1)
            let portRegister = Self.firstRegister32 + UInt32(fieldLength(.destinationAddress) / 4)
            nftnl_expr_set_u32(nat, UInt16(NFTNL_EXPR_NAT_REG_PROTO_MIN), portRegister)
            nftnl_expr_set_u32(nat, UInt16(NFTNL_EXPR_NAT_FLAGS), UInt32(NF_NAT_RANGE_PROTO_SPECIFIED))
        case .setMark(let bits):
            meta(NFT_META_MARK, into: Self.register1)
            bitwise(Self.register1, length: 4, mask: hostBytes(~bits), xor: hostBytes(bits))
            metaSet(NFT_META_MARK, from: Self.register1)
        case .toggleMark(let bits):
            meta(NFT_META_MARK, into: Self.register1)
            bitwise(Self.register1, length: 4, mask: hostBytes(0xffff_ffff), xor: hostBytes(bits))
            metaSet(NFT_META_MARK, from: Self.register1)
        case .dnat(let address, let port, let l4):
            meta(NFT_META_L4PROTO, into: Self.register1)
            cmp(NFT_CMP_EQ, Self.register1, [l4.number])
            immediate(Self.register1, address.bytes)
            immediate(Self.register2, portBytes(port))
            let expression = add("nat")
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_NAT_TYPE), NFT_NAT_DNAT.rawValue)
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_NAT_FAMILY), UInt32(family == .ip ? NFPROTO_IPV4 : NFPROTO_IPV6))
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_NAT_REG_ADDR_MIN), Self.register1)
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_NAT_REG_PROTO_MIN), Self.register2)
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_NAT_FLAGS), UInt32(NF_NAT_RANGE_PROTO_SPECIFIED))
        case .masqueradeFullyRandom:
            let expression = add("masq")
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_MASQ_FLAGS), UInt32(NF_NAT_RANGE_PROTO_RANDOM_FULLY))
        case .rejectTCPReset:
            meta(NFT_META_L4PROTO, into: Self.register1)
            cmp(NFT_CMP_EQ, Self.register1, [L4Protocol.tcp.number])
            reject(type: NFT_REJECT_TCP_RST.rawValue, code: 0)
        case .reject:
            // ICMP port unreachable is code 3; ICMPv6 port unreachable is code 4.
            reject(type: NFT_REJECT_ICMP_UNREACH.rawValue, code: family == .ip ? 3 : 4)
        case .updateSet(let field, let set):
            payloadAddress(field, into: Self.register1)
            let expression = add("dynset")
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_DYNSET_SREG_KEY), Self.register1)
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_DYNSET_OP), NFT_DYNSET_OP_UPDATE.rawValue)
            nftnl_expr_set_str(expression, UInt16(NFTNL_EXPR_DYNSET_SET_NAME), set)
        case .counter:
            _ = add("counter")
        case .verdict(let verdict):
            let expression = add("immediate")
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_IMM_DREG), Self.verdictRegister)
            nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_IMM_VERDICT), Lowering.code(verdict))
            if let chain = verdict.chain { nftnl_expr_set_str(expression, UInt16(NFTNL_EXPR_IMM_CHAIN), chain) }
        case .unparsed(let text):
            throw NetfilterError(kind: .system, message: "cannot write a rule known only by its text: \(text)")
        }
    }

    /// The kernel's verdict code.
    static func code(_ verdict: Verdict) -> UInt32 {
        switch verdict {
        case .accept: return UInt32(NF_ACCEPT)
        case .drop: return UInt32(NF_DROP)
        case .return: return UInt32(bitPattern: NFT_RETURN.rawValue)
        case .jump: return UInt32(bitPattern: NFT_JUMP.rawValue)
        case .goto: return UInt32(bitPattern: NFT_GOTO.rawValue)
        }
    }

    // MARK: Expression helpers

    private func add(_ name: String) -> OpaquePointer {
        let expression = nftnl_expr_alloc(name)!
        nftnl_rule_add_expr(rule, expression)
        return expression
    }

    private func addressOffset(_ field: KeyField) -> UInt32 {
        switch (family, field) {
        case (.ip, .sourceAddress): return 12
        case (.ip, _): return 16
        case (.ip6, .sourceAddress): return 8
        case (.ip6, _): return 24
        }
    }

    private func fieldLength(_ field: KeyField) -> Int {
        switch field {
        case .destinationAddress, .sourceAddress: return family == .ip ? 4 : 16
        case .l4Protocol: return 1
        case .destinationPort: return 2
        case .slot: return 4
        }
    }

    /// Loads a (concatenated) key into consecutive 32-bit registers from register 1, each field padded
    /// to a whole register, as nft does; returns the next free 32-bit register.
    private func loadKey(_ key: [KeyField]) -> UInt32 {
        var word: UInt32 = 0
        for (index, field) in key.enumerated() {
            load(field, into: index == 0 ? Self.register1 : Self.firstRegister32 + word)
            word += UInt32((fieldLength(field) + 3) / 4)
        }
        return Self.firstRegister32 + word
    }

    private func payloadAddress(_ field: KeyField, into register: UInt32) {
        payload(base: NFT_PAYLOAD_NETWORK_HEADER, offset: addressOffset(field), length: UInt32(fieldLength(field)), into: register)
    }

    private func load(_ field: KeyField, into register: UInt32) {
        switch field {
        case .destinationAddress, .sourceAddress: payloadAddress(field, into: register)
        case .l4Protocol: meta(NFT_META_L4PROTO, into: register)
        case .destinationPort: payload(base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, length: 2, into: register)
        case .slot: preconditionFailure("a slot is generated (numgen), not loaded from the packet")
        }
    }

    private func payload(base: nft_payload_bases, offset: UInt32, length: UInt32, into register: UInt32) {
        let expression = add("payload")
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_PAYLOAD_DREG), register)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_PAYLOAD_BASE), base.rawValue)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_PAYLOAD_OFFSET), offset)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_PAYLOAD_LEN), length)
    }

    private func meta(_ key: nft_meta_keys, into register: UInt32) {
        let expression = add("meta")
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_META_KEY), key.rawValue)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_META_DREG), register)
    }

    private func metaSet(_ key: nft_meta_keys, from register: UInt32) {
        let expression = add("meta")
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_META_KEY), key.rawValue)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_META_SREG), register)
    }

    private func cmp(_ operation: nft_cmp_ops, _ register: UInt32, _ data: [UInt8]) {
        let expression = add("cmp")
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_CMP_SREG), register)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_CMP_OP), operation.rawValue)
        data.withUnsafeBytes { _ = nftnl_expr_set(expression, UInt16(NFTNL_EXPR_CMP_DATA), $0.baseAddress, UInt32($0.count)) }
    }

    private func bitwise(_ register: UInt32, length: UInt32, mask: [UInt8], xor: [UInt8]) {
        let expression = add("bitwise")
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_SREG), register)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_DREG), register)
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_BITWISE_LEN), length)
        mask.withUnsafeBytes { _ = nftnl_expr_set(expression, UInt16(NFTNL_EXPR_BITWISE_MASK), $0.baseAddress, UInt32($0.count)) }
        xor.withUnsafeBytes { _ = nftnl_expr_set(expression, UInt16(NFTNL_EXPR_BITWISE_XOR), $0.baseAddress, UInt32($0.count)) }
    }

    private func immediate(_ register: UInt32, _ data: [UInt8]) {
        let expression = add("immediate")
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_IMM_DREG), register)
        data.withUnsafeBytes { _ = nftnl_expr_set(expression, UInt16(NFTNL_EXPR_IMM_DATA), $0.baseAddress, UInt32($0.count)) }
    }

    private func reject(type: UInt32, code: UInt8) {
        let expression = add("reject")
        nftnl_expr_set_u32(expression, UInt16(NFTNL_EXPR_REJECT_TYPE), type)
        nftnl_expr_set_u8(expression, UInt16(NFTNL_EXPR_REJECT_CODE), code)
    }
}

/// A port in network byte order.
func portBytes(_ port: Int) -> [UInt8] { [UInt8(port >> 8 & 0xff), UInt8(port & 0xff)] }

/// A 32-bit value in host byte order, as meta mark, ct state and fib results are compared.
func hostBytes(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

/// A set element key: each field padded to 4 bytes, in the field's byte order.
func keyBytes(_ key: ElementKey) -> [UInt8] {
    var bytes: [UInt8] = []
    for value in key.values {
        switch value {
        case .address(let address): bytes += address.bytes
        case .l4Protocol(let l4): bytes += [l4.number, 0, 0, 0]
        case .port(let port): bytes += portBytes(port) + [0, 0]
        // numgen writes its register in host byte order.
        case .slot(let slot): bytes += hostBytes(UInt32(slot))
        }
    }
    return bytes
}

/// An endpoint map element's data: the address, then the port padded to 4 bytes.
func endpointBytes(_ address: IPAddress, port: Int) -> [UInt8] { address.bytes + portBytes(port) + [0, 0] }
