import Foundation

/// Horizontal bar charts as standalone SVG files (no script, no external font: they render anywhere).
public enum BarChart {
    static let colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1"]

    /// Room for the longest label at 13 px (about 7.5 px a character in a sans-serif font), at least
    /// 220 px: "Ferry userspace (edge-triggered)" was cut at the left edge in a fixed 220.
    static func labelColumn(_ labels: [String]) -> Double {
        max(220, Double(labels.map(\.count).max() ?? 0) * 7.5 + 16)
    }

    /// One bar per label.
    public static func svg(title: String, unit: String, bars: [(String, Double)]) -> String {
        let labelWidth = labelColumn(bars.map(\.0))
        let width = labelWidth + 420
        let rowHeight = 34.0
        let top = 40.0
        let height = top + rowHeight * Double(bars.count) + 10
        let maximum = max(bars.map(\.1).max() ?? 1, 1e-9)
        var body = ""
        for (index, bar) in bars.enumerated() {
            let y = top + rowHeight * Double(index)
            let length = (width - labelWidth - 110) * bar.1 / maximum
            let value = bar.1 >= 100 ? String(format: "%.0f", bar.1) : String(format: "%.2f", bar.1)
            body += """
                <text x="\(labelWidth - 8)" y="\(y + 20)" text-anchor="end" font-size="13">\(escape(bar.0))</text>
                <rect x="\(labelWidth)" y="\(y + 6)" width="\(String(format: "%.1f", length))" height="20" fill="\(colors[index % colors.count])"/>
                <text x="\(labelWidth + length + 6)" y="\(y + 20)" font-size="13">\(value) \(unit)</text>

                """
        }
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif">
            <rect width="100%" height="100%" fill="white"/>
            <text x="10" y="24" font-size="15" font-weight="bold">\(title)</text>
            \(body)</svg>

            """
    }

    /// A group of bars per row (one per series, a legend on top): e.g. p50/p90/p99 per target.
    public static func grouped(title: String, unit: String, groups: [String], series: [String], values: [[Double]]) -> String {
        let labelWidth = labelColumn(groups)
        let width = labelWidth + 500
        let barHeight = 14.0
        let groupHeight = barHeight * Double(series.count) + 12
        let top = 64.0
        let height = top + groupHeight * Double(groups.count) + 10
        let maximum = max(values.flatMap { $0 }.filter(\.isFinite).max() ?? 1, 1e-9)
        var body = ""
        for (index, name) in series.enumerated() {
            let x = 10 + Double(index) * 120
            body += """
                <rect x="\(x)" y="36" width="12" height="12" fill="\(colors[index % colors.count])"/>
                <text x="\(x + 16)" y="46" font-size="12">\(escape(name))</text>

                """
        }
        for (row, group) in groups.enumerated() {
            let y = top + groupHeight * Double(row)
            body += """
                <text x="\(labelWidth - 8)" y="\(y + groupHeight / 2 + 4)" text-anchor="end" font-size="13">\(escape(group))</text>

                """
            for (index, value) in (row < values.count ? values[row] : []).enumerated() {
                let barY = y + Double(index) * barHeight
                // NaN: not measured (said, not drawn as a zero).
                let length = value.isFinite ? (width - labelWidth - 110) * max(0, value) / maximum : 0
                let shown = !value.isFinite ? "not measured" : value >= 100 ? String(format: "%.0f", value) : String(format: "%.2f", value)
                body += """
                    <rect x="\(labelWidth)" y="\(barY)" width="\(String(format: "%.1f", length))" height="\(barHeight - 2)" fill="\(colors[index % colors.count])"/>
                    <text x="\(labelWidth + length + 4)" y="\(barY + barHeight - 4)" font-size="11">\(shown)\(value.isFinite ? " " + unit : "")</text>

                    """
            }
        }
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif">
            <rect width="100%" height="100%" fill="white"/>
            <text x="10" y="24" font-size="15" font-weight="bold">\(escape(title))</text>
            \(body)</svg>

            """
    }

    /// Text made safe inside SVG.
    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
