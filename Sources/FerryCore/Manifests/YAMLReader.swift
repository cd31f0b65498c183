internal import CYaml

/// Reads a YAML stream into one `ValueTree` per document, as Kubernetes' own YAML reader
/// (sigs.k8s.io/yaml) turns YAML into JSON, so YAML and JSON manifests share one decoding path.
///
/// Built on libyaml's event parser (the C library inside Yams) rather than on Yams' `Node`s: composing
/// `Node`s costs a class per event, a tag object per node and a second walk to convert them, and took
/// 4.2 s for 10,000 Services + 10,000 EndpointSlices (19 MB); events straight into the tree take a
/// fraction of that (the README's table has the figures).
///
/// Scalars are typed by the YAML 1.2 core schema without regular expressions: quoted scalars are
/// strings; plain `true`/`false` are booleans, `null`/`~`/empty are null, decimal integers and floats
/// are numbers; everything else is a string. Mapping keys are always strings.
///
/// Aliases are expanded, as Kubernetes expands them, under go-yaml's bound on "excessive aliasing": a
/// document whose aliases expand to far more nodes than it has (the "billion laughs") is refused once
/// the expansion passes the allowed share, before it is made, so neither time nor memory runs away.
enum YAMLReader {
    /// A document that could not be turned into a tree; the stream goes on with the next document.
    struct DocumentError: Error {
        var description: String
    }

    /// A syntax error: the stream cannot be read past it.
    struct SyntaxError: Error {
        var description: String
        /// The input is not UTF-8 text (libyaml's reader refused a byte sequence).
        var isEncoding: Bool
    }

    /// Calls `body` with each document's tree (or the error that document has), in order, and throws
    /// the syntax error that ends the stream early, if any. Empty documents are skipped but counted.
    static func read(
        _ bytes: UnsafeRawBufferPointer, body: (_ document: Int, _ tree: Result<ValueTree, DocumentError>) -> Void
    ) throws(SyntaxError) {
        _ = nestingLimitSet
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { throw SyntaxError(description: "out of memory", isEncoding: false) }
        defer { yaml_parser_delete(&parser) }
        yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
        yaml_parser_set_input_string(&parser, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        var completed = 0
        var event = yaml_event_t()
        func next() throws(SyntaxError) -> yaml_event_type_t {
            yaml_event_delete(&event)
            guard yaml_parser_parse(&parser, &event) == 1 else { throw syntaxError(parser) }
            return event.type
        }
        defer { yaml_event_delete(&event) }
        while true {
            switch try next() {
            case YAML_STREAM_END_EVENT:
                return
            case YAML_DOCUMENT_START_EVENT:
                var document = DocumentBuilder(expectedBytes: 0)
                var failure: DocumentError?
                while try next() != YAML_DOCUMENT_END_EVENT {
                    guard failure == nil else { continue }
                    do throws(DocumentError) {
                        try document.take(&event)
                    } catch {
                        failure = error
                    }
                }
                completed += 1
                if let failure {
                    body(completed, .failure(failure))
                } else if document.builder.count > 0, document.builder.kind(0) != .null {
                    body(completed, .success(document.builder.build()))
                }
            default:
                continue
            }
        }
    }

    /// libyaml's own bound on nesting (a process-wide setting, 1,000 by default; its scanner meets a
    /// deep flow collection before any event reaches the builder), set to the same depth as JSON's.
    private static let nestingLimitSet: Void = { yaml_set_max_nest_level(Int32(JSONParser.maximumDepth)) }()

    private static func syntaxError(_ parser: yaml_parser_t) -> SyntaxError {
        var problem = parser.problem.map { String(cString: $0) } ?? "unknown error"
        if problem.hasPrefix("Maximum nesting level reached") {
            return SyntaxError(
                description:
                    "line \(parser.problem_mark.line + 1), column \(parser.problem_mark.column + 1): nested too deeply (more than \(JSONParser.maximumDepth) levels)",
                isEncoding: false)
        }
        problem = problem.isEmpty ? "unknown error" : problem
        if parser.error == YAML_READER_ERROR {
            let encoding = problem.contains("UTF-8") || problem.contains("Unicode")
            return SyntaxError(description: "\(problem) at byte \(parser.problem_offset)", isEncoding: encoding)
        }
        let context = parser.context.map { String(cString: $0) + " " } ?? ""
        return SyntaxError(
            description: "line \(parser.problem_mark.line + 1), column \(parser.problem_mark.column + 1): \(context)\(problem)",
            isEncoding: false)
    }

    /// go-yaml's "excessive aliasing" bound (yaml.v3 decode.go, used by sigs.k8s.io/yaml): nodes made by
    /// aliases may be up to 99% of a document's nodes up to 400,000 nodes, falling to 10% at 4,000,000.
    static func allowedAliasShare(nodes: Int) -> Double {
        if nodes <= 400_000 { return 0.99 }
        if nodes >= 4_000_000 { return 0.10 }
        return 0.99 - 0.89 * Double(nodes - 400_000) / 3_600_000
    }

    /// Turns one document's events into a tree.
    struct DocumentBuilder {
        struct Frame {
            var index: Int
            var isMapping: Bool
            /// Children so far (keys and values for a mapping).
            var count = 0
            var anchor: String?
            var seenKeys: Set<String>?
        }

        var builder: ValueTreeBuilder
        private var frames: [Frame] = []
        /// Anchored nodes of this document (anchors do not cross documents), as node ranges.
        private var anchors: [String: Range<Int>] = [:]
        private var aliasNodes = 0

        init(expectedBytes: Int) {
            builder = ValueTreeBuilder(expectedBytes: expectedBytes)
        }

        private var atKey: Bool {
            guard let top = frames.last else { return false }
            return top.isMapping && top.count % 2 == 0
        }

        private func failure(_ event: yaml_event_t, _ problem: String) -> DocumentError {
            DocumentError(description: "line \(event.start_mark.line + 1): \(problem)")
        }

        mutating func take(_ event: inout yaml_event_t) throws(DocumentError) {
            switch event.type {
            case YAML_SCALAR_EVENT:
                let scalar = event.data.scalar
                let bytes = UnsafeRawBufferPointer(start: scalar.value, count: scalar.length)
                let index = builder.count
                if atKey {
                    builder.appendString(bytes)
                    try checkKey(index, event)
                } else if scalar.style == YAML_PLAIN_SCALAR_STYLE || scalar.style == YAML_ANY_SCALAR_STYLE {
                    appendPlain(bytes)
                } else {
                    builder.appendString(bytes)
                }
                register(anchor: scalar.anchor, index..<index + 1)
                childDone()
            case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                if atKey { throw failure(event, "mapping keys must be plain strings") }
                guard frames.count < JSONParser.maximumDepth else {
                    throw failure(event, "nested too deeply (more than \(JSONParser.maximumDepth) levels)")
                }
                let isMapping = event.type == YAML_MAPPING_START_EVENT
                let anchor = isMapping ? event.data.mapping_start.anchor : event.data.sequence_start.anchor
                let index = builder.open(isMapping ? .object : .array)
                frames.append(Frame(index: index, isMapping: isMapping, anchor: anchor.map { String(cString: $0) }))
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                let frame = frames.removeLast()
                builder.close(frame.index, count: frame.isMapping ? frame.count / 2 : frame.count)
                if let anchor = frame.anchor { anchors[anchor] = frame.index..<builder.count }
                childDone()
            case YAML_ALIAS_EVENT:
                let name = String(cString: event.data.alias.anchor)
                guard let range = anchors[name] else { throw failure(event, "found undefined alias *\(name)") }
                let written = builder.count - aliasNodes
                let total = builder.count + range.count
                if aliasNodes + range.count > 100, total > 1000,
                    Double(aliasNodes + range.count) / Double(total) > YAMLReader.allowedAliasShare(nodes: total)
                {
                    throw failure(
                        event,
                        "excessive aliasing: aliases expand to more than \(aliasNodes + range.count) nodes from \(written) written "
                            + "(refused, as Kubernetes refuses such documents)")
                }
                let index = builder.count
                if atKey {
                    guard range.count == 1, builder.kind(range.lowerBound) == .string else {
                        throw failure(event, "mapping keys must be plain strings")
                    }
                }
                builder.appendCopy(of: range)
                aliasNodes += range.count
                if atKey { try checkKey(index, event) }
                childDone()
            default:
                break
            }
        }

        private mutating func checkKey(_ index: Int, _ event: yaml_event_t) throws(DocumentError) {
            let top = frames.count - 1
            if builder.isDuplicateKey(index, inObjectAt: frames[top].index, pairs: frames[top].count / 2, seen: &frames[top].seenKeys) {
                throw failure(event, "duplicate key \"\(builder.string(index))\"")
            }
        }

        private mutating func childDone() {
            if !frames.isEmpty { frames[frames.count - 1].count += 1 }
        }

        private mutating func register(anchor: UnsafeMutablePointer<UInt8>?, _ range: Range<Int>) {
            if let anchor { anchors[String(cString: anchor)] = range }
        }

        /// A plain scalar, typed by the core schema.
        private mutating func appendPlain(_ bytes: UnsafeRawBufferPointer) {
            switch bytes.count {
            case 0:
                return builder.appendNull()
            case 1 where bytes[0] == UInt8(ascii: "~"):
                return builder.appendNull()
            case 4, 5:
                if let flag = YAMLReader.literal(bytes) { return flag ? builder.append(true) : builder.append(false) }
                if YAMLReader.isNull(bytes) { return builder.appendNull() }
            default:
                break
            }
            guard YAMLReader.isJSONNumber(bytes) else { return builder.appendString(bytes) }
            let text = String(decoding: bytes, as: UTF8.self)
            if let number = Int(text) { return builder.append(number) }
            if let number = Double(text) { return builder.append(number) }
            builder.appendString(bytes)
        }
    }

    /// `true`/`True`/`TRUE` and `false`/`False`/`FALSE`.
    static func literal(_ bytes: UnsafeRawBufferPointer) -> Bool? {
        let text = String(decoding: bytes, as: UTF8.self)
        switch text {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default: return nil
        }
    }

    static func isNull(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let text = String(decoding: bytes, as: UTF8.self)
        return text == "null" || text == "Null" || text == "NULL"
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`: numbers JSON accepts as written.
    /// Other YAML numerals (`+1`, `0o17`, `.5`) stay strings, as Kubernetes would reject them anyway.
    static func isJSONNumber(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }
        func isDigit(_ byte: UInt8?) -> Bool { byte.map { $0 >= 48 && $0 <= 57 } ?? false }
        if peek() == UInt8(ascii: "-") { index += 1 }
        guard isDigit(peek()) else { return false }
        if peek() == UInt8(ascii: "0") {
            index += 1
        } else {
            while isDigit(peek()) { index += 1 }
        }
        if peek() == UInt8(ascii: ".") {
            index += 1
            guard isDigit(peek()) else { return false }
            while isDigit(peek()) { index += 1 }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            index += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { index += 1 }
            guard isDigit(peek()) else { return false }
            while isDigit(peek()) { index += 1 }
        }
        return index == bytes.count
    }
}
