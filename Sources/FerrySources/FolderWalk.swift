import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A recursive walk of a folder with `readdir` and `fstatat`, giving each file's `stat` as it goes.
///
/// The watcher walks its folder on every change. FileManager's enumerator plus a `stat` per file took
/// 170 ms for 10,000 manifest files, which made one edit among them cost that much; this walk stats each
/// entry once, relative to its open folder.
enum FolderWalk {
    /// Calls `file` for every non-folder entry (links followed, as a ConfigMap volume's are) and `folder`
    /// for every folder entered, the root first. `enter` decides, by name, whether a subfolder is walked;
    /// `include` decides, by name, whether a file is reported. Unreadable folders are skipped.
    static func walk(
        _ root: String, enter: (Substring) -> Bool, include: (Substring) -> Bool, folder: (String) -> Void = { _ in },
        file: (String, stat) -> Void
    ) {
        folder(root)
        guard let directory = opendir(root) else { return }
        defer { closedir(directory) }
        let descriptor = dirfd(directory)
        var subfolders: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            var info = stat()
            guard fstatat(descriptor, name, &info, 0) == 0 else { continue }
            let path = root.hasSuffix("/") ? root + name : root + "/" + name
            if info.st_mode & S_IFMT == S_IFDIR {
                // A link to a folder is not followed, as FileManager's enumerator does not follow one.
                var own = stat()
                let isLink = fstatat(descriptor, name, &own, AT_SYMLINK_NOFOLLOW) == 0 && own.st_mode & S_IFMT == S_IFLNK
                if !isLink, enter(name[...]) { subfolders.append(path) }
            } else if include(name[...]) {
                file(path, info)
            }
        }
        for subfolder in subfolders { walk(subfolder, enter: enter, include: include, folder: folder, file: file) }
    }
}
