import FerryCore
import Foundation

/// A packet to trace: the first packet of a new connection.
public struct TracedPacket: Sendable, Hashable {
    public var source: IPAddress
    public var destination: IPAddress
    public var port: Int
    public var `protocol`: L4Protocol
    /// Sent by a process on the node itself (output hook) rather than arriving from a pod or from
    /// outside (prerouting hook).
    public var fromNode: Bool

    public init(source: IPAddress, destination: IPAddress, port: Int, protocol: L4Protocol = .tcp, fromNode: Bool = false) {
        self.source = source
        self.destination = destination
        self.port = port
        self.protocol = `protocol`
        self.fromNode = fromNode
    }
}

/// Where a traced packet can end up.
public enum TraceOutcome: Sendable, Hashable {
    /// DNATed to this endpoint; `masqueraded` when its source is rewritten on the way out.
    case forwarded(endpoint: String, masqueraded: Bool)
    /// Refused at once (TCP reset / ICMP port unreachable).
    case rejected
    case dropped
    /// Not a service: passes through untouched.
    case untouched
}

/// Walks a planned ruleset for one packet, the way the kernel would, following every branch of a
/// random choice: which endpoints are reachable, and whether the packet is masqueraded. Affinity sets
/// are taken as empty (a client's first connection).
public struct PacketTracer {
    public let table: Table
    /// Addresses that `fib … type local` matches: the node's addresses (loopback always counts).
    public let localAddresses: [IPAddress]

    public init(ruleset: Ruleset, family: NFTFamily = .ip, localAddresses: [IPAddress]) {
        self.table = ruleset.tables[family] ?? Table(family: family)
        self.localAddresses = localAddresses
    }

    private struct State: Hashable {
        var mark: UInt32 = 0
        var endpoint: String?
        var masqueraded = false
    }

    /// How evaluating a rule or a chain ended.
    private enum End: Hashable {
        /// The rule did not end the chain (no match, or a jumped-to chain returned): next rule.
        case nextRule
        /// The chain ended (`return`, its last rule, or a goto'd chain that ended): back to the caller.
        case returned
        case accepted
        case dropped
        case rejected
    }

    /// Every distinct outcome for `packet`, sorted.
    public func trace(_ packet: TracedPacket) -> [TraceOutcome] {
        let hook: ChainHook.Hook = packet.fromNode ? .output : .prerouting
        // Filter chains before dstnat run first, then NAT at dstnat; then the filter chains after DNAT
        // (output after dstnat for the node's own packets, forward for the rest), which see the
        // endpoint as the destination when the packet was DNATed; postrouting NAT (masquerade) last.
        var states: [State] = [State()]
        let stages: [(Chain) -> Bool] = [
            { $0.hook?.hook == hook && $0.hook?.kind == .filter && $0.hook!.priority < ChainHook.dstnat },
            { $0.hook?.hook == hook && $0.hook?.kind == .nat },
            { chain in
                guard let chainHook = chain.hook, chainHook.kind == .filter else { return false }
                return packet.fromNode ? chainHook.hook == .output && chainHook.priority > ChainHook.dstnat : chainHook.hook == .forward
            },
        ]
        for (stage, belongs) in stages.enumerated() {
            var next: [State] = []
            for chain in table.chains.values.filter(belongs).sorted(by: { $0.hook!.priority < $1.hook!.priority }) {
                for state in states {
                    var seen = packet
                    if stage == 2, let endpoint = state.endpoint, let address = PacketTracer.address(ofEndpoint: endpoint) {
                        seen.destination = address
                    }
                    for (result, end) in run(chain.name, state, seen, depth: 0) {
                        switch end {
                        case .dropped: return [.dropped]
                        case .rejected: return [.rejected]
                        case .nextRule, .returned, .accepted: next.append(result)
                        }
                    }
                }
                states = Array(Set(next))
                next = []
            }
        }
        // Postrouting NAT for each forwarded packet, which now goes to its endpoint: masquerade or not.
        var finals: [State] = []
        let postrouting = table.chains.values.filter { $0.hook?.hook == .postrouting && $0.hook?.kind == .nat }
        for state in states {
            guard let endpoint = state.endpoint, let address = PacketTracer.address(ofEndpoint: endpoint) else {
                finals.append(state)
                continue
            }
            var seen = packet
            seen.destination = address
            var current = [state]
            for chain in postrouting.sorted(by: { $0.hook!.priority < $1.hook!.priority }) {
                current = current.flatMap { run(chain.name, $0, seen, depth: 0).map(\.0) }
            }
            finals += current
        }
        let outcomes = Set(
            finals.map { state -> TraceOutcome in
                guard let endpoint = state.endpoint else { return .untouched }
                return .forwarded(endpoint: endpoint, masqueraded: state.masqueraded)
            })
        return outcomes.sorted { "\($0)" < "\($1)" }
    }

    /// The address of an endpoint written `ip:port` or `[ipv6]:port`.
    static func address(ofEndpoint text: String) -> IPAddress? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        return IPAddress(String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")))
    }

    private func run(_ name: String, _ state: State, _ packet: TracedPacket, depth: Int) -> [(State, End)] {
        guard depth < 32, let chain = table.chains[name] else { return [(state, .returned)] }
        var live: [State] = [state]
        var finished: [(State, End)] = []
        for rule in chain.rules {
            var next: [State] = []
            for current in live {
                for (result, end) in evaluate(rule.statements[...], current, packet, depth: depth) {
                    if end == .nextRule { next.append(result) } else { finished.append((result, end)) }
                }
            }
            live = next
            if live.isEmpty { break }
        }
        return finished + live.map { ($0, .returned) }
    }

    /// Evaluates a rule's statements.
    private func evaluate(_ statements: ArraySlice<Statement>, _ state: State, _ packet: TracedPacket, depth: Int) -> [(State, End)] {
        guard let statement = statements.first else { return [(state, .nextRule)] }
        let rest = statements.dropFirst()
        var state = state
        func matches(_ condition: Bool) -> [(State, End)] {
            condition ? evaluate(rest, state, packet, depth: depth) : [(state, .nextRule)]
        }
        func address(_ field: KeyField) -> IPAddress { field == .sourceAddress ? packet.source : packet.destination }
        func value(_ field: KeyField) -> KeyValue {
            switch field {
            case .destinationAddress, .sourceAddress: return .address(address(field))
            case .l4Protocol: return .l4Protocol(packet.protocol)
            case .destinationPort: return .port(packet.port)
            case .slot: return .slot(0)  // never a packet field
            }
        }
        switch statement {
        case .matchAddress(let field, let value, let equal):
            return matches((address(field) == value) == equal)
        case .matchPrefix(let field, let prefix, let equal):
            return matches(prefix.contains(address(field)) == equal)
        case .matchL4Protocol(let l4):
            return matches(packet.protocol == l4)
        case .matchPort(let l4, let port):
            return matches(packet.protocol == l4 && packet.port == port)
        case .matchLocalAddress(let field):
            let value = address(field)
            return matches(value.isLoopback || localAddresses.contains(value))
        case .matchNotLoopbackDestination:
            return matches(!packet.destination.isLoopback)
        case .matchNewConnection:
            return matches(true)
        case .matchMarkClear(let bits):
            return matches(state.mark & bits == 0)
        case .lookup(let key, let set):
            // Dynamic (affinity) sets hold no element for a first connection.
            return matches(table.sets[set]?.elements[ElementKey(key.map(value))] != nil)
        case .verdictMap(let key, let map):
            guard case .verdict(let verdict)?? = table.sets[map]?.elements[ElementKey(key.map(value))] else {
                return [(state, .nextRule)]
            }
            return apply(verdict, state, packet, depth: depth)
        case .dnatMap(let key, let modulus, let map):
            // Every slot the random choice can pick; a key with no element leaves the rule.
            let frontend = key.map(value)
            var outcomes: [(State, End)] = []
            for slot in 0..<modulus {
                guard case .endpoint(let ip, let port)?? = table.sets[map]?.elements[ElementKey(frontend + [.slot(slot)])] else { continue }
                var forwarded = state
                forwarded.endpoint = ip.joined(port: port)
                outcomes.append((forwarded, .accepted))
            }
            return outcomes.isEmpty ? [(state, .nextRule)] : outcomes
        case .matchRandom(let modulus):
            // Either way, with probability 1/modulus and 1 - 1/modulus.
            let taken = evaluate(rest, state, packet, depth: depth)
            return modulus > 1 ? taken + [(state, .nextRule)] : taken
        case .setMark(let bits):
            state.mark |= bits
        case .toggleMark(let bits):
            state.mark ^= bits
        case .dnat(let ip, let port, _):
            state.endpoint = ip.joined(port: port)
            return [(state, .accepted)]
        case .masqueradeFullyRandom:
            state.masqueraded = true
        case .updateSet, .counter, .unparsed:
            break
        case .rejectTCPReset:
            return packet.protocol == .tcp ? [(state, .rejected)] : [(state, .nextRule)]
        case .reject:
            return [(state, .rejected)]
        case .verdict(let verdict):
            return apply(verdict, state, packet, depth: depth)
        }
        return evaluate(rest, state, packet, depth: depth)
    }

    private func apply(_ verdict: Verdict, _ state: State, _ packet: TracedPacket, depth: Int) -> [(State, End)] {
        switch verdict {
        case .accept: return [(state, .accepted)]
        case .drop: return [(state, .dropped)]
        case .return: return [(state, .returned)]
        case .jump(let chain):
            // When the jumped-to chain returns, evaluation goes on with the next rule.
            return run(chain, state, packet, depth: depth + 1).map { ($0.0, $0.1 == .returned ? .nextRule : $0.1) }
        case .goto(let chain):
            // When the goto'd chain returns, this chain returns too.
            return run(chain, state, packet, depth: depth + 1)
        }
    }
}
