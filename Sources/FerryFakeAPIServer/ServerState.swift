import NIOCore
import NIOPosix

/// One change in a store's history, as a watch replays it.
struct StoredEvent: Sendable {
    /// What happened to the object.
    enum Kind: Sendable { case added, modified, deleted }

    var kind: Kind
    /// The resource version the change was made at.
    var resourceVersion: Int
    /// The object after the change; nil for a deletion.
    var object: StoredObject?
    /// The object before the change; nil for a creation.
    var previous: StoredObject?
}

/// One resource's objects, its recent history and the watches on it.
struct ResourceStore {
    /// The objects by key (`namespace/name` or `name`).
    var objects: [String: StoredObject] = [:]
    /// The objects ordered by key, kept until the next change (lists and snapshots share it).
    var sortedCache: [StoredObject]?
    /// The recent changes, oldest first.
    var history: [StoredEvent] = []
    /// Every change with a resource version above this one is in `history`.
    var historyFloor = 0
    /// The watches on this resource, by id.
    var watches: [Int: WatchStream] = [:]

    /// The objects ordered by key (namespace, then name), as etcd lists them.
    mutating func sortedObjects() -> [StoredObject] {
        if let sortedCache { return sortedCache }
        let sorted = objects.values.sorted { $0.key < $1.key }
        sortedCache = sorted
        return sorted
    }

    /// The changes made after `resourceVersion`, oldest first.
    func events(after resourceVersion: Int) -> [StoredEvent] {
        var low = 0
        var high = history.count
        while low < high {
            let middle = (low + high) / 2
            if history[middle].resourceVersion <= resourceVersion { low = middle + 1 } else { high = middle }
        }
        return Array(history[low...])
    }
}

/// A `failNext` rule: how many more requests it answers, and with what.
struct FaultRule {
    var remaining: Int
    var status: Int
    var retryAfterSeconds: Int?
    var pathPrefix: String?
}

/// A `stallNext` rule: how many more requests it leaves unanswered.
struct StallRule {
    var remaining: Int
    var pathPrefix: String?
}

/// Which list snapshot a continue token goes on in.
struct SnapshotKey: Hashable {
    var resource: FakeResource
    var resourceVersion: Int
}

/// Everything the server knows, behind one lock.
struct ServerState {
    /// The changes kept per resource for watches that start from a resource version.
    static let historyLimit = 100_000
    /// How many list snapshots stay available to continue tokens.
    static let snapshotLimit = 8

    var token: String?
    var resourceVersion = 0
    var stores = FakeResource.allCases.map { _ in ResourceStore() }
    var compactedResourceVersion = 0
    var compactionGeneration = 0
    var compactionAnswersWithHTTPStatus = false
    var chunking = FakeChunking.split
    var faults: [FaultRule] = []
    var stalls: [StallRule] = []
    var requests: [String] = []
    var connectionsAccepted = 0
    var snapshots: [SnapshotKey: [StoredObject]] = [:]
    var snapshotOrder: [SnapshotKey] = []
    var nextWatchID = 0
    var group: MultiThreadedEventLoopGroup?
    var serverChannel: Channel?
    var port = 0
    var host = "127.0.0.1"

    /// Keeps `event` in the resource's history and hands it to the resource's watches, in order.
    mutating func record(_ event: StoredEvent, in resource: FakeResource) {
        let index = resource.storeIndex
        stores[index].history.append(event)
        let count = stores[index].history.count
        if count > Self.historyLimit + Self.historyLimit / 4 {
            let dropped = count - Self.historyLimit
            stores[index].historyFloor = stores[index].history[dropped - 1].resourceVersion
            stores[index].history.removeFirst(dropped)
        }
        let chunking = chunking
        for watch in stores[index].watches.values {
            watch.channel.eventLoop.execute { watch.deliver(event, chunking: chunking) }
        }
    }

    /// Keeps a list snapshot for the continue tokens issued on it, forgetting the oldest beyond the limit.
    mutating func keepSnapshot(_ objects: [StoredObject], for key: SnapshotKey) {
        if snapshots.updateValue(objects, forKey: key) == nil { snapshotOrder.append(key) }
        while snapshotOrder.count > Self.snapshotLimit {
            snapshots[snapshotOrder.removeFirst()] = nil
        }
    }

    /// Removes every watch from the stores and returns them.
    mutating func takeAllWatches() -> [WatchStream] {
        var watches: [WatchStream] = []
        for index in stores.indices {
            watches += stores[index].watches.values
            stores[index].watches.removeAll()
        }
        return watches
    }
}
