import FerrySystem
import Glibc

/// What the nftables data plane needs from the kernel. Two implementations: `NetlinkNetfilter` (the
/// kernel, over libnftnl/libmnl) and `InMemoryNetfilter` (a twin for tests without root). Both apply a
/// transaction atomically and fail with the same error kinds.
public protocol Netfilter: AnyObject {
    /// Applies every operation or none.
    func apply(_ transaction: Transaction) throws(NetfilterError)
    /// Ferry's tables named `table` in every family, as the kernel holds them. Rules read back carry
    /// their fingerprint (`Statement.unparsed`); dynamic sets come without their elements, and so do the
    /// sets named in `skippingElementsOf` (marked `elementsUnread`: the caller rewrites them whole).
    func read(table: String, skippingElementsOf: Set<String>) throws(NetfilterError) -> Ruleset
    /// Deletes the tables named `table` in every family; returns the families that had one.
    func deleteTables(named table: String) throws(NetfilterError) -> [NFTFamily]
    /// A number that changes whenever anyone commits a change to nftables (`NFT_MSG_GETGEN`).
    func generation() throws(NetfilterError) -> UInt32
}

extension Netfilter {
    /// Ferry's tables with every set's elements (but dynamic sets').
    public func read(table: String) throws(NetfilterError) -> Ruleset { try read(table: table, skippingElementsOf: []) }
}

/// A failure talking to nftables.
public struct NetfilterError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// An object the operation needs does not exist (ENOENT).
        case notFound
        /// The object exists already (EEXIST) or is still in use (EBUSY).
        case conflict
        /// The kernel refused the operation for another reason (EINVAL, EOPNOTSUPP, …).
        case rejected
        /// No permission (EPERM): Ferry needs root or CAP_NET_ADMIN.
        case permission
        /// The socket or the library failed.
        case system
    }

    public var kind: Kind
    /// The errno the kernel or a system call gave, 0 when none.
    public var code: Int32
    /// The operation the kernel rejected, when known.
    public var operation: Operation?
    public var message: String

    public init(kind: Kind, code: Int32 = 0, operation: Operation? = nil, message: String) {
        self.kind = kind
        self.code = code
        self.operation = operation
        self.message = message
    }

    /// A failed system call on the netlink socket: a permission error when the errno says so.
    public init(_ error: SystemError) {
        let kind: Kind = error.errno == EPERM || error.errno == EACCES ? .permission : .system
        self.init(kind: kind, code: error.errno, message: "\(error)")
    }

    public var description: String {
        guard let operation else { return message }
        return "\(message) (\(operation.objectDescription))"
    }
}
