import CMnl
import CNftnl
import Dispatch
import FerryCore
import Foundation
import Glibc
import Synchronization

/// nftables in the kernel, over a netfilter netlink socket with libnftnl and libmnl.
///
/// A transaction becomes one batch (BATCH_BEGIN … BATCH_END) sent with one `sendto`, which the kernel
/// applies atomically. Messages carry no ACK request (an ACK per message floods the receive buffer);
/// the kernel reports each failing message with its sequence number, which maps back to the operation,
/// and a GETGEN request sent after the batch marks the end of its replies.
///
/// Not thread-safe: one owner at a time (the socket and sequence numbers are not shared).
public final class NetlinkNetfilter: Netfilter, @unchecked Sendable {
    private let socket: OpaquePointer
    private let portID: UInt32
    private var sequence: UInt32
    /// Reused for every receive: dumps read many small replies.
    private var receiveBuffer = [UInt8](repeating: 0, count: 1 << 20)

    public init() throws(NetfilterError) {
        guard let socket = mnl_socket_open(NETLINK_NETFILTER) else { throw NetlinkNetfilter.systemError("mnl_socket_open") }
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let error = NetlinkNetfilter.systemError("mnl_socket_bind")
            mnl_socket_close(socket)
            throw error
        }
        self.socket = socket
        self.portID = mnl_socket_get_portid(socket)
        self.sequence = UInt32(truncatingIfNeeded: time(nil))
        var one: Int32 = 1
        _ = mnl_socket_setsockopt(socket, NETLINK_CAP_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = mnl_socket_setsockopt(socket, NETLINK_EXT_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        var receiveBuffer: Int32 = 8 << 20
        _ = setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_RCVBUFFORCE, &receiveBuffer, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        _ = setsockopt(mnl_socket_get_fd(socket), SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { mnl_socket_close(socket) }

    /// A socket bound to the network namespace at `path` (e.g. `/run/netns/NAME`), opened from a
    /// short-lived thread that joins that namespace: the calling thread and the process stay where they
    /// are, and the socket keeps talking to the namespace it was opened in. For tests and benchmarks.
    public static func inNamespace(_ path: String) throws(NetfilterError) -> NetlinkNetfilter {
        let outcome = Mutex<Result<NetlinkNetfilter, NetfilterError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            let descriptor = open(path, O_RDONLY | O_CLOEXEC)
            defer { if descriptor >= 0 { close(descriptor) } }
            guard descriptor >= 0, ferry_setns_network(descriptor) == 0 else {
                outcome.withLock { $0 = .failure(NetlinkNetfilter.systemError("setns \(path)")) }
                done.signal()
                return
            }
            do throws(NetfilterError) {
                let netfilter = try NetlinkNetfilter()
                outcome.withLock { $0 = .success(netfilter) }
            } catch {
                outcome.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        thread.start()
        done.wait()
        switch outcome.withLock({ $0 })! {
        case .success(let netfilter): return netfilter
        case .failure(let error): throw error
        }
    }

    private func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    // MARK: Writing

    /// How long the last `apply` took to build its batch, and from sending it to the kernel's last reply
    /// (the kernel's commit).
    public private(set) var lastApply: (encode: Duration, commit: Duration, bytes: Int) = (.zero, .zero, 0)

    public func apply(_ transaction: Transaction) throws(NetfilterError) {
        guard !transaction.isEmpty else { return }
        let clock = ContinuousClock()
        let encodeStart = clock.now
        let (bytes, operationIndex, first, last) = try encodeBatch(transaction)
        let commitStart = clock.now
        try send(bytes)
        let failures = try collectReplies { $0 &- first <= last &- first }
        lastApply = (commitStart - encodeStart, clock.now - commitStart, bytes.count)
        guard let (code, sequenceNumber) = failures.first else { return }
        let operation = operationIndex[sequenceNumber].map { transaction.operations[$0] }
        throw NetlinkNetfilter.kernelError(code, operation: operation, count: failures.count)
    }

    /// The batch for `transaction`, and which operation each message's sequence number belongs to.
    /// A large transaction is encoded in chunks on all cores (messages are independent; each chunk has
    /// its own range of sequence numbers), then joined in order between BATCH_BEGIN and BATCH_END.
    private func encodeBatch(_ transaction: Transaction) throws(NetfilterError) -> ([UInt8], [UInt32: Int], first: UInt32, last: UInt32) {
        let operations = transaction.operations
        let chunkSize = 8_192
        let chunks = (operations.count + chunkSize - 1) / chunkSize
        let base = nextSequence()
        let stride: UInt32 = 1 << 24
        let results = Mutex<[Int: Result<BatchBuilder, NetfilterError>]>([:])
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            var builder = BatchBuilder(firstSequence: base &+ 1 &+ UInt32(chunk) &* stride)
            let range = (chunk * chunkSize)..<min(operations.count, (chunk + 1) * chunkSize)
            do throws(NetfilterError) {
                for index in range { try self.encode(operations[index], index: index, into: &builder) }
                results.withLock { $0[chunk] = .success(builder) }
            } catch {
                results.withLock { $0[chunk] = .failure(error) }
            }
        }
        var batch = BatchBuilder(firstSequence: base)
        batch.begin()
        // Take the chunks out of the lock's storage and release each once it is copied, so the chunks
        // and the joined batch are not all alive at once (at 10,000 services the batch is 117 MiB).
        var encoded = results.withLock { storage in
            var taken: [Int: Result<BatchBuilder, NetfilterError>] = [:]
            swap(&taken, &storage)
            return taken
        }
        var total = batch.bytes.count + 64
        for case .success(let builder) in encoded.values { total += builder.bytes.count }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(total)
        bytes += batch.bytes
        var operationIndex: [UInt32: Int] = [:]
        for chunk in 0..<chunks {
            switch encoded.removeValue(forKey: chunk)! {
            case .failure(let error): throw error
            case .success(let builder):
                bytes += builder.bytes
                operationIndex.merge(builder.operationIndex) { first, _ in first }
            }
        }
        var end = BatchBuilder(firstSequence: base &+ 1 &+ UInt32(chunks) &* stride)
        end.end()
        bytes += end.bytes
        sequence = end.sequence
        return (bytes, operationIndex, base &+ 1, end.sequence)
    }

    private func encode(_ operation: Operation, index: Int, into batch: inout BatchBuilder) throws(NetfilterError) {
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
            let userdata = nftnl_udata_buf_alloc(512)!
            defer { nftnl_udata_buf_free(userdata) }
            var prefix = set.data == .endpoint ? NFTTypeofUserdata.bytes(key: set.key, family: operation.family) ?? [] : []
            prefix += [NetlinkNetfilter.setKeyUserdataType, 0]
            let keyText = Array(KeyField.userdataText(set.key).utf8) + [0]
            prefix[prefix.count - 1] = UInt8(keyText.count)
            prefix += keyText
            nftnl_set_set_data(object, UInt16(NFTNL_SET_USERDATA.rawValue), prefix, UInt32(prefix.count))
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
        case .deleteSet(let name):
            let object = setObject(table: table, name: name, family: family)
            defer { nftnl_set_free(object) }
            batch.message(NFT_MSG_DELSET, family: family, flags: 0, operation: index) { nftnl_set_nlmsg_build_payload($0, object) }
        case .addElements(let name, let elements), .deleteElements(let name, let elements):
            let isAdd = { if case .addElements = operation.kind { return true } else { return false } }()
            let object = setObject(table: table, name: name, family: family)
            defer { nftnl_set_free(object) }
            // In dictionary order: the kernel does not care, and sorting 100,000 keys cost more than encoding them.
            for (key, value) in elements {
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
            batch.elements(
                object, type: isAdd ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM, family: family, flags: isAdd ? create : 0, operation: index)
        }
    }

    private func chainObject(table: String, name: String, family: UInt16) -> OpaquePointer {
        let object = nftnl_chain_alloc()!
        nftnl_chain_set_str(object, UInt16(NFTNL_CHAIN_TABLE.rawValue), table)
        nftnl_chain_set_str(object, UInt16(NFTNL_CHAIN_NAME.rawValue), name)
        nftnl_chain_set_u32(object, UInt16(NFTNL_CHAIN_FAMILY.rawValue), UInt32(family))
        return object
    }

    private func setObject(table: String, name: String, family: UInt16) -> OpaquePointer {
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

    // MARK: Sending and receiving

    private func send(_ bytes: [UInt8]) throws(NetfilterError) {
        let descriptor = mnl_socket_get_fd(socket)
        var size = Int32(clamping: bytes.count + 65_536)
        if bytes.count > 200_000 {
            _ = setsockopt(descriptor, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        let sent = bytes.withUnsafeBytes { mnl_socket_sendto(socket, $0.baseAddress, $0.count) }
        guard sent == bytes.count else { throw NetlinkNetfilter.systemError("sendto (\(bytes.count) bytes)") }
    }

    /// Reads the batch's replies up to the answer to a GETGEN sent after it; returns (errno, sequence)
    /// for each message of the batch (`belongs`) the kernel rejected. Replies to earlier requests still in
    /// the socket (a dump's trailing ACK) are passed over.
    private func collectReplies(belongs: (UInt32) -> Bool) throws(NetfilterError) -> [(Int32, UInt32)] {
        let generationSequence = try requestGeneration()
        var failures: [(Int32, UInt32)] = []
        var done = false
        try receive { header, payload in
            switch Int32(header.nlmsg_type) {
            case NLMSG_ERROR:
                let code = payload.load(as: Int32.self)
                if code != 0 && belongs(header.nlmsg_seq) { failures.append((-code, header.nlmsg_seq)) }
                if header.nlmsg_seq == generationSequence { done = true }
            default:
                if header.nlmsg_seq == generationSequence { done = true }
            }
            return done
        }
        return failures
    }

    private func requestGeneration() throws(NetfilterError) -> UInt32 {
        let number = nextSequence()
        var buffer = [UInt8](repeating: 0, count: 256)
        let length = buffer.withUnsafeMutableBytes { raw -> Int in
            let header = nftnl_nlmsg_build_hdr(
                raw.baseAddress!.assumingMemoryBound(to: CChar.self), UInt16(NFT_MSG_GETGEN.rawValue),
                UInt16(AF_UNSPEC), 0, number)!
            return Int(header.pointee.nlmsg_len)
        }
        try send(Array(buffer.prefix(length)))
        return number
    }

    public func generation() throws(NetfilterError) -> UInt32 {
        let number = try requestGeneration()
        var result: UInt32?
        try receive { header, payload in
            guard header.nlmsg_seq == number else { return false }
            if Int32(header.nlmsg_type) == NLMSG_ERROR {
                let code = payload.load(as: Int32.self)
                if code != 0 { return true }
                return result != nil
            }
            let object = nftnl_gen_alloc()!
            defer { nftnl_gen_free(object) }
            // The message itself (header and attributes), not a copy of its header.
            let message = payload.advanced(by: -MemoryLayout<nlmsghdr>.size).assumingMemoryBound(to: nlmsghdr.self)
            if nftnl_gen_nlmsg_parse(message, object) >= 0 {
                result = nftnl_gen_get_u32(object, UInt16(NFTNL_GEN_ID))
            }
            return true  // the reply is the answer; no ACK is asked for
        }
        guard let result else { throw NetfilterError(kind: .system, message: "no generation id in the kernel's reply") }
        return result
    }

    /// Receives netlink messages until `handle` returns true. `handle` gets each header and a pointer to
    /// its payload (valid during the call only).
    private func receive(_ handle: (nlmsghdr, UnsafeRawPointer) throws(NetfilterError) -> Bool) throws(NetfilterError) {
        // Taken out of the property (not copied: one reference, so writing does not duplicate it).
        var buffer: [UInt8] = []
        swap(&buffer, &receiveBuffer)
        defer { swap(&buffer, &receiveBuffer) }
        while true {
            let received = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(socket, $0.baseAddress, $0.count) }
            guard received > 0 else { throw NetlinkNetfilter.systemError("recvfrom") }
            var finished = false
            var failure: NetfilterError?
            buffer.withUnsafeBytes { raw in
                var offset = 0
                while offset + MemoryLayout<nlmsghdr>.size <= received {
                    let header = raw.loadUnaligned(fromByteOffset: offset, as: nlmsghdr.self)
                    let length = Int(header.nlmsg_len)
                    guard length >= MemoryLayout<nlmsghdr>.size, offset + length <= received else { break }
                    let payload = raw.baseAddress!.advanced(by: offset + MemoryLayout<nlmsghdr>.size)
                    do throws(NetfilterError) {
                        if try handle(header, payload) { finished = true }
                    } catch {
                        failure = error
                    }
                    offset += (length + 3) & ~3
                }
            }
            if let failure { throw failure }
            if finished { return }
        }
    }

    // MARK: Reading back

    public func read(table name: String) throws(NetfilterError) -> Ruleset {
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
                ruleset.tables[family]?.sets[set.name]?.elements = try readElements(of: set, table: name, family: family)
            }
        }
        // Rules chain by chain: the kernel finds a named chain by hash, while a table-wide rule dump
        // re-walks every rule from the start for each 32 KiB it returns (quadratic in the rule count).
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

    private func dumpTables(named name: String) throws(NetfilterError) -> [NFTFamily] {
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

    private func readElements(of set: NFTSet, table: String, family: NFTFamily) throws(NetfilterError) -> [ElementKey: ElementValue?] {
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
    private func dump(
        _ type: nf_tables_msg_types, family: UInt16 = UInt16(AF_UNSPEC), payload: ((UnsafeMutablePointer<nlmsghdr>) -> Void)? = nil,
        _ handle: (UnsafePointer<nlmsghdr>) -> Void
    ) throws(NetfilterError) {
        for _ in 0..<5 {
            let number = nextSequence()
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
            try receive { header, body throws(NetfilterError) in
                guard header.nlmsg_seq == number else { return false }
                if header.nlmsg_flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted = true }
                switch Int32(header.nlmsg_type) {
                case NLMSG_DONE:
                    return true
                case NLMSG_ERROR:
                    let code = body.load(as: Int32.self)
                    if code == 0 { return false }
                    if -code == ENOENT { return true }
                    throw NetlinkNetfilter.kernelError(-code, operation: nil, count: 1)
                default:
                    let message = body.advanced(by: -MemoryLayout<nlmsghdr>.size).assumingMemoryBound(to: nlmsghdr.self)
                    handle(message)
                    return false
                }
            }
            if !interrupted { return }
        }
        throw NetfilterError(kind: .system, message: "the ruleset kept changing while it was read (dump interrupted 5 times)")
    }

    public func deleteTables(named table: String) throws(NetfilterError) -> [NFTFamily] {
        let families = try dumpTables(named: table)
        guard !families.isEmpty else { return [] }
        try apply(Transaction(families.map { Operation($0, table, .deleteTable) }))
        return families
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

    // MARK: Errors

    static func systemError(_ call: String) -> NetfilterError {
        let code = errno
        let kind: NetfilterError.Kind = code == EPERM || code == EACCES ? .permission : .system
        return NetfilterError(kind: kind, code: code, message: "\(call) failed: \(String(cString: strerror(code)))")
    }

    static func kernelError(_ code: Int32, operation: Operation?, count: Int) -> NetfilterError {
        let kind: NetfilterError.Kind
        switch code {
        case ENOENT: kind = .notFound
        case EEXIST, EBUSY: kind = .conflict
        case EPERM, EACCES: kind = .permission
        default: kind = .rejected
        }
        let others = count > 1 ? " (and \(count - 1) more rejected message(s))" : ""
        return NetfilterError(
            kind: kind, code: code, operation: operation,
            message: "the kernel rejected the batch: \(String(cString: strerror(code)))\(others); nothing was applied")
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
