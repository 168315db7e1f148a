//! What goes in and out of [`super::Replica::handle`]: inputs, outputs (carried out in
//! order: a `Persist` is durable before any later output), timers, evidence, and the
//! counters and sizes a host reads.

use weft_crypto::Digest;
use weft_dag::store::StoreBatch;
use weft_dag::{FinalizedEntry, Sequence, SignedVertex, Transaction, ValidatorIndex};

use crate::messages::{Message, SignedCheckpoint, SignedVote};
use crate::view_change::SignedNewView;

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
    /// Two pre-prepares of one primary that cannot both stand: two anchors for one
    /// (view, sequence), an anchor for a sequence its NewView decided, or anchor rounds
    /// that do not increase with the sequence.
    ConflictingPrePrepares(Box<ConflictingPrePrepares>),
    /// A prepare signed by the primary of its own view (the primary only pre-prepares).
    PrimaryPrepare(Box<SignedVote>),
}

/// A signed pre-prepare: the primary's vertex carrying a proposal, or the NewView that
/// decided the sequence.
#[derive(Clone, Debug)]
pub enum PrePrepareProof {
    /// A vertex with `proposal: Some((view, sequence))`.
    Vertex(SignedVertex),
    /// The view's NewView, which decided `sequence`.
    NewView {
        /// The signed NewView.
        new_view: SignedNewView,
        /// The sequence it decided.
        sequence: Sequence,
    },
}

impl PrePrepareProof {
    /// Who signed it.
    pub fn signer(&self) -> ValidatorIndex {
        match self {
            PrePrepareProof::Vertex(vertex) => vertex.vertex().author,
            PrePrepareProof::NewView { new_view, .. } => new_view.body().primary,
        }
    }
}

/// Two pre-prepares by one primary in one view that contradict each other.
#[derive(Clone, Debug)]
pub struct ConflictingPrePrepares {
    /// The one taken first.
    pub first: PrePrepareProof,
    /// The contradicting vertex.
    pub second: SignedVertex,
}

impl Evidence {
    /// The validator the evidence proves faulty.
    pub fn culprit(&self) -> ValidatorIndex {
        match self {
            Evidence::Equivocation(e) => e.author(),
            Evidence::DoubleVote(d) => d.first.vote().voter,
            Evidence::ConflictingPrePrepares(c) => c.second.vertex().author,
            Evidence::PrimaryPrepare(vote) => vote.vote().voter,
        }
    }

    /// Every [`Evidence::kind`], for metrics that list each kind from start-up.
    pub const KINDS: [&'static str; 4] = ["vertex", "vote", "pre_prepare", "primary_prepare"];

    /// A short name for logs and metrics (one of [`Evidence::KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::Equivocation(_) => Self::KINDS[0],
            Evidence::DoubleVote(_) => Self::KINDS[1],
            Evidence::ConflictingPrePrepares(_) => Self::KINDS[2],
            Evidence::PrimaryPrepare(_) => Self::KINDS[3],
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
    /// Votes no honest validator signs (a prepare by the view's primary).
    pub invalid_votes: u64,
    /// View changes, new views and certificates that do not check out.
    pub invalid_view_messages: u64,
    /// Mempool full.
    pub mempool_full: u64,
    /// Transactions offered already expired, or expiring more than `MAX_TTL_MS` ahead of
    /// our clock, and mempool transactions that expired before they were batched.
    pub expired_transactions: u64,
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
