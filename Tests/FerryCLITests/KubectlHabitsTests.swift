import Foundation
import Testing

/// `ferry get` as a kubectl user types it, on the repository's examples.
@Suite("kubectl's habits in ferry get")
struct KubectlHabitsTests {
    static let examples = ["--manifests", "deploy/examples"]

    func get(_ arguments: [String]) throws -> FerryResult { try runFerry(["get"] + arguments + Self.examples) }

    @Test func namesSeveralKindsAndNameOutput() throws {
        let names = try get(["svc", "my-service", "sticky", "-o", "name"])
        #expect(names.status == 0 && names.stdout == "service/my-service\nservice/sticky\n", "\(names)")
        let both = try get(["svc,ep", "my-service"])
        #expect(both.status == 0, "\(both)")
        let lines = both.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.first?.hasPrefix("NAME ") == true && lines.contains { $0.hasPrefix("service/my-service ") }, "\(both.stdout)")
        #expect(lines.contains { $0.hasPrefix("endpoints/my-service ") } && lines.contains(""), "a blank line between the kinds: \(both.stdout)")
        let slices = try get(["eps", "-o", "name"])
        #expect(slices.status == 0 && slices.stdout.hasPrefix("endpointslice.discovery.k8s.io/"), "\(slices)")
    }

    @Test func selectorsAndHeaders() throws {
        let selected = try get(["svc", "-l", "app=my-app", "--no-headers"])
        #expect(selected.status == 0 && selected.stdout.hasPrefix("my-service ") && selected.stdout.split(separator: "\n").count == 1, "\(selected)")
        let excluded = try get(["svc", "-l", "app!=my-app", "-o", "name"])
        #expect(!excluded.stdout.contains("my-service") && excluded.stdout.contains("service/sticky"))
        let none = try get(["svc", "-l", "app=nothing"])
        #expect(none.status == 0 && none.stdout.isEmpty && none.stderr == "No resources found in default namespace.\n", "\(none)")
        let otherNamespace = try get(["svc", "-n", "elsewhere"])
        #expect(otherNamespace.stderr == "No resources found in elsewhere namespace.\n")
        // -A wins over -n, as in kubectl.
        let all = try get(["svc", "-n", "elsewhere", "-A", "--no-headers"])
        #expect(all.status == 0 && all.stdout.hasPrefix("default "), "\(all)")
    }

    @Test func aMissingNameIsNotFound() throws {
        let result = try get(["svc", "my-service", "ghost"])
        #expect(result.status == 1)
        #expect(result.stdout.contains("my-service"))
        #expect(result.stderr == "Error from server (NotFound): services \"ghost\" not found\n", "\(result)")
    }

    @Test func oneObjectByNameIsPrintedAsItself() throws {
        let result = try get(["svc", "my-service", "-o", "yaml"])
        #expect(result.status == 0 && result.stdout.hasPrefix("apiVersion: v1\nkind: Service\n"), "\(result.stdout)")
    }
}
