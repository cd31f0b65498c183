import ArgumentParser
import FerryBench
import FerryTestbed
import Foundation

/// `ferry debug testbed up|serve|down PREFIX`: the demo's test bed (FerryTestbed's topology, with the
/// walk-through's and web-nodeport's pods), kept in place between commands; `scripts/testbed.sh`
/// runs these.
struct TestbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "testbed",
        abstract: "The demo's network namespaces: a node, a client and five pods, kept between commands (root).",
        discussion: """
            Every name starts with PREFIX (1-12 letters or digits: make it unique to the run, e.g. fd$$). The \
            node forwards (ip_forward=1) and has 10.0.0.1 on each link; the client is 10.0.0.2/24 behind it; \
            each pod has its address on eth0, routed from the node: the walk-through's three \
            (deploy/examples/my-service.yaml) and web-nodeport's two (deploy/examples/nodeport.yaml).
            """,
        subcommands: [Up.self, Serve.self, Down.self])

    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create the namespaces and links; print them.")
        @Argument(help: "The names' prefix.") var prefix: String

        func run() throws {
            let bed = try Testbed(pods: Testbed.demoPods, prefix: prefix)
            bed.keep()
            print(bed.table, terminator: "")
        }
    }

    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run `ferry debug serve --name POD PORTS` in every pod and wait until each is ready.")
        @Argument(help: "The names' prefix.") var prefix: String
        @Option(name: .customLong("tcp"), help: ArgumentHelp("TCP port (repeatable; default 80).", valueName: "port"))
        var tcpPorts: [Int] = []
        @Option(name: .customLong("udp"), help: ArgumentHelp("UDP port (repeatable).", valueName: "port"))
        var udpPorts: [Int] = []

        func run() throws {
            let bed = try Testbed(existing: prefix, pods: Testbed.demoPods)
            let tcp = tcpPorts.isEmpty && udpPorts.isEmpty ? [80] : tcpPorts
            try bed.startPodServers(ferryPath: BenchProcesses.ferryPath, tcp: tcp, udp: udpPorts)
            for pod in bed.pods { print("\(pod.namespace.name): serving \(pod.name)") }
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop what runs in the namespaces and delete them.")
        @Argument(help: "The names' prefix.") var prefix: String

        func run() throws {
            for name in try Testbed.remove(prefix: prefix) { print("deleted \(name)") }
        }
    }
}
