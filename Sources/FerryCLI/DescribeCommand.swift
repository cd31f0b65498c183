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

    @OptionGroup var scope: NamespaceScope

    func validate() throws { try scope.check(names: names) }

    func run() async throws {
        let loaded = try await source.read()
        let state = loaded.state
        var texts: [String] = []
        var missing: [String] = []
        let wanted: [ServiceName]
        if names.isEmpty {
            var all = Set(state.services.keys)
            if !resource.isServices {
                all.formUnion(state.slices.keys)
                all.formUnion(state.endpoints.keys)
            }
            wanted = all.filter(scope.contains).sorted()
        } else {
            wanted = names.map { ServiceName(namespace: scope.selected, name: $0) }
        }
        for name in wanted {
            let view = EndpointsView.of(name, in: state)
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
            FileHandle.standardError.write(Data(scope.noResourcesFound.utf8))
        }
        if !missing.isEmpty {
            let kind = resource.isServices ? "services" : "endpoints"
            throw CommandFailure.runtime(missing.map { "Error from server (NotFound): \(kind) \"\($0)\" not found" }.joined(separator: "\n"))
        }
    }
}
