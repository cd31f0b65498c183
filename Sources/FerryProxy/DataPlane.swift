import CLinux
import FerryCore
import FerrySystem
import FerryNFTables
import FerryUserspace
import Foundation

/// What one sync of a data plane reports to the daemon's log.
public struct DataPlaneOutcome: Sendable {
    /// Nothing happened worth an info line.
    public var quiet: Bool
    public var fields: [(String, String)]
    /// Parts that could not be applied (the rest was): a listener that could not open, say.
    public var problems: [ListenerProblem] = []
    /// A full sync (everything planned and compared with what the kernel holds), not a partial one.
    public var full = false
    /// What the plane was asked for and cannot serve (said once per thing, not every sync).
    public var warnings: [String] = []

    public init(
        quiet: Bool, fields: [(String, String)], problems: [ListenerProblem] = [], full: Bool = false, warnings: [String] = []
    ) {
        self.quiet = quiet
        self.fields = fields
        self.problems = problems
        self.full = full
        self.warnings = warnings
    }
}

/// Why a data plane refused a sync, as the plane said it (the last good state stays in force).
public enum DataPlaneError: Error, Sendable, CustomStringConvertible {
    /// nftables: the kernel refused the batch, or netlink failed.
    case netfilter(NetfilterError)
    /// userspace: a system call failed (routes over rtnetlink, say).
    case system(SystemError)

    public var description: String {
        switch self {
        case .netfilter(let error): return "\(error)"
        case .system(let error): return "\(error)"
        }
    }

    /// The kernel said the process may not do this (EPERM): retrying will not help.
    public var isPermissionDenied: Bool {
        switch self {
        case .netfilter(let error): return error.kind == .permission
        case .system(let error): return error.errno == EPERM || error.errno == EACCES
        }
    }
}

/// A data plane as the daemon drives it: the nftables proxier or the userspace proxier.
public protocol DataPlaneDriver: AnyObject {
    /// Brings the data plane to `tables`. `changed` names the service ports that differ from the
    /// tables of the previous call (the change tracker's `changedPorts`): a hint a plane may use to
    /// compare only those, after a successful previous call.
    func sync(_ tables: BackendTables, changed: Set<ServicePortName>, verify: Bool) throws(DataPlaneError) -> DataPlaneOutcome
    /// Something is left to do soon (stale chains to delete, listeners to retry).
    var hasPendingWork: Bool { get }
    /// Removes what this plane set up that must not outlive Ferry, letting work in flight finish for up
    /// to `grace` first.
    func shutdown(grace: Duration) throws
    /// Counters worth a line when Ferry stops.
    var statistics: [(String, String)] { get }
    /// The node's addresses, for NodePorts: given at start, then as the Node object changes.
    func setNodeAddresses(_ addresses: [IPAddress])
}

/// The nftables mode.
public final class NFTablesDriver: DataPlaneDriver {
    public let proxier: NFTablesProxier

    public init(_ proxier: NFTablesProxier) { self.proxier = proxier }

    public func sync(_ tables: BackendTables, changed: Set<ServicePortName>, verify: Bool) throws(DataPlaneError) -> DataPlaneOutcome {
        let report: NFTablesSyncReport
        do {
            report = try proxier.sync(tables, changed: changed, verify: verify)
        } catch {
            throw .netfilter(error)
        }
        // A full sync builds the whole ruleset and its netlink batch (at 10,000 services 490 MiB at the peak
        // when this was measured; ~150 MiB above the source's objects since), then frees them, and glibc
        // keeps the freed pages: `ferry bench api` measured a steady 258-320 MiB after it (4 runs), 221-257 MiB with them handed back here (4 runs, same minutes).
        // The rest is pages the freed ruleset shared with live objects. One walk of the heap per full sync.
        if report.readBack { malloc_trim(0) }
        let counts = report.transaction.summary
        return DataPlaneOutcome(
            quiet: report.transaction.isEmpty && !report.readBack,
            fields: [
                ("operations", "\(report.transaction.operations.count)"), ("elements+", "\(counts.elementsAdded)"),
                ("elements-", "\(counts.elementsDeleted)"), ("rules", "\(counts.rules)"), ("chains-", "\(counts.chainsDeleted)"),
                ("read-back", "\(report.readBack)"), ("kernel", "\(report.kernelDuration)"),
                ("udp-flows-deleted", "\(report.flowsDeleted)"),
            ], full: report.readBack)
    }

    public var hasPendingWork: Bool { proxier.hasPendingDeletions }

    public func setNodeAddresses(_ addresses: [IPAddress]) { proxier.setNodeAddresses(addresses) }

    /// The rules stay: they keep forwarding while Ferry restarts (nothing to wait for).
    public func shutdown(grace: Duration) throws {}

    public var statistics: [(String, String)] { [] }
}

/// The userspace mode.
public final class UserspaceDriver: DataPlaneDriver {
    public let proxier: UserspaceProxier
    public let forwarder: Forwarder
    private var retry = false
    private var warned: Set<ServicePortName> = []
    private var warnedNoNodeAddress = false
    /// UDP datagrams dropped at the session bound, as of the last sync (each sync says if it grew).
    private var sessionLimitDrops = 0

    public init(_ proxier: UserspaceProxier, forwarder: Forwarder) {
        self.proxier = proxier
        self.forwarder = forwarder
    }

    public func sync(_ tables: BackendTables, changed: Set<ServicePortName>, verify: Bool) throws(DataPlaneError) -> DataPlaneOutcome {
        let report: UserspaceSyncReport
        do {
            report = try proxier.sync(tables)
        } catch {
            throw .system(error)
        }
        retry = !report.problems.isEmpty
        let stats = forwarder.stats
        // Said once each: what this mode does not serve.
        var warnings: [String] = []
        for entry in tables.ports.values where entry.name.protocol == .sctp && !warned.contains(entry.name) {
            warned.insert(entry.name)
            warnings.append("\(entry.name): userspace mode relays TCP and UDP only; this SCTP port is not served")
        }
        let drops = stats.udpSessionLimitDrops.load(ordering: .relaxed)
        if drops > sessionLimitDrops {
            warnings.append(
                "UDP session bound reached (\(forwarder.config.udpSessionLimit), --udp-max-sessions): \(drops - sessionLimitDrops) datagram(s) from new clients dropped since the last sync"
            )
            sessionLimitDrops = drops
        }
        let nodePorts = tables.ports.values.filter { $0.nodePort != nil && $0.name.protocol != .sctp }
        if !nodePorts.isEmpty, proxier.config.nodePortListenAddresses.isEmpty, !warnedNoNodeAddress {
            warnedNoNodeAddress = true
            warnings.append(
                "no usable node address for NodePorts (check --node-ip, --nodeport-addresses and the Node object): \(nodePorts.count) NodePort(s) not served")
        }
        var outcome = DataPlaneOutcome(
            quiet: report.opened == 0 && report.closed == 0 && report.routesAdded == 0 && report.routesDeleted == 0
                && report.poolsUpdated == 0
                && !retry,
            fields: [
                ("listeners+", "\(report.opened)"), ("listeners-", "\(report.closed)"), ("routes+", "\(report.routesAdded)"),
                ("routes-", "\(report.routesDeleted)"), ("pools", "\(report.poolsUpdated)"),
                ("connections", "\(stats.active.load(ordering: .relaxed))"),
                ("udp-sessions", "\(stats.udpSessions.load(ordering: .relaxed))"),
            ],
            problems: report.problems)
        outcome.warnings = warnings
        return outcome
    }

    public var hasPendingWork: Bool { retry }

    public func setNodeAddresses(_ addresses: [IPAddress]) { proxier.setNodeAddresses(addresses) }

    /// Stops accepting at once, lets established connections finish for up to `grace` (their routes
    /// stay until then, or their packets would stop arriving), then removes the routes and resets what is left.
    public func shutdown(grace: Duration) throws {
        proxier.stopAccepting()
        let deadline = ContinuousClock.now + grace
        while forwarder.stats.active.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline {
            Thread.sleep(forTimeInterval: 0.05)
        }
        // A finished connection's last bytes may still be on their way to its client from a socket the
        // relay closed: its service address stays routed until they are acknowledged (see ClosingTCPSockets).
        let routed = proxier.routedAddresses
        while ContinuousClock.now < deadline && ClosingTCPSockets.localAddresses().contains(where: routed.contains) {
            Thread.sleep(forTimeInterval: 0.05)
        }
        try proxier.shutdown()
        forwarder.stop()
    }

    public var statistics: [(String, String)] { Self.statistics(of: forwarder) }

    /// The relay's counters (atomics: safe to read from any thread while it runs).
    public static func statistics(of forwarder: Forwarder) -> [(String, String)] {
        let stats = forwarder.stats
        let values: [(String, Int)] = [
            ("accepted", stats.accepted.load(ordering: .relaxed)), ("established", stats.established.load(ordering: .relaxed)),
            ("connect-failures", stats.connectFailures.load(ordering: .relaxed)), ("no-backend", stats.noBackend.load(ordering: .relaxed)),
            ("source-refused", stats.sourceRefused.load(ordering: .relaxed)), ("accept-pauses", stats.acceptPauses.load(ordering: .relaxed)),
            ("descriptor-shortages", stats.descriptorShortages.load(ordering: .relaxed)),
            ("idle-timeouts", stats.idleTimeouts.load(ordering: .relaxed)),
            ("spliced-directions", stats.splicedDirections.load(ordering: .relaxed)), ("bytes", stats.bytes.load(ordering: .relaxed)),
            ("udp-sessions-opened", stats.udpSessionsOpened.load(ordering: .relaxed)),
            ("udp-datagrams", stats.udpDatagrams.load(ordering: .relaxed)), ("udp-replies", stats.udpReplies.load(ordering: .relaxed)),
            ("udp-no-backend", stats.udpNoBackend.load(ordering: .relaxed)),
            ("udp-session-limit-drops", stats.udpSessionLimitDrops.load(ordering: .relaxed)),
            ("udp-unreachable", stats.udpUnreachable.load(ordering: .relaxed)),
        ]
        return values.map { ($0.0, String($0.1)) }
    }
}

