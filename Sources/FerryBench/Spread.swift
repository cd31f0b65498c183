import Foundation

/// How evenly connections spread over backends: the max/min ratio and Pearson's chi-square test
/// against an even spread.
public struct Spread: Codable, Sendable, Hashable {
    /// Connections per backend, by backend name.
    public var counts: [String: Int]
    /// The busiest backend's count over the idlest one's (nil when one got none).
    public var maxOverMin: Double?
    /// Pearson's statistic against an even spread, with backends - 1 degrees of freedom.
    public var chiSquare: Double
    /// The probability of a statistic at least this large if the choice were even (upper tail).
    public var pValue: Double

    /// The bound a fair balancer stays within: an even choice exceeds it once in a thousand runs.
    public static let significance = 0.001

    /// Whether the spread is within the chi-square bound.
    public var isEven: Bool { pValue >= Spread.significance }

    /// `backends` names every backend that should have been chosen (one that got none counts as 0).
    public init(counts: [String: Int], backends: [String]? = nil) {
        var all = counts
        for name in backends ?? [] where all[name] == nil { all[name] = 0 }
        self.counts = all
        let values = all.values.map(Double.init)
        let total = values.reduce(0, +)
        let smallest = values.min() ?? 0
        maxOverMin = smallest > 0 ? (values.max() ?? 0) / smallest : nil
        guard values.count > 1, total > 0 else {
            chiSquare = 0
            pValue = 1
            return
        }
        let expected = total / Double(values.count)
        chiSquare = values.reduce(0) { $0 + ($1 - expected) * ($1 - expected) / expected }
        pValue = Spread.upperTail(chiSquare: chiSquare, degreesOfFreedom: values.count - 1)
    }

    /// P(X >= x) for a chi-square variable with k degrees of freedom: the regularized upper incomplete
    /// gamma function Q(k/2, x/2), by its series below a + 1 and its continued fraction above
    /// (Numerical Recipes' method; exact to ~1e-12 here, far below what a 0.001 bound needs).
    public static func upperTail(chiSquare x: Double, degreesOfFreedom k: Int) -> Double {
        guard x > 0, k > 0 else { return 1 }
        let a = Double(k) / 2
        let z = x / 2
        let logPrefix = a * log(z) - z - lgamma(a)
        if z < a + 1 {
            // P(a, z) by its series; Q = 1 - P.
            var term = 1 / a
            var sum = term
            var n = a
            for _ in 0..<500 {
                n += 1
                term *= z / n
                sum += term
                if abs(term) < abs(sum) * 1e-15 { break }
            }
            return max(0, 1 - sum * exp(logPrefix))
        }
        // Q(a, z) by Lentz's continued fraction.
        let tiny = 1e-300
        var b = z + 1 - a
        var c = 1 / tiny
        var d = 1 / b
        var h = d
        for i in 1..<500 {
            let an = -Double(i) * (Double(i) - a)
            b += 2
            d = an * d + b
            if abs(d) < tiny { d = tiny }
            c = b + an / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            let delta = d * c
            h *= delta
            if abs(delta - 1) < 1e-15 { break }
        }
        return min(1, exp(logPrefix) * h)
    }
}
