import FerryBench
import Testing

@Suite("spread over backends: max/min and chi-square")
struct SpreadTests {
    @Test func upperTailMatchesTables() {
        // Critical values at p = 0.05 and 0.001 from the chi-square table.
        #expect(abs(Spread.upperTail(chiSquare: 3.841, degreesOfFreedom: 1) - 0.05) < 1e-3)
        #expect(abs(Spread.upperTail(chiSquare: 5.991, degreesOfFreedom: 2) - 0.05) < 1e-3)
        #expect(abs(Spread.upperTail(chiSquare: 13.816, degreesOfFreedom: 2) - 0.001) < 1e-4)
        #expect(abs(Spread.upperTail(chiSquare: 2.366, degreesOfFreedom: 3) - 0.5) < 1e-3)
        #expect(abs(Spread.upperTail(chiSquare: 29.588, degreesOfFreedom: 10) - 0.001) < 1e-4)
    }

    @Test func evenAndUnevenSpreads() {
        let even = Spread(counts: ["a": 1_000, "b": 1_010, "c": 990])
        #expect(even.isEven && abs(even.maxOverMin! - 1_010.0 / 990) < 1e-9)
        let skewed = Spread(counts: ["a": 1_200, "b": 900, "c": 900])
        #expect(!skewed.isEven)
        let missing = Spread(counts: ["a": 100, "b": 100], backends: ["a", "b", "c"])
        #expect(missing.counts["c"] == 0 && missing.maxOverMin == nil && !missing.isEven)
    }
}
