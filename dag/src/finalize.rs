//! Execution: turning a committed anchor into a finalized entry, deterministically.
//!
//! Sequence s with anchor a finalizes exactly the vertices of a's causal history that are
//! at round >= G_s and not in the **finalized set**, ordered by (round, author rotated by
//! s, hash). G_s = max over t <= s of round(anchor_t) - D is the GC round: it depends only
//! on the committed log, so every replica computes the same one.
//!
//! Why an exact set of hashes and not a per-author frontier ("author a is final up to
//! round r"): an equivocator's two versions of one slot can be finalized in different
//! sequences (each anchor reaches one of them). A frontier would mark the slot final
//! after the first and silently skip the second on some replicas but not on others,
//! depending on which version each replica saw first. The exact set has no such
//! ambiguity: a hash is final or it is not.
//!
//! Transactions are deduplicated: the first occurrence wins, later copies (a client sent
//! the same transaction to two validators, or an author re-proposed one that fell below
//! G) are skipped. The dedup set stays bounded because every transaction carries an
//! expiry its id covers. Each entry has a **consensus time** T_s, the highest `created_at`
//! of the anchors executed so far (monotone, a function of the committed log). Entry s
//! finalizes a transaction only if T_s <= expires_at <= T_s + MAX_TTL_MS; afterwards its id
//! is remembered only while expires_at >= T, since a copy arriving later would be expired
//! anyway. So a transaction is finalized at most once, ever, and at most MAX_TTL_MS of
//! ids are remembered.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use weft_crypto::Digest;

use crate::graph::{Dag, HistoryError};
use crate::{Round, Sequence, SignedVertex, TimestampMs, TxId, MAX_TTL_MS};

/// Where a finalized transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLocation {
    /// The sequence that finalized it.
    pub sequence: Sequence,
    /// The vertex that carried it (the first occurrence).
    pub vertex: Digest,
    /// Its index among that vertex's transactions.
    pub position: u32,
}

/// A transaction finalized by an entry, in final order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizedTransaction {
    /// The transaction.
    pub id: TxId,
    /// The vertex that carried it.
    pub vertex: Digest,
    /// Its index among that vertex's transactions.
    pub position: u32,
    /// Its expiry (covered by its id): the dedup set forgets it once consensus time
    /// passes this.
    pub expires_at: TimestampMs,
}

/// One entry of the finalized log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizedEntry {
    /// Its position in the log, from 1.
    pub sequence: Sequence,
    /// The committed anchor, or `None` for a null sequence (which finalizes nothing).
    pub anchor: Option<Digest>,
    /// The vertices finalized, in final order.
    pub vertices: Vec<Digest>,
    /// The transactions finalized, deduplicated, in final order.
    pub transactions: Vec<FinalizedTransaction>,
    /// T_s: the highest `created_at` of the anchors executed up to this entry.
    pub consensus_time: TimestampMs,
    /// Chains the previous entry's digest with this entry's content.
    pub state_digest: Digest,
    /// When this replica finalized it (wall clock, or simulated time). Not part of the
    /// digest: replicas finalize at different moments.
    pub finalized_unix_ms: u64,
}

impl FinalizedEntry {
    /// The digest this entry must carry, given the previous entry's digest.
    pub fn chained_digest(&self, previous: &Digest) -> Digest {
        chain_digest(
            previous,
            self.sequence,
            self.anchor.as_ref(),
            self.consensus_time,
            &self.vertices,
            &self.transactions,
        )
    }
}

/// What a replica persists with every few finalized entries so that restart reads that
/// record, the dedup window and the tail above it, never the whole log (see
/// `Finalizer::restore_from_snapshot`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizerSnapshot {
    /// S: the last executed sequence when it was taken.
    pub sequence: Sequence,
    /// The chained digest after S.
    pub state_digest: Digest,
    /// The highest committed anchor round up to S (G follows from it).
    pub highest_anchor_round: Option<Round>,
    /// T_S.
    pub consensus_time: TimestampMs,
    /// The finalized set at or above the GC round after S (older hashes are never
    /// looked at again), by round.
    pub finalized_vertices: Vec<(Round, Digest)>,
}

impl FinalizerSnapshot {
    /// The oldest consensus time whose entries may hold an id the dedup set still
    /// remembers at S: T_S - MAX_TTL_MS.
    pub fn dedup_window_start(&self) -> TimestampMs {
        TimestampMs(self.consensus_time.0.saturating_sub(MAX_TTL_MS))
    }
}

/// `blake3("weft/state/v3" || previous || sequence || anchor || consensus time || vertices
/// || transactions)`,
/// with fixed-width fields and counts so the concatenation is unambiguous. It covers the
/// finalized set (through the vertex hashes), the dedup set (through the tx ids, which
/// cover each expiry, and the consensus time, which decides what is forgotten) and where
/// each transaction is (its vertex and position): a peer that serves an entry cannot move
/// a transaction without changing the digest.
pub fn chain_digest(
    previous: &Digest,
    sequence: Sequence,
    anchor: Option<&Digest>,
    consensus_time: TimestampMs,
    vertices: &[Digest],
    transactions: &[FinalizedTransaction],
) -> Digest {
    let mut hasher_input = Vec::with_capacity(64 + 32 * vertices.len() + 68 * transactions.len());
    hasher_input.extend_from_slice(b"weft/state/v3");
    hasher_input.extend_from_slice(previous.as_bytes());
    hasher_input.extend_from_slice(&sequence.0.to_le_bytes());
    match anchor {
        None => hasher_input.push(0),
        Some(anchor) => {
            hasher_input.push(1);
            hasher_input.extend_from_slice(anchor.as_bytes());
        }
    }
    hasher_input.extend_from_slice(&consensus_time.0.to_le_bytes());
    hasher_input.extend_from_slice(&(vertices.len() as u64).to_le_bytes());
    for vertex in vertices {
        hasher_input.extend_from_slice(vertex.as_bytes());
    }
    hasher_input.extend_from_slice(&(transactions.len() as u64).to_le_bytes());
    for transaction in transactions {
        hasher_input.extend_from_slice(transaction.id.0.as_bytes());
        hasher_input.extend_from_slice(transaction.vertex.as_bytes());
        hasher_input.extend_from_slice(&transaction.position.to_le_bytes());
    }
    Digest::of(&hasher_input)
}

/// The order of one sequence: (round, author rotated by the sequence, hash). Rotating
/// the author lets every validator's vertices go first in turn.
pub fn order_vertices(vertices: &mut [&SignedVertex], sequence: Sequence, validators: usize) {
    let n = validators as u64;
    let shift = sequence.0 % n;
    vertices.sort_by_key(|v| {
        let body = v.vertex();
        let rotated = (u64::from(body.author.0) + n - shift) % n;
        (body.round, rotated, v.hash())
    });
}

/// Why a sequence could not be executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    /// Sequences execute strictly in order.
    #[error("sequence {got} executed out of order; next is {expected}")]
    OutOfOrder {
        /// The next sequence.
        expected: Sequence,
        /// What was given.
        got: Sequence,
    },
    /// The anchor's history is incomplete or released.
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// The execution state: the exact finalized set, the dedup set and the chain head.
/// Deterministic: two replicas that execute the same anchors over DAGs holding the same
/// histories produce identical entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finalizer {
    gc_depth: u64,
    last_sequence: Sequence,
    state_digest: Digest,
    highest_anchor_round: Option<Round>,
    /// Finalized vertices at or above the GC round, by round so they can be released.
    finalized_vertices: BTreeMap<Round, HashSet<Digest>>,
    finalized_index: HashSet<Digest>,
    /// T after the last executed sequence.
    consensus_time: TimestampMs,
    /// The dedup set: finalized ids whose expiry is not below T, with their expiry...
    finalized_transactions: HashMap<TxId, TimestampMs>,
    /// ...and the same ids by expiry, to forget them once T passes it.
    by_expiry: BTreeMap<TimestampMs, Vec<TxId>>,
    /// A deliberately wrong rule for the simulator's mutant test: "finalized" means at or
    /// below the author's highest finalized round (a per-author frontier) instead of in
    /// the exact set. Never set outside that test.
    per_author_frontier: Option<BTreeMap<crate::ValidatorIndex, Round>>,
}

impl Finalizer {
    /// A fresh log; `gc_depth` is D, the protocol's GC depth in rounds.
    pub fn new(gc_depth: u64) -> Finalizer {
        Finalizer {
            gc_depth,
            ..Finalizer::default()
        }
    }

    /// Rebuilds the execution state from a finalized log read back from the store, in
    /// sequence order from 1; `round_of` gives the round of a finalized vertex (from the
    /// store's vertices). Costs one pass over the log.
    pub fn restore(
        gc_depth: u64,
        entries: impl IntoIterator<Item = FinalizedEntry>,
        round_of: impl Fn(&Digest) -> Option<Round>,
    ) -> Result<Finalizer, ExecuteError> {
        let mut finalizer = Finalizer::new(gc_depth);
        finalizer.replay(entries, round_of)?;
        Ok(finalizer)
    }

    /// Applies entries read back from the store, in sequence order from the next one.
    fn replay(
        &mut self,
        entries: impl IntoIterator<Item = FinalizedEntry>,
        round_of: impl Fn(&Digest) -> Option<Round>,
    ) -> Result<(), ExecuteError> {
        let finalizer = self;
        for entry in entries {
            let expected = finalizer.last_sequence.next();
            if entry.sequence != expected {
                return Err(ExecuteError::OutOfOrder {
                    expected,
                    got: entry.sequence,
                });
            }
            if let Some(anchor) = &entry.anchor {
                let round = round_of(anchor).ok_or(HistoryError::Missing(*anchor))?;
                finalizer.highest_anchor_round = Some(
                    finalizer
                        .highest_anchor_round
                        .map_or(round, |h| h.max(round)),
                );
            }
            for hash in &entry.vertices {
                let round = round_of(hash).ok_or(HistoryError::Missing(*hash))?;
                finalizer
                    .finalized_vertices
                    .entry(round)
                    .or_default()
                    .insert(*hash);
                finalizer.finalized_index.insert(*hash);
            }
            finalizer.remember(&entry.transactions);
            finalizer.consensus_time = entry.consensus_time;
            finalizer.forget_expired();
            finalizer.last_sequence = entry.sequence;
            finalizer.state_digest = entry.state_digest;
            finalizer.release_below(finalizer.gc_round());
        }
        Ok(())
    }

    /// The state after the last executed sequence that the log's tail and the dedup
    /// window cannot give back cheaply: what `restore_from_snapshot` starts from.
    pub fn snapshot(&self) -> FinalizerSnapshot {
        FinalizerSnapshot {
            sequence: self.last_sequence,
            state_digest: self.state_digest,
            highest_anchor_round: self.highest_anchor_round,
            consensus_time: self.consensus_time,
            finalized_vertices: self
                .finalized_vertices
                .iter()
                .flat_map(|(round, hashes)| {
                    let mut hashes: Vec<Digest> = hashes.iter().copied().collect();
                    hashes.sort();
                    hashes.into_iter().map(|h| (*round, h))
                })
                .collect(),
        }
    }

    /// Rebuilds the execution state from a snapshot taken at sequence S, in time
    /// independent of the log's length:
    /// - `window`: the entries at or below S whose consensus time is at least
    ///   `snapshot.dedup_window_start()`, in sequence order (older ones are accepted and
    ///   change nothing). Only their transactions are read: they rebuild the dedup set.
    /// - `tail`: the entries above S, in sequence order from S + 1, executed as
    ///   `restore` does; `round_of` gives the rounds of their vertices.
    ///
    /// Why the window suffices: an entry at time T finalizes only ids expiring by
    /// T + MAX_TTL_MS, and the dedup set at S holds exactly the finalized ids expiring at
    /// or after T_S; an entry older than T_S - MAX_TTL_MS holds none of them.
    pub fn restore_from_snapshot(
        gc_depth: u64,
        snapshot: FinalizerSnapshot,
        window: impl IntoIterator<Item = FinalizedEntry>,
        tail: impl IntoIterator<Item = FinalizedEntry>,
        round_of: impl Fn(&Digest) -> Option<Round>,
    ) -> Result<Finalizer, ExecuteError> {
        let mut finalizer = Finalizer::new(gc_depth);
        for entry in window {
            if entry.sequence > snapshot.sequence {
                return Err(ExecuteError::OutOfOrder {
                    expected: snapshot.sequence,
                    got: entry.sequence,
                });
            }
            finalizer.remember(&entry.transactions);
            finalizer.consensus_time = finalizer.consensus_time.max(entry.consensus_time);
            finalizer.forget_expired();
        }
        finalizer.consensus_time = snapshot.consensus_time;
        finalizer.forget_expired();
        finalizer.last_sequence = snapshot.sequence;
        finalizer.state_digest = snapshot.state_digest;
        finalizer.highest_anchor_round = snapshot.highest_anchor_round;
        for (round, hash) in snapshot.finalized_vertices {
            finalizer
                .finalized_vertices
                .entry(round)
                .or_default()
                .insert(hash);
            finalizer.finalized_index.insert(hash);
        }
        finalizer.release_below(finalizer.gc_round());
        finalizer.replay(tail, round_of)?;
        Ok(finalizer)
    }

    #[doc(hidden)]
    /// Mutant for the simulator's checker test only: see `per_author_frontier`.
    pub fn use_per_author_frontier_mutant(&mut self) {
        self.per_author_frontier = Some(BTreeMap::new());
    }

    /// The last executed sequence (0 before the first).
    pub fn last_sequence(&self) -> Sequence {
        self.last_sequence
    }

    /// The chained digest after the last executed sequence.
    pub fn state_digest(&self) -> Digest {
        self.state_digest
    }

    /// G, the GC round after the last executed sequence.
    pub fn gc_round(&self) -> Round {
        self.gc_round_below(self.highest_anchor_round)
    }

    /// G for a given highest committed anchor round: that round minus D.
    fn gc_round_below(&self, highest_anchor_round: Option<Round>) -> Round {
        highest_anchor_round.map_or(Round(0), |r| Round(r.0.saturating_sub(self.gc_depth)))
    }

    /// True when `hash` is in the finalized set.
    pub fn is_finalized(&self, hash: &Digest) -> bool {
        self.finalized_index.contains(hash)
    }

    /// True when the transaction was finalized and its expiry has not passed (once it
    /// has, the id is forgotten: no later entry can finalize it).
    pub fn is_transaction_finalized(&self, id: &TxId) -> bool {
        self.finalized_transactions.contains_key(id)
    }

    /// T: the consensus time after the last executed sequence.
    pub fn consensus_time(&self) -> TimestampMs {
        self.consensus_time
    }

    /// Ids in the dedup set (for memory accounting).
    pub fn remembered_transactions(&self) -> usize {
        self.finalized_transactions.len()
    }

    /// True when an entry at consensus time `time` may finalize a transaction expiring
    /// at `expires_at`: not expired, and not further ahead than the dedup window.
    pub fn within_validity(time: TimestampMs, expires_at: TimestampMs) -> bool {
        expires_at >= time && expires_at.0 <= time.0.saturating_add(MAX_TTL_MS)
    }

    fn remember(&mut self, transactions: &[FinalizedTransaction]) {
        for transaction in transactions {
            if self
                .finalized_transactions
                .insert(transaction.id, transaction.expires_at)
                .is_none()
            {
                self.by_expiry
                    .entry(transaction.expires_at)
                    .or_default()
                    .push(transaction.id);
            }
        }
    }

    /// Forgets ids whose expiry is below T.
    fn forget_expired(&mut self) {
        let kept = self.by_expiry.split_off(&self.consensus_time);
        for ids in std::mem::replace(&mut self.by_expiry, kept).into_values() {
            for id in ids {
                self.finalized_transactions.remove(&id);
            }
        }
    }

    /// Executes `sequence` with `anchor` (or a null sequence) over `dag`, at wall time
    /// `now_unix_ms`. On error nothing changes.
    pub fn execute(
        &mut self,
        dag: &Dag,
        sequence: Sequence,
        anchor: Option<Digest>,
        now_unix_ms: u64,
    ) -> Result<FinalizedEntry, ExecuteError> {
        let expected = self.last_sequence.next();
        if sequence != expected {
            return Err(ExecuteError::OutOfOrder {
                expected,
                got: sequence,
            });
        }
        let mut highest = self.highest_anchor_round;
        let mut ordered: Vec<&SignedVertex> = Vec::new();
        let mut time = self.consensus_time;
        if let Some(anchor_hash) = anchor {
            let anchor_vertex = dag
                .get(&anchor_hash)
                .ok_or(HistoryError::Missing(anchor_hash))?;
            time = time.max(anchor_vertex.vertex().created_at);
            let anchor_round = anchor_vertex.vertex().round;
            highest = Some(highest.map_or(anchor_round, |h| h.max(anchor_round)));
            let gc_round = self.gc_round_below(highest);
            ordered = match &self.per_author_frontier {
                None => {
                    dag.unfinalized_history(&anchor_hash, gc_round, &|h| self.is_finalized(h))?
                }
                Some(frontier) => dag.unfinalized_history(&anchor_hash, gc_round, &|h| {
                    dag.get(h).is_some_and(|v| {
                        frontier
                            .get(&v.vertex().author)
                            .is_some_and(|r| v.vertex().round <= *r)
                    })
                })?,
            };
            order_vertices(&mut ordered, sequence, dag.committee().size());
        }
        let mut transactions = Vec::new();
        let mut seen_in_entry = HashSet::new();
        for vertex in &ordered {
            for (position, transaction) in vertex.vertex().transactions.iter().enumerate() {
                let id = transaction.id();
                if !Finalizer::within_validity(time, transaction.expires_at())
                    || self.finalized_transactions.contains_key(&id)
                    || !seen_in_entry.insert(id)
                {
                    continue;
                }
                transactions.push(FinalizedTransaction {
                    id,
                    vertex: vertex.hash(),
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                    expires_at: transaction.expires_at(),
                });
            }
        }
        let vertices: Vec<Digest> = ordered.iter().map(|v| v.hash()).collect();
        let state_digest = chain_digest(
            &self.state_digest,
            sequence,
            anchor.as_ref(),
            time,
            &vertices,
            &transactions,
        );
        // Commit the new state.
        for vertex in &ordered {
            self.finalized_vertices
                .entry(vertex.vertex().round)
                .or_default()
                .insert(vertex.hash());
            self.finalized_index.insert(vertex.hash());
            if let Some(frontier) = &mut self.per_author_frontier {
                let top = frontier.entry(vertex.vertex().author).or_insert(Round(0));
                *top = (*top).max(vertex.vertex().round);
            }
        }
        self.remember(&transactions);
        self.consensus_time = time;
        self.forget_expired();
        self.highest_anchor_round = highest;
        self.last_sequence = sequence;
        self.state_digest = state_digest;
        self.release_below(self.gc_round());
        Ok(FinalizedEntry {
            sequence,
            anchor,
            vertices,
            transactions,
            consensus_time: time,
            state_digest,
            finalized_unix_ms: now_unix_ms,
        })
    }

    /// Forgets finalized hashes below the GC round: linearization never looks there.
    fn release_below(&mut self, gc_round: Round) {
        let kept = self.finalized_vertices.split_off(&gc_round);
        for hash in std::mem::replace(&mut self.finalized_vertices, kept)
            .into_values()
            .flatten()
        {
            self.finalized_index.remove(&hash);
        }
    }
}
