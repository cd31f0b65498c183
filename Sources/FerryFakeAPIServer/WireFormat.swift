import Foundation

/// The texts kube-apiserver writes besides objects: Status bodies, continue tokens, and the parts of a URI.
enum WireFormat {
    /// `text` as a JSON string literal, quotes included. (FerryCore has the same function: the fake API
    /// server shares no code with the client it tests, so that one bug cannot hide on both sides.)
    static func jsonString(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case let control where control.value < 0x20:
                result +=
                    "\\u" + String(repeating: "0", count: 4 - String(control.value, radix: 16).count)
                    + String(control.value, radix: 16)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    /// The reason and message kube-apiserver gives with an HTTP status code.
    static func reasonAndMessage(forCode code: Int) -> (reason: String, message: String) {
        switch code {
        case 400: ("BadRequest", "bad request")
        case 401: ("Unauthorized", "Unauthorized")
        case 403: ("Forbidden", "forbidden")
        case 404: ("NotFound", "the server could not find the requested resource")
        case 405: ("MethodNotAllowed", "the server does not allow this method on the requested resource")
        case 409: ("Conflict", "conflict")
        case 410: ("Expired", "gone")
        case 429: ("TooManyRequests", "Too many requests")
        case 500: ("InternalError", "internal error")
        case 503: ("ServiceUnavailable", "service unavailable")
        case 504: ("Timeout", "timeout")
        default: ("", "error")
        }
    }

    /// A `Status` object with status `Failure`, as written in error responses and ERROR watch events.
    static func status(code: Int, reason: String? = nil, message: String? = nil, retryAfterSeconds: Int? = nil)
        -> String
    {
        let defaults = reasonAndMessage(forCode: code)
        let reason = reason ?? defaults.reason
        var text = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":"
        text += jsonString(message ?? defaults.message)
        if !reason.isEmpty { text += ",\"reason\":" + jsonString(reason) }
        if let retryAfterSeconds { text += ",\"details\":{\"retryAfterSeconds\":\(retryAfterSeconds)}" }
        return text + ",\"code\":\(code)}"
    }

    /// The message of a watch or list whose resource version is gone.
    static func tooOldMessage(requested: Int, oldest: Int) -> String {
        "too old resource version: \(requested) (\(oldest))"
    }

    /// The message of HTTP 410 for an expired continue token (kube-apiserver's words).
    static let expiredContinueMessage =
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."

    /// Splits a request URI into its path and its decoded query parameters (the last of a repeated name wins).
    static func splitURI(_ uri: String) -> (path: String, query: [String: String]) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri, [:]) }
        var query: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            query[percentDecoded(parts[0])] = parts.count > 1 ? percentDecoded(parts[1]) : ""
        }
        return (String(uri[..<mark]), query)
    }

    /// Decodes `%XX` escapes and `+` (a space, as Go's query parser reads it).
    static func percentDecoded(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), iterator.count >= 2,
                let value = UInt8(String(decoding: iterator.prefix(2), as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Where a paginated list goes on: kube-apiserver's continue token (base64url of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<next key>"}`), plus the compaction generation it was issued in.
struct ContinueToken: Sendable, Equatable {
    /// The resource version of the list's snapshot.
    var resourceVersion: Int
    /// The key to go on from (inclusive): the last returned key followed by a NUL.
    var start: String
    /// How many compactions had happened when the token was issued.
    var generation: Int

    /// The token as sent in `metadata.continue`.
    var encoded: String {
        let json =
            "{\"v\":\"meta.k8s.io/v1\",\"rv\":\(resourceVersion),\"start\":\(WireFormat.jsonString(start)),\"g\":\(generation)}"
        return Data(json.utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// A token made by this server; `init(encoded:)` returns nil for anything else.
    init(resourceVersion: Int, start: String, generation: Int) {
        self.resourceVersion = resourceVersion
        self.start = start
        self.generation = generation
    }

    /// Decodes a token from a request's `continue` parameter.
    init?(encoded: String) {
        var base64 = encoded.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            object["v"] as? String == "meta.k8s.io/v1",
            let resourceVersion = (object["rv"] as? NSNumber)?.intValue,
            let start = object["start"] as? String,
            let generation = (object["g"] as? NSNumber)?.intValue
        else { return nil }
        self.init(resourceVersion: resourceVersion, start: start, generation: generation)
    }
}
