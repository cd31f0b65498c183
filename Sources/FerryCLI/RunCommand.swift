import ArgumentParser
import Dispatch
import FerryCore
import FerrySystem
import FerryNFTables
import FerryProxy
import FerrySources
import FerryUserspace
import Foundation
import Logging
import Synchronization

/// `ferry run`: the node proxy. Reads its sources, keeps the backend tables, programs the data plane.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the proxy: follow the sources and keep the data plane programmed until stopped.",
        discussion: """
            Nothing is programmed before the sources' initial sync. Changes are coalesced (at most one sync \
            per --min-sync-period); a full resync every --sync-period reads Ferry's tables back if anything \
            else changed nftables, and repairs them. SIGTERM/SIGINT stop Ferry and leave the rules in place \
            (run `ferry cleanup` to remove them). In userspace mode Ferry itself accepts and relays TCP \
            connections and UDP datagrams; on exit it closes its listeners and removes its local routes.
            """)

    @OptionGroup var source: SourceOptions
    @OptionGroup var node: NodeOptions
    @OptionGroup var nftables: NFTablesOptions
    @OptionGroup var userspace: UserspaceOptions

    @Option(help: "The data plane.")
    var mode: DataPlaneMode = .nftables

    @Option(name: .customLong("sync-period"), help: "Seconds between full resyncs.")
    var syncPeriod: Double = 30

    @Option(name: .customLong("min-sync-period"), help: "Minimum seconds between two syncs (bursts are coalesced).")
    var minSyncPeriod: Double = 1

    @Option(
        name: .customLong("healthz-bind-address"),
        help: ArgumentHelp("Where /healthz and /livez answer, as kube-proxy's (empty: nowhere).", valueName: "host:port"))
    var healthzBindAddress = "0.0.0.0:10256"

    @Option(
        name: .customLong("metrics-bind-address"),
        help: ArgumentHelp("Where Prometheus /metrics answers, as kube-proxy's (empty: nowhere).", valueName: "host:port"))
    var metricsBindAddress = "127.0.0.1:10249"

    @Option(
        help: ArgumentHelp(
            "kube-proxy's KubeProxyConfiguration (v1alpha1) file, plus a ferry: section; flags given as well win.", valueName: "file"))
    var config: String?

    @Option(
        name: .customLong("write-config-to"),
        help: ArgumentHelp("Write the effective configuration (file and flags) to this file and exit.", valueName: "file"))
    var writeConfigTo: String?

    @Option(
        name: .customLong("shutdown-grace"),
        help: "userspace: seconds established connections may take to finish after SIGTERM before they are reset.")
    var shutdownGrace: Double = 10

    @Option(
        name: .customLong("conntrack-udp-timeout"),
        help: ArgumentHelp("Seconds an idle UDP flow stays in conntrack (kube-proxy's flag; 0: leave the kernel's).", valueName: "s"))
    var conntrackUDPTimeout: Double = 0

    @Option(
        name: .customLong("conntrack-udp-timeout-stream"),
        help: ArgumentHelp("Seconds an idle UDP stream (replies seen) stays in conntrack (0: leave the kernel's).", valueName: "s"))
    var conntrackUDPStreamTimeout: Double = 0

    @Flag(help: "Remove every rule, set and route Ferry made, then exit (as `ferry cleanup`).")
    var cleanup = false

    @Option(name: .customLong("log-format"), help: "text (default) or json: one JSON object per line.")
    var logFormat = "text"

    @Option(
        name: .customLong("v"),
        help: ArgumentHelp("kube-proxy's verbosity (also -v N): 4 or more logs at debug level, 6 or more at trace (overrides --log-level).", valueName: "n"))
    var verbosity: Int?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func validate() throws {
        guard syncPeriod >= 1, minSyncPeriod >= 0, minSyncPeriod <= syncPeriod else {
            throw ValidationError("--sync-period must be at least 1 and --min-sync-period between 0 and it")
        }
        guard conntrackUDPTimeout >= 0, conntrackUDPStreamTimeout >= 0 else {
            throw ValidationError("--conntrack-udp-timeout and --conntrack-udp-timeout-stream must be 0 or more seconds")
        }
        guard shutdownGrace >= 0 else { throw ValidationError("--shutdown-grace must be 0 or more seconds") }
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format: expected text or json, not \"\(logFormat)\"") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level \"\(logLevel)\"") }
        if !metricsBindAddress.isEmpty, ProbeServer.splitAddress(metricsBindAddress) == nil {
            throw ValidationError("--metrics-bind-address: \"\(metricsBindAddress)\" is not HOST:PORT such as 127.0.0.1:10249")
        }
        if !healthzBindAddress.isEmpty, ProbeServer.splitAddress(healthzBindAddress) == nil {
            throw ValidationError("--healthz-bind-address: \"\(healthzBindAddress)\" is not HOST:PORT such as 0.0.0.0:10256")
        }
    }

    func run() async throws {
        if let writeConfigTo {
            do {
                try ProxyConfiguration.render(self).write(toFile: writeConfigTo, atomically: true, encoding: .utf8)
            } catch {
                throw CommandFailure.runtime("error: --write-config-to \(writeConfigTo): \(error.localizedDescription)")
            }
            return
        }
        if cleanup {
            let command = CleanupCommand()
            try await command.run()
            return
        }
        let level: Logger.Level =
            verbosity.map { $0 >= 6 ? .trace : $0 >= 4 ? .debug : .info } ?? Logger.Level(rawValue: logLevel) ?? .info
        if logFormat == "json" {
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: level) }
        } else {
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        }
        let logger = Logger(label: "ferry")
        // (Resolved once: the kubeconfig is read here, and only here.)
        let objects = try source.objectSource(nodeName: node.nodeName ?? HostInfo.hostName(), requireNamed: true)
        // Without it every sync is refused (EPERM) and the daemon would retry forever, applying nothing.
        guard HostInfo.canAdministerNetwork() else {
            throw CommandFailure.runtime("error: ferry \(Self.configuration.commandName!) programs the node's network: it needs root or CAP_NET_ADMIN")
        }
        // Flags only: the Node object's addresses (then the host's) come in as the sources report it,
        // and NodePorts follow them when they change.
        let context = NodeContext(name: node.nodeName ?? HostInfo.hostName(), addresses: try node.parsedIPs())
        // As kube-proxy: the UDP conntrack timeouts of this network namespace, when given.
        for (value, name) in [(conntrackUDPTimeout, "nf_conntrack_udp_timeout"), (conntrackUDPStreamTimeout, "nf_conntrack_udp_timeout_stream")]
        where value > 0 {
            let path = "/proc/sys/net/netfilter/\(name)"
            do {
                try "\(Int(value.rounded()))\n".write(toFile: path, atomically: false, encoding: .utf8)
                logger.info("set a conntrack timeout", metadata: ["sysctl": "\(name)", "seconds": "\(Int(value.rounded()))"])
            } catch {
                logger.error("cannot set a conntrack timeout", metadata: ["path": "\(path)", "error": "\(error.localizedDescription)"])
            }
        }
        let metrics = metricsBindAddress.isEmpty ? nil : ProxyMetrics(mode: mode.rawValue)
        let plane: DataPlaneDriver
        switch mode {
        case .nftables:
            let netfilter = try openNetfilter()
            if let removed = try? UserspaceProxier.removeRoutes(NetlinkRouteTable()), removed > 0 {
                logger.info("removed the userspace mode's local routes", metadata: ["routes": "\(removed)"])
            }
            // Without conntrack, a UDP client keeps reaching a removed endpoint until its flow times out:
            // said in the log and in ferry_conntrack_cleanup_enabled, not silently dropped.
            var conntrack: NetlinkConntrack?
            do {
                conntrack = try NetlinkConntrack()
            } catch {
                logger.warning(
                    "UDP conntrack cleanup is off: the conntrack netlink socket cannot be opened (clients may keep reaching removed UDP endpoints until their flows expire)",
                    metadata: ["error": "\(error)"])
            }
            metrics?.conntrackCleanup.set(to: conntrack == nil ? 0 : 1)
            plane = NFTablesDriver(
                NFTablesProxier(
                    netfilter: netfilter, config: try nftables.plannerConfig(node: node, context: context, serviceCIDRs: try source.givenServiceCIDRs()), conntrack: conntrack))
        case .userspace:
            // The nftables mode's rules would DNAT service traffic before it reaches Ferry's sockets.
            if let removed = try? openNetfilter().deleteTables(named: Planner.tableName), !removed.isEmpty {
                logger.info("removed the nftables mode's tables", metadata: ["tables": "\(removed.map(\.rawValue))"])
            }
            plane = try userspace.driver(
                node: context, nodePortAddresses: try nftables.parsedNodePortAddresses(), primaryOnly: nftables.nodePortPrimaryOnly)
        }
        // The userspace relay's counters (atomics), read at each scrape.
        let forwarder = (plane as? UserspaceDriver)?.forwarder
        let poolBoard = (plane as? UserspaceDriver)?.proxier.poolBoard
        let schedule = SyncSchedule(
            minInterval: .milliseconds(Int64(minSyncPeriod * 1000)), maxInterval: .milliseconds(Int64(syncPeriod * 1000)))
        let daemon = ProxyDaemon(
            source: objects, tracker: ChangeTracker(node: context), plane: plane, schedule: schedule,
            resolver: NodeAddressResolver(flags: try node.parsedIPs()), clock: ContinuousClock(), logger: logger,
            apiServerAddress: (objects as? KubernetesSource).flatMap { URL(string: $0.client.access.server)?.host }
                .flatMap { IPAddress($0.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))) },
            metrics: metrics,
            serviceHealth: ServiceHealthServers(logger: logger))
        let stopSources = [SIGTERM, SIGINT].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let handler = DispatchSource.makeSignalSource(signal: number)
            handler.setEventHandler { daemon.stop() }
            handler.resume()
            return handler
        }
        defer { for handler in stopSources { handler.cancel() } }
        // Unhealthy when a change has waited more than twice the sync period, as kube-proxy's healthz.
        let healthLimit = 2 * syncPeriod
        daemon.serviceHealth?.setProxyHealth { daemon.status.isHealthy(now: Date(), limit: healthLimit) }
        defer { daemon.serviceHealth?.stop() }
        var probes: ProbeServer?
        if let (host, port) = ProbeServer.splitAddress(healthzBindAddress) {
            do {
                probes = try ProbeServer.start(host: host, port: port) { path in
                    switch path {
                    case "/healthz", "/livez": return daemon.status.healthAnswer(now: Date(), limit: healthLimit)
                    default: return ProbeServer.Answer(status: 404, contentType: "text/plain", body: "404 page not found\n")
                    }
                }
            } catch {
                // As kube-proxy: the proxy keeps proxying; only the probes are missing (and say so).
                logger.error("cannot serve health checks", metadata: ["address": "\(healthzBindAddress)", "error": "\(error)"])
            }
        }
        defer { probes?.stop() }
        var metricsServer: ProbeServer?
        if let metrics = daemon.metrics, let (host, port) = ProbeServer.splitAddress(metricsBindAddress) {
            let apiCounters = (objects as? KubernetesSource)?.counters
            let statistics: @Sendable () -> [(String, String)] = {
                (forwarder.map(UserspaceDriver.statistics(of:)) ?? []) + (apiCounters?.statistics ?? [])
            }
            do {
                metricsServer = try ProbeServer.start(host: host, port: port) { path in
                    guard path == "/metrics" else { return ProbeServer.Answer(status: 404, contentType: "text/plain", body: "404 page not found\n") }
                    metrics.updatePlaneCounters(statistics())
                    if let poolBoard { metrics.updatePools(poolBoard.current) }
                    return ProbeServer.Answer(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.render())
                }
            } catch {
                logger.error("cannot serve metrics", metadata: ["address": "\(metricsBindAddress)", "error": "\(error)"])
            }
        }
        defer { metricsServer?.stop() }
        logger.info("ferry starting", metadata: ["mode": "\(mode.rawValue)", "source": "\(objects.name)", "node": "\(context.name)"])
        await daemon.run()
        switch mode {
        case .nftables: logger.info("ferry stopped; rules left in place")
        case .userspace:
            logger.info("stopped accepting; waiting for established connections", metadata: ["grace": "\(shutdownGrace)s"])
            daemon.shutdown(grace: .milliseconds(Int64(shutdownGrace * 1000)))
            logger.info("ferry stopped; listeners closed and local routes removed")
        }
    }
}
