import FerryCore
import Foundation

/// Facts about the machine Ferry runs on.
public enum HostInfo {
    /// The host name, lowercased as Kubernetes node names are.
    public static func hostName() -> String {
        ProcessInfo.processInfo.hostName.split(separator: ".").first.map { String($0).lowercased() } ?? "localhost"
    }

    /// The host's non-loopback interface addresses.
    public static func localAddresses() -> [IPAddress] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var result: [IPAddress] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let socketAddress = entry.pointee.ifa_addr else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let length =
                socketAddress.pointee.sa_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size
            guard [sa_family_t(AF_INET), sa_family_t(AF_INET6)].contains(socketAddress.pointee.sa_family),
                getnameinfo(socketAddress, socklen_t(length), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0
            else { continue }
            let text = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let address = IPAddress(text.split(separator: "%").first ?? ""), !address.isLoopback, !result.contains(address) {
                result.append(address)
            }
        }
        return result
    }

    /// Whether this process may program the network (CAP_NET_ADMIN in its effective set, as root has).
    public static func canAdministerNetwork() -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
            let mask = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { return getuid() == 0 }
        let netAdmin: UInt64 = 1 << 12
        return mask & netAdmin != 0
    }
}
