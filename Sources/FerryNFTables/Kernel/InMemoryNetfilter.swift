/// A twin of the kernel's nftables for tests without root: applies a transaction to a copy and keeps it
/// only if every operation succeeds, and rejects what the kernel rejects: a rule or map element naming
/// a chain or set that does not exist, deleting what does not exist, deleting a chain or set still in use.
public final class InMemoryNetfilter: Netfilter {
    public private(set) var ruleset = Ruleset()
    private var generationNumber: UInt32 = 0
    /// Transactions applied successfully, for tests to inspect.
    public private(set) var history: [Transaction] = []
    /// When set, the next transaction fails with this error (once).
    public var failNext: NetfilterError?

    public init() {}

    public func apply(_ transaction: Transaction) throws(NetfilterError) {
        if let failure = failNext {
            failNext = nil
            throw failure
        }
        var next = ruleset
        for operation in transaction.operations {
            try check(operation, in: next)
            next = next.applying(Transaction([operation]))
        }
        ruleset = next
        history.append(transaction)
        if !transaction.isEmpty { generationNumber &+= 1 }
    }

    public func read(table: String, skippingElementsOf skipped: Set<String> = []) throws(NetfilterError) -> Ruleset {
        var result = Ruleset()
        for (family, stored) in ruleset.tables where stored.name == table {
            var copy = stored
            for (name, chain) in copy.chains {
                copy.chains[name]?.rules = chain.rules.map { Rule([.unparsed(RuleFingerprint.of($0, family: family))]) }
            }
            for (name, set) in copy.sets where set.timeoutSeconds != nil {
                copy.sets[name]?.elements = [:]
            }
            for name in skipped where copy.sets[name] != nil && copy.sets[name]?.timeoutSeconds == nil {
                copy.sets[name]?.elements = [:]
                copy.sets[name]?.elementsUnread = true
            }
            result.tables[family] = copy
        }
        return result
    }

    public func deleteTables(named table: String) throws(NetfilterError) -> [NFTFamily] {
        let families = ruleset.tables.filter { $0.value.name == table }.map(\.key).sorted()
        for family in families { ruleset.tables[family] = nil }
        if !families.isEmpty { generationNumber &+= 1 }
        return families
    }

    public func generation() throws(NetfilterError) -> UInt32 { generationNumber }

    private func check(_ operation: Operation, in ruleset: Ruleset) throws(NetfilterError) {
        func fail(_ kind: NetfilterError.Kind, _ code: Int32, _ message: String) -> NetfilterError {
            NetfilterError(kind: kind, code: code, operation: operation, message: message)
        }
        if case .addTable = operation.kind { return }
        guard let table = ruleset.tables[operation.family], table.name == operation.table else {
            throw fail(.notFound, 2, "no such table")
        }
        switch operation.kind {
        case .addTable:
            return
        case .deleteTable:
            return
        case .addChain(let chain):
            if let existing = table.chains[chain.name], existing.hook != chain.hook {
                throw fail(.conflict, 17, "chain exists with another hook")
            }
        case .flushChain(let name):
            if table.chains[name] == nil { throw fail(.notFound, 2, "no such chain") }
        case .deleteChain(let name):
            guard let chain = table.chains[name] else { throw fail(.notFound, 2, "no such chain") }
            if !chain.rules.isEmpty || isReferenced(chain: name, in: table) { throw fail(.conflict, 16, "chain is in use") }
        case .addRule(let chain, let rule):
            if table.chains[chain] == nil { throw fail(.notFound, 2, "no such chain") }
            for target in rule.statements.flatMap(\.referencedChains) where table.chains[target] == nil {
                throw fail(.notFound, 2, "rule refers to missing chain \(target)")
            }
            for set in rule.statements.flatMap(\.referencedSets) where table.sets[set] == nil {
                throw fail(.notFound, 2, "rule refers to missing set \(set)")
            }
        case .addSet(let set):
            if let existing = table.sets[set.name], existing.declaration != set.declaration {
                throw fail(.conflict, 17, "set exists with another declaration")
            }
        case .flushSet(let name):
            if table.sets[name] == nil { throw fail(.notFound, 2, "no such set") }
        case .deleteSet(let name):
            if table.sets[name] == nil { throw fail(.notFound, 2, "no such set") }
            if table.chains.values.contains(where: { $0.rules.contains { $0.statements.flatMap(\.referencedSets).contains(name) } }) {
                throw fail(.conflict, 16, "set is in use")
            }
        case .addElements(let name, let elements):
            guard let set = table.sets[name] else { throw fail(.notFound, 2, "no such set") }
            for value in elements.values where value?.data != set.data {
                throw fail(.rejected, 22, "element data \(value.map(\.description) ?? "none") does not fit set \(name)")
            }
            for case let value?? in elements.values {
                if let target = value.chain, table.chains[target] == nil {
                    throw fail(.notFound, 2, "element refers to missing chain \(target)")
                }
            }
            for key in elements.keys where key.values.count != set.key.count {
                throw fail(.rejected, 22, "element \(key) does not fit the key of set \(name)")
            }
        case .deleteElements(let name, let elements):
            guard let set = table.sets[name] else { throw fail(.notFound, 2, "no such set") }
            for key in elements.keys where set.elements[key] == nil {
                throw fail(.notFound, 2, "no element \(key) in set \(name)")
            }
        }
    }

    private func isReferenced(chain name: String, in table: Table) -> Bool {
        for chain in table.chains.values where chain.rules.contains(where: { $0.statements.flatMap(\.referencedChains).contains(name) }) {
            return true
        }
        for set in table.sets.values where set.elements.values.contains(where: { $0?.chain == name }) {
            return true
        }
        return false
    }
}
