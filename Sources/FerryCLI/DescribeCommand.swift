import ArgumentParser
import FerryCore
import Foundation

/// `ferry describe service|endpoints [NAME...]`: kubectl's describe layout, from what Ferry reads.
struct DescribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "describe",
        abstract: "Show services or their endpoints in detail, as kubectl describe does.",
        discussion: """
            RESOURCE is services (svc) or endpoints (ep). With no NAME, every one of the namespace. Values Ferry \
            allocated (manifests that leave out a clusterIP or nodePort) are marked "(allocated by Ferry)"; a \
            service a node proxy ignores says why.
            """)

    enum Resource: String, ExpressibleByArgument, CaseIterable {
        case services, service, svc, endpoints, endpoint, ep

        var isServices: Bool { [.services, .service, .svc].contains(self) }
    }

    @Argument(help: "services (svc) or endpoints (ep)")
    var resource: Resource

    @Argument(help: "The names to describe (default: all of the namespace).")
    var names: [String] = []

    @OptionGroup var source: SourceOptions

    @Option(name: [.short, .customLong("namespace")], help: "The namespace (default: default).")
    var namespace: String?

    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "Every namespace (with no NAME).")
    var allNamespaces = false

    func validate() throws {
        if allNamespaces && !names.isEmpty { throw ValidationError("a resource cannot be retrieved by name across all namespaces") }
    }

    func run() async throws {
        let loaded = try await source.read()
        let state = loaded.state
        let namespace = self.namespace ?? "default"
        var texts: [String] = []
        var missing: [String] = []
        let wanted: [ServiceName]
        if names.isEmpty {
            var all = Set(state.services.keys)
            if !resource.isServices {
                all.formUnion(state.slices.keys)
                all.formUnion(state.endpoints.keys)
            }
            wanted = all.filter { allNamespaces || $0.namespace == namespace }.sorted()
        } else {
            wanted = names.map { ServiceName(namespace: namespace, name: $0) }
        }
        for name in wanted {
            let view = Self.endpointsView(name, in: state)
            if resource.isServices {
                guard let service = state.services[name] else {
                    missing.append(name.name)
                    continue
                }
                texts.append(ServiceDescription.render(service, endpoints: view?.endpoints))
            } else {
                guard let view else {
                    missing.append(name.name)
                    continue
                }
                texts.append(EndpointsDescription.render(view.endpoints))
            }
        }
        if !texts.isEmpty { print(texts.joined(separator: "\n\n"), terminator: "") }
        fflush(nil)
        try loaded.failOnProblems()
        if names.isEmpty && texts.isEmpty {
            let scope = allNamespaces ? "" : " in \(namespace) namespace"
            FileHandle.standardError.write(Data("No resources found\(scope).\n".utf8))
        }
        if !missing.isEmpty {
            let kind = resource.isServices ? "services" : "endpoints"
            throw CommandFailure.runtime(missing.map { "Error from server (NotFound): \(kind) \"\($0)\" not found" }.joined(separator: "\n"))
        }
    }

    /// A Service's endpoints (or those of slices / Endpoints whose Service is absent), as `get` shows them.
    static func endpointsView(_ name: ServiceName, in state: ClusterState) -> EndpointsView? {
        if let service = state.services[name] {
            return EndpointsView.make(name: name, service: service, slices: EffectiveSlices.slices(for: service, in: state))
        }
        let slices = state.slices[name].map { Array($0.values) } ?? state.endpoints[name].map(EffectiveSlices.mirror)
        return slices.map { EndpointsView.make(name: name, service: nil, slices: $0) }
    }
}
