import FerryUserspace
import Testing

/// Drives a relay machine against scripted sockets: each side has bytes to send, may end its stream
/// (FIN) or reset at a point, and accepts writes up to a window.
struct ScriptedRelay {
    struct Peer {
        var outgoing: Int
        var finishes: Bool
        var resetsAfter: Int?
        var received = 0
        var sentSoFar = 0
        var writeWindow = Int.max
        var gotShutdown = false
        var gotReset = false
        var endSent = false
        var resetSent = false

        /// More for the relay to read: bytes, the end of the stream, or a reset.
        var hasMore: Bool {
            if let limit = resetsAfter, sentSoFar >= limit { return !resetSent }
            return sentSoFar < outgoing || (finishes && !endSent)
        }
    }

    var machine = RelayMachine(capacity: 1_000, shortReadDrains: true)
    var peers: [Peer]
    var actions: [RelayMachine.Action] = []
    var closed = false

    init(client: Peer, backend: Peer) { peers = [client, backend] }

    /// A peer received a FIN: a shutdown, or the close that ended a connection not reset.
    func gotEnd(_ side: RelayMachine.Side) -> Bool { peers[side.rawValue].gotShutdown || (closed && !peers[side.rawValue].gotReset) }

    mutating func run(maxSteps: Int = 10_000) {
        var previousWasWait = false
        for _ in 0..<maxSteps {
            let action = machine.next()
            actions.append(action)
            if action == .wait && previousWasWait { return }
            previousWasWait = action == .wait
            switch action {
            case .wait:
                // Everything waits for events: peers with room or with more to send signal them, as epoll would.
                for side in RelayMachine.Side.allCases {
                    if peers[side.rawValue].writeWindow == 0 {
                        peers[side.rawValue].writeWindow = 700
                        machine.writable(side)
                    }
                    if peers[side.rawValue].hasMore { machine.readable(side) }
                }
            case .close:
                closed = true
                return
            case .read(let side, let max):
                var peer = peers[side.rawValue]
                if let limit = peer.resetsAfter, peer.sentSoFar >= limit {
                    peer.resetSent = true
                    machine.record(action, .failed)
                } else if peer.sentSoFar < peer.outgoing {
                    let count = min(max, peer.outgoing - peer.sentSoFar, peer.resetsAfter.map { $0 - peer.sentSoFar } ?? Int.max, 300)
                    peer.sentSoFar += count
                    machine.record(action, .transferred(count))
                } else if peer.finishes {
                    peer.endSent = true
                    machine.record(action, .endOfStream)
                } else {
                    machine.record(action, .wouldBlock)
                }
                peers[side.rawValue] = peer
            case .write(let side, let count):
                var peer = peers[side.rawValue]
                let accepted = min(count, peer.writeWindow)
                if accepted == 0 {
                    machine.record(action, .wouldBlock)
                } else {
                    if peer.writeWindow != Int.max { peer.writeWindow -= accepted }
                    peer.received += accepted
                    machine.record(action, .transferred(accepted))
                }
                peers[side.rawValue] = peer
            case .shutdownWrite(let side):
                peers[side.rawValue].gotShutdown = true
                machine.record(action, .transferred(0))
            case .reset(let side):
                peers[side.rawValue].gotReset = true
            }
        }
        Issue.record("the relay did not settle")
    }
}

@Suite("Relay state machine: half-close, reset and timeout orders")
struct RelayMachineTests {
    typealias Peer = ScriptedRelay.Peer

    @Test func requestThenResponseWithClientHalfCloseFirst() {
        var relay = ScriptedRelay(client: Peer(outgoing: 2_500, finishes: true), backend: Peer(outgoing: 4_000, finishes: true))
        relay.run()
        #expect(relay.closed)
        #expect(relay.peers[1].received == 2_500)
        #expect(relay.peers[0].received == 4_000)
        #expect(relay.gotEnd(.client) && relay.gotEnd(.backend))
        #expect(!relay.peers[0].gotReset && !relay.peers[1].gotReset)
        // The client's end was propagated by a shutdown; the last end by the close itself.
        #expect(relay.peers[1].gotShutdown && !relay.peers[0].gotShutdown)
    }

    @Test func clientHalfClosesAndStillReadsTheWholeReply() {
        // The client ends its stream; the backend keeps answering and then ends: the client gets it all.
        var relay = ScriptedRelay(client: Peer(outgoing: 10, finishes: true), backend: Peer(outgoing: 0, finishes: false))
        relay.run()
        #expect(relay.peers[1].gotShutdown, "the backend is told the client finished")
        #expect(!relay.closed, "the connection stays open for the reply")
        relay.peers[1].outgoing = 5_000
        relay.peers[1].finishes = true
        relay.machine.readable(.backend)
        relay.run()
        #expect(relay.peers[0].received == 5_000)
        #expect(relay.gotEnd(.client))
        #expect(relay.closed)
    }

    @Test func backendFinishesFirst() {
        var relay = ScriptedRelay(client: Peer(outgoing: 0, finishes: false), backend: Peer(outgoing: 1_200, finishes: true))
        relay.run()
        #expect(relay.peers[0].received == 1_200)
        #expect(relay.peers[0].gotShutdown)
        #expect(!relay.closed)
        relay.peers[0].finishes = true
        relay.machine.readable(.client)
        relay.run()
        #expect(relay.gotEnd(.backend))
        #expect(relay.closed)
    }

    @Test func shutdownWaitsUntilHeldBytesAreDelivered() {
        // The backend reads slowly: the client's FIN must not overtake the bytes still held.
        var backend = Peer(outgoing: 0, finishes: true)
        backend.writeWindow = 0
        var relay = ScriptedRelay(client: Peer(outgoing: 900, finishes: true), backend: backend)
        var sawShutdownBeforeAllBytes = false
        for _ in 0..<50 {
            let action = relay.machine.next()
            if case .shutdownWrite(.backend) = action, relay.peers[1].received < 900 { sawShutdownBeforeAllBytes = true }
            relay.machine.record(action, .wouldBlock)
            if action == .wait { break }
        }
        #expect(!sawShutdownBeforeAllBytes)
        relay = ScriptedRelay(client: Peer(outgoing: 900, finishes: true), backend: backend)
        relay.run()
        #expect(relay.peers[1].received == 900)
        #expect(relay.gotEnd(.backend))
    }

    @Test func clientResetIsPropagatedToTheBackend() {
        var client = Peer(outgoing: 2_000, finishes: false)
        client.resetsAfter = 600
        var relay = ScriptedRelay(client: client, backend: Peer(outgoing: 0, finishes: false))
        relay.run()
        #expect(relay.peers[1].gotReset)
        #expect(!relay.peers[0].gotReset)
        #expect(relay.closed)
    }

    @Test func backendResetIsPropagatedToTheClient() {
        var backend = Peer(outgoing: 500, finishes: false)
        backend.resetsAfter = 300
        var relay = ScriptedRelay(client: Peer(outgoing: 0, finishes: false), backend: backend)
        relay.run()
        #expect(relay.peers[0].gotReset)
        #expect(relay.closed)
    }

    @Test func resetAfterHalfCloseStillAborts() {
        var backend = Peer(outgoing: 100, finishes: false)
        backend.resetsAfter = 100
        var relay = ScriptedRelay(client: Peer(outgoing: 50, finishes: true), backend: backend)
        relay.run()
        #expect(relay.peers[1].gotShutdown)
        #expect(relay.peers[0].gotReset)
        #expect(relay.closed)
    }

    @Test func idleTimeoutResetsBothSides() {
        var relay = ScriptedRelay(client: Peer(outgoing: 10, finishes: false), backend: Peer(outgoing: 10, finishes: false))
        relay.run()
        #expect(!relay.closed)
        relay.machine.timedOut()
        relay.run()
        #expect(relay.peers[0].gotReset && relay.peers[1].gotReset)
        #expect(relay.closed)
    }

    @Test func shortReadsAndWritesWaitForEventsInsteadOfRetrying() {
        var machine = RelayMachine(capacity: 1_000, readable: false, shortReadDrains: true)
        #expect(machine.next() == .wait, "nothing is read before an event says so")
        machine.readable(.client)
        #expect(machine.next() == .read(from: .client, max: 1_000))
        machine.record(.read(from: .client, max: 1_000), .transferred(64))
        #expect(machine.next() == .write(to: .backend, count: 64))
        machine.record(.write(to: .backend, count: 64), .transferred(64))
        #expect(machine.next() == .wait, "a short read drained the socket")
        machine.readable(.client)
        #expect(machine.next() == .read(from: .client, max: 1_000))
        machine.record(.read(from: .client, max: 1_000), .transferred(1_000))
        machine.record(.write(to: .backend, count: 1_000), .transferred(400))
        #expect(machine.next() == .read(from: .client, max: 400), "a short write: the backend is full, so read on")
    }

    @Test func aHungUpSideIsReadUntilItsEndWhateverTheReadSize() {
        // Edge-triggered, the FIN's event comes once: a short read of the bytes before it must not wait
        // for another event, or the end of the stream is never seen.
        var machine = RelayMachine(capacity: 1_000, readable: false, shortReadDrains: true)
        machine.hungUp(.backend)
        #expect(machine.next() == .read(from: .backend, max: 1_000))
        machine.record(.read(from: .backend, max: 1_000), .transferred(64))
        #expect(machine.next() == .write(to: .client, count: 64))
        machine.record(.write(to: .client, count: 64), .transferred(64))
        #expect(machine.next() == .read(from: .backend, max: 1_000), "read on to the end of the stream")
        machine.record(.read(from: .backend, max: 1_000), .endOfStream)
        #expect(machine.next() == .shutdownWrite(.client))
    }

    @Test func aDirectionWhoseShortReadsDoNotDrainReadsUntilWouldBlock() {
        // An edge-triggered splice can stop short with bytes left: that direction reads until EAGAIN.
        var machine = RelayMachine(capacity: 1_000, readable: true, shortReadDrains: true)
        machine.setShortReadDrains(from: .client, false)
        #expect(machine.next() == .read(from: .client, max: 1_000))
        machine.record(.read(from: .client, max: 1_000), .transferred(10))
        machine.record(.write(to: .backend, count: 10), .transferred(10))
        #expect(machine.next() == .read(from: .client, max: 1_000))
        machine.record(.read(from: .client, max: 1_000), .wouldBlock)
        #expect(machine.next() == .read(from: .backend, max: 1_000), "the other direction still drains on short reads")
        machine.record(.read(from: .backend, max: 1_000), .transferred(10))
        machine.record(.write(to: .client, count: 10), .transferred(10))
        #expect(machine.next() == .wait)
    }

    @Test func neverHoldsMoreThanItsCapacity() {
        var backend = Peer(outgoing: 0, finishes: false)
        backend.writeWindow = 0
        var relay = ScriptedRelay(client: Peer(outgoing: 50_000, finishes: false), backend: backend)
        for _ in 0..<200 {
            let action = relay.machine.next()
            if case .read(_, let max) = action { #expect(max <= 1_000) }
            if action == .wait { break }
            if case .read(_, let max) = action {
                relay.machine.record(action, .transferred(min(300, max)))
            } else {
                relay.machine.record(action, .wouldBlock)
            }
            #expect(relay.machine.heldBytes(from: .client) <= 1_000)
        }
    }
}
