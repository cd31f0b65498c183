/// nft's own set userdata for Ferry's endpoint maps: byte orders and the `typeof` description of key
/// and data, so that `nft list` prints `typeof ip daddr . meta l4proto . th dport . numgen random mod 1
/// : ip daddr . th dport` (what Ferry renders, and what `nft -f` accepts back) instead of a key type it
/// cannot name (the slot is a bare integer). Captured from nftables 1.0.6 (`nft -f` of those
/// declarations, the set's NFTA_SET_USERDATA dumped with libnftnl); nft 1.0.6 and later read it.
/// Ferry appends its own entry (type 201, the key fields) after these.
enum NFTTypeofUserdata {
    static func bytes(key: [KeyField], family: NFTFamily) -> [UInt8]? {
        let hex: String
        switch (family, key) {
        case (.ip, [.destinationAddress, .l4Protocol, .destinationPort, .slot]): hex = ipAddressKey
        case (.ip, [.l4Protocol, .destinationPort, .slot]): hex = ipPortKey
        case (.ip6, [.destinationAddress, .l4Protocol, .destinationPort, .slot]): hex = ip6AddressKey
        case (.ip6, [.l4Protocol, .destinationPort, .slot]): hex = ip6PortKey
        default: return nil
        }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }

    private static let ipAddressKey =
        "000400000000010400000000036000040d00000001580014000407000000010c00040c00000001040c000000010e0004090000000106000410000000"
        + "0214000407000000010c00040b000000010402000000031a0004170000000112000401000000010401000000020400000000043400040d000000012c"
        + "0014000407000000010c00040c00000001040c0000000114000407000000010c00040b000000010402000000060400000000"
    private static let ipPortKey =
        "000400000000010400000000034a00040d0000000142000e00040900000001060004100000000114000407000000010c00040b000000010402000000"
        + "021a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040c00000001040c000000"
        + "0114000407000000010c00040b000000010402000000060400000000"
    private static let ip6AddressKey =
        "000400000000010400000000036000040d00000001580014000407000000010c00040d000000010409000000010e0004090000000106000410000000"
        + "0214000407000000010c00040b000000010402000000031a0004170000000112000401000000010401000000020400000000043400040d000000012c"
        + "0014000407000000010c00040d0000000104090000000114000407000000010c00040b000000010402000000060400000000"
    private static let ip6PortKey =
        "000400000000010400000000034a00040d0000000142000e00040900000001060004100000000114000407000000010c00040b000000010402000000"
        + "021a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040d000000010409000000"
        + "0114000407000000010c00040b000000010402000000060400000000"
}
