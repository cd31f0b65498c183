/// The life of one relayed TCP connection once both sockets are connected, as a pure state machine:
/// it decides the next transfer and learns from its outcome, so every half-close, reset and timeout
/// order can be tested without sockets. The forwarder performs the actions with `splice` through a pipe
/// per direction (or read/write through a buffer) and reports back.
///
/// Rules: bytes read from one side are written to the other before more than `capacity` are held; when
/// a side ends its stream (FIN), the other side's write half is shut down once everything read from it
/// has been delivered (half-close propagated; the last direction to end is closed rather than shut
/// down, which sends the same FIN); a reset on either side aborts both (RST propagated to the other
/// side); the connection closes when both directions are done. A short write means the socket is full
/// (and, where the direction's reads drain on a short read, a short read that it is drained, unless the
/// side already reported a hang-up), so the next attempt waits for an event.
public struct RelayMachine: Sendable, Hashable {
    /// One end of the relay.
    public enum Side: Int, Sendable, Hashable, CaseIterable {
        case client = 0
        case backend = 1

        public var other: Side { self == .client ? .backend : .client }
    }

    /// What the forwarder does next.
    public enum Action: Sendable, Hashable {
        /// Read up to `max` bytes from `side` (into that direction's pipe or buffer).
        case read(from: Side, max: Int)
        /// Write `count` held bytes to `side`.
        case write(to: Side, count: Int)
        /// `shutdown(SHUT_WR)` on `side`: the other side finished sending.
        case shutdownWrite(Side)
        /// Reset `side` (SO_LINGER 0, then close): the other side reset, or the connection timed out.
        case reset(Side)
        /// Close both sockets: done.
        case close
        /// Nothing to do until a socket is readable or writable again.
        case wait
    }

    /// What happened when the forwarder performed an action.
    public enum Outcome: Sendable, Hashable {
        case transferred(Int)
        /// The read side sent FIN (a read returned 0).
        case endOfStream
        case wouldBlock
        /// ECONNRESET, EPIPE or another error that ends the socket.
        case failed
    }

    /// The bytes flowing from one side to the other.
    struct Direction: Sendable, Hashable {
        var ended = false
        var held = 0
        var shutDown = false
        var canRead = true
        var canWrite = true
        /// A short read from the source means its socket is drained (see `shortReadDrains`).
        var shortReadDrains: Bool
        /// The source reported a hang-up (FIN or error): read on until end of stream, whatever the size.
        var hungUp = false

        var finished: Bool { ended && held == 0 && shutDown }
    }

    /// Where the relay is in its life.
    public enum Phase: Sendable, Hashable {
        case relaying
        /// A side failed or the idle timeout hit: reset the listed sides, then close.
        case aborting(pending: [Side])
        case closed
    }

    /// The most bytes held per direction, indexed by the side they come from.
    public private(set) var capacities: [Int]
    /// Indexed by the side the bytes come from.
    var directions: [Direction]
    public private(set) var phase: Phase = .relaying
    /// Bytes delivered, by the side they came from.
    public private(set) var delivered = [0, 0]

    /// `readable: false` waits for `readable(_:)` (an epoll event) before the first read from a side,
    /// instead of trying a read that would find nothing. `shortReadDrains`: whether a short read is taken
    /// to mean the socket is drained, so the next read waits for an event instead of finding nothing.
    /// Sound for a TCP `read` (it stops short only on an empty queue, and data queued later brings an
    /// event, level- or edge-triggered) until the side hangs up: the FIN's event came already, so an
    /// edge-triggered socket would report nothing more (hence `hungUp(_:)`). Not sound for an
    /// edge-triggered `splice`, which can stop short while data remains (see `setShortReadDrains`).
    public init(capacity: Int = 65_536, readable: Bool = true, shortReadDrains: Bool = false) {
        capacities = [capacity, capacity]
        let direction = Direction(canRead: readable, shortReadDrains: shortReadDrains)
        directions = [direction, direction]
    }

    /// Changes whether a short read from `side` means it is drained (off when an edge-triggered direction
    /// moves to `splice`).
    public mutating func setShortReadDrains(from side: Side, _ drains: Bool) {
        directions[side.rawValue].shortReadDrains = drains
    }

    /// Changes how many bytes the direction from `side` may hold (when the forwarder moves it from a
    /// small copy buffer to a pipe). Never below what it holds now.
    public mutating func setCapacity(from side: Side, _ capacity: Int) {
        capacities[side.rawValue] = max(capacity, directions[side.rawValue].held)
    }

    /// The next thing to do.
    public mutating func next() -> Action {
        switch phase {
        case .closed: return .wait
        case .aborting(let pending):
            if let side = pending.first {
                phase = .aborting(pending: Array(pending.dropFirst()))
                return .reset(side)
            }
            phase = .closed
            return .close
        case .relaying: break
        }
        for source in Side.allCases {
            let direction = directions[source.rawValue]
            if direction.held > 0 && direction.canWrite { return .write(to: source.other, count: direction.held) }
            let capacity = capacities[source.rawValue]
            if !direction.ended && direction.canRead && direction.held < capacity {
                return .read(from: source, max: capacity - direction.held)
            }
            if direction.ended && direction.held == 0 && !direction.shutDown {
                // The last direction to end needs no shutdown of its own: closing sends the FIN.
                if directions[source.other.rawValue].finished {
                    directions[source.rawValue].shutDown = true
                    continue
                }
                return .shutdownWrite(source.other)
            }
        }
        if directions.allSatisfy(\.finished) {
            phase = .closed
            return .close
        }
        return .wait
    }

    /// Learns the outcome of `action`.
    public mutating func record(_ action: Action, _ outcome: Outcome) {
        guard phase == .relaying else { return }
        switch action {
        case .read(let side, _):
            switch outcome {
            case .transferred(let count):
                directions[side.rawValue].held += count
                // A short read emptied the socket: wait for the next readiness event instead of a read
                // that would find nothing (new data always brings an event).
                let direction = directions[side.rawValue]
                if direction.shortReadDrains, !direction.hungUp, case .read(_, let max) = action, count < max {
                    directions[side.rawValue].canRead = false
                }
            case .endOfStream: directions[side.rawValue].ended = true
            case .wouldBlock: directions[side.rawValue].canRead = false
            case .failed: abort(resetting: [side.other])
            }
        case .write(let side, _):
            let source = side.other.rawValue
            switch outcome {
            case .transferred(let count):
                directions[source].held -= count
                delivered[source] += count
                // A short write filled the socket's buffer.
                if case .write(_, let wanted) = action, count < wanted { directions[source].canWrite = false }
            case .endOfStream, .wouldBlock: directions[source].canWrite = false
            case .failed: abort(resetting: [side.other])
            }
        case .shutdownWrite(let side):
            if outcome == .failed {
                abort(resetting: [side.other])
            } else {
                directions[side.other.rawValue].shutDown = true
            }
        case .reset, .close, .wait:
            break
        }
    }

    /// `side` became readable (or hung up, or has an error: the next read tells).
    public mutating func readable(_ side: Side) { directions[side.rawValue].canRead = true }

    /// `side` reported a hang-up (EPOLLRDHUP, EPOLLHUP or EPOLLERR): its reads run until end of stream
    /// (or an error), since no further readiness event may come.
    public mutating func hungUp(_ side: Side) {
        directions[side.rawValue].hungUp = true
        directions[side.rawValue].canRead = true
    }

    /// `side` became writable.
    public mutating func writable(_ side: Side) { directions[side.other.rawValue].canWrite = true }

    /// `side` reported an error (EPOLLERR with a pending SO_ERROR): reset the other side and close.
    public mutating func failed(_ side: Side) {
        guard phase == .relaying else { return }
        abort(resetting: [side.other])
    }

    /// Whether the relay wants to read from `side` now (for level-triggered interest).
    public func wantsRead(_ side: Side) -> Bool {
        let direction = directions[side.rawValue]
        return phase == .relaying && !direction.ended && direction.held < capacities[side.rawValue]
    }

    /// Whether the relay waits for `side` to become writable (bytes for it are held).
    public func wantsWrite(_ side: Side) -> Bool { phase == .relaying && directions[side.other.rawValue].held > 0 }

    /// No bytes moved for the idle timeout: reset both sides.
    public mutating func timedOut() {
        guard phase == .relaying else { return }
        abort(resetting: [.client, .backend])
    }

    private mutating func abort(resetting sides: [Side]) { phase = .aborting(pending: sides) }

    /// Bytes read from `side` and not yet written to the other side.
    public func heldBytes(from side: Side) -> Int { directions[side.rawValue].held }

    /// Whether `side`'s direction has ended and been propagated (for diagnostics and tests).
    public func isShutDown(from side: Side) -> Bool { directions[side.rawValue].finished }
}
