import FerryCore
import FerrySystem
import Foundation
import Glibc

/// The client side of `ferry debug load`: one short exchange with a test pod per call.
public enum LoadClient {
    /// One connection: connect, greeting, 64 bytes out and back, close. Returns the pod's name.
    public static func exchange(_ target: SocketAddress, from source: IPAddress? = nil, request: [UInt8], buffer: inout [UInt8])
        -> Result<String, SystemError>
    {
        let fd = socket(target.socketFamily, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .failure(SystemError("socket", errno)) }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        do throws(SystemError) {
            if let source { try DebugProbe.bindSource(fd, source, port: 0) }
            _ = try target.withSockaddr { (pointer, length) throws(SystemError) in
                try System.call("connect") { connect(fd, pointer, length) }
            }
            // Greeting: "NAME addr:port\n".
            var got = 0
            var newline: Int?
            while newline == nil {
                let count = try System.call("read greeting") { read(fd, &buffer[got], buffer.count - got) }
                if count == 0 { throw SystemError("read greeting", ECONNRESET) }
                got += count
                newline = buffer[0..<got].firstIndex(of: UInt8(ascii: "\n"))
                if newline == nil && got == buffer.count { throw SystemError("read greeting", EMSGSIZE) }
            }
            let pod = String(decoding: buffer[0..<newline!].prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)
            try System.call("send") { request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
            var echoed = got - newline! - 1
            while echoed < request.count {
                let count = try System.call("read echo") { read(fd, &buffer[0], buffer.count) }
                if count == 0 { throw SystemError("read echo", ECONNRESET) }
                echoed += count
            }
            return .success(pod)
        } catch {
            return .failure(error)
        }
    }

    /// One UDP query: a datagram out, one back (1 s at most). Returns the pod's name (the answer's first
    /// word). `keep`: reuse one connected socket per target (held in `kept`) instead of a fresh one per query.
    public static func query(_ target: SocketAddress, request: [UInt8], buffer: inout [UInt8], keep: Bool, kept: inout [SocketAddress: Int32])
        -> Result<String, SystemError>
    {
        var fd = kept[target] ?? -1
        if fd < 0 {
            fd = socket(target.socketFamily, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { return .failure(SystemError("socket", errno)) }
            var timeout = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            // Connected: answers from any other address or port than the one asked are not received.
            let connected = target.withSockaddr { connect(fd, $0, $1) }
            if connected < 0 {
                let code = errno
                close(fd)
                return .failure(SystemError("connect", code))
            }
            if keep { kept[target] = fd }
        }
        defer { if !keep { close(fd) } }
        do throws(SystemError) {
            try System.call("send") { request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
            // A late answer to an earlier, lost query of a kept socket would be taken for this one's; it
            // names the same pod (one session), which is all that is read.
            let count = try System.call("recv") { recv(fd, &buffer[0], buffer.count, 0) }
            return .success(String(decoding: buffer[0..<count].prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self))
        } catch {
            return .failure(error)
        }
    }
}
