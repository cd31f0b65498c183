/// The ranges Ferry allocates from when it stands in for the API server (manifest mode): the API
/// server's `--service-cluster-ip-range` and `--service-node-port-range`.
public struct AllocationRanges: Sendable, Hashable {
    /// At most one range per family; the first one's family is the default for single-stack services.
    public var serviceCIDRs: [CIDR]
    public var nodePorts: ClosedRange<Int>

    public init(serviceCIDRs: [CIDR] = [CIDR("10.96.0.0/12")!], nodePorts: ClosedRange<Int> = 30_000...32_767) {
        self.serviceCIDRs = serviceCIDRs
        self.nodePorts = nodePorts
    }

    func range(of family: IPFamily) -> CIDR? { serviceCIDRs.first { $0.address.family == family } }
}

/// A value Ferry filled in for a Service, as the API server would have: shown as such by `describe`.
public enum AllocatedField: Sendable, Hashable, Comparable {
    /// `spec.clusterIPs` (every address of it).
    case clusterIPs
    /// `spec.ports[i].nodePort`.
    case nodePort(portIndex: Int)
    case healthCheckNodePort

    /// Its bit in `AllocatedFields` (ports from the 62nd on share the last bit).
    var bit: UInt64 {
        switch self {
        case .clusterIPs: 1
        case .healthCheckNodePort: 2
        case .nodePort(let index): 1 << UInt64(2 + min(index, 61))
        }
    }
}

/// The fields Ferry allocated for a Service, as bits: a Service is copied often (every change, every
/// table), and a `Set` there was one more reference to count on each copy.
public struct AllocatedFields: Sendable, Hashable, ExpressibleByArrayLiteral {
    private var bits: UInt64 = 0

    public init() {}
    public init(arrayLiteral fields: AllocatedField...) { for field in fields { insert(field) } }

    public var isEmpty: Bool { bits == 0 }
    public func contains(_ field: AllocatedField) -> Bool { bits & field.bit != 0 }
    public mutating func insert(_ field: AllocatedField) { bits |= field.bit }
}

/// Fills in what a Service written without the API server lacks: a ClusterIP from the service range
/// (one per family the service asks for), a NodePort for each port of a NodePort or LoadBalancer
/// service, and a health-check NodePort for a LoadBalancer with `externalTrafficPolicy: Local`.
///
/// Deterministic and stable: a service's first candidate is derived from its namespace and name, a
/// taken candidate moves to the next free one in a fixed order, and a value once allocated is kept as
/// long as the service exists (a service that comes later goes around it). Explicit values win: one
/// that lands on an allocated value moves that service; two services writing the same explicit value is
/// an error naming both, and the one that came later (by name, in one read) is left out. Like the API server, dynamic
/// allocation starts in the upper part of each range, leaving the lower part to explicit choices (its
/// "static subrange": min(max(16, size/16), 256) addresses, min(max(16, size/32), 128) ports); an
/// explicit value outside the range is accepted. A pure value: the manifest source keeps one and passes
/// every change through it.
public struct ServiceAllocator: Sendable {
    public let ranges: AllocationRanges
    /// Each service: as written, as it goes on, and what it holds (one dictionary: one lookup per service).
    private var entries: [ServiceName: Entry] = [:]
    private var addressOwners: [IPAddress: Owner] = [:]
    private var portOwners: [PortKey: Owner] = [:]

    /// Small on purpose: a service with all its values written (most of them) keeps no copy here. (A first
    /// version kept whole Services here and copied every change: +17 MB and +90 ms on a first read of
    /// 10,000 services; now +1 MB and ~40 ms, `ferry bench load` against the commit before allocation.)
    struct Entry {
        /// As written, kept only for a service that needs allocating (it may have to be allocated again).
        var written: Service?
        /// With its allocations.
        var allocated: Service?
        /// Whether it goes on (false: left out for a conflict, or not resolved yet).
        var accepted = false
        var held = Holding()
    }

    struct Holding {
        var addresses: [IPAddress] = []
        var ports: [PortKey] = []
    }

    struct Owner: Hashable {
        var service: ServiceName
        var explicit: Bool
    }

    /// NodePorts are unique per protocol (a TCP and a UDP port may share a number).
    struct PortKey: Hashable {
        var port: Int
        var l4: L4Protocol
    }

    public init(ranges: AllocationRanges = AllocationRanges()) {
        self.ranges = ranges
    }

    /// A problem Ferry found where the API server would have refused the object.
    public struct Problem: Error, Sendable, Hashable, CustomStringConvertible {
        public var service: ServiceName
        public var field: String
        public var message: String
        public var description: String { "Service \(service): \(field): \(message)" }
    }

    /// Passes `changes` through: Services come out with their allocations (and services moved by a new
    /// explicit value come out again); other objects pass unchanged.
    public mutating func apply(_ changes: [ObjectChange]) -> (changes: [ObjectChange], problems: [Problem]) {
        // (name, position in `changes`): sorted by name, the last change of a name wins.
        var latest: [(name: ServiceName, position: Int)] = []
        for (position, change) in changes.enumerated() {
            switch change {
            case .upsert(.service(let service)): latest.append((service.name, position))
            case .delete(let key) where key.kind == .service:
                latest.append((ServiceName(namespace: key.namespace, name: key.name), position))
            default:
                continue
            }
        }
        guard !latest.isEmpty else { return (changes, []) }
        latest.sort { ($0.name, $0.position) < ($1.name, $1.position) }
        entries.reserveCapacity(entries.count + latest.count)
        var touched: [ServiceName] = []
        touched.reserveCapacity(latest.count)
        var problems: [Problem] = []
        // 1. Touched services give back what they held; what they had allocated is remembered as their
        //    first candidate, so an edit of something else keeps the same address.
        var remembered: [ServiceName: Service] = [:]
        // Where each touched service's last change is: a service with nothing allocated goes out as it came in.
        var positions: [ServiceName: Int] = [:]
        positions.reserveCapacity(latest.count)
        for (index, item) in latest.enumerated() where index + 1 == latest.count || latest[index + 1].name != item.name {
            let name = item.name
            touched.append(name)
            positions[name] = item.position
            if let index = entries.index(forKey: name), let old = entries.values[index].allocated { remembered[name] = old }
            release(name)
            if case .upsert(.service(let service)) = changes[item.position] {
                entries[name] = Entry(written: needsAllocation(service) ? service : nil)
            } else {
                entries[name] = nil
            }
        }
        // 2. Explicit values of every touched service, in name order; one that lands on another service's
        //    allocation moves that service.
        var displaced: Set<ServiceName> = []
        var accepted: [ServiceName] = []
        for name in touched {
            guard entries.index(forKey: name) != nil, case .upsert(.service(let service)) = changes[positions[name]!] else { continue }
            if let conflict = claimExplicit(service, displacing: &displaced) {
                problems.append(conflict)
            } else {
                accepted.append(name)
            }
        }
        if !displaced.isEmpty { displaced.subtract(touched) }
        for name in displaced {
            // Only a service holding allocated values can be moved: it has its written form.
            let index = entries.index(forKey: name)!
            if let old = entries.values[index].allocated { remembered[name] = old }
            release(name)
            entries.values[index].accepted = false
            entries.values[index].allocated = nil
            // Its explicit values are still its own (they were not in conflict).
            var none: Set<ServiceName> = []
            _ = claimExplicit(entries.values[index].written!, displacing: &none)
            accepted.append(name)
        }
        // 3. Allocations, in name order (`accepted` is in order unless services were moved).
        if !displaced.isEmpty { accepted.sort() }
        for name in accepted {
            let index = entries.index(forKey: name)!
            // Most services carry all their values: nothing to allocate, no copy kept.
            guard let written = entries.values[index].written else {
                entries.values[index].accepted = true
                continue
            }
            switch allocate(written, remembering: remembered[name]) {
            case .success(let service):
                entries.values[index].allocated = service
                entries.values[index].accepted = true
            case .failure(let problem):
                problems.append(problem)
                release(name)
            }
        }
        // Out in the order the changes came (a first read's are in key order, which the readers rely on:
        // services after all slices made building the state 15% slower), then the services moved.
        func resolvedChange(_ name: ServiceName) -> ObjectChange? {
            guard let index = entries.index(forKey: name), entries.values[index].accepted else {
                return .delete(ObjectKey(kind: .service, namespace: name.namespace, name: name.name))
            }
            guard let now = entries.values[index].allocated else { return positions[name].map { changes[$0] } }
            if displaced.contains(name), now == remembered[name] { return nil }
            return .upsert(.service(now))
        }
        // Nothing allocated, moved or left out (manifests that write every value): the changes go on as
        // they came, without a copy (20,000 changes are 8 MB to copy: 60 ms of a first read).
        if displaced.isEmpty, problems.isEmpty, latest.count == touched.count,
            touched.allSatisfy({ entries[$0].map { $0.accepted && $0.allocated == nil } ?? true })
        {
            return (changes, [])
        }
        var output: [ObjectChange] = []
        output.reserveCapacity(changes.count)
        for (position, change) in changes.enumerated() {
            switch change {
            case .upsert(.service(let service)):
                if positions[service.name] == position, let resolved = resolvedChange(service.name) { output.append(resolved) }
            case .delete(let key) where key.kind == .service:
                let name = ServiceName(namespace: key.namespace, name: key.name)
                if positions[name] == position, let resolved = resolvedChange(name) { output.append(resolved) }
            default:
                output.append(change)
            }
        }
        for name in displaced.sorted() { if let resolved = resolvedChange(name) { output.append(resolved) } }
        return (output, problems)
    }

    // MARK: Claiming

    private mutating func release(_ name: ServiceName) {
        guard let held = entries[name]?.held else { return }
        for address in held.addresses where addressOwners[address]?.service == name { addressOwners[address] = nil }
        for key in held.ports where portOwners[key]?.service == name { portOwners[key] = nil }
        entries[name]?.held = Holding()
    }

    private mutating func hold(_ address: IPAddress, for name: ServiceName, explicit: Bool) {
        addressOwners[address] = Owner(service: name, explicit: explicit)
        entries[name]?.held.addresses.append(address)
    }

    private mutating func hold(_ key: PortKey, for name: ServiceName, explicit: Bool) {
        portOwners[key] = Owner(service: name, explicit: explicit)
        entries[name]?.held.ports.append(key)
    }

    /// Records `service`'s explicit addresses and ports; a duplicate of another's explicit value is the
    /// problem returned (nothing recorded then).
    private mutating func claimExplicit(_ service: Service, displacing displaced: inout Set<ServiceName>) -> Problem? {
        let name = service.name
        let addresses = service.clusterIPs
        let ports = Self.explicitPorts(service)
        for address in addresses {
            if let owner = addressOwners[address], owner.service != name, owner.explicit {
                return Problem(
                    service: name, field: "spec.clusterIPs",
                    message: "\(address) is already the ClusterIP of Service \(owner.service); this Service is left out")
            }
        }
        for (key, field) in ports {
            if let owner = portOwners[key], owner.service != name, owner.explicit {
                return Problem(
                    service: name, field: field,
                    message: "\(key.port)/\(key.l4.rawValue) is already a NodePort of Service \(owner.service); this Service is left out")
            }
        }
        for address in addresses {
            if let owner = addressOwners[address], owner.service != name { displaced.insert(owner.service) }
            hold(address, for: name, explicit: true)
        }
        for (key, _) in ports {
            if let owner = portOwners[key], owner.service != name { displaced.insert(owner.service) }
            hold(key, for: name, explicit: true)
        }
        return nil
    }

    private static func explicitPorts(_ service: Service) -> [(PortKey, String)] {
        var result: [(PortKey, String)] = []
        for (index, port) in service.ports.enumerated() {
            if let nodePort = port.nodePort { result.append((PortKey(port: nodePort, l4: port.protocol), "spec.ports[\(index)].nodePort")) }
        }
        if let health = service.healthCheckNodePort { result.append((PortKey(port: health, l4: .tcp), "spec.healthCheckNodePort")) }
        return result
    }

    // MARK: Allocating

    private func needsAllocation(_ service: Service) -> Bool {
        if service.type != .externalName, !service.isHeadless, service.clusterIPs.isEmpty { return true }
        if service.type == .nodePort || (service.type == .loadBalancer && service.allocateLoadBalancerNodePorts),
            service.ports.contains(where: { $0.nodePort == nil })
        {
            return true
        }
        return service.type == .loadBalancer && service.externalTrafficPolicy == .local && service.healthCheckNodePort == nil
    }

    private mutating func allocate(_ written: Service, remembering old: Service?) -> Result<Service, Problem> {
        var service = written
        let name = written.name
        if service.type != .externalName, !service.isHeadless, service.clusterIPs.isEmpty {
            let families: [IPFamily]
            switch wantedFamilies(written) {
            case .success(let value): families = value
            case .failure(let problem): return .failure(problem)
            }
            for family in families {
                guard let range = ranges.range(of: family) else { continue }
                let previous = old.flatMap { $0.allocated.contains(.clusterIPs) ? $0.clusterIPs.first { $0.family == family } : nil }
                guard let address = freeAddress(in: range, for: name, previous: previous) else {
                    return .failure(Problem(service: name, field: "spec.clusterIPs", message: "the service range \(range) is full"))
                }
                hold(address, for: name, explicit: false)
                service.clusterIPs.append(address)
            }
            if !service.clusterIPs.isEmpty {
                service.allocated.insert(.clusterIPs)
                if written.ipFamilies.isEmpty { service.ipFamilies = service.clusterIPs.map(\.family) }
            }
        }
        let needsNodePorts = service.type == .nodePort || (service.type == .loadBalancer && service.allocateLoadBalancerNodePorts)
        if needsNodePorts {
            for index in service.ports.indices where service.ports[index].nodePort == nil {
                let l4 = service.ports[index].protocol
                let previous = old.flatMap { old in
                    old.allocated.contains(.nodePort(portIndex: index)) && index < old.ports.count ? old.ports[index].nodePort : nil
                }
                // Ports of one service that differ only in protocol share a number, as the API server does.
                let sibling = service.ports.first { $0.port == service.ports[index].port && $0.nodePort != nil && $0.protocol != l4 }?.nodePort
                guard let port = freePort(l4, for: name, salt: "\(index)", previous: sibling ?? previous) else {
                    return .failure(
                        Problem(service: name, field: "spec.ports[\(index)].nodePort", message: "the NodePort range \(ranges.nodePorts) is full"))
                }
                hold(PortKey(port: port, l4: l4), for: name, explicit: false)
                service.ports[index].nodePort = port
                service.allocated.insert(.nodePort(portIndex: index))
            }
        }
        if service.type == .loadBalancer, service.externalTrafficPolicy == .local, service.healthCheckNodePort == nil {
            let previous = old.flatMap { $0.allocated.contains(.healthCheckNodePort) ? $0.healthCheckNodePort : nil }
            guard let port = freePort(.tcp, for: name, salt: "health", previous: previous) else {
                return .failure(Problem(service: name, field: "spec.healthCheckNodePort", message: "the NodePort range \(ranges.nodePorts) is full"))
            }
            hold(PortKey(port: port, l4: .tcp), for: name, explicit: false)
            service.healthCheckNodePort = port
            service.allocated.insert(.healthCheckNodePort)
        }
        return .success(service)
    }

    /// The families a service without ClusterIPs gets addresses of, by its `ipFamilyPolicy` and
    /// `ipFamilies`, as the API server decides them.
    private func wantedFamilies(_ service: Service) -> Result<[IPFamily], Problem> {
        let configured = ranges.serviceCIDRs.map(\.address.family)
        var order = service.ipFamilies.isEmpty ? configured : service.ipFamilies
        for family in configured where !order.contains(family) { order.append(family) }
        switch service.ipFamilyPolicy ?? .singleStack {
        case .singleStack:
            let family = service.ipFamilies.first ?? configured.first ?? .ipv4
            guard configured.contains(family) else {
                return .failure(
                    Problem(
                        service: service.name, field: "spec.ipFamilies[0]",
                        message: "\(family.rawValue) is not configured on this cluster (--service-cluster-ip-range)"))
            }
            return .success([family])
        case .preferDualStack:
            return .success(order.filter(configured.contains))
        case .requireDualStack:
            guard configured.count >= 2 else {
                return .failure(
                    Problem(
                        service: service.name, field: "spec.ipFamilyPolicy",
                        message: "RequireDualStack needs an IPv4 and an IPv6 --service-cluster-ip-range"))
            }
            return .success(order.filter(configured.contains))
        }
    }

    /// The first free address for `name` in `range`, trying `previous` first.
    private func freeAddress(in range: CIDR, for name: ServiceName, previous: IPAddress?) -> IPAddress? {
        if let previous, range.contains(previous), addressOwners[previous] == nil { return previous }
        let hostBits = (range.address.family == .ipv4 ? 32 : 128) - range.prefixLength
        // Addresses beyond 2^32 in a large IPv6 range are never needed on one node's manifests.
        let size = UInt64(1) << UInt64(min(hostBits, 32))
        // IPv4 leaves out the network address, the broadcast address and .1 (the `kubernetes` Service's).
        let first: UInt64 = range.address.family == .ipv4 ? 2 : 1
        let last: UInt64 = range.address.family == .ipv4 ? size - 2 : size - 1
        guard last >= first else { return nil }
        let candidate = { (offset: UInt64) in range.address.adding(offset) }
        return Self.probe(first: first, last: last, staticBand: Self.band(last - first + 1, divisor: 16, cap: 256), key: "\(name)") { offset in
            let address = candidate(offset)
            return addressOwners[address] == nil ? address : nil
        }
    }

    /// The first free NodePort of protocol `l4` for `name`, trying `previous` first.
    private func freePort(_ l4: L4Protocol, for name: ServiceName, salt: String, previous: Int?) -> Int? {
        if let previous, ranges.nodePorts.contains(previous), portOwners[PortKey(port: previous, l4: l4)] == nil { return previous }
        let low = UInt64(ranges.nodePorts.lowerBound)
        let count = UInt64(ranges.nodePorts.count)
        return Self.probe(first: 0, last: count - 1, staticBand: Self.band(count, divisor: 32, cap: 128), key: "\(name)/\(salt)") { offset in
            let port = Int(low + offset)
            return portOwners[PortKey(port: port, l4: l4)] == nil ? port : nil
        }
    }

    /// The API server's static subrange: min(max(16, size/divisor), cap), never more than the size.
    static func band(_ size: UInt64, divisor: UInt64, cap: UInt64) -> UInt64 {
        min(size, min(max(16, size / divisor), cap))
    }

    /// Walks offsets `first...last` from a start derived from `key`: the upper part (above the static
    /// band) first, wrapping within it, then the static band; returns the first `take` accepts.
    static func probe<T>(first: UInt64, last: UInt64, staticBand: UInt64, key: String, _ take: (UInt64) -> T?) -> T? {
        let size = last - first + 1
        let band = staticBand < size ? staticBand : 0
        let upper = size - band
        let hash = MaglevTable.hash(key, seed: 0x5EED_A110_C8ED)
        let start = hash % upper
        for step in 0..<upper {
            if let found = take(first + band + (start + step) % upper) { return found }
        }
        for step in 0..<band {
            if let found = take(first + (hash + step) % band) { return found }
        }
        return nil
    }
}
