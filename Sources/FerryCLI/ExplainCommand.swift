import ArgumentParser
import FerryCore
import FerryProxy
import Foundation

/// `ferry explain --to IP:PORT`: which service port a destination reaches and which backends may serve it.
struct ExplainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Explain where traffic to IP:PORT goes: the service port, the usable backends, and why others are left out.",
        discussion: "Exit status 1 when the destination is no service frontend on this node.")

    @OptionGroup var source: SourceOptions
    @OptionGroup var node: NodeOptions

    @Option(help: ArgumentHelp("The destination, IP:PORT or [IPv6]:PORT.", valueName: "ip:port"))
    var to: String

    @Option(name: .customLong("protocol"), help: "tcp, udp or sctp.")
    var l4Protocol: String = "tcp"

    @Option(help: ArgumentHelp("The client's address (matters for Local policy and hairpin traffic).", valueName: "ip"))
    var from: String?

    func validate() throws {
        _ = try destination()
        guard L4Protocol(caseInsensitive: l4Protocol) != nil else {
            throw ValidationError("--protocol: \"\(l4Protocol)\" is not tcp, udp or sctp")
        }
        if let from, IPAddress(from) == nil { throw ValidationError("--from: \"\(from)\" is not a valid IP address") }
    }

    func destination() throws -> (IPAddress, Int) {
        guard let (address, port) = parseHostPort(to) else {
            throw ValidationError("--to: \"\(to)\" is not IP:PORT (use [addr]:port for IPv6) with a port in 1-65535")
        }
        return (address, port)
    }

    func run() async throws {
        let loaded = try await source.read(nodeName: node.nodeName ?? HostInfo.hostName())
        let context = try node.context(state: loaded.state)
        let (address, port) = try destination()
        let query = ExplainQuery(
            destination: address, port: port, protocol: L4Protocol(caseInsensitive: l4Protocol)!,
            source: from.flatMap { IPAddress($0) }, clusterCIDRs: try node.parsedCIDRs())
        let report = Explainer.explain(query, tables: TableBuilder.build(loaded.state, node: context), node: context)
        print(report.text, terminator: "")
        fflush(nil)
        try loaded.failOnProblems()
        if !report.matched { throw CommandFailure(code: 1, message: "") }
    }
}
