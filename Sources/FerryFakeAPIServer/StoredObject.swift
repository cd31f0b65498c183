import Foundation
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
    ///
    /// Only the members up to `metadata` and the metadata are taken apart; the rest is kept as it is
    /// (searched for a late `kind` or `apiVersion` first), so bulk loads stay fast even in debug builds.
    init(json: String, resource: FakeResource) {
        var json = json
        json.makeContiguousUTF8()
        let parsed = json.utf8.withContiguousStorageIfAvailable { text -> ParsedObject? in
            guard JSONScanner.hasWhitespace(text) else { return JSONScanner(text).parseObject(resource: resource) }
            return JSONScanner.minified(text).withUnsafeBufferPointer {
                JSONScanner($0).parseObject(resource: resource)
            }
        }
        guard let parsed = parsed ?? nil else {
            preconditionFailure(
                "FakeAPIServer: not a JSON object with \"metadata\":{\"name\":…}: \(json.prefix(300))")
        }
        self = parsed
    }

    init(key: String, namespace: String, name: String, labels: [String: String], headMembers: String, tail: String) {
        self.key = key
        self.namespace = namespace
        self.name = name
        self.labels = labels
        self.headMembers = headMembers
        self.tail = tail
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

    private let base: UnsafePointer<UInt8>
    private let count: Int

    /// Scans `text`, which must stay valid while the scanner is used.
    init(_ text: UnsafeBufferPointer<UInt8>) {
        base = text.baseAddress ?? UnsafePointer(bitPattern: 1)!
        count = text.count
    }

    /// Whether `text` has a space, tab or line break anywhere.
    static func hasWhitespace(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = text.baseAddress else { return false }
        for byte: Int32 in [0x20, 0x0A, 0x09, 0x0D] where memchr(base, byte, text.count) != nil { return true }
        return false
    }

    /// `text` without the whitespace outside strings.
    static func minified(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count)
        let scanner = JSONScanner(text)
        var cursor = 0
        while cursor < text.count {
            let byte = text[cursor]
            if byte == UInt8(ascii: "\"") {
                let end = scanner.endOfString(at: cursor) ?? text.count
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: text[cursor..<end]))
                cursor = end
                continue
            }
            if byte != 0x20 && byte != 0x0A && byte != 0x09 && byte != 0x0D { bytes.append(byte) }
            cursor += 1
        }
        return bytes
    }

    /// Takes apart an object's text (see `ParsedObject.init(json:resource:)`); nil if it is not a JSON
    /// object with a metadata object holding a name.
    func parseObject(resource: FakeResource) -> ParsedObject? {
        guard count >= 2, base[0] == UInt8(ascii: "{"), base[count - 1] == UInt8(ascii: "}") else { return nil }
        var before: [String] = []
        var cursor = 1
        var metadata: Member?
        while metadata == nil {
            guard let member = member(at: cursor) else { return nil }
            switch member.key {
            case "metadata": metadata = member
            case "kind", "apiVersion": break
            default: before.append(text(member.start..<member.end))
            }
            guard member.end < count, base[member.end] == UInt8(ascii: ",") || metadata != nil else { return nil }
            cursor = member.end + 1
        }
        guard let metadata, let (metadataMembers, _) = members(ofObjectAt: metadata.valueStart) else { return nil }

        var name = ""
        var namespace = ""
        var labels: [String: String] = [:]
        var otherMetadata: [String] = []
        for member in metadataMembers {
            switch member.key {
            case "resourceVersion":
                continue
            case "name":
                name = string(at: member.valueStart) ?? ""
            case "namespace":
                namespace = string(at: member.valueStart) ?? ""
            case "labels":
                guard let (pairs, _) = members(ofObjectAt: member.valueStart) else { break }
                for pair in pairs {
                    guard let value = string(at: pair.valueStart) else { return nil }
                    labels[pair.key] = value
                }
            default:
                break
            }
            otherMetadata.append(text(member.start..<member.end))
        }
        guard !name.isEmpty else { return nil }
        if !resource.isNamespaced { namespace = "" }

        // After the metadata: the rest as written, unless a kind or apiVersion hides there.
        var after = text(metadata.end..<count)
        if contains("\"kind\":", from: metadata.end) || contains("\"apiVersion\":", from: metadata.end) {
            var kept: [String] = []
            cursor = metadata.end
            while base[cursor] == UInt8(ascii: ",") {
                guard let member = member(at: cursor + 1) else { return nil }
                if member.key != "kind" && member.key != "apiVersion" { kept.append(text(member.start..<member.end)) }
                cursor = member.end
                guard cursor < count else { return nil }
            }
            after = (kept.isEmpty ? "" : "," + kept.joined(separator: ",")) + "}"
        }

        var head = before.joined(separator: ",")
        if !before.isEmpty { head += "," }
        head += "\"metadata\":{"
        let tail = (otherMetadata.isEmpty ? "" : "," + otherMetadata.joined(separator: ",")) + "}" + after
        return ParsedObject(
            key: resource.isNamespaced ? "\(namespace)/\(name)" : name, namespace: namespace, name: name,
            labels: labels, headMembers: head, tail: tail)
    }

    /// The text of a byte range.
    func text(_ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(start: base + range.lowerBound, count: range.count), as: UTF8.self)
    }

    /// Whether `needle` occurs in the text at or after `start`.
    private func contains(_ needle: StaticString, from start: Int) -> Bool {
        let length = needle.utf8CodeUnitCount
        var cursor = start
        while cursor + length <= count,
            let found = memchr(base + cursor, Int32(needle.utf8Start.pointee), count - cursor - length + 1)
        {
            let position = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
            if memcmp(base + position, needle.utf8Start, length) == 0 { return true }
            cursor = position + 1
        }
        return false
    }

    /// The `"key":value` member starting at `index`; nil if none is there.
    func member(at index: Int) -> Member? {
        guard let keyEnd = endOfString(at: index), let key = string(at: index), keyEnd < count,
            base[keyEnd] == UInt8(ascii: ":"), let valueEnd = endOfValue(at: keyEnd + 1)
        else { return nil }
        return Member(key: key, start: index, valueStart: keyEnd + 1, end: valueEnd)
    }

    /// The members of the object starting at `index`, and the index just past it; nil if no object is there.
    func members(ofObjectAt index: Int) -> (members: [Member], end: Int)? {
        guard index + 1 < count, base[index] == UInt8(ascii: "{") else { return nil }
        var members: [Member] = []
        var cursor = index + 1
        if base[cursor] == UInt8(ascii: "}") { return (members, cursor + 1) }
        while true {
            guard let member = member(at: cursor), member.end < count else { return nil }
            members.append(member)
            switch base[member.end] {
            case UInt8(ascii: ","): cursor = member.end + 1
            case UInt8(ascii: "}"): return (members, member.end + 1)
            default: return nil
            }
        }
    }

    /// The index just past the value starting at `index`, or nil if the text ends first.
    func endOfValue(at index: Int) -> Int? {
        guard index < count else { return nil }
        switch base[index] {
        case UInt8(ascii: "\""):
            return endOfString(at: index)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            var cursor = index
            while cursor < count {
                switch base[cursor] {
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
            while cursor < count {
                let byte = base[cursor]
                if byte == UInt8(ascii: ",") || byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") { break }
                cursor += 1
            }
            return cursor > index ? cursor : nil
        }
    }

    /// The index just past the string starting (with its quote) at `index`.
    func endOfString(at index: Int) -> Int? {
        guard index < count, base[index] == UInt8(ascii: "\"") else { return nil }
        var cursor = index + 1
        while cursor < count, let found = memchr(base + cursor, 0x22, count - cursor) {
            let quote = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
            var backslashes = 0
            while quote - backslashes - 1 > index && base[quote - backslashes - 1] == UInt8(ascii: "\\") {
                backslashes += 1
            }
            if backslashes % 2 == 0 { return quote + 1 }
            cursor = quote + 1
        }
        return nil
    }

    /// The decoded string starting (with its quote) at `index`; nil if no string is there.
    func string(at index: Int) -> String? {
        guard let end = endOfString(at: index) else { return nil }
        let content = UnsafeBufferPointer(start: base + index + 1, count: end - index - 2)
        guard memchr(content.baseAddress!, 0x5C, content.count) != nil else {
            return String(decoding: content, as: UTF8.self)
        }
        var scalars = String.UnicodeScalarView()
        var utf8: [UInt8] = []
        var cursor = 0
        func flushUTF8() {
            scalars.append(contentsOf: String(decoding: utf8, as: UTF8.self).unicodeScalars)
            utf8.removeAll()
        }
        func hex4(at position: Int) -> UInt32? {
            guard position + 4 <= content.count else { return nil }
            return UInt32(String(decoding: UnsafeBufferPointer(rebasing: content[position..<(position + 4)]), as: UTF8.self), radix: 16)
        }
        while cursor < content.count {
            let byte = content[cursor]
            guard byte == UInt8(ascii: "\\"), cursor + 1 < content.count else {
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
                if (0xD800..<0xDC00).contains(code), cursor + 1 < content.count,
                    content[cursor] == UInt8(ascii: "\\"), content[cursor + 1] == UInt8(ascii: "u"),
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
