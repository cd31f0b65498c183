import FerryCore

/// What a source of objects reports.
public enum SourceEvent: Sendable {
    /// A batch of object changes (added, modified, deleted), in the order they happened.
    case changes([ObjectChange])
    /// The source has delivered its complete initial view; nothing is programmed before this.
    case initialSyncDone(source: String)
    /// Input the source could not use. The last good state of what it concerns stays in force.
    case problems([ManifestError])
}

/// A source of Services, EndpointSlices, Endpoints, Pods and Nodes: manifest files now, the
/// Kubernetes API later. Both feed the same change tracker.
public protocol ObjectSource: Sendable {
    /// A name for logs, such as `manifests:deploy/examples`.
    var name: String { get }
    /// Starts the source; the stream ends when the consuming task is cancelled.
    func events() -> AsyncStream<SourceEvent>
}
