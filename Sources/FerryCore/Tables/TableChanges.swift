/// What a sync changed, for a log line an operator can read: service ports added and removed, and the
/// endpoints each changed port gained and lost, up to a bound, then a count.
public enum TableChanges {
    /// `default/web:http/TCP +10.244.1.3:80 -10.244.2.2:80; default/api:grpc/TCP added (3 endpoints); …`
    public static func describe(
        _ changed: Set<ServicePortName>, before: BackendTables, after: BackendTables, limit: Int = 10
    ) -> String {
        var parts: [String] = []
        for name in changed.sorted().prefix(limit) {
            switch (before.ports[name], after.ports[name]) {
            case (nil, let new?):
                parts.append("\(name) added (\(new.endpoints.count) endpoint\(new.endpoints.count == 1 ? "" : "s"))")
            case (_?, nil):
                parts.append("\(name) removed")
            case (let old?, let new?):
                let oldSet = Set(old.endpoints.map(\.description))
                let newSet = Set(new.endpoints.map(\.description))
                let added = newSet.subtracting(oldSet).sorted()
                let removed = oldSet.subtracting(newSet).sorted()
                if added.isEmpty && removed.isEmpty {
                    parts.append("\(name) changed")
                } else {
                    parts.append(([name.description] + added.map { "+" + $0 } + removed.map { "-" + $0 }).joined(separator: " "))
                }
            case (nil, nil):
                break
            }
        }
        if changed.count > limit { parts.append("and \(changed.count - limit) more") }
        return parts.joined(separator: "; ")
    }
}
