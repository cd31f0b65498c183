import Foundation
import Testing
@testable import FerryCore

@Suite("Decoding manifests into the model")
struct ManifestDecodingTests {
    @Test func serviceEveryField() throws {
        let result = readYAML("""
            apiVersion: v1
            kind: Service
            metadata:
              name: public
              namespace: shop
              labels: {app: shop}
              annotations: {note: x}
              creationTimestamp: "2026-11-29T10:00:00Z"
            spec:
              type: LoadBalancer
              clusterIP: 10.96.0.20
              clusterIPs: [10.96.0.20, "fd00::20"]
              ipFamilies: [IPv4, IPv6]
              selector: {app: shop}
              ports:
              - {name: http, protocol: TCP, port: 80, targetPort: web, nodePort: 30080}
              - {name: dns, protocol: UDP, port: 53, targetPort: 5353, nodePort: 30053}
              - {name: sctp, protocol: SCTP, port: 9999}
              externalIPs: [192.0.2.1]
              sessionAffinity: ClientIP
              sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
              externalTrafficPolicy: Local
              internalTrafficPolicy: Local
              healthCheckNodePort: 32000
              trafficDistribution: PreferClose
              publishNotReadyAddresses: true
            status:
              loadBalancer:
                ingress:
                - ip: 198.51.100.1
                - ip: 198.51.100.2
                  ipMode: Proxy
                - hostname: lb.example
            """)
        #expect(result.errors.isEmpty, "\(result.errors)")
        guard case .service(let service)? = result.objects.first?.object else { Issue.record("no service"); return }
        #expect(service.meta.name == "public")
        #expect(service.meta.namespace == "shop")
        #expect(service.meta.labels == ["app": "shop"])
        #expect(service.meta.annotations == ["note": "x"])
        #expect(service.meta.creationTimestamp == Date(timeIntervalSince1970: 1_795_946_400))
        #expect(service.type == .loadBalancer)
        #expect(service.clusterIPs == [ip("10.96.0.20"), ip("fd00::20")])
        #expect(service.ipFamilies == [.ipv4, .ipv6])
        #expect(service.ports == [
            ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .name("web"), nodePort: 30080),
            ServicePort(name: "dns", protocol: .udp, port: 53, targetPort: .number(5353), nodePort: 30053),
            ServicePort(name: "sctp", protocol: .sctp, port: 9999, targetPort: .number(9999)),
        ])
        #expect(service.selector == ["app": "shop"])
        #expect(service.externalIPs == [ip("192.0.2.1")])
        #expect(service.sessionAffinity == .clientIP(timeoutSeconds: 60))
        #expect(service.externalTrafficPolicy == .local)
        #expect(service.internalTrafficPolicy == .local)
        #expect(service.healthCheckNodePort == 32000)
        #expect(service.trafficDistribution == "PreferClose")
        #expect(service.publishNotReadyAddresses)
        #expect(service.loadBalancerIngress.count == 3)
        #expect(service.loadBalancerVIPs == [ip("198.51.100.1")])
        #expect(service.isExternallyAccessible)
    }

    @Test func serviceDefaults() throws {
        let result = readYAML("""
            apiVersion: v1
            kind: Service
            metadata: {name: plain}
            spec:
              clusterIP: 10.96.0.1
              ports: [{port: 8080}]
              sessionAffinity: ClientIP
            """)
        #expect(result.errors.isEmpty, "\(result.errors)")
        guard case .service(let service)? = result.objects.first?.object else { Issue.record("no service"); return }
        #expect(service.meta.namespace == "default")
        #expect(service.type == .clusterIP)
        #expect(service.ports == [ServicePort(name: "", protocol: .tcp, port: 8080, targetPort: .number(8080))])
        #expect(service.clusterIPs == [ip("10.96.0.1")])
        #expect(service.ipFamilies == [.ipv4])
        #expect(service.selector == nil)
        #expect(service.sessionAffinity == .clientIP(timeoutSeconds: 10_800))
        #expect(service.externalTrafficPolicy == .cluster)
        #expect(service.internalTrafficPolicy == .cluster)
        #expect(service.skipReason == nil)
        #expect(!service.isExternallyAccessible)
    }

    @Test(arguments: [
        ("clusterIP: None\n  ports: [{port: 80}]", "headless service (clusterIP: None)"),
        ("type: ExternalName\n  externalName: db.example.com", "ExternalName service"),
        ("ports: [{port: 80}]", "no cluster IP"),
    ])
    func servicesAProxySkips(spec: String, reason: String) throws {
        let result = readYAML(serviceYAML(spec: "  " + spec))
        #expect(result.errors.isEmpty, "\(result.errors)")
        guard case .service(let service)? = result.objects.first?.object else { Issue.record("no service"); return }
        #expect(service.skipReason == reason)
    }

    @Test func endpointSliceConditionsUseTheAPIDefaults() throws {
        let result = readYAML("""
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: web-abc
              labels: {kubernetes.io/service-name: web}
            addressType: IPv4
            endpoints:
            - addresses: [10.244.0.1]
            - addresses: [10.244.0.2]
              conditions: {ready: false}
            - addresses: [10.244.0.3]
              conditions: {ready: false, serving: true, terminating: true}
            - addresses: [10.244.0.4]
              conditions: {serving: false}
              nodeName: node-1
              zone: zone-a
              hostname: pod-4
              hints: {forZones: [{name: zone-a}], forNodes: [{name: node-1}]}
              targetRef: {kind: Pod, namespace: default, name: web-4}
            ports:
            - {name: http, port: 8080}
            - {name: udp, protocol: UDP, port: 53}
            - {name: all}
            """)
        #expect(result.errors.isEmpty, "\(result.errors)")
        guard case .endpointSlice(let slice)? = result.objects.first?.object else { Issue.record("no slice"); return }
        #expect(slice.serviceName == "web")
        #expect(slice.service == ServiceName(namespace: "default", name: "web"))
        #expect(slice.addressType == .ipv4)
        #expect(slice.endpoints.map(\.conditions) == [
            EndpointConditions(ready: true, serving: true, terminating: false),
            EndpointConditions(ready: false, serving: false, terminating: false),
            EndpointConditions(ready: false, serving: true, terminating: true),
            EndpointConditions(ready: true, serving: false, terminating: false),
        ])
        let last = slice.endpoints[3]
        #expect(last.nodeName == "node-1")
        #expect(last.zone == "zone-a")
        #expect(last.hostname == "pod-4")
        #expect(last.zoneHints == ["zone-a"])
        #expect(last.nodeHints == ["node-1"])
        #expect(last.targetRef == "Pod default/web-4")
        #expect(slice.ports == [
            SlicePort(name: "http", protocol: .tcp, port: 8080), SlicePort(name: "udp", protocol: .udp, port: 53),
            SlicePort(name: "all", protocol: .tcp, port: nil),
        ])
    }

    @Test func fqdnSlicesAreKeptButCarryNoAddresses() {
        let result = readYAML("""
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: ext, labels: {kubernetes.io/service-name: ext}}
            addressType: FQDN
            endpoints: [{addresses: [db.example.com]}]
            """)
        #expect(result.errors.isEmpty)
        guard case .endpointSlice(let slice)? = result.objects.first?.object else { Issue.record("no slice"); return }
        #expect(slice.addressType == .fqdn)
        #expect(slice.endpoints.first?.addresses == [])
    }

    @Test func endpointsPodAndNode() throws {
        let objects = objects("""
            apiVersion: v1
            kind: Endpoints
            metadata: {name: manual, namespace: ops}
            subsets:
            - addresses: [{ip: 10.1.0.1, nodeName: node-1, targetRef: {kind: Pod, namespace: ops, name: a}}]
              notReadyAddresses: [{ip: 10.1.0.2}]
              ports: [{name: http, port: 80}]
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: a, namespace: ops, labels: {app: a}, deletionTimestamp: "2026-11-29T10:00:00Z"}
            spec:
              nodeName: node-1
              containers:
              - name: c
                ports: [{name: web, containerPort: 8080}, {containerPort: 53, protocol: UDP}]
            status:
              phase: Running
              podIP: 10.1.0.1
              podIPs: [{ip: 10.1.0.1}, {ip: "fd00::1"}]
              conditions: [{type: PodScheduled, status: "True"}, {type: Ready, status: "True"}]
            ---
            apiVersion: v1
            kind: Node
            metadata: {name: node-1, labels: {topology.kubernetes.io/zone: zone-a}}
            status:
              addresses: [{type: InternalIP, address: 10.0.0.1}, {type: Hostname, address: node-1}, {type: ExternalIP, address: 203.0.113.1}]
            """)
        #expect(objects.count == 3)
        guard case .endpoints(let endpoints) = objects[0], case .pod(let pod) = objects[1], case .node(let node) = objects[2] else {
            Issue.record("wrong kinds: \(objects.map(\.kind))")
            return
        }
        #expect(endpoints.subsets == [
            Endpoints.Subset(
                addresses: [Endpoints.Address(ip: ip("10.1.0.1"), nodeName: "node-1", targetRef: "Pod ops/a")],
                notReadyAddresses: [Endpoints.Address(ip: ip("10.1.0.2"))], ports: [SlicePort(name: "http", port: 80)])
        ])
        #expect(pod.podIPs == [ip("10.1.0.1"), ip("fd00::1")])
        #expect(pod.ready == true)
        #expect(pod.isTerminating)
        #expect(pod.nodeName == "node-1")
        #expect(pod.containerPorts == [
            Pod.ContainerPort(name: "web", containerPort: 8080), Pod.ContainerPort(name: "", containerPort: 53, protocol: .udp),
        ])
        #expect(node.meta.namespace == "")
        #expect(node.zone == "zone-a")
        #expect(node.addresses == [ip("10.0.0.1"), ip("203.0.113.1")])
    }

    @Test func listsAndTypedListsAndOtherKinds() {
        let result = readYAML("""
            apiVersion: v1
            kind: List
            items:
            - apiVersion: v1
              kind: Service
              metadata: {name: a}
              spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
            - apiVersion: apps/v1
              kind: Deployment
              metadata: {name: a}
            ---
            apiVersion: v1
            kind: ServiceList
            items:
            - metadata: {name: b, namespace: x}
              spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
            ---
            # an empty document
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: c}
            """)
        #expect(result.errors.isEmpty, "\(result.errors)")
        #expect(result.objects.map(\.object.key.description) == ["Service default/a", "Service x/b"])
        #expect(result.objects.map(\.location.description) == ["test.yaml: document 1, items[0]", "test.yaml: document 2, items[0]"])
        #expect(result.skipped == ["Deployment default/a (test.yaml: document 1, items[1])", "ConfigMap default/c (test.yaml: document 4)"])
    }

    @Test func jsonSingleObjectAndList() {
        let single = readJSON(#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":80,"targetPort":"http"}]}}"#)
        #expect(single.errors.isEmpty)
        guard case .service(let service)? = single.objects.first?.object else { Issue.record("no service"); return }
        #expect(service.ports.first?.targetPort == .name("http"))
        let list = readJSON(#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"a"},"subsets":[]}]}"#)
        #expect(list.errors.isEmpty)
        #expect(list.objects.first?.object.kind == .endpoints)
        #expect(readJSON("  \n").objects.isEmpty)
    }

    @Test func kubectlGetOutputReads() {
        // `kubectl get svc,endpointslices -o yaml` shape: a List with resourceVersion metadata and managedFields.
        let result = readYAML("""
            apiVersion: v1
            items:
            - apiVersion: v1
              kind: Service
              metadata:
                creationTimestamp: "2026-11-29T10:00:00Z"
                managedFields:
                - apiVersion: v1
                  fieldsType: FieldsV1
                  fieldsV1: {f:spec: {f:ports: {}}}
                  manager: kubectl-create
                  operation: Update
                  time: "2026-11-29T10:00:00Z"
                name: my-service
                namespace: default
                resourceVersion: "1234"
                uid: 5b3f2a8e-1c4d-4e6f-9a7b-0c1d2e3f4a01
              spec:
                clusterIP: 10.96.0.10
                clusterIPs: [10.96.0.10]
                internalTrafficPolicy: Cluster
                ipFamilies: [IPv4]
                ipFamilyPolicy: SingleStack
                ports:
                - {name: http, port: 80, protocol: TCP, targetPort: 80}
                selector: {app: my-app}
                sessionAffinity: None
                type: ClusterIP
              status:
                loadBalancer: {}
            kind: List
            metadata:
              resourceVersion: ""
            """)
        #expect(result.errors.isEmpty, "\(result.errors)")
        #expect(result.objects.count == 1)
        #expect(result.objects.first?.object.meta.resourceVersion == "1234")
    }
}

@Suite("loadBalancerSourceRanges")
struct SourceRangesTests {
    @Test func decodedAsTheAPIServerReadsThemAndCarriedToTheTables() throws {
        let read = readYAML("""
            apiVersion: v1
            kind: Service
            metadata: {name: lb}
            spec:
              type: LoadBalancer
              clusterIP: 10.96.0.40
              loadBalancerSourceRanges: ["203.0.113.0/24", " 198.51.100.7/32 "]
              ports: [{port: 443, nodePort: 30443}]
            status: {loadBalancer: {ingress: [{ip: 192.0.2.50}]}}
            """)
        #expect(read.errors.isEmpty, "\(read.errors)")
        guard case .service(let service)? = read.objects.first?.object else {
            Issue.record("no service")
            return
        }
        #expect(service.loadBalancerSourceRanges.map(\.description) == ["203.0.113.0/24", "198.51.100.7/32"])
        var state = ClusterState()
        state.upsert(.service(service))
        let tables = TableBuilder.build(state, node: NodeContext(name: "node-1"))
        #expect(tables.sorted.first?.loadBalancerSourceRanges == service.loadBalancerSourceRanges)
    }

    @Test func aBadRangeNamesItsField() {
        let read = readYAML("""
            apiVersion: v1
            kind: Service
            metadata: {name: lb}
            spec: {type: LoadBalancer, clusterIP: 10.96.0.40, loadBalancerSourceRanges: [203.0.113.0/33], ports: [{port: 443}]}
            """)
        #expect(read.errors.map(\.field) == ["spec.loadBalancerSourceRanges[0]"])
        #expect(read.errors.first?.message.contains("is not a valid CIDR") == true)
    }
}
