/// Every object Ferry currently holds, indexed the way the table builder looks them up.
/// A plain value: the change tracker owns one and mutates it as events arrive.
public struct ClusterState: Sendable, Hashable {
    public var services: [ServiceName: Service] = [:]
    /// EndpointSlices by owning Service, then by slice name.
    public var slices: [ServiceName: [String: EndpointSlice]] = [:]
    public var endpoints: [ServiceName: Endpoints] = [:]
    /// Pods by namespace, then by name.
    public var pods: [String: [String: Pod]] = [:]
    public var nodes: [String: Node] = [:]
    /// Which Service each slice (by namespace and name) belongs to, to find a slice by its key.
    private var sliceOwners: [ServiceName: ServiceName] = [:]

    public init() {}

    /// Builds a state holding `objects` (later duplicates replace earlier ones).
    public init(_ objects: [KubeObject]) {
        for object in objects { upsert(object) }
    }

    /// The object stored under `key`, if any.
    public func object(for key: ObjectKey) -> KubeObject? {
        switch key.kind {
        case .service:
            return services[ServiceName(namespace: key.namespace, name: key.name)].map(KubeObject.service)
        case .endpoints:
            return endpoints[ServiceName(namespace: key.namespace, name: key.name)].map(KubeObject.endpoints)
        case .endpointSlice:
            let sliceName = ServiceName(namespace: key.namespace, name: key.name)
            guard let owner = sliceOwners[sliceName] else { return nil }
            return slices[owner]?[key.name].map(KubeObject.endpointSlice)
        case .pod:
            return pods[key.namespace]?[key.name].map(KubeObject.pod)
        case .node:
            return nodes[key.name].map(KubeObject.node)
        }
    }

    /// Stores `object`, replacing any earlier version; returns the previous version.
    @discardableResult
    public mutating func upsert(_ object: KubeObject) -> KubeObject? {
        let previous = remove(object.key)
        switch object {
        case .service(let service): services[service.name] = service
        case .endpointSlice(let slice):
            slices[slice.service, default: [:]][slice.meta.name] = slice
            sliceOwners[ServiceName(namespace: slice.meta.namespace, name: slice.meta.name)] = slice.service
        case .endpoints(let value): endpoints[value.service] = value
        case .pod(let pod): pods[pod.meta.namespace, default: [:]][pod.meta.name] = pod
        case .node(let node): nodes[node.meta.name] = node
        }
        return previous
    }

    /// Removes the object stored under `key`; returns it.
    @discardableResult
    public mutating func remove(_ key: ObjectKey) -> KubeObject? {
        let name = ServiceName(namespace: key.namespace, name: key.name)
        switch key.kind {
        case .service:
            return services.removeValue(forKey: name).map(KubeObject.service)
        case .endpoints:
            return endpoints.removeValue(forKey: name).map(KubeObject.endpoints)
        case .pod:
            return pods[key.namespace]?.removeValue(forKey: key.name).map(KubeObject.pod)
        case .node:
            return nodes.removeValue(forKey: key.name).map(KubeObject.node)
        case .endpointSlice:
            guard case .endpointSlice(let slice)? = object(for: key) else { return nil }
            slices[slice.service]?.removeValue(forKey: key.name)
            sliceOwners.removeValue(forKey: ServiceName(namespace: key.namespace, name: key.name))
            if slices[slice.service]?.isEmpty == true { slices.removeValue(forKey: slice.service) }
            return .endpointSlice(slice)
        }
    }
}
