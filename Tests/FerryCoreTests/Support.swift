import Foundation
@testable import FerryCore

/// Reads YAML text as a manifest file named `test.yaml`.
func readYAML(_ text: String) -> ManifestReadResult {
    ManifestReader.read(Data(text.utf8), format: .yaml, source: "test.yaml")
}

/// Reads JSON text as a manifest file named `test.json`.
func readJSON(_ text: String) -> ManifestReadResult {
    ManifestReader.read(Data(text.utf8), format: .json, source: "test.json")
}

/// The objects of valid YAML (fails the test on any error).
func objects(_ text: String, sourceLocation: SourceLocationForHelpers = .init()) -> [KubeObject] {
    let result = readYAML(text)
    precondition(result.errors.isEmpty, "unexpected errors: \(result.errors)")
    return result.objects.map(\.object)
}

struct SourceLocationForHelpers { init() {} }

func ip(_ text: String) -> IPAddress { IPAddress(text)! }

/// A backend for selection tests: `10.0.0.N:80` with the given conditions.
func backend(
    _ last: Int, node: String = "node-2", ready: Bool = true, serving: Bool? = nil, terminating: Bool = false,
    zones: [String] = [], nodes: [String] = [], local: Bool? = nil
) -> Backend {
    Backend(
        ip: ip("10.0.0.\(last)"), port: 80, nodeName: node, zoneHints: zones, nodeHints: nodes, ready: ready,
        serving: serving, terminating: terminating, isLocal: local ?? (node == "node-1"))
}

let thisNode = NodeContext(name: "node-1", zone: "zone-a", addresses: [IPAddress("10.0.0.1")!])

/// A Service in YAML with the given spec lines (indented by the caller at 2 spaces).
func serviceYAML(name: String = "web", namespace: String = "default", spec: String) -> String {
    """
    apiVersion: v1
    kind: Service
    metadata:
      name: \(name)
      namespace: \(namespace)
    spec:
    \(spec)
    """
}
