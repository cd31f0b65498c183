/// Reads the fields of one JSON object, naming every problem by its field path (`spec.ports[0].port`).
/// Unknown fields are ignored, as Kubernetes clients do.
struct FieldReader {
    let pairs: [(String, JSONValue)]
    let location: FieldPath

    /// Reads `value` as an object; absent or `null` reads as an empty object.
    init(_ value: JSONValue?, at location: FieldPath) throws(FieldError) {
        self.location = location
        switch value {
        case nil, .null?: pairs = []
        case .object(let pairs)?: self.pairs = pairs
        case let other?: throw FieldError(location.description, "has the wrong type: expected a mapping, found \(other.typeDescription)")
        }
    }

    /// The path of a field of this object, as text (only built for errors).
    func path(_ key: String) -> String { FieldPath.key(location, key).description }

    func value(_ key: String) -> JSONValue? {
        for (name, value) in pairs where name == key {
            if case .null = value { return nil }
            return value
        }
        return nil
    }

    private func mismatch(_ key: String, _ expected: String, _ found: JSONValue) -> FieldError {
        FieldError(path(key), "has the wrong type: expected \(expected), found \(found.typeDescription)")
    }

    func string(_ key: String) throws(FieldError) -> String? {
        guard let value = value(key) else { return nil }
        guard case .string(let text) = value else { throw mismatch(key, "a string", value) }
        return text
    }

    func int(_ key: String) throws(FieldError) -> Int? {
        guard let value = value(key) else { return nil }
        switch value {
        case .int(let number): return number
        case .double(let number) where number.rounded() == number && abs(number) < 1e15: return Int(number)
        case .double: throw FieldError(path(key), "must be a whole number")
        default: throw mismatch(key, "an integer", value)
        }
    }

    func bool(_ key: String) throws(FieldError) -> Bool? {
        guard let value = value(key) else { return nil }
        guard case .bool(let flag) = value else { throw mismatch(key, "a boolean (true or false)", value) }
        return flag
    }

    func intOrString(_ key: String) throws(FieldError) -> IntOrString? {
        guard let value = value(key) else { return nil }
        switch value {
        case .int(let number): return .int(number)
        case .string(let text): return .string(text)
        default: throw mismatch(key, "a port number or name", value)
        }
    }

    func strings(_ key: String) throws(FieldError) -> [String]? {
        guard let value = value(key) else { return nil }
        guard case .array(let elements) = value else { throw mismatch(key, "a list of strings", value) }
        var result: [String] = []
        result.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            guard case .string(let text) = element else {
                throw FieldError(
                    FieldPath.index(.key(location, key), index).description,
                    "has the wrong type: expected a string, found \(element.typeDescription)")
            }
            result.append(text)
        }
        return result
    }

    func stringMap(_ key: String) throws(FieldError) -> [String: String]? {
        guard let value = value(key) else { return nil }
        guard case .object(let entries) = value else { throw mismatch(key, "a mapping of strings", value) }
        var result: [String: String] = [:]
        result.reserveCapacity(entries.count)
        let child = FieldReader(unchecked: entries, at: .key(location, key))
        for (name, element) in entries {
            guard case .string(let text) = element else {
                throw FieldError(child.path(name), "has the wrong type: expected a string, found \(element.typeDescription)")
            }
            result[name] = text
        }
        return result
    }

    /// A nested object; `nil` when absent.
    func object(_ key: String) throws(FieldError) -> FieldReader? {
        guard let value = value(key) else { return nil }
        return try FieldReader(value, at: .key(location, key))
    }

    /// A list of objects, each read by `read`; `nil` when absent.
    func list<T>(_ key: String, _ read: (FieldReader) throws(FieldError) -> T) throws(FieldError) -> [T]? {
        guard let value = value(key) else { return nil }
        guard case .array(let elements) = value else { throw mismatch(key, "a list", value) }
        var result: [T] = []
        result.reserveCapacity(elements.count)
        for (index, element) in elements.enumerated() {
            result.append(try read(try FieldReader(element, at: .index(.key(location, key), index))))
        }
        return result
    }

    private init(unchecked pairs: [(String, JSONValue)], at location: FieldPath) {
        self.pairs = pairs
        self.location = location
    }
}

/// Where a field is, built cheaply while reading and rendered only when an error needs it:
/// `spec.ports[0].port`, `metadata.labels["kubernetes.io/service-name"]`.
indirect enum FieldPath: CustomStringConvertible {
    case root
    case key(FieldPath, String)
    case index(FieldPath, Int)

    var description: String {
        switch self {
        case .root:
            return ""
        case .key(let parent, let key):
            let base = parent.description
            if key.contains(".") || key.contains("/") { return base + "[\"\(key)\"]" }
            return base.isEmpty ? key : base + "." + key
        case .index(let parent, let index):
            return parent.description + "[\(index)]"
        }
    }
}
