import Testing
@testable import FerryCore

@Suite("JSON parser and YAML conversion")
struct JSONValueTests {
    @Test func parsesEveryKind() throws {
        let value = try JSONParser.parse(Array(#" {"a": [1, -2, 3.5, 1e3, true, false, null, "x\"\n\u00e9\ud83d\ude00"], "b": {}} "#.utf8))
        guard case .array(let elements)? = value["a"] else { Issue.record("no array"); return }
        #expect(elements == [.int(1), .int(-2), .double(3.5), .double(1000), .bool(true), .bool(false), .null, .string("x\"\né😀")])
        #expect(value["b"] == .object([]))
    }

    @Test(arguments: [
        ("{", "line 1, column 2"), ("{\"a\": 1,}", "expected a quoted key"), ("[1 2]", "expected ',' or ']'"),
        ("{\"a\": tru}", "invalid literal"), ("{\"a\": 01}", "expected ',' or '}'"), ("\"abc", "unterminated string"),
        ("{\"a\":1}\n{\"b\":2}", "line 2, column 1: unexpected text"), ("{\"a\": 1, \"a\": 2}", "duplicate key \"a\""),
        ("{\n  \"a\": @\n}", "line 2, column 8"),
    ])
    func reportsSyntaxErrorsWithPosition(text: String, fragment: String) {
        do {
            _ = try JSONParser.parse(Array(text.utf8))
            Issue.record("parsed invalid JSON: \(text)")
        } catch {
            #expect(error.description.contains(fragment), "\(error.description)")
        }
    }

    @Test func yamlScalarsAreTypedByTheCoreSchema() throws {
        let result = readYAML("""
            apiVersion: v1
            kind: Service
            metadata:
              name: typed
              labels:
                quoted-number: "80"
                word: yes
                version: "1.0"
            spec:
              clusterIP: 10.96.0.1
              ports:
              - port: 80
                targetPort: "8080"
            """)
        #expect(result.errors.isEmpty, "\(result.errors)")
        guard case .service(let service)? = result.objects.first?.object else { Issue.record("no service"); return }
        #expect(service.meta.labels == ["quoted-number": "80", "word": "yes", "version": "1.0"])
        #expect(service.ports.first?.targetPort == .number(8080))
    }

    @Test func yamlNumberThatShouldBeAStringIsATypeError() {
        let result = readYAML("""
            apiVersion: v1
            kind: Service
            metadata:
              name: typed
              labels:
                version: 1.0
            spec:
              clusterIP: 10.96.0.1
              ports:
              - port: 80
            """)
        #expect(result.errors.map(\.description) == [
            "test.yaml: document 1: Service default/typed: metadata.labels.version: has the wrong type: expected a string, found a number"
        ])
    }

    @Test func yamlAliasesAreExpandedAsKubernetesDoes() {
        let result = readYAML("""
            apiVersion: v1
            kind: Service
            metadata:
              name: a
              labels: &l {app: x}
              annotations: *l
            spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
            """)
        #expect(result.errors.isEmpty, "\(result.errors)")
        #expect(result.objects.first?.object.meta.annotations == ["app": "x"])
    }
}
