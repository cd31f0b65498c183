/// The kinds of object the fake API server serves, one collection each.
public enum FakeResource: String, Sendable, CaseIterable {
    /// Services: `/api/v1/services`, namespaced.
    case services
    /// EndpointSlices: `/apis/discovery.k8s.io/v1/endpointslices`, namespaced.
    case endpointSlices
    /// Nodes: `/api/v1/nodes`, cluster-scoped.
    case nodes

    /// The collection's path across all namespaces, as a client lists and watches it.
    public var path: String { "\(groupVersionPath)/\(plural)" }

    /// The kind of one object: `Service`, `EndpointSlice`, `Node`.
    public var kind: String {
        switch self {
        case .services: "Service"
        case .endpointSlices: "EndpointSlice"
        case .nodes: "Node"
        }
    }

    /// The kind of a list: `ServiceList`, `EndpointSliceList`, `NodeList`.
    public var listKind: String { kind + "List" }

    /// The API version written in lists and watch events: `v1` or `discovery.k8s.io/v1`.
    public var apiVersion: String {
        switch self {
        case .services, .nodes: "v1"
        case .endpointSlices: "discovery.k8s.io/v1"
        }
    }

    /// Whether objects of this kind live in a namespace (Nodes do not).
    public var isNamespaced: Bool { self != .nodes }

    /// The API group and version's path prefix: `/api/v1` or `/apis/discovery.k8s.io/v1`.
    var groupVersionPath: String {
        switch self {
        case .services, .nodes: "/api/v1"
        case .endpointSlices: "/apis/discovery.k8s.io/v1"
        }
    }

    /// The resource's name in paths: `services`, `endpointslices`, `nodes`.
    var plural: String {
        switch self {
        case .services: "services"
        case .endpointSlices: "endpointslices"
        case .nodes: "nodes"
        }
    }

    /// The position of this resource's store in the server's state.
    var storeIndex: Int {
        switch self {
        case .services: 0
        case .endpointSlices: 1
        case .nodes: 2
        }
    }

    /// The resource (and namespace, for `/…/namespaces/NS/plural`) that a request path names, or nil.
    static func route(_ path: String) -> (resource: FakeResource, namespace: String?)? {
        for resource in allCases {
            if path == resource.path { return (resource, nil) }
            guard resource.isNamespaced else { continue }
            let prefix = resource.groupVersionPath + "/namespaces/"
            guard path.hasPrefix(prefix) else { continue }
            let parts = path.dropFirst(prefix.count).split(separator: "/", omittingEmptySubsequences: false)
            if parts.count == 2, !parts[0].isEmpty, parts[1] == resource.plural {
                return (resource, String(parts[0]))
            }
        }
        return nil
    }
}

/// How the server cuts a watch's stream of event lines into HTTP chunks.
public enum FakeChunking: Sendable {
    /// One chunk per event line.
    case whole
    /// Each event line split across 2 or 3 chunks at random byte offsets, each flushed on its own.
    case split
    /// Event lines pending together written as one chunk.
    case coalesced
}
