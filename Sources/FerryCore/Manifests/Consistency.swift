/// Checks across objects that a single object's validation cannot make.
public enum Consistency {
    /// EndpointSlices and Endpoints whose Service is not among `objects`. Harmless while a cluster
    /// converges (a slice may arrive before its Service), but in a set of manifests it is almost always a
    /// typo, so one-shot commands report it as an error and the watcher as a warning.
    public static func danglingReferences(_ objects: [ManifestObject]) -> [ManifestError] {
        let services = Set(
            objects.compactMap { entry -> ServiceName? in
                if case .service(let service) = entry.object { return service.name }
                return nil
            })
        var problems: [ManifestError] = []
        for entry in objects {
            switch entry.object {
            case .endpointSlice(let slice) where !services.contains(slice.service):
                problems.append(
                    ManifestError(
                        location: entry.location, object: entry.object.key.description,
                        field: "metadata.labels[\"\(EndpointSlice.serviceNameLabel)\"]",
                        message: "Service \(slice.service) is not defined in the manifests"))
            case .endpoints(let endpoints) where !services.contains(endpoints.service):
                problems.append(
                    ManifestError(
                        location: entry.location, object: entry.object.key.description, field: "metadata.name",
                        message:
                            "Service \(endpoints.service) is not defined in the manifests (Endpoints are joined to the Service of the same name)"
                    ))
            default:
                continue
            }
        }
        return problems.sorted { $0.description < $1.description }
    }
}

/// `Kind namespace/name` (as the model keeps a reference) back into the API's object reference.
func objectReference(_ text: String) -> APIEndpointSlice.ObjectRef {
    let parts = text.split(separator: " ", maxSplits: 1)
    var object = APIEndpointSlice.ObjectRef()
    object.kind = parts.first.map(String.init)
    let path = parts.count > 1 ? parts[1].split(separator: "/") : []
    object.namespace = path.count == 2 ? String(path[0]) : nil
    object.name = path.last.map(String.init)
    return object
}

extension EndpointSlice {
    /// The object as the API writes it.
    public var wire: APIEndpointSlice {
        var result = APIEndpointSlice()
        result.apiVersion = "discovery.k8s.io/v1"
        result.kind = "EndpointSlice"
        result.metadata = APIObjectMeta(name: meta.name, namespace: meta.namespace, labels: meta.labels.isEmpty ? nil : meta.labels)
        result.metadata?.creationTimestamp = meta.creationTimestamp.map { $0.formatted(.iso8601) }
        result.addressType = addressType.rawValue
        result.endpoints = endpoints.map { endpoint in
            var wire = APIEndpointSlice.Endpoint()
            wire.addresses = endpoint.addresses.map(\.description)
            wire.conditions = APIEndpointSlice.Conditions(
                ready: endpoint.conditions.ready, serving: endpoint.conditions.serving, terminating: endpoint.conditions.terminating)
            wire.hostname = endpoint.hostname
            wire.nodeName = endpoint.nodeName
            wire.zone = endpoint.zone
            if !endpoint.zoneHints.isEmpty || !endpoint.nodeHints.isEmpty {
                wire.hints = APIEndpointSlice.Hints(
                    forZones: endpoint.zoneHints.isEmpty ? nil : endpoint.zoneHints.map { APIEndpointSlice.NameRef(name: $0) },
                    forNodes: endpoint.nodeHints.isEmpty ? nil : endpoint.nodeHints.map { APIEndpointSlice.NameRef(name: $0) })
            }
            wire.targetRef = endpoint.targetRef.map(objectReference)
            return wire
        }
        result.ports = ports.map { port in
            APIEndpointSlice.Port(name: port.name, protocol: port.protocol.rawValue, port: port.port, appProtocol: nil)
        }
        return result
    }
}

extension Endpoints {
    /// The object as the API writes it.
    public var wire: APIEndpoints {
        func address(_ value: Address) -> APIEndpoints.Address {
            var result = APIEndpoints.Address()
            result.ip = value.ip.description
            result.nodeName = value.nodeName
            result.hostname = value.hostname
            result.targetRef = value.targetRef.map(objectReference)
            return result
        }
        var result = APIEndpoints()
        result.apiVersion = "v1"
        result.kind = "Endpoints"
        result.metadata = APIObjectMeta(name: meta.name, namespace: meta.namespace, labels: meta.labels.isEmpty ? nil : meta.labels)
        result.metadata?.creationTimestamp = meta.creationTimestamp.map { $0.formatted(.iso8601) }
        result.subsets = subsets.map { subset in
            var wire = APIEndpoints.Subset()
            wire.addresses = subset.addresses.isEmpty ? nil : subset.addresses.map(address)
            wire.notReadyAddresses = subset.notReadyAddresses.isEmpty ? nil : subset.notReadyAddresses.map(address)
            wire.ports = subset.ports.map { port in
                var value = APIEndpoints.Port()
                value.name = port.name.isEmpty ? nil : port.name
                value.protocol = port.protocol.rawValue
                value.port = port.port
                return value
            }
            return wire
        }
        return result
    }
}
