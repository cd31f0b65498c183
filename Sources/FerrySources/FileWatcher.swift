import Foundation
import Glibc

/// Calls back when anything under a path may have changed: inotify on the path's folders (the parent
/// folder for a single file, since editors replace files by renaming), with a periodic poll as a
/// fallback for file systems without inotify and for events it misses. Bursts are coalesced: the
/// callback runs once the path has been quiet for `settle`.
///
/// The watcher owns one thread; `stop()` ends it. The callback runs on that thread.
///
/// It says what changed when inotify can tell: the files named by the events, so that a reload stats
/// and reads only those (walking a folder of 10,000 manifests costs 40 ms in `stat` calls alone on this
/// VM). Anything it cannot pin down to files (a folder made, moved or removed, a hidden name such as a
/// ConfigMap volume's `..data` swap, a queue overflow) and every poll say "everything".
public final class FileWatcher: @unchecked Sendable {
    /// What may have changed.
    public enum Change: Sendable, Hashable {
        /// Only these files (created, written, moved or deleted).
        case paths(Set<String>)
        /// Anything under the root: walk it.
        case everything

        mutating func merge(_ other: Change) {
            switch (self, other) {
            case (.paths(let mine), .paths(let theirs)): self = .paths(mine.union(theirs))
            default: self = .everything
            }
        }
    }

    // Confined to the watcher thread after `start`, except `stopRequested` (atomic via the wake pipe).
    private let root: String
    private let settle: Duration
    private let pollInterval: Duration
    private let onChange: @Sendable (Change) -> Void
    private var inotifyDescriptor: Int32 = -1
    private var watchedFolders: [String: Int32] = [:]
    private var wakePipe: [Int32] = [-1, -1]
    private var thread: Thread?

    /// Whether inotify is in use (otherwise only polling).
    public private(set) var usesInotify = false

    public init(
        root: String, settle: Duration = .milliseconds(100), pollInterval: Duration = .seconds(2),
        onChanges: @escaping @Sendable (Change) -> Void
    ) {
        self.root = root
        self.settle = settle
        self.pollInterval = pollInterval
        self.onChange = onChanges
    }

    /// A watcher whose callback is not told what changed.
    public convenience init(
        root: String, settle: Duration = .milliseconds(100), pollInterval: Duration = .seconds(2),
        onChange: @escaping @Sendable () -> Void
    ) {
        self.init(root: root, settle: settle, pollInterval: pollInterval, onChanges: { _ in onChange() })
    }

    deinit { closeAll() }

    public func start() {
        inotifyDescriptor = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        usesInotify = inotifyDescriptor >= 0
        if pipe(&wakePipe) == 0 {
            for descriptor in wakePipe {
                _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
                _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
            }
        }
        refreshWatches()
        let thread = Thread { [self] in self.run() }
        thread.name = "ferry-file-watcher"
        self.thread = thread
        thread.start()
    }

    /// Ends the watcher thread; returns once it is told (the callback may still be running).
    public func stop() {
        var byte: UInt8 = 1
        _ = write(wakePipe[1], &byte, 1)
    }

    private func run() {
        var pending: Change?
        var quietDeadline = ContinuousClock.now
        var nextPoll = ContinuousClock.now + pollInterval
        while true {
            let now = ContinuousClock.now
            // While a burst settles, the poll waits too: a file being rewritten is read once it is quiet.
            let until = pending != nil ? quietDeadline : nextPoll
            let timeout = max(
                0, Int32((until - now).components.seconds * 1000 + (until - now).components.attoseconds / 1_000_000_000_000_000))
            var descriptors = [pollfd(fd: wakePipe[0], events: Int16(POLLIN), revents: 0)]
            if usesInotify { descriptors.append(pollfd(fd: inotifyDescriptor, events: Int16(POLLIN), revents: 0)) }
            let ready = poll(&descriptors, nfds_t(descriptors.count), timeout)
            if ready > 0 && descriptors[0].revents != 0 { break }
            if ready > 0 && descriptors.count > 1 && descriptors[1].revents != 0 {
                let change = drainInotify()
                if pending == nil { pending = change } else { pending!.merge(change) }
                quietDeadline = ContinuousClock.now + settle
                continue
            }
            let after = ContinuousClock.now
            if let change = pending, after >= quietDeadline {
                pending = nil
                if change == .everything { refreshWatches() }
                onChange(change)
            }
            if pending == nil && after >= nextPoll {
                nextPoll = after + pollInterval
                refreshWatches()
                onChange(.everything)
            }
        }
        closeAll()
    }

    /// Reads the pending inotify events and says which files they name.
    private func drainInotify() -> Change {
        var change = Change.paths([])
        var folders: [Int32: String] = [:]
        for (folder, descriptor) in watchedFolders { folders[descriptor] = folder }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = read(inotifyDescriptor, &buffer, buffer.count)
            guard count > 0 else { break }
            var offset = 0
            buffer.withUnsafeBytes { bytes in
                let headerSize = MemoryLayout<inotify_event>.size
                while offset + headerSize <= count {
                    let descriptor = bytes.loadUnaligned(fromByteOffset: offset, as: Int32.self)
                    let mask = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                    let length = Int(bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                    let nameBytes = bytes[(offset + headerSize)..<min(count, offset + headerSize + length)]
                    let name = String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self)
                    offset += headerSize + length
                    let folderEvent = UInt32(IN_ISDIR | IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)
                    guard mask & folderEvent == 0, !name.isEmpty, !name.hasPrefix("."), let folder = folders[descriptor],
                        !isHidden(folder)
                    else {
                        change = .everything
                        continue
                    }
                    if case .paths(var paths) = change {
                        paths.insert(folder.hasSuffix("/") ? folder + name : folder + "/" + name)
                        change = .paths(paths)
                    }
                }
            }
        }
        return change
    }

    /// Whether `folder` is a hidden folder below the root (such as a ConfigMap volume's `..data`).
    private func isHidden(_ folder: String) -> Bool {
        guard folder.hasPrefix(root + "/") else { return false }
        return folder.dropFirst(root.count + 1).split(separator: "/").contains { $0.hasPrefix(".") }
    }

    /// Watches the root folder (or a single file's folder) and every folder below it.
    private func refreshWatches() {
        guard usesInotify else { return }
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory)
        var folders: [String] = []
        if exists && isDirectory.boolValue {
            // `..data` is where a ConfigMap volume's files really live (the visible names link into it).
            FolderWalk.walk(
                root, enter: { !$0.hasPrefix(".") || $0 == "..data" }, include: { _ in false }, folder: { folders.append($0) }
            ) { _, _ in }
        } else {
            folders.append((root as NSString).deletingLastPathComponent.isEmpty ? "." : (root as NSString).deletingLastPathComponent)
        }
        let mask = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_ATTRIB | IN_DELETE_SELF)
        // Added again every time: a folder deleted and recreated under the same path is a new inode and
        // gets a new watch descriptor (the kernel returns the existing one for a folder already watched).
        var current: [String: Int32] = [:]
        for folder in folders {
            let descriptor = inotify_add_watch(inotifyDescriptor, folder, mask)
            if descriptor >= 0 { current[folder] = descriptor }
        }
        let kept = Set(current.values)
        for descriptor in Set(watchedFolders.values) where !kept.contains(descriptor) {
            inotify_rm_watch(inotifyDescriptor, descriptor)
        }
        watchedFolders = current
    }

    private func closeAll() {
        if inotifyDescriptor >= 0 { close(inotifyDescriptor); inotifyDescriptor = -1 }
        for index in 0..<2 where wakePipe[index] >= 0 {
            close(wakePipe[index])
            wakePipe[index] = -1
        }
    }
}
