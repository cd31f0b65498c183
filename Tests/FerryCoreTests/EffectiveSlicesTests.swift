import Foundation
import Testing
@testable import FerryCore

@Suite("Where a Service's endpoints come from")
struct EffectiveSlicesTests {
    static let service = """
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          clusterIP: 10.96.0.1
          selector: {app: web}
          ports:
          - {name: http, port: 80, targetPort: http-alt}
          - {name: metrics, port: 9090, targetPort: 9090}
        """

    static func pod(_ name: String, ip: String?, ready: Bool = true, labels: String = "{app: web}", phase: String = "Running",
                    deleting: Bool = false, ports: String = "[{name: http-alt, containerPort: 8080}]", node: String = "node-1") -> String {
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: \(name), labels: \(labels)\(deleting ? ", deletionTimestamp: \"2026-11-29T10:00:00Z\"" : "")}
        spec: {nodeName: \(node), containers: [{name: c, ports: \(ports)}]}
        status:
          phase: \(phase)
        \(ip.map { "  podIP: \($0)" } ?? "")
          conditions: [{type: Ready, status: "\(ready ? "True" : "False")"}]
        """
    }

    func state(_ documents: [String]) -> ClusterState {
        ClusterState(objects(documents.joined(separator: "\n---\n")))
    }

    func slices(_ documents: [String]) -> [EndpointSlice] {
        let state = state(documents)
        return EffectiveSlices.slices(for: state.services.values.first!, in: state)
    }

    @Test func podsBecomeEndpointsAsTheControllerWould() {
        let result = slices([
            Self.service,
            Self.pod("a", ip: "10.244.0.1"),
            Self.pod("b", ip: "10.244.0.2", ready: false),
            Self.pod("c", ip: "10.244.0.3", deleting: true),
            Self.pod("d", ip: "10.244.0.4", phase: "Succeeded"),
            Self.pod("e", ip: nil),
            Self.pod("f", ip: "10.244.0.6", labels: "{app: other}"),
        ])
        #expect(result.count == 1)
        let slice = result[0]
        #expect(slice.origin == .pods)
        #expect(slice.ports == [SlicePort(name: "http", port: 8080), SlicePort(name: "metrics", port: 9090)])
        #expect(slice.endpoints.map { $0.addresses[0].description } == ["10.244.0.1", "10.244.0.2", "10.244.0.3"])
        #expect(slice.endpoints.map(\.conditions) == [
            EndpointConditions(ready: true, serving: true, terminating: false),
            EndpointConditions(ready: false, serving: false, terminating: false),
            EndpointConditions(ready: false, serving: true, terminating: true),
        ])
        #expect(slice.endpoints[0].targetRef == "Pod default/a")
        #expect(slice.endpoints[0].nodeName == "node-1")
    }

    @Test func namedTargetPortResolvedPerPod() {
        let result = slices([
            Self.service,
            Self.pod("a", ip: "10.244.0.1", ports: "[{name: http-alt, containerPort: 8080}]"),
            Self.pod("b", ip: "10.244.0.2", ports: "[{name: http-alt, containerPort: 8081}]"),
            Self.pod("c", ip: "10.244.0.3", ports: "[{name: other, containerPort: 8082}]"),
        ])
        let byPort = Dictionary(uniqueKeysWithValues: result.map { ($0.ports, $0.endpoints.map { $0.addresses[0].description }) })
        #expect(byPort[[SlicePort(name: "http", port: 8080), SlicePort(name: "metrics", port: 9090)]] == ["10.244.0.1"])
        #expect(byPort[[SlicePort(name: "http", port: 8081), SlicePort(name: "metrics", port: 9090)]] == ["10.244.0.2"])
        #expect(byPort[[SlicePort(name: "metrics", port: 9090)]] == ["10.244.0.3"])
    }

    @Test func publishNotReadyAddressesMakesEveryPodReady() {
        let service = Self.service.replacingOccurrences(of: "  selector:", with: "  publishNotReadyAddresses: true\n  selector:")
        let result = slices([service, Self.pod("b", ip: "10.244.0.2", ready: false)])
        #expect(result[0].endpoints[0].conditions == EndpointConditions(ready: true, serving: true, terminating: false))
    }

    @Test func nodeZoneComesFromTheNodeObject() {
        let node = "apiVersion: v1\nkind: Node\nmetadata: {name: node-1, labels: {topology.kubernetes.io/zone: zone-a}}"
        let result = slices([Self.service, Self.pod("a", ip: "10.244.0.1"), node])
        #expect(result[0].endpoints[0].zone == "zone-a")
    }

    @Test func endpointsAreMirroredReadyAndNotReady() {
        let endpoints = """
            apiVersion: v1
            kind: Endpoints
            metadata: {name: web}
            subsets:
            - addresses: [{ip: 10.1.0.1, nodeName: node-1}, {ip: "fd00::1"}]
              notReadyAddresses: [{ip: 10.1.0.2}]
              ports: [{name: http, port: 8080}]
            """
        let result = slices([Self.service, endpoints])
        #expect(result.map(\.origin) == [.endpoints, .endpoints])
        #expect(result.map(\.addressType) == [.ipv4, .ipv6])
        #expect(result[0].endpoints.map(\.conditions.ready) == [true, false])
        #expect(result[0].endpoints.map(\.conditions.serving) == [true, false])
        #expect(result[0].endpoints[0].nodeName == "node-1")
        #expect(result[0].ports == [SlicePort(name: "http", port: 8080)])
        #expect(result[1].endpoints.map { $0.addresses[0].description } == ["fd00::1"])
    }

    @Test func precedenceSlicesThenEndpointsThenPods() {
        let slice = """
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-x, labels: {kubernetes.io/service-name: web}}
            addressType: IPv4
            endpoints: [{addresses: [10.9.0.1]}]
            ports: [{name: http, port: 80}]
            """
        let endpoints = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets: [{addresses: [{ip: 10.8.0.1}], ports: [{name: http, port: 80}]}]"
        let pod = Self.pod("a", ip: "10.244.0.1")
        #expect(slices([Self.service, slice, endpoints, pod]).map(\.origin) == [.endpointSlice])
        #expect(slices([Self.service, endpoints, pod]).map(\.origin) == [.endpoints])
        #expect(slices([Self.service, pod]).map(\.origin) == [.pods])
        let selectorless = Self.service.replacingOccurrences(of: "  selector: {app: web}\n", with: "")
        #expect(slices([selectorless, pod]).isEmpty)
    }
}
