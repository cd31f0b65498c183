/// A reproducible pseudo-random byte stream, for checking that a relay delivers every byte unchanged
/// (`ferry debug stream` and the tests).
public struct PayloadGenerator: Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// Overwrites the first `count` bytes of `buffer` with the next bytes of the stream and adds them
    /// to `hash`.
    public mutating func fill(_ buffer: inout [UInt8], count: Int, hashing hash: inout PayloadHash) {
        for index in 0..<count {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            buffer[index] = UInt8(truncatingIfNeeded: state >> 33)
        }
        hash.add(buffer[0..<count])
    }
}

/// A running 64-bit FNV-1a hash of the bytes of a stream.
public struct PayloadHash: Sendable, Hashable {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    public mutating func add(_ bytes: some Sequence<UInt8>) {
        for byte in bytes { value = (value ^ UInt64(byte)) &* 0x100_0000_01b3 }
    }
}
