import FerryProxy
import Testing

@Suite("Sync schedule (bounded frequency)")
struct SyncScheduleTests {
    static func schedule() -> SyncSchedule {
        SyncSchedule(minInterval: .seconds(1), maxInterval: .seconds(30), retryInitial: .milliseconds(500), retryMaximum: .seconds(4))
    }

    @Test func nothingIsDueBeforeTheFirstRequest() {
        let schedule = Self.schedule()
        #expect(schedule.nextRun == nil)
        #expect(!schedule.isDue(at: .seconds(100)))
    }

    @Test func theFirstRequestRunsAtOnceThenBurstsCoalesceAtTheMinimumInterval() {
        var schedule = Self.schedule()
        schedule.request(at: .seconds(10))
        #expect(schedule.isDue(at: .seconds(10)))
        schedule.started(at: .seconds(10))
        schedule.finished(succeeded: true, at: .milliseconds(10_200))
        // A burst right after: one sync, a minimum interval after the last.
        for ms in stride(from: 10_300, to: 10_900, by: 100) { schedule.request(at: .milliseconds(Int64(ms))) }
        #expect(schedule.nextRun == .seconds(11))
        #expect(!schedule.isDue(at: .milliseconds(10_999)))
        #expect(schedule.waiting(at: .seconds(11)) == .milliseconds(700))
        schedule.started(at: .seconds(11))
        #expect(schedule.waiting(at: .seconds(11)) == .zero)
        // A lone change long after waits for nothing.
        schedule.finished(succeeded: true, at: .seconds(11))
        schedule.request(at: .seconds(20))
        #expect(schedule.nextRun == .seconds(20))
    }

    @Test func theResyncIsPeriodicWhenNothingChanges() {
        var schedule = Self.schedule()
        schedule.request(at: .zero)
        schedule.started(at: .zero)
        schedule.finished(succeeded: true, at: .zero)
        #expect(schedule.nextRun == .seconds(30))
        #expect(schedule.isPeriodic(at: .seconds(30)))
        schedule.request(at: .seconds(29))
        #expect(!schedule.isPeriodic(at: .seconds(30)), "a requested sync is not the periodic one")
    }

    @Test func failuresBackOffDoublingToTheMaximumAndSuccessResets() {
        var schedule = Self.schedule()
        var now = Duration.zero
        var delays: [Duration] = []
        schedule.request(at: now)
        for _ in 0..<6 {
            schedule.started(at: now)
            schedule.finished(succeeded: false, at: now)
            let next = schedule.nextRun!
            delays.append(next - now)
            now = next
        }
        #expect(delays == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(4), .seconds(4)])
        schedule.started(at: now)
        schedule.finished(succeeded: true, at: now)
        #expect(schedule.failures == 0)
        #expect(schedule.nextRun == now + .seconds(30))
    }

    @Test func aFollowUpComesWhateverElseIsScheduled() {
        var schedule = Self.schedule()
        schedule.request(at: .zero)
        schedule.started(at: .zero)
        schedule.finished(succeeded: true, at: .zero)
        schedule.followUp(at: .seconds(1))
        #expect(schedule.nextRun == .seconds(1))
        #expect(!schedule.isPeriodic(at: .seconds(1)))
    }
}
