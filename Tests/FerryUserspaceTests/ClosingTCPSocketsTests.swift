import FerryCore
import FerrySystem
import Testing

@Suite("closing TCP sockets read from /proc/net/tcp")
struct ClosingTCPSocketsTests {
    @Test func onlySocketsWaitingForTheirFINToBeAcknowledgedAreListed() {
        let text = """
              sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
               1: 0A00600A:0050 0200000A:D431 04 00010000:00000000 01:00000010 00000000     0        0 0 1 0000000000000000 20 4 0 10 -1
               2: 0A00600A:0050 0200000A:D432 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
               3: 0B00600A:0050 0200000A:D433 09 00000000:00000000 01:00000010 00000000     0        0 0 1 0000000000000000 20 4 0 10 -1
            """
        // FIN_WAIT1 (04) and LAST_ACK (09) wait for acknowledgements; LISTEN (0A) and TIME_WAIT (06) do not.
        #expect(ClosingTCPSockets.localAddresses(inProcText: text) == [IPAddress("10.96.0.10")!, IPAddress("10.96.0.11")!])
    }

    @Test func ipv6AddressesAreReadWordByWord() {
        let text = """
              sl  local_address                         remote_address                        st tx_queue rx_queue
               0: B80D0120000000000000000001000000:0050 B80D0120000000000000000002000000:D431 0B 00000000:00000000
            """
        #expect(ClosingTCPSockets.localAddresses(inProcText: text) == [IPAddress("2001:db8::1")!])
    }
}
