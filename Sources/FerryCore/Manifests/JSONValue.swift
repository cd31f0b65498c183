import Foundation

/// A JSON (or YAML) value as a tree, for callers that want one (`ValueTree.value(at:)`); manifests
/// are decoded from the flat `ValueTree` itself. Objects keep their keys in order.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.int(let a), .int(let b)): return a == b
        case (.double(let a), .double(let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)): return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .null: hasher.combine(0)
        case .bool(let value): hasher.combine(value)
        case .int(let value): hasher.combine(value)
        case .double(let value): hasher.combine(value)
        case .string(let value): hasher.combine(value)
        case .array(let value): hasher.combine(value)
        case .object(let pairs):
            for (key, value) in pairs {
                hasher.combine(key)
                hasher.combine(value)
            }
        }
    }

    /// The value under `key` of an object; `nil` when absent or when this is not an object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let pairs) = self else { return nil }
        for (name, value) in pairs where name == key { return value }
        return nil
    }
}

extension JSONValue {
    /// Parses a small configuration document (a kubeconfig, say): the first YAML document, or JSON,
    /// with the manifest readers' limits (aliases bounded, depth capped). An empty text is `null`.
    public static func parseDocument(_ data: Data, format: ManifestFormat) throws(APIDecodingError) -> JSONValue {
        let result = data.withUnsafeBytes { bytes in Result { () throws(APIDecodingError) in try parseDocument(bytes, format: format) } }
        return try result.get()
    }

    private static func parseDocument(_ bytes: UnsafeRawBufferPointer, format: ManifestFormat) throws(APIDecodingError) -> JSONValue {
        switch format {
        case .json:
            do {
                return try JSONParser.parseTree(bytes).value(at: 0)
            } catch {
                throw APIDecodingError("is not valid JSON: \(error)")
            }
        case .yaml:
            var first: Result<ValueTree, YAMLReader.DocumentError>?
            do throws(YAMLReader.SyntaxError) {
                try YAMLReader.read(bytes) { _, tree in if first == nil { first = tree } }
            } catch {
                throw APIDecodingError(error.isEncoding ? "is not UTF-8 text" : "is not valid YAML: \(error.description)")
            }
            switch first {
            case nil: return .null
            case .success(let tree)?: return tree.value(at: tree.root)
            case .failure(let error)?: throw APIDecodingError("\(error.description)")
            }
        }
    }
}
