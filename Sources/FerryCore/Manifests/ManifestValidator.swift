import Foundation

/// Turns wire objects into the validated model, applying the API's defaults and rejecting what the API
/// server would reject: bad IPs, ports out of range, unknown protocols and enum values.
/// Each error names the field (`spec.ports[1].targetPort`).
public enum ManifestValidator {
    public static func validate(_ wire: WireObject) throws(FieldError) -> KubeObject {
        switch wire {
        case .service(let value): return .service(try service(value))
        case .endpointSlice(let value): return .endpointSlice(try endpointSlice(value))
        case .endpoints(let value): return .endpoints(try endpoints(value))
        case .pod(let value): return .pod(try pod(value))
        case .node(let value): return .node(try node(value))
        }
    }

    // MARK: Service

    public static func service(_ wire: APIService) throws(FieldError) -> Service {
        let meta = try objectMeta(wire.metadata, namespaced: true)
        let spec = wire.spec ?? APIService.Spec()
        let type = try enumValue(spec.type, "spec.type", default: ServiceType.clusterIP)

        var clusterIPs: [IPAddress] = []
        var headless = false
        if let single = spec.clusterIP, single == "None" {
            headless = true
        } else if let single = spec.clusterIP, !single.isEmpty {
            clusterIPs = [try ip(single, "spec.clusterIP")]
        }
        if let list = spec.clusterIPs, !list.isEmpty {
            if list.first == "None" {
                headless = true
                clusterIPs = []
            } else {
                let parsed = try list.enumerated().map { (index, text) throws(FieldError) in try ip(text, "spec.clusterIPs[\(index)]") }
                if let first = clusterIPs.first, first != parsed[0] {
                    throw FieldError("spec.clusterIPs[0]", "must equal spec.clusterIP (\(first)), found \(parsed[0])")
                }
                if parsed.count > 2 || (parsed.count == 2 && parsed[0].family == parsed[1].family) {
                    throw FieldError("spec.clusterIPs", "may hold at most one address of each family")
                }
                clusterIPs = parsed
            }
        }
        let familyPolicy = try spec.ipFamilyPolicy.map { (text) throws(FieldError) in
            try enumValue(text, "spec.ipFamilyPolicy", default: IPFamilyPolicy.singleStack)
        }
        let families = try (spec.ipFamilies ?? []).enumerated().map { (index, text) throws(FieldError) in
            try enumValue(text, "spec.ipFamilies[\(index)]", default: IPFamily.ipv4)
        }

        var ports: [ServicePort] = []
        var seenNames: Set<String> = []
        var seenPorts: Set<String> = []
        let wirePorts = spec.ports ?? []
        for (index, port) in wirePorts.enumerated() {
            func path() -> String { "spec.ports[\(index)]" }
            let name = port.name ?? ""
            if wirePorts.count > 1 && name.isEmpty {
                throw FieldError("\(path()).name", "is required when a Service has more than one port")
            }
            // A Service's port names are DNS-1123 labels (the API server's validateServicePort), so
            // `80-8080`, which `kubectl create service` writes, is valid; targetPort names and container
            // port names are IANA service names (checkPortName).
            if !name.isEmpty { try checkDNSLabel(name, "\(path()).name") }
            if !seenNames.insert(name).inserted { throw FieldError("\(path()).name", "duplicate port name \"\(name)\"") }
            let proto = try l4Protocol(port.protocol, "\(path()).protocol")
            guard let number = port.port else { throw FieldError("\(path()).port", "is required") }
            try checkPort(number, "\(path()).port")
            if !seenPorts.insert("\(number)/\(proto.rawValue)").inserted {
                throw FieldError("\(path()).port", "duplicate port \(number)/\(proto.rawValue)")
            }
            let target: TargetPort
            switch port.targetPort {
            case nil: target = .number(number)
            case .int(let value):
                if value == 0 {
                    target = .number(number)
                } else {
                    try checkPort(value, "\(path()).targetPort")
                    target = .number(value)
                }
            case .string(let text):
                if let value = Int(text) {
                    try checkPort(value, "\(path()).targetPort")
                    target = .number(value)
                } else {
                    try checkPortName(text, "\(path()).targetPort")
                    target = .name(text)
                }
            }
            var nodePort: Int? = nil
            if let value = port.nodePort, value != 0 {
                guard type == .nodePort || type == .loadBalancer else {
                    throw FieldError("\(path()).nodePort", "may not be used when spec.type is \(type.rawValue)")
                }
                try checkPort(value, "\(path()).nodePort")
                nodePort = value
            }
            ports.append(ServicePort(name: name, protocol: proto, port: number, targetPort: target, nodePort: nodePort))
        }
        if type != .externalName && ports.isEmpty && !headless {
            throw FieldError("spec.ports", "is required: a Service needs at least one port")
        }

        let externalIPs = try (spec.externalIPs ?? []).enumerated().map { (index, text) throws(FieldError) in
            let address = try ip(text, "spec.externalIPs[\(index)]")
            if let special = address.specialRange {
                throw FieldError("spec.externalIPs[\(index)]", "\(text) may not be \(special)")
            }
            return address
        }
        try checkServiceRules(spec, type: type, headless: headless, clusterIPs: clusterIPs, externalIPs: externalIPs)
        // As the API server reads them: surrounding spaces allowed, then a CIDR.
        let sourceRanges = try (spec.loadBalancerSourceRanges ?? []).enumerated().map { (index, text) throws(FieldError) -> CIDR in
            guard let range = CIDR(text.trimmingCharacters(in: .whitespaces)) else {
                throw FieldError(
                    "spec.loadBalancerSourceRanges[\(index)]", "\"\(text)\" is not a valid CIDR such as 203.0.113.0/24")
            }
            return range
        }
        let affinityKind = spec.sessionAffinity ?? "None"
        let affinity: SessionAffinity
        switch affinityKind {
        case "None", "": affinity = .none
        case "ClientIP":
            let timeout = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? SessionAffinity.defaultTimeoutSeconds
            guard (1...86_400).contains(timeout) else {
                throw FieldError("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "\(timeout) is out of range 1-86400")
            }
            affinity = .clientIP(timeoutSeconds: timeout)
        default:
            throw FieldError("spec.sessionAffinity", "unknown value \"\(affinityKind)\": expected None or ClientIP")
        }
        let externalPolicy = try enumValue(spec.externalTrafficPolicy, "spec.externalTrafficPolicy", default: TrafficPolicy.cluster)
        let internalPolicy = try enumValue(spec.internalTrafficPolicy, "spec.internalTrafficPolicy", default: TrafficPolicy.cluster)
        var healthCheck: Int? = nil
        if let value = spec.healthCheckNodePort, value != 0 {
            try checkPort(value, "spec.healthCheckNodePort")
            healthCheck = value
        }
        if type == .externalName, (spec.externalName ?? "").isEmpty {
            throw FieldError("spec.externalName", "is required when spec.type is ExternalName")
        }
        var ingress: [LoadBalancerIngress] = []
        for (index, entry) in (wire.status?.loadBalancer?.ingress ?? []).enumerated() {
            func path() -> String { "status.loadBalancer.ingress[\(index)]" }
            let address = try entry.ip.map { (text) throws(FieldError) in try ip(text, "\(path()).ip") }
            let mode = try enumValue(entry.ipMode, "\(path()).ipMode", default: LoadBalancerIngress.Mode.vip)
            ingress.append(LoadBalancerIngress(ip: address, hostname: entry.hostname, ipMode: mode))
        }
        var balancer: BalancerKind? = nil
        if let text = meta.annotations[BalancerKind.annotation] {
            guard let kind = BalancerKind(rawValue: text) else {
                throw FieldError(
                    "metadata.annotations[\"\(BalancerKind.annotation)\"]", "unknown balancer \"\(text)\": expected \(BalancerKind.choices)"
                )
            }
            balancer = kind
        }
        var service = Service(
            meta: meta, type: type, clusterIPs: clusterIPs, isHeadless: headless, ipFamilies: families, ports: ports,
            selector: spec.selector, externalIPs: externalIPs, externalName: spec.externalName,
            sessionAffinity: affinity, externalTrafficPolicy: externalPolicy, internalTrafficPolicy: internalPolicy,
            healthCheckNodePort: healthCheck, trafficDistribution: spec.trafficDistribution,
            publishNotReadyAddresses: spec.publishNotReadyAddresses ?? false, loadBalancerIngress: ingress,
            userspaceBalancer: balancer, loadBalancerSourceRanges: sourceRanges)
        service.ipFamilyPolicy = familyPolicy
        service.allocateLoadBalancerNodePorts = spec.allocateLoadBalancerNodePorts ?? true
        return service
    }

    /// The API server's rules that tie a Service's fields to its type (`ValidateService`): what it
    /// refuses, Ferry refuses with the same field named.
    static func checkServiceRules(
        _ spec: APIService.Spec, type: ServiceType, headless: Bool, clusterIPs: [IPAddress], externalIPs: [IPAddress]
    ) throws(FieldError) {
        if type == .externalName {
            if headless || !clusterIPs.isEmpty { throw FieldError("spec.clusterIP", "may not be set for ExternalName services") }
            if let name = spec.externalName, !name.isEmpty, !isDNSSubdomain(name) {
                throw FieldError("spec.externalName", "\"\(name)\" is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')")
            }
        }
        if headless && (type == .nodePort || type == .loadBalancer) {
            throw FieldError("spec.clusterIP", "may not be None for \(type.rawValue) services")
        }
        let externallyAccessible = type == .nodePort || type == .loadBalancer || (type == .clusterIP && !externalIPs.isEmpty)
        if let policy = spec.externalTrafficPolicy, !policy.isEmpty, !externallyAccessible {
            throw FieldError("spec.externalTrafficPolicy", "may only be set for externally-accessible services (NodePort, LoadBalancer, or with externalIPs)")
        }
        if let port = spec.healthCheckNodePort, port != 0, !(type == .loadBalancer && spec.externalTrafficPolicy == "Local") {
            throw FieldError("spec.healthCheckNodePort", "may only be set when type is LoadBalancer and externalTrafficPolicy is Local")
        }
        if !(spec.loadBalancerSourceRanges ?? []).isEmpty, type != .loadBalancer {
            throw FieldError("spec.loadBalancerSourceRanges", "may only be used when type is LoadBalancer")
        }
        if spec.allocateLoadBalancerNodePorts != nil, type != .loadBalancer {
            throw FieldError("spec.allocateLoadBalancerNodePorts", "may only be used when type is LoadBalancer")
        }
        if (spec.sessionAffinity ?? "None") == "None" || spec.sessionAffinity == "", spec.sessionAffinityConfig?.clientIP != nil {
            throw FieldError("spec.sessionAffinityConfig", "must not be set when sessionAffinity is None")
        }
        if spec.ipFamilyPolicy == "SingleStack", clusterIPs.count > 1 {
            throw FieldError("spec.clusterIPs", "may hold one address when ipFamilyPolicy is SingleStack")
        }
        if let families = spec.ipFamilies {
            if families.count > 2 || (families.count == 2 && families[0] == families[1]) {
                throw FieldError("spec.ipFamilies", "may hold at most one of each family (IPv4, IPv6)")
            }
            for (index, address) in clusterIPs.enumerated() where index < families.count && families[index] != address.family.rawValue {
                throw FieldError("spec.clusterIPs[\(index)]", "\(address) is not of family \(families[index]) (spec.ipFamilies[\(index)])")
            }
        }
    }

    /// A DNS-1123 subdomain: at most 253 characters of dot-separated labels.
    static func isDNSSubdomain(_ name: String) -> Bool {
        name.utf8.count <= 253 && name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy(isDNSLabel)
    }

    /// A DNS-1123 label: at most 63 lowercase letters, digits and dashes, starting and ending with a
    /// letter or digit.
    static func isDNSLabel(_ label: some StringProtocol) -> Bool {
        let bytes = Array(label.utf8)
        let alphanumeric = { (byte: UInt8) in (byte >= 97 && byte <= 122) || (byte >= 48 && byte <= 57) }
        return !bytes.isEmpty && bytes.count <= 63 && bytes.allSatisfy { alphanumeric($0) || $0 == 45 } && alphanumeric(bytes.first!)
            && alphanumeric(bytes.last!)
    }

    // MARK: EndpointSlice

    public static func endpointSlice(_ wire: APIEndpointSlice) throws(FieldError) -> EndpointSlice {
        let meta = try objectMeta(wire.metadata, namespaced: true)
        guard let serviceName = meta.labels[EndpointSlice.serviceNameLabel], !serviceName.isEmpty else {
            throw FieldError(
                "metadata.labels[\"\(EndpointSlice.serviceNameLabel)\"]",
                "is required: it names the Service this slice belongs to")
        }
        guard let typeText = wire.addressType else { throw FieldError("addressType", "is required (IPv4, IPv6 or FQDN)") }
        let addressType = try enumValue(typeText, "addressType", default: EndpointSlice.AddressType.ipv4)
        var endpoints: [SliceEndpoint] = []
        for (index, entry) in (wire.endpoints ?? []).enumerated() {
            func path() -> String { "endpoints[\(index)]" }
            let texts = entry.addresses ?? []
            guard !texts.isEmpty else { throw FieldError("\(path()).addresses", "is required: at least one address") }
            var addresses: [IPAddress] = []
            if addressType != .fqdn {
                for (position, text) in texts.enumerated() {
                    let address = try ip(text, "\(path()).addresses[\(position)]")
                    guard address.family.rawValue == addressType.rawValue else {
                        throw FieldError(
                            "\(path()).addresses[\(position)]", "\(text) is not an \(addressType.rawValue) address (addressType)")
                    }
                    addresses.append(address)
                }
            }
            let conditions = EndpointConditions(
                readyField: entry.conditions?.ready, servingField: entry.conditions?.serving,
                terminatingField: entry.conditions?.terminating)
            endpoints.append(
                SliceEndpoint(
                    addresses: addresses, conditions: conditions, nodeName: entry.nodeName, zone: entry.zone,
                    hostname: entry.hostname, zoneHints: (entry.hints?.forZones ?? []).compactMap(\.name),
                    nodeHints: (entry.hints?.forNodes ?? []).compactMap(\.name), targetRef: reference(entry.targetRef)))
        }
        var ports: [SlicePort] = []
        for (index, entry) in (wire.ports ?? []).enumerated() {
            func path() -> String { "ports[\(index)]" }
            if let number = entry.port { try checkPort(number, "\(path()).port") }
            ports.append(
                SlicePort(name: try portLabel(entry.name, "\(path()).name"), protocol: try l4Protocol(entry.protocol, "\(path()).protocol"), port: entry.port))
        }
        return EndpointSlice(meta: meta, serviceName: serviceName, addressType: addressType, endpoints: endpoints, ports: ports)
    }

    // MARK: Endpoints

    public static func endpoints(_ wire: APIEndpoints) throws(FieldError) -> Endpoints {
        let meta = try objectMeta(wire.metadata, namespaced: true)
        var subsets: [Endpoints.Subset] = []
        for (index, subset) in (wire.subsets ?? []).enumerated() {
            func path() -> String { "subsets[\(index)]" }
            func addresses(_ list: [APIEndpoints.Address]?, _ field: String) throws(FieldError) -> [Endpoints.Address] {
                var result: [Endpoints.Address] = []
                for (position, entry) in (list ?? []).enumerated() {
                    guard let text = entry.ip else { throw FieldError("\(path()).\(field)[\(position)].ip", "is required") }
                    result.append(
                        Endpoints.Address(
                            ip: try ip(text, "\(path()).\(field)[\(position)].ip"), nodeName: entry.nodeName,
                            hostname: entry.hostname, targetRef: reference(entry.targetRef)))
                }
                return result
            }
            var ports: [SlicePort] = []
            for (position, entry) in (subset.ports ?? []).enumerated() {
                guard let number = entry.port else { throw FieldError("\(path()).ports[\(position)].port", "is required") }
                try checkPort(number, "\(path()).ports[\(position)].port")
                ports.append(
                    SlicePort(
                        name: try portLabel(entry.name, "\(path()).ports[\(position)].name"), protocol: try l4Protocol(entry.protocol, "\(path()).ports[\(position)].protocol"),
                        port: number))
            }
            subsets.append(
                Endpoints.Subset(
                    addresses: try addresses(subset.addresses, "addresses"),
                    notReadyAddresses: try addresses(subset.notReadyAddresses, "notReadyAddresses"), ports: ports))
        }
        return Endpoints(meta: meta, subsets: subsets)
    }

    // MARK: Pod and Node

    public static func pod(_ wire: APIPod) throws(FieldError) -> Pod {
        let meta = try objectMeta(wire.metadata, namespaced: true)
        var podIPs: [IPAddress] = []
        if let list = wire.status?.podIPs, !list.isEmpty {
            for (index, entry) in list.enumerated() {
                guard let text = entry.ip else { throw FieldError("status.podIPs[\(index)].ip", "is required") }
                podIPs.append(try ip(text, "status.podIPs[\(index)].ip"))
            }
        } else if let text = wire.status?.podIP, !text.isEmpty {
            podIPs = [try ip(text, "status.podIP")]
        }
        var containerPorts: [Pod.ContainerPort] = []
        for (index, container) in (wire.spec?.containers ?? []).enumerated() {
            for (position, port) in (container.ports ?? []).enumerated() {
                func path() -> String { "spec.containers[\(index)].ports[\(position)]" }
                guard let number = port.containerPort else { throw FieldError("\(path()).containerPort", "is required") }
                try checkPort(number, "\(path()).containerPort")
                containerPorts.append(
                    Pod.ContainerPort(
                        name: port.name ?? "", containerPort: number, protocol: try l4Protocol(port.protocol, "\(path()).protocol")))
            }
        }
        var ready: Bool? = nil
        if let condition = wire.status?.conditions?.first(where: { $0.type == "Ready" }) {
            ready = condition.status == "True"
        }
        return Pod(
            meta: meta, nodeName: wire.spec?.nodeName, podIPs: podIPs, ready: ready, phase: wire.status?.phase,
            hostname: wire.spec?.hostname, containerPorts: containerPorts)
    }

    public static func node(_ wire: APINode) throws(FieldError) -> Node {
        let meta = try objectMeta(wire.metadata, namespaced: false)
        var addresses: [IPAddress] = []
        for (index, entry) in (wire.status?.addresses ?? []).enumerated() where entry.type == "InternalIP" || entry.type == "ExternalIP" {
            guard let text = entry.address else { throw FieldError("status.addresses[\(index)].address", "is required") }
            addresses.append(try ip(text, "status.addresses[\(index)].address"))
        }
        return Node(meta: meta, addresses: addresses)
    }

    // MARK: Field checks

    static func objectMeta(_ wire: APIObjectMeta?, namespaced: Bool) throws(FieldError) -> ObjectMeta {
        guard let wire, let name = wire.name, !name.isEmpty else { throw FieldError("metadata.name", "is required") }
        guard name.utf8.count <= 253 else { throw FieldError("metadata.name", "is longer than 253 characters") }
        let namespace = namespaced ? ((wire.namespace?.isEmpty ?? true) ? "default" : wire.namespace!) : ""
        return ObjectMeta(
            name: name, namespace: namespace, labels: wire.labels ?? [:], annotations: wire.annotations ?? [:],
            creationTimestamp: try timestamp(wire.creationTimestamp, "metadata.creationTimestamp"),
            deletionTimestamp: try timestamp(wire.deletionTimestamp, "metadata.deletionTimestamp"),
            resourceVersion: wire.resourceVersion)
    }

    static func timestamp(_ text: String?, _ field: @autoclosure () -> String) throws(FieldError) -> Date? {
        guard let text, !text.isEmpty else { return nil }
        if let date = canonicalTimestamp(text) { return date }
        if let date = try? Date(text, strategy: .iso8601) { return date }
        if let date = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) { return date }
        throw FieldError(field(), "\"\(text)\" is not an RFC 3339 time such as 2024-01-02T15:04:05Z")
    }

    /// `2024-01-02T15:04:05Z`, the one form the API server writes (metav1.Time), read without Foundation's
    /// parser: that parser was 2% of reading 10,000 Services. Any other form goes to Foundation.
    static func canonicalTimestamp(_ text: String) -> Date? {
        var text = text
        return text.withUTF8 { bytes -> Date? in
            guard bytes.count == 20, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"), bytes[10] == UInt8(ascii: "T"),
                bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"), bytes[19] == UInt8(ascii: "Z")
            else { return nil }
            func number(_ range: Range<Int>) -> Int? {
                var value = 0
                for index in range {
                    let digit = Int(bytes[index]) - 48
                    guard (0...9).contains(digit) else { return nil }
                    value = value * 10 + digit
                }
                return value
            }
            guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10), let hour = number(11..<13),
                let minute = number(14..<16), let second = number(17..<19), (1...12).contains(month), (1...31).contains(day),
                hour < 24, minute < 60, second < 60
            else { return nil }
            // Days from 1970-01-01 in the proleptic Gregorian calendar (Howard Hinnant's days_from_civil).
            let shiftedYear = month <= 2 ? year - 1 : year
            let era = (shiftedYear >= 0 ? shiftedYear : shiftedYear - 399) / 400
            let yearOfEra = shiftedYear - era * 400
            let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
            let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
            let days = era * 146_097 + dayOfEra - 719_468
            // A day past the month's end (2024-02-30) is left to Foundation, which refuses it.
            let daysInMonth = [31, year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
            guard day <= daysInMonth[month - 1] else { return nil }
            return Date(timeIntervalSince1970: TimeInterval(days * 86_400 + hour * 3600 + minute * 60 + second))
        }
    }

    static func ip(_ text: String, _ field: @autoclosure () -> String) throws(FieldError) -> IPAddress {
        guard let address = IPAddress(text) else { throw FieldError(field(), "\"\(text)\" is not a valid IP address") }
        return address
    }

    static func checkPort(_ value: Int, _ field: @autoclosure () -> String) throws(FieldError) {
        guard (1...65_535).contains(value) else { throw FieldError(field(), "\(value) is out of range 1-65535") }
    }

    static func l4Protocol(_ text: String?, _ field: @autoclosure () -> String) throws(FieldError) -> L4Protocol {
        guard let text, !text.isEmpty else { return .tcp }
        guard let value = L4Protocol(rawValue: text) else {
            throw FieldError(field(), "unknown protocol \"\(text)\": expected TCP, UDP or SCTP")
        }
        return value
    }

    /// A port name must be an IANA service name: at most 15 lowercase letters, digits and
    /// non-adjacent inner dashes, with at least one letter.
    static func checkPortName(_ name: String, _ field: @autoclosure () -> String) throws(FieldError) {
        let bytes = name.utf8
        let allowed = bytes.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 }
        let ok =
            !bytes.isEmpty && bytes.count <= 15 && allowed && bytes.first != 45 && bytes.last != 45
            && !zip(bytes, bytes.dropFirst()).contains { $0 == 45 && $1 == 45 } && bytes.contains { $0 >= 97 && $0 <= 122 }
        if !ok {
            throw FieldError(
                field(),
                "\"\(name)\" is not a valid port name: at most 15 lowercase letters, digits and inner dashes, with at least one letter")
        }
    }

    /// A port name that must be a DNS-1123 label (`isDNSLabel`).
    static func checkDNSLabel(_ name: String, _ field: @autoclosure () -> String) throws(FieldError) {
        if !isDNSLabel(name) {
            throw FieldError(
                field(),
                "\"\(name)\" is not a valid port name: a DNS-1123 label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
            )
        }
    }

    /// An EndpointSlice's or Endpoints' port name: empty, or a DNS-1123 label as a Service's.
    static func portLabel(_ name: String?, _ field: @autoclosure () -> String) throws(FieldError) -> String {
        guard let name, !name.isEmpty else { return "" }
        try checkDNSLabel(name, field())
        return name
    }

    static func enumValue<T: RawRepresentable & CaseIterable>(_ text: String?, _ field: @autoclosure () -> String, default fallback: T)
        throws(FieldError) -> T
    where T.RawValue == String {
        guard let text, !text.isEmpty else { return fallback }
        guard let value = T(rawValue: text) else {
            let allowed = T.allCases.map(\.rawValue).joined(separator: ", ")
            throw FieldError(field(), "unknown value \"\(text)\": expected one of \(allowed)")
        }
        return value
    }

    static func reference(_ ref: APIEndpointSlice.ObjectRef?) -> String? {
        guard let ref, let name = ref.name else { return nil }
        let kind = ref.kind ?? "Object"
        if let namespace = ref.namespace, !namespace.isEmpty { return "\(kind) \(namespace)/\(name)" }
        return "\(kind) \(name)"
    }
}
