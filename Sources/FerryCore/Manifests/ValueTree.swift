/// A parsed JSON or YAML document held flat: its nodes in document order in one array, the bytes of
/// its strings in another. Both parsers build one; `FieldReader` decodes the wire types from it.
///
/// Why flat: a tree of `JSONValue`s costs an allocation per object, list and long string, and as much
/// again to free. Reading 10,000 Services + 10,000 EndpointSlices (18.8 MB of JSON), building and
/// freeing that tree was most of the read; here a document is two allocations, whatever its size, and
/// a string becomes a `String` only when a decoder asks for it.
///
/// A container node records where its subtree ends, so a reader skips a value in one step; an object's
/// children are its keys and values, alternating.
public final class ValueTree: Sendable {
    /// What a node is.
    public enum Kind: UInt8, Sendable {
        case null, bool, int, double, string, array, object
    }

    /// One node, 12 bytes. `first`/`second` mean, by kind: bool: value in `first`; int and double: the
    /// 64 bits of the value; string: offset and length in `text`; array and object: the index one past
    /// the subtree's last node, and the number of elements (pairs for an object).
    struct Node: Sendable {
        var kind: Kind
        var first: UInt32
        var second: UInt32

        var bits: UInt64 { UInt64(first) << 32 | UInt64(second) }

        init(kind: Kind, first: UInt32 = 0, second: UInt32 = 0) {
            self.kind = kind
            self.first = first
            self.second = second
        }

        init(kind: Kind, bits: UInt64) {
            self.init(kind: kind, first: UInt32(truncatingIfNeeded: bits >> 32), second: UInt32(truncatingIfNeeded: bits))
        }
    }

    let nodes: [Node]
    let text: [UInt8]

    init(nodes: [Node], text: [UInt8]) {
        self.nodes = nodes
        self.text = text
    }

    /// The index of the root node.
    public var root: Int { 0 }

    /// How many nodes the document has.
    public var count: Int { nodes.count }

    public func kind(_ index: Int) -> Kind { nodes[index].kind }

    /// The index one past the value at `index` and everything inside it.
    @inline(__always)
    func end(_ index: Int) -> Int {
        let node = nodes[index]
        return node.kind == .array || node.kind == .object ? Int(node.first) : index + 1
    }

    /// Elements of a list, pairs of a mapping.
    func elementCount(_ index: Int) -> Int { Int(nodes[index].second) }

    func bool(_ index: Int) -> Bool { nodes[index].first != 0 }
    func int(_ index: Int) -> Int { Int(Int64(bitPattern: nodes[index].bits)) }
    func double(_ index: Int) -> Double { Double(bitPattern: nodes[index].bits) }

    /// The text of a string node.
    func string(_ index: Int) -> String {
        let node = nodes[index]
        return text.withUnsafeBufferPointer { buffer in
            String(decoding: UnsafeBufferPointer(rebasing: buffer[Int(node.first)..<Int(node.first) + Int(node.second)]), as: UTF8.self)
        }
    }

    /// Whether the string node at `index` spells `key` (compared as bytes, without making a String).
    @inline(__always)
    func stringEquals(_ index: Int, _ key: StaticString) -> Bool {
        let node = nodes[index]
        guard node.kind == .string, Int(node.second) == key.utf8CodeUnitCount else { return false }
        return text.withUnsafeBufferPointer { buffer in
            // The first byte settles most mismatches without a call to memcmp.
            let start = buffer.baseAddress! + Int(node.first)
            return node.second == 0 || (start.pointee == key.utf8Start.pointee && memcmp(start, key.utf8Start, Int(node.second)) == 0)
        }
    }

    /// The indices of a list's elements.
    func elements(_ index: Int) -> [Int] {
        var result: [Int] = []
        result.reserveCapacity(elementCount(index))
        var cursor = index + 1
        let stop = end(index)
        while cursor < stop {
            result.append(cursor)
            cursor = end(cursor)
        }
        return result
    }

    /// The (key, value) index pairs of a mapping.
    func pairs(_ index: Int) -> [(key: Int, value: Int)] {
        var result: [(key: Int, value: Int)] = []
        result.reserveCapacity(elementCount(index))
        var cursor = index + 1
        let stop = end(index)
        while cursor < stop {
            result.append((cursor, cursor + 1))
            cursor = end(cursor + 1)
        }
        return result
    }

    /// The value under `key` of the mapping at `index`; `nil` when absent or when it is no mapping.
    func value(_ index: Int, key: StaticString) -> Int? {
        guard nodes[index].kind == .object else { return nil }
        var cursor = index + 1
        let stop = end(index)
        while cursor < stop {
            if stringEquals(cursor, key) { return cursor + 1 }
            cursor = end(cursor + 1)
        }
        return nil
    }

    /// The value under `key` when it is a string.
    func stringValue(_ index: Int, key: StaticString) -> String? {
        guard let found = value(index, key: key), nodes[found].kind == .string else { return nil }
        return string(found)
    }

    /// What the value is, for error messages: "a string", "a list"…
    func typeDescription(_ index: Int) -> String {
        switch nodes[index].kind {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "a list"
        case .object: return "a mapping"
        }
    }

    /// The value at `index` as a `JSONValue` tree (for tests and callers that want a tree).
    public func value(at index: Int) -> JSONValue {
        switch nodes[index].kind {
        case .null: return .null
        case .bool: return .bool(bool(index))
        case .int: return .int(int(index))
        case .double: return .double(double(index))
        case .string: return .string(string(index))
        case .array: return .array(elements(index).map { value(at: $0) })
        case .object: return .object(pairs(index).map { (string($0.key), value(at: $0.value)) })
        }
    }
}

/// Builds a `ValueTree` in document order: scalars are appended, containers are opened and closed.
struct ValueTreeBuilder {
    private(set) var nodes: [ValueTree.Node] = []
    private(set) var text: [UInt8] = []

    init(expectedBytes: Int = 0) {
        // Reserved generously, since pages of a reservation that are never written cost no memory, while
        // regrowing copies: EndpointSlices take a node per 8.3 bytes of JSON, and a reservation of one per
        // 12 made the node array double and copy its 19 MB in the middle of the parse. The strings' bytes
        // never outnumber the document's, so `text` never grows.
        nodes.reserveCapacity(expectedBytes / 6)
        text.reserveCapacity(expectedBytes)
    }

    var count: Int { nodes.count }

    mutating func appendNull() { nodes.append(ValueTree.Node(kind: .null)) }
    mutating func append(_ flag: Bool) { nodes.append(ValueTree.Node(kind: .bool, first: flag ? 1 : 0)) }
    mutating func append(_ number: Int) { nodes.append(ValueTree.Node(kind: .int, bits: UInt64(bitPattern: Int64(number)))) }
    mutating func append(_ number: Double) { nodes.append(ValueTree.Node(kind: .double, bits: number.bitPattern)) }

    mutating func appendString(_ bytes: UnsafeRawBufferPointer) {
        let offset = text.count
        appendText(bytes)
        nodes.append(
            ValueTree.Node(kind: .string, first: UInt32(truncatingIfNeeded: offset), second: UInt32(truncatingIfNeeded: bytes.count)))
    }

    /// A string whose bytes are already at the end of `text` (appended with `appendText`).
    mutating func appendString(startingAt offset: Int) {
        nodes.append(
            ValueTree.Node(
                kind: .string, first: UInt32(truncatingIfNeeded: offset), second: UInt32(truncatingIfNeeded: text.count - offset)))
    }

    mutating func appendText(_ byte: UInt8) { text.append(byte) }
    /// Appends with one memcpy (a raw buffer appended as a sequence went byte by byte).
    mutating func appendText(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        text.append(contentsOf: UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: bytes.count))
    }
    var textCount: Int { text.count }

    /// Opens a list or mapping; returns its index for `close`.
    mutating func open(_ kind: ValueTree.Kind) -> Int {
        nodes.append(ValueTree.Node(kind: kind))
        return nodes.count - 1
    }

    /// Closes the container opened at `index`, with `count` elements (pairs for a mapping).
    mutating func close(_ index: Int, count: Int) {
        nodes[index].first = UInt32(truncatingIfNeeded: nodes.count)
        nodes[index].second = UInt32(truncatingIfNeeded: count)
    }

    /// Appends a copy of `range` of the nodes (an alias's expansion): strings share their bytes, and
    /// containers' end indices move with the copy.
    mutating func appendCopy(of range: Range<Int>) {
        let shift = Int64(nodes.count - range.lowerBound)
        nodes.reserveCapacity(nodes.count + range.count)
        for index in range {
            var node = nodes[index]
            if node.kind == .array || node.kind == .object {
                node.first = UInt32(truncatingIfNeeded: Int64(node.first) + shift)
            }
            nodes.append(node)
        }
    }

    /// Whether the string at `index` has the same bytes as the string at `other`.
    func stringsEqual(_ index: Int, _ other: Int) -> Bool {
        let a = nodes[index]
        let b = nodes[other]
        guard a.second == b.second else { return false }
        return text.withUnsafeBufferPointer { buffer in
            memcmp(buffer.baseAddress! + Int(a.first), buffer.baseAddress! + Int(b.first), Int(a.second)) == 0
        }
    }

    func string(_ index: Int) -> String {
        let node = nodes[index]
        return String(decoding: text[Int(node.first)..<Int(node.first) + Int(node.second)], as: UTF8.self)
    }

    func kind(_ index: Int) -> ValueTree.Kind { nodes[index].kind }

    /// Whether the mapping opened at `object` already has a key equal to the string at `key` (the
    /// last node). Linear over the mapping's keys: manifests' mappings have few keys; `seen` takes over
    /// past 16 so that a hostile mapping of 100,000 keys is not quadratic.
    mutating func isDuplicateKey(_ key: Int, inObjectAt object: Int, pairs: Int, seen: inout Set<String>?) -> Bool {
        if pairs < 16 {
            var cursor = object + 1
            while cursor < key {
                if stringsEqual(cursor, key) { return true }
                cursor = endOf(cursor + 1)
            }
            return false
        }
        if seen == nil {
            var all: Set<String> = []
            var cursor = object + 1
            while cursor < key {
                all.insert(string(cursor))
                cursor = endOf(cursor + 1)
            }
            seen = all
        }
        return !seen!.insert(string(key)).inserted
    }

    /// The end of a node during building (containers already closed).
    private func endOf(_ index: Int) -> Int {
        let node = nodes[index]
        return node.kind == .array || node.kind == .object ? Int(node.first) : index + 1
    }

    func build() -> ValueTree { ValueTree(nodes: nodes, text: text) }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
