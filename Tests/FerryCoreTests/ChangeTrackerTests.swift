import Testing
@testable import FerryCore

@Suite("Change tracking")
struct ChangeTrackerTests {
    static let documents = objects("""
        apiVersion: v1
        kind: Service
        metadata: {name: a}
        spec: {clusterIP: 10.96.0.1, selector: {app: a}, ports: [{port: 80}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: b}
        spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: b-1, labels: {kubernetes.io/service-name: b}}
        addressType: IPv4
        endpoints: [{addresses: [10.0.0.2], zone: zone-a, hints: {forZones: [{name: zone-b}]}}]
        ports: [{port: 8080}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: a-1, labels: {app: a}}
        spec: {nodeName: node-1}
        status: {podIP: 10.0.0.1, conditions: [{type: Ready, status: "True"}]}
        """)

    func loaded() -> ChangeTracker {
        var tracker = ChangeTracker(node: NodeContext(name: "node-1"))
        for object in Self.documents { tracker.apply(.upsert(object)) }
        _ = tracker.sync()
        return tracker
    }

    @Test func firstSyncBuildsEverything() {
        var tracker = ChangeTracker(node: NodeContext(name: "node-1"))
        for object in Self.documents { tracker.apply(.upsert(object)) }
        let result = tracker.sync()
        #expect(result.tables.count == 2)
        #expect(result.changedPorts.count == 2)
        #expect(result.serviceChanges == 2)
        #expect(result.endpointChanges == 2)
        #expect(result.tables.sorted.map { $0.endpoints.map(\.description) } == [["10.0.0.1:80"], ["10.0.0.2:8080"]])
    }

    @Test func triggerTimesOfEndpointChangesComeOutOfTheNextSync() throws {
        var tracker = loaded()
        let changed = objects("""
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: b-1
              labels: {kubernetes.io/service-name: b}
              annotations: {endpoints.kubernetes.io/last-change-trigger-time: "2026-12-02T10:00:00.250Z"}
            addressType: IPv4
            endpoints: [{addresses: [10.0.0.3]}]
            ports: [{port: 8080}]
            """)
        tracker.apply(.upsert(try #require(changed.first)))
        let result = tracker.sync()
        #expect(result.triggerTimes.map(\.timeIntervalSince1970) == [1_796_205_600.25])
        #expect(tracker.sync().triggerTimes.isEmpty)
    }

    @Test func identicalUpdatesAndUndoneChangesAreDropped() {
        var tracker = loaded()
        let identical = tracker.apply(.upsert(Self.documents[0]))
        let missing = tracker.apply(.delete(ObjectKey(kind: .service, namespace: "default", name: "nope")))
        let deleted = tracker.apply(.delete(Self.documents[1].key))
        let restored = tracker.apply(.upsert(Self.documents[1]))
        #expect(!identical && !missing && deleted && restored)
        #expect(!tracker.hasPendingChanges)
        let result = tracker.sync()
        #expect(result.changedPorts.isEmpty)
        #expect(result.serviceChanges == 0)
    }

    @Test func aPodChangeTouchesOnlyTheServiceSelectingIt() throws {
        var tracker = loaded()
        guard case .pod(var pod) = Self.documents[3] else { Issue.record("no pod"); return }
        pod.ready = false
        tracker.apply(.upsert(.pod(pod)))
        let result = tracker.sync()
        #expect(result.changedPorts.map(\.description) == ["default/a/TCP"])
        #expect(result.endpointChanges == 1)
        let table = try #require(result.tables.sorted.first)
        #expect(table.endpoints.first?.ready == false)
        #expect(table.categories.cluster.isEmpty)
    }

    @Test func aSliceChangeTouchesOnlyItsService() {
        var tracker = loaded()
        guard case .endpointSlice(var slice) = Self.documents[2] else { Issue.record("no slice"); return }
        slice.endpoints.append(SliceEndpoint(addresses: [ip("10.0.0.3")]))
        tracker.apply(.upsert(.endpointSlice(slice)))
        let result = tracker.sync()
        #expect(result.changedPorts.map(\.description) == ["default/b/TCP"])
        #expect(result.tables.sorted[1].endpoints.count == 2)
    }

    @Test func deletingAServiceRemovesItsPorts() {
        var tracker = loaded()
        tracker.apply(.delete(Self.documents[0].key))
        let result = tracker.sync()
        #expect(result.changedPorts.map(\.description) == ["default/a/TCP"])
        #expect(result.tables.count == 1)
    }

    @Test func theNodeObjectSuppliesTheZoneForTopology() {
        var tracker = loaded()
        #expect(tracker.tables.sorted[1].categories.cluster.count == 1)
        let node = objects("apiVersion: v1\nkind: Node\nmetadata: {name: node-1, labels: {topology.kubernetes.io/zone: zone-b}}")[0]
        tracker.apply(.upsert(node))
        let result = tracker.sync()
        #expect(tracker.node.zone == "zone-b")
        #expect(result.tables.sorted[1].categories.topologyMode == .preferSameZone)
    }

    @Test func aSliceArrivingBeforeItsServiceIsUsedWhenTheServiceComes() {
        var tracker = ChangeTracker(node: NodeContext(name: "node-1"))
        tracker.apply(.upsert(Self.documents[2]))
        #expect(tracker.sync().tables.count == 0)
        tracker.apply(.upsert(Self.documents[1]))
        let result = tracker.sync()
        #expect(result.tables.sorted.first?.endpoints.map(\.description) == ["10.0.0.2:8080"])
    }
}

@Suite("Table changes, described")
struct TableChangesTests {
    @Test func addedRemovedAndEndpointDifferences() {
        var tracker = ChangeTracker(node: NodeContext(name: "node-1"))
        for object in ChangeTrackerTests.documents { tracker.apply(.upsert(object)) }
        let first = tracker.sync()
        #expect(TableChanges.describe(first.changedPorts, before: BackendTables(), after: first.tables)
            == "default/a/TCP added (1 endpoint); default/b/TCP added (1 endpoint)")
        let moved = objects("""
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: b-1, labels: {kubernetes.io/service-name: b}}
            addressType: IPv4
            endpoints: [{addresses: [10.0.0.3]}, {addresses: [10.0.0.4]}]
            ports: [{port: 8080}]
            """)
        tracker.apply(.upsert(moved[0]))
        tracker.apply(.delete(ChangeTrackerTests.documents[0].key))
        let second = tracker.sync()
        #expect(TableChanges.describe(second.changedPorts, before: first.tables, after: second.tables)
            == "default/a/TCP removed; default/b/TCP +10.0.0.3:8080 +10.0.0.4:8080 -10.0.0.2:8080")
        #expect(TableChanges.describe(second.changedPorts, before: first.tables, after: second.tables, limit: 1)
            == "default/a/TCP removed; and 1 more")
    }
}
