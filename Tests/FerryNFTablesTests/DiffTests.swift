import FerryCore
import Testing

@testable import FerryNFTables

@Suite("Transactions: only what changed")
struct DiffTests {
    @Test func aFirstSyncCreatesEverythingAndASecondSendsNothing() throws {
        let desired = Planner.plan(exampleTables(), config: PlannerConfig(clusterCIDRs: [podCIDR]))
        let twin = InMemoryNetfilter()
        let first = RulesetDiff.transaction(from: try twin.read(table: "ferry"), to: desired)
        try twin.apply(first)
        #expect(first.summary.chainsAdded == desired.tables[.ip]!.chains.count)
        let second = RulesetDiff.transaction(from: try twin.read(table: "ferry"), to: desired)
        #expect(second.isEmpty, "\(Renderer.script(second))")
    }

    /// The cost follows the change: one endpoint replaced among 200 services touches that service's map
    /// elements only (its frontends' slots and the endpoint addresses), no chain and no rule.
    @Test func oneEndpointChangeTouchesOneServiceOnly() throws {
        let before = Planner.plan(tables(yaml: syntheticYAML(services: 200)))
        let after = Planner.plan(tables(yaml: syntheticYAML(services: 200, changeOne: 42)))
        let transaction = RulesetDiff.transaction(from: before, to: after)
        let script = Renderer.script(transaction)
        for line in script.split(separator: "\n") {
            #expect(touchesOnly(svc: 42, line), "touches another service: \(line)")
        }
        let counts = transaction.summary
        #expect(counts.chainsAdded == 0 && counts.chainsFlushed == 0 && counts.rules == 0)
        // The sorted endpoints shift a slot each (3 slots x 2 frontends), the old address leaves the
        // hairpin set and the new one enters it.
        #expect(counts.elementsAdded == 7 && counts.elementsDeleted == 7)
    }

    /// One endpoint added: that service's elements and its one `goto pick-N` rule (N changed).
    @Test func oneEndpointAddedRewritesOneRule() throws {
        let before = Planner.plan(tables(yaml: syntheticYAML(services: 20)))
        let after = Planner.plan(tables(yaml: syntheticYAML(services: 20, endpoints: 3, grow: 5)))
        let transaction = RulesetDiff.transaction(from: before, to: after)
        for line in Renderer.script(transaction).split(separator: "\n") {
            #expect(touchesOnly(svc: 5, line) || line.contains("pick-4"), "touches another service: \(line)")
        }
        let counts = transaction.summary
        // pick-4 and external-pick-4 appear; the ClusterIP's and the NodePort's dispatch elements move to
        // them. No rule of the service's own: it has no chain.
        #expect(counts.chainsAdded == 2 && counts.chainsFlushed == 0)
        #expect(counts.rules == 4)  // two in each new chain
    }

    @Test func removingAServiceDeletesItsElementsAndEmptiesItsChainsFirst() throws {
        let before = Planner.plan(tables(yaml: syntheticYAML(services: 3)))
        let after = Planner.plan(tables(yaml: syntheticYAML(services: 2)))
        let transaction = RulesetDiff.transaction(from: before, to: after)
        // ClusterIP and NodePort dispatch, the ClusterIP in cluster-ips, 3 slots x 2 frontends, 3 endpoint addresses.
        #expect(transaction.summary.elementsDeleted == 12)
        #expect(transaction.summary.chainsDeleted == 0)
        let stale = RulesetDiff.staleObjects(applied: before.applying(transaction), desired: after)
        #expect(stale.isEmpty)  // no chain of its own (pick-3 and external-pick-3 still serve the others)
    }

    @Test func theTwinAppliesAllOrNothing() throws {
        let twin = InMemoryNetfilter()
        try twin.apply(RulesetDiff.transaction(from: Ruleset(), to: Planner.plan(exampleTables())))
        let before = twin.ruleset
        let broken = Transaction([
            Operation(.ip, "ferry", .flushChain("services")),
            Operation(.ip, "ferry", .addRule(chain: "services", Rule([.verdict(.jump("no-such-chain"))]))),
        ])
        #expect(throws: NetfilterError.self) { try twin.apply(broken) }
        do {
            try twin.apply(broken)
        } catch {
            #expect(error.kind == .notFound)
            #expect(error.operation == broken.operations[1])
        }
        #expect(twin.ruleset == before)
    }

    @Test(arguments: [
        Operation(.ip, "ferry", .deleteChain("services")),
        Operation(.ip, "ferry", .deleteSet("service-ips")),
        Operation(
            .ip, "ferry",
            .addElements(
                set: "service-ips", [ElementKey([.address(IPAddress("10.96.9.9")!), .l4Protocol(.tcp), .port(80)]): .verdict(.goto("missing"))])),
        Operation(
            .ip, "ferry",
            .deleteElements(set: "service-ips", [ElementKey([.address(IPAddress("10.96.9.9")!), .l4Protocol(.tcp), .port(80)]): nil])),
        Operation(.ip, "nope", .flushChain("services")),
    ])
    func theTwinRejectsWhatTheKernelRejects(operation: Operation) throws {
        let twin = InMemoryNetfilter()
        try twin.apply(RulesetDiff.transaction(from: Ruleset(), to: Planner.plan(exampleTables())))
        #expect(throws: NetfilterError.self) { try twin.apply(Transaction([operation])) }
    }
}

@Suite("The proxier's sync cycle")
struct ProxierTests {
    @Test func convergesMirrorsAndDeletesStaleChainsOneSyncLater() throws {
        let twin = InMemoryNetfilter()
        let proxier = NFTablesProxier(netfilter: twin, config: PlannerConfig())
        let first = try proxier.sync(tables(yaml: syntheticYAML(services: 3)))
        #expect(first.readBack)
        #expect(!first.transaction.isEmpty)
        let noop = try proxier.sync(tables(yaml: syntheticYAML(services: 3)))
        #expect(noop.transaction.isEmpty)
        #expect(!noop.readBack)
        // Two services left with two endpoints each: nobody uses pick-3 and external-pick-3 any more.
        let shrink = try proxier.sync(tables(yaml: syntheticYAML(services: 2, endpoints: 2)))
        #expect(shrink.transaction.summary.chainsDeleted == 0)
        #expect(proxier.hasPendingDeletions)
        let cleanup = try proxier.sync(tables(yaml: syntheticYAML(services: 2, endpoints: 2)))
        #expect(cleanup.transaction.summary.chainsDeleted == 2)
        #expect(!proxier.hasPendingDeletions)
        #expect(Renderer.text(twin.ruleset) == Renderer.text(Planner.plan(tables(yaml: syntheticYAML(services: 2, endpoints: 2)))))
    }

    @Test func aRestartConvergesWithoutFlushing() throws {
        let twin = InMemoryNetfilter()
        _ = try NFTablesProxier(netfilter: twin, config: PlannerConfig()).sync(tables(yaml: syntheticYAML(services: 5)))
        let restarted = NFTablesProxier(netfilter: twin, config: PlannerConfig())
        let report = try restarted.sync(tables(yaml: syntheticYAML(services: 5)))
        #expect(report.readBack)
        #expect(report.transaction.isEmpty, "\(Renderer.script(report.transaction))")
    }

    @Test func tamperingIsRepairedAtTheNextSync() throws {
        let twin = InMemoryNetfilter()
        let proxier = NFTablesProxier(netfilter: twin, config: PlannerConfig())
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 2)))
        try twin.apply(Transaction([Operation(.ip, "ferry", .flushChain("services"))]))
        let repair = try proxier.sync(tables(yaml: syntheticYAML(services: 2)))
        #expect(repair.readBack)
        #expect(
            repair.transaction.operations.map(\.kind).contains {
                if case .addRule(chain: "services", _) = $0 { return true } else { return false }
            })
        #expect(Renderer.text(twin.ruleset) == Renderer.text(Planner.plan(tables(yaml: syntheticYAML(services: 2)))))
    }

    @Test func aRejectedBatchChangesNothingAndTheNextSyncReadsBack() throws {
        let twin = InMemoryNetfilter()
        let proxier = NFTablesProxier(netfilter: twin, config: PlannerConfig())
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 2)))
        let before = twin.ruleset
        twin.failNext = NetfilterError(kind: .rejected, code: 22, message: "injected")
        #expect(throws: NetfilterError.self) { try proxier.sync(tables(yaml: syntheticYAML(services: 3))) }
        #expect(twin.ruleset == before)
        let retry = try proxier.sync(tables(yaml: syntheticYAML(services: 3)))
        #expect(retry.readBack)
        #expect(Renderer.text(twin.ruleset) == Renderer.text(Planner.plan(tables(yaml: syntheticYAML(services: 3)))))
    }
}

@Suite("Rendering")
struct RenderingTests {
    /// The ruleset for deploy/examples, in `nft list` layout. Regenerate with
    /// `ferry sync --dry-run --manifests deploy/examples --node-name node-1 --node-ip 10.0.0.1 --cluster-cidr 10.244.0.0/16`
    /// and read the difference before committing it.
    @Test func examplesMatchTheGoldenRuleset() throws {
        let golden = try String(contentsOfFile: "\(repositoryRoot)/Tests/FerryNFTablesTests/Golden/examples.nft", encoding: .utf8)
        let rendered = Renderer.text(
            Planner.plan(exampleTables(), config: PlannerConfig(clusterCIDRs: [podCIDR], nodeAddresses: node1.addresses)))
        #expect(rendered == golden)
    }

    @Test func aTransactionRendersAsAnNftScript() {
        let transaction = RulesetDiff.transaction(from: Ruleset(), to: Planner.plan(tables(yaml: syntheticYAML(services: 1, endpoints: 1))))
        let script = Renderer.script(transaction)
        #expect(script.hasPrefix("add table ip ferry\n"))
        #expect(script.contains("add chain ip ferry nat-prerouting { type nat hook prerouting priority dstnat; policy accept; }"))
        #expect(script.contains("add map ip ferry service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }"))
        #expect(script.contains("add element ip ferry service-ips { 10.96.0.1 . tcp . 80 : goto pick-1 }"))
    }

    @Test(arguments: [(10_800, "3h"), (600, "10m"), (90, "1m30s"), (86_400, "1d"), (1, "1s")])
    func durations(seconds: Int, text: String) {
        #expect(Renderer.duration(seconds) == text)
    }
}

@Suite("Incremental syncs")
struct IncrementalSyncTests {
    @Test func onlyChangedServicePortsAreReplanned() throws {
        let twin = InMemoryNetfilter()
        let proxier = NFTablesProxier(netfilter: twin, config: PlannerConfig())
        let full = try proxier.sync(tables(yaml: syntheticYAML(services: 50)))
        #expect(full.readBack && full.replannedPorts == 50)
        let noop = try proxier.sync(tables(yaml: syntheticYAML(services: 50)))
        #expect(noop.replannedPorts == 0 && noop.transaction.isEmpty && !noop.readBack)
        let one = try proxier.sync(tables(yaml: syntheticYAML(services: 50, changeOne: 7)))
        #expect(one.replannedPorts == 1 && !one.readBack)
        for line in Renderer.script(one.transaction).split(separator: "\n") {
            #expect(touchesOnly(svc: 7, line), "touches another service: \(line)")
        }
        #expect(one.transaction.summary.rules == 0 && !proxier.hasPendingDeletions)
        let cleanup = try proxier.sync(tables(yaml: syntheticYAML(services: 50, changeOne: 7)))
        #expect(cleanup.transaction.isEmpty)
        #expect(Renderer.text(twin.ruleset) == Renderer.text(Planner.plan(tables(yaml: syntheticYAML(services: 50, changeOne: 7)))))
    }

    /// Given the tracker's changed ports, the proxier compares only those; a port it was not told about
    /// is left as it is (the hint is trusted), and a full sync takes everything.
    @Test func theChangedPortsHintLimitsWhatIsCompared() throws {
        let twin = InMemoryNetfilter()
        let proxier = NFTablesProxier(netfilter: twin, config: PlannerConfig())
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 20)))
        let changed = tables(yaml: syntheticYAML(services: 20, changeOne: 7))
        let name = try #require(changed.ports.keys.first { $0.service.name == "svc-7" })
        let untold = try proxier.sync(changed, changed: [], verify: false)
        #expect(untold.transaction.isEmpty && untold.replannedPorts == 0)
        let told = try proxier.sync(changed, changed: [name], verify: false)
        #expect(told.replannedPorts == 1 && !told.transaction.isEmpty)
        #expect(Renderer.text(twin.ruleset) == Renderer.text(Planner.plan(changed)))
    }

    /// A set not read back (too big to dump) is flushed and filled again in the same transaction; the
    /// result is what a diff of the read set would give.
    @Test func aSetNotReadBackIsRewrittenWhole() throws {
        let twin = InMemoryNetfilter()
        let desired = Planner.plan(tables(yaml: syntheticYAML(services: 5)))
        try twin.apply(RulesetDiff.transaction(from: try twin.read(table: "ferry"), to: desired))
        let changed = Planner.plan(tables(yaml: syntheticYAML(services: 5, changeOne: 2)))
        let applied = try twin.read(table: "ferry", skippingElementsOf: ["cluster-endpoints"])
        #expect(applied.tables[.ip]?.sets["cluster-endpoints"]?.elementsUnread == true)
        let transaction = RulesetDiff.transaction(from: applied, to: changed)
        let script = Renderer.script(transaction)
        #expect(script.contains("flush set ip ferry cluster-endpoints\nadd element ip ferry cluster-endpoints {"), "\(script)")
        try twin.apply(transaction)
        #expect(Renderer.text(twin.ruleset) == Renderer.text(changed))
        #expect(RulesetDiff.transaction(from: try twin.read(table: "ferry"), to: changed).isEmpty)
    }

    @Test func removedAndAddedServicesConverge() throws {
        let twin = InMemoryNetfilter()
        let proxier = NFTablesProxier(netfilter: twin, config: PlannerConfig())
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 10)))
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 4)))
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 12)))
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 12)))
        #expect(!proxier.hasPendingDeletions)
        #expect(Renderer.text(twin.ruleset) == Renderer.text(Planner.plan(tables(yaml: syntheticYAML(services: 12)))))
    }

    @Test func aServiceThatComesBackBeforeItsChainsAreDeletedKeepsThem() throws {
        let twin = InMemoryNetfilter()
        let proxier = NFTablesProxier(netfilter: twin, config: PlannerConfig())
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 3)))
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 2)))
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 3)))
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 3)))
        #expect(Renderer.text(twin.ruleset) == Renderer.text(Planner.plan(tables(yaml: syntheticYAML(services: 3)))))
    }
}

@Suite("Stale UDP flows")
struct StaleFlowTests {
    static let udp = """
        apiVersion: v1
        kind: Service
        metadata: {name: dns}
        spec: {type: NodePort, clusterIP: 10.96.0.53, ports: [{name: dns, protocol: UDP, port: 53, nodePort: 30053}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: dns-x, labels: {kubernetes.io/service-name: dns}}
        addressType: IPv4
        endpoints: [ENDPOINTS]
        ports: [{name: dns, protocol: UDP, port: 53}]
        """

    func entry(_ endpoints: [String]) -> ServicePortTable {
        let list = endpoints.map { "{addresses: [\($0)]}" }.joined(separator: ", ")
        return tables(yaml: Self.udp.replacingOccurrences(of: "ENDPOINTS", with: list)).sorted[0]
    }

    @Test func aRemovedEndpointsFlowsAreForgottenAtEveryFrontend() {
        let flows = NFTablesProxier.staleFlows(before: entry(["10.244.0.1", "10.244.0.2"]), after: entry(["10.244.0.2"]))
        #expect(
            flows == [
                StaleFlow(destination: ip("10.96.0.53"), destinationPort: 53, endpoint: ip("10.244.0.1"), endpointPort: 53, family: .ipv4),
                StaleFlow(destination: nil, destinationPort: 30053, endpoint: ip("10.244.0.1"), endpointPort: 53, family: .ipv4),
            ])
    }

    @Test func aServiceGettingItsFirstEndpointForgetsEverythingSentWhileItHadNone() {
        let flows = NFTablesProxier.staleFlows(before: entry([]), after: entry(["10.244.0.1"]))
        #expect(
            flows.contains(StaleFlow(destination: ip("10.96.0.53"), destinationPort: 53, endpoint: nil, endpointPort: nil, family: .ipv4)))
    }

    @Test func addingAnEndpointOrChangingTCPForgetsNothing() {
        #expect(NFTablesProxier.staleFlows(before: entry(["10.244.0.1"]), after: entry(["10.244.0.1", "10.244.0.2"])).isEmpty)
        let tcp = tables(yaml: syntheticYAML(services: 1)).sorted[0]
        #expect(NFTablesProxier.staleFlows(before: tcp, after: nil).isEmpty)
    }

    @Test func theProxierHandsStaleFlowsToConntrack() throws {
        let conntrack = RecordingConntrack()
        let proxier = NFTablesProxier(netfilter: InMemoryNetfilter(), config: PlannerConfig(), conntrack: conntrack)
        _ = try proxier.sync(BackendTables([entry(["10.244.0.1", "10.244.0.2"])]))
        _ = try proxier.sync(BackendTables([entry(["10.244.0.2"])]))
        #expect(conntrack.requests.count == 1)
        #expect(conntrack.requests.first?.count == 2)
    }
}

@Suite("Verifying against the kernel")
struct VerifyTests {
    @Test func onlyAVerifyingSyncLooksForOutsideChanges() throws {
        let twin = InMemoryNetfilter()
        let proxier = NFTablesProxier(netfilter: twin, config: PlannerConfig())
        _ = try proxier.sync(tables(yaml: syntheticYAML(services: 2)))
        try twin.apply(Transaction([Operation(.ip, "ferry", .flushChain("services"))]))
        let trusting = try proxier.sync(tables(yaml: syntheticYAML(services: 2)), verify: false)
        #expect(!trusting.readBack && trusting.transaction.isEmpty)
        let verifying = try proxier.sync(tables(yaml: syntheticYAML(services: 2)), verify: true)
        #expect(verifying.readBack)
        #expect(Renderer.text(twin.ruleset) == Renderer.text(Planner.plan(tables(yaml: syntheticYAML(services: 2)))))
    }
}
