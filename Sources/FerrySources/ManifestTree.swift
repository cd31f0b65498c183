import FerryCore
import Foundation

/// The objects defined by a manifest file or a folder of them (recursive; `.yaml`, `.yml`, `.json`;
/// hidden files and folders skipped), kept per file.
///
/// `reload()` re-reads only files whose size, modification time or inode changed. A file that fails to
/// read or validate keeps contributing the objects it last defined correctly, and its errors are
/// reported once per change of the file; other files are unaffected. The same object in two files is
/// reported and the file that defined it first keeps it.
public struct ManifestTree: Sendable {
    /// Failure to use the path at all (it does not exist, or is neither a file nor a folder).
    public struct PathError: Error, Sendable, CustomStringConvertible {
        public var path: String
        public var reason: String
        public var description: String { "\(path): \(reason)" }
    }

    struct Fingerprint: Sendable, Hashable {
        var size: Int64
        var modified: Int64
        /// The inode change time: a user cannot set it back, unlike the modification time.
        var changed: Int64
        var inode: UInt64
    }

    struct FileEntry: Sendable {
        var fingerprint: Fingerprint
        /// What the file last defined without errors.
        var objects: [ObjectKey: ManifestObject]
        var errors: [ManifestError]
        /// Controllers (Deployments, ReplicaSets…) the file defines, as `Kind namespace/name (location)`.
        var controllers: [String] = []
    }

    public let root: String
    private var files: [String: FileEntry] = [:]
    /// The objects in force and the file each came from.
    public private(set) var objects: [ObjectKey: ManifestObject] = [:]
    /// Who defines each key: one entry per key, so that a merge looks a key up once.
    private var claims: [ObjectKey: Claim] = [:]
    private var rootMissing = false

    /// The files defining one key.
    struct Claim: Sendable {
        /// Every file defining the key, with its object there, owner or not (almost always one).
        var definers: [(path: String, object: ManifestObject)] = []
        /// The file whose object is in force.
        var owner: String?
        /// The duplicates already reported: said once, not on every reload while they stay.
        var reported: Set<Duplicate> = []
    }

    /// An object defined again in `file` while `owner` keeps it.
    struct Duplicate: Hashable, Sendable {
        var key: ObjectKey
        var file: String
        var owner: String
    }

    /// Whether objects keep their form as written (`ManifestObject.wire`).
    public let keepingWire: Bool

    /// Fills in ClusterIPs and NodePorts the manifests leave out, as the API server would (`nil`: no
    /// allocation). Its problems are reported with the Service's file.
    private var allocator: ServiceAllocator?

    public init(root: String, keepingWire: Bool = false, allocation: AllocationRanges? = AllocationRanges()) {
        self.root = root
        self.keepingWire = keepingWire
        self.allocator = allocation.map { ServiceAllocator(ranges: $0) }
    }

    /// Passes merged changes through the allocator.
    private mutating func allocated(_ changes: [ObjectChange], problems: inout [ManifestError]) -> [ObjectChange] {
        // Mutated in place: a copy taken out and put back would copy its tables (10,000 services) on
        // every reload, through copy-on-write: one edited file cost 6.5 ms instead of 0.05.
        guard allocator != nil, let result = allocator?.apply(changes) else { return changes }
        for problem in result.problems {
            let key = ObjectKey(kind: .service, namespace: problem.service.namespace, name: problem.service.name)
            problems.append(
                ManifestError(location: objects[key]?.location, object: "Service \(problem.service)", field: problem.field, message: problem.message))
        }
        return result.changes
    }

    /// The files considered, sorted.
    public static func manifestFiles(under root: String) throws(PathError) -> [String] {
        try scan(root).map(\.path)
    }

    /// The files considered, sorted, each with its fingerprint: one `stat` per file.
    static func scan(_ root: String) throws(PathError) -> [(path: String, fingerprint: Fingerprint)] {
        var info = stat()
        guard stat(root, &info) == 0 else { throw PathError(path: root, reason: "no such file or directory") }
        guard info.st_mode & S_IFMT == S_IFDIR else { return [(root, Fingerprint(info))] }
        guard access(root, R_OK | X_OK) == 0 else { throw PathError(path: root, reason: "cannot be listed") }
        var result: [(path: String, fingerprint: Fingerprint)] = []
        FolderWalk.walk(
            root, enter: { !$0.hasPrefix(".") }, include: { !$0.hasPrefix(".") && ManifestFormat(path: String($0)) != nil }
        ) { path, info in
            result.append((path, Fingerprint(info)))
        }
        return result.sorted { $0.path < $1.path }
    }

    /// Re-reads what changed on disk and returns the object changes and the new problems.
    ///
    /// The cost follows the changed files: unchanged files are neither read nor compared, and only the
    /// keys a changed file defined before or defines now are merged again (editing one small file beside
    /// 10,000 Services used to rebuild and deep-compare the whole object map).
    public mutating func reload() -> (changes: [ObjectChange], problems: [ManifestError]) {
        var problems: [ManifestError] = []
        let paths: [(path: String, fingerprint: Fingerprint)]
        do {
            paths = try ManifestTree.scan(root)
            rootMissing = false
        } catch {
            // Said once when the path goes missing, not on every poll while it stays missing.
            if !rootMissing { problems.append(ManifestError(message: error.description)) }
            rootMissing = true
            paths = []
        }
        var affected: Set<ObjectKey> = []
        // Files known before and still there; when that is all of them, none was removed (no set needed).
        var stillThere = 0
        let knownBefore = files.count
        for (path, fingerprint) in paths {
            if files[path] != nil { stillThere += 1 }
            update(path, fingerprint: fingerprint, affecting: &affected, problems: &problems)
        }
        if stillThere < knownBefore {
            let present = Set(paths.map(\.path))
            for path in files.keys where !present.contains(path) {
                replace(path, with: nil, affecting: &affected)
            }
        }
        let merged = merge(affected, into: &problems)
        return (allocated(merged, problems: &problems), problems)
    }

    /// Re-reads only `changed` (as the watcher names them: created, written, moved or deleted files),
    /// without walking the folder. Paths that are not manifests under the root are ignored.
    public mutating func reload(paths changed: Set<String>) -> (changes: [ObjectChange], problems: [ManifestError]) {
        // A single-file root that changed is the whole tree: the walk also says when it has gone missing.
        if changed.contains(root) { return reload() }
        var problems: [ManifestError] = []
        var affected: Set<ObjectKey> = []
        for path in changed.sorted() where isManifest(path) {
            var info = stat()
            if stat(path, &info) == 0, info.st_mode & S_IFMT != S_IFDIR {
                update(path, fingerprint: Fingerprint(info), affecting: &affected, problems: &problems)
            } else if files[path] != nil {
                replace(path, with: nil, affecting: &affected)
            }
        }
        let merged = merge(affected, into: &problems)
        return (allocated(merged, problems: &problems), problems)
    }

    /// Whether `path` is one of the files a walk of the root would consider.
    private func isManifest(_ path: String) -> Bool {
        if path == root { return true }
        let base = root.hasSuffix("/") ? root : root + "/"
        guard path.hasPrefix(base), ManifestFormat(path: path) != nil else { return false }
        return !path.dropFirst(base.count).split(separator: "/").contains { $0.hasPrefix(".") }
    }

    /// Reads `path` again unless its fingerprint is the one last read.
    private mutating func update(
        _ path: String, fingerprint: Fingerprint, affecting affected: inout Set<ObjectKey>, problems: inout [ManifestError]
    ) {
        let previous = files[path]
        if let previous, previous.fingerprint == fingerprint { return }
        let result = ManifestReader.read(fileAt: path, keepingWire: keepingWire)
        let entry: FileEntry
        if result.errors.isEmpty {
            var defined: [ObjectKey: ManifestObject] = [:]
            defined.reserveCapacity(result.objects.count)
            for object in result.objects where defined[object.key] == nil { defined[object.key] = object }
            entry = FileEntry(fingerprint: fingerprint, objects: defined, errors: [], controllers: ManifestTree.controllers(in: result.skipped))
        } else {
            problems += result.errors
            if let previous, !previous.objects.isEmpty {
                problems.append(
                    ManifestError(
                        location: nil,
                        message: "\(path): keeping the \(previous.objects.count) object(s) it last defined correctly until it is fixed")
                )
            }
            entry = FileEntry(fingerprint: fingerprint, objects: previous?.objects ?? [:], errors: result.errors)
        }
        replace(path, with: entry, affecting: &affected)
    }

    /// Workload controllers in the manifests, which a proxy does not read (it reads the Pods they make).
    public var controllers: [String] { files.keys.sorted().flatMap { files[$0]!.controllers } }

    /// The controller kinds among objects skipped on purpose.
    static func controllers(in skipped: [String]) -> [String] {
        let kinds = ["Deployment ", "ReplicaSet ", "StatefulSet ", "DaemonSet ", "Job ", "CronJob ", "ReplicationController "]
        return skipped.filter { entry in kinds.contains { entry.hasPrefix($0) } }
    }

    /// One note for the controllers in the manifests, or `nil` when there are none.
    public var controllersNote: String? {
        let all = controllers
        guard let first = all.first else { return nil }
        let more = all.count > 1 ? " and \(all.count - 1) more" : ""
        return "note: \(first)\(more) not read: Ferry takes a Service's endpoints from its EndpointSlices, its Endpoints or the Pods in the manifests, not from controllers (add the Pods: kubectl get pods -o yaml)"
    }

    /// The errors of every file that currently fails to read.
    public var currentProblems: [ManifestError] {
        files.keys.sorted().flatMap { files[$0]!.errors }
    }

    /// Stores what `path` defines now (`nil`: the file is gone) and notes the keys whose definers changed.
    private mutating func replace(_ path: String, with entry: FileEntry?, affecting affected: inout Set<ObjectKey>) {
        let before = files[path]?.objects ?? [:]
        let after = entry?.objects ?? [:]
        for (key, object) in before {
            guard let kept = after[key] else {
                claims[key]?.definers.removeAll { $0.path == path }
                affected.insert(key)
                continue
            }
            guard kept !== object else { continue }
            if let index = claims.index(forKey: key), let position = claims.values[index].definers.firstIndex(where: { $0.path == path }) {
                claims.values[index].definers[position].object = kept
            }
            affected.insert(key)
        }
        for (key, object) in after where before[key] == nil {
            claims[key, default: Claim()].definers.append((path, object))
            affected.insert(key)
        }
        files[path] = entry
    }

    /// Decides the owner of each affected key and returns the changes to the objects in force, in key
    /// order. Files that already own an object keep it; otherwise the first definer in path order wins.
    private mutating func merge(_ affected: Set<ObjectKey>, into problems: inout [ManifestError]) -> [ObjectChange] {
        var changes: [ObjectChange] = []
        var duplicateProblems: [(path: String, key: ObjectKey, problem: ManifestError)] = []
        if objects.isEmpty { objects.reserveCapacity(affected.count) }
        for key in affected.sorted() {
            // One lookup per key in each dictionary: the claim is changed in place through its index.
            guard let index = claims.index(forKey: key), !claims.values[index].definers.isEmpty else {
                if let index = claims.index(forKey: key) { claims.remove(at: index) }
                if objects.removeValue(forKey: key) != nil { changes.append(.delete(key)) }
                continue
            }
            let claim = claims.values[index]
            let owner = claim.owner.flatMap { owner in claim.definers.contains { $0.path == owner } ? owner : nil }
                ?? claim.definers.min { $0.path < $1.path }!.path
            let object = claim.definers.first { $0.path == owner }!.object
            var duplicates: Set<Duplicate> = []
            for (path, copy) in claim.definers where path != owner {
                let duplicate = Duplicate(key: key, file: path, owner: owner)
                duplicates.insert(duplicate)
                if !claim.reported.contains(duplicate) {
                    duplicateProblems.append(
                        (
                            path, key,
                            ManifestError(
                                location: copy.location, object: key.description, field: "metadata.name",
                                message: "duplicate object: already defined in \(owner); this copy is ignored")
                        ))
                }
            }
            if claim.owner != owner { claims.values[index].owner = owner }
            if claim.reported != duplicates { claims.values[index].reported = duplicates }
            let previous = objects.updateValue(object, forKey: key)
            if let previous, previous === object || previous.object == object.object { continue }
            changes.append(.upsert(object.object))
        }
        duplicateProblems.sort { ($0.path, $0.key) < ($1.path, $1.key) }
        problems += duplicateProblems.map(\.problem)
        return changes
    }

}

extension ManifestTree.Fingerprint {
    init(_ info: stat) {
        self.init(
            size: Int64(info.st_size), modified: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec),
            changed: Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec),
            inode: UInt64(info.st_ino))
    }
}
