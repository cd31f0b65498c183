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
