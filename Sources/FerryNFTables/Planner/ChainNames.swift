import FerryCore

/// Stable, readable names for per-service objects: a short hash plus the readable service port,
/// e.g. `service-ULMVA6XW-default/my-service/tcp/http`.
public enum ChainNames {
    /// The readable part: `namespace/name/protocol/port` (the port's name, else its number).
    static func readable(_ table: ServicePortTable) -> String {
        let port = table.name.port.isEmpty ? String(table.port) : table.name.port
        return "\(table.name.service.namespace)/\(table.name.service.name)/\(table.name.protocol.rawValue.lowercased())/\(port)"
    }

    static func service(_ table: ServicePortTable) -> String { named("service", readable(table)) }
    static func local(_ table: ServicePortTable) -> String { named("local", readable(table)) }
    static func external(_ table: ServicePortTable) -> String { named("external", readable(table)) }
    static func firewall(_ table: ServicePortTable) -> String { named("firewall", readable(table)) }

    static func endpoint(_ table: ServicePortTable, _ backend: Backend) -> String {
        named("endpoint", "\(readable(table))__\(endpointText(backend))")
    }

    /// One affinity set per endpoint; the timeout is part of the hash so that changing it makes new sets.
    static func affinity(_ table: ServicePortTable, _ backend: Backend, timeout: Int) -> String {
        let readable = "\(readable(table))__\(endpointText(backend))"
        return "affinity-\(hash(readable + "/\(timeout)"))-\(readable)"
    }

    private static func endpointText(_ backend: Backend) -> String { "\(backend.ip)/\(backend.port)" }

    private static func named(_ prefix: String, _ readable: String) -> String { "\(prefix)-\(hash(prefix + readable))-\(readable)" }

    /// 8 characters of base32 of a 64-bit FNV-1a hash: short, stable across runs and platforms.
    public static func hash(_ text: String) -> String {
        var value: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            value ^= UInt64(byte)
            value = value &* 0x0000_0100_0000_01b3
        }
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        var result = ""
        for _ in 0..<8 {
            result.append(alphabet[Int(value & 31)])
            value >>= 5
        }
        return result
    }
}
