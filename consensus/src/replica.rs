//! The replica: one validator's protocol state, driven by [`Replica::handle`].
//!
//! Normal case (PBFT on DAG anchors):
//!
//! 1. **Vertices.** A replica builds its vertex for round r + 1 once it holds vertices from
//!    a quorum of distinct authors of round r (authors, not vertices: an equivocator signs
//!    many vertices for one round), and it has something to order (its mempool,
//!    transactions or a proposal in round r), or its idle timer fired. The vertex
//!    references the author's own latest vertex first, then the latest accepted vertex of
//!    every other author (round r where there is one, older otherwise), so a slow honest
//!    validator's vertices are not left out by the others' choice of parents.
//! 2. **Pre-prepare.** The primary of view v puts (v, s) in its next vertex, for the next
//!    sequence s inside the window (h, h + W] above the stable checkpoint h.
//! 3. **Prepare.** A replica prepares (v, s, d) when the anchor is accepted (its whole
//!    history above the GC round is held), it is in view v, the anchor is by v's
//!    primary, it has no other pre-prepare for (v, s), and the anchor is not stale (its
//!    round is at least the replica's own round minus L).
//! 4. **Commit.** Prepared = pre-prepare + 2f matching prepares: the replica sends a
//!    commit. Committed = 2f + 1 matching commits.
//! 5. **Execution.** Sequences execute strictly in order through the dag crate's
//!    [`Finalizer`]; a committed anchor that is not held yet is fetched first.
//! 6. **Checkpoints.** After executing a multiple of K, a replica signs
//!    `Checkpoint(s, state digest)`; 2f + 1 matching ones make s the stable checkpoint h,
//!    which moves the window. W >= 2K keeps the primary proposing while the next
//!    checkpoint gathers signatures. Votes, pre-prepares and DAG rounds below are
//!    released, so memory stays bounded on an endless run.
//!
//! View change (TOCS 2002, with claims; the rule itself is in [`crate::view_change`]):
//!
//! - A replica moves to v + 1 when it has been waiting for T without executing anything
//!   (a pre-prepare or committed sequence outstanding, or unanchored transactions in the
//!   DAG while the primary stays quiet), when one of its own transactions is not final
//!   after `T_tx` (a censoring primary), or on proof that the primary equivocated.
//! - It persists the new view and its claims, then broadcasts `ViewChange`. It joins the
//!   smallest view that f + 1 others announce above its own. Its timer for v + 2 starts
//!   only once 2f + 1 view changes for v + 1 are in. T doubles on every expiry, up to a
//!   cap, and goes back to its base when a sequence executes in an active view.
//! - The new primary sends `NewView` once the view changes it holds decide every
//!   sequence; every replica recomputes the decision from the same view changes and
//!   prepares each re-proposed anchor once it holds its history (fetched from a replica
//!   that claimed it).
//!
//! Liveness under loss: a periodic tick re-sends the replica's latest vertex, its votes
//! for unexecuted sequences, its unstable checkpoints, its view change and a `Status`;
//! peers that are ahead answer a status with commit certificates (`Decided`), peers in a
//! later view with the `NewView` that started it. Missing ancestors are fetched again
//! from the next peer.
//!
//! Persist before send: every message the replica signs leaves as [`Output::Persist`]
//! first, then as a send; the host executes outputs in order. A replica rebuilt by
//! [`Replica::recover`] finds its view, claims, votes and own latest vertex, so it never
//! signs a message that conflicts with one it signed before the crash.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use weft_crypto::Digest;
use weft_dag::codec::{Reader, Writer};
use weft_dag::store::{Store, StoreBatch, StoreError};
use weft_dag::{
    Committee, Dag, DagConfig, ExecuteError, FinalizedEntry, Finalizer, InsertError, Limits,
    ParentRef, Proposal, Round, Sequence, SignedVertex, TimestampMs, Transaction, TxId,
    ValidatorIndex, Vertex, View,
};

use crate::messages::{
    Checkpoint, Message, NewViewMessage, Phase, SignedCheckpoint, SignedVote, Vote,
};
use crate::quorum::{VoteOutcome, VoteTracker};
use crate::view_change::{decide, Claim, NewView, Signed, SignedViewChange, ViewChange};
use crate::Signer;

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
    #[doc(hidden)]
    /// Deliberate bugs for the simulator's checker tests. Always `None` in a node.
    pub mutant: Option<Mutant>,
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
}

impl Mutant {
    /// Every mutant, in the order the simulator's tests run them.
    pub const ALL: [Mutant; 9] = [
        Mutant::NoDurableOwnVertex,
        Mutant::CountParentVertices,
        Mutant::PerAuthorFrontier,
        Mutant::PrePrepareOverNewView,
        Mutant::UnboundedClaims,
        Mutant::CountPrimaryPrepare,
        Mutant::ProposalNotDurable,
        Mutant::NewViewNotDurable,
        Mutant::WipedStoreSignsAtOnce,
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
            max_anchor_lag: 10,
            max_round_lead: 100,
            max_batch_transactions: 1_000,
            max_mempool_transactions: 100_000,
            idle_interval_ms: 50,
            tick_interval_ms: 50,
            retransmit_interval_ms: 300,
            view_change_timeout_ms: 1_000,
            max_view_change_timeout_ms: 8_000,
            transaction_timeout_ms: 5_000,
            decided_retention: 1_024,
            ban_threshold: 3,
            mutant: None,
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

/// Timers the replica asks the host for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Nothing to order for a while: build a vertex anyway.
    Idle,
    /// The periodic heartbeat: deadlines, retransmission.
    Tick,
}

/// What the host feeds the replica.
#[derive(Clone, Debug)]
pub enum Input {
    /// Start (or restart after [`Replica::recover`]).
    Start,
    /// A message from validator `from`, whose signatures the host verified.
    Message {
        /// The sender.
        from: ValidatorIndex,
        /// The message.
        message: Message,
    },
    /// Vertices a fetch returned (signatures verified by the host).
    Fetched {
        /// Who answered.
        from: ValidatorIndex,
        /// The vertices.
        vertices: Vec<SignedVertex>,
    },
    /// Client transactions for the mempool.
    Transactions(Vec<Transaction>),
    /// A timer the replica set has fired.
    Timer(Timer),
}

/// What the replica asks the host to do, in order.
#[derive(Clone, Debug)]
pub enum Output {
    /// Make this durable before carrying out any later output.
    Persist(StoreBatch),
    /// Send to every other validator.
    Broadcast(Message),
    /// Send to one validator.
    Send {
        /// The recipient.
        to: ValidatorIndex,
        /// The message.
        message: Message,
    },
    /// Ask `from` for these vertices (the host answers fetches from its store).
    Fetch {
        /// Whom to ask.
        from: ValidatorIndex,
        /// What to fetch.
        hashes: Vec<Digest>,
    },
    /// Fire `timer` after this long (replacing an earlier setting of the same timer).
    SetTimer {
        /// The timer.
        timer: Timer,
        /// Delay in milliseconds.
        after_ms: u64,
    },
    /// A sequence was finalized.
    Finalized(FinalizedEntry),
    /// Proof that a validator misbehaved.
    Evidence(Evidence),
}

/// Proof of a Byzantine fault.
#[derive(Clone, Debug)]
pub enum Evidence {
    /// Two vertices for one (author, round).
    Equivocation(Box<weft_dag::Equivocation>),
    /// Two votes for one (phase, view, sequence).
    DoubleVote(Box<crate::quorum::DoubleVote>),
}

impl Evidence {
    /// The validator the evidence proves faulty.
    pub fn culprit(&self) -> ValidatorIndex {
        match self {
            Evidence::Equivocation(e) => e.author(),
            Evidence::DoubleVote(d) => d.first.vote().voter,
        }
    }
}

/// Counters of what the replica dropped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Invalid vertices.
    pub invalid_vertices: u64,
    /// Vertices too far above our round.
    pub future_vertices: u64,
    /// Votes and checkpoints for another view or outside the window.
    pub out_of_window_messages: u64,
    /// View changes, new views and certificates that do not check out.
    pub invalid_view_messages: u64,
    /// Mempool full.
    pub mempool_full: u64,
}

/// A checkpoint that 2f + 1 validators signed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StableCheckpoint {
    /// The last sequence covered (0 before the first).
    pub sequence: Sequence,
    /// The chained state digest after it.
    pub state_digest: Digest,
    /// The 2f + 1 signatures (empty for the genesis checkpoint).
    pub certificate: Vec<SignedCheckpoint>,
}

/// Sizes of the replica's in-memory state, for checking that memory stays bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryFootprint {
    /// Accepted DAG vertices held.
    pub dag_vertices: usize,
    /// Vertices waiting for ancestors.
    pub waiting_vertices: usize,
    /// (view, sequence) slots of prepare and commit votes.
    pub vote_slots: usize,
    /// Checkpoint sequences with signatures above the stable one.
    pub checkpoint_slots: usize,
    /// Commit certificates kept for lagging peers.
    pub decided_slots: usize,
    /// View changes held.
    pub view_changes: usize,
}

/// Why a replica could not be rebuilt from its store.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The finalized log does not replay.
    #[error("finalized log does not replay: {0}")]
    Log(#[from] ExecuteError),
    /// A replica-state record is damaged.
    #[error("replica state record {key} is damaged: {reason}")]
    Damaged {
        /// The record.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// The vertices the signing record in `store` refers to (our own latest vertex, which
/// [`Replica::recover`] needs so that the next vertex is built in a later round). A host
/// that wipes its data (`weft reset-state`) keeps these and the replica-state records.
pub fn signing_record_vertices(store: &dyn Store) -> Result<Vec<Digest>, RecoverError> {
    let Some(bytes) = store.replica_state(keys::OWN_LATEST)? else {
        return Ok(Vec::new());
    };
    let hash = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| RecoverError::Damaged {
        key: String::from_utf8_lossy(keys::OWN_LATEST).into_owned(),
        reason: "not 32 bytes".into(),
    })?;
    Ok(vec![Digest::from_bytes(hash)])
}

/// One of our own vertices whose transactions are not final yet.
#[derive(Clone, Debug)]
struct OwnPending {
    hash: Digest,
    created_at: TimestampMs,
    transactions: Vec<Transaction>,
}

/// Keys of the replica-state records.
mod keys {
    pub const VIEW: &[u8] = b"view";
    pub const VIEW_CHANGE: &[u8] = b"view-change";
    pub const NEW_VIEW: &[u8] = b"new-view";
    pub const CLAIMS: &[u8] = b"claims";
    pub const STABLE: &[u8] = b"stable";
    pub const OWN_LATEST: &[u8] = b"own/latest";

    pub fn vote(phase: crate::messages::Phase, view: u64, sequence: u64) -> Vec<u8> {
        format!("vote/{phase:?}/{view}/{sequence}").into_bytes()
    }
}

/// One validator's protocol state.
#[derive(Debug)]
pub struct Replica {
    config: ReplicaConfig,
    signer: Signer,
    dag: Dag,
    finalizer: Finalizer,
    view: View,
    /// False between our view change and the new view's `NewView`.
    view_active: bool,
    view_started: TimestampMs,
    own_latest: Option<SignedVertex>,
    /// Every vertex reachable from our own latest vertex (so we reference the rest).
    own_history: HashSet<Digest>,
    /// Latest accepted vertex per author (the first version, if it equivocated).
    latest_by_author: Vec<Option<ParentRef>>,
    mempool: VecDeque<Transaction>,
    /// Ids in the mempool or in our own vertices that are not final yet.
    mempool_ids: HashSet<TxId>,
    own_pending: BTreeMap<Round, OwnPending>,
    next_proposal: Sequence,
    /// Pre-prepares accepted in the current view: sequence -> anchor (or null).
    pre_prepares: BTreeMap<Sequence, Option<Digest>>,
    /// Re-proposed anchors whose history we are fetching before we prepare them.
    awaiting_history: BTreeMap<Sequence, Digest>,
    prepares: VoteTracker,
    commits: VoteTracker,
    commit_sent: HashSet<Sequence>,
    /// Our own signed votes in the current view, re-sent on every retransmission.
    own_votes: BTreeMap<(Sequence, Phase), SignedVote>,
    committed: BTreeMap<Sequence, Option<Digest>>,
    /// Commit certificates of executed sequences, for lagging peers.
    decided: BTreeMap<Sequence, Vec<SignedVote>>,
    /// P: the highest-view prepared claim per sequence above the stable checkpoint.
    prepared_claims: BTreeMap<Sequence, Claim>,
    /// Q: pre-prepared claims per sequence (highest view per digest).
    pre_prepared_claims: BTreeMap<Sequence, Vec<Claim>>,
    /// The latest view change of each validator, for views above ours (or ours while
    /// it is not active).
    view_changes: BTreeMap<ValidatorIndex, (SignedViewChange, Vec<SignedCheckpoint>)>,
    own_view_change: Option<Message>,
    new_view: Option<Message>,
    timeout_ms: u64,
    progress_deadline: Option<TimestampMs>,
    last_retransmit: TimestampMs,
    fetch_rotation: usize,
    idle_fired: bool,
    idle_armed: bool,
    drops: DropCounters,
    faults: Vec<u32>,
    /// The NoDurableOwnVertex mutant's unwritten own vertex.
    deferred_own: Option<StoreBatch>,
    /// A checkpoint quorum contradicted our own state here: more than f are faulty.
    diverged: Option<Sequence>,
    /// When we last answered each peer's status, and for which executed sequence.
    status_replies: Vec<(TimestampMs, Sequence)>,
    /// Equivocation slots whose evidence we forwarded (pruned below the GC round).
    forwarded: BTreeSet<(ValidatorIndex, Round)>,
    /// The stable checkpoint h.
    stable: StableCheckpoint,
    /// Checkpoint signatures above h, by sequence.
    checkpoints: BTreeMap<Sequence, BTreeMap<ValidatorIndex, SignedCheckpoint>>,
    /// Our own signed checkpoints not yet stable.
    own_checkpoints: BTreeMap<Sequence, SignedCheckpoint>,
    /// Vote records on disk, deleted once a stable checkpoint covers them.
    vote_keys: BTreeMap<Sequence, Vec<Vec<u8>>>,
}

impl Replica {
    /// A fresh replica (no durable state yet).
    pub fn new(config: ReplicaConfig, signer: Signer) -> Result<Replica, ConfigError> {
        config.validate()?;
        let committee = config.committee.clone();
        let quorum = committee.quorum();
        let dag = Dag::new(
            committee.clone(),
            DagConfig {
                limits: config.limits,
                max_pending_per_author: usize::try_from(config.gc_depth).unwrap_or(usize::MAX),
            },
        );
        let mut finalizer = Finalizer::new(config.gc_depth);
        if config.mutant == Some(Mutant::PerAuthorFrontier) {
            finalizer.use_per_author_frontier_mutant();
        }
        Ok(Replica {
            finalizer,
            dag,
            signer,
            view: View(0),
            view_active: true,
            view_started: TimestampMs(0),
            own_latest: None,
            own_history: HashSet::new(),
            latest_by_author: vec![None; committee.size()],
            mempool: VecDeque::new(),
            mempool_ids: HashSet::new(),
            own_pending: BTreeMap::new(),
            next_proposal: Sequence(1),
            pre_prepares: BTreeMap::new(),
            awaiting_history: BTreeMap::new(),
            prepares: VoteTracker::new(Phase::Prepare, quorum - 1),
            commits: VoteTracker::new(Phase::Commit, quorum),
            commit_sent: HashSet::new(),
            own_votes: BTreeMap::new(),
            committed: BTreeMap::new(),
            decided: BTreeMap::new(),
            prepared_claims: BTreeMap::new(),
            pre_prepared_claims: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            own_view_change: None,
            new_view: None,
            timeout_ms: config.view_change_timeout_ms,
            progress_deadline: None,
            last_retransmit: TimestampMs(0),
            fetch_rotation: 0,
            idle_fired: false,
            idle_armed: false,
            drops: DropCounters::default(),
            faults: vec![0; committee.size()],
            forwarded: BTreeSet::new(),
            diverged: None,
            deferred_own: None,
            status_replies: vec![(TimestampMs(0), Sequence(0)); committee.size()],
            stable: StableCheckpoint::default(),
            checkpoints: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
            vote_keys: BTreeMap::new(),
            config,
        })
    }

    /// Rebuilds a replica from what it persisted: the finalized log, its view and
    /// whether it was changing view, its prepared and pre-prepared claims, its votes in
    /// that view, its stable checkpoint and its own latest vertex. What it signed before
    /// the crash constrains what it signs after: it never votes twice for one slot, never
    /// builds a second vertex for a round it built, never goes back a view.
    pub fn recover(
        config: ReplicaConfig,
        signer: Signer,
        store: &dyn Store,
    ) -> Result<Replica, RecoverError> {
        let mut replica = Replica::new(config, signer)?;
        let limits = replica.config.limits;
        // The finalized log.
        if let Some(head) = store.log_head()? {
            let mut entries = Vec::new();
            let mut from = Sequence(1);
            while from <= head.sequence {
                let chunk = store.finalized_range(from, 1_024)?;
                let Some(last) = chunk.last() else { break };
                from = last.sequence.next();
                entries.extend(chunk);
            }
            let mut rounds = std::collections::HashMap::new();
            for entry in &entries {
                for hash in entry.anchor.iter().chain(entry.vertices.iter()) {
                    if let Some(vertex) = store.vertex(hash)? {
                        rounds.insert(*hash, vertex.vertex().round);
                    }
                }
            }
            replica.finalizer =
                Finalizer::restore(replica.config.gc_depth, entries, |h| rounds.get(h).copied())?;
            if replica.config.mutant == Some(Mutant::PerAuthorFrontier) {
                replica.finalizer.use_per_author_frontier_mutant();
            }
            replica.dag.set_gc_round(replica.finalizer.gc_round());
        }
        let damaged = |key: &[u8], reason: String| RecoverError::Damaged {
            key: String::from_utf8_lossy(key).into_owned(),
            reason,
        };
        if let Some(bytes) = store.replica_state(keys::STABLE)? {
            replica.stable = decode_stable(&bytes).map_err(|e| damaged(keys::STABLE, e))?;
        }
        if let Some(bytes) = store.replica_state(keys::VIEW)? {
            let mut reader = Reader::new(&bytes);
            let view = reader
                .u64("view")
                .map_err(|e| damaged(keys::VIEW, e.to_string()))?;
            let active = reader
                .u8("active")
                .map_err(|e| damaged(keys::VIEW, e.to_string()))?;
            replica.view = View(view);
            replica.view_active = active == 1;
        }
        if let Some(bytes) = store.replica_state(keys::CLAIMS)? {
            let (prepared, pre_prepared) =
                decode_claims(&bytes).map_err(|e| damaged(keys::CLAIMS, e))?;
            replica.prepared_claims = prepared;
            replica.pre_prepared_claims = pre_prepared;
        }
        if !replica.view_active {
            if let Some(bytes) = store.replica_state(keys::VIEW_CHANGE)? {
                let message = Message::from_wire(&bytes, &limits)
                    .map_err(|e| damaged(keys::VIEW_CHANGE, e.to_string()))?;
                if let Message::ViewChange { view_change, .. } = &message {
                    if view_change.body().view == replica.view {
                        replica.own_view_change = Some(message);
                    }
                }
            }
        } else if let Some(bytes) = store.replica_state(keys::NEW_VIEW)? {
            let message = Message::from_wire(&bytes, &limits)
                .map_err(|e| damaged(keys::NEW_VIEW, e.to_string()))?;
            if let Message::NewView(new_view) = &message {
                if new_view.new_view.body().view == replica.view {
                    replica.next_proposal = new_view
                        .new_view
                        .body()
                        .proposals
                        .last()
                        .map_or(new_view.new_view.body().stable_sequence, |p| p.0)
                        .next();
                    replica.new_view = Some(message);
                }
            }
        }
        // Our votes in this view: never sign another digest for those slots.
        let executed = replica.finalizer.last_sequence().0;
        let horizon = replica.stable.sequence.0.max(executed) + 2 * replica.config.window;
        for sequence in (executed + 1)..=horizon {
            for phase in [Phase::Prepare, Phase::Commit] {
                let key = keys::vote(phase, replica.view.0, sequence);
                let Some(bytes) = store.replica_state(&key)? else {
                    continue;
                };
                let vote =
                    SignedVote::from_wire(&bytes).map_err(|e| damaged(&key, e.to_string()))?;
                let s = Sequence(sequence);
                match phase {
                    Phase::Prepare => {
                        replica.pre_prepares.insert(s, vote.vote().digest);
                    }
                    Phase::Commit => {
                        replica.pre_prepares.insert(s, vote.vote().digest);
                        replica.commit_sent.insert(s);
                    }
                }
                replica.vote_keys.entry(s).or_default().push(key);
                replica.own_votes.insert((s, phase), vote.clone());
                let tracker = match phase {
                    Phase::Prepare => &mut replica.prepares,
                    Phase::Commit => &mut replica.commits,
                };
                tracker.add(vote);
            }
        }
        if replica.primary(replica.view) == replica.config.index {
            let proposed = replica.pre_prepares.keys().next_back().copied();
            if let Some(last) = proposed {
                replica.next_proposal = replica.next_proposal.max(last.next());
            }
            replica.next_proposal = replica
                .next_proposal
                .max(replica.finalizer.last_sequence().next());
        }
        // Our own latest vertex: the next one must be in a later round.
        if let Some(bytes) = store.replica_state(keys::OWN_LATEST)? {
            let hash = Digest::from_bytes(
                <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| damaged(keys::OWN_LATEST, "not 32 bytes".into()))?,
            );
            let vertex = store.vertex(&hash)?.ok_or_else(|| {
                damaged(keys::OWN_LATEST, "names a vertex the store lacks".into())
            })?;
            replica.own_latest = Some(vertex.clone());
            if vertex.vertex().round >= replica.dag.gc_round() {
                // Its ancestors arrive by fetch from peers (see Input::Start).
                let _ = replica.dag.insert(vertex);
            }
        }
        Ok(replica)
    }

    /// This replica's index.
    pub fn index(&self) -> ValidatorIndex {
        self.config.index
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.view
    }

    /// False while the replica is changing view.
    pub fn view_active(&self) -> bool {
        self.view_active
    }

    /// The last executed sequence.
    pub fn last_executed(&self) -> Sequence {
        self.finalizer.last_sequence()
    }

    /// The stable checkpoint.
    pub fn stable_checkpoint(&self) -> &StableCheckpoint {
        &self.stable
    }

    /// Sizes of the in-memory state.
    pub fn memory(&self) -> MemoryFootprint {
        MemoryFootprint {
            dag_vertices: self.dag.len(),
            waiting_vertices: self.dag.waiting_len(),
            vote_slots: self.prepares.slots() + self.commits.slots(),
            checkpoint_slots: self.checkpoints.len(),
            decided_slots: self.decided.len(),
            view_changes: self.view_changes.len(),
        }
    }

    /// A one-line summary of the replica's progress, for diagnosing a failing seed.
    pub fn describe(&self) -> String {
        format!(
            "view {}{} executed {} stable {} committed {:?} pre-prepared {:?} awaiting {:?} own round {:?} dag {} waiting {} missing {} mempool {} pending-own {} deadline {:?} drops {:?}",
            self.view.0,
            if self.view_active { "" } else { " (changing)" },
            self.finalizer.last_sequence(),
            self.stable.sequence,
            self.committed.keys().take(5).collect::<Vec<_>>(),
            self.pre_prepares.keys().take(5).collect::<Vec<_>>(),
            self.awaiting_history.keys().take(5).collect::<Vec<_>>(),
            self.own_latest.as_ref().map(|v| v.vertex().round.0),
            self.dag.len(),
            self.dag.waiting_len(),
            self.dag.missing().len(),
            self.mempool.len(),
            self.own_pending.len(),
            self.progress_deadline,
            self.drops,
        )
    }

    /// The checkpoint at which a quorum contradicted our executed state, if one did: the
    /// validator set has more than f faulty members and this node must stop.
    pub fn diverged(&self) -> Option<Sequence> {
        self.diverged
    }

    /// What was dropped and why.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Proven faults per validator.
    pub fn faults(&self) -> &[u32] {
        &self.faults
    }

    /// Every transaction this replica still owes the ledger: its mempool and those in its
    /// own vertices that are not final yet, oldest first. For a host that replaces the
    /// replica (state sync) and hands them to the new one; re-proposing one that was
    /// finalized meanwhile is harmless, the finalizer deduplicates.
    pub fn unfinished_transactions(&self) -> Vec<Transaction> {
        self.own_pending
            .values()
            .flat_map(|pending| pending.transactions.iter().cloned())
            .chain(self.mempool.iter().cloned())
            .collect()
    }

    /// Transactions waiting to be put in a vertex.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// True when the transaction is finalized (within the dedup horizon).
    pub fn is_transaction_finalized(&self, id: &TxId) -> bool {
        self.finalizer.is_transaction_finalized(id)
    }

    /// True when the transaction waits in the mempool.
    pub fn is_transaction_pending(&self, id: &TxId) -> bool {
        self.mempool_ids.contains(id)
    }

    /// The primary of `view`: round-robin over the validator set.
    pub fn primary(&self, view: View) -> ValidatorIndex {
        let n = self.config.committee.size() as u64;
        ValidatorIndex(u16::try_from(view.0 % n).unwrap_or(0))
    }

    /// Accepted vertices by hash, from memory (hosts answer fetches from their store).
    pub fn vertices(&self, hashes: &[Digest]) -> Vec<SignedVertex> {
        hashes
            .iter()
            .filter_map(|h| self.dag.get(h).cloned())
            .collect()
    }

    /// Feeds one input at time `now`; returns what the host must do, in order.
    pub fn handle(&mut self, now: TimestampMs, input: Input) -> Vec<Output> {
        let mut outputs = Vec::new();
        match input {
            Input::Start => self.start(now, &mut outputs),
            Input::Message { from, message } => self.on_message(from, message, now, &mut outputs),
            Input::Fetched { from, vertices } => {
                for vertex in vertices {
                    self.insert_vertex(from, vertex, false, now, &mut outputs);
                }
            }
            Input::Transactions(transactions) => self.add_transactions(transactions),
            Input::Timer(Timer::Idle) => {
                self.idle_armed = false;
                self.idle_fired = true;
            }
            Input::Timer(Timer::Tick) => {
                outputs.push(Output::SetTimer {
                    timer: Timer::Tick,
                    after_ms: self.config.tick_interval_ms,
                });
                if now.0 >= self.last_retransmit.0 + self.config.retransmit_interval_ms {
                    self.retransmit(now, &mut outputs);
                }
            }
        }
        self.execute_committed(now, &mut outputs);
        self.check_deadlines(now, &mut outputs);
        self.maybe_build_vertex(now, &mut outputs);
        outputs
    }

    fn start(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        self.view_started = now;
        outputs.push(Output::SetTimer {
            timer: Timer::Tick,
            after_ms: self.config.tick_interval_ms,
        });
        self.retransmit(now, outputs);
    }

    /// Re-sends what peers may have lost, asks for what we miss.
    fn retransmit(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        self.last_retransmit = now;
        if let Some(own) = &self.own_latest {
            outputs.push(Output::Broadcast(Message::Vertex(own.clone())));
        }
        if self.view_active {
            for vote in self.own_votes.values() {
                outputs.push(Output::Broadcast(Message::Vote(vote.clone())));
            }
        } else if let Some(view_change) = &self.own_view_change {
            outputs.push(Output::Broadcast(view_change.clone()));
        }
        for checkpoint in self.own_checkpoints.values() {
            outputs.push(Output::Broadcast(Message::Checkpoint(checkpoint.clone())));
        }
        outputs.push(Output::Broadcast(Message::Status {
            view: self.view,
            executed: self.finalizer.last_sequence(),
        }));
        let mut missing = self.dag.missing();
        for anchor in self.awaiting_history.values() {
            if !self.dag.contains(anchor) {
                missing.push(*anchor);
            }
        }
        for (sequence, anchor) in &self.committed {
            if let Some(anchor) = anchor.filter(|a| !self.dag.contains(a)) {
                if *sequence <= self.finalizer.last_sequence().next() {
                    missing.push(anchor);
                }
            }
        }
        missing.sort_unstable();
        missing.dedup();
        missing.truncate(256);
        if !missing.is_empty() {
            let from = self.next_peer();
            outputs.push(Output::Fetch {
                from,
                hashes: missing,
            });
        }
    }

    /// Anchors we may be fetching at once: committed or re-proposed sequences in flight.
    fn wanted_limit(&self) -> usize {
        usize::try_from(4 * self.config.window).unwrap_or(usize::MAX)
    }

    /// Peers in turn, for fetches that may have failed.
    fn next_peer(&mut self) -> ValidatorIndex {
        let n = self.config.committee.size();
        self.fetch_rotation = (self.fetch_rotation + 1) % n;
        let mut peer = self.fetch_rotation;
        if peer == self.config.index.as_usize() {
            peer = (peer + 1) % n;
        }
        ValidatorIndex(u16::try_from(peer).unwrap_or(0))
    }

    fn add_transactions(&mut self, transactions: Vec<Transaction>) {
        for transaction in transactions {
            let id = transaction.id();
            if self.finalizer.is_transaction_finalized(&id) || self.mempool_ids.contains(&id) {
                continue;
            }
            if self.mempool.len() >= self.config.max_mempool_transactions {
                self.drops.mempool_full += 1;
                continue;
            }
            self.mempool_ids.insert(id);
            self.mempool.push_back(transaction);
        }
    }

    fn on_message(
        &mut self,
        from: ValidatorIndex,
        message: Message,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        match message {
            Message::Vertex(vertex) => self.insert_vertex(from, vertex, true, now, outputs),
            Message::Vote(vote) => self.on_vote(vote, now, outputs),
            Message::Checkpoint(checkpoint) => self.on_checkpoint(checkpoint, outputs),
            Message::ViewChange {
                view_change,
                certificate,
            } => self.on_view_change(from, view_change, certificate, now, outputs),
            Message::NewView(new_view) => self.on_new_view(*new_view, now, outputs),
            Message::Status { view, executed } => {
                self.on_status(from, view, executed, now, outputs);
            }
            Message::Decided(votes) => self.on_decided(from, votes, outputs),
        }
    }

    fn insert_vertex(
        &mut self,
        from: ValidatorIndex,
        vertex: SignedVertex,
        pushed: bool,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        // Pushed vertices are taken only up to R rounds above our own: a flood of future
        // rounds is dropped before it costs memory.
        let own_round = self.own_latest.as_ref().map_or(0, |v| v.vertex().round.0);
        if pushed && vertex.vertex().round.0 > own_round + self.config.max_round_lead {
            self.drops.future_vertices += 1;
            return;
        }
        match self.dag.insert(vertex) {
            Ok(report) => {
                if let Some(equivocation) = report.equivocation {
                    self.on_evidence(Evidence::Equivocation(Box::new(equivocation)), now, outputs);
                }
                if !report.missing.is_empty() {
                    outputs.push(Output::Fetch {
                        from,
                        hashes: report.missing.iter().map(|p| p.hash).collect(),
                    });
                }
                for hash in report.accepted {
                    self.on_accepted(&hash, now, outputs);
                }
            }
            Err(InsertError::UnwantedEquivocation(evidence)) => {
                self.on_evidence(Evidence::Equivocation(evidence), now, outputs);
            }
            Err(InsertError::BelowGcRound { .. }) => {}
            Err(_) => self.drops.invalid_vertices += 1,
        }
    }

    /// Evidence lowers the culprit's standing; proof that the primary equivocated
    /// replaces it (and the evidence travels on, so the others see it too).
    fn on_evidence(&mut self, evidence: Evidence, now: TimestampMs, outputs: &mut Vec<Output>) {
        let culprit = evidence.culprit();
        if let Some(count) = self.faults.get_mut(culprit.as_usize()) {
            *count = count.saturating_add(1);
        }
        let primary_proven_faulty = culprit == self.primary(self.view)
            && match &evidence {
                Evidence::Equivocation(e) => e.second.vertex().proposal.is_some(),
                Evidence::DoubleVote(_) => true,
            };
        // The primary's equivocation travels on, once per slot, so every replica sees it.
        if let Evidence::Equivocation(e) = &evidence {
            let slot = (e.author(), e.round());
            if primary_proven_faulty && self.forwarded.insert(slot) {
                outputs.push(Output::Broadcast(Message::Vertex(e.first.clone())));
                outputs.push(Output::Broadcast(Message::Vertex(e.second.clone())));
            }
        }
        outputs.push(Output::Evidence(evidence));
        if primary_proven_faulty && self.view_active && culprit != self.config.index {
            self.start_view_change(self.view.next(), now, outputs);
        }
    }

    fn banned(&self, author: ValidatorIndex) -> bool {
        self.faults
            .get(author.as_usize())
            .is_some_and(|f| *f >= self.config.ban_threshold)
    }

    fn on_accepted(&mut self, hash: &Digest, now: TimestampMs, outputs: &mut Vec<Output>) {
        let Some(vertex) = self.dag.get(hash).cloned() else {
            return;
        };
        let body = vertex.vertex();
        // Every accepted vertex is stored: peers fetch histories from our store, the
        // finalized log names them, and recovery replays them.
        if body.author != self.config.index {
            let mut batch = StoreBatch::new();
            batch.put_vertex(vertex.clone());
            outputs.push(Output::Persist(batch));
        }
        let slot = &mut self.latest_by_author[body.author.as_usize()];
        if slot.is_none_or(|latest| latest.round < body.round) {
            *slot = Some(vertex.as_parent());
        }
        if let Some(proposal) = body.proposal {
            self.on_pre_prepare(&vertex, proposal, now, outputs);
        }
        let ready: Vec<Sequence> = self
            .awaiting_history
            .iter()
            .filter(|(_, anchor)| *anchor == hash)
            .map(|(s, _)| *s)
            .collect();
        for sequence in ready {
            self.awaiting_history.remove(&sequence);
            self.prepare(sequence, Some(*hash), now, outputs);
        }
    }

    /// (executed, h + W]: not executed yet, and inside the window above the stable
    /// checkpoint h. Anything else is dropped without buffering.
    fn in_window(&self, sequence: Sequence) -> bool {
        let executed = self.finalizer.last_sequence().0;
        sequence.0 > executed && sequence.0 <= self.stable.sequence.0 + self.config.window
    }

    /// What a replica accepts from others reaches W further than what it proposes: the
    /// primary's stable checkpoint may be ahead of ours, and a pre-prepare or vote
    /// dropped for being early would never be sent again (a stall without view change).
    /// Still bounded: at most 3W sequences above the executed one are held; a replica
    /// further behind catches up through commit certificates.
    fn accepts(&self, sequence: Sequence) -> bool {
        let executed = self.finalizer.last_sequence().0;
        let base = self
            .stable
            .sequence
            .0
            .clamp(executed, executed + self.config.window);
        sequence.0 > executed && sequence.0 <= base + 2 * self.config.window
    }

    /// Rule 3: prepare an accepted anchor of the current primary, once per (view, sequence).
    fn on_pre_prepare(
        &mut self,
        anchor: &SignedVertex,
        proposal: Proposal,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let body = anchor.vertex();
        let own_round = self.own_latest.as_ref().map_or(0, |v| v.vertex().round.0);
        let stale = body.round.0 + self.config.max_anchor_lag < own_round;
        if proposal.view != self.view
            || !self.view_active
            || body.author != self.primary(proposal.view)
            || !self.accepts(proposal.sequence)
            || self.pre_prepares.contains_key(&proposal.sequence)
            || stale
        {
            return;
        }
        self.prepare(proposal.sequence, Some(anchor.hash()), now, outputs);
    }

    /// Accepts (view, sequence, digest) as pre-prepared and votes for it (the primary's
    /// own pre-prepare counts as its vote).
    fn prepare(
        &mut self,
        sequence: Sequence,
        digest: Option<Digest>,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        if self.pre_prepares.contains_key(&sequence) || sequence <= self.finalizer.last_sequence() {
            return;
        }
        self.pre_prepares.insert(sequence, digest);
        self.add_claim(sequence, digest, false);
        if self.primary(self.view) != self.config.index {
            let vote = self.sign_vote(Phase::Prepare, sequence, digest);
            self.send_vote(vote, now, outputs);
        } else {
            let mut batch = StoreBatch::new();
            batch.put_replica_state(keys::CLAIMS, &self.encode_claims());
            outputs.push(Output::Persist(batch));
        }
        self.check_prepared(sequence, now, outputs);
    }

    /// Records a Q (pre-prepared) or P (prepared) claim in the current view.
    fn add_claim(&mut self, sequence: Sequence, digest: Option<Digest>, prepared: bool) {
        let claim = Claim {
            sequence,
            view: self.view,
            digest,
        };
        if prepared {
            self.prepared_claims.insert(sequence, claim);
        } else {
            let claims = self.pre_prepared_claims.entry(sequence).or_default();
            claims.retain(|c| c.digest != digest);
            claims.push(claim);
            // A handful of digests per sequence is all a view change needs; older ones
            // go first.
            if claims.len() > 4 {
                claims.sort_by_key(|c| c.view);
                claims.remove(0);
            }
        }
    }

    fn sign_vote(&self, phase: Phase, sequence: Sequence, digest: Option<Digest>) -> SignedVote {
        Vote {
            chain_id: self.config.committee.chain_id().clone(),
            epoch: self.config.committee.epoch(),
            phase,
            view: self.view,
            sequence,
            digest,
            voter: self.config.index,
        }
        .sign_with(&self.signer)
    }

    /// Persist before send: the signed vote and the claims it implies are durable before
    /// it leaves; then it counts toward our own quorum like anyone else's.
    fn send_vote(&mut self, vote: SignedVote, now: TimestampMs, outputs: &mut Vec<Output>) {
        let v = vote.vote();
        let key = keys::vote(v.phase, v.view.0, v.sequence.0);
        let mut batch = StoreBatch::new();
        batch.put_replica_state(&key, &vote.to_wire());
        batch.put_replica_state(keys::CLAIMS, &self.encode_claims());
        outputs.push(Output::Persist(batch));
        self.vote_keys.entry(v.sequence).or_default().push(key);
        self.own_votes.insert((v.sequence, v.phase), vote.clone());
        outputs.push(Output::Broadcast(Message::Vote(vote.clone())));
        self.on_vote(vote, now, outputs);
    }

    fn on_vote(&mut self, vote: SignedVote, now: TimestampMs, outputs: &mut Vec<Output>) {
        let (phase, view, sequence) = {
            let v = vote.vote();
            (v.phase, v.view, v.sequence)
        };
        if view != self.view || !self.accepts(sequence) {
            self.drops.out_of_window_messages += 1;
            return;
        }
        let tracker = match phase {
            Phase::Prepare => &mut self.prepares,
            Phase::Commit => &mut self.commits,
        };
        match tracker.add(vote) {
            VoteOutcome::DoubleVote(evidence) => {
                self.on_evidence(Evidence::DoubleVote(evidence), now, outputs);
            }
            VoteOutcome::Duplicate => {}
            VoteOutcome::Counted(_) | VoteOutcome::QuorumReached(_) => match phase {
                Phase::Prepare => self.check_prepared(sequence, now, outputs),
                Phase::Commit => self.check_committed(sequence, outputs),
            },
        }
    }

    /// Rule 4: prepared = our pre-prepare + 2f matching prepares -> send a commit.
    fn check_prepared(&mut self, sequence: Sequence, now: TimestampMs, outputs: &mut Vec<Output>) {
        let Some(digest) = self.pre_prepares.get(&sequence).copied() else {
            return;
        };
        if !self.view_active
            || self.commit_sent.contains(&sequence)
            || self.prepares.count(self.view, sequence, digest.as_ref())
                < self.config.committee.quorum() - 1
        {
            return;
        }
        self.commit_sent.insert(sequence);
        self.add_claim(sequence, digest, true);
        let vote = self.sign_vote(Phase::Commit, sequence, digest);
        self.send_vote(vote, now, outputs);
    }

    /// Committed = 2f + 1 matching commits, for any digest (even one whose pre-prepare
    /// we missed: the anchor is then fetched from a voter).
    fn check_committed(&mut self, sequence: Sequence, outputs: &mut Vec<Output>) {
        if self.committed.contains_key(&sequence) {
            return;
        }
        let quorum = self.config.committee.quorum();
        let mut candidates = self.commits.digests(self.view, sequence);
        candidates.sort_unstable();
        candidates.dedup();
        let Some(digest) = candidates
            .into_iter()
            .find(|d| self.commits.count(self.view, sequence, d.as_ref()) >= quorum)
        else {
            return;
        };
        let certificate = self.commits.votes_for(self.view, sequence, digest.as_ref());
        self.mark_committed(sequence, digest, certificate, outputs);
    }

    fn mark_committed(
        &mut self,
        sequence: Sequence,
        digest: Option<Digest>,
        certificate: Vec<SignedVote>,
        outputs: &mut Vec<Output>,
    ) {
        self.committed.insert(sequence, digest);
        if let Some(anchor) = digest.filter(|d| !self.dag.contains(d)) {
            self.dag.want(anchor, self.wanted_limit());
            if let Some(voter) = certificate
                .iter()
                .map(|v| v.vote().voter)
                .find(|v| *v != self.config.index)
            {
                outputs.push(Output::Fetch {
                    from: voter,
                    hashes: vec![anchor],
                });
            }
        }
        self.decided.insert(sequence, certificate);
    }

    /// A peer tells where it is: help it catch up if we are ahead.
    fn on_status(
        &mut self,
        from: ValidatorIndex,
        view: View,
        executed: Sequence,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        if from == self.config.index {
            return;
        }
        // At most one answer per peer per retransmission interval unless it moved on: a
        // replayed status must not make us resend certificates at its rate.
        let Some(slot) = self.status_replies.get_mut(from.as_usize()) else {
            return;
        };
        if executed <= slot.1 && now.0 < slot.0 .0 + self.config.retransmit_interval_ms / 2 {
            return;
        }
        *slot = (now, executed);
        let mut sent = 0;
        let mut next = executed.next();
        while next <= self.finalizer.last_sequence() && sent < 2 * self.config.window {
            if let Some(certificate) = self.decided.get(&next) {
                outputs.push(Output::Send {
                    to: from,
                    message: Message::Decided(certificate.clone()),
                });
                sent += 1;
            }
            next = next.next();
        }
        if view < self.view && self.view_active {
            if let Some(new_view) = &self.new_view {
                outputs.push(Output::Send {
                    to: from,
                    message: new_view.clone(),
                });
            }
        }
    }

    /// A commit certificate from a peer: 2f + 1 distinct commit votes for one
    /// (view, sequence, digest) prove the sequence committed, whatever our view.
    fn on_decided(
        &mut self,
        from: ValidatorIndex,
        votes: Vec<SignedVote>,
        outputs: &mut Vec<Output>,
    ) {
        let Some(first) = votes.first().map(|v| v.vote().clone()) else {
            return;
        };
        let sequence = first.sequence;
        let executed = self.finalizer.last_sequence();
        if sequence <= executed
            || sequence.0 > executed.0 + 2 * self.config.window
            || self.committed.contains_key(&sequence)
        {
            return;
        }
        let voters: BTreeSet<ValidatorIndex> = votes
            .iter()
            .filter(|v| {
                let v = v.vote();
                v.phase == Phase::Commit
                    && v.view == first.view
                    && v.sequence == sequence
                    && v.digest == first.digest
                    && self.config.committee.contains(v.voter)
            })
            .map(|v| v.vote().voter)
            .collect();
        if voters.len() < self.config.committee.quorum() || voters.len() != votes.len() {
            self.drops.invalid_view_messages += 1;
            return;
        }
        let mut certificate = votes;
        certificate.sort_by_key(|v| v.vote().voter);
        self.mark_committed(sequence, first.digest, certificate, outputs);
        // The last certificate of a batch: ask the same peer for the next batch at once,
        // so catching up outpaces the others' progress.
        if sequence.0 == executed.0 + 2 * self.config.window {
            outputs.push(Output::Send {
                to: from,
                message: Message::Status {
                    view: self.view,
                    executed: Sequence(sequence.0),
                },
            });
        }
        if let Some(anchor) = first.digest.filter(|d| !self.dag.contains(d)) {
            outputs.push(Output::Fetch {
                from,
                hashes: vec![anchor],
            });
        }
    }

    /// Rule 5: execute committed sequences strictly in order.
    fn execute_committed(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        loop {
            let next = self.finalizer.last_sequence().next();
            let Some(anchor) = self.committed.get(&next).copied() else {
                return;
            };
            if anchor.is_some_and(|h| !self.dag.contains(&h)) {
                // The fetch was requested when it committed; wait for the anchor.
                return;
            }
            let entry = match self.finalizer.execute(&self.dag, next, anchor, now.0) {
                Ok(entry) => entry,
                Err(error) => {
                    debug_assert!(false, "committed anchor could not execute: {error}");
                    return;
                }
            };
            for transaction in &entry.transactions {
                self.mempool_ids.remove(&transaction.id);
            }
            let finalized: HashSet<TxId> = entry.transactions.iter().map(|t| t.id).collect();
            self.mempool.retain(|t| !finalized.contains(&t.id()));
            let vertices: HashSet<Digest> = entry.vertices.iter().copied().collect();
            self.own_pending
                .retain(|_, own| !vertices.contains(&own.hash));
            self.committed.remove(&next);
            self.pre_prepares.remove(&next);
            self.awaiting_history.remove(&next);
            self.commit_sent.remove(&next);
            self.own_votes.retain(|(s, _), _| *s > next);
            self.prepares.release_through(next);
            self.commits.release_through(next);
            let retained = next.0.saturating_sub(self.config.decided_retention);
            self.decided = self.decided.split_off(&Sequence(retained + 1));
            let mut batch = StoreBatch::new();
            batch.append_finalized(entry.clone());
            outputs.push(Output::Persist(batch));
            let checkpoint_due = next.0.is_multiple_of(self.config.checkpoint_interval);
            let state_digest = entry.state_digest;
            outputs.push(Output::Finalized(entry));
            if checkpoint_due {
                self.send_checkpoint(next, state_digest, outputs);
            }
            if self.view_active {
                // Progress: T goes back to its base and the wait starts over.
                self.timeout_ms = self.config.view_change_timeout_ms;
                self.progress_deadline = None;
            }
            let gc = self.finalizer.gc_round();
            self.forwarded.retain(|(_, round)| *round >= gc);
            let report = self.dag.set_gc_round(gc);
            for hash in report.accepted {
                self.on_accepted(&hash, now, outputs);
            }
            self.repropose_below_gc();
        }
    }

    /// Our vertices that fell below the GC round without being finalized will never be:
    /// their transactions go back to the mempool (deduplication keeps them exactly-once).
    fn repropose_below_gc(&mut self) {
        let gc = self.finalizer.gc_round();
        let kept = self.own_pending.split_off(&gc);
        let dropped = std::mem::replace(&mut self.own_pending, kept);
        let mut again = Vec::new();
        for own in dropped.values() {
            for transaction in &own.transactions {
                self.mempool_ids.remove(&transaction.id());
            }
        }
        for own in dropped.into_values() {
            again.extend(
                own.transactions
                    .into_iter()
                    .filter(|t| !self.finalizer.is_transaction_finalized(&t.id())),
            );
        }
        self.add_transactions(again);
    }

    /// True while something should be making progress: the view-change timer runs.
    fn waiting(&self) -> bool {
        if !self.view_active {
            // A replica that announced a later view has given up on ours too: it counts
            // (otherwise a lost view change could leave us waiting without a timer).
            let joined = self
                .view_changes
                .values()
                .filter(|(vc, _)| vc.body().view >= self.view)
                .count();
            return joined >= self.config.committee.quorum();
        }
        !self.pre_prepares.is_empty()
            || !self.committed.is_empty()
            || !self.awaiting_history.is_empty()
            || !self.nothing_to_anchor()
    }

    fn check_deadlines(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        if !self.waiting() {
            self.progress_deadline = None;
        } else {
            match self.progress_deadline {
                None => self.progress_deadline = Some(TimestampMs(now.0 + self.timeout_ms)),
                Some(deadline) if now >= deadline => {
                    self.timeout_ms =
                        (self.timeout_ms * 2).min(self.config.max_view_change_timeout_ms);
                    self.start_view_change(self.view.next(), now, outputs);
                    return;
                }
                Some(_) => {}
            }
        }
        // A primary that leaves our own transactions out is replaced too.
        let oldest = self.own_pending.values().map(|o| o.created_at).min();
        if let Some(created) = oldest {
            let since = created.max(self.view_started);
            if self.view_active && now.0 >= since.0 + self.config.transaction_timeout_ms {
                self.start_view_change(self.view.next(), now, outputs);
            }
        }
    }

    /// Moves to `target` (never backwards): persist, then announce.
    fn start_view_change(&mut self, target: View, now: TimestampMs, outputs: &mut Vec<Output>) {
        if target <= self.view {
            return;
        }
        self.view = target;
        self.view_active = false;
        self.view_started = now;
        self.progress_deadline = None;
        self.pre_prepares.clear();
        self.awaiting_history.clear();
        self.commit_sent.clear();
        self.own_votes.clear();
        self.new_view = None;
        self.prepares.release_views_below(target);
        self.commits.release_views_below(target);
        let stable = self.stable.sequence;
        let view_change = ViewChange {
            chain_id: self.config.committee.chain_id().clone(),
            epoch: self.config.committee.epoch(),
            view: target,
            stable_sequence: stable,
            stable_digest: self.stable.state_digest,
            prepared: self
                .prepared_claims
                .range(stable.next()..)
                .map(|(_, c)| *c)
                .collect(),
            pre_prepared: self
                .pre_prepared_claims
                .range(stable.next()..)
                .flat_map(|(_, c)| c.iter().copied())
                .collect(),
            replica: self.config.index,
        };
        let signed = Signed::sign_with(view_change, &self.signer);
        let message = Message::ViewChange {
            view_change: signed.clone(),
            certificate: self.stable.certificate.clone(),
        };
        let mut batch = StoreBatch::new();
        batch.put_replica_state(keys::VIEW, &encode_view(target, false));
        batch.put_replica_state(keys::VIEW_CHANGE, &message.to_wire());
        outputs.push(Output::Persist(batch));
        outputs.push(Output::Broadcast(message.clone()));
        self.own_view_change = Some(message);
        self.view_changes
            .insert(self.config.index, (signed, self.stable.certificate.clone()));
        self.view_changes
            .retain(|_, (vc, _)| vc.body().view >= target);
        self.try_new_view(now, outputs);
    }

    fn on_view_change(
        &mut self,
        from: ValidatorIndex,
        view_change: SignedViewChange,
        certificate: Vec<SignedCheckpoint>,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let body = view_change.body();
        let (view, sender) = (body.view, body.replica);
        if view < self.view || (view == self.view && self.view_active) {
            // The sender is behind: the new view that started ours brings it here (once
            // per retransmission interval, whatever the rate of stale view changes).
            let Some(slot) = self.status_replies.get_mut(from.as_usize()) else {
                return;
            };
            let due = now.0 >= slot.0 .0 + self.config.retransmit_interval_ms / 2;
            if due {
                slot.0 = now;
            }
            if due && self.view_active && from != self.config.index {
                if let Some(new_view) = &self.new_view {
                    outputs.push(Output::Send {
                        to: from,
                        message: new_view.clone(),
                    });
                }
            }
            return;
        }
        if !self.certifies(body.stable_sequence, &body.stable_digest, &certificate) {
            self.drops.invalid_view_messages += 1;
            return;
        }
        if self
            .view_changes
            .get(&sender)
            .is_some_and(|(held, _)| held.body().view >= view)
        {
            return;
        }
        self.view_changes.insert(sender, (view_change, certificate));
        // Join the smallest view that f + 1 others announce above ours.
        let mut announced: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(i, (vc, _))| **i != self.config.index && vc.body().view > self.view)
            .map(|(_, (vc, _))| vc.body().view)
            .collect();
        announced.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(join) = announced.get(self.config.committee.max_faulty()) {
            self.start_view_change(*join, now, outputs);
        }
        self.try_new_view(now, outputs);
    }

    /// True when `certificate` proves `(sequence, digest)` stable: 2f + 1 distinct signers
    /// (signatures verified by the host). The genesis checkpoint needs none.
    fn certifies(
        &self,
        sequence: Sequence,
        digest: &Digest,
        certificate: &[SignedCheckpoint],
    ) -> bool {
        if sequence == Sequence(0) {
            return true;
        }
        let signers: BTreeSet<ValidatorIndex> = certificate
            .iter()
            .map(SignedCheckpoint::checkpoint)
            .filter(|c| {
                c.sequence == sequence
                    && c.state_digest == *digest
                    && self.config.committee.contains(c.signer)
            })
            .map(|c| c.signer)
            .collect();
        signers.len() >= self.config.committee.quorum()
    }

    /// The new primary announces the view once its view changes decide every sequence.
    fn try_new_view(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        if self.view_active || self.primary(self.view) != self.config.index {
            return;
        }
        let chosen: Vec<&(SignedViewChange, Vec<SignedCheckpoint>)> = self
            .view_changes
            .values()
            .filter(|(vc, _)| vc.body().view == self.view)
            .collect();
        let bodies: Vec<&ViewChange> = chosen.iter().map(|(vc, _)| vc.body()).collect();
        let Some(decision) = decide(&bodies, self.config.committee.max_faulty()) else {
            return;
        };
        let certificate = chosen
            .iter()
            .find(|(vc, _)| vc.body().replica == decision.stable_from)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        let new_view = NewView {
            chain_id: self.config.committee.chain_id().clone(),
            epoch: self.config.committee.epoch(),
            view: self.view,
            primary: self.config.index,
            stable_sequence: decision.stable_sequence,
            stable_digest: decision.stable_digest,
            proposals: decision.proposals,
            view_changes: chosen.iter().map(|(vc, _)| vc.hash()).collect(),
        };
        let message = NewViewMessage {
            new_view: Signed::sign_with(new_view, &self.signer),
            view_changes: chosen.iter().map(|(vc, _)| vc.clone()).collect(),
            certificate,
        };
        let wire = Message::NewView(Box::new(message.clone()));
        let mut batch = StoreBatch::new();
        batch.put_replica_state(keys::NEW_VIEW, &wire.to_wire());
        outputs.push(Output::Persist(batch));
        outputs.push(Output::Broadcast(wire));
        self.enter_view(message, now, outputs);
    }

    fn on_new_view(
        &mut self,
        message: NewViewMessage,
        now: TimestampMs,
        outputs: &mut Vec<Output>,
    ) {
        let body = message.new_view.body();
        if body.view < self.view || (body.view == self.view && self.view_active) {
            return;
        }
        if !self.new_view_checks_out(&message) {
            self.drops.invalid_view_messages += 1;
            return;
        }
        self.enter_view(message, now, outputs);
    }

    /// Recomputes the primary's decision from the view changes it names.
    fn new_view_checks_out(&self, message: &NewViewMessage) -> bool {
        let body = message.new_view.body();
        if body.primary != self.primary(body.view)
            || message.view_changes.len() != body.view_changes.len()
        {
            return false;
        }
        let mut senders = BTreeSet::new();
        for (vc, hash) in message.view_changes.iter().zip(&body.view_changes) {
            if vc.hash() != *hash
                || vc.body().view != body.view
                || !senders.insert(vc.body().replica)
                || !self.config.committee.contains(vc.body().replica)
            {
                return false;
            }
        }
        let bodies: Vec<&ViewChange> = message.view_changes.iter().map(|vc| vc.body()).collect();
        let Some(decision) = decide(&bodies, self.config.committee.max_faulty()) else {
            return false;
        };
        decision.stable_sequence == body.stable_sequence
            && decision.stable_digest == body.stable_digest
            && decision.proposals == body.proposals
            && self.certifies(
                body.stable_sequence,
                &body.stable_digest,
                &message.certificate,
            )
    }

    /// Starts the new view: adopt its checkpoint, pre-prepare every re-proposed sequence
    /// (null ones at once, anchors once their history is held).
    fn enter_view(&mut self, message: NewViewMessage, now: TimestampMs, outputs: &mut Vec<Output>) {
        let body = message.new_view.body().clone();
        self.view = body.view;
        self.view_active = true;
        self.view_started = now;
        self.progress_deadline = None;
        self.pre_prepares.clear();
        self.awaiting_history.clear();
        self.commit_sent.clear();
        self.own_votes.clear();
        self.own_view_change = None;
        self.prepares.release_views_below(body.view);
        self.commits.release_views_below(body.view);
        self.view_changes
            .retain(|_, (vc, _)| vc.body().view > body.view);
        let mut batch = StoreBatch::new();
        batch.put_replica_state(keys::VIEW, &encode_view(body.view, true));
        outputs.push(Output::Persist(batch));
        if body.stable_sequence > self.stable.sequence {
            self.adopt_stable(
                StableCheckpoint {
                    sequence: body.stable_sequence,
                    state_digest: body.stable_digest,
                    certificate: message.certificate.clone(),
                },
                outputs,
            );
        }
        let last = body
            .proposals
            .last()
            .map_or(body.stable_sequence, |(s, _)| *s);
        self.next_proposal = last.max(self.finalizer.last_sequence()).next();
        // Which view-change senders can serve each re-proposed anchor.
        let wire = Message::NewView(Box::new(message.clone()));
        self.new_view = Some(wire);
        for (sequence, digest) in body.proposals {
            if sequence <= self.finalizer.last_sequence() {
                continue;
            }
            match digest {
                Some(anchor) if !self.dag.contains(&anchor) => {
                    self.awaiting_history.insert(sequence, anchor);
                    self.dag.want(anchor, self.wanted_limit());
                    let holder = message
                        .view_changes
                        .iter()
                        .map(|vc| vc.body())
                        .find(|vc| {
                            vc.replica != self.config.index
                                && vc.pre_prepared.iter().any(|c| c.digest == Some(anchor))
                        })
                        .map(|vc| vc.replica);
                    let from = holder.unwrap_or_else(|| self.next_peer());
                    outputs.push(Output::Fetch {
                        from,
                        hashes: vec![anchor],
                    });
                }
                _ => self.prepare(sequence, digest, now, outputs),
            }
        }
        // Pre-prepares of this view that arrived before we entered it.
        if let Some(latest) = self.latest_by_author[self.primary(body.view).as_usize()] {
            let lowest = latest.round.0.saturating_sub(2 * self.config.window + 2);
            let mut early = Vec::new();
            for round in (lowest..=latest.round.0).map(Round) {
                for vertex in self.dag.round_vertices(round) {
                    let v = vertex.vertex();
                    if v.author == self.primary(body.view)
                        && v.proposal.is_some_and(|p| p.view == body.view)
                    {
                        early.push((*vertex).clone());
                    }
                }
            }
            for vertex in early {
                if let Some(proposal) = vertex.vertex().proposal {
                    self.on_pre_prepare(&vertex, proposal, now, outputs);
                }
            }
        }
    }

    /// Rule 1: build the next vertex when a quorum of the previous round is held and
    /// there is something to order (or the idle timer fired).
    fn maybe_build_vertex(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        let next_round = match &self.own_latest {
            None => Round(0),
            Some(latest) => latest.vertex().round.next(),
        };
        // Backpressure: at most 2D rounds above the GC round. Beyond, only the primary
        // builds, and only to propose the anchor that moves the GC round.
        let cap = self.finalizer.gc_round().0 + 2 * self.config.gc_depth;
        if next_round.0 > cap && !self.wants_to_propose() {
            return;
        }
        if let Some(previous) = next_round.previous() {
            let authors = self.dag.round_vertices(previous);
            let mut distinct: Vec<ValidatorIndex> =
                authors.iter().map(|v| v.vertex().author).collect();
            if self.config.mutant != Some(Mutant::CountParentVertices) {
                distinct.dedup();
            }
            if distinct.len() < self.config.committee.quorum() {
                return;
            }
            let has_work = !self.mempool.is_empty()
                || self.idle_fired
                || authors
                    .iter()
                    .any(|v| !v.vertex().transactions.is_empty() || v.vertex().proposal.is_some())
                || self.wants_to_propose();
            if !has_work {
                if !self.idle_armed {
                    self.idle_armed = true;
                    outputs.push(Output::SetTimer {
                        timer: Timer::Idle,
                        after_ms: self.config.idle_interval_ms,
                    });
                }
                return;
            }
        }
        self.build_vertex(next_round, now, outputs);
    }

    fn wants_to_propose(&self) -> bool {
        self.view_active
            && self.primary(self.view) == self.config.index
            && self.in_window(self.next_proposal)
            && !self.nothing_to_anchor()
    }

    /// True when no accepted vertex outside the finalized set carries transactions: the
    /// primary then has nothing to anchor.
    fn nothing_to_anchor(&self) -> bool {
        // Idle rounds still need an anchor now and then, or the GC round never moves and
        // an idle DAG grows without bound.
        let own_round = self.own_latest.as_ref().map_or(0, |v| v.vertex().round.0);
        let gc_lag = own_round.saturating_sub(self.finalizer.gc_round().0);
        if gc_lag > self.config.gc_depth + self.config.gc_depth / 2 {
            return false;
        }
        self.mempool.is_empty()
            && self.latest_by_author.iter().flatten().all(|p| {
                self.finalizer.is_finalized(&p.hash)
                    || p.round < self.finalizer.gc_round()
                    || self
                        .dag
                        .get(&p.hash)
                        .is_none_or(|v| v.vertex().transactions.is_empty())
            })
    }

    fn build_vertex(&mut self, round: Round, now: TimestampMs, outputs: &mut Vec<Output>) {
        let index = self.config.index;
        let mut parents = Vec::new();
        if let Some(previous) = round.previous() {
            if let Some(own) = &self.own_latest {
                parents.push(own.as_parent());
            }
            let lowest =
                Round(round.0.saturating_sub(self.config.gc_depth)).max(self.dag.gc_round());
            let mut in_previous: BTreeMap<ValidatorIndex, Vec<ParentRef>> = BTreeMap::new();
            for vertex in self.dag.round_vertices(previous) {
                in_previous
                    .entry(vertex.vertex().author)
                    .or_default()
                    .push(vertex.as_parent());
            }
            // Previous-round authors we can leave out and still reach a quorum.
            let mut spare = in_previous
                .len()
                .saturating_sub(self.config.committee.quorum());
            for author in self.config.committee.indices().filter(|a| *a != index) {
                // The author's vertex of the previous round; otherwise its latest older
                // vertex that our history does not reach yet (a slow validator). A banned
                // author is referenced only when the quorum needs it.
                if self.banned(author) {
                    if !in_previous.contains_key(&author) {
                        continue;
                    }
                    if spare > 0 {
                        spare -= 1;
                        continue;
                    }
                }
                let older = self.latest_by_author[author.as_usize()].filter(|latest| {
                    latest.round < previous
                        && latest.round >= lowest
                        && !self.own_history.contains(&latest.hash)
                });
                match in_previous.get(&author) {
                    Some(versions) if self.config.mutant == Some(Mutant::CountParentVertices) => {
                        parents.extend(versions.iter().copied());
                    }
                    Some(versions) => parents.extend(versions.first().copied()),
                    None => parents.extend(older),
                }
            }
        }
        let created_at = parents
            .iter()
            .filter_map(|p| self.dag.get(&p.hash))
            .map(|v| v.vertex().created_at)
            .fold(now, TimestampMs::max);
        // Propose only with something to order: empty anchors would keep every replica
        // building empty rounds forever.
        let proposal = (self.view_active
            && self.primary(self.view) == index
            && self.in_window(self.next_proposal)
            && round.0 > 0
            && !self.nothing_to_anchor())
        .then_some(Proposal {
            view: self.view,
            sequence: self.next_proposal,
        });
        let take = self.mempool.len().min(self.config.max_batch_transactions);
        let transactions: Vec<Transaction> = self.mempool.drain(..take).collect();
        let vertex = Vertex {
            chain_id: self.config.committee.chain_id().clone(),
            epoch: self.config.committee.epoch(),
            author: index,
            round,
            created_at,
            proposal,
            parents,
            transactions,
        };
        let signed = vertex.signed_by(|context, bytes| self.signer.sign(context, bytes));
        if self.config.mutant.is_none() {
            if let Err(error) = signed
                .vertex()
                .check_structure(&self.config.committee, &self.config.limits)
            {
                debug_assert!(false, "built an invalid vertex: {error}");
                return;
            }
        }
        if proposal.is_some() {
            self.next_proposal = self.next_proposal.next();
        }
        if !signed.vertex().transactions.is_empty() {
            self.own_pending.insert(
                round,
                OwnPending {
                    hash: signed.hash(),
                    created_at: now,
                    transactions: signed.vertex().transactions.clone(),
                },
            );
        }
        // Persist before send: the own vertex is durable before anyone can see it, so a
        // restarted replica never signs a second vertex for this round.
        let mut batch = StoreBatch::new();
        batch.put_vertex(signed.clone());
        batch.put_replica_state(keys::OWN_LATEST, signed.hash().as_bytes());
        if self.config.mutant == Some(Mutant::NoDurableOwnVertex) {
            // The mutant writes each own vertex only when it builds the next one.
            if let Some(previous) = self.deferred_own.replace(batch) {
                outputs.push(Output::Persist(previous));
            }
        } else {
            outputs.push(Output::Persist(batch));
        }
        outputs.push(Output::Broadcast(Message::Vertex(signed.clone())));
        self.add_to_own_history(&signed);
        self.own_latest = Some(signed.clone());
        self.idle_fired = false;
        self.insert_vertex(index, signed, false, now, outputs);
    }

    /// Rule 6: sign the executed state at a checkpoint sequence (persisted first: the
    /// executed state it names is durable, it went out in the same ordered outputs).
    fn send_checkpoint(
        &mut self,
        sequence: Sequence,
        state_digest: Digest,
        outputs: &mut Vec<Output>,
    ) {
        let checkpoint = Checkpoint {
            chain_id: self.config.committee.chain_id().clone(),
            epoch: self.config.committee.epoch(),
            sequence,
            state_digest,
            signer: self.config.index,
        }
        .sign_with(&self.signer);
        if sequence > self.stable.sequence {
            self.own_checkpoints.insert(sequence, checkpoint.clone());
        }
        outputs.push(Output::Broadcast(Message::Checkpoint(checkpoint.clone())));
        self.on_checkpoint(checkpoint, outputs);
    }

    /// Collects checkpoint signatures for sequences in (h, h + W + K]; 2f + 1 matching
    /// make the sequence stable. Anything further ahead is dropped, not buffered.
    fn on_checkpoint(&mut self, signed: SignedCheckpoint, outputs: &mut Vec<Output>) {
        let checkpoint = signed.checkpoint();
        let (sequence, signer, digest) = (
            checkpoint.sequence,
            checkpoint.signer,
            checkpoint.state_digest,
        );
        let base = self.stable.sequence.0.max(self.finalizer.last_sequence().0);
        let horizon = base + self.config.window + self.config.checkpoint_interval;
        if sequence <= self.stable.sequence
            || sequence.0 > horizon
            || sequence.0 % self.config.checkpoint_interval != 0
        {
            self.drops.out_of_window_messages += 1;
            return;
        }
        let signatures = self.checkpoints.entry(sequence).or_default();
        signatures.entry(signer).or_insert(signed);
        let matching: Vec<SignedCheckpoint> = signatures
            .values()
            .filter(|c| c.checkpoint().state_digest == digest)
            .cloned()
            .collect();
        if matching.len() < self.config.committee.quorum() {
            return;
        }
        // Agreement makes our own digest equal to any quorum's; a mismatch means this
        // replica diverged (more than f faulty validators): it stops following the
        // checkpoint and the host must halt it (see `diverged`).
        if let Some(own) = self.own_checkpoints.get(&sequence) {
            if own.checkpoint().state_digest != digest {
                self.diverged = Some(sequence);
                return;
            }
        }
        self.adopt_stable(
            StableCheckpoint {
                sequence,
                state_digest: digest,
                certificate: matching,
            },
            outputs,
        );
    }

    /// Moves h and releases what lies below it.
    fn adopt_stable(&mut self, stable: StableCheckpoint, outputs: &mut Vec<Output>) {
        let sequence = stable.sequence;
        let mut batch = StoreBatch::new();
        batch.put_replica_state(keys::STABLE, &encode_stable(&stable));
        self.stable = stable;
        self.checkpoints = self.checkpoints.split_off(&sequence.next());
        self.own_checkpoints = self.own_checkpoints.split_off(&sequence.next());
        self.prepared_claims = self.prepared_claims.split_off(&sequence.next());
        self.pre_prepared_claims = self.pre_prepared_claims.split_off(&sequence.next());
        // A replica behind the checkpoint still needs the votes of what it has not
        // executed; it catches up through peers' commit certificates.
        let released = sequence.min(self.finalizer.last_sequence());
        self.prepares.release_through(released);
        self.commits.release_through(released);
        let kept = self.vote_keys.split_off(&released.next());
        for key in std::mem::replace(&mut self.vote_keys, kept)
            .into_values()
            .flatten()
        {
            batch.delete_replica_state(&key);
        }
        outputs.push(Output::Persist(batch));
    }

    fn add_to_own_history(&mut self, vertex: &SignedVertex) {
        let mut stack = vec![vertex.hash()];
        while let Some(hash) = stack.pop() {
            if !self.own_history.insert(hash) {
                continue;
            }
            if let Some(v) = self.dag.get(&hash) {
                stack.extend(v.vertex().parents.iter().map(|p| p.hash));
            }
        }
        let gc = self.dag.gc_round();
        if gc.0 > 0 {
            let dag = &self.dag;
            self.own_history.retain(|h| {
                dag.get(h).is_some_and(|v| v.vertex().round >= gc) || *h == vertex.hash()
            });
        }
    }

    /// P and Q, in the view-change claim codec.
    fn encode_claims(&self) -> Vec<u8> {
        let prepared: Vec<Claim> = self.prepared_claims.values().copied().collect();
        let pre_prepared: Vec<Claim> = self
            .pre_prepared_claims
            .values()
            .flatten()
            .copied()
            .collect();
        let mut writer = Writer::with_capacity(64 * (prepared.len() + pre_prepared.len()) + 4);
        crate::view_change::write_claims(&mut writer, &prepared);
        crate::view_change::write_claims(&mut writer, &pre_prepared);
        writer.finish()
    }
}

type ClaimSets = (BTreeMap<Sequence, Claim>, BTreeMap<Sequence, Vec<Claim>>);

fn decode_claims(bytes: &[u8]) -> Result<ClaimSets, String> {
    let mut reader = Reader::new(bytes);
    let prepared = crate::view_change::read_claims(&mut reader).map_err(|e| e.to_string())?;
    let pre_prepared = crate::view_change::read_claims(&mut reader).map_err(|e| e.to_string())?;
    reader.finish().map_err(|e| e.to_string())?;
    let mut q: BTreeMap<Sequence, Vec<Claim>> = BTreeMap::new();
    for claim in pre_prepared {
        q.entry(claim.sequence).or_default().push(claim);
    }
    Ok((prepared.into_iter().map(|c| (c.sequence, c)).collect(), q))
}

fn encode_view(view: View, active: bool) -> Vec<u8> {
    let mut writer = Writer::with_capacity(9);
    writer.u64(view.0);
    writer.u8(u8::from(active));
    writer.finish()
}

fn encode_stable(stable: &StableCheckpoint) -> Vec<u8> {
    let mut writer = Writer::with_capacity(64 + 5_000 * stable.certificate.len());
    writer.u64(stable.sequence.0);
    writer.raw(stable.state_digest.as_bytes());
    crate::messages::write_certificate(&mut writer, &stable.certificate);
    writer.finish()
}

fn decode_stable(bytes: &[u8]) -> Result<StableCheckpoint, String> {
    let mut reader = Reader::new(bytes);
    let sequence = Sequence(reader.u64("sequence").map_err(|e| e.to_string())?);
    let state_digest = Digest::from_bytes(reader.array("digest").map_err(|e| e.to_string())?);
    let certificate = crate::messages::read_certificate(&mut reader).map_err(|e| e.to_string())?;
    reader.finish().map_err(|e| e.to_string())?;
    Ok(StableCheckpoint {
        sequence,
        state_digest,
        certificate,
    })
}
