import Foundation

/// A change to one object, as a source reports it.
public enum ObjectChange: Sendable, Hashable {
    /// Added or modified: the object's current version.
    case upsert(KubeObject)
    /// Deleted.
    case delete(ObjectKey)

    public var key: ObjectKey {
        switch self {
        case .upsert(let object): return object.key
        case .delete(let key): return key
        }
    }
}

/// What one sync produced.
public struct SyncResult: Sendable {
    /// The tables after the sync: the complete, current view.
    public var tables: BackendTables
    /// Service ports added, removed or changed since the previous sync.
    public var changedPorts: Set<ServicePortName>
    /// Services whose objects changed (after dropping changes that undid themselves).
    public var serviceChanges: Int
    /// EndpointSlices, Endpoints and Pods that changed.
    public var endpointChanges: Int
    /// When the control plane changed the endpoints this sync applies (the EndpointSlices' and Endpoints'
    /// `endpoints.kubernetes.io/last-change-trigger-time`): once the data plane has them, now minus each
    /// is kube-proxy's network programming latency, the Kubernetes SLI.
    public var triggerTimes: [Date] = []
}

/// Accumulates object changes between syncs and turns them into backend tables.
///
/// Changes are kept as (previous, current) pairs per object, as kube-proxy's change trackers do: a second
/// change to the same object keeps the first `previous`, and a change that ends where it started is
/// dropped. A sync rebuilds only the entries of services touched by the pending changes.
public struct ChangeTracker: Sendable {
    public private(set) var state = ClusterState()
    public private(set) var tables = BackendTables()
    public private(set) var node: NodeContext
    /// The node as configured, before a Node object in the state adds its zone and addresses.
    private let configuredNode: NodeContext
    private var pending: [ObjectKey: (previous: KubeObject?, current: KubeObject?)] = [:]
    private var needsFullRebuild = true
    /// Trigger times of the endpoint changes applied since the last sync.
    private var triggerTimes: [Date] = []

    /// The annotation the endpoints controllers set to when the change that produced an object happened.
    public static let triggerTimeAnnotation = "endpoints.kubernetes.io/last-change-trigger-time"

    /// An EndpointSlice's or Endpoints' trigger time, when it has a readable one.
    static func triggerTime(_ object: KubeObject) -> Date? {
        let text: String?
        switch object {
        case .endpointSlice(let slice): text = slice.meta.annotations[triggerTimeAnnotation]
        case .endpoints(let endpoints): text = endpoints.meta.annotations[triggerTimeAnnotation]
        default: return nil
        }
        guard let text else { return nil }
        return try? ManifestValidator.timestamp(text, "")
    }

    public init(node: NodeContext) {
        self.node = node
        self.configuredNode = node
    }

    /// There are changes a sync would apply.
    public var hasPendingChanges: Bool { !pending.isEmpty || needsFullRebuild }

    /// Changes waiting for the next sync: to Services, and to what their endpoints come from.
    public var pendingCounts: (services: Int, endpoints: Int) {
        let services = pending.keys.reduce(0) { $0 + ($1.kind == .service ? 1 : 0) }
        return (services, pending.count - services)
    }

    /// Records one change. Returns `false` when the change is a no-op (an identical update, or the
    /// deletion of an object that does not exist).
    @discardableResult
    public mutating func apply(_ change: ObjectChange) -> Bool {
        let key = change.key
        let previous: KubeObject?
        let current: KubeObject?
        switch change {
        case .upsert(let object):
            current = object
            previous = state.upsert(object)
        case .delete:
            current = nil
            previous = state.remove(key)
        }
        if previous == current { return false }
        if let time = current.flatMap(ChangeTracker.triggerTime) { triggerTimes.append(time) }
        if let earlier = pending[key] {
            if earlier.previous == current {
                pending.removeValue(forKey: key)
            } else {
                pending[key] = (earlier.previous, current)
            }
        } else {
            pending[key] = (previous, current)
        }
        return true
    }

    /// Applies the pending changes to the tables.
    public mutating func sync() -> SyncResult {
        var dirty: Set<ServiceName> = []
        var serviceChanges = 0
        var endpointChanges = 0
        var rebuildAll = needsFullRebuild
        for (key, change) in pending {
            switch key.kind {
            case .service:
                serviceChanges += 1
                dirty.insert(ServiceName(namespace: key.namespace, name: key.name))
            case .endpoints:
                endpointChanges += 1
                dirty.insert(ServiceName(namespace: key.namespace, name: key.name))
            case .endpointSlice:
                endpointChanges += 1
                for case .endpointSlice(let slice)? in [change.previous, change.current] { dirty.insert(slice.service) }
            case .pod:
                endpointChanges += 1
                if rebuildAll { continue }
                for case .pod(let pod)? in [change.previous, change.current] {
                    dirty.formUnion(servicesSelecting(pod))
                }
            case .node:
                rebuildAll = true
            }
        }
        pending.removeAll(keepingCapacity: true)
        needsFullRebuild = false
        let triggered = triggerTimes
        triggerTimes.removeAll()
        node = effectiveNode()

        var changed: Set<ServicePortName> = []
        if rebuildAll {
            dirty = Set(state.services.keys).union(tables.services)
        }
        for name in dirty {
            let entries = state.services[name].map { TableBuilder.entries(for: $0, in: state, node: node) } ?? []
            changed.formUnion(tables.replace(service: name, with: entries))
        }
        return SyncResult(
            tables: tables, changedPorts: changed, serviceChanges: serviceChanges, endpointChanges: endpointChanges, triggerTimes: triggered)
    }

    /// The configured node, completed by its Node object: zone from its labels, addresses when none were
    /// configured.
    private func effectiveNode() -> NodeContext {
        var result = configuredNode
        if let object = state.nodes[configuredNode.name] {
            if result.zone == nil { result.zone = object.zone }
            if result.addresses.isEmpty { result.addresses = object.addresses }
        }
        return result
    }

    private func servicesSelecting(_ pod: Pod) -> [ServiceName] {
        state.services.values.compactMap { service in
            guard service.meta.namespace == pod.meta.namespace, let selector = service.selector, !selector.isEmpty,
                selector.allSatisfy({ pod.meta.labels[$0.key] == $0.value })
            else { return nil }
            return service.name
        }
    }
}
