import FerryCore
import Foundation

/// TCP sockets of this network namespace that the kernel is still closing with bytes or a FIN not yet
/// acknowledged (states FIN_WAIT1, CLOSING and LAST_ACK), read from `/proc/net/tcp` and `/proc/net/tcp6`.
///
/// Why: a relay that closes a socket hands its unsent bytes to the kernel, which goes on sending them
/// after `close`. The userspace mode's service addresses are local routes; removed while such a socket
/// still waits for its client's acknowledgements, those acknowledgements are no longer delivered and
/// the tail of the reply never arrives (seen as a client read timing out after Ferry's SIGTERM drain,
/// under load, with every byte already written). So the drain waits for these sockets too.
public enum ClosingTCPSockets {
    /// The local addresses of closing sockets, one per socket (IPv4 and IPv6).
    public static func localAddresses() -> [IPAddress] {
        ["/proc/net/tcp", "/proc/net/tcp6"].flatMap { path in
            (try? String(contentsOfFile: path, encoding: .utf8)).map(localAddresses(inProcText:)) ?? []
        }
    }

    /// The local addresses of closing sockets in the text of `/proc/net/tcp` or `/proc/net/tcp6`.
    public static func localAddresses(inProcText text: String) -> [IPAddress] {
        var addresses: [IPAddress] = []
        for line in text.split(separator: "\n").dropFirst() {
            // "  sl  local_address rem_address   st ...": "0: 0100007F:0050 0200000A:D431 04 ..."
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 3, closingStates.contains(fields[3]),
                let local = fields[1].split(separator: ":").first, let address = address(hex: local)
            else { continue }
            addresses.append(address)
        }
        return addresses
    }

    /// FIN_WAIT1, CLOSING and LAST_ACK: our FIN (and any bytes before it) not yet acknowledged.
    private static let closingStates: Set<Substring> = ["04", "0B", "09"]

    /// The kernel prints an address as 32-bit words in host order: on a little-endian machine each
    /// word's bytes are reversed.
    private static func address(hex: Substring) -> IPAddress? {
        guard hex.count == 8 || hex.count == 32 else { return nil }
        var bytes: [UInt8] = []
        var word: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            word.append(byte)
            if word.count == 4 {
                bytes += UInt32(littleEndian: 1) == 1 ? word.reversed() : word
                word = []
            }
            index = next
        }
        return IPAddress(bytes: bytes)
    }
}
