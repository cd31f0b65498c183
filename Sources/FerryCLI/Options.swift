import ArgumentParser
import FerryCore
import FerrySources
import Foundation

/// Where objects come from.
struct SourceOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A manifest file or folder (YAML/JSON, recursive).", valueName: "path"))
    var manifests: String?

    /// Reads the manifests once (or the embedded set), failing with exit 2 on any problem; objects keep
    /// their form as written when `keepingWire` (for `-o json|yaml`).
    func load(keepingWire: Bool = false) throws -> LoadedManifests {
        var objects: [ManifestObject]
        var problems: [ManifestError]
        if let path = manifests {
            var tree = ManifestTree(root: path, keepingWire: keepingWire)
            let result = tree.reload()
            problems = result.problems
            // A first reload upserts every object, in key order: no second sort.
            objects = result.changes.compactMap { tree.objects[$0.key] }
        } else {
            let result = EmbeddedSource.read(keepingWire: keepingWire)
            objects = result.objects
            problems = result.errors
        }
        problems += Consistency.danglingReferences(objects)
        if !problems.isEmpty { throw CommandFailure.badInput(problems) }
        return LoadedManifests(objects: objects)
    }
}

/// The objects of a one-shot command, with the state built from them.
struct LoadedManifests {
    var objects: [ManifestObject]
    var state: ClusterState
    /// The objects by key: `-o json|yaml` looks one up per listed object, as written.
    private let byKey: [ObjectKey: ManifestObject]

    init(objects: [ManifestObject]) {
        self.objects = objects
        self.state = ClusterState(objects.map(\.object))
        self.byKey = Dictionary(objects.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
    }

    func wire(for key: ObjectKey) -> WireObject? { byKey[key]?.wire }
}

/// Which node Ferry stands on.
struct NodeOptions: ParsableArguments {
    @Option(
        name: [.customLong("node-name"), .customLong("hostname-override")],
        help: "This node's name, as endpoints' nodeName spell it (default: the host name).")
    var nodeName: String?

    @Option(
        name: .customLong("node-ip"),
        help: "An address of this node, for NodePorts (repeatable; default: the Node object's, else the host's).")
    var nodeIPs: [String] = []

    @Option(name: .customLong("cluster-cidr"), help: "The pod network(s), comma-separated, e.g. 10.244.0.0/16.")
    var clusterCIDR: String?

    func validate() throws {
        _ = try parsedIPs()
        _ = try parsedCIDRs()
    }

    func parsedIPs() throws -> [IPAddress] {
        try nodeIPs.flatMap { $0.split(separator: ",") }.map { text in
            guard let address = IPAddress(text) else { throw ValidationError("--node-ip: \"\(text)\" is not a valid IP address") }
            return address
        }
    }

    func parsedCIDRs() throws -> [CIDR] {
        guard let clusterCIDR else { return [] }
        return try clusterCIDR.split(separator: ",").map { text in
            guard let cidr = CIDR(String(text)) else {
                throw ValidationError("--cluster-cidr: \"\(text)\" is not a valid CIDR such as 10.244.0.0/16")
            }
            return cidr
        }
    }

    /// The node context: flags first, then the Node object in `state`, then this host.
    func context(state: ClusterState) throws -> NodeContext {
        let name = nodeName ?? HostInfo.hostName()
        var addresses = try parsedIPs()
        let object = state.nodes[name]
        if addresses.isEmpty { addresses = object?.addresses ?? [] }
        if addresses.isEmpty { addresses = HostInfo.localAddresses() }
        return NodeContext(name: name, zone: object?.zone, addresses: addresses)
    }
}

/// Facts about the machine Ferry runs on.
enum HostInfo {
    /// The host name, lowercased as Kubernetes node names are.
    static func hostName() -> String {
        ProcessInfo.processInfo.hostName.split(separator: ".").first.map { String($0).lowercased() } ?? "localhost"
    }

    /// The host's non-loopback interface addresses.
    static func localAddresses() -> [IPAddress] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var result: [IPAddress] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let socketAddress = entry.pointee.ifa_addr else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let length =
                socketAddress.pointee.sa_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size
            guard [sa_family_t(AF_INET), sa_family_t(AF_INET6)].contains(socketAddress.pointee.sa_family),
                getnameinfo(socketAddress, socklen_t(length), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0
            else { continue }
            let text = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let address = IPAddress(text.split(separator: "%").first ?? ""), !address.isLoopback, !result.contains(address) {
                result.append(address)
            }
        }
        return result
    }
}
