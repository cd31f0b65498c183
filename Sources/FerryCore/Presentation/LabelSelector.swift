import Foundation

/// A label selector as `kubectl get -l` takes it: comma-separated requirements `key=value`,
/// `key==value`, `key!=value`, `key` (present) and `!key` (absent). (Set forms `in (...)` are not read.)
public struct LabelSelector: Sendable, Hashable {
    enum Requirement: Sendable, Hashable {
        case equals(String, String)
        case notEquals(String, String)
        case exists(String)
        case absent(String)
    }

    /// A selector Ferry cannot read.
    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public var text: String
        public var description: String { "unable to parse requirement: \"\(text)\" (use key=value, key!=value, key or !key)" }
    }

    let requirements: [Requirement]

    public init(_ text: String) throws(ParseError) {
        var requirements: [Requirement] = []
        for part in text.split(separator: ",") {
            let item = part.trimmingCharacters(in: .whitespaces)
            if let range = item.range(of: "!=") {
                requirements.append(.notEquals(String(item[..<range.lowerBound]), String(item[range.upperBound...])))
            } else if let range = item.range(of: "==") ?? item.range(of: "=") {
                requirements.append(.equals(String(item[..<range.lowerBound]), String(item[range.upperBound...])))
            } else if item.hasPrefix("!") {
                requirements.append(.absent(String(item.dropFirst())))
            } else {
                requirements.append(.exists(item))
            }
            switch requirements.last! {
            case .equals(let key, _), .notEquals(let key, _), .exists(let key), .absent(let key):
                if key.isEmpty || key.contains(" ") || key.contains("(") { throw ParseError(text: item) }
            }
        }
        self.requirements = requirements
    }

    public func matches(_ labels: [String: String]) -> Bool {
        requirements.allSatisfy { requirement in
            switch requirement {
            case .equals(let key, let value): labels[key] == value
            case .notEquals(let key, let value): labels[key] != value
            case .exists(let key): labels[key] != nil
            case .absent(let key): labels[key] == nil
            }
        }
    }
}
