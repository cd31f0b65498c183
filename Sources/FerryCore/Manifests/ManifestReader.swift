import Foundation
import Synchronization

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
///
/// A class, immutable once read: the tree, the listings and the change tracker pass the same object
/// around by reference. As a struct it was copied field by field (a retain per string and dictionary)
/// at every dictionary insert and sort: retain/release and its value-witness copies were 60% of
/// `ferry get services -A` on 10,000 Services + 10,000 EndpointSlices (perf), more than the parse.
public final class ManifestObject: Sendable, Hashable {
    public let object: KubeObject
    /// The object as written, kept only when the reader is asked to (`-o json|yaml`): the proxy never
    /// needs it, and it was a third of the memory of 10,000 EndpointSlices.
    public let wire: WireObject?
    public let location: ManifestLocation
    /// `object.key`, computed once (the computed property copies the object's metadata).
    public let key: ObjectKey

    public init(object: KubeObject, wire: WireObject?, location: ManifestLocation) {
        self.object = object
        self.wire = wire
        self.location = location
        self.key = object.key
    }

    public static func == (lhs: ManifestObject, rhs: ManifestObject) -> Bool {
        lhs === rhs || (lhs.key == rhs.key && lhs.location == rhs.location && lhs.object == rhs.object && lhs.wire == rhs.wire)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(key)
        hasher.combine(location)
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

/// Bounds on what a manifest may cost to read, so that no file can make Ferry hang or grow without
/// bound (the rest, nesting depth and YAML alias expansion, are the parsers' own).
public struct ManifestLimits: Sendable, Hashable {
    /// Larger files are refused before they are read. 64 MiB holds about 35,000 Services with an
    /// EndpointSlice of 10 endpoints each; a bigger cluster's manifests are kept in several files.
    public var maximumFileBytes: Int

    public init(maximumFileBytes: Int = 64 << 20) {
        self.maximumFileBytes = maximumFileBytes
    }

    public static let `default` = ManifestLimits()

    func tooLarge(_ bytes: Int) -> String? {
        guard bytes > maximumFileBytes else { return nil }
        return "is \(bytes) bytes, more than the \(maximumFileBytes >> 20) MiB a manifest file may hold: split it into several files"
    }
}

/// Reads Kubernetes manifests: YAML streams of several documents, JSON, `kind: List` and typed lists
/// such as `ServiceList` (whose items carry no `kind`), and `kubectl get -o yaml|json` output.
/// Every object is validated; each bad one becomes a `ManifestError` naming its location, object and field.
///
/// A document is parsed into a `ValueTree`, then its objects are decoded and validated on all cores
/// (they are independent; reading 20,000 objects, decoding was half the time on one core).
public enum ManifestReader {
    /// Reads a whole file or stream. Never throws: problems come back as `errors`.
    public static func read(
        _ data: Data, format: ManifestFormat, source: String, limits: ManifestLimits = .default, keepingWire: Bool = false
    ) -> ManifestReadResult {
        if let problem = limits.tooLarge(data.count) { return refused(source, problem) }
        return result(of: parse(data, format: format, source: source), keepingWire: keepingWire)
    }

    /// The documents of `data` as units to decode (the text is no longer needed once they are made).
    private static func parse(_ data: Data, format: ManifestFormat, source: String) -> [Unit] {
        data.withUnsafeBytes { bytes in
            switch format {
            case .json: readJSON(bytes, source: source)
            case .yaml: readYAML(bytes, source: source)
            }
        }
    }

    /// Decodes the units into a result, rejecting objects defined twice.
    private static func result(of units: [Unit], keepingWire: Bool) -> ManifestReadResult {
        var result = ManifestReadResult()
        for outcome in decode(units, keepingWire: keepingWire) {
            switch outcome {
            case .object(let object): result.objects.append(object)
            case .error(let error): result.errors.append(error)
            case .skipped(let description): result.skipped.append(description)
            }
        }
        rejectDuplicates(in: &result)
        return result
    }

    /// Reads a file from disk, choosing the format from its extension (YAML when unknown).
    public static func read(fileAt path: String, limits: ManifestLimits = .default, keepingWire: Bool = false) -> ManifestReadResult {
        var info = stat()
        if stat(path, &info) == 0, let problem = limits.tooLarge(Int(info.st_size)) { return refused(path, problem) }
        do {
            // The file's bytes are let go once parsed, before the objects are decoded: 19 MB less at the
            // peak of reading 10,000 Services.
            var data: Data? = try Data(contentsOf: URL(fileURLWithPath: path))
            // Checked again: the file may have grown since it was measured.
            if let problem = limits.tooLarge(data!.count) { return refused(path, problem) }
            let units = parse(data!, format: ManifestFormat(path: path) ?? .yaml, source: path)
            data = nil
            return result(of: units, keepingWire: keepingWire)
        } catch {
            var result = ManifestReadResult()
            result.errors.append(
                ManifestError(location: nil, object: nil, field: nil, message: "\(path): cannot be read: \(describeIOError(error))"))
            return result
        }
    }

    /// The result for a whole file or stream that is not read at all.
    private static func refused(_ source: String, _ problem: String) -> ManifestReadResult {
        var result = ManifestReadResult()
        result.errors.append(ManifestError(message: "\(source): \(problem)"))
        return result
    }

    /// One object to decode, or a problem found before decoding, in document order.
    enum Unit {
        case object(ValueTree, Int, impliedKind: String?, ManifestLocation)
        case failed(ManifestError)
    }

    enum Outcome {
        case object(ManifestObject)
        case error(ManifestError)
        case skipped(String)
    }

    private static func readJSON(_ bytes: UnsafeRawBufferPointer, source: String) -> [Unit] {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }) { return [] }
        do {
            let tree = try JSONParser.parseTree(bytes)
            var units: [Unit] = []
            collect(tree, document: 1, source: source, into: &units)
            return units
        } catch {
            return [.failed(ManifestError(location: ManifestLocation(source: source), message: "is not valid JSON: \(error)"))]
        }
    }

    private static func readYAML(_ bytes: UnsafeRawBufferPointer, source: String) -> [Unit] {
        var units: [Unit] = []
        var documents = 0
        do {
            try YAMLReader.read(bytes) { document, tree in
                documents = document
                switch tree {
                case .success(let tree):
                    collect(tree, document: document, source: source, into: &units)
                case .failure(let error):
                    units.append(
                        .failed(ManifestError(location: ManifestLocation(source: source, document: document), message: error.description)))
                }
            }
        } catch {
            if error.isEncoding {
                units.append(.failed(ManifestError(location: ManifestLocation(source: source), message: "is not UTF-8 text")))
            } else {
                units.append(
                    .failed(
                        ManifestError(
                            location: ManifestLocation(source: source, document: documents + 1),
                            message: "is not valid YAML: \(error.description)")))
            }
        }
        return units
    }

    /// Reads one document: an object, or a list (`kind: List` or a typed list such as `ServiceList`,
    /// whose items may omit their kind).
    static func collect(_ tree: ValueTree, document: Int, source: String, into units: inout [Unit]) {
        let location = ManifestLocation(source: source, document: document)
        let root = tree.root
        guard tree.kind(root) == .object else {
            units.append(
                .failed(
                    ManifestError(
                        location: location,
                        message:
                            "is not an object: expected a mapping with kind, apiVersion and metadata, found \(tree.typeDescription(root))"
                    )))
            return
        }
        guard let kind = tree.stringValue(root, key: "kind"), kind.hasSuffix("List") else {
            units.append(.object(tree, root, impliedKind: nil, location))
            return
        }
        let itemKind = kind == "List" ? nil : String(kind.dropLast(4))
        guard let items = tree.value(root, key: "items"), tree.kind(items) != .null else { return }
        guard tree.kind(items) == .array else {
            units.append(
                .failed(
                    ManifestError(
                        location: location, object: kind, field: "items",
                        message: "has the wrong type: expected a list, found \(tree.typeDescription(items))")))
            return
        }
        for (position, item) in tree.elements(items).enumerated() {
            units.append(.object(tree, item, impliedKind: itemKind, ManifestLocation(source: source, document: document, item: position)))
        }
    }

    /// Decodes and validates every unit, in parallel for large inputs, keeping their order.
    static func decode(_ units: [Unit], keepingWire: Bool) -> [Outcome] {
        // Below this many objects, a second thread costs more than it saves.
        let parallelFrom = 512
        guard units.count >= parallelFrom else { return units.map { decode($0, keepingWire: keepingWire) } }
        let chunkCount = min(ProcessInfo.processInfo.activeProcessorCount * 4, units.count / 128)
        let chunkSize = (units.count + chunkCount - 1) / chunkCount
        let chunks = Mutex([[Outcome]](repeating: [], count: chunkCount))
        DispatchQueue.concurrentPerform(iterations: chunkCount) { chunk in
            let range = chunk * chunkSize..<min(units.count, (chunk + 1) * chunkSize)
            let outcomes = units[range].map { decode($0, keepingWire: keepingWire) }
            chunks.withLock { $0[chunk] = outcomes }
        }
        return chunks.withLock { $0.flatMap { $0 } }
    }

    private static let supportedVersions: [String: Set<String>] = [
        "Service": ["v1"], "Endpoints": ["v1"], "Pod": ["v1"], "Node": ["v1"], "EndpointSlice": ["discovery.k8s.io/v1"],
    ]

    static func decode(_ unit: Unit, keepingWire: Bool) -> Outcome {
        let (tree, index, impliedKind, location): (ValueTree, Int, String?, ManifestLocation)
        switch unit {
        case .failed(let error): return .error(error)
        case .object(let value, let node, let implied, let at): (tree, index, impliedKind, location) = (value, node, implied, at)
        }
        let header = ObjectHeader(tree, index, impliedKind: impliedKind)
        func fail(_ field: String, _ message: String) -> Outcome {
            .error(ManifestError(location: location, object: header.displayName, field: field, message: message))
        }
        guard tree.kind(index) == .object else {
            return fail("", "is not an object: expected a mapping, found \(tree.typeDescription(index))")
        }
        guard let kind = header.kind, !kind.isEmpty else { return fail("kind", "is required") }
        guard let versions = supportedVersions[kind] else {
            return .skipped("\(header.displayName) (\(location))")
        }
        if let apiVersion = header.apiVersion, !versions.contains(apiVersion) {
            return fail("apiVersion", "\(apiVersion) is not supported for \(kind); use \(versions.sorted().joined(separator: " or "))")
        }
        do {
            let reader = try FieldReader(tree, index, root: index)
            let wire: WireObject
            switch kind {
            case "Service": wire = .service(try APIService(reader))
            case "EndpointSlice": wire = .endpointSlice(try APIEndpointSlice(reader))
            case "Endpoints": wire = .endpoints(try APIEndpoints(reader))
            case "Pod": wire = .pod(try APIPod(reader))
            default: wire = .node(try APINode(reader))
            }
            return .object(ManifestObject(object: try ManifestValidator.validate(wire), wire: keepingWire ? wire : nil, location: location))
        } catch {
            return fail(error.field, error.message)
        }
    }

    /// The same object twice in one file is ambiguous: keep the first, report the second.
    private static func rejectDuplicates(in result: inout ManifestReadResult) {
        var seen: [ObjectKey: ManifestLocation] = [:]
        var unique: [ManifestObject] = []
        unique.reserveCapacity(result.objects.count)
        for entry in result.objects {
            let key = entry.key
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

    init(_ tree: ValueTree, _ index: Int, impliedKind: String?) {
        kind = tree.stringValue(index, key: "kind") ?? impliedKind
        apiVersion = tree.stringValue(index, key: "apiVersion")
        let metadata = tree.value(index, key: "metadata")
        name = metadata.flatMap { tree.stringValue($0, key: "name") }
        namespace = metadata.flatMap { tree.stringValue($0, key: "namespace") }
    }

    var displayName: String {
        let kindText = kind ?? "object"
        guard let name, !name.isEmpty else { return kindText }
        if kind == "Node" { return "\(kindText) \(name)" }
        let space = (namespace?.isEmpty ?? true) ? "default" : namespace!
        return "\(kindText) \(space)/\(name)"
    }
}
