import ArgumentParser
import FerryCore
import FerryProxy
import FerrySources
import Foundation

/// Where objects come from: manifests, the Kubernetes API server, or the embedded walk-through.
struct SourceOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A manifest file or folder (YAML/JSON, recursive).", valueName: "path"))
    var manifests: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Read Services, EndpointSlices and the Node from the API server of this kubeconfig (also $KUBECONFIG; files may be joined with ':').",
            valueName: "file"))
    var kubeconfig: String?

    @Option(name: .long, help: ArgumentHelp("The kubeconfig context (default: its current-context).", valueName: "name"))
    var context: String?

    @Option(name: .long, help: ArgumentHelp("The API server's URL, overriding the kubeconfig's (as kube-proxy's --master).", valueName: "url"))
    var master: String?

    @Flag(
        name: .customLong("in-cluster"),
        help: "Use the pod's service account (the default in a pod when no source is given).")
    var inCluster = false

    @Flag(help: "Use the embedded walk-through (three pods behind my-service, 10.96.0.10:80) as the source.")
    var demo = false

    @Option(
        name: .customLong("service-proxy-name"),
        help: ArgumentHelp("Serve only Services labelled service.kubernetes.io/service-proxy-name=NAME.", valueName: "name"))
    var serviceProxyName: String?

    @Option(
        name: .customLong("service-cluster-ip-range"),
        help: ArgumentHelp(
            "The service range(s), comma-separated, one per family (kube-apiserver's flag). Manifests' Services without a clusterIP get one from it (default 10.96.0.0/12); in nftables mode, traffic to an address of a given range that no Service owns is dropped.",
            valueName: "cidr"))
    var serviceClusterIPRange: String?

    @Option(
        name: .customLong("service-node-port-range"),
        help: ArgumentHelp("Where manifests' NodePorts without a nodePort are allocated (kube-apiserver's flag).", valueName: "low-high"))
    var serviceNodePortRange: String = "30000-32767"

    /// The ranges given with --service-cluster-ip-range (none when not given).
    func givenServiceCIDRs() throws -> [CIDR] {
        guard let serviceClusterIPRange else { return [] }
        let ranges = try serviceClusterIPRange.split(separator: ",").map { text in
            guard let cidr = CIDR(String(text)) else {
                throw ValidationError("--service-cluster-ip-range: \"\(text)\" is not a valid CIDR such as 10.96.0.0/12")
            }
            return cidr
        }
        guard ranges.count <= 2, Set(ranges.map(\.address.family)).count == ranges.count else {
            throw ValidationError("--service-cluster-ip-range: at most one range per IP family")
        }
        return ranges
    }

    /// What manifest Services are allocated from: the given ranges (or 10.96.0.0/12) and NodePort range.
    func allocationRanges() throws -> AllocationRanges {
        let text = serviceNodePortRange.split(separator: "-", omittingEmptySubsequences: false)
        guard text.count == 2, let low = Int(text[0]), let high = Int(text[1]), 1 <= low, low <= high, high <= 65_535 else {
            throw ValidationError("--service-node-port-range: \"\(serviceNodePortRange)\" is not a range such as 30000-32767")
        }
        let given = try givenServiceCIDRs()
        return AllocationRanges(serviceCIDRs: given.isEmpty ? AllocationRanges().serviceCIDRs : given, nodePorts: low...high)
    }

    func validate() throws {
        _ = try allocationRanges()
        let chosen = [manifests != nil, kubeconfig != nil, inCluster, demo].filter { $0 }.count
        if chosen > 1 { throw ValidationError("choose one source: --manifests, --kubeconfig, --in-cluster or --demo") }
        if context != nil && kubeconfig == nil && environmentKubeconfig == nil {
            throw ValidationError("--context needs --kubeconfig (or $KUBECONFIG)")
        }
    }

    private var environmentKubeconfig: String? {
        ProcessInfo.processInfo.environment["KUBECONFIG"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Whether the source is an API server (what `clusterAccess()` would read, without reading it).
    var namesAnAPIServer: Bool {
        manifests == nil && !demo
            && (kubeconfig != nil || inCluster || environmentKubeconfig != nil || ClusterAccess.looksInCluster() || master != nil)
    }

    /// How to reach the API server, when the source is one: `--kubeconfig`, `--in-cluster`, `$KUBECONFIG`
    /// (when no manifests are given), or a pod's service account when Ferry runs in one.
    func clusterAccess() throws -> ClusterAccess? {
        guard manifests == nil, !demo else { return nil }
        var access: ClusterAccess?
        do {
            if let kubeconfig {
                access = try ClusterAccess.kubeconfig(paths: kubeconfig, context: context)
            } else if inCluster {
                access = try ClusterAccess.inCluster()
            } else if let environmentKubeconfig {
                access = try ClusterAccess.kubeconfig(paths: environmentKubeconfig, context: context)
            } else if ClusterAccess.looksInCluster() {
                access = try ClusterAccess.inCluster()
            } else if master != nil {
                access = ClusterAccess(server: "https://127.0.0.1", origin: "--master")
            }
            if let master, let current = access { access = try current.overridingServer(master) }
        } catch {
            throw CommandFailure.badInput("error: \(error)")
        }
        return access
    }

    /// The API source for node `nodeName` through `access` (the source's `clusterAccess()`, resolved once
    /// per command: it reads the kubeconfig).
    func kubernetesSource(nodeName: String, access: ClusterAccess?, timeouts: KubeAPITimeouts = KubeAPITimeouts()) throws
        -> KubernetesSource?
    {
        guard let access else { return nil }
        do {
            let client = try KubeAPIClient(access: access, timeouts: timeouts)
            return KubernetesSource(
                client: client, resources: WatchedResource.proxyResources(nodeName: nodeName, serviceProxyName: serviceProxyName))
        } catch {
            throw CommandFailure.badInput("error: \(error)")
        }
    }

    /// The long-running source: the API server, the manifests (watched), or the embedded objects; with
    /// `requireNamed`, one of them must have been named (see `requireNamedSource`).
    func objectSource(nodeName: String, requireNamed: Bool = false) throws -> ObjectSource {
        let access = try clusterAccess()
        if requireNamed { try requireNamedSource(access: access) }
        if let kubernetes = try kubernetesSource(nodeName: nodeName, access: access) { return kubernetes }
        return manifests.map { ManifestSource(path: $0, watch: true, allocation: try? allocationRanges()) } ?? EmbeddedSource()
    }

    /// For commands that change the node (`run`, `sync`): a source must be named. The embedded
    /// walk-through's 10.96.0.10:80 is kube-dns's ClusterIP on kubeadm clusters: proxied on a real node
    /// by mistake, it would take over that address, so it is used only on request (`--demo`).
    func requireNamedSource(access: ClusterAccess?) throws {
        guard manifests == nil, !demo, access == nil else { return }
        throw CommandFailure.badInput(
            "error: no source: give --kubeconfig FILE (or run in a pod, or set $KUBECONFIG), --manifests PATH, or --demo for the embedded walk-through")
    }

    /// Reads the objects once: the manifests (or the embedded set), failing with exit 2 on any problem;
    /// or the API server's lists, where an object that does not decode is reported and left out, as
    /// kube-proxy leaves it out. Objects keep their form as written when `keepingWire` (for `-o json|yaml`).
    func read(keepingWire: Bool = false, nodeName: String = HostInfo.hostName(), requireNamed: Bool = false) async throws
        -> LoadedManifests
    {
        let access = try clusterAccess()
        if requireNamed { try requireNamedSource(access: access) }
        if let kubernetes = try kubernetesSource(nodeName: nodeName, access: access) {
            defer { Task { await kubernetes.client.shutdown() } }
            let listed: (objects: [ManifestObject], problems: [ManifestError])
            do {
                listed = try await kubernetes.listOnce(keepingWire: keepingWire)
            } catch {
                throw CommandFailure.runtime("error: \(error)")
            }
            for problem in listed.problems {
                FileHandle.standardError.write(Data("warning: ignoring an object the API server sent: \(problem)\n".utf8))
            }
            return LoadedManifests(objects: listed.objects)
        }
        return try load(keepingWire: keepingWire)
    }

    /// Reads the manifests once (or the embedded set); objects keep their form as written when
    /// `keepingWire` (for `-o json|yaml`). Problems come with the good objects (`LoadedManifests.problems`):
    /// one bad file does not hide the others from a command that only shows them.
    func load(keepingWire: Bool = false) throws -> LoadedManifests {
        var objects: [ManifestObject]
        var problems: [ManifestError]
        var controllersNote: String?
        if let path = manifests {
            var tree = ManifestTree(root: path, keepingWire: keepingWire, allocation: try allocationRanges())
            let result = tree.reload()
            problems = result.problems
            controllersNote = tree.controllersNote
            // A first reload upserts every object, in key order: no second sort. Services come with what
            // was allocated for them.
            objects = result.changes.compactMap { change in
                guard case .upsert(let object) = change, let read = tree.objects[change.key] else { return nil }
                // Only a Service with allocated values differs from what was read (no deep comparison:
                // comparing 20,000 objects cost 10% of `get -A`).
                guard case .service(let service) = object, !service.allocated.isEmpty else { return read }
                return ManifestObject(object: object, wire: read.wire, location: read.location)
            }
        } else {
            let result = EmbeddedSource.read(keepingWire: keepingWire)
            objects = result.objects
            problems = result.errors
        }
        problems += Consistency.danglingReferences(objects)
        let loaded = LoadedManifests(objects: objects, problems: problems)
        // Said where it explains something: a Service with a selector and no endpoints beside a controller.
        if let note = controllersNote, loaded.state.services.values.contains(where: { service in
            !(service.selector ?? [:]).isEmpty && EffectiveSlices.slices(for: service, in: loaded.state).allSatisfy(\.endpoints.isEmpty)
        }) {
            FileHandle.standardError.write(Data((note + "\n").utf8))
        }
        return loaded
    }
}

/// The objects of a one-shot command, with the state built from them.
struct LoadedManifests {
    var objects: [ManifestObject]
    var state: ClusterState
    /// What could not be used (bad files, conflicts): the objects above are the good ones.
    var problems: [ManifestError]
    /// The objects by key: `-o json|yaml` looks one up per listed object, as written.
    private let byKey: [ObjectKey: ManifestObject]

    init(objects: [ManifestObject], problems: [ManifestError] = []) {
        self.objects = objects
        self.problems = problems
        self.state = ClusterState(objects.map(\.object))
        self.byKey = Dictionary(objects.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
    }

    func wire(for key: ObjectKey) -> WireObject? { byKey[key]?.wire }

    /// After a command has shown the good objects: the problems on stderr, exit 2 (nothing when none).
    func failOnProblems() throws {
        if !problems.isEmpty { throw CommandFailure.badInput(problems) }
    }
}

/// `-n NAMESPACE` and `-A`, as kubectl reads them for `get` and `describe`.
struct NamespaceScope: ParsableArguments {
    @Option(name: [.short, .customLong("namespace")], help: "The namespace (default: default).")
    var namespace: String?

    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "Every namespace (wins over -n, as in kubectl).")
    var allNamespaces = false

    /// The namespace names are looked up in.
    var selected: String { namespace ?? "default" }

    func contains(_ name: ServiceName) -> Bool { allNamespaces || name.namespace == selected }

    /// kubectl's refusal of names with -A.
    func check(names: [String]) throws {
        if allNamespaces && !names.isEmpty { throw ValidationError("a resource cannot be retrieved by name across all namespaces") }
    }

    /// kubectl's line for an empty result.
    var noResourcesFound: String { allNamespaces ? "No resources found.\n" : "No resources found in \(selected) namespace.\n" }
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

