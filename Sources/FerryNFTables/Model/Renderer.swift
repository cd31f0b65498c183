/// Renders rulesets and transactions as nft text: the ruleset in `nft list` layout (for `--dry-run`,
/// logs and golden tests), a transaction as an `nft -f` script.
public enum Renderer {
    /// The whole ruleset, tables in family order, sets then chains, each sorted by name.
    public static func text(_ ruleset: Ruleset) -> String {
        ruleset.sortedTables.map(text).joined()
    }

    public static func text(_ table: Table) -> String {
        var blocks: [String] = []
        for set in table.sets.values.sorted(by: { $0.name < $1.name }) {
            blocks.append(setBlock(set, family: table.family))
        }
        for chain in table.chains.values.sorted(by: { $0.name < $1.name }) {
            var lines = ["\tchain \(chain.name) {"]
            if let hook = chain.hook { lines.append("\t\t\(hook.text)") }
            for rule in chain.rules { lines.append("\t\t\(rule.text(table.family))") }
            lines.append("\t}")
            blocks.append(lines.joined(separator: "\n"))
        }
        return "table \(table.family.rawValue) \(table.name) {\n" + blocks.joined(separator: "\n\n") + (blocks.isEmpty ? "" : "\n") + "}\n"
    }

    static func setBlock(_ set: NFTSet, family: NFTFamily) -> String {
        var lines = ["\t\(set.isMap ? "map" : "set") \(set.name) {"]
        lines += declarationLines(set, family: family).map { "\t\t" + $0 }
        let elements = elementTexts(set)
        if !elements.isEmpty {
            lines.append("\t\telements = { " + elements.joined(separator: ",\n\t\t\t     ") + " }")
        }
        lines.append("\t}")
        return lines.joined(separator: "\n")
    }

    /// The lines declaring a set, in `nft list` order: its type, and for a dynamic set its size, flags
    /// and timeout.
    static func declarationLines(_ set: NFTSet, family: NFTFamily) -> [String] {
        var lines: [String]
        if set.data == .endpoint {
            // An endpoint map's key ends in the slot numgen picks, which has no type name: nft declares
            // it by expression (`typeof`), and so does Ferry (with nft's own userdata, so `nft list` agrees).
            let key = set.key.map { $0.expressionText(family) }.joined(separator: " . ")
            lines = ["typeof \(key) : \(family.rawValue) daddr . th dport"]
        } else {
            let type = set.key.map { $0.typeName(family) }.joined(separator: " . ")
            lines = ["type \(type)\(set.data == .verdict ? " : verdict" : "")"]
        }
        if let timeout = set.timeoutSeconds {
            lines += ["size \(NFTSet.dynamicSize)", "flags dynamic,timeout", "timeout \(duration(timeout))"]
        }
        return lines
    }

    static func elementTexts(_ set: NFTSet) -> [String] {
        set.elements.keys.sorted().map { key in
            guard let value = set.elements[key] ?? nil else { return key.description }
            return "\(key) : \(value)"
        }
    }

    /// nft's duration format: `3h`, `10m`, `1m30s`, `1d2h`.
    public static func duration(_ seconds: Int) -> String {
        var rest = seconds
        var text = ""
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] where rest >= size {
            text += "\(rest / size)\(unit)"
            rest %= size
        }
        return text.isEmpty ? "0s" : text
    }

    /// A transaction as an `nft -f` script: what the netlink batch does, in the same order.
    public static func script(_ transaction: Transaction) -> String {
        transaction.operations.map { operation in
            let table = "\(operation.family.rawValue) \(operation.table)"
            switch operation.kind {
            case .addTable:
                return "add table \(table)"
            case .deleteTable:
                return "delete table \(table)"
            case .addChain(let chain):
                guard let hook = chain.hook else { return "add chain \(table) \(chain.name)" }
                return "add chain \(table) \(chain.name) { \(hook.text) }"
            case .flushChain(let name):
                return "flush chain \(table) \(name)"
            case .deleteChain(let name):
                return "delete chain \(table) \(name)"
            case .addRule(let chain, let rule):
                return "add rule \(table) \(chain) \(rule.text(operation.family))"
            case .addSet(let set):
                let body = declarationLines(set, family: operation.family).joined(separator: "; ")
                return "add \(set.isMap ? "map" : "set") \(table) \(set.name) { \(body); }"
            case .deleteSet(let name):
                return "delete set \(table) \(name)"
            case .flushSet(let name):
                return "flush set \(table) \(name)"
            case .addElements(let set, let elements), .deleteElements(let set, let elements):
                let verb = { if case .addElements = operation.kind { return "add" } else { return "delete" } }()
                let items = elements.keys.sorted().map { key -> String in
                    guard verb == "add", let value = elements[key] ?? nil else { return key.description }
                    return "\(key) : \(value)"
                }
                return "\(verb) element \(table) \(set) { \(items.joined(separator: ", ")) }"
            }
        }.joined(separator: "\n") + (transaction.operations.isEmpty ? "" : "\n")
    }
}
