import ArgumentParser
import FerryCore
import FerryProxy
import FerryNFTables
import FerryUserspace
import Foundation

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

    @Option(
        name: .customLong("udp-timeout"),
        help: ArgumentHelp("Milliseconds an idle UDP session lives (kube-proxy's legacy userspace mode: 250).", valueName: "ms"))
    var udpTimeoutMilliseconds: Int = 250

    @Option(
        name: .customLong("udp-max-sessions"),
        help: "UDP sessions held at most (a socket each); datagrams that would open more are dropped and counted.")
    var udpMaxSessions: Int = 8_192

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
        guard (1...3_600_000).contains(udpTimeoutMilliseconds) else { throw ValidationError("--udp-timeout must be 1-3600000 (ms)") }
        guard (1...1_000_000).contains(udpMaxSessions) else { throw ValidationError("--udp-max-sessions must be 1-1000000") }
    }

    func forwarderConfig() -> ForwarderConfig {
        var config = ForwarderConfig(
            workers: workers ?? ProcessInfo.processInfo.activeProcessorCount, idleTimeout: .milliseconds(Int64(idleTimeout * 1000)),
            splice: !copy, pipeSize: pipeKiB * 1_024, edgeTriggered: epoll == "edge")
        config.udpTimeout = .milliseconds(udpTimeoutMilliseconds)
        config.udpSessionLimit = udpMaxSessions
        return config
    }

    func driver(node: NodeContext, nodePortAddresses: [CIDR], primaryOnly: Bool = false) throws -> UserspaceDriver {
        do {
            let routes = try NetlinkRouteTable()
            let forwarder = try Forwarder(config: forwarderConfig())
            var config = UserspaceConfig(
                defaultBalancer: BalancerKind(rawValue: balancer) ?? .roundRobin, nodeAddresses: node.addresses,
                nodePortAddresses: nodePortAddresses)
            config.nodePortPrimaryOnly = primaryOnly
            return UserspaceDriver(UserspaceProxier(listeners: forwarder, routes: routes, config: config), forwarder: forwarder)
        } catch {
            throw CommandFailure.runtime("error: cannot start the userspace data plane: \(error) (Ferry needs root or CAP_NET_ADMIN)")
        }
    }
}
