/// A rule's identity when read back from the kernel: Ferry stamps every rule it writes with a
/// fingerprint of its text (rule userdata holds at most 255 bytes per entry, too little for the text
/// of a long vmap), and compares rules by fingerprint.
enum RuleFingerprint {
    /// The rule userdata TLV type Ferry uses; nft ignores types it does not know.
    static let userdataType: UInt8 = 200

    static func of(_ rule: Rule, family: NFTFamily) -> String {
        if rule.statements.count == 1, case .unparsed(let stamp) = rule.statements[0] { return stamp }
        let text = rule.text(family)
        return hex(fnv1a(text, basis: 0xcbf2_9ce4_8422_2325)) + hex(fnv1a(text, basis: 0x8422_2325_cbf2_9ce4))
    }

    private static func fnv1a(_ text: String, basis: UInt64) -> UInt64 {
        var value = basis
        for byte in text.utf8 {
            value ^= UInt64(byte)
            value = value &* 0x0000_0100_0000_01b3
        }
        return value
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
