import ArgumentParser
import FerryCore
import FerryProxy
import FerryNFTables
import FerryUserspace
import Foundation

/// Options of the nftables data plane, shared by `sync` and `run`.
struct NFTablesOptions: ParsableArguments {
    @Flag(name: .customLong("masquerade-all"), help: "Masquerade all traffic to services.")
    var masqueradeAll = false

    @Option(
        name: .customLong("nodeport-addresses"),
        help: "Serve NodePorts only on node addresses inside these CIDRs (comma-separated), or `primary`: on the node's primary address of each family.")
    var nodePortAddresses: String?

    /// `--nodeport-addresses primary`.
    var nodePortPrimaryOnly: Bool { nodePortAddresses?.trimmingCharacters(in: .whitespaces) == "primary" }

    func validate() throws {
        _ = try parsedNodePortAddresses()
    }

    func parsedNodePortAddresses() throws -> [CIDR] {
        guard let nodePortAddresses, !nodePortPrimaryOnly else { return [] }
        return try nodePortAddresses.split(separator: ",").map { text in
            guard let cidr = CIDR(String(text)) else {
                throw ValidationError("--nodeport-addresses: \"\(text)\" is not a valid CIDR such as 10.0.0.0/24")
            }
            return cidr
        }
    }

    /// `serviceCIDRs`: the ranges given with --service-cluster-ip-range (none: no drop rule).
    func plannerConfig(node: NodeOptions, context: NodeContext, serviceCIDRs: [CIDR]) throws -> PlannerConfig {
        var config = PlannerConfig(
            clusterCIDRs: try node.parsedCIDRs(), masqueradeAll: masqueradeAll, nodePortAddresses: try parsedNodePortAddresses(),
            nodeAddresses: context.addresses, serviceCIDRs: serviceCIDRs)
        config.nodePortPrimaryOnly = nodePortPrimaryOnly
        return config
    }
}

/// The data plane a command drives.
enum DataPlaneMode: String, ExpressibleByArgument, CaseIterable {
    case nftables
    case userspace
}

/// `ferry sync`: build the tables, program nftables once, exit.
struct SyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Program the nftables rules for the current objects once, then exit.",
        discussion: """
            Reads Ferry's tables back first and sends only the difference, in one atomic netlink batch. \
            --dry-run prints the ruleset in nft syntax and touches nothing.
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var node: NodeOptions
    @OptionGroup var nftables: NFTablesOptions

    @Option(help: "The data plane (sync programs nftables only).")
    var mode: DataPlaneMode = .nftables

    @Flag(name: .customLong("dry-run"), help: "Print the ruleset in nft syntax; change nothing.")
    var dryRun = false

    @Flag(
        name: .customLong("skip-bad-files"),
        help: "Program what the good manifests define even when others have problems (reported; exit 2 after).")
    var skipBadFiles = false

    func validate() throws {
        if mode != .nftables { throw ValidationError("sync programs the nftables data plane; use --mode nftables") }
    }

    /// The backend tables and planner settings from the source, and what was wrong in it; the objects
    /// read are freed on return, before planning (16 MiB of the 118 MiB peak of reading 10,000 services
    /// and their slices: the tables keep the rest).
    private func plannedInput() async throws -> (BackendTables, PlannerConfig, [ManifestError]) {
        let loaded = try await source.read(nodeName: node.nodeName ?? HostInfo.hostName(), requireNamed: !dryRun)
        // The kernel is changed only from manifests without problems, unless asked; a dry run shows the
        // good ones and then fails.
        if !dryRun, !skipBadFiles { try loaded.failOnProblems() }
        let context = try node.context(state: loaded.state)
        let tables = TableBuilder.build(loaded.state, node: context)
        let config = try nftables.plannerConfig(node: node, context: context, serviceCIDRs: try source.givenServiceCIDRs())
        return (tables, config, loaded.problems)
    }

    func run() async throws {
        if !dryRun, !HostInfo.canAdministerNetwork() {
            throw CommandFailure.runtime("error: ferry sync programs the node's nftables: it needs root or CAP_NET_ADMIN (or use --dry-run)")
        }
        let (tables, config, problems) = try await plannedInput()
        if dryRun {
            print(Renderer.text(Planner.plan(tables, config: config)), terminator: "")
            fflush(nil)
            if !problems.isEmpty { throw CommandFailure.badInput(problems) }
            return
        }
        // The daemon's proxier, as `run` uses it: a full sync (Ferry's tables read back and compared), then,
        // when stale chains or sets were emptied, the pass that deletes them (the daemon's next sync).
        // (Planned there only: a ruleset planned here as well was a second copy of everything, 0.5 s and
        // ~70 MiB at 10,000 services.)
        let proxier = NFTablesProxier(netfilter: try openNetfilter(), config: config, conntrack: nil)
        let clock = ContinuousClock()
        var operations: [FerryNFTables.Operation] = []
        let elapsed = try clock.measure {
            operations = try proxier.sync(tables, verify: true).transaction.operations
            if proxier.hasPendingDeletions { operations += try proxier.sync(tables, verify: false).transaction.operations }
        }
        let counts = Transaction(operations).summary
        let summary =
            "\(operations.count) operations: \(counts.chainsAdded) chains added, \(counts.chainsFlushed) flushed, "
            + "\(counts.chainsDeleted) deleted, \(counts.rules) rules, \(counts.elementsAdded) elements added, \(counts.elementsDeleted) deleted"
        print("synced \(tables.count) service ports in \(elapsed): \(summary)")
        fflush(nil)
        if !problems.isEmpty { throw CommandFailure.badInput(problems) }
    }
}

/// `ferry cleanup`: remove everything Ferry made.
struct CleanupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup",
        abstract:
            "Delete what Ferry made: its nftables tables (ip ferry, ip6 ferry) and the userspace mode's local routes. Safe to run again.")

    func run() async throws {
        let netfilter = try openNetfilter()
        let removed = try netfilter.deleteTables(named: Planner.tableName)
        var parts = removed.map { "table \($0.rawValue) \(Planner.tableName)" }
        do {
            let routes = try UserspaceProxier.removeRoutes(NetlinkRouteTable())
            if routes > 0 { parts.append("\(routes) local route\(routes == 1 ? "" : "s") (proto \(NetlinkRouteTable.routeProtocol))") }
        } catch {
            throw CommandFailure.runtime("error: removing the userspace mode's local routes: \(error)")
        }
        print(parts.isEmpty ? "nothing to remove" : "removed " + parts.joined(separator: ", "))
    }
}

/// The kernel, or a clear error saying why not.
func openNetfilter() throws -> NetlinkNetfilter {
    do {
        return try NetlinkNetfilter()
    } catch {
        throw CommandFailure.runtime("error: cannot open a netfilter netlink socket: \(error) (Ferry needs root or CAP_NET_ADMIN)")
    }
}
