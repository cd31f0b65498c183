import FerryCore
import FerrySources
import Foundation
import Synchronization
import Testing

// MARK: Temporary folders

/// A fresh folder under `NSTemporaryDirectory()` (made by `mkdtemp`), removed when `body` returns.
func withTemporaryFolder<T>(_ body: (String) throws -> T) throws -> T {
    let folder = try makeTemporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    return try body(folder)
}

/// The async twin of `withTemporaryFolder`.
func withTemporaryFolder<T>(_ body: (String) async throws -> T) async throws -> T {
    let folder = try makeTemporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    return try await body(folder)
}

func makeTemporaryFolder() throws -> String {
    var template = Array((NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-sources-tests.XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else {
        throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "mkdtemp failed: errno \(errno)"])
    }
    return String(cString: made)
}

/// Writes `text` at `path` in place (same inode), creating the folders above it.
func write(_ text: String, to path: String) throws {
    try FileManager.default.createDirectory(
        atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
}

/// Replaces `path` the way editors do: write a hidden sibling, then rename it over the file.
func replaceByRename(_ text: String, at path: String) throws {
    let folder = (path as NSString).deletingLastPathComponent
    let temporary = (folder as NSString).appendingPathComponent(".\((path as NSString).lastPathComponent).swp-\(UUID().uuidString)")
    try Data(text.utf8).write(to: URL(fileURLWithPath: temporary))
    guard rename(temporary, path) == 0 else {
        throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "rename failed: errno \(errno)"])
    }
}

// MARK: Manifests

/// A Service as YAML. `port` is spliced verbatim, so tests can write `70000` or `"abc"`.
func serviceYAML(_ name: String, ip: String, port: String = "80", namespace: String = "default") -> String {
    """
    apiVersion: v1
    kind: Service
    metadata:
      name: \(name)
      namespace: \(namespace)
      creationTimestamp: "2026-11-29T10:00:00Z"
    spec:
      type: ClusterIP
      clusterIP: \(ip)
      selector:
        app: \(name)
      ports:
      - name: http
        protocol: TCP
        port: \(port)
        targetPort: 8080

    """
}

/// An EndpointSlice of `service` with the given ready addresses.
func sliceYAML(_ service: String, addresses: [String], namespace: String = "default") -> String {
    let endpoints = addresses.map { "- addresses: [\"\($0)\"]\n  conditions: {ready: true}\n  nodeName: node-1\n" }.joined()
    return """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: \(service)-abcde
          namespace: \(namespace)
          labels:
            kubernetes.io/service-name: \(service)
        addressType: IPv4
        endpoints:
        \(endpoints)ports:
        - name: http
          protocol: TCP
          port: 8080

        """
}

/// Several YAML documents as one stream.
func stream(_ documents: String...) -> String {
    documents.joined(separator: "---\n")
}

/// A Service as JSON.
func serviceJSON(_ name: String, ip: String, port: Int = 80) -> String {
    #"{"apiVersion":"v1","kind":"Service","metadata":{"name":"\#(name)","namespace":"default"},"spec":{"clusterIP":"\#(ip)","ports":[{"name":"http","port":\#(port)}]}}"#
}

func serviceKey(_ name: String, namespace: String = "default") -> ObjectKey {
    ObjectKey(kind: .service, namespace: namespace, name: name)
}

func sliceKey(_ service: String, namespace: String = "default") -> ObjectKey {
    ObjectKey(kind: .endpointSlice, namespace: namespace, name: "\(service)-abcde")
}

extension ObjectChange {
    var isDelete: Bool {
        if case .delete = self { return true }
        return false
    }

    var upserted: KubeObject? {
        if case .upsert(let object) = self { return object }
        return nil
    }
}

extension KubeObject {
    /// The first port number of a Service.
    var firstServicePort: Int? {
        if case .service(let service) = self { return service.ports.first?.port }
        return nil
    }
}

// MARK: Waiting

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns its last value.
func eventually(within timeout: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}

/// A thread-safe record of what a callback or a stream delivered.
final class Recorder<Element: Sendable>: Sendable {
    private let storage = Mutex<[Element]>([])

    func append(_ element: Element) { storage.withLock { $0.append(element) } }
    var all: [Element] { storage.withLock { $0 } }
    var count: Int { storage.withLock { $0.count } }
}

/// Consumes `stream` on a task, recording every event; cancel the returned task to stop the source.
func record(_ stream: AsyncStream<SourceEvent>, into recorder: Recorder<SourceEvent>) -> Task<Void, Never> {
    Task {
        for await event in stream {
            recorder.append(event)
        }
    }
}

extension SourceEvent {
    var changes: [ObjectChange]? {
        if case .changes(let changes) = self { return changes }
        return nil
    }

    var problems: [ManifestError]? {
        if case .problems(let problems) = self { return problems }
        return nil
    }

    var isInitialSyncDone: Bool {
        if case .initialSyncDone = self { return true }
        return false
    }
}

/// inotify instances open in this process. Only `FileWatcher` makes them, and its thread closes its
/// own as the last thing it does, so this counts running watcher threads. (Foundation on Linux does
/// not hand `Thread.name` to the kernel, so the threads cannot be counted by name.)
func openInotifyInstances() -> Int {
    let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return descriptors.filter { descriptor in
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(descriptor)")) == "anon_inode:inotify"
    }.count
}
