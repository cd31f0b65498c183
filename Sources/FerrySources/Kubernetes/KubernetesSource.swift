import FerryCore
import Foundation
import Logging
import NIOCore
import Synchronization

/// One kind of object Ferry lists and watches, with the selectors kube-proxy uses.
public struct WatchedResource: Sendable, Hashable, CustomStringConvertible {
    /// The collection's path, e.g. `/api/v1/services`.
    public var path: String
    public var labelSelector: String?
    public var fieldSelector: String?

    public init(path: String, labelSelector: String? = nil, fieldSelector: String? = nil) {
        self.path = path
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
    }

    /// The path with its selectors and `extra` query parameters, percent-encoded.
    func request(_ extra: [(String, String)]) -> String {
        var items: [(String, String)] = []
        if let labelSelector { items.append(("labelSelector", labelSelector)) }
        if let fieldSelector { items.append(("fieldSelector", fieldSelector)) }
        items += extra
        guard !items.isEmpty else { return path }
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+,;!/:?@$")
        return path + "?" + items.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed) ?? $0.1)" }.joined(separator: "&")
    }

    public var description: String { path }

    /// kube-proxy's label selector: Services (and their slices) not handed to another proxy and not headless;
    /// with a proxy name, only those handed to it.
    public static func proxySelector(serviceProxyName: String?) -> String {
        if let serviceProxyName { return "service.kubernetes.io/service-proxy-name=\(serviceProxyName)" }
        return "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
    }

    /// What kube-proxy watches on node `nodeName`: Services, EndpointSlices, and its own Node.
    public static func proxyResources(nodeName: String, serviceProxyName: String? = nil) -> [WatchedResource] {
        let selector = proxySelector(serviceProxyName: serviceProxyName)
        return [
            WatchedResource(path: "/api/v1/services", labelSelector: selector),
            WatchedResource(path: "/apis/discovery.k8s.io/v1/endpointslices", labelSelector: selector),
            WatchedResource(path: "/api/v1/nodes", fieldSelector: "metadata.name=\(nodeName)"),
        ]
    }
}

/// What the API source has done, for metrics: counters safe to read from any thread.
public final class KubeSourceCounters: Sendable {
    /// Complete lists (the first of each resource, and every relist).
    public let lists = Atomic<Int>(0)
    /// Relists because the server said 410 Gone (history compacted).
    public let relists = Atomic<Int>(0)
    /// Watches opened.
    public let watches = Atomic<Int>(0)
    /// Failed requests (each retried after a back-off).
    public let failures = Atomic<Int>(0)
    /// Objects the decoders refused (their last good version stayed).
    public let rejectedObjects = Atomic<Int>(0)

    public init() {}

    /// As `(name, value)` pairs, the shape the data planes report theirs in.
    public var statistics: [(String, String)] {
        [
            ("api_lists", lists.load(ordering: .relaxed)), ("api_relists", relists.load(ordering: .relaxed)),
            ("api_watches", watches.load(ordering: .relaxed)), ("api_request_failures", failures.load(ordering: .relaxed)),
            ("api_rejected_objects", rejectedObjects.load(ordering: .relaxed)),
        ].map { ($0.0, String($0.1)) }
    }
}

/// Retry delays: exponential with full jitter, as client-go's reflector backs off (0.8 s doubling to 30 s).
public struct Backoff: Sendable {
    public var initial: Duration
    public var maximum: Duration
    private var failures = 0

    public init(initial: Duration = .milliseconds(800), maximum: Duration = .seconds(30)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay before the next attempt; at least `floor` (a server's `Retry-After`).
    public mutating func next(atLeast floor: Duration? = nil) -> Duration {
        let ceiling = min(maximum, initial * (1 << min(failures, 20)))
        failures += 1
        let jittered = ceiling / 2 + ceiling * Double.random(in: 0..<0.5)
        return max(jittered, floor ?? .zero)
    }

    public mutating func reset() { failures = 0 }
}

/// Lists and then watches one resource, keeping the objects it has delivered so that a relist (after a
/// 410, or a restart of the watch) emits only what really changed.
struct Reflector {
    enum Output {
        case changes([ObjectChange])
        case problems([ManifestError])
        /// The first complete list is in.
        case listed
        /// A failure worth a log line; the reflector keeps trying.
        case retrying(KubeAPIError, after: Duration)
    }

    let client: KubeAPIClient
    let resource: WatchedResource
    let pageSize: Int
    let retry: Backoff
    let counters: KubeSourceCounters
    let emit: @Sendable (Output) -> Void
    /// The objects in force from this resource.
    private(set) var known: [ObjectKey: KubeObject] = [:]
    private(set) var resourceVersion = ""
    private var listedOnce = false

    init(
        client: KubeAPIClient, resource: WatchedResource, pageSize: Int = 500, retry: Backoff = Backoff(),
        counters: KubeSourceCounters = KubeSourceCounters(), emit: @escaping @Sendable (Output) -> Void
    ) {
        self.counters = counters
        self.client = client
        self.resource = resource
        self.pageSize = pageSize
        self.retry = retry
        self.emit = emit
    }

    /// Lists, then watches, until cancelled.
    mutating func run() async {
        var backoff = retry
        var needsList = true
        while !Task.isCancelled {
            do throws(KubeAPIError) {
                if needsList {
                    let listed = try await list()
                    counters.lists.add(1, ordering: .relaxed)
                    counters.rejectedObjects.add(listed.errors.count, ordering: .relaxed)
                    apply(listed)
                    needsList = false
                    backoff.reset()
                    if !listedOnce {
                        listedOnce = true
                        emit(.listed)
                    }
                }
                let started = ContinuousClock.now
                counters.watches.add(1, ordering: .relaxed)
                needsList = try await watchOnce(resetting: &backoff)
                if needsList { counters.relists.add(1, ordering: .relaxed) }
                // A watch the server ends at once, again and again, must not become a busy loop.
                if !needsList, ContinuousClock.now - started < .seconds(1) { try? await Task.sleep(for: backoff.next()) }
            } catch {
                if Task.isCancelled { return }
                if error.isGone {
                    counters.relists.add(1, ordering: .relaxed)
                    needsList = true
                    continue
                }
                counters.failures.add(1, ordering: .relaxed)
                let delay = backoff.next(atLeast: error.retryAfter)
                emit(.retrying(error, after: delay))
                try? await Task.sleep(for: delay)
            }
        }
    }

    /// Every page of the collection. A 410 on a continue token starts the list over.
    func list(keepingWire: Bool = false) async throws(KubeAPIError) -> APIListPage {
        var all = APIListPage()
        var token: String?
        var restarts = 0
        while true {
            var query = [("limit", String(pageSize))]
            if let token { query.append(("continue", token)) }
            let request = resource.request(query)
            let body: ByteBuffer
            do {
                body = try await client.get(request)
            } catch where error.isGone && token != nil && restarts < 3 {
                // The continue token expired (the server compacted its history): list from the start.
                restarts += 1
                token = nil
                all = APIListPage()
                continue
            }
            let page: APIListPage
            do {
                page = try body.withUnsafeReadableBytes { bytes throws(APIDecodingError) in
                    try APIResponseDecoder.listPage(bytes, source: "api:\(resource.path)", keepingWire: keepingWire)
                }
            } catch {
                throw .decoding(server: client.access.server, request: "GET \(request)", problem: error.message)
            }
            all.objects += page.objects
            all.errors += page.errors
            all.rejectedKeys.formUnion(page.rejectedKeys)
            all.resourceVersion = page.resourceVersion
            token = page.continueToken
            if token == nil { return all }
        }
    }

    /// Emits the differences between what is known and a complete list, and takes the list as known.
    mutating func apply(_ list: APIListPage) {
        var next: [ObjectKey: KubeObject] = [:]
        next.reserveCapacity(list.objects.count)
        var changes: [ObjectChange] = []
        for entry in list.objects {
            next[entry.key] = entry.object
            if known[entry.key] != entry.object { changes.append(.upsert(entry.object)) }
        }
        // A listed object that no longer decodes keeps its last good version.
        for key in list.rejectedKeys where next[key] == nil {
            if let kept = known[key] { next[key] = kept }
        }
        for key in known.keys where next[key] == nil { changes.append(.delete(key)) }
        known = next
        resourceVersion = list.resourceVersion
        if !list.errors.isEmpty { emit(.problems(list.errors)) }
        if !changes.isEmpty { emit(.changes(changes)) }
    }

    /// One watch from `resourceVersion`; returns whether a relist is needed (410).
    mutating func watchOnce(resetting backoff: inout Backoff) async throws(KubeAPIError) -> Bool {
        // Randomized as client-go does, so that watches of many nodes do not all end together.
        let seconds = Int(client.timeouts.watch.components.seconds)
        let timeout = Duration.seconds(Int.random(in: seconds...max(seconds, seconds * 2)))
        let request = resource.request([
            ("watch", "1"), ("resourceVersion", resourceVersion), ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", String(timeout.components.seconds)),
        ])
        var gone = false
        var batch: [ObjectChange] = []
        var problems: [ManifestError] = []
        let source = "api:\(resource.path)"
        let server = client.access.server
        var state = (known: known, resourceVersion: resourceVersion)
        defer {
            known = state.known
            resourceVersion = state.resourceVersion
        }
        let emit = self.emit
        try await client.watch(request, serverTimeout: timeout) { line throws(KubeAPIError) in
            let event: APIWatchEvent
            do throws(APIDecodingError) {
                event = try APIResponseDecoder.watchEvent(line, source: source)
            } catch {
                throw .decoding(server: server, request: "GET \(request)", problem: error.message)
            }
            switch event {
            case .upsert(.success(let object), _, let version):
                if state.known[object.key] != object.object {
                    state.known[object.key] = object.object
                    batch.append(.upsert(object.object))
                }
                if let version { state.resourceVersion = version }
            case .upsert(.failure(let error), _, let version):
                // The object's last good version stays in force.
                problems.append(error)
                counters.rejectedObjects.add(1, ordering: .relaxed)
                if let version { state.resourceVersion = version }
            case .delete(let key, let version):
                if state.known.removeValue(forKey: key) != nil { batch.append(.delete(key)) }
                if let version { state.resourceVersion = version }
            case .bookmark(let version):
                if !version.isEmpty { state.resourceVersion = version }
            case .status(let code, let reason, let message):
                if code == 410 {
                    gone = true
                    throw .status(server: server, request: "GET \(request)", code: 410, reason: reason, message: message, retryAfter: nil)
                }
                throw .status(server: server, request: "GET \(request)", code: code, reason: reason, message: message, retryAfter: nil)
            case .ignored:
                break
            }
            // One event, one batch: the tracker coalesces, and the daemon's runner rate-limits syncs.
            if !problems.isEmpty {
                emit(.problems(problems))
                problems.removeAll()
            }
            if !batch.isEmpty {
                emit(.changes(batch))
                batch.removeAll()
            }
            backoff.reset()
        }
        return gone
    }
}

/// Services, EndpointSlices and this node's Node from a Kubernetes API server: listed (paginated),
/// then watched, as kube-proxy's informers do. `initialSyncDone` comes once all three are listed.
public struct KubernetesSource: ObjectSource {
    public let client: KubeAPIClient
    public let resources: [WatchedResource]
    /// Objects per list page (`limit`), 500 as client-go's informers.
    public let pageSize: Int
    /// Delays between retries after a failure.
    public let retry: Backoff
    /// What the reflectors have done, for metrics.
    public let counters = KubeSourceCounters()
    public let logger: Logger

    public init(
        client: KubeAPIClient, resources: [WatchedResource], pageSize: Int = 500, retry: Backoff = Backoff(),
        logger: Logger = Logger(label: "ferry.kubernetes")
    ) {
        self.client = client
        self.resources = resources
        self.pageSize = pageSize
        self.retry = retry
        self.logger = logger
    }

    public var name: String { "kubernetes:\(client.access.server)" }

    public func events() -> AsyncStream<SourceEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: SourceEvent.self)
        let name = self.name
        let logger = self.logger
        let pending = Unlisted(resources.map(\.path))
        let task = Task {
            await withTaskGroup(of: Void.self) { group in
                for resource in resources {
                    group.addTask {
                        var reflector = Reflector(
                            client: client, resource: resource, pageSize: pageSize, retry: retry, counters: counters
                        ) { output in
                            switch output {
                            case .changes(let changes): continuation.yield(.changes(changes))
                            case .problems(let problems): continuation.yield(.problems(problems))
                            case .listed:
                                logger.info("listed", metadata: ["resource": "\(resource.path)"])
                                if pending.listed(resource.path) { continuation.yield(.initialSyncDone(source: name)) }
                            case .retrying(let error, let delay):
                                logger.warning("\(error)", metadata: ["resource": "\(resource.path)", "retry-in": "\(delay)"])
                            }
                        }
                        await reflector.run()
                    }
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Lists every resource once (no watch), for one-shot commands: the objects, and the objects
    /// that did not decode.
    public func listOnce(keepingWire: Bool = false) async throws(KubeAPIError) -> (objects: [ManifestObject], problems: [ManifestError]) {
        var objects: [ManifestObject] = []
        var problems: [ManifestError] = []
        for resource in resources {
            let reflector = Reflector(client: client, resource: resource, pageSize: pageSize) { _ in }
            let page = try await reflector.list(keepingWire: keepingWire)
            objects += page.objects
            problems += page.errors
        }
        return (objects, problems)
    }
}

/// The resources not listed yet: the source's initial sync is done when none is left.
private final class Unlisted: Sendable {
    private let paths: Mutex<Set<String>>

    init(_ paths: [String]) { self.paths = Mutex(Set(paths)) }

    /// Marks `path` listed; true when it was the last one (exactly once).
    func listed(_ path: String) -> Bool {
        paths.withLock { left in left.remove(path) != nil && left.isEmpty }
    }
}
