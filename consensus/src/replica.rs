//! The replica: one validator's protocol state, driven by [`Replica::handle`].
//!
//! Normal case (PBFT on DAG anchors):
//!
//! 1. **Vertices.** A replica builds its vertex for round r + 1 once it holds vertices from
//!    a quorum of distinct authors of round r, and it has something to order (its
//!    mempool, or transactions or a proposal in round r), or its idle timer fired. The
//!    vertex references the author's own latest vertex first, then the latest accepted
//!    vertex of every other author (round r where there is one, older otherwise), so a
//!    slow honest validator's vertices are not left out by the others' choice of parents.
//! 2. **Pre-prepare.** The primary of view v puts (v, s) in its next vertex, for the next
//!    sequence s inside the window (h, h + W] above the stable checkpoint h.
//! 6. **Checkpoints.** After executing a multiple of K, a replica signs
//!    `Checkpoint(s, state digest)`; 2f + 1 matching ones make s the stable checkpoint h,
//!    which moves the window. W >= 2K keeps the primary proposing while the next
//!    checkpoint gathers signatures. Votes, pre-prepares and DAG rounds below are
//!    released, so memory stays bounded on an endless run.
//! 3. **Prepare.** A replica prepares (v, s, d) when the anchor is accepted (its whole
//!    history above the GC round is held), it is in view v, the anchor is by v's
//!    primary, it has no other pre-prepare for (v, s), and the anchor is not stale (its
//!    round is at least the replica's own round minus L).
//! 4. **Commit.** Prepared = pre-prepare + 2f matching prepares: the replica sends a
//!    commit. Committed = 2f + 1 matching commits.
//! 5. **Execution.** Sequences execute strictly in order through the dag crate's
//!    [`Finalizer`]; a committed anchor that is not held yet is fetched first.
//!
//! Every message the replica signs leaves as [`Output::Persist`] first, then as a send:
//! the host executes outputs in order, so nothing signed is sent before it is durable.
//!
//! Not yet here (issue 3 continues): view change, checkpoints, recovery from the store,
//! re-proposal of transactions below the GC round, reputation and bans.

use std::collections::{BTreeMap, HashSet, VecDeque};

use weft_crypto::Digest;
use weft_dag::store::StoreBatch;
use weft_dag::{
    Committee, Dag, DagConfig, FinalizedEntry, Finalizer, InsertError, Limits, ParentRef, Proposal,
    Round, Sequence, SignedVertex, TimestampMs, Transaction, TxId, ValidatorIndex, Vertex, View,
};

use crate::messages::{Checkpoint, Message, Phase, SignedCheckpoint, SignedVote, Vote};
use crate::quorum::{VoteOutcome, VoteTracker};
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
    /// Most transactions per vertex.
    pub max_batch_transactions: usize,
    /// Most transactions waiting in the mempool.
    pub max_mempool_transactions: usize,
    /// With nothing to order, build a vertex after this long anyway.
    pub idle_interval_ms: u64,
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
            max_batch_transactions: 1_000,
            max_mempool_transactions: 100_000,
            idle_interval_ms: 50,
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
                self.max_batch_transactions >= 1
                    && self.max_batch_transactions <= self.limits.max_transactions,
                "max_batch_transactions",
                "between 1 and limits.max_transactions",
            ),
            (self.idle_interval_ms >= 1, "idle_interval_ms", "at least 1"),
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
}

/// What the host feeds the replica.
#[derive(Clone, Debug)]
pub enum Input {
    /// Start (or restart): build the genesis vertex if there is none.
    Start,
    /// A message from validator `from`, whose signature the host verified.
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
    /// Ask `from` for these vertices.
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

/// Counters of what the replica dropped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Invalid vertices.
    pub invalid_vertices: u64,
    /// Votes and checkpoints for another view or outside the window.
    pub out_of_window_messages: u64,
    /// Mempool full.
    pub mempool_full: u64,
}

/// One validator's protocol state.
#[derive(Debug)]
pub struct Replica {
    config: ReplicaConfig,
    signer: Signer,
    dag: Dag,
    finalizer: Finalizer,
    view: View,
    own_latest: Option<SignedVertex>,
    /// Every vertex reachable from our own latest vertex (so we reference the rest).
    own_history: HashSet<Digest>,
    /// Latest accepted vertex per author (the first version, if it equivocated).
    latest_by_author: Vec<Option<ParentRef>>,
    mempool: VecDeque<Transaction>,
    mempool_ids: HashSet<TxId>,
    next_proposal: Sequence,
    /// Pre-prepares we accepted in the current view: sequence -> anchor.
    pre_prepares: BTreeMap<Sequence, Digest>,
    prepares: VoteTracker,
    commits: VoteTracker,
    commit_sent: HashSet<Sequence>,
    committed: BTreeMap<Sequence, Option<Digest>>,
    idle_fired: bool,
    idle_armed: bool,
    drops: DropCounters,
    /// The stable checkpoint h.
    stable: StableCheckpoint,
    /// Checkpoint signatures above h, by sequence.
    checkpoints: BTreeMap<Sequence, BTreeMap<ValidatorIndex, SignedCheckpoint>>,
    /// Our own state digest at each checkpoint sequence not yet stable.
    own_checkpoints: BTreeMap<Sequence, Digest>,
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
                ..DagConfig::default()
            },
        );
        Ok(Replica {
            finalizer: Finalizer::new(config.gc_depth),
            dag,
            signer,
            view: View(0),
            own_latest: None,
            own_history: HashSet::new(),
            latest_by_author: vec![None; committee.size()],
            mempool: VecDeque::new(),
            mempool_ids: HashSet::new(),
            next_proposal: Sequence(1),
            pre_prepares: BTreeMap::new(),
            prepares: VoteTracker::new(Phase::Prepare, quorum - 1),
            commits: VoteTracker::new(Phase::Commit, quorum),
            commit_sent: HashSet::new(),
            committed: BTreeMap::new(),
            idle_fired: false,
            idle_armed: false,
            drops: DropCounters::default(),
            stable: StableCheckpoint::default(),
            checkpoints: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
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
        }
    }

    /// What was dropped and why.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Transactions waiting to be put in a vertex.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// The primary of `view`: round-robin over the validator set.
    pub fn primary(&self, view: View) -> ValidatorIndex {
        let n = self.config.committee.size() as u64;
        ValidatorIndex(u16::try_from(view.0 % n).unwrap_or(0))
    }

    /// Accepted vertices by hash, for answering fetches.
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
            Input::Start => {}
            Input::Message { from, message } => self.on_message(from, message, &mut outputs),
            Input::Fetched { from, vertices } => {
                for vertex in vertices {
                    self.insert_vertex(from, vertex, &mut outputs);
                }
            }
            Input::Transactions(transactions) => self.add_transactions(transactions),
            Input::Timer(Timer::Idle) => {
                self.idle_armed = false;
                self.idle_fired = true;
            }
        }
        self.execute_committed(now, &mut outputs);
        self.maybe_build_vertex(now, &mut outputs);
        outputs
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

    fn on_message(&mut self, from: ValidatorIndex, message: Message, outputs: &mut Vec<Output>) {
        match message {
            Message::Vertex(vertex) => self.insert_vertex(from, vertex, outputs),
            Message::Vote(vote) => self.on_vote(vote, outputs),
            Message::Checkpoint(checkpoint) => self.on_checkpoint(checkpoint),
        }
    }

    fn insert_vertex(
        &mut self,
        from: ValidatorIndex,
        vertex: SignedVertex,
        outputs: &mut Vec<Output>,
    ) {
        match self.dag.insert(vertex) {
            Ok(report) => {
                if let Some(equivocation) = report.equivocation {
                    outputs.push(Output::Evidence(Evidence::Equivocation(Box::new(
                        equivocation,
                    ))));
                }
                if !report.missing.is_empty() {
                    outputs.push(Output::Fetch {
                        from,
                        hashes: report.missing.iter().map(|p| p.hash).collect(),
                    });
                }
                for hash in report.accepted {
                    self.on_accepted(&hash, outputs);
                }
            }
            Err(InsertError::UnwantedEquivocation(evidence)) => {
                outputs.push(Output::Evidence(Evidence::Equivocation(evidence)));
            }
            Err(InsertError::BelowGcRound { .. }) => {}
            Err(_) => self.drops.invalid_vertices += 1,
        }
    }

    fn on_accepted(&mut self, hash: &Digest, outputs: &mut Vec<Output>) {
        let Some(vertex) = self.dag.get(hash).cloned() else {
            return;
        };
        let body = vertex.vertex();
        let slot = &mut self.latest_by_author[body.author.as_usize()];
        if slot.is_none_or(|latest| latest.round < body.round) {
            *slot = Some(vertex.as_parent());
        }
        if let Some(proposal) = body.proposal {
            self.on_pre_prepare(&vertex, proposal, outputs);
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
    /// Still bounded: at most 2W sequences per view are held.
    fn accepts(&self, sequence: Sequence) -> bool {
        let executed = self.finalizer.last_sequence().0;
        sequence.0 > executed && sequence.0 <= self.stable.sequence.0 + 2 * self.config.window
    }

    /// Rule 3: prepare an accepted anchor of the current primary, once per (view, sequence).
    fn on_pre_prepare(
        &mut self,
        anchor: &SignedVertex,
        proposal: Proposal,
        outputs: &mut Vec<Output>,
    ) {
        let body = anchor.vertex();
        let own_round = self.own_latest.as_ref().map_or(0, |v| v.vertex().round.0);
        let stale = body.round.0 + self.config.max_anchor_lag < own_round;
        if proposal.view != self.view
            || body.author != self.primary(proposal.view)
            || !self.accepts(proposal.sequence)
            || self.pre_prepares.contains_key(&proposal.sequence)
            || stale
        {
            return;
        }
        self.pre_prepares.insert(proposal.sequence, anchor.hash());
        if body.author != self.config.index {
            let vote = self.sign_vote(Phase::Prepare, proposal.sequence, Some(anchor.hash()));
            self.send_vote(vote, outputs);
        }
        self.check_prepared(proposal.sequence, outputs);
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

    /// Persist before send: the signed vote is durable before it leaves; then it counts
    /// toward our own quorum like anyone else's.
    fn send_vote(&mut self, vote: SignedVote, outputs: &mut Vec<Output>) {
        let v = vote.vote();
        let key = format!("vote/{:?}/{}/{}", v.phase, v.view.0, v.sequence.0);
        let mut batch = StoreBatch::new();
        batch.put_replica_state(key.as_bytes(), &vote.to_wire());
        outputs.push(Output::Persist(batch));
        outputs.push(Output::Broadcast(Message::Vote(vote.clone())));
        self.on_vote(vote, outputs);
    }

    fn on_vote(&mut self, vote: SignedVote, outputs: &mut Vec<Output>) {
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
                outputs.push(Output::Evidence(Evidence::DoubleVote(evidence)));
            }
            VoteOutcome::Duplicate => {}
            VoteOutcome::Counted(_) | VoteOutcome::QuorumReached(_) => match phase {
                Phase::Prepare => self.check_prepared(sequence, outputs),
                Phase::Commit => self.check_committed(sequence, outputs),
            },
        }
    }

    /// Rule 4: prepared = our pre-prepare + 2f matching prepares -> send a commit.
    fn check_prepared(&mut self, sequence: Sequence, outputs: &mut Vec<Output>) {
        let Some(digest) = self.pre_prepares.get(&sequence).copied() else {
            return;
        };
        if self.commit_sent.contains(&sequence)
            || self.prepares.count(self.view, sequence, Some(&digest))
                < self.config.committee.quorum() - 1
        {
            return;
        }
        self.commit_sent.insert(sequence);
        let vote = self.sign_vote(Phase::Commit, sequence, Some(digest));
        self.send_vote(vote, outputs);
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
        self.committed.insert(sequence, digest);
        if let Some(anchor) = digest.filter(|d| !self.dag.contains(d)) {
            if let Some(voter) = self
                .commits
                .votes_for(self.view, sequence, Some(&anchor))
                .first()
            {
                outputs.push(Output::Fetch {
                    from: voter.vote().voter,
                    hashes: vec![anchor],
                });
            }
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
            self.committed.remove(&next);
            self.pre_prepares.remove(&next);
            self.commit_sent.remove(&next);
            self.prepares.release_through(next);
            self.commits.release_through(next);
            let mut batch = StoreBatch::new();
            batch.append_finalized(entry.clone());
            outputs.push(Output::Persist(batch));
            let checkpoint_due = next.0 % self.config.checkpoint_interval == 0;
            let state_digest = entry.state_digest;
            outputs.push(Output::Finalized(entry));
            if checkpoint_due {
                self.send_checkpoint(next, state_digest, outputs);
            }
            let report = self.dag.set_gc_round(self.finalizer.gc_round());
            for hash in report.accepted {
                self.on_accepted(&hash, outputs);
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
        if let Some(previous) = next_round.previous() {
            let authors = self.dag.round_vertices(previous);
            let mut distinct: Vec<ValidatorIndex> =
                authors.iter().map(|v| v.vertex().author).collect();
            distinct.dedup();
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
        self.primary(self.view) == self.config.index
            && self.in_window(self.next_proposal)
            && !self.nothing_to_anchor()
    }

    /// True when no accepted vertex outside the finalized set carries transactions: the
    /// primary then has nothing to anchor.
    fn nothing_to_anchor(&self) -> bool {
        self.latest_by_author.iter().flatten().all(|p| {
            self.finalizer.is_finalized(&p.hash)
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
            let mut in_previous: BTreeMap<ValidatorIndex, ParentRef> = BTreeMap::new();
            for vertex in self.dag.round_vertices(previous) {
                in_previous
                    .entry(vertex.vertex().author)
                    .or_insert_with(|| vertex.as_parent());
            }
            for author in self.config.committee.indices().filter(|a| *a != index) {
                // The author's vertex of the previous round; otherwise its latest older
                // vertex that our history does not reach yet (a slow validator).
                let older = self.latest_by_author[author.as_usize()].filter(|latest| {
                    latest.round < previous
                        && latest.round >= lowest
                        && !self.own_history.contains(&latest.hash)
                });
                if let Some(parent) = in_previous.get(&author).copied().or(older) {
                    parents.push(parent);
                }
            }
        }
        let created_at = parents
            .iter()
            .filter_map(|p| self.dag.get(&p.hash))
            .map(|v| v.vertex().created_at)
            .fold(now, TimestampMs::max);
        let proposal =
            (self.primary(self.view) == index && self.in_window(self.next_proposal) && round.0 > 0)
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
        if let Err(error) = signed
            .vertex()
            .check_structure(&self.config.committee, &self.config.limits)
        {
            debug_assert!(false, "built an invalid vertex: {error}");
            return;
        }
        if proposal.is_some() {
            self.next_proposal = self.next_proposal.next();
        }
        // Persist before send: the own vertex is durable before anyone can see it, so a
        // restarted replica never signs a second vertex for this round.
        let mut batch = StoreBatch::new();
        batch.put_vertex(signed.clone());
        batch.put_replica_state(b"own/latest", signed.hash().as_bytes());
        outputs.push(Output::Persist(batch));
        outputs.push(Output::Broadcast(Message::Vertex(signed.clone())));
        self.add_to_own_history(&signed);
        self.own_latest = Some(signed.clone());
        self.idle_fired = false;
        self.insert_vertex(index, signed, outputs);
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
        self.own_checkpoints.insert(sequence, state_digest);
        let mut batch = StoreBatch::new();
        batch.put_replica_state(
            format!("checkpoint/{}", sequence.0).as_bytes(),
            &checkpoint.checkpoint().encode(),
        );
        outputs.push(Output::Persist(batch));
        outputs.push(Output::Broadcast(Message::Checkpoint(checkpoint.clone())));
        self.on_checkpoint(checkpoint);
    }

    /// Collects checkpoint signatures for sequences in (h, h + W + K]; 2f + 1 matching
    /// make the sequence stable. Anything further ahead is dropped, not buffered.
    fn on_checkpoint(&mut self, signed: SignedCheckpoint) {
        let checkpoint = signed.checkpoint();
        let (sequence, signer, digest) = (
            checkpoint.sequence,
            checkpoint.signer,
            checkpoint.state_digest,
        );
        let horizon = self.stable.sequence.0 + self.config.window + self.config.checkpoint_interval;
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
        // replica diverged, which must never happen.
        if let Some(own) = self.own_checkpoints.get(&sequence) {
            assert_eq!(
                *own, digest,
                "state diverged from a checkpoint quorum at {sequence}"
            );
        }
        self.stable = StableCheckpoint {
            sequence,
            state_digest: digest,
            certificate: matching,
        };
        self.checkpoints = self.checkpoints.split_off(&sequence.next());
        self.own_checkpoints = self.own_checkpoints.split_off(&sequence.next());
        // A replica behind the checkpoint still needs the votes of what it has not
        // executed (state sync for replicas further behind comes with recovery).
        let released = sequence.min(self.finalizer.last_sequence());
        self.prepares.release_through(released);
        self.commits.release_through(released);
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
}
