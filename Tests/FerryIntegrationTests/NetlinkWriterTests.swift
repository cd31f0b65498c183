import FerryCore
import FerryNFTables
import FerryTestbed
import Foundation
import Testing

/// The netlink writer against the kernel, in a network namespace made for the test.
@Suite("netlink writer: the kernel's answers", .serialized)
struct NetlinkWriterTests {
    /// A namespace named for this run, deleted afterwards.
    final class Namespace {
        let name = "fyw\(getpid())\(Int.random(in: 0..<1000))"
        init() throws {
            _ = try run(["ip", "netns", "add", name])
        }
        deinit { _ = try? run(["ip", "netns", "del", name]) }
        var path: String { "/run/netns/\(name)" }

        @discardableResult
        func run(_ arguments: [String]) throws -> String {
            let result = try Testbed.execute(["/usr/bin/env"] + arguments)
            guard result.status == 0 else { throw TrafficTestError("\(arguments.joined(separator: " ")): \(result)") }
            return result.stdout + result.stderr
        }
    }

    @Test func aRejectedMessageNamesItsOperationAndNothingIsApplied() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let namespace = try Namespace()
        let netfilter = try NetlinkNetfilter.inNamespace(namespace.path)
        let bad = Operation(.ip, "ferry", .addRule(chain: "entry", Rule([.verdict(.jump("no-such-chain"))])))
        let transaction = Transaction([
            Operation(.ip, "ferry", .addTable),
            Operation(.ip, "ferry", .addChain(Chain(name: "entry"))),
            Operation(.ip, "ferry", .addRule(chain: "entry", Rule([.counter]))),
            bad,
            Operation(.ip, "ferry", .addRule(chain: "entry", Rule([.verdict(.accept)]))),
        ])
        do {
            try netfilter.apply(transaction)
            Issue.record("the kernel accepted a jump to a missing chain")
        } catch {
            #expect(error.kind == .notFound, "\(error)")
            #expect(error.operation == bad, "\(error)")
            #expect(error.description.contains("nothing was applied"))
        }
        #expect(try netfilter.read(table: "ferry").tables.isEmpty, "the batch was rolled back whole")
        #expect(try namespace.run(["ip", "netns", "exec", namespace.name, "nft", "list", "ruleset"]).isEmpty)
    }

    @Test func aLargeSetIsWrittenWholeAndReadBack() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let namespace = try Namespace()
        let netfilter = try NetlinkNetfilter.inNamespace(namespace.path)
        // 20,000 elements: one libnftnl message would wrap its 16-bit nest length and lose most of them.
        var elements: [ElementKey: ElementValue?] = [:]
        for index in 0..<20_000 {
            elements[ElementKey([.address(.v4(0x0A60_0000 + UInt32(index))), .l4Protocol(.tcp), .port(80)])] = .verdict(.drop)
        }
        let map = NFTSet(name: "service-ips", key: [.destinationAddress, .l4Protocol, .destinationPort], data: .verdict)
        try netfilter.apply(
            Transaction([
                Operation(.ip, "ferry", .addTable), Operation(.ip, "ferry", .addSet(map)),
                Operation(.ip, "ferry", .addElements(set: "service-ips", elements)),
            ]))
        let listed = try namespace.run(["ip", "netns", "exec", namespace.name, "nft", "list", "map", "ip", "ferry", "service-ips"])
        #expect(listed.components(separatedBy: ": drop").count - 1 == 20_000, "the kernel holds every element")
        let read = try netfilter.read(table: "ferry")
        #expect(read.tables[.ip]?.sets["service-ips"]?.elements.count == 20_000)
        #expect(read.tables[.ip]?.sets["service-ips"]?.elements == elements)
        // Flushed by an element deletion that names none, in the kernel as in the twin.
        try netfilter.apply(Transaction([Operation(.ip, "ferry", .flushSet("service-ips"))]))
        #expect(try netfilter.read(table: "ferry").tables[.ip]?.sets["service-ips"]?.elements.isEmpty == true)
        #expect(try netfilter.deleteTables(named: "ferry") == [.ip])
        #expect(try netfilter.deleteTables(named: "ferry") == [])
    }

    /// A set's key is read back from what Ferry stored with it, not guessed from its name: a source-address
    /// set not named `affinity-…` reads back as one.
    @Test func aSetsKeyFieldsAreReadBackFromTheSetItself() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let namespace = try Namespace()
        let netfilter = try NetlinkNetfilter.inNamespace(namespace.path)
        let sources = NFTSet(name: "allowed-clients", key: [.sourceAddress])
        let targets = NFTSet(name: "affinity-looking-but-daddr", key: [.destinationAddress, .l4Protocol, .destinationPort])
        try netfilter.apply(
            Transaction([Operation(.ip, "ferry", .addTable), Operation(.ip, "ferry", .addSet(sources)), Operation(.ip, "ferry", .addSet(targets))]))
        let read = try netfilter.read(table: "ferry")
        #expect(read.tables[.ip]?.sets["allowed-clients"]?.key == [.sourceAddress])
        #expect(read.tables[.ip]?.sets["affinity-looking-but-daddr"]?.key == [.destinationAddress, .l4Protocol, .destinationPort])
        // nft still lists the sets (it ignores userdata types it does not know).
        let listed = try namespace.run(["ip", "netns", "exec", namespace.name, "nft", "list", "set", "ip", "ferry", "allowed-clients"])
        #expect(listed.contains("type ipv4_addr"), "\(listed)")
    }

    /// Endpoint maps (key ending in a numgen slot, data `address . port`) in both families: written, listed
    /// by nft in the `typeof` form Ferry renders, read back equal, and a `dnat … map` rule over them loads.
    @Test func endpointMapsAreWrittenListedAndReadBack() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let namespace = try Namespace()
        let netfilter = try NetlinkNetfilter.inNamespace(namespace.path)
        let cases: [(NFTFamily, IPAddress, IPAddress)] = [
            (.ip, IPAddress("10.96.0.10")!, IPAddress("10.244.1.2")!), (.ip6, IPAddress("fd00:96::10")!, IPAddress("fd00:244::2")!),
        ]
        for (family, frontend, endpoint) in cases {
            var operations = [Operation(family, "ferry", .addTable)]
            var expected = Ruleset()
            var table = Table(family: family)
            for (name, key) in [("by-address", [KeyField.destinationAddress, .l4Protocol, .destinationPort]), ("by-port", [.l4Protocol, .destinationPort])] {
                let frontendKey: [KeyValue] = key.count == 3 ? [.address(frontend), .l4Protocol(.tcp), .port(80)] : [.l4Protocol(.udp), .port(30053)]
                var elements: [ElementKey: ElementValue?] = [:]
                for slot in 0..<3 { elements[ElementKey(frontendKey + [.slot(slot)])] = .endpoint(endpoint, port: 8080 + slot) }
                let map = NFTSet(name: name, key: key + [.slot], data: .endpoint)
                operations += [Operation(family, "ferry", .addSet(map)), Operation(family, "ferry", .addElements(set: name, elements))]
                var filled = map
                filled.elements = elements
                table.add(filled)
                let chain = Chain(name: "pick-\(name)", rules: [Rule([.dnatMap(key, modulus: 3, map: name)])])
                operations += [Operation(family, "ferry", .addChain(Chain(name: chain.name)))] + chain.rules.map { Operation(family, "ferry", .addRule(chain: chain.name, $0)) }
                table.add(chain)
            }
            expected.tables[family] = table
            try netfilter.apply(Transaction(operations))
            let listed = try namespace.run(["ip", "netns", "exec", namespace.name, "nft", "list", "table", family.rawValue, "ferry"])
            #expect(normalizedRuleset(listed) == normalizedRuleset(Renderer.text(expected)), "\(listed)")
            let read = try netfilter.read(table: "ferry")
            for name in ["by-address", "by-port"] {
                #expect(read.tables[family]?.sets[name]?.declaration == table.sets[name]?.declaration)
                #expect(read.tables[family]?.sets[name]?.elements == table.sets[name]?.elements)
            }
        }
    }

    /// Rules read back table-wide and chain by chain give the same ruleset, equal to what was written.
    @Test func rulesReadBackTheSameTableWideAndChainByChain() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let namespace = try Namespace()
        let netfilter = try NetlinkNetfilter.inNamespace(namespace.path)
        // The examples: services with chains of their own (affinity, Local policy, source ranges) and without.
        var objects: [KubeObject] = []
        let folder = "\(repositoryRoot)/deploy/examples"
        for file in try FileManager.default.contentsOfDirectory(atPath: folder).sorted() where file.hasSuffix(".yaml") {
            objects += ManifestReader.read(fileAt: "\(folder)/\(file)").objects.map(\.object)
        }
        let node = NodeContext(name: "node-1", addresses: [IPAddress("10.0.0.1")!])
        let tables = TableBuilder.build(ClusterState(objects), node: node)
        let desired = Planner.plan(tables, config: PlannerConfig(clusterCIDRs: [CIDR("10.244.0.0/16")!]))
        try netfilter.apply(RulesetDiff.transaction(from: Ruleset(), to: desired))
        let tableWide = try netfilter.read(table: "ferry")
        netfilter.tableWideRuleDumpLimit = 0
        let chainByChain = try netfilter.read(table: "ferry")
        #expect(tableWide == chainByChain)
        #expect(RulesetDiff.transaction(from: chainByChain, to: desired).isEmpty)
    }

    @Test func theGenerationMovesWithEveryCommit() throws {
        guard try Testbed.skipUnlessRoot() else { return }
        let namespace = try Namespace()
        let netfilter = try NetlinkNetfilter.inNamespace(namespace.path)
        let before = try netfilter.generation()
        try netfilter.apply(Transaction([Operation(.ip, "ferry", .addTable)]))
        let after = try netfilter.generation()
        #expect(after != before)
        try namespace.run(["ip", "netns", "exec", namespace.name, "nft", "add", "table", "ip", "someone-else"])
        #expect(try netfilter.generation() != after, "a change by anyone else moves it too")
    }
}
