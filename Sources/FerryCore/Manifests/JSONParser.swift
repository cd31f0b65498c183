/// A JSON syntax error with where it is.
public struct JSONSyntaxError: Error, Sendable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public var problem: String
    public var description: String { "line \(line), column \(column): \(problem)" }
}

/// A strict RFC 8259 parser over UTF-8 bytes. One document, optionally surrounded by white space.
///
/// It builds a `ValueTree` straight from the bytes: strings without escapes are one copy of their
/// bytes, numbers are read without making a String, objects check their keys for duplicates.
public struct JSONParser {
    private let bytes: UnsafeRawBufferPointer
    private var index = 0
    private var depth = 0
    private var builder: ValueTreeBuilder
    /// Deeper documents are refused, as Kubernetes' own JSON decoder refuses them (10,000 there; 512
    /// is far beyond any manifest and keeps the recursion shallow).
    public static let maximumDepth = 512

    /// Parses `bytes` into a `JSONValue` tree.
    public static func parse(_ bytes: [UInt8]) throws(JSONSyntaxError) -> JSONValue {
        let tree = bytes.withUnsafeBytes { buffer in Result { () throws(JSONSyntaxError) in try parseTree(buffer) } }
        switch tree {
        case .success(let tree): return tree.value(at: tree.root)
        case .failure(let error): throw error
        }
    }

    /// Parses `bytes` into a flat `ValueTree`.
    public static func parseTree(_ bytes: UnsafeRawBufferPointer) throws(JSONSyntaxError) -> ValueTree {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        try parser.parseValue()
        parser.skipWhitespace()
        if parser.index < bytes.count { throw parser.error("unexpected text after the end of the document") }
        return parser.builder.build()
    }

    private init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
        self.builder = ValueTreeBuilder(expectedBytes: bytes.count)
    }

    private func error(_ problem: String) -> JSONSyntaxError {
        var line = 1
        var lineStart = 0
        for position in 0..<min(index, bytes.count) where bytes[position] == 0x0a {
            line += 1
            lineStart = position + 1
        }
        return JSONSyntaxError(line: line, column: index - lineStart + 1, problem: problem)
    }

    @inline(__always)
    private mutating func skipWhitespace() {
        while index < bytes.count {
            let byte = bytes[index]
            guard byte == 0x20 || byte == 0x0a || byte == 0x0d || byte == 0x09 else { return }
            index += 1
        }
    }

    private mutating func parseValue() throws(JSONSyntaxError) {
        guard index < bytes.count else { throw error("unexpected end of input") }
        switch bytes[index] {
        case UInt8(ascii: "{"): try parseObject()
        case UInt8(ascii: "["): try parseArray()
        case UInt8(ascii: "\""): try parseString()
        case UInt8(ascii: "t"): try expectLiteral("true"); builder.append(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); builder.append(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); builder.appendNull()
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try parseNumber()
        default: throw error("unexpected character '\(Character(Unicode.Scalar(bytes[index])))'")
        }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(JSONSyntaxError) {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw error("unexpected end of input") }
        guard memcmp(bytes.baseAddress! + index, literal.utf8Start, count) == 0 else { throw error("invalid literal") }
        index += count
    }

    private mutating func enter() throws(JSONSyntaxError) {
        depth += 1
        if depth > JSONParser.maximumDepth { throw error("nested too deeply") }
    }

    private mutating func parseObject() throws(JSONSyntaxError) {
        try enter()
        defer { depth -= 1 }
        index += 1
        let object = builder.open(.object)
        var pairs = 0
        var seen: Set<String>?
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            builder.close(object, count: 0)
            return
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a quoted key") }
            try parseString()
            let key = builder.count - 1
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':' after a key") }
            index += 1
            skipWhitespace()
            try parseValue()
            if builder.isDuplicateKey(key, inObjectAt: object, pairs: pairs, seen: &seen) {
                throw error("duplicate key \"\(builder.string(key))\"")
            }
            pairs += 1
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input in an object") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            guard bytes[index] == UInt8(ascii: "}") else { throw error("expected ',' or '}'") }
            index += 1
            builder.close(object, count: pairs)
            return
        }
    }

    private mutating func parseArray() throws(JSONSyntaxError) {
        try enter()
        defer { depth -= 1 }
        index += 1
        let array = builder.open(.array)
        var elements = 0
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            builder.close(array, count: 0)
            return
        }
        while true {
            skipWhitespace()
            try parseValue()
            elements += 1
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input in a list") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            guard bytes[index] == UInt8(ascii: "]") else { throw error("expected ',' or ']'") }
            index += 1
            builder.close(array, count: elements)
            return
        }
    }

    private mutating func parseString() throws(JSONSyntaxError) {
        index += 1
        let start = index
        // Fast path: no escapes, one copy of the bytes.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                builder.appendString(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
                index += 1
                return
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error("control character in a string") }
            index += 1
        }
        let offset = builder.textCount
        builder.appendText(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                builder.appendString(startingAt: offset)
                return
            case UInt8(ascii: "\\"):
                index += 1
                guard index < bytes.count else { throw error("unterminated escape") }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): builder.appendText(0x22)
                case UInt8(ascii: "\\"): builder.appendText(0x5c)
                case UInt8(ascii: "/"): builder.appendText(0x2f)
                case UInt8(ascii: "b"): builder.appendText(0x08)
                case UInt8(ascii: "f"): builder.appendText(0x0c)
                case UInt8(ascii: "n"): builder.appendText(0x0a)
                case UInt8(ascii: "r"): builder.appendText(0x0d)
                case UInt8(ascii: "t"): builder.appendText(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try parseHex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                            throw error("unpaired surrogate in \\u escape")
                        }
                        index += 2
                        let low = try parseHex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw error("invalid surrogate pair") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let unicode = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
                    for unit in UTF8.encode(unicode)! { builder.appendText(unit) }
                default:
                    throw error("invalid escape '\\\(Character(Unicode.Scalar(escape)))'")
                }
            default:
                if byte < 0x20 { throw error("control character in a string") }
                builder.appendText(byte)
                index += 1
            }
        }
        throw error("unterminated string")
    }

    private mutating func parseHex4() throws(JSONSyntaxError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("short \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - 48)
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - 87)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - 55)
            default: throw error("invalid hex digit in \\u escape")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }

    private mutating func parseNumber() throws(JSONSyntaxError) {
        let start = index
        var isInteger = true
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, isDigit(bytes[index]) else { throw error("invalid number") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else {
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("invalid number") }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("invalid number") }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        let digits = UnsafeRawBufferPointer(rebasing: bytes[start..<index])
        // Integers of up to 18 digits are summed in place; longer ones (and floats) go through the
        // standard library's parsers, which need a String.
        if isInteger, digits.count <= 18 {
            var value = 0
            var negative = false
            for byte in digits {
                if byte == UInt8(ascii: "-") { negative = true } else { value = value &* 10 &+ Int(byte &- 48) }
            }
            builder.append(negative ? -value : value)
            return
        }
        let text = String(decoding: digits, as: UTF8.self)
        if isInteger, let value = Int(text) {
            builder.append(value)
            return
        }
        guard let value = Double(text) else { throw error("invalid number") }
        builder.append(value)
    }

    @inline(__always)
    private func isDigit(_ byte: UInt8) -> Bool { byte >= 48 && byte <= 57 }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
