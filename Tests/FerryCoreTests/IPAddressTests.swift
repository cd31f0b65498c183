import Testing
@testable import FerryCore

@Suite("IP addresses and prefixes")
struct IPAddressTests {
    @Test(arguments: [
        ("10.96.0.1", "10.96.0.1"), ("0.0.0.0", "0.0.0.0"), ("255.255.255.255", "255.255.255.255"),
        ("fd00::1", "fd00::1"), ("FD00:0:0:0:0:0:0:1", "fd00::1"), ("::1", "::1"), ("2001:db8::ff00:42:8329", "2001:db8::ff00:42:8329"),
    ])
    func parsesAndPrintsCanonically(text: String, canonical: String) throws {
        let address = try #require(IPAddress(text))
        #expect(address.description == canonical)
    }

    @Test(arguments: ["", "10.0.0", "10.0.0.256", "10.0.0.1.2", "010.0.0.1", "10.0.0.-1", "a.b.c.d", "10.0.0.1 ", "fd00::1::2", "fd00:::1", "300.1.1.1"])
    func rejectsInvalid(text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test func ordersV4BeforeV6AndNumerically() {
        let sorted = ["10.0.0.10", "fd00::1", "10.0.0.9", "9.255.255.255"].map { IPAddress($0)! }.sorted()
        #expect(sorted.map(\.description) == ["9.255.255.255", "10.0.0.9", "10.0.0.10", "fd00::1"])
    }

    @Test func joinsHostAndPortLikeGo() {
        #expect(IPAddress("10.0.0.1")!.joined(port: 80) == "10.0.0.1:80")
        #expect(IPAddress("fd00::1")!.joined(port: 80) == "[fd00::1]:80")
    }

    @Test func networkByteOrder() {
        #expect(IPAddress("10.1.2.3")!.bytes == [10, 1, 2, 3])
        #expect(IPAddress("fd00::1")!.bytes == [0xfd, 0] + Array(repeating: 0, count: 13) + [1])
    }

    @Test(arguments: [
        ("10.244.0.0/16", "10.244.3.4", true), ("10.244.0.0/16", "10.245.0.1", false), ("10.244.1.7/16", "10.244.200.1", true),
        ("0.0.0.0/0", "192.0.2.1", true), ("fd00::/64", "fd00::5", true), ("fd00::/64", "fd00:0:0:1::5", false),
        ("10.0.0.0/8", "fd00::1", false), ("fd00::/8", "fdff::1", true),
    ])
    func cidrContains(cidr: String, address: String, expected: Bool) throws {
        let prefix = try #require(CIDR(cidr))
        #expect(prefix.contains(IPAddress(address)!) == expected)
    }

    @Test(arguments: ["10.0.0.0", "10.0.0.0/33", "fd00::/129", "x/8", "10.0.0.0/-1"])
    func cidrRejectsInvalid(text: String) {
        #expect(CIDR(text) == nil)
    }
}
