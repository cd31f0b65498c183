import Testing
@testable import FerryCore

/// kube-proxy's `CategorizeEndpoints`, case by case. This node is node-1 in zone-a; backends are
/// 10.0.0.N:80 and local when on node-1.
@Suite("Endpoint selection")
struct EndpointSelectionTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var policy: SelectionPolicy
        var endpoints: [Backend]
        var cluster: [Int]
        var local: [Int]
        var all: [Int]
        var hasAny: Bool
        var topology: TopologyMode = .none
        var testDescription: String { name }
    }

    static let clusterPolicy = SelectionPolicy()
    static let internalLocal = SelectionPolicy(internalLocal: true)
    static let externalLocal = SelectionPolicy(externalLocal: true, externallyAccessible: true)
    static let bothLocal = SelectionPolicy(internalLocal: true, externalLocal: true, externallyAccessible: true)

    static let cases: [Case] = [
        Case(name: "no endpoints", policy: clusterPolicy, endpoints: [], cluster: [], local: [], all: [], hasAny: false),
        Case(name: "ready endpoints only", policy: clusterPolicy,
             endpoints: [backend(1, node: "node-1"), backend(2), backend(3, ready: false)],
             cluster: [1, 2], local: [], all: [1, 2], hasAny: true),
        Case(name: "terminating endpoints are ignored while any is ready", policy: clusterPolicy,
             endpoints: [backend(1), backend(2, ready: false, serving: true, terminating: true)],
             cluster: [1], local: [], all: [1], hasAny: true),
        Case(name: "no ready endpoint: fall back to serving-terminating", policy: clusterPolicy,
             endpoints: [backend(1, ready: false, serving: true, terminating: true), backend(2, ready: false, serving: false, terminating: true),
                         backend(3, ready: false)],
             cluster: [1], local: [], all: [1], hasAny: true),
        Case(name: "nothing ready or serving", policy: clusterPolicy,
             endpoints: [backend(1, ready: false), backend(2, ready: false, serving: false, terminating: true)],
             cluster: [], local: [], all: [], hasAny: false),
        Case(name: "internal Local: only this node's ready endpoints", policy: internalLocal,
             endpoints: [backend(1, node: "node-1"), backend(2, node: "node-1"), backend(3)],
             cluster: [], local: [1, 2], all: [1, 2], hasAny: true),
        Case(name: "internal Local with no local endpoint: none reachable but some exist", policy: internalLocal,
             endpoints: [backend(2), backend(3)], cluster: [], local: [], all: [], hasAny: true),
        Case(name: "internal Local: local serving-terminating fallback even when remote ones are ready", policy: internalLocal,
             endpoints: [backend(1, node: "node-1", ready: false, serving: true, terminating: true), backend(2)],
             cluster: [], local: [1], all: [1], hasAny: true),
        Case(name: "external Local: Cluster set for internal traffic, Local set for external", policy: externalLocal,
             endpoints: [backend(1, node: "node-1"), backend(2), backend(3)],
             cluster: [1, 2, 3], local: [1], all: [1, 2, 3], hasAny: true),
        Case(name: "external Local with local terminating and remote ready: union", policy: externalLocal,
             endpoints: [backend(1, node: "node-1", ready: false, serving: true, terminating: true), backend(2)],
             cluster: [2], local: [1], all: [1, 2], hasAny: true),
        Case(name: "both Local", policy: bothLocal,
             endpoints: [backend(1, node: "node-1"), backend(2)],
             cluster: [1, 2], local: [1], all: [1, 2], hasAny: true),
        Case(name: "external Local on a service that is not externally accessible is Cluster",
             policy: SelectionPolicy(externalLocal: true, externallyAccessible: false),
             endpoints: [backend(1, node: "node-1"), backend(2)], cluster: [1, 2], local: [], all: [1, 2], hasAny: true),
        Case(name: "zone hints: only endpoints hinted for this zone", policy: clusterPolicy,
             endpoints: [backend(1, node: "node-1", zones: ["zone-a"]), backend(2, zones: ["zone-a"]), backend(3, zones: ["zone-b"])],
             cluster: [1, 2], local: [], all: [1, 2], hasAny: true, topology: .preferSameZone),
        Case(name: "zone hints ignored when one ready endpoint has none", policy: clusterPolicy,
             endpoints: [backend(1, zones: ["zone-a"]), backend(2), backend(3, zones: ["zone-b"])],
             cluster: [1, 2, 3], local: [], all: [1, 2, 3], hasAny: true),
        Case(name: "zone hints ignored when none is for this zone", policy: clusterPolicy,
             endpoints: [backend(2, zones: ["zone-b"]), backend(3, zones: ["zone-c"])],
             cluster: [2, 3], local: [], all: [2, 3], hasAny: true),
        Case(name: "hints of not-ready endpoints do not matter", policy: clusterPolicy,
             endpoints: [backend(1, zones: ["zone-a"]), backend(2, ready: false), backend(3, zones: ["zone-b"])],
             cluster: [1], local: [], all: [1], hasAny: true, topology: .preferSameZone),
        Case(name: "node hints win over zone hints", policy: clusterPolicy,
             endpoints: [backend(1, node: "node-1", zones: ["zone-a"], nodes: ["node-1"]), backend(2, zones: ["zone-a"], nodes: ["node-2"])],
             cluster: [1], local: [], all: [1], hasAny: true, topology: .preferSameNode),
        Case(name: "topology with external Local: union of zone set and local set", policy: externalLocal,
             endpoints: [backend(1, node: "node-1", zones: ["zone-b"]), backend(2, zones: ["zone-a"])],
             cluster: [2], local: [1], all: [1, 2], hasAny: true, topology: .preferSameZone),
    ]

    @Test(arguments: cases)
    func categorize(_ scenario: Case) {
        let result = EndpointSelection.categorize(scenario.endpoints, policy: scenario.policy, node: thisNode)
        let number = { (backends: [Backend]) in backends.map { Int($0.ip.bytes[3]) }.sorted() }
        #expect(number(result.cluster) == scenario.cluster, "cluster")
        #expect(number(result.local) == scenario.local, "local")
        #expect(number(result.allReachable) == scenario.all, "all reachable")
        #expect(result.hasAnyEndpoints == scenario.hasAny, "hasAnyEndpoints")
        #expect(result.topologyMode == scenario.topology, "topology")
    }

    @Test func exclusionReasons() {
        let endpoints = [
            backend(1, node: "node-1", zones: ["zone-a"]), backend(2, zones: ["zone-b"]),
            backend(3, ready: false, zones: ["zone-a"]), backend(4, ready: false, serving: true, terminating: true),
            backend(5, ready: false, serving: false, terminating: true),
        ]
        let categories = EndpointSelection.categorize(endpoints, policy: Self.externalLocal, node: thisNode)
        let cluster = endpoints.map { EndpointSelection.exclusionReason($0, local: false, categories: categories, node: thisNode) }
        #expect(cluster == [
            nil, "topology hints send it to zones zone-b, not this node's zone zone-a", "not ready",
            "terminating: used only when no endpoint is ready", "terminating and no longer serving",
        ])
        let local = endpoints.map { EndpointSelection.exclusionReason($0, local: true, categories: categories, node: thisNode) }
        #expect(local[0] == nil)
        #expect(local[1] == "on node node-2, not this node node-1 (traffic policy Local)")
    }
}
