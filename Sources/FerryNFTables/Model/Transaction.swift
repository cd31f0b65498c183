/// One change to Ferry's tables.
public struct Operation: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case addTable
        case deleteTable
        /// Creates the chain (a base chain when it has a hook); its rules come as `addRule`s.
        case addChain(Chain)
        case flushChain(String)
        case deleteChain(String)
        case addRule(chain: String, Rule)
        /// Creates the set or map (its elements come as `addElements`).
        case addSet(NFTSet)
        case deleteSet(String)
        /// Removes every element of the set (an element deletion naming none, as `nft flush set`).
        case flushSet(String)
        case addElements(set: String, [ElementKey: ElementValue?])
        case deleteElements(set: String, [ElementKey: ElementValue?])
    }

    public var family: NFTFamily
    public var table: String
    public var kind: Kind

    public init(_ family: NFTFamily, _ table: String, _ kind: Kind) {
        self.family = family
        self.table = table
        self.kind = kind
    }

    /// A short name of the object the operation is about, for errors: `chain ip ferry services`.
    public var objectDescription: String {
        let table = "\(family.rawValue) \(self.table)"
        switch kind {
        case .addTable, .deleteTable: return "table \(table)"
        case .addChain(let chain): return "chain \(table) \(chain.name)"
        case .flushChain(let name), .deleteChain(let name): return "chain \(table) \(name)"
        case .addRule(let chain, let rule): return "rule in chain \(table) \(chain): \(rule.text(family))"
        case .addSet(let set): return "set \(table) \(set.name)"
        case .deleteSet(let name), .flushSet(let name): return "set \(table) \(name)"
        case .addElements(let set, let elements), .deleteElements(let set, let elements):
            return "\(elements.count) element(s) of set \(table) \(set)"
        }
    }
}

/// An ordered list of operations applied atomically: all or nothing, as one netlink batch.
public struct Transaction: Sendable, Hashable {
    public var operations: [Operation] = []

    public init(_ operations: [Operation] = []) { self.operations = operations }

    public var isEmpty: Bool { operations.isEmpty }

    /// How many map elements the transaction adds and deletes, and how many rules it writes.
    public var summary: (elementsAdded: Int, elementsDeleted: Int, rules: Int, chainsAdded: Int, chainsFlushed: Int, chainsDeleted: Int) {
        var result = (0, 0, 0, 0, 0, 0)
        for operation in operations {
            switch operation.kind {
            case .addElements(_, let elements): result.0 += elements.count
            case .deleteElements(_, let elements): result.1 += elements.count
            case .addRule: result.2 += 1
            case .addChain: result.3 += 1
            case .flushChain: result.4 += 1
            case .deleteChain: result.5 += 1
            default: break
            }
        }
        return result
    }
}

/// Computes the transaction that takes the kernel from `applied` to `desired`, sending only what differs.
///
/// Order within a table: table, new chains, new sets, flushes of changed and stale chains, rules of new
/// and changed chains, map element deletions then additions, and last the deletion of chains and sets
/// that were already stale (emptied and unreferenced by an earlier transaction). Stale objects are
/// deleted a sync later because some kernels keep a chain referenced for a moment after the map element
/// pointing at it is deleted. Elements of dynamic sets belong to the data path and are never diffed.
public enum RulesetDiff {
    public static func transaction(from applied: Ruleset, to desired: Ruleset, deletable: Set<StaleObject> = []) -> Transaction {
        var operations: [Operation] = []
        for family in NFTFamily.allCases {
            let old = applied.tables[family]
            guard let new = desired.tables[family] else {
                if let old { operations += staleOnly(old, deletable: deletable) }
                continue
            }
            let table = new.name
            func add(_ kind: Operation.Kind) { operations.append(Operation(family, table, kind)) }
            if old == nil { add(.addTable) }
            let oldChains = old?.chains ?? [:]
            let oldSets = old?.sets ?? [:]
            // Sorted once: the batch's order is deterministic, and sorting 100,000 chains is not free.
            let newChains = new.chains.values.sorted { $0.name < $1.name }
            let newSets = new.sets.values.sorted { $0.name < $1.name }

            for chain in newChains where oldChains[chain.name] == nil {
                add(.addChain(Chain(name: chain.name, hook: chain.hook)))
            }
            for set in newSets where oldSets[set.name] == nil {
                add(.addSet(set.declaration))
            }
            var rewritten: [Chain] = []
            for chain in newChains {
                if let existing = oldChains[chain.name] {
                    // Compared by fingerprint: rules read back from the kernel are known by their stamp only.
                    if existing.rules.map({ RuleFingerprint.of($0, family: family) })
                        != chain.rules.map({ RuleFingerprint.of($0, family: family) })
                    {
                        if !existing.rules.isEmpty { add(.flushChain(chain.name)) }
                        rewritten.append(chain)
                    }
                } else {
                    rewritten.append(chain)
                }
            }
            for chain in oldChains.values.sorted(by: { $0.name < $1.name }) where new.chains[chain.name] == nil && !chain.rules.isEmpty {
                add(.flushChain(chain.name))
            }
            for chain in rewritten {
                for rule in chain.rules { add(.addRule(chain: chain.name, rule)) }
            }
            for set in newSets where set.timeoutSeconds == nil {
                if oldSets[set.name]?.elementsUnread == true {
                    // Contents unknown: emptied and filled again, in the same atomic batch.
                    add(.flushSet(set.name))
                    if !set.elements.isEmpty { add(.addElements(set: set.name, set.elements)) }
                    continue
                }
                let before = oldSets[set.name]?.elements ?? [:]
                // A set filled from nothing (a first sync) is added as it is, not filtered into a copy.
                let removed = before.isEmpty ? [:] : before.filter { key, value in set.elements[key].map { $0 != value } ?? true }
                let added = before.isEmpty ? set.elements : set.elements.filter { key, value in before[key].map { $0 != value } ?? true }
                if !removed.isEmpty { add(.deleteElements(set: set.name, removed)) }
                if !added.isEmpty { add(.addElements(set: set.name, added)) }
            }
            for set in oldSets.values.sorted(by: { $0.name < $1.name })
            where new.sets[set.name] == nil && set.timeoutSeconds == nil && (!set.elements.isEmpty || set.elementsUnread) {
                add(set.elementsUnread ? .flushSet(set.name) : .deleteElements(set: set.name, set.elements))
            }
            for name in oldChains.keys.sorted()
            where new.chains[name] == nil && deletable.contains(StaleObject(family: family, kind: .chain, name: name)) {
                add(.deleteChain(name))
            }
            for name in oldSets.keys.sorted()
            where new.sets[name] == nil && deletable.contains(StaleObject(family: family, kind: .set, name: name)) {
                add(.deleteSet(name))
            }
        }
        return Transaction(operations)
    }

    /// A table Ferry no longer needs: empty it now, delete what was already empty.
    private static func staleOnly(_ table: Table, deletable: Set<StaleObject>) -> [Operation] {
        var operations: [Operation] = []
        for chain in table.chains.values.sorted(by: { $0.name < $1.name }) where !chain.rules.isEmpty {
            operations.append(Operation(table.family, table.name, .flushChain(chain.name)))
        }
        for set in table.sets.values.sorted(by: { $0.name < $1.name }) where set.timeoutSeconds == nil && !set.elements.isEmpty {
            operations.append(Operation(table.family, table.name, .deleteElements(set: set.name, set.elements)))
        }
        let everything =
            table.chains.keys.map { StaleObject(family: table.family, kind: .chain, name: $0) }
            + table.sets.keys.map { StaleObject(family: table.family, kind: .set, name: $0) }
        if !everything.isEmpty && everything.allSatisfy(deletable.contains) {
            operations = [Operation(table.family, table.name, .deleteTable)]
        }
        return operations
    }

    /// The chains and sets in `applied` that `desired` no longer has.
    public static func staleObjects(applied: Ruleset, desired: Ruleset) -> Set<StaleObject> {
        var result: Set<StaleObject> = []
        for (family, table) in applied.tables {
            let wanted = desired.tables[family]
            for name in table.chains.keys where wanted?.chains[name] == nil {
                result.insert(StaleObject(family: family, kind: .chain, name: name))
            }
            for name in table.sets.keys where wanted?.sets[name] == nil {
                result.insert(StaleObject(family: family, kind: .set, name: name))
            }
        }
        return result
    }
}

/// A chain or set Ferry no longer wants, waiting to be deleted.
public struct StaleObject: Sendable, Hashable {
    public enum Kind: Sendable, Hashable { case chain, set }
    public var family: NFTFamily
    public var kind: Kind
    public var name: String

    public init(family: NFTFamily, kind: Kind, name: String) {
        self.family = family
        self.kind = kind
        self.name = name
    }
}

extension Ruleset {
    /// The ruleset after `transaction` (no checks: see `InMemoryNetfilter` for the checking twin).
    public func applying(_ transaction: Transaction) -> Ruleset {
        var result = self
        for operation in transaction.operations {
            let family = operation.family
            switch operation.kind {
            case .addTable:
                if result.tables[family] == nil { result.tables[family] = Table(family: family, name: operation.table) }
            case .deleteTable:
                result.tables[family] = nil
            case .addChain(let chain):
                if result.tables[family]?.chains[chain.name] == nil { result.tables[family]?.chains[chain.name] = chain }
            case .flushChain(let name):
                result.tables[family]?.chains[name]?.rules = []
            case .deleteChain(let name):
                result.tables[family]?.chains[name] = nil
            case .addRule(let chain, let rule):
                result.tables[family]?.chains[chain]?.rules.append(rule)
            case .addSet(let set):
                if result.tables[family]?.sets[set.name] == nil { result.tables[family]?.sets[set.name] = set }
            case .deleteSet(let name):
                result.tables[family]?.sets[name] = nil
            case .flushSet(let name):
                result.tables[family]?.sets[name]?.elements = [:]
                result.tables[family]?.sets[name]?.elementsUnread = false
            case .addElements(let set, let elements):
                for (key, verdict) in elements { result.tables[family]?.sets[set]?.elements[key] = verdict }
            case .deleteElements(let set, let elements):
                for key in elements.keys { result.tables[family]?.sets[set]?.elements[key] = nil }
            }
        }
        return result
    }
}
