import FerryCore
import Foundation
import Logging
import Synchronization

/// Objects from a manifest file or folder, watched for changes.
///
/// Emits the complete initial view as one batch followed by `initialSyncDone`, then a batch per settled
/// change on disk. Problems (bad files, duplicates) are reported as they appear; the objects a bad file
/// last defined correctly stay in force.
public struct ManifestSource: ObjectSource {
    public let path: String
    public let watch: Bool
    public let pollInterval: Duration
    public let logger: Logger
    /// What Services without a ClusterIP or NodePort are allocated from (`nil`: nothing is allocated).
    public let allocation: AllocationRanges?

    public init(
        path: String, watch: Bool = true, pollInterval: Duration = .seconds(2), logger: Logger = Logger(label: "ferry.manifests"),
        allocation: AllocationRanges? = AllocationRanges()
    ) {
        self.allocation = allocation
        self.path = path
        self.watch = watch
        self.pollInterval = pollInterval
        self.logger = logger
    }

    public var name: String { "manifests:\(path)" }

    public func events() -> AsyncStream<SourceEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: SourceEvent.self)
        let tree = Mutex(ManifestTree(root: path, allocation: allocation))
        let name = self.name
        let (changes, problems) = tree.withLock { $0.reload() }
        if let note = tree.withLock({ $0.controllersNote }) { logger.notice("\(note)") }
        if !problems.isEmpty { continuation.yield(.problems(problems)) }
        continuation.yield(.changes(changes))
        continuation.yield(.initialSyncDone(source: name))
        guard watch else {
            continuation.finish()
            return stream
        }
        let logger = self.logger
        let watcher = FileWatcher(root: path, pollInterval: pollInterval) { changed in
            let clock = ContinuousClock()
            var changes: [ObjectChange] = []
            var problems: [ManifestError] = []
            let elapsed = clock.measure {
                (changes, problems) = tree.withLock { tree in
                    switch changed {
                    case .everything: tree.reload()
                    case .paths(let paths): tree.reload(paths: paths)
                    }
                }
            }
            if !changes.isEmpty || !problems.isEmpty {
                logger.debug(
                    "manifests reloaded",
                    metadata: [
                        "path": "\(name)", "changes": "\(changes.count)", "problems": "\(problems.count)", "duration": "\(elapsed)",
                    ])
            }
            if !problems.isEmpty { continuation.yield(.problems(problems)) }
            if !changes.isEmpty { continuation.yield(.changes(changes)) }
        }
        continuation.onTermination = { _ in watcher.stop() }
        watcher.start()
        return stream
    }
}

/// The objects Ferry runs on when given no source: the walk-through of `deploy/examples/my-service.yaml`
/// (three pods behind `my-service`), so every command works without a cluster or a file.
public struct EmbeddedSource: ObjectSource {
    public init() {}

    public var name: String { "embedded" }

    /// The embedded objects, read and validated.
    public static func read(keepingWire: Bool = false) -> ManifestReadResult {
        ManifestReader.read(Data(EmbeddedManifests.myService.utf8), format: .yaml, source: "<embedded>", keepingWire: keepingWire)
    }

    public func events() -> AsyncStream<SourceEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: SourceEvent.self)
        let result = EmbeddedSource.read()
        continuation.yield(.changes(result.objects.map { .upsert($0.object) }))
        continuation.yield(.initialSyncDone(source: name))
        continuation.finish()
        return stream
    }
}
