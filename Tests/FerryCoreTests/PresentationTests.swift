import Foundation
import Testing
@testable import FerryCore

@Suite("kubectl-shaped output")
struct PresentationTests {
    static let durations: [(Double, String)] = [
        (0.0, "0s"), (-1.5, "0s"), (-3, "<invalid>"), (45, "45s"), (119, "119s"), (120, "2m"), (125, "2m5s"), (600, "10m"),
        (179 * 60, "179m"), (3 * 3600, "3h"), (3 * 3600 + 240, "3h4m"), (9 * 3600, "9h"), (50 * 3600, "2d2h"), (48 * 3600, "2d"),
        (10 * 86400, "10d"), (800 * 86400, "2y70d"), (3000 * 86400, "8y"),
    ]

    @Test(arguments: durations)
    func humanDurations(seconds: Double, expected: String) {
        #expect(humanDuration(seconds) == expected)
    }

    @Test func columnsAreAlignedLikeTabwriter() {
        var table = TextTable(header: ["NAME", "ENDPOINTS", "AGE"])
        table.append(["my-service", "10.244.1.2:80,10.244.2.2:80,10.244.2.3:80", "2m"])
        #expect(table.render() == """
            NAME         ENDPOINTS                                   AGE
            my-service   10.244.1.2:80,10.244.2.2:80,10.244.2.3:80   2m

            """)
    }

    @Test func endpointsAreCutAfterThree() {
        var view = EndpointsView.make(name: ServiceName(namespace: "default", name: "x"), service: nil, slices: [])
        #expect(view.endpointsText() == "<none>")
        view.ready = ["a:1", "b:1", "c:1", "d:1", "e:1"]
        #expect(view.endpointsText() == "a:1,b:1,c:1 + 2 more...")
        #expect(view.endpointsText(limit: nil) == "a:1,b:1,c:1,d:1,e:1")
    }
}
