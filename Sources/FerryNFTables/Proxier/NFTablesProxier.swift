import FerryCore

/// What one sync did.
public struct NFTablesSyncReport: Sendable {
    /// The transaction sent (empty when nothing differed).
    public var transaction: Transaction
    /// Whether the kernel's state was read back first (start-up, after a failure, or after someone
    /// else changed nftables).
    public var readBack: Bool
    /// Service ports re-planned (all of them on a full sync).
    public var replannedPorts: Int
    /// Time spent reading back, planning and diffing (Ferry's own work), and in the kernel (encoding,
    /// sending, and reading its replies).
    public var planDuration: Duration
    public var kernelDuration: Duration
    /// UDP conntrack entries deleted because their endpoint went away.
    public var flowsDeleted = 0
    /// Why deleting stale UDP flows failed, if it did (the sync itself succeeded).
    public var conntrackError: NetfilterError?
}

/// Keeps Ferry's nftables tables equal to what the backend tables call for.
///
/// A full sync reads Ferry's tables back from the kernel and converges them (at start-up, so a restart
/// flushes nothing and drops no connection; after a rejected batch; and when the nftables generation
/// changed behind Ferry's back, which repairs tampering). Otherwise a sync is incremental: only service
/// ports whose table entry changed are re-planned, and only their fragments are diffed, so the cost
/// follows the change, not the size of the table. Chains and sets no longer wanted are emptied at once
/// and deleted one sync later.
public final class NFTablesProxier {
    public let netfilter: Netfilter
    public private(set) var config: PlannerConfig
    /// Deletes conntrack entries of UDP flows whose endpoint went away; `nil` to leave conntrack alone.
    public let conntrack: ConntrackCleaner?
    /// What is programmed, per service port: the entry it was planned from. Its fragments are not kept:
    /// they are a pure function of the entry, re-derived when the entry changes (memory follows the
    /// tables, not the ruleset).
    private var programmed: [ServicePortName: ServicePortTable] = [:]
    private var families: [NFTFamily] = []
    private var trusted = false
    private var lastGeneration: UInt32?
    private var awaitingDeletion: Set<StaleObject> = []
    /// Who needs each shared element and chain (`cluster-ips`, `endpoint-addresses`, `pick-N`).
    private var shared = SharedObjectCounts()

    /// Sets that should hold at least this many elements are rewritten at a full sync, not read back.
    public static let readBackLimit = 16_384

    public init(netfilter: Netfilter, config: PlannerConfig, conntrack: ConntrackCleaner? = nil) {
        self.netfilter = netfilter
        self.config = config
        self.conntrack = conntrack
    }

    /// The node's addresses changed (its Node object did): NodePorts follow them. Every service port is
    /// planned again on the next sync, which is a full one.
    public func setNodeAddresses(_ addresses: [IPAddress]) {
        guard addresses != config.nodeAddresses else { return }
        config.nodeAddresses = addresses
        trusted = false
    }

    /// Chains or sets are waiting to be deleted: another sync should follow shortly.
    public var hasPendingDeletions: Bool { !awaitingDeletion.isEmpty }

    /// Brings the kernel to the ruleset for `tables`. On failure nothing was applied (the kernel rolls
    /// the batch back) and the next sync reads the kernel's state back.
    ///
    /// With `verify`, the nftables generation is checked first and any commit by someone else since
    /// Ferry's last one leads to a read-back (the periodic resync: it repairs tampering). Without it, the
    /// mirror is trusted: the generation is global, and re-reading Ferry's tables after every commit of
    /// every other nftables user would make each sync as slow as a restart. A wrong mirror still heals:
    /// a batch built on it fails, and the next sync reads back.
    ///
    /// `changed`, when given, names every service port that may differ from what the previous successful
    /// sync was given (the change tracker's `changedPorts`, gathered since then): only those are compared.
    /// Without it every port is compared, ~2 us each (20 ms at 10,000 ports, the whole budget of a
    /// one-endpoint change).
    public func sync(_ tables: BackendTables, changed: Set<ServicePortName>? = nil, verify: Bool = true) throws(NetfilterError)
        -> NFTablesSyncReport
    {
        if trusted, !verify || (try? netfilter.generation()) == lastGeneration {
            return try incrementalSync(tables, changed: changed)
        }
        return try fullSync(tables)
    }

    private func fullSync(_ tables: BackendTables) throws(NetfilterError) -> NFTablesSyncReport {
        let clock = ContinuousClock()
        let start = clock.now
        let byFamily = Planner.merged(Array(tables.ports.values), config: config)
        let desired = Planner.assemble(byFamily, config: config)
        // Big maps are not read back but rewritten whole (flushed and filled in the same atomic batch, so
        // no connection notices): the kernel dumps a set by walking it from its first element again for
        // every 32 KiB it returns, which is quadratic. Measured (`ferry bench sync`, 10 endpoints per
        // service): reading three 100,000-element maps took 1.7 s of a 2.8-3.4 s restart at 10,000
        // services, and 500,000-element maps made a restart at 50,000 take 56 s.
        let rewritten = Set(desired.tables.values.flatMap { table in
            table.sets.values.filter { $0.elements.count >= NFTablesProxier.readBackLimit }.map(\.name)
        })
        let applied = try netfilter.read(table: Planner.tableName, skippingElementsOf: rewritten)
        var counts = SharedObjectCounts()
        for (family, fragment) in byFamily { counts.count(fragment, family: family) }
        let stale = RulesetDiff.staleObjects(applied: applied, desired: desired)
        let transaction = RulesetDiff.transaction(from: applied, to: desired, deletable: awaitingDeletion.intersection(stale))
        let planDuration = clock.now - start
        let kernelDuration = try send(transaction)
        programmed = tables.ports
        shared = counts
        families = Planner.families(byFamily)
        awaitingDeletion = stale.subtracting(awaitingDeletion.intersection(stale))
        return NFTablesSyncReport(
            transaction: transaction, readBack: true, replannedPorts: tables.count, planDuration: planDuration,
            kernelDuration: kernelDuration)
    }

    private func incrementalSync(_ tables: BackendTables, changed hint: Set<ServicePortName>?) throws(NetfilterError)
        -> NFTablesSyncReport
    {
        let clock = ContinuousClock()
        let start = clock.now
        var changed: [ServicePortName] = []
        if let hint {
            changed = hint.filter { programmed[$0] != tables.ports[$0] }
        } else {
            for (name, entry) in tables.ports where programmed[name] != entry { changed.append(name) }
            for name in programmed.keys where tables.ports[name] == nil { changed.append(name) }
        }
        if changed.isEmpty && awaitingDeletion.isEmpty {
            return NFTablesSyncReport(
                transaction: Transaction(), readBack: false, replannedPorts: 0, planDuration: clock.now - start, kernelDuration: .zero)
        }
        var replanned: [ServicePortName: [NFTFamily: ServicePortFragment]] = [:]
        var newFamilies = Set(families)
        for name in changed {
            guard let entry = tables.ports[name] else { continue }
            let fragments = Planner.fragments(for: entry, config: config)
            replanned[name] = fragments
            newFamilies.formUnion(fragments.keys)
        }
        // A family's table appearing is rare (the first IPv6 service): let a full sync create it.
        if !newFamilies.isSubset(of: Set(families)) { return try fullSync(tables) }

        // Diff just the changed service ports: two partial rulesets holding the fixed sets and maps
        // (declared, so neither side adds them) and those ports' fragments, before and after.
        // The shared objects are counted, not diffed: what nobody needed before and someone needs now is
        // added (its chains first in the batch, since the ports' rules jump to them), what nobody needs any
        // more is removed (chains flushed now and deleted a sync later, like every stale chain).
        var before: [NFTFamily: [ServicePortFragment]] = [:]
        var after: [NFTFamily: [ServicePortFragment]] = [:]
        // Counted in place (a copy of 100,000 counts costs more than the whole change); a failed send
        // leaves them ahead of the kernel, and the full sync that follows any failure recounts.
        var sharedChanges = SharedObjectCounts.Changes()
        for name in changed {
            let old = programmed[name].map { Planner.fragments(for: $0, config: config) } ?? [:]
            for (family, fragment) in old {
                before[family, default: []].append(fragment)
                sharedChanges.merge(shared.remove(fragment, family: family))
            }
            for (family, fragment) in replanned[name] ?? [:] {
                after[family, default: []].append(fragment)
                sharedChanges.merge(shared.add(fragment, family: family))
            }
        }
        let old = partial(before)
        let new = partial(after)
        var stale = RulesetDiff.staleObjects(applied: old, desired: new)
        var transaction = Transaction(sharedChanges.chainsAdded(shared))
        transaction.operations += RulesetDiff.transaction(from: old, to: new).operations
        transaction.operations += sharedChanges.elementOperations(shared)
        for (family, name) in sharedChanges.chainsRemoved(shared) {
            transaction.operations.append(Operation(family, Planner.tableName, .flushChain(name)))
            stale.insert(StaleObject(family: family, kind: .chain, name: name))
        }
        // Objects emptied by an earlier sync: delete them now, unless this sync wants them again.
        let recreated = Set(
            new.tables.flatMap { family, table in
                table.chains.keys.map { StaleObject(family: family, kind: .chain, name: $0) }
                    + table.sets.keys.map { StaleObject(family: family, kind: .set, name: $0) }
            } + shared.chainNames.map { StaleObject(family: $0.family, kind: .chain, name: $0.name) })
        let deletable = awaitingDeletion.subtracting(recreated)
        for object in deletable.sorted(by: { ($0.family, $0.name) < ($1.family, $1.name) }) {
            transaction.operations.append(
                Operation(object.family, Planner.tableName, object.kind == .chain ? .deleteChain(object.name) : .deleteSet(object.name)))
        }
        let planDuration = clock.now - start
        let kernelDuration = try send(transaction)
        var previous: [ServicePortName: ServicePortTable] = [:]
        for name in changed { previous[name] = programmed[name] }
        // The kernel now holds `tables` (the other ports were equal already): taken whole, which shares the
        // caller's storage, where writing the changed entries into a dictionary shared with the previous
        // tables copied all of it first (2.8 ms at 10,000 ports, a third of a one-endpoint change).
        programmed = tables.ports
        awaitingDeletion = stale.union(awaitingDeletion.subtracting(deletable).subtracting(recreated))
        var report = NFTablesSyncReport(
            transaction: transaction, readBack: false, replannedPorts: changed.count, planDuration: planDuration,
            kernelDuration: kernelDuration)
        let flows = changed.flatMap { name in NFTablesProxier.staleFlows(before: previous[name], after: tables.ports[name]) }
        if let conntrack, !flows.isEmpty {
            do {
                report.flowsDeleted = try conntrack.delete(flows)
            } catch {
                report.conntrackError = error
            }
        }
        return report
    }

    /// The UDP flows to forget when a service port changes from `before` to `after` (kube-proxy's rules):
    /// flows DNATed to an endpoint no longer reachable; and every flow to the frontends of a port that had
    /// no endpoint (its datagrams were rejected, and an entry made then would bypass the new endpoints)
    /// or that is gone.
    static func staleFlows(before: ServicePortTable?, after: ServicePortTable?) -> [StaleFlow] {
        guard let before, before.name.protocol == .udp else { return [] }
        let old = Set(before.categories.allReachable)
        let new = Set(after?.categories.allReachable ?? [])
        var flows: [StaleFlow] = []
        if after != nil && !old.isEmpty {
            for endpoint in old.subtracting(new).sorted() {
                for frontend in before.frontends where frontend.address == nil || frontend.address?.family == endpoint.ip.family {
                    flows.append(
                        StaleFlow(
                            destination: frontend.address, destinationPort: frontend.port, endpoint: endpoint.ip,
                            endpointPort: endpoint.port,
                            family: endpoint.ip.family))
                }
            }
        } else if after == nil || new != old {
            for frontend in before.frontends {
                for family in frontend.address.map({ [$0.family] }) ?? IPFamily.allCases {
                    flows.append(
                        StaleFlow(
                            destination: frontend.address, destinationPort: frontend.port, endpoint: nil, endpointPort: nil, family: family)
                    )
                }
            }
        }
        return flows
    }

    /// Tables holding only the fixed sets and maps (declared, empty) and the given fragments without
    /// their shared part.
    private func partial(_ fragments: [NFTFamily: [ServicePortFragment]]) -> Ruleset {
        var ruleset = Ruleset()
        for family in families {
            var table = Table(family: family, name: Planner.tableName)
            for (name, set) in Planner.baseTable(family, config: config).sets { table.sets[name] = set.declaration }
            for fragment in fragments[family] ?? [] { fragment.merge(into: &table, shared: false) }
            ruleset.tables[family] = table
        }
        return ruleset
    }

    /// Applies a transaction; on failure the next sync starts over from the kernel's state.
    private func send(_ transaction: Transaction) throws(NetfilterError) -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        do {
            try netfilter.apply(transaction)
        } catch {
            trusted = false
            lastGeneration = nil
            throw error
        }
        let elapsed = clock.now - start
        trusted = true
        lastGeneration = try? netfilter.generation()
        return elapsed
    }
}

/// How many service ports need each shared element and chain, by family: a shared object is in the
/// kernel exactly when its count is above zero.
struct SharedObjectCounts {
    struct ChainKey: Hashable {
        var family: NFTFamily
        var name: String
    }
    struct ElementKeyInSet: Hashable {
        var family: NFTFamily
        var set: String
        var key: ElementKey
    }

    /// By family and set name, then key: one string hash per set per fragment, not one per element.
    private var elements: [NFTFamily: [String: [ElementKey: Int]]] = [:]
    private var chains: [ChainKey: (chain: Chain, count: Int)] = [:]

    private func isPresent(_ element: ElementKeyInSet) -> Bool { elements[element.family]?[element.set]?[element.key] != nil }

    /// The chains some port needs.
    var chainNames: [ChainKey] { Array(chains.keys) }

    /// What a run of additions and removals touched, and whether each was present before it.
    struct Changes {
        var elementsBefore: [ElementKeyInSet: Bool] = [:]
        var chainsBefore: [ChainKey: (chain: Chain, present: Bool)] = [:]

        mutating func merge(_ other: Changes) {
            elementsBefore.merge(other.elementsBefore) { first, _ in first }
            chainsBefore.merge(other.chainsBefore) { first, _ in first }
        }

        /// Creation and rules of the chains nobody needed before and someone needs now: every chain first,
        /// then their rules (`external-pick-N` goes to `pick-N`).
        func chainsAdded(_ counts: SharedObjectCounts) -> [Operation] {
            let added = chainsBefore.sorted(by: { ($0.key.family, $0.key.name) < ($1.key.family, $1.key.name) })
                .filter { !$0.value.present && counts.chains[$0.key] != nil }
            let creations = added.map { Operation($0.key.family, Planner.tableName, .addChain(Chain(name: $0.key.name))) }
            let rules = added.flatMap { key, entry in
                entry.chain.rules.map { Operation(key.family, Planner.tableName, .addRule(chain: key.name, $0)) }
            }
            return creations + rules
        }

        /// The chains someone needed before and nobody needs now.
        func chainsRemoved(_ counts: SharedObjectCounts) -> [(NFTFamily, String)] {
            chainsBefore.filter { $0.value.present && counts.chains[$0.key] == nil }.map { ($0.key.family, $0.key.name) }
                .sorted { ($0.0, $0.1) < ($1.0, $1.1) }
        }

        /// The element deletions and additions that bring the shared sets to `counts`.
        func elementOperations(_ counts: SharedObjectCounts) -> [Operation] {
            var added: [NFTFamily: [String: [ElementKey: ElementValue?]]] = [:]
            var removed: [NFTFamily: [String: [ElementKey: ElementValue?]]] = [:]
            for (element, present) in elementsBefore {
                let now = counts.isPresent(element)
                if now && !present { added[element.family, default: [:]][element.set, default: [:]][element.key] = .some(nil) }
                if present && !now { removed[element.family, default: [:]][element.set, default: [:]][element.key] = .some(nil) }
            }
            var operations: [Operation] = []
            for family in NFTFamily.allCases {
                for (set, keys) in (removed[family] ?? [:]).sorted(by: { $0.key < $1.key }) {
                    operations.append(Operation(family, Planner.tableName, .deleteElements(set: set, keys)))
                }
                for (set, keys) in (added[family] ?? [:]).sorted(by: { $0.key < $1.key }) {
                    operations.append(Operation(family, Planner.tableName, .addElements(set: set, keys)))
                }
            }
            return operations
        }
    }

    mutating func add(_ fragment: ServicePortFragment, family: NFTFamily) -> Changes { change(fragment, family: family, by: 1) }
    mutating func remove(_ fragment: ServicePortFragment, family: NFTFamily) -> Changes { change(fragment, family: family, by: -1) }

    /// Counts a fragment in without recording what changed (a full sync, which diffs the whole ruleset).
    mutating func count(_ fragment: ServicePortFragment, family: NFTFamily) { _ = change(fragment, family: family, by: 1, recording: false) }

    private mutating func change(_ fragment: ServicePortFragment, family: NFTFamily, by delta: Int, recording: Bool = true) -> Changes {
        var changes = Changes()
        // Taken out while changed, so that the nested dictionaries are modified in place, not copied.
        var sets = elements.removeValue(forKey: family) ?? [:]
        for (set, uses) in fragment.sharedElements {
            var counts = sets.removeValue(forKey: set) ?? [:]
            if counts.isEmpty, delta == 1, !recording {
                // A full sync's merged fragment: its counts are the counts (shared, not copied).
                sets[set] = uses
                continue
            }
            for (key, used) in uses {
                let count = counts[key] ?? 0
                if recording {
                    let element = ElementKeyInSet(family: family, set: set, key: key)
                    if changes.elementsBefore[element] == nil { changes.elementsBefore[element] = count > 0 }
                }
                counts[key] = count + delta * used > 0 ? count + delta * used : nil
            }
            sets[set] = counts
        }
        elements[family] = sets
        for (name, shared) in fragment.sharedChains {
            let key = ChainKey(family: family, name: name)
            let count = chains[key]?.count ?? 0
            if recording, changes.chainsBefore[key] == nil { changes.chainsBefore[key] = (shared.chain, count > 0) }
            chains[key] = count + delta * shared.uses > 0 ? (shared.chain, count + delta * shared.uses) : nil
        }
        return changes
    }
}
