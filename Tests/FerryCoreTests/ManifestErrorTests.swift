import Testing
@testable import FerryCore

/// Each bad input gets one error that names the file, the document, the object and the field.
@Suite("Bad manifests")
struct ManifestErrorTests {
    static let cases: [(name: String, yaml: String, expected: String)] = [
        ("malformed YAML", "apiVersion: v1\nkind: Service\nmetadata: {name: a\nspec: {}\n",
         "test.yaml: document 1: is not valid YAML: line 4, column 5"),
        ("not a mapping", "- just\n- a list\n",
         "test.yaml: document 1: is not an object: expected a mapping with kind, apiVersion and metadata, found a list"),
        ("missing kind", "apiVersion: v1\nmetadata: {name: a}\n", "test.yaml: document 1: object default/a: kind: is required"),
        ("missing name", serviceYAML(spec: "  ports: [{port: 80}]").replacingOccurrences(of: "  name: web\n", with: ""),
         "test.yaml: document 1: Service: metadata.name: is required"),
        ("wrong type for port", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: [{port: abc}]"),
         "test.yaml: document 1: Service default/web: spec.ports[0].port: has the wrong type: expected an integer, found a string"),
        ("wrong type for ports", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: 80"),
         "test.yaml: document 1: Service default/web: spec.ports: has the wrong type: expected a list, found a number"),
        ("wrong type for selector", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  selector: [a]\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.selector: has the wrong type: expected a mapping of strings, found a list"),
        ("invalid cluster IP", serviceYAML(spec: "  clusterIP: 10.96.0.300\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.clusterIP: \"10.96.0.300\" is not a valid IP address"),
        ("clusterIPs disagree", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  clusterIPs: [10.96.0.2]\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.clusterIPs[0]: must equal spec.clusterIP (10.96.0.1), found 10.96.0.2"),
        ("invalid external IP", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  externalIPs: [1.2.3]\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.externalIPs[0]: \"1.2.3\" is not a valid IP address"),
        // The API server's rules tying fields to the service type (ValidateService).
        ("externalName with a clusterIP", serviceYAML(spec: "  type: ExternalName\n  externalName: example.com\n  clusterIP: 10.96.0.1"),
         "test.yaml: document 1: Service default/web: spec.clusterIP: may not be set for ExternalName services"),
        ("externalName not a DNS name", serviceYAML(spec: "  type: ExternalName\n  externalName: Example_Com"),
         "test.yaml: document 1: Service default/web: spec.externalName: \"Example_Com\" is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')"),
        ("headless NodePort", serviceYAML(spec: "  type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.clusterIP: may not be None for NodePort services"),
        ("externalTrafficPolicy on a ClusterIP", serviceYAML(spec: "  externalTrafficPolicy: Local\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.externalTrafficPolicy: may only be set for externally-accessible services (NodePort, LoadBalancer, or with externalIPs)"),
        ("healthCheckNodePort without Local", serviceYAML(spec: "  type: LoadBalancer\n  healthCheckNodePort: 32000\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.healthCheckNodePort: may only be set when type is LoadBalancer and externalTrafficPolicy is Local"),
        ("source ranges on a NodePort", serviceYAML(spec: "  type: NodePort\n  loadBalancerSourceRanges: [10.0.0.0/8]\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.loadBalancerSourceRanges: may only be used when type is LoadBalancer"),
        ("affinity config without affinity", serviceYAML(spec: "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.sessionAffinityConfig: must not be set when sessionAffinity is None"),
        ("loopback external IP", serviceYAML(spec: "  externalIPs: [127.0.0.5]\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.externalIPs[0]: 127.0.0.5 may not be in the loopback range (127.0.0.0/8, ::1/128)"),
        ("cluster IP of the wrong family", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ipFamilies: [IPv6]\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.clusterIPs[0]: 10.96.0.1 is not of family IPv6 (spec.ipFamilies[0])"),
        ("port 0", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: [{port: 0}]"),
         "test.yaml: document 1: Service default/web: spec.ports[0].port: 0 is out of range 1-65535"),
        ("port 70000", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: [{name: a, port: 80}, {name: b, port: 70000}]"),
         "test.yaml: document 1: Service default/web: spec.ports[1].port: 70000 is out of range 1-65535"),
        ("target port 70000", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: [{port: 80, targetPort: 70000}]"),
         "test.yaml: document 1: Service default/web: spec.ports[0].targetPort: 70000 is out of range 1-65535"),
        ("node port out of range", serviceYAML(spec: "  type: NodePort\n  clusterIP: 10.96.0.1\n  ports: [{port: 80, nodePort: 65536}]"),
         "test.yaml: document 1: Service default/web: spec.ports[0].nodePort: 65536 is out of range 1-65535"),
        ("node port on ClusterIP", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: [{port: 80, nodePort: 30000}]"),
         "test.yaml: document 1: Service default/web: spec.ports[0].nodePort: may not be used when spec.type is ClusterIP"),
        ("unknown protocol", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: [{port: 80, protocol: ICMP}]"),
         "test.yaml: document 1: Service default/web: spec.ports[0].protocol: unknown protocol \"ICMP\": expected TCP, UDP or SCTP"),
        ("unknown type", serviceYAML(spec: "  type: Magic\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.type: unknown value \"Magic\": expected one of ClusterIP, NodePort, LoadBalancer, ExternalName"),
        ("unnamed port among several", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: [{name: a, port: 80}, {port: 81}]"),
         "test.yaml: document 1: Service default/web: spec.ports[1].name: is required when a Service has more than one port"),
        ("duplicate port name", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: [{name: a, port: 80}, {name: a, port: 81}]"),
         "test.yaml: document 1: Service default/web: spec.ports[1].name: duplicate port name \"a\""),
        ("invalid target port name", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: [{port: 80, targetPort: Web_Port}]"),
         "test.yaml: document 1: Service default/web: spec.ports[0].targetPort: \"Web_Port\" is not a valid port name: at most 15 lowercase letters, digits and inner dashes, with at least one letter"),
        ("no ports", serviceYAML(spec: "  clusterIP: 10.96.0.1"),
         "test.yaml: document 1: Service default/web: spec.ports: is required: a Service needs at least one port"),
        ("bad affinity", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  sessionAffinity: Cookie\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.sessionAffinity: unknown value \"Cookie\": expected None or ClientIP"),
        ("affinity timeout", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of range 1-86400"),
        ("bad policy", serviceYAML(spec: "  type: NodePort\n  clusterIP: 10.96.0.1\n  externalTrafficPolicy: Global\n  ports: [{port: 80}]"),
         "test.yaml: document 1: Service default/web: spec.externalTrafficPolicy: unknown value \"Global\": expected one of Cluster, Local"),
        ("slice without service label",
         "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\n",
         "test.yaml: document 1: EndpointSlice default/s: metadata.labels[\"kubernetes.io/service-name\"]: is required: it names the Service this slice belongs to"),
        ("slice without address type",
         "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: web}}\n",
         "test.yaml: document 1: EndpointSlice default/s: addressType: is required (IPv4, IPv6 or FQDN)"),
        ("slice with invalid address",
         "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.999]}]\n",
         "test.yaml: document 1: EndpointSlice default/s: endpoints[1].addresses[0]: \"10.0.0.999\" is not a valid IP address"),
        ("slice with address of the other family",
         "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [\"fd00::1\"]}]\n",
         "test.yaml: document 1: EndpointSlice default/s: endpoints[0].addresses[0]: fd00::1 is not an IPv4 address (addressType)"),
        ("slice condition not a boolean",
         "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: maybe}}]\n",
         "test.yaml: document 1: EndpointSlice default/s: endpoints[0].conditions.ready: has the wrong type: expected a boolean (true or false), found a string"),
        ("slice port out of range",
         "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{port: 0}]\n",
         "test.yaml: document 1: EndpointSlice default/s: ports[0].port: 0 is out of range 1-65535"),
        ("old slice API",
         "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: s}\n",
         "test.yaml: document 1: EndpointSlice default/s: apiVersion: discovery.k8s.io/v1beta1 is not supported for EndpointSlice; use discovery.k8s.io/v1"),
        ("endpoints address invalid",
         "apiVersion: v1\nkind: Endpoints\nmetadata: {name: e}\nsubsets: [{addresses: [{ip: 10.0.0.1}], notReadyAddresses: [{ip: nope}]}]\n",
         "test.yaml: document 1: Endpoints default/e: subsets[0].notReadyAddresses[0].ip: \"nope\" is not a valid IP address"),
        ("pod IP invalid",
         "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: 10.0.0}\n",
         "test.yaml: document 1: Pod default/p: status.podIP: \"10.0.0\" is not a valid IP address"),
        ("pod container port",
         "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}\n",
         "test.yaml: document 1: Pod default/p: spec.containers[0].ports[0].containerPort: 0 is out of range 1-65535"),
        ("bad timestamp", serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: [{port: 80}]").replacingOccurrences(of: "  namespace: default", with: "  namespace: default\n  creationTimestamp: yesterday"),
         "test.yaml: document 1: Service default/web: metadata.creationTimestamp: \"yesterday\" is not an RFC 3339 time such as 2024-01-02T15:04:05Z"),
    ]

    @Test(arguments: cases.indices)
    func reportsOneClearError(index: Int) {
        let (name, yaml, expected) = Self.cases[index]
        let result = readYAML(yaml)
        #expect(result.objects.isEmpty, "\(name): no object should be accepted")
        #expect(result.errors.count == 1, "\(name): \(result.errors)")
        let message = result.errors.first?.description ?? ""
        #expect(message.hasPrefix(expected), "\(name): got \(message)")
    }

    @Test func badDocumentIsNamedByItsIndexAndOthersStillRead() {
        let result = readYAML("""
            apiVersion: v1
            kind: Service
            metadata: {name: good}
            spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: bad}
            spec: {clusterIP: 10.96.0.2, ports: [{port: 80, protocol: HTTP}]}
            """)
        #expect(result.objects.map(\.object.meta.name) == ["good"])
        #expect(result.errors.map(\.description) == [
            "test.yaml: document 2: Service default/bad: spec.ports[0].protocol: unknown protocol \"HTTP\": expected TCP, UDP or SCTP"
        ])
    }

    @Test func duplicateObjectsInOneFile() {
        let one = serviceYAML(spec: "  clusterIP: 10.96.0.1\n  ports: [{port: 80}]")
        let result = readYAML(one + "\n---\n" + one)
        #expect(result.objects.count == 1)
        #expect(result.errors.map(\.description) == [
            "test.yaml: document 2: Service default/web: metadata.name: duplicate object: already defined at test.yaml: document 1"
        ])
    }

    @Test func badItemInAListIsNamedByItsIndex() {
        let result = readJSON(#"{"kind":"List","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":80}]}},{"apiVersion":"v1","kind":"Service","metadata":{"name":"b"},"spec":{"clusterIP":"x","ports":[{"port":80}]}}]}"#)
        #expect(result.objects.count == 1)
        #expect(result.errors.map(\.description) == [
            "test.json: document 1, items[1]: Service default/b: spec.clusterIP: \"x\" is not a valid IP address"
        ])
    }

    @Test func malformedJSON() {
        let result = readJSON("{\"kind\": \"Service\",\n \"metadata\": }")
        #expect(result.errors.map(\.description) == ["test.json: document 1: is not valid JSON: line 2, column 14: unexpected character '}'"])
    }

    @Test func danglingSliceAndEndpointsAreReported() {
        let result = readYAML("""
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: orphan-abc, labels: {kubernetes.io/service-name: orphan}}
            addressType: IPv4
            ---
            apiVersion: v1
            kind: Endpoints
            metadata: {name: lonely}
            """)
        #expect(result.errors.isEmpty)
        #expect(Consistency.danglingReferences(result.objects).map(\.description) == [
            "test.yaml: document 1: EndpointSlice default/orphan-abc: metadata.labels[\"kubernetes.io/service-name\"]: Service default/orphan is not defined in the manifests",
            "test.yaml: document 2: Endpoints default/lonely: metadata.name: Service default/lonely is not defined in the manifests (Endpoints are joined to the Service of the same name)",
        ])
    }
}
