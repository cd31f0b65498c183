import CMnl
import CNftnl
import Dispatch
import FerryCore
import FerrySystem
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
    let socket: NetlinkSocket
    /// Up to this many chains, rules are read back by one table-wide dump, chain by chain above (see
    /// `read`). Settable for tests of the chain-by-chain path.
    public var tableWideRuleDumpLimit = 60_000

    public init() throws(NetfilterError) {
        do {
            socket = try NetlinkSocket(bus: NETLINK_NETFILTER, name: "nftables")
        } catch {
            throw NetfilterError(error)
        }
    }

    /// A socket bound to the network namespace at `path` (e.g. `/run/netns/NAME`): see
    /// `NetlinkSocket.inNetworkNamespace`. For tests and benchmarks.
    public static func inNamespace(_ path: String) throws(NetfilterError) -> NetlinkNetfilter {
        do {
            return try NetlinkSocket.inNetworkNamespace(path) { try NetlinkNetfilter() }
        } catch let error as NetfilterError {
            throw error
        } catch let error as SystemError {
            throw NetfilterError(error)
        } catch {
            throw NetfilterError(kind: .system, message: "\(error)")
        }
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
    func encodeBatch(_ transaction: Transaction) throws(NetfilterError) -> ([UInt8], [UInt32: Int], first: UInt32, last: UInt32) {
        let operations = transaction.operations
        let chunkSize = 8_192
        let chunks = (operations.count + chunkSize - 1) / chunkSize
        let base = socket.nextSequence()
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
        socket.advanceSequence(past: end.sequence)
        return (bytes, operationIndex, base &+ 1, end.sequence)
    }


    // MARK: Sending and receiving

    func send(_ bytes: [UInt8]) throws(NetfilterError) {
        do {
            try socket.send(bytes)
        } catch {
            throw NetfilterError(error)
        }
    }

    /// Reads the batch's replies up to the answer to a GETGEN sent after it; returns (errno, sequence)
    /// for each message of the batch (`belongs`) the kernel rejected. Replies to earlier requests still in
    /// the socket (a dump's trailing ACK) are passed over.
    func collectReplies(belongs: (UInt32) -> Bool) throws(NetfilterError) -> [(Int32, UInt32)] {
        let generationSequence = try requestGeneration()
        var failures: [(Int32, UInt32)] = []
        var done = false
        try receive { message in
            if let code = message.errorCode, code != 0, belongs(message.sequence) { failures.append((code, message.sequence)) }
            if message.sequence == generationSequence { done = true }
            return done
        }
        return failures
    }

    func requestGeneration() throws(NetfilterError) -> UInt32 {
        let number = socket.nextSequence()
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
        try receive { message in
            guard message.sequence == number else { return false }
            if let code = message.errorCode { return code != 0 || result != nil }
            let object = nftnl_gen_alloc()!
            defer { nftnl_gen_free(object) }
            if nftnl_gen_nlmsg_parse(message.header, object) >= 0 {
                result = nftnl_gen_get_u32(object, UInt16(NFTNL_GEN_ID))
            }
            return true  // the reply is the answer; no ACK is asked for
        }
        guard let result else { throw NetfilterError(kind: .system, message: "no generation id in the kernel's reply") }
        return result
    }

    /// Receives messages until `handle` returns true (see `NetlinkSocket.receive`).
    func receive(_ handle: (NetlinkMessage) throws(NetfilterError) -> Bool) throws(NetfilterError) {
        try socket.receive(handle, socketError: NetfilterError.init)
    }

    public func deleteTables(named table: String) throws(NetfilterError) -> [NFTFamily] {
        let families = try dumpTables(named: table)
        guard !families.isEmpty else { return [] }
        try apply(Transaction(families.map { Operation($0, table, .deleteTable) }))
        return families
    }

    // MARK: Errors

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
