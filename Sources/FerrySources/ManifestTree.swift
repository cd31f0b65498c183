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
    private var rootMissing = false
    private var reportedDuplicates: Set<Duplicate> = []

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
        var next: [String: FileEntry] = [:]
        for path in paths {
            guard let fingerprint = ManifestTree.fingerprint(path) else { continue }
            if let known = files[path], known.fingerprint == fingerprint {
                next[path] = known
                continue
            }
            let result = ManifestReader.read(fileAt: path)
            let previous = files[path]
            if result.errors.isEmpty {
                let defined = Dictionary(result.objects.map { ($0.object.key, $0) }, uniquingKeysWith: { first, _ in first })
                next[path] = FileEntry(fingerprint: fingerprint, objects: defined, errors: [])
            } else {
                problems += result.errors
                if let previous, !previous.objects.isEmpty {
                    problems.append(
                        ManifestError(
                            location: nil,
                            message: "\(path): keeping the \(previous.objects.count) object(s) it last defined correctly until it is fixed")
                    )
                }
                next[path] = FileEntry(fingerprint: fingerprint, objects: previous?.objects ?? [:], errors: result.errors)
            }
        }
        files = next
        return (merge(into: &problems), problems)
    }

    /// The errors of every file that currently fails to read.
    public var currentProblems: [ManifestError] {
        files.keys.sorted().flatMap { files[$0]!.errors }
    }

    private mutating func merge(into problems: inout [ManifestError]) -> [ObjectChange] {
        var merged: [ObjectKey: ManifestObject] = [:]
        var newOwners: [ObjectKey: String] = [:]
        var duplicates: Set<Duplicate> = []
        // Files that already own an object keep it: visit owners first, then the rest in path order.
        let ordered = files.keys.sorted()
        for path in ordered {
            for (key, object) in files[path]!.objects where owners[key] == path {
                merged[key] = object
                newOwners[key] = path
            }
        }
        for path in ordered {
            for (key, object) in files[path]!.objects.sorted(by: { $0.key < $1.key }) where newOwners[key] != path {
                if let owner = newOwners[key] {
                    let duplicate = Duplicate(key: key, file: path, owner: owner)
                    duplicates.insert(duplicate)
                    // Said once, when the duplicate appears, not on every reload while it stays.
                    if !reportedDuplicates.contains(duplicate) {
                        problems.append(
                            ManifestError(
                                location: object.location, object: key.description, field: "metadata.name",
                                message: "duplicate object: already defined in \(owner); this copy is ignored"))
                    }
                    continue
                }
                merged[key] = object
                newOwners[key] = path
            }
        }
        var changes: [ObjectChange] = []
        for (key, object) in merged where objects[key]?.object != object.object {
            changes.append(.upsert(object.object))
        }
        for key in objects.keys where merged[key] == nil {
            changes.append(.delete(key))
        }
        objects = merged
        owners = newOwners
        reportedDuplicates = duplicates
        return changes.sorted { $0.key < $1.key }
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
