import Foundation
import Yams

/// The text formats manifests come in.
public enum ManifestFormat: String, Sendable, Hashable {
    case yaml
    case json

    /// The format a file name implies (`.yaml`, `.yml`, `.json`); `nil` for other files.
    public init?(path: String) {
        let lowered = path.lowercased()
        if lowered.hasSuffix(".yaml") || lowered.hasSuffix(".yml") {
            self = .yaml
        } else if lowered.hasSuffix(".json") {
            self = .json
        } else {
            return nil
        }
    }
}

/// An object exactly as it was written, for `-o json|yaml` and for tests.
public enum WireObject: Sendable, Hashable {
    case service(APIService)
    case endpointSlice(APIEndpointSlice)
    case endpoints(APIEndpoints)
    case pod(APIPod)
    case node(APINode)
}

/// One object read from a manifest: validated, as written, and where it was written.
public struct ManifestObject: Sendable, Hashable {
    public var object: KubeObject
    public var wire: WireObject
    public var location: ManifestLocation

    public init(object: KubeObject, wire: WireObject, location: ManifestLocation) {
        self.object = object
        self.wire = wire
        self.location = location
    }
}

/// What reading one file produced: the usable objects, the errors, and what was skipped on purpose.
public struct ManifestReadResult: Sendable {
    public var objects: [ManifestObject] = []
    public var errors: [ManifestError] = []
    /// Objects of kinds a proxy does not need (Deployments, ConfigMaps…), as `Kind name (location)`.
    public var skipped: [String] = []

    public init() {}
}

/// Reads Kubernetes manifests: YAML streams of several documents, JSON, `kind: List` and typed lists
/// such as `ServiceList` (whose items carry no `kind`), and `kubectl get -o yaml|json` output.
/// Every object is validated; each bad one becomes a `ManifestError` naming its location, object and field.
public enum ManifestReader {
    /// Reads a whole file or stream. Never throws: problems come back as `errors`.
    public static func read(_ data: Data, format: ManifestFormat, source: String) -> ManifestReadResult {
        var result = ManifestReadResult()
        switch format {
        case .json:
            readJSON(data, source: source, into: &result)
        case .yaml:
            guard let text = String(data: data, encoding: .utf8) else {
                result.errors.append(ManifestError(location: ManifestLocation(source: source), message: "is not UTF-8 text"))
                return result
            }
            readYAML(text, source: source, into: &result)
        }
        rejectDuplicates(in: &result)
        return result
    }

    /// Reads a file from disk, choosing the format from its extension (YAML when unknown).
    public static func read(fileAt path: String) -> ManifestReadResult {
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            return read(data, format: ManifestFormat(path: path) ?? .yaml, source: path)
        } catch {
            var result = ManifestReadResult()
            result.errors.append(ManifestError(location: nil, object: nil, field: nil, message: "\(path): cannot be read: \(describeIOError(error))"))
            return result
        }
    }

    private static func readJSON(_ data: Data, source: String, into result: inout ManifestReadResult) {
        let trimmed = data.drop { $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }
        if trimmed.isEmpty { return }
        do {
            let envelope = try JSONDecoder().decode(DocumentEnvelope.self, from: data)
            collect(envelope, document: 1, source: source, into: &result)
        } catch let error as DecodingError {
            let (field, message) = error.fieldAndMessage
            result.errors.append(ManifestError(location: ManifestLocation(source: source), field: field, message: message))
        } catch {
            result.errors.append(ManifestError(location: ManifestLocation(source: source), message: "\(error)"))
        }
    }

    private static func readYAML(_ text: String, source: String, into result: inout ManifestReadResult) {
        let decoder = YAMLDecoder()
        var document = 0
        do {
            for node in try Yams.compose_all(yaml: text) {
                document += 1
                if case .scalar(let scalar) = node, scalar.string.isEmpty || scalar.string == "null" || scalar.string == "~" { continue }
                do {
                    let envelope = try decoder.decode(DocumentEnvelope.self, from: node)
                    collect(envelope, document: document, source: source, into: &result)
                } catch let error as DecodingError {
                    let (field, message) = error.fieldAndMessage
                    result.errors.append(
                        ManifestError(location: ManifestLocation(source: source, document: document), field: field, message: message))
                }
            }
        } catch {
            result.errors.append(
                ManifestError(location: ManifestLocation(source: source, document: document + 1), message: "is not valid YAML: \(describeYAMLError(error))"))
        }
    }

    private static func collect(_ envelope: DocumentEnvelope, document: Int, source: String, into result: inout ManifestReadResult) {
        for (index, outcome) in envelope.items.enumerated() {
            let location = ManifestLocation(source: source, document: document, item: envelope.isList ? index : nil)
            switch outcome {
            case .object(let wire, let header):
                do {
                    let object = try ManifestValidator.validate(wire)
                    result.objects.append(ManifestObject(object: object, wire: wire, location: location))
                } catch {
                    result.errors.append(ManifestError(location: location, object: header.displayName, field: error.field, message: error.message))
                }
            case .skipped(let header):
                result.skipped.append("\(header.displayName) (\(location))")
            case .failed(let header, let field, let message):
                result.errors.append(ManifestError(location: location, object: header.displayName, field: field, message: message))
            }
        }
    }

    /// The same object twice in one file is ambiguous: keep the first, report the second.
    private static func rejectDuplicates(in result: inout ManifestReadResult) {
        var seen: [ObjectKey: ManifestLocation] = [:]
        var unique: [ManifestObject] = []
        unique.reserveCapacity(result.objects.count)
        for entry in result.objects {
            let key = entry.object.key
            if let first = seen[key] {
                result.errors.append(
                    ManifestError(location: entry.location, object: key.description, field: "metadata.name",
                                  message: "duplicate object: already defined at \(first)"))
            } else {
                seen[key] = entry.location
                unique.append(entry)
            }
        }
        result.objects = unique
    }

    private static func describeYAMLError(_ error: Error) -> String {
        guard let yamlError = error as? YamlError else { return "\(error)" }
        switch yamlError {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let prefix = context.map { "\($0.text) " } ?? ""
            return "line \(mark.line), column \(mark.column): \(prefix)\(problem)"
        default:
            return "\(yamlError)"
        }
    }

    private static func describeIOError(_ error: Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        return nsError.localizedDescription
    }
}

/// `kind`, `apiVersion` and name of an object, read leniently so errors can name it.
struct ObjectHeader: Sendable {
    var kind: String?
    var apiVersion: String?
    var name: String?
    var namespace: String?

    var displayName: String {
        let kindText = kind ?? "object"
        guard let name, !name.isEmpty else { return kindText }
        let namespaced = kind != "Node"
        return namespaced ? "\(kindText) \(namespace?.isEmpty == false ? namespace! : "default")/\(name)" : "\(kindText) \(name)"
    }
}

/// One YAML document or JSON value: a single object or a list of them.
private struct DocumentEnvelope: Decodable {
    enum Outcome {
        case object(WireObject, ObjectHeader)
        case skipped(ObjectHeader)
        case failed(ObjectHeader, field: String, message: String)
    }

    var items: [Outcome] = []
    var isList = false

    private enum Keys: String, CodingKey { case kind, apiVersion, items, metadata }
    private enum MetaKeys: String, CodingKey { case name, namespace }

    init(from decoder: Decoder) throws {
        let header = DocumentEnvelope.header(of: decoder, impliedKind: nil)
        if let kind = header.kind, kind.hasSuffix("List") {
            isList = true
            let itemKind = kind == "List" ? nil : String(kind.dropLast(4))
            let container = try decoder.container(keyedBy: Keys.self)
            guard container.contains(.items) else { return }
            var list = try container.nestedUnkeyedContainer(forKey: .items)
            while !list.isAtEnd {
                let itemDecoder = try list.superDecoder()
                items.append(DocumentEnvelope.decodeObject(from: itemDecoder, impliedKind: itemKind))
            }
        } else {
            items.append(DocumentEnvelope.decodeObject(from: decoder, impliedKind: nil))
        }
    }

    private static func header(of decoder: Decoder, impliedKind: String?) -> ObjectHeader {
        guard let container = try? decoder.container(keyedBy: Keys.self) else { return ObjectHeader(kind: impliedKind) }
        let meta = try? container.nestedContainer(keyedBy: MetaKeys.self, forKey: .metadata)
        return ObjectHeader(
            kind: (try? container.decodeIfPresent(String.self, forKey: .kind)) ?? impliedKind,
            apiVersion: try? container.decodeIfPresent(String.self, forKey: .apiVersion),
            name: (try? meta?.decodeIfPresent(String.self, forKey: .name)) ?? nil,
            namespace: (try? meta?.decodeIfPresent(String.self, forKey: .namespace)) ?? nil)
    }

    private static let supportedVersions: [String: Set<String>] = [
        "Service": ["v1"], "Endpoints": ["v1"], "Pod": ["v1"], "Node": ["v1"], "EndpointSlice": ["discovery.k8s.io/v1"],
    ]

    private static func decodeObject(from decoder: Decoder, impliedKind: String?) -> Outcome {
        let header = header(of: decoder, impliedKind: impliedKind)
        guard let kind = header.kind, !kind.isEmpty else {
            if (try? decoder.container(keyedBy: Keys.self)) == nil {
                return .failed(header, field: "", message: "is not an object (a mapping with kind, apiVersion and metadata)")
            }
            return .failed(header, field: "kind", message: "is required")
        }
        guard let versions = supportedVersions[kind] else { return .skipped(header) }
        if let apiVersion = header.apiVersion, !versions.contains(apiVersion) {
            return .failed(header, field: "apiVersion",
                           message: "\(apiVersion) is not supported for \(kind); use \(versions.sorted().joined(separator: " or "))")
        }
        do {
            switch kind {
            case "Service": return .object(.service(try APIService(from: decoder)), header)
            case "EndpointSlice": return .object(.endpointSlice(try APIEndpointSlice(from: decoder)), header)
            case "Endpoints": return .object(.endpoints(try APIEndpoints(from: decoder)), header)
            case "Pod": return .object(.pod(try APIPod(from: decoder)), header)
            default: return .object(.node(try APINode(from: decoder)), header)
            }
        } catch let error as DecodingError {
            let (field, message) = error.fieldAndMessage
            let base = decoder.codingPath.count
            return .failed(header, field: relativeField(field, droppingPrefixOf: base, decoder: decoder), message: message)
        } catch {
            return .failed(header, field: "", message: "\(error)")
        }
    }

    /// Errors inside a list item carry the path from the document root (`items[3].spec…`);
    /// the location already names the item, so the field is given relative to the object.
    private static func relativeField(_ field: String, droppingPrefixOf depth: Int, decoder: Decoder) -> String {
        guard depth > 0 else { return field }
        let prefix = fieldPath(decoder.codingPath)
        guard field.hasPrefix(prefix) else { return field }
        var rest = field.dropFirst(prefix.count)
        if rest.hasPrefix(".") { rest = rest.dropFirst() }
        return String(rest)
    }
}
