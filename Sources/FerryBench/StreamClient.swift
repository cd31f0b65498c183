import FerrySystem
import FerryUserspace
import Foundation
import Glibc

/// The client side of `ferry debug stream`: a connection to a test pod, its greeting, and a payload
/// streamed through it and checked on its way back (half-close included).
public enum StreamClient {
    public static func connect(_ target: SocketAddress, timeoutMilliseconds: Int) throws -> Int32 {
        let fd = socket(target.socketFamily, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno) }
        var timeout = timeval(tv_sec: timeoutMilliseconds / 1000, tv_usec: __suseconds_t(timeoutMilliseconds % 1000 * 1000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        do {
            _ = try target.withSockaddr { (pointer, length) throws(SystemError) in
                try System.call("connect(\(target))") { Glibc.connect(fd, pointer, length) }
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// The greeting line `NAME ADDRESS:PORT`.
    public static func readLine(_ fd: Int32) throws -> String {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 512 {
            let count = try System.call("read greeting") { read(fd, &byte, 1) }
            if count == 0 { throw SystemError("read greeting (connection closed)", ECONNRESET) }
            if byte == UInt8(ascii: "\n") { break }
            line.append(byte)
        }
        return String(decoding: line, as: UTF8.self)
    }

    /// Streams the payload from a writer thread, half-closes, and hashes the echo until its end.
    public static func roundTrip(
        _ fd: Int32, seed: UInt64, bytes: Int, pauseMilliseconds: Int = 0, readPauseMilliseconds: Int = 0
    ) throws -> (sent: UInt64, received: UInt64, count: Int) {
        let total = bytes
        let pause = pauseMilliseconds
        let sentHash = ManagedHash()
        let writer = Thread {
            var generator = PayloadGenerator(seed: seed)
            var hash = PayloadHash()
            var chunk = [UInt8](repeating: 0, count: 32_768)
            var remaining = total
            var paused = pause == 0
            while remaining > 0 {
                if !paused && remaining <= total / 2 {
                    usleep(useconds_t(pause * 1000))
                    paused = true
                }
                let size = min(remaining, chunk.count, paused ? Int.max : remaining - total / 2)
                generator.fill(&chunk, count: size, hashing: &hash)
                var offset = 0
                while offset < size {
                    let written = chunk[offset..<size].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if written <= 0 {
                        sentHash.finish(nil)
                        return
                    }
                    offset += written
                }
                remaining -= size
            }
            shutdown(fd, Int32(SHUT_WR))
            sentHash.finish(hash.value)
        }
        writer.start()
        var hash = PayloadHash()
        var count = 0
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var readPaused = readPauseMilliseconds == 0
        while true {
            if !readPaused && count >= total / 2 {
                usleep(useconds_t(readPauseMilliseconds * 1000))
                readPaused = true
            }
            let received = read(fd, &buffer, buffer.count)
            if received < 0 {
                if errno == EINTR { continue }
                let failure = SystemError("read echo", errno)
                // The writer still sends on `fd`: stop it and wait for it, so the caller's close cannot
                // race a send onto a descriptor number reused meanwhile.
                shutdown(fd, Int32(SHUT_RDWR))
                _ = sentHash.wait()
                throw failure
            }
            if received == 0 { break }
            hash.add(buffer[0..<received])
            count += received
        }
        return (sentHash.wait() ?? 0, hash.value, count)
    }
}

/// The writer thread's hash, handed to the reader.
final class ManagedHash: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var value: UInt64?
    func finish(_ hash: UInt64?) {
        value = hash
        done.signal()
    }
    func wait() -> UInt64? {
        done.wait()
        return value
    }
}
