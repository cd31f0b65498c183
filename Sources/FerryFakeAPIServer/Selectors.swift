/// A request's label and field selectors (and the namespace of a namespaced path), as one test on objects.
struct ObjectFilter: Sendable {
    /// One term of a label selector.
    enum LabelRequirement: Sendable {
        case exists(String)
        case absent(String)
        case equals(String, String)
        case notEquals(String, String)
        case isIn(String, Set<String>)
        case notIn(String, Set<String>)

        func matches(_ labels: [String: String]) -> Bool {
            switch self {
            case .exists(let key): labels[key] != nil
            case .absent(let key): labels[key] == nil
            case .equals(let key, let value): labels[key] == value
            case .notEquals(let key, let value): labels[key] != value
            case .isIn(let key, let values): labels[key].map(values.contains) ?? false
            case .notIn(let key, let values): !(labels[key].map(values.contains) ?? false)
            }
        }
    }

    /// One term of a field selector: `metadata.name` or `metadata.namespace`, equal or not.
    struct FieldRequirement: Sendable {
        var isName: Bool
        var value: String
        var wantsEqual: Bool

        func matches(_ object: StoredObject) -> Bool {
            ((isName ? object.name : object.namespace) == value) == wantsEqual
        }
    }

    /// Why a selector was refused (answered with 400 BadRequest).
    struct Invalid: Error {
        var message: String
    }

    var labels: [LabelRequirement] = []
    var fields: [FieldRequirement] = []

    /// Whether `object` passes every requirement.
    func matches(_ object: StoredObject) -> Bool {
        for field in fields where !field.matches(object) { return false }
        for label in labels where !label.matches(object.labels) { return false }
        return true
    }

    /// Whether the filter lets every object through.
    var isEverything: Bool { labels.isEmpty && fields.isEmpty }

    /// Parses `labelSelector` (`key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`,
    /// `key notin (a,b)`, comma-separated) and `fieldSelector` (`metadata.name` / `metadata.namespace`
    /// with `=`, `==` or `!=`), plus the namespace a namespaced path names.
    init(labelSelector: String?, fieldSelector: String?, namespace: String?) throws(Invalid) {
        if let labelSelector, !labelSelector.isEmpty {
            for term in Self.terms(labelSelector) {
                labels.append(try Self.labelRequirement(term, selector: labelSelector))
            }
        }
        if let fieldSelector, !fieldSelector.isEmpty {
            for term in Self.terms(fieldSelector) {
                fields.append(try Self.fieldRequirement(term))
            }
        }
        if let namespace {
            fields.append(FieldRequirement(isName: false, value: namespace, wantsEqual: true))
        }
    }

    /// Splits a selector at the commas outside parentheses, trimming spaces.
    private static func terms(_ selector: String) -> [String] {
        var terms: [String] = []
        var current = ""
        var depth = 0
        for character in selector {
            switch character {
            case "(": depth += 1
            case ")": depth -= 1
            case "," where depth == 0:
                terms.append(trimmed(current))
                current = ""
                continue
            default: break
            }
            current.append(character)
        }
        terms.append(trimmed(current))
        return terms
    }

    private static func trimmed<S: StringProtocol>(_ text: S) -> String {
        String(text.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }

    private static func validKey(_ key: String, selector: String) throws(Invalid) -> String {
        guard !key.isEmpty, !key.contains(" "), !key.contains("="), !key.contains("!") else {
            throw Invalid(message: "unable to parse requirement: invalid label key in selector \(selector)")
        }
        return key
    }

    private static func labelRequirement(_ term: String, selector: String) throws(Invalid) -> LabelRequirement {
        if term.hasPrefix("!") {
            return .absent(try validKey(trimmed(term.dropFirst()), selector: selector))
        }
        for (operatorText, make) in [
            ("!=", LabelRequirement.notEquals), ("==", LabelRequirement.equals), ("=", LabelRequirement.equals),
        ] {
            if let range = term.firstRange(of: operatorText) {
                let key = try validKey(trimmed(term[..<range.lowerBound]), selector: selector)
                return make(key, trimmed(term[range.upperBound...]))
            }
        }
        for (operatorText, isIn) in [(" notin ", false), (" in ", true)] {
            guard let range = term.firstRange(of: operatorText) else { continue }
            let key = try validKey(trimmed(term[..<range.lowerBound]), selector: selector)
            let set = trimmed(term[range.upperBound...])
            guard set.hasPrefix("("), set.hasSuffix(")") else {
                throw Invalid(message: "unable to parse requirement: expected a value set in \(selector)")
            }
            let values = Set(set.dropFirst().dropLast().split(separator: ",").map { trimmed($0) })
            return isIn ? .isIn(key, values) : .notIn(key, values)
        }
        return .exists(try validKey(term, selector: selector))
    }

    private static func fieldRequirement(_ term: String) throws(Invalid) -> FieldRequirement {
        for (operatorText, wantsEqual) in [("!=", false), ("==", true), ("=", true)] {
            guard let range = term.firstRange(of: operatorText) else { continue }
            let field = trimmed(term[..<range.lowerBound])
            let value = trimmed(term[range.upperBound...])
            switch field {
            case "metadata.name": return FieldRequirement(isName: true, value: value, wantsEqual: wantsEqual)
            case "metadata.namespace": return FieldRequirement(isName: false, value: value, wantsEqual: wantsEqual)
            default: throw Invalid(message: "field label not supported: \(field)")
            }
        }
        throw Invalid(message: "invalid selector: '\(term)'; can't understand '\(term)'")
    }
}
