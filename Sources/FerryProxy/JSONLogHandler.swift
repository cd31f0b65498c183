import Foundation
import Logging
import Synchronization

/// Log records as JSON lines on standard error (`--log-format json`), for log pipelines that parse
/// them: `{"ts":"2026-12-02T10:00:00.250Z","level":"info","logger":"ferry","msg":"synced",...}`, with the
/// metadata as string fields.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private static let output = Mutex<Void>(())

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [String: String] = [:]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) { fields[key] = "\(value)" }
        // One gmtime_r, not an ISO8601DateFormatter made for every record.
        let time = UTCTime(Date())
        fields["ts"] = "\(time.date)T\(time.clock).\(String(format: "%03d", time.nanoseconds / 1_000_000))Z"
        fields["level"] = event.level.rawValue
        fields["logger"] = label
        fields["msg"] = "\(event.message)"
        guard var data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        data.append(0x0a)
        // write(2), not FileHandle: on a closed stderr (EPIPE) FileHandle traps, and took the proxy down
        // before it could remove its routes.
        Self.output.withLock { _ in
            _ = data.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        }
    }
}
