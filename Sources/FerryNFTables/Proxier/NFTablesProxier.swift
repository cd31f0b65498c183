import FerryCore

/// What one sync did.
public struct NFTablesSyncReport: Sendable {
    /// The transaction sent (empty when nothing differed).
    public var transaction: Transaction
    /// Whether the kernel's state was read back first (start-up, after a failure, or after someone
    /// else changed nftables).
    public var readBack: Bool
    /// Time spent planning and diffing, and in the kernel (send to the end of its replies).
    public var planDuration: Duration
    public var kernelDuration: Duration
}

/// Keeps Ferry's nftables tables equal to what the backend tables call for.
///
/// It mirrors what it applied, so a sync sends only the difference. It reads the kernel's tables back
/// at start-up (converging an existing table without flushing it: a restart drops no connection),
/// after a rejected batch, and when the nftables generation changed behind its back (someone else
/// edited rules). Chains and sets no longer wanted are emptied at once and deleted one sync later.
public final class NFTablesProxier {
    public let netfilter: Netfilter
    public var config: PlannerConfig
    private var applied: Ruleset?
    private var lastGeneration: UInt32?
    private var awaitingDeletion: Set<StaleObject> = []

    public init(netfilter: Netfilter, config: PlannerConfig) {
        self.netfilter = netfilter
        self.config = config
    }

    /// Chains or sets are waiting to be deleted: another sync should follow shortly.
    public var hasPendingDeletions: Bool { !awaitingDeletion.isEmpty }

    /// Forgets the mirror, so the next sync reads the kernel back.
    public func invalidate() { applied = nil }

    /// Brings the kernel to the ruleset for `tables`. On failure nothing was applied (the kernel rolls
    /// the batch back) and the next sync reads the kernel's state back.
    public func sync(_ tables: BackendTables) throws(NetfilterError) -> NFTablesSyncReport {
        let clock = ContinuousClock()
        var readBack = false
        if applied == nil || (try? netfilter.generation()) != lastGeneration {
            applied = try netfilter.read(table: Planner.tableName)
            readBack = true
        }
        var transaction = Transaction()
        let planDuration = clock.measure {
            let desired = Planner.plan(tables, config: config)
            let stale = RulesetDiff.staleObjects(applied: applied!, desired: desired)
            transaction = RulesetDiff.transaction(from: applied!, to: desired, deletable: awaitingDeletion.intersection(stale))
            awaitingDeletion = stale.subtracting(awaitingDeletion.intersection(stale))
        }
        let start = clock.now
        do {
            try netfilter.apply(transaction)
        } catch {
            applied = nil
            lastGeneration = nil
            throw error
        }
        let kernelDuration = clock.now - start
        applied = applied!.applying(transaction)
        lastGeneration = try? netfilter.generation()
        return NFTablesSyncReport(transaction: transaction, readBack: readBack, planDuration: planDuration, kernelDuration: kernelDuration)
    }
}
