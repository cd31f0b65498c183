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
            result.errors.append(
                ManifestError(location: nil, object: nil, field: nil, message: "\(path): cannot be read: \(describeIOError(error))"))
            return result
        }
    }

    private static func readJSON(_ data: Data, source: String, into result: inout ManifestReadResult) {
        let bytes = [UInt8](data)
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }) { return }
        do {
            let value = try JSONParser.parse(bytes)
            collect(value, document: 1, source: source, into: &result)
        } catch {
            result.errors.append(ManifestError(location: ManifestLocation(source: source), message: "is not valid JSON: \(error)"))
        }
    }

    private static func readYAML(_ text: String, source: String, into result: inout ManifestReadResult) {
        var document = 0
        do {
            // The basic resolver tags nothing: typing is YAMLToJSON's, without a regex per scalar.
            let parser = try Parser(yaml: text, resolver: .basic)
            while let node = try parser.nextRoot() {
                document += 1
                do {
                    let value = try YAMLToJSON.convert(node)
                    if case .null = value { continue }
                    collect(value, document: document, source: source, into: &result)
                } catch {
                    result.errors.append(ManifestError(location: ManifestLocation(source: source, document: document), message: "\(error)"))
                }
            }
        } catch {
            result.errors.append(
                ManifestError(
                    location: ManifestLocation(source: source, document: document + 1),
                    message: "is not valid YAML: \(describeYAMLError(error))"))
        }
    }

    /// Reads one document: an object, or a list (`kind: List` or a typed list such as `ServiceList`,
    /// whose items may omit their kind).
    private static func collect(_ value: JSONValue, document: Int, source: String, into result: inout ManifestReadResult) {
        let location = ManifestLocation(source: source, document: document)
        guard case .object = value else {
            result.errors.append(
                ManifestError(
                    location: location,
                    message: "is not an object: expected a mapping with kind, apiVersion and metadata, found \(value.typeDescription)"))
            return
        }
        guard case .string(let kind)? = value["kind"], kind.hasSuffix("List") else {
            collectObject(value, impliedKind: nil, location: location, into: &result)
            return
        }
        let itemKind = kind == "List" ? nil : String(kind.dropLast(4))
        switch value["items"] {
        case nil, .null?:
            return
        case .array(let items)?:
            for (index, item) in items.enumerated() {
                collectObject(
                    item, impliedKind: itemKind, location: ManifestLocation(source: source, document: document, item: index), into: &result)
            }
        case let other?:
            result.errors.append(
                ManifestError(
                    location: location, object: kind, field: "items",
                    message: "has the wrong type: expected a list, found \(other.typeDescription)"))
        }
    }

    private static let supportedVersions: [String: Set<String>] = [
        "Service": ["v1"], "Endpoints": ["v1"], "Pod": ["v1"], "Node": ["v1"], "EndpointSlice": ["discovery.k8s.io/v1"],
    ]

    private static func collectObject(
        _ value: JSONValue, impliedKind: String?, location: ManifestLocation, into result: inout ManifestReadResult
    ) {
        let header = ObjectHeader(value, impliedKind: impliedKind)
        func fail(_ field: String, _ message: String) {
            result.errors.append(ManifestError(location: location, object: header.displayName, field: field, message: message))
        }
        guard case .object = value else {
            return fail("", "is not an object: expected a mapping, found \(value.typeDescription)")
        }
        guard let kind = header.kind, !kind.isEmpty else { return fail("kind", "is required") }
        guard let versions = supportedVersions[kind] else {
            result.skipped.append("\(header.displayName) (\(location))")
            return
        }
        if let apiVersion = header.apiVersion, !versions.contains(apiVersion) {
            return fail("apiVersion", "\(apiVersion) is not supported for \(kind); use \(versions.sorted().joined(separator: " or "))")
        }
        do {
            let reader = try FieldReader(value, at: .root)
            let wire: WireObject
            switch kind {
            case "Service": wire = .service(try APIService(reader))
            case "EndpointSlice": wire = .endpointSlice(try APIEndpointSlice(reader))
            case "Endpoints": wire = .endpoints(try APIEndpoints(reader))
            case "Pod": wire = .pod(try APIPod(reader))
            default: wire = .node(try APINode(reader))
            }
            result.objects.append(ManifestObject(object: try ManifestValidator.validate(wire), wire: wire, location: location))
        } catch {
            fail(error.field, error.message)
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
                    ManifestError(
                        location: entry.location, object: key.description, field: "metadata.name",
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

    init(_ value: JSONValue, impliedKind: String?) {
        func text(_ field: JSONValue?) -> String? {
            if case .string(let value)? = field { return value }
            return nil
        }
        kind = text(value["kind"]) ?? impliedKind
        apiVersion = text(value["apiVersion"])
        name = text(value["metadata"]?["name"])
        namespace = text(value["metadata"]?["namespace"])
    }

    var displayName: String {
        let kindText = kind ?? "object"
        guard let name, !name.isEmpty else { return kindText }
        if kind == "Node" { return "\(kindText) \(name)" }
        let space = (namespace?.isEmpty ?? true) ? "default" : namespace!
        return "\(kindText) \(space)/\(name)"
    }
}
