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
    }

    public let root: String
    private var files: [String: FileEntry] = [:]
    /// The objects in force and the file each came from.
    public private(set) var objects: [ObjectKey: ManifestObject] = [:]
    private var owners: [ObjectKey: String] = [:]
    /// Every file defining each key, owner or not (almost always one).
    private var definers: [ObjectKey: [String]] = [:]
    private var rootMissing = false
    /// The duplicates already reported, by key: said once, not on every reload while they stay.
    private var reportedDuplicates: [ObjectKey: Set<Duplicate>] = [:]

    /// An object defined again in `file` while `owner` keeps it.
    struct Duplicate: Hashable, Sendable {
        var key: ObjectKey
        var file: String
        var owner: String
    }

    public init(root: String) {
        self.root = root
    }

    /// The files considered, sorted.
    public static func manifestFiles(under root: String) throws(PathError) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory) else {
            throw PathError(path: root, reason: "no such file or directory")
        }
        guard isDirectory.boolValue else { return [root] }
        guard let enumerator = FileManager.default.enumerator(atPath: root) else {
            throw PathError(path: root, reason: "cannot be listed")
        }
        var result: [String] = []
        while let relative = enumerator.nextObject() as? String {
            let components = relative.split(separator: "/")
            if components.contains(where: { $0.hasPrefix(".") }) { continue }
            guard ManifestFormat(path: relative) != nil else { continue }
            let full = (root as NSString).appendingPathComponent(relative)
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue {
                result.append(full)
            }
        }
        return result.sorted()
    }

    /// Re-reads what changed on disk and returns the object changes and the new problems.
    ///
    /// The cost follows the changed files: unchanged files are neither read nor compared, and only the
    /// keys a changed file defined before or defines now are merged again (editing one small file beside
    /// 10,000 Services used to rebuild and deep-compare the whole object map).
    public mutating func reload() -> (changes: [ObjectChange], problems: [ManifestError]) {
        var problems: [ManifestError] = []
        let paths: [String]
        do {
            paths = try ManifestTree.manifestFiles(under: root)
            rootMissing = false
        } catch {
            // Said once when the path goes missing, not on every poll while it stays missing.
            if !rootMissing { problems.append(ManifestError(message: error.description)) }
            rootMissing = true
            paths = []
        }
        var affected: Set<ObjectKey> = []
        var present: Set<String> = []
        present.reserveCapacity(paths.count)
        for path in paths {
            guard let fingerprint = ManifestTree.fingerprint(path) else { continue }
            present.insert(path)
            let previous = files[path]
            if let previous, previous.fingerprint == fingerprint { continue }
            let result = ManifestReader.read(fileAt: path)
            let entry: FileEntry
            if result.errors.isEmpty {
                var defined: [ObjectKey: ManifestObject] = [:]
                defined.reserveCapacity(result.objects.count)
                for object in result.objects where defined[object.key] == nil { defined[object.key] = object }
                entry = FileEntry(fingerprint: fingerprint, objects: defined, errors: [])
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
        for path in files.keys where !present.contains(path) {
            replace(path, with: nil, affecting: &affected)
        }
        return (merge(affected, into: &problems), problems)
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
                definers[key]?.removeAll { $0 == path }
                if definers[key]?.isEmpty == true { definers.removeValue(forKey: key) }
                affected.insert(key)
                continue
            }
            if kept !== object { affected.insert(key) }
        }
        for key in after.keys where before[key] == nil {
            definers[key, default: []].append(path)
            affected.insert(key)
        }
        files[path] = entry
    }

    /// Decides the owner of each affected key and returns the changes to the objects in force, in key
    /// order. Files that already own an object keep it; otherwise the first definer in path order wins.
    private mutating func merge(_ affected: Set<ObjectKey>, into problems: inout [ManifestError]) -> [ObjectChange] {
        var changes: [ObjectChange] = []
        var duplicateProblems: [(path: String, key: ObjectKey, problem: ManifestError)] = []
        for key in affected.sorted() {
            guard let candidates = definers[key], !candidates.isEmpty else {
                reportedDuplicates.removeValue(forKey: key)
                owners.removeValue(forKey: key)
                if objects.removeValue(forKey: key) != nil { changes.append(.delete(key)) }
                continue
            }
            let owner = owners[key].flatMap { candidates.contains($0) ? $0 : nil } ?? candidates.min()!
            let object = files[owner]!.objects[key]!
            var duplicates: Set<Duplicate> = []
            for path in candidates where path != owner {
                let duplicate = Duplicate(key: key, file: path, owner: owner)
                duplicates.insert(duplicate)
                if reportedDuplicates[key]?.contains(duplicate) != true {
                    let copy = files[path]!.objects[key]!
                    duplicateProblems.append(
                        (
                            path, key,
                            ManifestError(
                                location: copy.location, object: key.description, field: "metadata.name",
                                message: "duplicate object: already defined in \(owner); this copy is ignored")
                        ))
                }
            }
            reportedDuplicates[key] = duplicates.isEmpty ? nil : duplicates
            owners[key] = owner
            if let current = objects[key], current === object || current.object == object.object {
                objects[key] = object
                continue
            }
            changes.append(.upsert(object.object))
            objects[key] = object
        }
        duplicateProblems.sort { ($0.path, $0.key) < ($1.path, $1.key) }
        problems += duplicateProblems.map(\.problem)
        return changes
    }

    static func fingerprint(_ path: String) -> Fingerprint? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Fingerprint(
            size: Int64(info.st_size), modified: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec),
            changed: Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec),
            inode: UInt64(info.st_ino))
    }
}
