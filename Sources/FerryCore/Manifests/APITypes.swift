// Wire-format mirrors of the Kubernetes objects Ferry reads: every field optional, exactly as the API
// spells it, so that decoding never guesses and `-o json|yaml` writes back what the API would.
// `ManifestValidator` turns them into the validated model. They are read from a `ValueTree` by
// `APIDecoding.swift` and written back with `Encodable`.

/// An `int-or-string` field such as `targetPort`.
public enum IntOrString: Encodable, Sendable, Hashable {
    case int(Int)
    case string(String)

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .int(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        }
    }
}

/// `metadata` of any object.
public struct APIObjectMeta: Encodable, Sendable, Hashable {
    public var name: String?
    public var generateName: String?
    public var namespace: String?
    public var labels: [String: String]?
    public var annotations: [String: String]?
    public var creationTimestamp: String?
    public var deletionTimestamp: String?
    public var resourceVersion: String?
    public var uid: String?

    public init(name: String? = nil, namespace: String? = nil, labels: [String: String]? = nil) {
        self.name = name
        self.namespace = namespace
        self.labels = labels
    }
}

/// `v1 Service`.
public struct APIService: Encodable, Sendable, Hashable {
    public struct Port: Encodable, Sendable, Hashable {
        public var name: String?
        public var `protocol`: String?
        public var port: Int?
        public var targetPort: IntOrString?
        public var nodePort: Int?
        public var appProtocol: String?
    }
    public struct ClientIPConfig: Encodable, Sendable, Hashable { public var timeoutSeconds: Int? }
    public struct AffinityConfig: Encodable, Sendable, Hashable { public var clientIP: ClientIPConfig? }
    public struct Spec: Encodable, Sendable, Hashable {
        public var type: String?
        public var clusterIP: String?
        public var clusterIPs: [String]?
        public var ipFamilies: [String]?
        public var ipFamilyPolicy: String?
        public var ports: [Port]?
        public var selector: [String: String]?
        public var externalIPs: [String]?
        public var loadBalancerSourceRanges: [String]?
        public var externalName: String?
        public var sessionAffinity: String?
        public var sessionAffinityConfig: AffinityConfig?
        public var externalTrafficPolicy: String?
        public var internalTrafficPolicy: String?
        public var healthCheckNodePort: Int?
        public var trafficDistribution: String?
        public var publishNotReadyAddresses: Bool?
        public var loadBalancerIP: String?
        public var allocateLoadBalancerNodePorts: Bool?
    }
    public struct Ingress: Encodable, Sendable, Hashable {
        public var ip: String?
        public var hostname: String?
        public var ipMode: String?
    }
    public struct LoadBalancerStatus: Encodable, Sendable, Hashable { public var ingress: [Ingress]? }
    public struct Status: Encodable, Sendable, Hashable { public var loadBalancer: LoadBalancerStatus? }

    public var apiVersion: String?
    public var kind: String?
    public var metadata: APIObjectMeta?
    public var spec: Spec?
    public var status: Status?
}

/// `discovery.k8s.io/v1 EndpointSlice`.
public struct APIEndpointSlice: Encodable, Sendable, Hashable {
    public struct Conditions: Encodable, Sendable, Hashable {
        public var ready: Bool?
        public var serving: Bool?
        public var terminating: Bool?
    }
    public struct NameRef: Encodable, Sendable, Hashable { public var name: String? }
    public struct Hints: Encodable, Sendable, Hashable {
        public var forZones: [NameRef]?
        public var forNodes: [NameRef]?
    }
    public struct ObjectRef: Encodable, Sendable, Hashable {
        public var kind: String?
        public var namespace: String?
        public var name: String?
        public var uid: String?
    }
    public struct Endpoint: Encodable, Sendable, Hashable {
        public var addresses: [String]?
        public var conditions: Conditions?
        public var hostname: String?
        public var nodeName: String?
        public var zone: String?
        public var hints: Hints?
        public var targetRef: ObjectRef?
    }
    public struct Port: Encodable, Sendable, Hashable {
        public var name: String?
        public var `protocol`: String?
        public var port: Int?
        public var appProtocol: String?
    }

    public var apiVersion: String?
    public var kind: String?
    public var metadata: APIObjectMeta?
    public var addressType: String?
    public var endpoints: [Endpoint]?
    public var ports: [Port]?
}

/// `v1 Endpoints`.
public struct APIEndpoints: Encodable, Sendable, Hashable {
    public struct Address: Encodable, Sendable, Hashable {
        public var ip: String?
        public var hostname: String?
        public var nodeName: String?
        public var targetRef: APIEndpointSlice.ObjectRef?
    }
    public struct Port: Encodable, Sendable, Hashable {
        public var name: String?
        public var `protocol`: String?
        public var port: Int?
        public var appProtocol: String?
    }
    public struct Subset: Encodable, Sendable, Hashable {
        public var addresses: [Address]?
        public var notReadyAddresses: [Address]?
        public var ports: [Port]?
    }

    public var apiVersion: String?
    public var kind: String?
    public var metadata: APIObjectMeta?
    public var subsets: [Subset]?
}

/// `v1 Pod`: only what endpoint derivation reads.
public struct APIPod: Encodable, Sendable, Hashable {
    public struct ContainerPort: Encodable, Sendable, Hashable {
        public var name: String?
        public var containerPort: Int?
        public var `protocol`: String?
    }
    public struct Container: Encodable, Sendable, Hashable {
        public var name: String?
        public var image: String?
        public var ports: [ContainerPort]?
    }
    public struct Spec: Encodable, Sendable, Hashable {
        public var nodeName: String?
        public var hostname: String?
        public var containers: [Container]?
        public var initContainers: [Container]?
    }
    public struct Condition: Encodable, Sendable, Hashable {
        public var type: String?
        public var status: String?
    }
    public struct PodIP: Encodable, Sendable, Hashable { public var ip: String? }
    public struct Status: Encodable, Sendable, Hashable {
        public var phase: String?
        public var podIP: String?
        public var podIPs: [PodIP]?
        public var conditions: [Condition]?
    }

    public var apiVersion: String?
    public var kind: String?
    public var metadata: APIObjectMeta?
    public var spec: Spec?
    public var status: Status?
}

/// `v1 Node`: labels and addresses.
public struct APINode: Encodable, Sendable, Hashable {
    public struct Address: Encodable, Sendable, Hashable {
        public var type: String?
        public var address: String?
    }
    public struct Status: Encodable, Sendable, Hashable { public var addresses: [Address]? }

    public var apiVersion: String?
    public var kind: String?
    public var metadata: APIObjectMeta?
    public var status: Status?
}
