import Yams

/// Converts a composed YAML document to the JSON value it denotes, as Kubernetes' own YAML reader does
/// (sigs.k8s.io/yaml), so YAML and JSON manifests share one decoding path.
///
/// Scalars are typed by the YAML 1.2 core schema without regular expressions: quoted scalars are
/// strings; plain `true`/`false` are booleans, `null`/`~`/empty are null, decimal integers and floats
/// are numbers; everything else is a string. Mapping keys are always strings.
enum YAMLToJSON {
    struct UnsupportedNode: Error, CustomStringConvertible {
        var description: String
    }

    static func convert(_ node: Yams.Node) throws -> JSONValue {
        switch node {
        case .scalar(let scalar):
            return value(of: scalar)
        case .mapping(let mapping):
            var pairs: [(String, JSONValue)] = []
            pairs.reserveCapacity(mapping.count)
            for (key, element) in mapping {
                guard case .scalar(let keyScalar) = key else {
                    throw UnsupportedNode(description: "line \(key.mark?.line ?? 0): mapping keys must be plain strings")
                }
                pairs.append((keyScalar.string, try convert(element)))
            }
            return .object(pairs)
        case .sequence(let sequence):
            var elements: [JSONValue] = []
            elements.reserveCapacity(sequence.count)
            for element in sequence { elements.append(try convert(element)) }
            return .array(elements)
        case .alias:
            throw UnsupportedNode(description: "line \(node.mark?.line ?? 0): YAML aliases (*name) are not supported in manifests")
        }
    }

    private static func value(of scalar: Yams.Node.Scalar) -> JSONValue {
        let text = scalar.string
        guard scalar.style == .plain || scalar.style == .any else { return .string(text) }
        switch text {
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        case "", "~", "null", "Null", "NULL": return .null
        default:
            guard isJSONNumber(text.utf8) else { return .string(text) }
            if let number = Int(text) { return .int(number) }
            return Double(text).map(JSONValue.double) ?? .string(text)
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`: numbers JSON accepts as written.
    /// Other YAML numerals (`+1`, `0o17`, `.5`) stay strings, as Kubernetes would reject them anyway.
    static func isJSONNumber(_ bytes: String.UTF8View) -> Bool {
        var index = bytes.startIndex
        func peek() -> UInt8? { index < bytes.endIndex ? bytes[index] : nil }
        func isDigit(_ byte: UInt8?) -> Bool { byte.map { $0 >= 48 && $0 <= 57 } ?? false }
        if peek() == UInt8(ascii: "-") { index = bytes.index(after: index) }
        guard isDigit(peek()) else { return false }
        if peek() == UInt8(ascii: "0") {
            index = bytes.index(after: index)
        } else {
            while isDigit(peek()) { index = bytes.index(after: index) }
        }
        if peek() == UInt8(ascii: ".") {
            index = bytes.index(after: index)
            guard isDigit(peek()) else { return false }
            while isDigit(peek()) { index = bytes.index(after: index) }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            index = bytes.index(after: index)
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { index = bytes.index(after: index) }
            guard isDigit(peek()) else { return false }
            while isDigit(peek()) { index = bytes.index(after: index) }
        }
        return index == bytes.endIndex
    }
}
