// Reading the wire types from a `ValueTree`, field by field, with the field path in every error.

extension APIObjectMeta {
    init(_ r: FieldReader) throws(FieldError) {
        name = try r.string("name")
        generateName = try r.string("generateName")
        namespace = try r.string("namespace")
        labels = try r.stringMap("labels")
        annotations = try r.stringMap("annotations")
        creationTimestamp = try r.string("creationTimestamp")
        deletionTimestamp = try r.string("deletionTimestamp")
        resourceVersion = try r.string("resourceVersion")
        uid = try r.string("uid")
    }
}

extension APIService {
    init(_ r: FieldReader) throws(FieldError) {
        apiVersion = try r.string("apiVersion")
        kind = try r.string("kind")
        metadata = try r.object("metadata").map { (m) throws(FieldError) in try APIObjectMeta(m) }
        spec = try r.object("spec").map { (s) throws(FieldError) in try Spec(s) }
        status = try r.object("status").map { (s) throws(FieldError) in
            Status(
                loadBalancer: try s.object("loadBalancer").map { (lb) throws(FieldError) in
                    LoadBalancerStatus(
                        ingress: try lb.list("ingress") { (i) throws(FieldError) in
                            Ingress(ip: try i.string("ip"), hostname: try i.string("hostname"), ipMode: try i.string("ipMode"))
                        })
                })
        }
    }
}

extension APIService.Spec {
    init(_ r: FieldReader) throws(FieldError) {
        type = try r.string("type")
        clusterIP = try r.string("clusterIP")
        clusterIPs = try r.strings("clusterIPs")
        ipFamilies = try r.strings("ipFamilies")
        ipFamilyPolicy = try r.string("ipFamilyPolicy")
        ports = try r.list("ports") { (p) throws(FieldError) in
            APIService.Port(
                name: try p.string("name"), protocol: try p.string("protocol"), port: try p.int("port"),
                targetPort: try p.intOrString("targetPort"), nodePort: try p.int("nodePort"), appProtocol: try p.string("appProtocol"))
        }
        selector = try r.stringMap("selector")
        externalIPs = try r.strings("externalIPs")
        loadBalancerSourceRanges = try r.strings("loadBalancerSourceRanges")
        externalName = try r.string("externalName")
        sessionAffinity = try r.string("sessionAffinity")
        sessionAffinityConfig = try r.object("sessionAffinityConfig").map { (c) throws(FieldError) in
            APIService.AffinityConfig(
                clientIP: try c.object("clientIP").map { (ip) throws(FieldError) in
                    APIService.ClientIPConfig(timeoutSeconds: try ip.int("timeoutSeconds"))
                })
        }
        externalTrafficPolicy = try r.string("externalTrafficPolicy")
        internalTrafficPolicy = try r.string("internalTrafficPolicy")
        healthCheckNodePort = try r.int("healthCheckNodePort")
        allocateLoadBalancerNodePorts = try r.bool("allocateLoadBalancerNodePorts")
        trafficDistribution = try r.string("trafficDistribution")
        publishNotReadyAddresses = try r.bool("publishNotReadyAddresses")
        loadBalancerIP = try r.string("loadBalancerIP")
    }
}

extension APIEndpointSlice {
    init(_ r: FieldReader) throws(FieldError) {
        apiVersion = try r.string("apiVersion")
        kind = try r.string("kind")
        metadata = try r.object("metadata").map { (m) throws(FieldError) in try APIObjectMeta(m) }
        addressType = try r.string("addressType")
        endpoints = try r.list("endpoints") { (e) throws(FieldError) in
            Endpoint(
                addresses: try e.strings("addresses"),
                conditions: try e.object("conditions").map { (c) throws(FieldError) in
                    Conditions(ready: try c.bool("ready"), serving: try c.bool("serving"), terminating: try c.bool("terminating"))
                },
                hostname: try e.string("hostname"), nodeName: try e.string("nodeName"), zone: try e.string("zone"),
                hints: try e.object("hints").map { (h) throws(FieldError) in
                    Hints(
                        forZones: try h.list("forZones") { (z) throws(FieldError) in NameRef(name: try z.string("name")) },
                        forNodes: try h.list("forNodes") { (n) throws(FieldError) in NameRef(name: try n.string("name")) })
                },
                targetRef: try e.object("targetRef").map { (t) throws(FieldError) in try ObjectRef(t) })
        }
        ports = try r.list("ports") { (p) throws(FieldError) in
            Port(
                name: try p.string("name"), protocol: try p.string("protocol"), port: try p.int("port"),
                appProtocol: try p.string("appProtocol"))
        }
    }
}

extension APIEndpointSlice.ObjectRef {
    init(_ r: FieldReader) throws(FieldError) {
        kind = try r.string("kind")
        namespace = try r.string("namespace")
        name = try r.string("name")
        uid = try r.string("uid")
    }
}

extension APIEndpoints {
    init(_ r: FieldReader) throws(FieldError) {
        apiVersion = try r.string("apiVersion")
        kind = try r.string("kind")
        metadata = try r.object("metadata").map { (m) throws(FieldError) in try APIObjectMeta(m) }
        func address(_ a: FieldReader) throws(FieldError) -> Address {
            Address(
                ip: try a.string("ip"), hostname: try a.string("hostname"), nodeName: try a.string("nodeName"),
                targetRef: try a.object("targetRef").map { (t) throws(FieldError) in try APIEndpointSlice.ObjectRef(t) })
        }
        subsets = try r.list("subsets") { (s) throws(FieldError) in
            Subset(
                addresses: try s.list("addresses", address), notReadyAddresses: try s.list("notReadyAddresses", address),
                ports: try s.list("ports") { (p) throws(FieldError) in
                    Port(
                        name: try p.string("name"), protocol: try p.string("protocol"), port: try p.int("port"),
                        appProtocol: try p.string("appProtocol"))
                })
        }
    }
}

extension APIPod {
    init(_ r: FieldReader) throws(FieldError) {
        apiVersion = try r.string("apiVersion")
        kind = try r.string("kind")
        metadata = try r.object("metadata").map { (m) throws(FieldError) in try APIObjectMeta(m) }
        func containers(_ key: StaticString, _ s: FieldReader) throws(FieldError) -> [Container]? {
            try s.list(key) { (c) throws(FieldError) in
                Container(
                    name: try c.string("name"), image: try c.string("image"),
                    ports: try c.list("ports") { (p) throws(FieldError) in
                        ContainerPort(
                            name: try p.string("name"), containerPort: try p.int("containerPort"), protocol: try p.string("protocol"))
                    })
            }
        }
        spec = try r.object("spec").map { (s) throws(FieldError) in
            Spec(
                nodeName: try s.string("nodeName"), hostname: try s.string("hostname"), containers: try containers("containers", s),
                initContainers: try containers("initContainers", s))
        }
        status = try r.object("status").map { (s) throws(FieldError) in
            Status(
                phase: try s.string("phase"), podIP: try s.string("podIP"),
                podIPs: try s.list("podIPs") { (p) throws(FieldError) in PodIP(ip: try p.string("ip")) },
                conditions: try s.list("conditions") { (c) throws(FieldError) in
                    Condition(type: try c.string("type"), status: try c.string("status"))
                })
        }
    }
}

extension APINode {
    init(_ r: FieldReader) throws(FieldError) {
        apiVersion = try r.string("apiVersion")
        kind = try r.string("kind")
        metadata = try r.object("metadata").map { (m) throws(FieldError) in try APIObjectMeta(m) }
        status = try r.object("status").map { (s) throws(FieldError) in
            Status(
                addresses: try s.list("addresses") { (a) throws(FieldError) in
                    Address(type: try a.string("type"), address: try a.string("address"))
                })
        }
    }
}
