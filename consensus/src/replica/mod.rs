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

mod catch_up;
mod checkpoints;
mod config;
mod durable;
mod io;
mod ordering;
mod vertices;
mod view_change;

pub use config::{ConfigError, Mutant, ReplicaConfig};
pub use durable::{put_finalizer_snapshot, signing_record_vertices, RecoverError};
pub use io::{
    ConflictingPrePrepares, DropCounters, Evidence, Input, MemoryFootprint, Output,
    PrePrepareProof, StableCheckpoint, Timer,
};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use weft_crypto::Digest;
use weft_dag::codec::{Reader, Writer};
use weft_dag::store::{Store, StoreBatch, StoreError};
use weft_dag::{
    Dag, DagConfig, ExecuteError, Finalizer, InsertError, ParentRef, Proposal, Round, Sequence,
    SignedVertex, Sponsor, TimestampMs, Transaction, TxId, ValidatorIndex, Vertex, View,
};

use crate::messages::{
    Checkpoint, Message, NewViewMessage, Phase, SignedCheckpoint, SignedVote, Vote,
};
use crate::quorum::{VoteOutcome, VoteTracker};
use crate::view_change::{decide, Claim, NewView, Signed, SignedViewChange, ViewChange};
use crate::Signer;
use durable::{encode_stable, encode_view, keys, SigningFloor};
use ordering::{Slot, SlotState, Source};
use vertices::OwnPending;

/// What a peer's `Status` told a learning replica: view, executed sequence, own round
/// (counted once credible, `Replica::credible`).
type PeerReport = (View, Sequence, Option<Round>);

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
    /// Accepted vertices that carry transactions and are not finalized yet, by round
    /// (pruned below the GC round): what a primary still has to anchor. An author's
    /// latest vertex alone does not say it, since an empty later vertex may overtake one
    /// that carries transactions before any anchor covers it.
    unanchored: BTreeSet<(Round, Digest)>,
    /// Transactions with a durable `mempool/` record (admitted, not yet finalized or
    /// expired), and their expiry.
    mempool_records: HashMap<TxId, TimestampMs>,
    /// `mempool/` records recovery found above `max_transaction_bytes` (the limit was
    /// lowered since they were acknowledged): kept out of the mempool.
    oversized_records: usize,
    mempool: VecDeque<Transaction>,
    /// Ids in the mempool or in our own vertices that are not final yet.
    mempool_ids: HashSet<TxId>,
    own_pending: BTreeMap<Round, OwnPending>,
    next_proposal: Sequence,
    /// The log of the current view: each sequence's pre-prepare, its source and state.
    log: BTreeMap<Sequence, Slot>,
    /// The primary's anchor of this view that executed last (it left the log, and still
    /// bounds the next anchor's round).
    last_executed_anchor: Option<(Sequence, Slot)>,
    prepares: VoteTracker,
    commits: VoteTracker,
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
    /// Where the next retransmission's window over missing parents starts.
    missing_rotation: usize,
    idle_fired: bool,
    idle_armed: bool,
    drops: DropCounters,
    faults: Vec<u32>,
    /// The NoDurableOwnVertex mutant's unwritten own vertex.
    deferred_own: Option<StoreBatch>,
    /// A checkpoint quorum contradicted our own state here: more than f are faulty.
    diverged: Option<Sequence>,
    /// Set while a replica without a signing record (an empty store is not a fresh
    /// validator) learns from 2f + 1 peers' status where it may sign: peer -> (view,
    /// round of its own latest vertex).
    learning: Option<BTreeMap<ValidatorIndex, PeerReport>>,
    /// The nonce of our status requests while learning (drawn at `Start`).
    learning_nonce: u64,
    /// When we last answered each peer's status request, and which nonce.
    request_replies: Vec<(TimestampMs, u64)>,
    /// What it learned: it signs only above it (none for a replica that never lost its
    /// signing record).
    floor: Option<SigningFloor>,
    /// When we last answered each peer's status, and for which executed sequence.
    status_replies: Vec<(TimestampMs, Sequence)>,
    /// When each peer's last nudge was taken (at most one per half retransmission
    /// interval per peer).
    nudges_taken: Vec<TimestampMs>,
    /// A peer lacks a quorum of this round to build on: we build up to it even with
    /// nothing of our own to order.
    nudged: Option<Round>,
    /// When we last nudged our peers.
    last_nudge: Option<TimestampMs>,
    /// Since when work of ours has waited for a quorum of the round below.
    stuck_since: Option<TimestampMs>,
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
                stale_wants: Mutant::stale_wants(&config),
                refuse_needed_at_cap: Mutant::refuse_needed_at_cap(&config),
                needed_displaces_idle: config.mutant == Some(Mutant::NeededDisplacesIdle),
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
            unanchored: BTreeSet::new(),
            mempool_records: HashMap::new(),
            oversized_records: 0,
            mempool: VecDeque::new(),
            mempool_ids: HashSet::new(),
            own_pending: BTreeMap::new(),
            next_proposal: Sequence(1),
            log: BTreeMap::new(),
            last_executed_anchor: None,
            prepares: VoteTracker::new(Phase::Prepare, quorum - 1),
            commits: VoteTracker::new(Phase::Commit, quorum),
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
            missing_rotation: 0,
            idle_fired: false,
            idle_armed: false,
            drops: DropCounters::default(),
            faults: vec![0; committee.size()],
            forwarded: BTreeSet::new(),
            diverged: None,
            learning: None,
            learning_nonce: 0,
            request_replies: vec![(TimestampMs(0), 0); committee.size()],
            floor: None,
            deferred_own: None,
            status_replies: vec![(TimestampMs(0), Sequence(0)); committee.size()],
            nudges_taken: vec![TimestampMs(0); committee.size()],
            nudged: None,
            last_nudge: None,
            stuck_since: None,
            stable: StableCheckpoint::default(),
            checkpoints: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
            vote_keys: BTreeMap::new(),
            config,
        })
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

    /// What the NewView of `view` this replica entered decided for `sequence` (an anchor
    /// or null), if it entered `view` through a NewView that decided it. For checkers:
    /// an honest replica's prepare in that view must name exactly this.
    pub fn new_view_decision(&self, view: View, sequence: Sequence) -> Option<Option<Digest>> {
        let Some(Message::NewView(message)) = &self.new_view else {
            return None;
        };
        let body = message.new_view.body();
        if body.view != view {
            return None;
        }
        body.proposals
            .iter()
            .find(|(s, _)| *s == sequence)
            .map(|(_, digest)| *digest)
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
            "view {}{} executed {} stable {} committed {:?} pre-prepared {:?} awaiting {:?} own round {:?} dag top {:?} quorum rounds {:?} dag {} waiting {} missing {} mempool {} pending-own {} deadline {:?} learning {} floor {:?} diverged {:?} drops {:?}",
            self.view.0,
            if self.view_active { "" } else { " (changing)" },
            self.finalizer.last_sequence(),
            self.stable.sequence,
            self.committed.keys().take(5).collect::<Vec<_>>(),
            self.log.iter().filter(|(_, s)| s.state != SlotState::AwaitingHistory).map(|(s, _)| *s).take(5).collect::<Vec<_>>(),
            self.log.iter().filter(|(_, s)| s.state == SlotState::AwaitingHistory).map(|(s, _)| *s).take(5).collect::<Vec<_>>(),
            self.own_latest.as_ref().map(|v| v.vertex().round.0),
            self.dag.highest_round().map(|r| r.0),
            self.describe_rounds(),
            self.dag.len(),
            self.dag.waiting_len(),
            self.dag.missing().len(),
            self.mempool.len(),
            self.own_pending.len(),
            self.progress_deadline,
            self.learning.as_ref().map_or(0, BTreeMap::len),
            self.floor.map(|f| (f.view.0, f.round.map(|r| r.0), f.executed.0)),
            self.diverged.map(|d| d.0),
            self.drops,
        )
    }

    /// The distinct authors held in each of the top few DAG rounds: `round:authors`.
    fn describe_rounds(&self) -> Vec<String> {
        let Some(top) = self.dag.highest_round() else {
            return Vec::new();
        };
        (top.0.saturating_sub(5)..=top.0)
            .map(|r| {
                let mut authors: Vec<u16> = self
                    .dag
                    .round_vertices(Round(r))
                    .iter()
                    .map(|v| v.vertex().author.0)
                    .collect();
                authors.sort_unstable();
                authors.dedup();
                format!("{r}:{authors:?}")
            })
            .collect()
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

    /// Acknowledged transactions recovery could not put back: their payload is above
    /// the current `max_transaction_bytes` (lowered since). They can never be final here.
    pub fn oversized_mempool_records(&self) -> usize {
        self.oversized_records
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

    /// True while a replica recovered from an empty store (not a fresh validator) may
    /// not sign anything: it is learning its signing floor from 2f + 1 peers' status.
    pub fn learning_signing_floor(&self) -> bool {
        self.learning()
    }

    /// The signing floor learned after a wiped store, if any: the highest view, own
    /// round and executed sequence 2f + 1 peers reported. It signs only above it.
    pub fn signing_floor(&self) -> Option<(View, Option<Round>, Sequence)> {
        self.floor.as_ref().map(|f| (f.view, f.round, f.executed))
    }

    /// The in-memory DAG, read-only (diagnostics, and the simulator's adversary, which
    /// crafts vertices from what a target replica holds).
    pub fn dag(&self) -> &Dag {
        &self.dag
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
            Input::Transactions(transactions) => {
                let admitted = self.add_transactions(transactions, now);
                self.persist_admitted(&admitted, &mut outputs);
            }
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
        self.try_learn(&mut outputs);
        self.check_deadlines(now, &mut outputs);
        self.maybe_build_vertex(now, &mut outputs);
        outputs
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
            Message::Checkpoint(checkpoint) => self.on_checkpoint(checkpoint, now, outputs),
            Message::ViewChange {
                view_change,
                certificate,
            } => self.on_view_change(from, view_change, certificate, now, outputs),
            Message::NewView(new_view) => self.on_new_view(*new_view, now, outputs),
            Message::Status {
                view,
                executed,
                round,
                answers,
            } => {
                let fresh = answers == Some(self.learning_nonce)
                    || self.config.mutant == Some(Mutant::StaleStatusCounts);
                if fresh {
                    self.learn_from_status(from, view, executed, round, outputs);
                }
                self.on_status(from, view, executed, now, outputs);
            }
            Message::StatusRequest { nonce } => {
                self.on_status_request(from, nonce, now, outputs);
            }
            Message::Nudge { round } => self.on_nudge(from, round, now),
            Message::Decided(votes) => self.on_decided(from, votes, outputs),
        }
    }
}
