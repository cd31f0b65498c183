import Foundation

/// A page of a Kubernetes list response (`ServiceList`, `EndpointSliceList`, `NodeList`), decoded by
/// the manifest decoders: the same validation and the same error messages as a manifest file.
public struct APIListPage: Sendable {
    /// The objects that decoded, in the order listed.
    public var objects: [ManifestObject]
    /// The objects that did not, each naming its kind, namespace/name and field.
    public var errors: [ManifestError]
    /// The keys of listed objects that failed to decode: their last good version stays in force.
    public var rejectedKeys: Set<ObjectKey>
    /// `metadata.resourceVersion` of the list: where a watch starts.
    public var resourceVersion: String
    /// `metadata.continue`: the token of the next page, when there is one.
    public var continueToken: String?

    public init(
        objects: [ManifestObject] = [], errors: [ManifestError] = [], rejectedKeys: Set<ObjectKey> = [], resourceVersion: String = "",
        continueToken: String? = nil
    ) {
        self.objects = objects
        self.errors = errors
        self.rejectedKeys = rejectedKeys
        self.resourceVersion = resourceVersion
        self.continueToken = continueToken
    }
}

/// One event of a watch stream: a line `{"type": ..., "object": {...}}`.
public enum APIWatchEvent: Sendable {
    /// ADDED or MODIFIED: the object, or why it was refused (its key, when it has one, names what the
    /// last good version stays in force for). `resourceVersion` is the object's.
    case upsert(Result<ManifestObject, ManifestError>, key: ObjectKey?, resourceVersion: String?)
    /// DELETED: the object's key (read leniently: a deleted object need not be valid).
    case delete(ObjectKey, resourceVersion: String?)
    /// BOOKMARK: nothing changed up to this resourceVersion.
    case bookmark(resourceVersion: String)
    /// ERROR: a `Status` (410 Gone means the watch's resourceVersion is too old: relist).
    case status(code: Int, reason: String, message: String)
    /// An object of a kind Ferry does not read (not an error: the server sent what it was asked for).
    case ignored
}

/// A response body that is not what the API server should send.
public struct APIDecodingError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A `Status` object from an error response (`{"kind":"Status","code":410,"reason":"Expired",...}`).
public struct APIStatus: Sendable, Hashable {
    public var code: Int?
    public var reason: String
    public var message: String

    public init(code: Int?, reason: String, message: String) {
        self.code = code
        self.reason = reason
        self.message = message
    }
}

/// Decodes what the Kubernetes API server sends, through the manifest read path (`ValueTree`, field
/// readers, validator).
public enum APIResponseDecoder {
    /// Decodes one page of a list (objects keep their wire form when `keepingWire`). `source` names the request in error locations (e.g. `api:/api/v1/services`).
    public static func listPage(_ body: UnsafeRawBufferPointer, source: String, keepingWire: Bool = false) throws(APIDecodingError) -> APIListPage {
        let tree: ValueTree
        do {
            tree = try JSONParser.parseTree(body)
        } catch {
            throw APIDecodingError("\(source): the list is not valid JSON: \(error)")
        }
        let root = tree.root
        guard tree.kind(root) == .object, let kind = tree.stringValue(root, key: "kind"), kind.hasSuffix("List") else {
            throw APIDecodingError("\(source): expected a list object, found \(tree.typeDescription(root))")
        }
        let metadata = tree.value(root, key: "metadata")
        let resourceVersion = metadata.flatMap { tree.stringValue($0, key: "resourceVersion") } ?? ""
        let token = metadata.flatMap { tree.stringValue($0, key: "continue") }
        var units: [ManifestReader.Unit] = []
        ManifestReader.collect(tree, document: 1, source: source, into: &units)
        var page = APIListPage(
            objects: [], errors: [], rejectedKeys: [], resourceVersion: resourceVersion, continueToken: token?.isEmpty == false ? token : nil)
        page.objects.reserveCapacity(units.count)
        for (unit, outcome) in zip(units, ManifestReader.decode(units, keepingWire: keepingWire)) {
            switch outcome {
            case .object(let object): page.objects.append(object)
            case .error(let error):
                page.errors.append(error)
                if case .object(let tree, let node, let implied, _) = unit, let key = ObjectHeader(tree, node, impliedKind: implied).key {
                    page.rejectedKeys.insert(key)
                }
            case .skipped: break
            }
        }
        return page
    }

    /// Decodes one line of a watch stream.
    public static func watchEvent(_ line: UnsafeRawBufferPointer, source: String) throws(APIDecodingError) -> APIWatchEvent {
        let tree: ValueTree
        do {
            tree = try JSONParser.parseTree(line)
        } catch {
            throw APIDecodingError("\(source): a watch event is not valid JSON: \(error)")
        }
        let root = tree.root
        guard tree.kind(root) == .object, let type = tree.stringValue(root, key: "type"),
            let object = tree.value(root, key: "object"), tree.kind(object) == .object
        else {
            throw APIDecodingError("\(source): a watch event needs a type and an object")
        }
        let resourceVersion = tree.value(object, key: "metadata").flatMap { tree.stringValue($0, key: "resourceVersion") }
        switch type {
        case "ADDED", "MODIFIED":
            let header = ObjectHeader(tree, object, impliedKind: nil)
            let location = ManifestLocation(source: source)
            switch ManifestReader.decode(.object(tree, object, impliedKind: nil, location), keepingWire: false) {
            case .object(let decoded): return .upsert(.success(decoded), key: decoded.key, resourceVersion: resourceVersion)
            case .error(let error): return .upsert(.failure(error), key: header.key, resourceVersion: resourceVersion)
            case .skipped: return .ignored
            }
        case "DELETED":
            guard let key = ObjectHeader(tree, object, impliedKind: nil).key else { return .ignored }
            return .delete(key, resourceVersion: resourceVersion)
        case "BOOKMARK":
            return .bookmark(resourceVersion: resourceVersion ?? "")
        case "ERROR":
            let status = status(tree, object)
            return .status(code: status.code ?? 0, reason: status.reason, message: status.message)
        default:
            throw APIDecodingError("\(source): unknown watch event type \"\(type)\"")
        }
    }

    /// The `Status` in an error response body, when it is one.
    public static func status(_ body: UnsafeRawBufferPointer) -> APIStatus? {
        guard let tree = try? JSONParser.parseTree(body), tree.kind(tree.root) == .object,
            tree.stringValue(tree.root, key: "kind") == "Status"
        else { return nil }
        return status(tree, tree.root)
    }

    private static func status(_ tree: ValueTree, _ node: Int) -> APIStatus {
        let code = tree.value(node, key: "code").flatMap { tree.kind($0) == .int ? tree.int($0) : nil }
        return APIStatus(
            code: code, reason: tree.stringValue(node, key: "reason") ?? "", message: tree.stringValue(node, key: "message") ?? "")
    }
}

extension ObjectHeader {
    /// The key the object would have, when its kind is one Ferry reads and it has a name.
    var key: ObjectKey? {
        guard let kind, let objectKind = ObjectKind(rawValue: kind), let name, !name.isEmpty else { return nil }
        let space = objectKind == .node ? "" : ((namespace?.isEmpty ?? true) ? "default" : namespace!)
        return ObjectKey(kind: objectKind, namespace: space, name: name)
    }
}
