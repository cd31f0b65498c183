import NIOCore

/// One stored object, kept as JSON text cut where its `metadata.resourceVersion` goes, so that lists,
/// watch events and re-stamped deletions render it without parsing it again.
struct StoredObject: Sendable {
    /// `namespace/name`, or `name` for a cluster-scoped object: the store's key and the list order.
    let key: String
    /// The namespace, empty for a cluster-scoped object.
    let namespace: String
    /// `metadata.name`.
    let name: String
    /// `metadata.labels`.
    let labels: [String: String]
    /// The top-level members before the metadata's contents, without the opening brace and without
    /// `kind`/`apiVersion`: `"spec":{…},"metadata":{`.
    let headMembers: String
    /// Everything after the resource version: the other metadata members (with a leading comma),
    /// the metadata's closing brace, the later top-level members and the object's closing brace.
    let tail: String
    /// The resource version the object was stored at.
    let resourceVersion: Int

    /// Stores `parsed` at `resourceVersion`.
    init(_ parsed: ParsedObject, resourceVersion: Int) {
        key = parsed.key
        namespace = parsed.namespace
        name = parsed.name
        labels = parsed.labels
        headMembers = parsed.headMembers
        tail = parsed.tail
        self.resourceVersion = resourceVersion
    }

    /// Writes the object as a list item (no `kind` or `apiVersion`, as kube-apiserver writes typed lists).
    func writeListItem(to buffer: inout ByteBuffer, resourceVersion: Int) {
        buffer.writeStaticString("{")
        writeBody(to: &buffer, resourceVersion: resourceVersion)
    }

    /// Writes the object as a watch event's object, with `kind` and `apiVersion`.
    func writeWatchObject(to buffer: inout ByteBuffer, resource: FakeResource, resourceVersion: Int) {
        buffer.writeStaticString("{\"kind\":\"")
        buffer.writeString(resource.kind)
        buffer.writeStaticString("\",\"apiVersion\":\"")
        buffer.writeString(resource.apiVersion)
        buffer.writeStaticString("\",")
        writeBody(to: &buffer, resourceVersion: resourceVersion)
    }

    private func writeBody(to buffer: inout ByteBuffer, resourceVersion: Int) {
        buffer.writeString(headMembers)
        buffer.writeStaticString("\"resourceVersion\":\"")
        buffer.writeString(String(resourceVersion))
        buffer.writeStaticString("\"")
        buffer.writeString(tail)
    }
}

/// An object's JSON text taken apart: its identity, labels, and its text around the resource version.
struct ParsedObject: Sendable {
    var key: String
    var namespace: String
    var name: String
    var labels: [String: String]
    var headMembers: String
    var tail: String

    /// Parses one object given as JSON text. The text must be a JSON object with a `metadata` object
    /// holding a non-empty `name` (a precondition: the callers are tests). Whitespace outside strings is
    /// dropped, so each watch event stays on one line; `kind`, `apiVersion` and any
    /// `metadata.resourceVersion` are dropped (the server writes its own).
    init(json: String, resource: FakeResource) {
        let bytes = Self.minified(json)
        let scanner = JSONScanner(bytes: bytes)
        guard let (top, end) = scanner.members(ofObjectAt: 0), end == bytes.count else {
            preconditionFailure("FakeAPIServer: not a JSON object: \(json.prefix(200))")
        }
        guard let metadataIndex = top.firstIndex(where: { $0.key == "metadata" }),
            let (metadata, _) = scanner.members(ofObjectAt: top[metadataIndex].valueStart)
        else {
            preconditionFailure("FakeAPIServer: the object has no \"metadata\":{…}: \(json.prefix(200))")
        }
        var name = ""
        var namespace = ""
        var labels: [String: String] = [:]
        var otherMetadata: [String] = []
        for member in metadata {
            switch member.key {
            case "resourceVersion":
                continue
            case "name":
                name = scanner.string(at: member.valueStart) ?? ""
            case "namespace":
                namespace = scanner.string(at: member.valueStart) ?? ""
            case "labels":
                if let (pairs, _) = scanner.members(ofObjectAt: member.valueStart) {
                    for pair in pairs {
                        guard let value = scanner.string(at: pair.valueStart) else {
                            preconditionFailure("FakeAPIServer: label \(pair.key) is not a string")
                        }
                        labels[pair.key] = value
                    }
                }
            default:
                break
            }
            otherMetadata.append(scanner.text(member.start..<member.end))
        }
        precondition(!name.isEmpty, "FakeAPIServer: the object has no metadata.name: \(json.prefix(200))")
        if !resource.isNamespaced { namespace = "" }
        let isKept = { (member: JSONScanner.Member) in member.key != "kind" && member.key != "apiVersion" }
        let before = top[..<metadataIndex].filter(isKept).map { scanner.text($0.start..<$0.end) }
        let after = top[(metadataIndex + 1)...].filter(isKept).map { scanner.text($0.start..<$0.end) }

        var head = before.joined(separator: ",")
        if !before.isEmpty { head += "," }
        head += "\"metadata\":{"
        var tail = otherMetadata.isEmpty ? "" : "," + otherMetadata.joined(separator: ",")
        tail += "}"
        if !after.isEmpty { tail += "," + after.joined(separator: ",") }
        tail += "}"

        self.name = name
        self.namespace = namespace
        self.key = resource.isNamespaced ? "\(namespace)/\(name)" : name
        self.labels = labels
        self.headMembers = head
        self.tail = tail
    }

    /// The UTF-8 bytes of `json` without the whitespace outside strings.
    static func minified(_ json: String) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(json.utf8.count)
        var inString = false
        var escaped = false
        for byte in json.utf8 {
            if inString {
                bytes.append(byte)
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
            } else {
                switch byte {
                case 0x20, 0x09, 0x0A, 0x0D: continue
                case UInt8(ascii: "\""): inString = true
                default: break
                }
                bytes.append(byte)
            }
        }
        return bytes
    }
}

/// Finds members and values in minified JSON text without building a tree.
struct JSONScanner {
    /// One `"key":value` member of an object: its decoded key and its byte ranges.
    struct Member {
        var key: String
        var start: Int
        var valueStart: Int
        var end: Int
    }

    let bytes: [UInt8]

    /// The text of a byte range.
    func text(_ range: Range<Int>) -> String {
        String(decoding: bytes[range], as: UTF8.self)
    }

    /// The members of the object starting at `index`, and the index just past it; nil if no object is there.
    func members(ofObjectAt index: Int) -> (members: [Member], end: Int)? {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return nil }
        var members: [Member] = []
        var cursor = index + 1
        guard cursor < bytes.count else { return nil }
        if bytes[cursor] == UInt8(ascii: "}") { return (members, cursor + 1) }
        while true {
            guard let keyEnd = endOfString(at: cursor), let key = string(at: cursor),
                keyEnd < bytes.count, bytes[keyEnd] == UInt8(ascii: ":"),
                let valueEnd = endOfValue(at: keyEnd + 1), valueEnd < bytes.count
            else { return nil }
            members.append(Member(key: key, start: cursor, valueStart: keyEnd + 1, end: valueEnd))
            switch bytes[valueEnd] {
            case UInt8(ascii: ","): cursor = valueEnd + 1
            case UInt8(ascii: "}"): return (members, valueEnd + 1)
            default: return nil
            }
        }
    }

    /// The index just past the value starting at `index`, or nil if the text ends first.
    func endOfValue(at index: Int) -> Int? {
        guard index < bytes.count else { return nil }
        switch bytes[index] {
        case UInt8(ascii: "\""):
            return endOfString(at: index)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            var cursor = index
            while cursor < bytes.count {
                switch bytes[cursor] {
                case UInt8(ascii: "\""):
                    guard let end = endOfString(at: cursor) else { return nil }
                    cursor = end
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { return cursor + 1 }
                default:
                    break
                }
                cursor += 1
            }
            return nil
        default:
            var cursor = index
            while cursor < bytes.count {
                let byte = bytes[cursor]
                if byte == UInt8(ascii: ",") || byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") { break }
                cursor += 1
            }
            return cursor > index ? cursor : nil
        }
    }

    /// The index just past the string starting (with its quote) at `index`.
    func endOfString(at index: Int) -> Int? {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
        var cursor = index + 1
        while cursor < bytes.count {
            switch bytes[cursor] {
            case UInt8(ascii: "\\"): cursor += 2
            case UInt8(ascii: "\""): return cursor + 1
            default: cursor += 1
            }
        }
        return nil
    }

    /// The decoded string starting (with its quote) at `index`; nil if no string is there.
    func string(at index: Int) -> String? {
        guard let end = endOfString(at: index) else { return nil }
        let content = bytes[(index + 1)..<(end - 1)]
        guard content.contains(UInt8(ascii: "\\")) else { return String(decoding: content, as: UTF8.self) }
        var scalars = String.UnicodeScalarView()
        var utf8: [UInt8] = []
        var cursor = content.startIndex
        func flushUTF8() {
            scalars.append(contentsOf: String(decoding: utf8, as: UTF8.self).unicodeScalars)
            utf8.removeAll()
        }
        func hex4(at position: Int) -> UInt32? {
            guard position + 4 <= content.endIndex else { return nil }
            return UInt32(String(decoding: content[position..<(position + 4)], as: UTF8.self), radix: 16)
        }
        while cursor < content.endIndex {
            let byte = content[cursor]
            guard byte == UInt8(ascii: "\\"), cursor + 1 < content.endIndex else {
                utf8.append(byte)
                cursor += 1
                continue
            }
            let escape = content[cursor + 1]
            cursor += 2
            switch escape {
            case UInt8(ascii: "n"): utf8.append(0x0A)
            case UInt8(ascii: "t"): utf8.append(0x09)
            case UInt8(ascii: "r"): utf8.append(0x0D)
            case UInt8(ascii: "b"): utf8.append(0x08)
            case UInt8(ascii: "f"): utf8.append(0x0C)
            case UInt8(ascii: "u"):
                guard var code = hex4(at: cursor) else { return nil }
                cursor += 4
                if (0xD800..<0xDC00).contains(code), content[cursor...].starts(with: "\\u".utf8),
                    let low = hex4(at: cursor + 2), (0xDC00..<0xE000).contains(low)
                {
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    cursor += 6
                }
                flushUTF8()
                scalars.append(Unicode.Scalar(code) ?? "\u{FFFD}")
            default: utf8.append(escape)
            }
        }
        flushUTF8()
        return String(scalars)
    }
}
