//! The replica's parameters (ARCHITECTURE.md, "The protocol": W, K, L, R, D, T, T_tx) and
//! the deliberate mutants the simulator's tests switch on.

use weft_dag::{Committee, Limits, ValidatorIndex};

/// Protocol parameters of one replica. Validated once, by [`ReplicaConfig::validate`].
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This replica's index.
    pub index: ValidatorIndex,
    /// The validator set.
    pub committee: Committee,
    /// Vertex limits.
    pub limits: Limits,
    /// D: the GC round trails the highest committed anchor by this many rounds.
    pub gc_depth: u64,
    /// W: sequences in flight above the stable checkpoint.
    pub window: u64,
    /// K: a checkpoint every K sequences.
    pub checkpoint_interval: u64,
    /// The finalizer's snapshot is persisted with every this many finalized entries, so
    /// restart replays at most this many entries above it (plus the dedup window).
    pub snapshot_interval: u64,
    /// L: a pre-prepare whose round is more than L below ours is stale.
    pub max_anchor_lag: u64,
    /// R: pushed vertices more than R rounds above our own are dropped unbuffered.
    pub max_round_lead: u64,
    /// Most transactions per vertex.
    pub max_batch_transactions: usize,
    /// Most transactions waiting in the mempool.
    pub max_mempool_transactions: usize,
    /// With nothing to order, build a vertex after this long anyway.
    pub idle_interval_ms: u64,
    /// The heartbeat that checks deadlines.
    pub tick_interval_ms: u64,
    /// How far ahead of our clock a primary's anchor may be stamped for us to prepare
    /// it; vertices stamped more than half of this ahead are not referenced. Consensus
    /// time is taken from anchors' stamps, so this bounds how far one Byzantine primary
    /// can push it (and expire transactions early).
    pub max_clock_drift_ms: u64,
    /// Re-send what peers may have lost this often.
    pub retransmit_interval_ms: u64,
    /// T: waiting this long without progress starts a view change.
    pub view_change_timeout_ms: u64,
    /// The cap of T's doubling.
    pub max_view_change_timeout_ms: u64,
    /// T_tx: an own transaction not final after this long starts a view change.
    pub transaction_timeout_ms: u64,
    /// Commit certificates kept for executed sequences, to help lagging peers.
    pub decided_retention: u64,
    /// Proven faults after which a validator's vertices are referenced only when needed.
    pub ban_threshold: u32,
    /// The host vouches that this validator's key has never signed anything (a home
    /// whose key was created and never ran). Only then does an empty store start signing
    /// at once; otherwise an empty store learns a signing floor from 2f + 1 peers first
    /// (an empty store is not a fresh validator: its disk may have been wiped).
    pub fresh: bool,
    /// Entropy from the host, different at every process start (the node draws it from
    /// the clock's nanoseconds and its process id). A learning replica's status-request
    /// nonce mixes it with the start time, so no status sent before this start (say,
    /// before the wipe) can answer the request.
    pub boot_nonce: u64,
    #[doc(hidden)]
    /// Deliberate bugs for the simulator's checker tests. Always `None` in a node.
    pub mutant: Option<Mutant>,
    #[doc(hidden)]
    /// The replica as it was when the replayed seeds were found (session 8), beside
    /// another mutant: the anchoring rule before `unanchored` (what
    /// `Mutant::LatestVertexOnly` brings back), no durable admission, no nudges, and
    /// pushed vertices bounded by the own round alone. It replays the trajectory of a
    /// seed found before those changes. Always false in a node.
    pub legacy_replay: bool,
}

#[doc(hidden)]
/// Deliberately broken rules, each a test that the simulator's checkers fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    /// Send the own vertex without making it durable first.
    NoDurableOwnVertex,
    /// Advance rounds on 2f + 1 parent vertices instead of 2f + 1 parent authors.
    CountParentVertices,
    /// Finality by per-author frontier instead of the exact finalized set.
    PerAuthorFrontier,
    /// Finding 1: a primary's ordinary pre-prepare may take a sequence the NewView of
    /// the view re-proposed (while its anchor's history is being fetched).
    PrePrepareOverNewView,
    /// Finding 2: view-change claims are not bounded to (h, h + W] and the decision
    /// fills every sequence up to the highest claim.
    UnboundedClaims,
    /// Finding 3: the primary's own prepare counts toward the 2f, a second pre-prepare
    /// for one (view, sequence) is ignored, anchor rounds need not increase in a view.
    CountPrimaryPrepare,
    /// Finding 4: the primary's pre-prepare claim is persisted after its anchor leaves,
    /// and recovery resumes proposals from votes only.
    ProposalNotDurable,
    /// Finding 5: the new primary sends its NewView before the view's activation is
    /// durable, and recovery neither restores the NewView nor re-counts its own view change.
    NewViewNotDurable,
    /// Finding 5: an empty store is treated as a fresh validator (signs from view 0,
    /// round 0 at once).
    WipedStoreSignsAtOnce,
    /// Found by the side-history adversary: a primary's vertex may take a sequence the
    /// view's NewView decided when that sequence has no log entry (it lies at or below
    /// the replica's stable checkpoint, which passed its execution).
    PrePrepareBelowStable,
    /// Found by the long run (seed 100,017,076): a replica builds only at its own next
    /// round, so one whose chain fell below the GC round never builds again.
    NoRoundJump,
    /// Found with the round-jump mutant's seeds (seed 5,000,419, no Byzantine): a
    /// learning replica counts any peer's status, even one sent before its wipe, which
    /// may report a round below what the replica signed before it.
    StaleStatusCounts,
    /// Found by the e2e suite (a stall at the end of a load): the primary looks for
    /// something to anchor only in each author's latest vertex, so a vertex carrying
    /// transactions that its author's next (empty) vertex overtook before an anchor
    /// covered it is never anchored while the validators are otherwise idle.
    LatestVertexOnly,
    /// Found by the attack review of the fixes: a learning replica's state is not marked
    /// durable, so one that saved a view (entering it through a NewView, or on its
    /// view-change timer) and crashed before learning restarts with neither a floor nor
    /// learning, and signs a second round-0 vertex.
    LearningNotDurable,
    /// Found by the attack review (known limit 12 before the fix): a learning replica
    /// takes its floor from the first 2f + 1 reports however far they lie above the DAG
    /// and the log it holds, so one Byzantine report of round 10^12 (or of a far executed
    /// sequence with a far view) leaves it unable to sign ever again.
    UnverifiedReports,
    /// Issue 11 (acknowledged transactions lost on a crash): admitted transactions are
    /// kept in memory only, so a replica that acknowledged a transaction and crashed
    /// before putting it in a vertex forgets it.
    MempoolNotDurable,
    /// Found by the durable-acknowledgement clients (who no longer resubmit what an
    /// honest validator acknowledged): no `Nudge`, so a replica holding transactions
    /// without a quorum of its previous round waits for the idle heartbeat (300 s)
    /// while its peers, with nothing to order, build nothing.
    NoNudge,
    /// Issue 11 (checkpointed restart): recovery takes the finalizer's snapshot but not
    /// the entries of its dedup window, so a restarted replica forgets which unexpired
    /// transactions were finalized and finalizes a later copy a second time.
    SnapshotWithoutWindow,
    /// Found by the long run (seed 103,100,007,177): the DAG keeps a wanted hash after
    /// its vertex arrives and, at the bound, drops the smallest hash rather than the
    /// oldest wish, and retransmission does not want again the anchor it fetches. A
    /// committed anchor whose Byzantine author sent this replica another version of the
    /// slot is then refused on every fetch: the replica never executes it.
    StaleWants,
    /// Found by the attack review of the `StaleWants` fix: retransmission sorts every
    /// hash it lacks (missing parents and designated anchors) by hash and fetches the
    /// first 256, so made-up parents of a Byzantine validator's waiting vertices can
    /// keep a committed anchor out of every fetch.
    FetchByHashOrder,
    /// Found by the long run with the strengthened flood (seed 116,150,001,177): at an
    /// author's cap of waiting vertices, a vertex that held or waiting vertices need is
    /// refused unless it lies below the author's highest waiting one, so a Byzantine
    /// author's made-up vertices keep out its real ones and every honest vertex that
    /// references them.
    RefuseNeededAtCap,
    /// Found by the attack review of the fetch list: missing parents are asked only of
    /// the rotating peer, never of the author of the waiting vertex that names them, so
    /// the window over them can lock onto the rotation and ask a parent only of
    /// Byzantine peers.
    FetchByRotationOnly,
    /// Found by the long run (seed 117,100,002,636, known limit 18): every waiting vertex
    /// is charged to its author's share, and at the cap a vertex something needs
    /// displaces the author's highest waiting vertex that nothing needs, at any round.
    /// Later vertices of an honest author that arrive while a lagging replica walks the
    /// same author's chain down parent by parent then eat the walk from its top, and the
    /// replica never catches up.
    NeededDisplacesIdle,
}

impl Mutant {
    /// True when the replica runs the wanted set of before seed 103,100,007,177.
    pub(crate) fn stale_wants(config: &ReplicaConfig) -> bool {
        config.legacy_replay || config.mutant == Some(Mutant::StaleWants)
    }

    /// True when retransmission fetches by hash order (as before the review of the
    /// wanted-set fix). `StaleWants` brings it back too: it replays its seed as it ran.
    pub(crate) fn fetch_by_hash_order(config: &ReplicaConfig) -> bool {
        config.legacy_replay
            || matches!(
                config.mutant,
                Some(Mutant::FetchByHashOrder | Mutant::StaleWants)
            )
    }

    /// True when missing parents are asked only of the rotating peer (as before the
    /// review of the fetch list). The earlier mutants bring it back too.
    pub(crate) fn fetch_by_rotation_only(config: &ReplicaConfig) -> bool {
        config.legacy_replay
            || matches!(
                config.mutant,
                Some(
                    Mutant::FetchByRotationOnly
                        | Mutant::RefuseNeededAtCap
                        | Mutant::FetchByHashOrder
                        | Mutant::StaleWants
                )
            )
    }

    /// True when the waiting buffer refuses needed vertices at an author's cap (as before
    /// seed 116,150,001,177). The two earlier mutants bring it back too, for the same
    /// reason.
    pub(crate) fn refuse_needed_at_cap(config: &ReplicaConfig) -> bool {
        config.legacy_replay
            || matches!(
                config.mutant,
                Some(Mutant::RefuseNeededAtCap | Mutant::FetchByHashOrder | Mutant::StaleWants)
            )
    }

    /// Every mutant, in the order the simulator's tests run them.
    pub const ALL: [Mutant; 23] = [
        Mutant::NoDurableOwnVertex,
        Mutant::CountParentVertices,
        Mutant::PerAuthorFrontier,
        Mutant::PrePrepareOverNewView,
        Mutant::UnboundedClaims,
        Mutant::CountPrimaryPrepare,
        Mutant::ProposalNotDurable,
        Mutant::NewViewNotDurable,
        Mutant::WipedStoreSignsAtOnce,
        Mutant::PrePrepareBelowStable,
        Mutant::NoRoundJump,
        Mutant::StaleStatusCounts,
        Mutant::LatestVertexOnly,
        Mutant::LearningNotDurable,
        Mutant::UnverifiedReports,
        Mutant::MempoolNotDurable,
        Mutant::NoNudge,
        Mutant::SnapshotWithoutWindow,
        Mutant::StaleWants,
        Mutant::FetchByHashOrder,
        Mutant::RefuseNeededAtCap,
        Mutant::FetchByRotationOnly,
        Mutant::NeededDisplacesIdle,
    ];

    /// The command-line name (`--mutant NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Mutant::NoDurableOwnVertex => "no-durable-own-vertex",
            Mutant::CountParentVertices => "count-parent-vertices",
            Mutant::PerAuthorFrontier => "per-author-frontier",
            Mutant::PrePrepareOverNewView => "pre-prepare-over-new-view",
            Mutant::UnboundedClaims => "unbounded-claims",
            Mutant::CountPrimaryPrepare => "count-primary-prepare",
            Mutant::ProposalNotDurable => "proposal-not-durable",
            Mutant::NewViewNotDurable => "new-view-not-durable",
            Mutant::WipedStoreSignsAtOnce => "wiped-store-signs-at-once",
            Mutant::PrePrepareBelowStable => "pre-prepare-below-stable",
            Mutant::NoRoundJump => "no-round-jump",
            Mutant::StaleStatusCounts => "stale-status-counts",
            Mutant::LatestVertexOnly => "latest-vertex-only",
            Mutant::LearningNotDurable => "learning-not-durable",
            Mutant::UnverifiedReports => "unverified-reports",
            Mutant::MempoolNotDurable => "mempool-not-durable",
            Mutant::NoNudge => "no-nudge",
            Mutant::SnapshotWithoutWindow => "snapshot-without-window",
            Mutant::StaleWants => "stale-wants",
            Mutant::FetchByHashOrder => "fetch-by-hash-order",
            Mutant::RefuseNeededAtCap => "refuse-needed-at-cap",
            Mutant::FetchByRotationOnly => "fetch-by-rotation-only",
            Mutant::NeededDisplacesIdle => "needed-displaces-idle",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The index is not in the validator set.
    #[error("replica index {0} is not in the validator set")]
    UnknownIndex(ValidatorIndex),
    /// A parameter is out of range.
    #[error("{name} must be {rule}")]
    OutOfRange {
        /// The parameter.
        name: &'static str,
        /// Its allowed range.
        rule: &'static str,
    },
}

impl ReplicaConfig {
    /// Defaults for `index` in `committee`.
    pub fn new(index: ValidatorIndex, committee: Committee) -> ReplicaConfig {
        ReplicaConfig {
            index,
            committee,
            limits: Limits::default(),
            gc_depth: 50,
            window: 8,
            checkpoint_interval: 4,
            snapshot_interval: 64,
            max_anchor_lag: 10,
            max_round_lead: 100,
            max_batch_transactions: 1_000,
            max_mempool_transactions: 100_000,
            idle_interval_ms: 50,
            tick_interval_ms: 50,
            max_clock_drift_ms: 10_000,
            retransmit_interval_ms: 300,
            view_change_timeout_ms: 1_000,
            max_view_change_timeout_ms: 8_000,
            transaction_timeout_ms: 5_000,
            decided_retention: 1_024,
            ban_threshold: 3,
            fresh: false,
            boot_nonce: 0,
            mutant: None,
            legacy_replay: false,
        }
    }

    /// Refuses configurations that cannot run.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.committee.contains(self.index) {
            return Err(ConfigError::UnknownIndex(self.index));
        }
        let checks = [
            (self.gc_depth >= 2, "gc_depth", "at least 2"),
            (
                self.gc_depth <= self.limits.max_parent_depth,
                "gc_depth",
                "at most limits.max_parent_depth",
            ),
            (
                self.checkpoint_interval >= 1,
                "checkpoint_interval",
                "at least 1",
            ),
            (
                self.window >= 2 * self.checkpoint_interval,
                "window",
                "at least twice checkpoint_interval",
            ),
            (
                self.snapshot_interval >= 1,
                "snapshot_interval",
                "at least 1",
            ),
            (self.max_anchor_lag >= 1, "max_anchor_lag", "at least 1"),
            (
                self.max_round_lead >= self.gc_depth,
                "max_round_lead",
                "at least gc_depth",
            ),
            (
                self.max_batch_transactions >= 1
                    && self.max_batch_transactions <= self.limits.max_transactions,
                "max_batch_transactions",
                "between 1 and limits.max_transactions",
            ),
            (self.idle_interval_ms >= 1, "idle_interval_ms", "at least 1"),
            (self.tick_interval_ms >= 1, "tick_interval_ms", "at least 1"),
            (
                self.max_clock_drift_ms >= 2,
                "max_clock_drift_ms",
                "at least 2",
            ),
            (
                self.view_change_timeout_ms >= self.tick_interval_ms,
                "view_change_timeout_ms",
                "at least tick_interval_ms",
            ),
            (
                self.max_view_change_timeout_ms >= self.view_change_timeout_ms,
                "max_view_change_timeout_ms",
                "at least view_change_timeout_ms",
            ),
            (
                self.decided_retention >= 2 * self.window,
                "decided_retention",
                "at least twice window",
            ),
            (self.ban_threshold >= 1, "ban_threshold", "at least 1"),
        ];
        for (ok, name, rule) in checks {
            if !ok {
                return Err(ConfigError::OutOfRange { name, rule });
            }
        }
        Ok(())
    }
}
