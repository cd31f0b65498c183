import FerryCore
import Foundation

@testable import FerryNFTables

let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

let node1 = NodeContext(name: "node-1", zone: "zone-a", addresses: [IPAddress("10.0.0.1")!])
let podCIDR = CIDR("10.244.0.0/16")!

/// Backend tables for YAML text, as node-1.
func tables(yaml: String, node: NodeContext = node1) -> BackendTables {
    let result = ManifestReader.read(Data(yaml.utf8), format: .yaml, source: "test.yaml")
    precondition(result.errors.isEmpty, "\(result.errors)")
    return TableBuilder.build(ClusterState(result.objects.map(\.object)), node: node)
}

/// Backend tables for every manifest under deploy/examples, as node-1.
func exampleTables() -> BackendTables {
    var objects: [KubeObject] = []
    let folder = "\(repositoryRoot)/deploy/examples"
    for file in (try? FileManager.default.contentsOfDirectory(atPath: folder))?.sorted() ?? [] where file.hasSuffix(".yaml") {
        let result = ManifestReader.read(fileAt: "\(folder)/\(file)")
        precondition(result.errors.isEmpty, "\(result.errors)")
        objects += result.objects.map(\.object)
    }
    return TableBuilder.build(ClusterState(objects), node: node1)
}

func ip(_ text: String) -> IPAddress { IPAddress(text)! }

/// `count` services `svc-N` (10.96.x.y, port 80) with `endpoints` ready endpoints each; service
/// `changed` gets one endpoint replaced when `changeOne` is set.
func syntheticYAML(services count: Int, endpoints: Int = 3, changeOne changed: Int? = nil, grow grown: Int? = nil) -> String {
    var documents: [String] = []
    for index in 0..<count {
        let address = "10.96.\(index / 250).\(index % 250 + 1)"
        documents.append(
            """
            apiVersion: v1
            kind: Service
            metadata: {name: svc-\(index)}
            spec: {type: NodePort, clusterIP: \(address), ports: [{name: http, port: 80, nodePort: \(30000 + index)}]}
            """)
        let ips = (0..<(index == grown ? endpoints + 1 : endpoints)).map { endpoint -> String in
            let last = index == changed && endpoint == 0 ? 250 : endpoint + 1
            return "{addresses: [10.\(100 + index / 250).\(index % 250).\(last)], nodeName: node-\(endpoint % 2 + 1)}"
        }
        documents.append(
            """
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: svc-\(index)-x, labels: {kubernetes.io/service-name: svc-\(index)}}
            addressType: IPv4
            endpoints: [\(ips.joined(separator: ", "))]
            ports: [{name: http, port: 8080}]
            """)
    }
    return documents.joined(separator: "\n---\n")
}

/// Whether a line of a transaction script is about synthetic service `index` only: its chains, its
/// frontends' map elements (ClusterIP, NodePort) or its endpoints' addresses.
func touchesOnly(svc index: Int, _ line: Substring) -> Bool {
    let clusterIP = "10.96.\(index / 250).\(index % 250 + 1) "
    let endpoints = "10.\(100 + index / 250).\(index % 250)."
    if line.contains("default/svc-\(index)/") { return true }
    guard line.contains(" element ") else { return false }
    let items = line.drop { $0 != "{" }.dropFirst().dropLast().split(separator: ",")
    return items.allSatisfy { item in
        item.contains(clusterIP) || item.contains("tcp . \(30000 + index) ") || item.trimmingCharacters(in: .whitespaces).hasPrefix(endpoints)
    }
}
