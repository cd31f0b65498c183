import ArgumentParser
import CLinux
import FerryCore
import FerryNFTables
import FerryUserspace
import Foundation

/// What one sync of a data plane reports to the daemon's log.
struct DataPlaneOutcome {
    /// Nothing happened worth an info line.
    var quiet: Bool
    var fields: [(String, String)]
    /// Parts that could not be applied (the rest was).
    var problems: [String] = []
}

/// A data plane as the daemon drives it: the nftables proxier or the userspace proxier.
protocol DataPlaneDriver: AnyObject {
    func sync(_ tables: BackendTables, verify: Bool) throws -> DataPlaneOutcome
    /// Something is left to do soon (stale chains to delete, listeners to retry).
    var hasPendingWork: Bool { get }
    /// Removes what this plane set up that must not outlive Ferry.
    func shutdown() throws
    /// Counters worth a line when Ferry stops.
    var statistics: [(String, String)] { get }
    /// The node's addresses, for NodePorts: given at start, then as the Node object changes.
    func setNodeAddresses(_ addresses: [IPAddress])
}

/// The nftables mode.
final class NFTablesDriver: DataPlaneDriver {
    let proxier: NFTablesProxier

    init(_ proxier: NFTablesProxier) { self.proxier = proxier }

    func sync(_ tables: BackendTables, verify: Bool) throws -> DataPlaneOutcome {
        let report = try proxier.sync(tables, verify: verify)
        // A full sync builds the whole ruleset and its netlink batch (at 10,000 services, 490 MiB at the
        // peak), then frees them, and glibc keeps the freed pages: `ferry bench api` measured a steady
        // 258-320 MiB after it (4 runs), 221-257 MiB with them handed back here (4 runs, same minutes).
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
            ])
    }

    var hasPendingWork: Bool { proxier.hasPendingDeletions }

    func setNodeAddresses(_ addresses: [IPAddress]) { proxier.setNodeAddresses(addresses) }

    /// The rules stay: they keep forwarding while Ferry restarts.
    func shutdown() throws {}

    var statistics: [(String, String)] { [] }
}

/// The userspace mode.
final class UserspaceDriver: DataPlaneDriver {
    let proxier: UserspaceProxier
    let forwarder: Forwarder
    private var retry = false

    init(_ proxier: UserspaceProxier, forwarder: Forwarder) {
        self.proxier = proxier
        self.forwarder = forwarder
    }

    func sync(_ tables: BackendTables, verify: Bool) throws -> DataPlaneOutcome {
        let report = try proxier.sync(tables)
        retry = !report.problems.isEmpty
        let stats = forwarder.stats
        return DataPlaneOutcome(
            quiet: report.opened == 0 && report.closed == 0 && report.routesAdded == 0 && report.routesDeleted == 0
                && report.poolsUpdated == 0
                && !retry,
            fields: [
                ("listeners+", "\(report.opened)"), ("listeners-", "\(report.closed)"), ("routes+", "\(report.routesAdded)"),
                ("routes-", "\(report.routesDeleted)"), ("pools", "\(report.poolsUpdated)"),
                ("connections", "\(stats.active.load(ordering: .relaxed))"),
            ],
            problems: report.problems.map(\.description))
    }

    var hasPendingWork: Bool { retry }

    func setNodeAddresses(_ addresses: [IPAddress]) { proxier.setNodeAddresses(addresses) }

    func shutdown() throws {
        try proxier.shutdown()
        forwarder.stop()
    }

    var statistics: [(String, String)] {
        let stats = forwarder.stats
        let values: [(String, Int)] = [
            ("accepted", stats.accepted.load(ordering: .relaxed)), ("established", stats.established.load(ordering: .relaxed)),
            ("connect-failures", stats.connectFailures.load(ordering: .relaxed)), ("no-backend", stats.noBackend.load(ordering: .relaxed)),
            ("accept-pauses", stats.acceptPauses.load(ordering: .relaxed)),
            ("descriptor-shortages", stats.descriptorShortages.load(ordering: .relaxed)),
            ("idle-timeouts", stats.idleTimeouts.load(ordering: .relaxed)),
            ("spliced-directions", stats.splicedDirections.load(ordering: .relaxed)), ("bytes", stats.bytes.load(ordering: .relaxed)),
        ]
        return values.map { ($0.0, String($0.1)) }
    }
}

/// Options of the userspace mode.
struct UserspaceOptions: ParsableArguments {
    @Option(
        name: .customLong("userspace-balancer"),
        help: "round-robin, least-connections, random or maglev (per service: annotation ferry.io/userspace-balancer).")
    var balancer: String = BalancerKind.roundRobin.rawValue

    @Option(name: .customLong("userspace-workers"), help: "Event-loop threads (default: one per core).")
    var workers: Int?

    @Option(name: .customLong("userspace-idle-timeout"), help: "Seconds without traffic before a relayed connection is reset.")
    var idleTimeout: Double = 3600

    @Flag(name: .customLong("userspace-copy"), help: "Relay with read/write through a buffer instead of splice.")
    var copy = false

    @Option(name: .customLong("userspace-epoll"), help: "level (default) or edge: how connection sockets are registered with epoll.")
    var epoll: String = "level"

    @Option(name: .customLong("userspace-pipe-size"), help: "KiB a spliced direction may hold in its pipe (64-1024).")
    var pipeKiB: Int = 1_024

    func validate() throws {
        guard BalancerKind(rawValue: balancer) != nil else {
            throw ValidationError("--userspace-balancer: unknown balancer \"\(balancer)\": expected \(BalancerKind.choices)")
        }
        if let workers, !(1...256).contains(workers) { throw ValidationError("--userspace-workers must be between 1 and 256") }
        guard idleTimeout > 0 else { throw ValidationError("--userspace-idle-timeout must be positive") }
        guard ["edge", "level"].contains(epoll) else {
            throw ValidationError("--userspace-epoll: expected edge or level, not \"\(epoll)\"")
        }
        guard (64...1_024).contains(pipeKiB) else { throw ValidationError("--userspace-pipe-size must be between 64 and 1024 (KiB)") }
    }

    func forwarderConfig() -> ForwarderConfig {
        ForwarderConfig(
            workers: workers ?? ProcessInfo.processInfo.activeProcessorCount, idleTimeout: .milliseconds(Int64(idleTimeout * 1000)),
            splice: !copy, pipeSize: pipeKiB * 1_024, edgeTriggered: epoll == "edge")
    }

    func driver(node: NodeContext, nodePortAddresses: [CIDR]) throws -> UserspaceDriver {
        do {
            let routes = try NetlinkRouteTable()
            let forwarder = try Forwarder(config: forwarderConfig())
            let config = UserspaceConfig(
                defaultBalancer: BalancerKind(rawValue: balancer) ?? .roundRobin, nodeAddresses: node.addresses,
                nodePortAddresses: nodePortAddresses)
            return UserspaceDriver(UserspaceProxier(listeners: forwarder, routes: routes, config: config), forwarder: forwarder)
        } catch {
            throw CommandFailure.runtime("error: cannot start the userspace data plane: \(error) (Ferry needs root or CAP_NET_ADMIN)")
        }
    }
}
