import Foundation

/// Column-aligned text as kubectl prints it (Go's tabwriter with a minimum cell width of 10 and a
/// padding of 3); the last column is not padded.
public struct TextTable: Sendable {
    public var header: [String]
    public var rows: [[String]] = []

    public init(header: [String]) {
        self.header = header
    }

    public mutating func append(_ row: [String]) { rows.append(row) }

    public func render() -> String {
        let all = [header] + rows
        let columns = header.count
        var widths = [Int](repeating: 0, count: columns)
        for row in all {
            for (index, cell) in row.enumerated() where index < columns - 1 {
                widths[index] = max(widths[index], max(10, cell.count + 3))
            }
        }
        // Padded by hand: Foundation's `padding(toLength:)` was 5% of listing 10,000 Services.
        var output = ""
        output.reserveCapacity(all.count * (widths.reduce(0, +) + 16))
        for row in all {
            var line = ""
            for (index, cell) in row.enumerated() {
                line += cell
                if index < columns - 1 { line += String(repeating: " ", count: widths[index] - cell.count) }
            }
            while line.hasSuffix(" ") { line.removeLast() }
            output += line
            output += "\n"
        }
        return output
    }
}

/// kubectl's `HumanDuration`: `45s`, `2m3s`, `15m`, `5h4m`, `3d2h`, `400d`, `2y10d`.
public func humanDuration(_ interval: TimeInterval) -> String {
    let seconds = Int(interval.rounded(.towardZero))
    if seconds < -1 { return "<invalid>" }
    if seconds < 0 { return "0s" }
    if seconds < 120 { return "\(seconds)s" }
    let minutes = seconds / 60
    if minutes < 10 { return seconds % 60 == 0 ? "\(minutes)m" : "\(minutes)m\(seconds % 60)s" }
    if minutes < 180 { return "\(minutes)m" }
    let hours = seconds / 3600
    if hours < 8 { return minutes % 60 == 0 ? "\(hours)h" : "\(hours)h\(minutes % 60)m" }
    if hours < 48 { return "\(hours)h" }
    if hours < 24 * 8 { return hours % 24 == 0 ? "\(hours / 24)d" : "\(hours / 24)d\(hours % 24)h" }
    if hours < 24 * 365 * 2 { return "\(hours / 24)d" }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365
        return days == 0 ? "\(hours / 24 / 365)y" : "\(hours / 24 / 365)y\(days)d"
    }
    return "\(hours / 24 / 365)y"
}

/// The AGE column: `<unknown>` when the object has no creation time, as kubectl prints it.
public func ageText(_ created: Date?, now: Date) -> String {
    guard let created else { return "<unknown>" }
    return humanDuration(now.timeIntervalSince(created))
}
