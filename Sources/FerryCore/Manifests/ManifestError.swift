/// Where an object was read: a file (or stream), the document in it, and the item of a `List`.
public struct ManifestLocation: Sendable, Hashable, CustomStringConvertible {
    /// The file path, or a name such as `<stdin>` or `<embedded>`.
    public var source: String
    /// 1-based index of the YAML document in a multi-document stream.
    public var document: Int
    /// 0-based index in a `List`'s `items`, when the object came from one.
    public var item: Int?

    public init(source: String, document: Int = 1, item: Int? = nil) {
        self.source = source
        self.document = document
        self.item = item
    }

    public var description: String {
        var text = "\(source): document \(document)"
        if let item { text += ", items[\(item)]" }
        return text
    }
}

/// A problem with one field of one object, before it is placed in a file.
public struct FieldError: Error, Sendable, Hashable {
    /// The path of the field, as `kubectl explain` spells it: `spec.ports[0].port`.
    public var field: String
    public var message: String

    public init(_ field: String, _ message: String) {
        self.field = field
        self.message = message
    }
}

/// A manifest Ferry cannot use, with everything a user needs to find and fix it:
/// `examples/web.yaml: document 2: Service default/web: spec.ports[0].port: 70000 is out of range 1-65535`.
public struct ManifestError: Error, Sendable, Hashable, CustomStringConvertible {
    public var location: ManifestLocation?
    /// `Kind namespace/name` when known (`Service default/web`), or just the kind.
    public var object: String?
    public var field: String?
    public var message: String

    public init(location: ManifestLocation? = nil, object: String? = nil, field: String? = nil, message: String) {
        self.location = location
        self.object = object
        self.field = field
        self.message = message
    }

    public var description: String {
        var parts: [String] = []
        if let location { parts.append(location.description) }
        if let object { parts.append(object) }
        if let field, !field.isEmpty { parts.append(field) }
        parts.append(message)
        return parts.joined(separator: ": ")
    }
}

/// Renders a Codable coding path as a Kubernetes field path: `spec.ports[0].port`,
/// `metadata.labels["kubernetes.io/service-name"]`.
func fieldPath(_ codingPath: [CodingKey]) -> String {
    var text = ""
    for key in codingPath {
        if let index = key.intValue {
            text += "[\(index)]"
        } else if key.stringValue.contains(".") || key.stringValue.contains("/") {
            text += "[\"\(key.stringValue)\"]"
        } else {
            text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
        }
    }
    return text
}

extension DecodingError {
    /// The field this error is about and a sentence for it.
    var fieldAndMessage: (field: String, message: String) {
        switch self {
        case .typeMismatch(let type, let context):
            return (fieldPath(context.codingPath), "has the wrong type: expected \(describe(type))")
        case .valueNotFound(let type, let context):
            return (fieldPath(context.codingPath), "is null or missing: expected \(describe(type))")
        case .keyNotFound(let key, let context):
            return (fieldPath(context.codingPath + [key]), "is required")
        case .dataCorrupted(let context):
            let detail = (context.underlyingError.map { "\($0)" } ?? context.debugDescription)
            return (fieldPath(context.codingPath), "is not valid: \(detail)")
        @unknown default:
            return ("", "\(self)")
        }
    }

    private func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type: return "an integer"
        case is String.Type: return "a string"
        case is Bool.Type: return "a boolean (true or false)"
        case is [Any].Type: return "a list"
        default:
            let name = String(describing: type)
            if name.hasPrefix("Array") { return "a list" }
            if name.hasPrefix("Dictionary") { return "a mapping" }
            return "an object"
        }
    }
}
