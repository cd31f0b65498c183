/// Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of a prime size in which
/// each backend fills slots in the order of its own permutation, taking turns. A key maps to
/// `table[hash(key) % size]`; when one of N backends leaves, only about 1/N of the keys move.
public struct MaglevTable: Sendable, Hashable {
    /// Primes used as table sizes; the first at least 100 times the number of backends is chosen, so
    /// that each backend's share stays within about 1% of the others'.
    static let sizes = [251, 509, 1_021, 2_039, 4_093, 8_191, 16_381, 32_749, 65_521]

    public let size: Int
    /// For each slot, the index of a backend in the `names` the table was built from.
    let slots: [Int32]

    /// Builds the table for backends known by `names` (any order: the table depends on the names only).
    public init(names: [String]) {
        let size = Self.sizes.first { $0 >= names.count * 100 } ?? Self.sizes.last!
        self.size = size
        guard !names.isEmpty else {
            slots = []
            return
        }
        let permutations = names.map { name -> (offset: Int, skip: Int) in
            let offset = Int(Self.hash(name, seed: 0x9E37_79B9_7F4A_7C15) % UInt64(size))
            let skip = Int(Self.hash(name, seed: 0xC2B2_AE3D_27D4_EB4F) % UInt64(size - 1)) + 1
            return (offset, skip)
        }
        var table = [Int32](repeating: -1, count: size)
        var next = [Int](repeating: 0, count: names.count)
        var filled = 0
        outer: while true {
            for index in names.indices {
                var slot = (permutations[index].offset + next[index] * permutations[index].skip) % size
                while table[slot] >= 0 {
                    next[index] += 1
                    slot = (permutations[index].offset + next[index] * permutations[index].skip) % size
                }
                table[slot] = Int32(index)
                next[index] += 1
                filled += 1
                if filled == size { break outer }
            }
        }
        slots = table
    }

    /// The index of the backend for `key`, or `nil` for an empty table.
    public func index(for key: UInt64) -> Int? {
        slots.isEmpty ? nil : Int(slots[Int(key % UInt64(size))])
    }

    /// The index of the backend for a client address.
    public func index(for client: IPAddress) -> Int? { index(for: Self.hash(client.description, seed: 0x1234_5678_9ABC_DEF1)) }

    /// 64-bit FNV-1a with a seed folded in, then a final mix (stable across runs and platforms).
    static func hash(_ text: String, seed: UInt64) -> UInt64 {
        var value: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for byte in text.utf8 {
            value ^= UInt64(byte)
            value = value &* 0x0000_0100_0000_01b3
        }
        value ^= value >> 33
        value = value &* 0xff51_afd7_ed55_8ccd
        value ^= value >> 33
        return value
    }
}
