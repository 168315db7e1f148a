//! The in-memory DAG: accepted vertices, vertices waiting for ancestors, equivocation
//! evidence, and the causal history an anchor finalizes.
//!
//! Rules enforced here, each with the fork or stall it prevents:
//!
//! - **A vertex is accepted only once every ancestor at or above the GC round is held.**
//!   Linearizing an anchor walks its history; a replica missing part of it would
//!   finalize a different set than its peers.
//! - **Parents below the GC round count as held.** Nothing below the GC round is
//!   finalized again, so fetching it would only cost memory; the GC round passed in is
//!   deterministic (derived from committed anchors), so replicas agree on what it hides.
//! - **A second vertex for the same (author, round) is equivocation.** The first is kept
//!   with the evidence (both signed vertices). A further version is taken only when it is
//!   wanted, that is, when a vertex we hold or wait on references it: an accepted vertex
//!   makes its whole history final, so every version it references must be held, and the
//!   exact finalized set (not a per-author frontier) keeps the order deterministic.
//! - **Waiting vertices are bounded per author**, so a flood of vertices whose parents
//!   never arrive cannot grow memory without limit. At the bound, a vertex something
//!   needs displaces one of the author's waiting vertices that nothing needs, so an
//!   author's made-up vertices cannot keep out its real ones that honest vertices
//!   reference.

use std::collections::{BTreeMap, HashMap, HashSet};

use weft_crypto::Digest;

use crate::vertex::{Limits, ParentRef, SignedVertex, VertexError};
use crate::{Committee, Round, ValidatorIndex};

/// Bounds of the in-memory DAG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DagConfig {
    /// Vertex limits checked at insert.
    pub limits: Limits,
    /// Most vertices of one author waiting for ancestors.
    pub max_pending_per_author: usize,
    #[doc(hidden)]
    /// The waiting buffer as it was before the long run found its stall (the consensus
    /// simulator's `Mutant::RefuseNeededAtCap`): at an author's cap, a vertex that a
    /// held or waiting vertex needs is refused unless it is below that author's highest
    /// waiting vertex. Always false in a node.
    pub refuse_needed_at_cap: bool,
    #[doc(hidden)]
    /// The wanted set as it was before the long run found its stall (the consensus
    /// simulator's `Mutant::StaleWants`): hashes stay after they arrive and, at the
    /// bound, the smallest hash goes, not the oldest wish. Always false in a node.
    pub stale_wants: bool,
}

impl Default for DagConfig {
    fn default() -> DagConfig {
        DagConfig {
            limits: Limits::default(),
            max_pending_per_author: 1_000,
            refuse_needed_at_cap: false,
            stale_wants: false,
        }
    }
}

/// Proof that a validator signed two different vertices for one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivocation {
    /// The version held first.
    pub first: SignedVertex,
    /// The conflicting version.
    pub second: SignedVertex,
}

impl Equivocation {
    /// The validator proven faulty.
    pub fn author(&self) -> ValidatorIndex {
        self.first.vertex().author
    }

    /// The round of the two versions.
    pub fn round(&self) -> Round {
        self.first.vertex().round
    }
}

/// What an insert did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InsertReport {
    /// Vertices that became accepted (this one and descendants that were waiting for
    /// it), parents always before children.
    pub accepted: Vec<Digest>,
    /// Parents that are neither held nor waiting: fetch these.
    pub missing: Vec<ParentRef>,
    /// Set when the vertex conflicts with one held for the same (author, round).
    pub equivocation: Option<Equivocation>,
    /// Waiting descendants found invalid once their parents arrived.
    pub rejected: Vec<(Digest, VertexError)>,
    /// True when the vertex was already held (accepted or waiting): nothing changed.
    pub duplicate: bool,
}

/// Why a vertex was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// The vertex breaks a validity rule. Permanent.
    #[error(transparent)]
    Invalid(#[from] VertexError),
    /// Below the GC round: it can never be finalized, so it is not kept.
    #[error("vertex round {round} is below the GC round {gc_round}")]
    BelowGcRound {
        /// The vertex's round.
        round: Round,
        /// The DAG's GC round.
        gc_round: Round,
    },
    /// Too many vertices of this author are waiting for ancestors. Transient.
    #[error("validator {0} has too many vertices waiting for ancestors")]
    PendingFull(ValidatorIndex),
    /// An unrequested second version of a slot: kept only as evidence.
    #[error("equivocating vertex not referenced by anything held; kept as evidence only")]
    UnwantedEquivocation(Box<Equivocation>),
}

#[derive(Debug)]
struct Waiting {
    vertex: SignedVertex,
    missing: HashSet<Digest>,
}

/// The DAG of one replica.
#[derive(Debug)]
pub struct Dag {
    committee: Committee,
    config: DagConfig,
    gc_round: Round,
    accepted: HashMap<Digest, SignedVertex>,
    waiting: HashMap<Digest, Waiting>,
    /// Missing hash -> waiting vertices that need it.
    wanted_by: HashMap<Digest, Vec<Digest>>,
    /// Versions the caller asked for by hash (an anchor that consensus designated), taken
    /// even when they equivocate with a version already held, with the number of the
    /// wish. Only wishes not yet fulfilled: a hash leaves when its vertex is accepted.
    wanted: HashMap<Digest, u64>,
    /// The same wishes by number, oldest first: at the bound the oldest goes.
    wishes: BTreeMap<u64, Digest>,
    /// The number of the next wish.
    next_wish: u64,
    /// (round, author) -> hashes held there, accepted or waiting (two or more only when
    /// the author equivocated).
    slots: BTreeMap<(Round, ValidatorIndex), Vec<Digest>>,
    waiting_per_author: Vec<usize>,
    evidence: BTreeMap<(Round, ValidatorIndex), Equivocation>,
}

impl Dag {
    /// An empty DAG for `committee`.
    pub fn new(committee: Committee, config: DagConfig) -> Dag {
        let size = committee.size();
        Dag {
            committee,
            config,
            gc_round: Round(0),
            accepted: HashMap::new(),
            waiting: HashMap::new(),
            wanted_by: HashMap::new(),
            wanted: HashMap::new(),
            wishes: BTreeMap::new(),
            next_wish: 0,
            slots: BTreeMap::new(),
            waiting_per_author: vec![0; size],
            evidence: BTreeMap::new(),
        }
    }

    /// The validator set.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// Vertices below this round are released and never needed again.
    pub fn gc_round(&self) -> Round {
        self.gc_round
    }

    /// An accepted vertex.
    pub fn get(&self, hash: &Digest) -> Option<&SignedVertex> {
        self.accepted.get(hash)
    }

    /// True when the vertex is accepted.
    pub fn contains(&self, hash: &Digest) -> bool {
        self.accepted.contains_key(hash)
    }

    /// Number of accepted vertices.
    pub fn len(&self) -> usize {
        self.accepted.len()
    }

    /// True when nothing is accepted.
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty()
    }

    /// Number of vertices waiting for ancestors.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Hashes that waiting vertices need and nobody holds yet.
    pub fn missing(&self) -> Vec<Digest> {
        let mut missing: Vec<Digest> = self
            .wanted_by
            .keys()
            .filter(|hash| !self.waiting.contains_key(*hash))
            .copied()
            .collect();
        missing.sort_unstable();
        missing
    }

    /// Missing parents grouped by the author of a waiting vertex that names them (the
    /// validator that holds them if it is honest: it referenced them), each group in the
    /// order of its children's rounds (ancestors first), at most `limit` per author.
    pub fn missing_by_child_author(&self, limit: usize) -> BTreeMap<ValidatorIndex, Vec<Digest>> {
        let mut named: Vec<(ValidatorIndex, Round, Digest)> = Vec::new();
        for waiting in self.waiting.values() {
            let body = waiting.vertex.vertex();
            for parent in &waiting.missing {
                if !self.waiting.contains_key(parent) {
                    named.push((body.author, body.round, *parent));
                }
            }
        }
        named.sort_unstable();
        let mut by_author: BTreeMap<ValidatorIndex, Vec<Digest>> = BTreeMap::new();
        for (author, _, parent) in named {
            let list = by_author.entry(author).or_default();
            if list.len() < limit && !list.contains(&parent) {
                list.push(parent);
            }
        }
        by_author
    }

    /// Equivocation evidence recorded so far, one per (round, author).
    pub fn evidence(&self) -> impl Iterator<Item = &Equivocation> {
        self.evidence.values()
    }

    /// Accepted vertices of `round`, by author then hash.
    pub fn round_vertices(&self, round: Round) -> Vec<&SignedVertex> {
        self.slots
            .range((round, ValidatorIndex(0))..=(round, ValidatorIndex(u16::MAX)))
            .flat_map(|(_, hashes)| hashes.iter().filter_map(|h| self.accepted.get(h)))
            .collect()
    }

    /// True when a vertex of `author` at `round` is accepted or waiting: another version
    /// of that slot would be an equivocation (refused unless wanted).
    pub fn holds_slot(&self, round: Round, author: ValidatorIndex) -> bool {
        self.slots
            .get(&(round, author))
            .is_some_and(|hashes| !hashes.is_empty())
    }

    /// The highest round with an accepted vertex.
    pub fn highest_round(&self) -> Option<Round> {
        self.slots
            .iter()
            .rev()
            .find(|(_, hashes)| hashes.iter().any(|h| self.accepted.contains_key(h)))
            .map(|((round, _), _)| *round)
    }

    /// Marks `hash` as wanted: when it arrives it is accepted even if it equivocates
    /// with a version already held (consensus committed or re-proposed it). At most
    /// `limit` wishes not yet fulfilled are remembered; wanting a hash again makes it
    /// the newest wish, and at the bound the oldest goes first.
    ///
    /// Found by the long run (seed 103,100,007,177): a set that kept every hash after
    /// its vertex arrived filled up with fulfilled wishes and, at the bound, dropped the
    /// smallest hash, often the wish just made. A committed anchor of a Byzantine author
    /// who had sent this replica another version of that slot was then refused on every
    /// fetch, and the replica never executed its sequence.
    pub fn want(&mut self, hash: Digest, limit: usize) {
        if self.accepted.contains_key(&hash) {
            return;
        }
        if self.config.stale_wants {
            self.wanted.entry(hash).or_insert(0);
            while self.wanted.len() > limit {
                let Some(smallest) = self.wanted.keys().min().copied() else {
                    break;
                };
                self.wanted.remove(&smallest);
            }
            return;
        }
        if let Some(old) = self.wanted.remove(&hash) {
            self.wishes.remove(&old);
        }
        let number = self.next_wish;
        // 2^64 wishes are never made; were they, numbers stay unique up to there.
        self.next_wish = self.next_wish.saturating_add(1);
        self.wanted.insert(hash, number);
        self.wishes.insert(number, hash);
        while self.wanted.len() > limit {
            let Some((_, oldest)) = self.wishes.pop_first() else {
                break;
            };
            self.wanted.remove(&oldest);
        }
    }

    /// Wishes not yet fulfilled (for tests and diagnostics).
    pub fn wanted_len(&self) -> usize {
        self.wanted.len()
    }

    /// Inserts a vertex whose signature the caller has already verified. Checks every
    /// other validity rule, tracks missing ancestors, and accepts the vertex and any
    /// waiting descendants once their histories are complete.
    pub fn insert(&mut self, vertex: SignedVertex) -> Result<InsertReport, InsertError> {
        let hash = vertex.hash();
        if self.accepted.contains_key(&hash) || self.waiting.contains_key(&hash) {
            return Ok(InsertReport {
                duplicate: true,
                ..InsertReport::default()
            });
        }
        let body = vertex.vertex();
        body.check_structure(&self.committee, &self.config.limits)?;
        if body.round < self.gc_round {
            return Err(InsertError::BelowGcRound {
                round: body.round,
                gc_round: self.gc_round,
            });
        }
        let mut report = InsertReport::default();
        let slot = (body.round, body.author);
        if let Some(first) = self.slots.get(&slot).and_then(|hashes| hashes.first()) {
            let first = self
                .accepted
                .get(first)
                .or_else(|| self.waiting.get(first).map(|w| &w.vertex))
                .cloned();
            if let Some(first) = first {
                let equivocation = Equivocation {
                    first,
                    second: vertex.clone(),
                };
                self.evidence
                    .entry(slot)
                    .or_insert_with(|| equivocation.clone());
                if !self.wanted_by.contains_key(&hash) && !self.wanted.contains_key(&hash) {
                    return Err(InsertError::UnwantedEquivocation(Box::new(equivocation)));
                }
                report.equivocation = Some(equivocation);
            }
        }
        let mut missing = HashSet::new();
        for parent in &body.parents {
            if parent.round < self.gc_round {
                continue;
            }
            match self.accepted.get(&parent.hash) {
                Some(held) => check_parent(body, parent, held)?,
                None => {
                    missing.insert(parent.hash);
                    if !self.waiting.contains_key(&parent.hash) {
                        report.missing.push(*parent);
                    }
                }
            }
        }
        if missing.is_empty() {
            self.slots.entry(slot).or_default().push(hash);
            self.accept_cascade(vertex, &mut report);
        } else {
            let author = body.author.as_usize();
            if self.waiting_per_author[author] >= self.config.max_pending_per_author {
                // A vertex something needs (a held or waiting vertex references it, or
                // consensus wants it) displaces one of the author's waiting vertices that
                // nothing needs, the highest first. Found by the long run with the
                // strengthened flood (seed 116,150,001,177): a Byzantine author's made-up
                // vertices, below the rounds of its real ones, filled its share of the
                // buffer, so an honest replica could take neither its real vertices nor
                // the honest vertices that reference them, and fell out of every quorum.
                // An arrival nothing needs displaces only a higher vertex nothing needs:
                // re-pushed junk must not evict a needed vertex, whose eviction drops the
                // honest vertices waiting on it (found by the review of this rule).
                // Failing both, a needed arrival evicts the highest waiting vertex if it
                // lies below it: an ancestor that arrives while descendants fill the
                // buffer must get in, or nothing waiting could ever be accepted.
                let needs = |dag: &Dag, h: &Digest| {
                    dag.wanted_by.contains_key(h) || dag.wanted.contains_key(h)
                };
                let mut highest: Option<(Round, Digest)> = None;
                let mut highest_idle: Option<(Round, Digest)> = None;
                for (h, w) in &self.waiting {
                    if w.vertex.vertex().author != body.author {
                        continue;
                    }
                    let key = (w.vertex.vertex().round, *h);
                    highest = highest.max(Some(key));
                    if !needs(self, h) {
                        highest_idle = highest_idle.max(Some(key));
                    }
                }
                let above = |key: &(Round, Digest)| key.0 > body.round;
                let victim = if self.config.refuse_needed_at_cap {
                    highest.filter(above)
                } else if needs(self, &hash) {
                    highest_idle.or_else(|| highest.filter(above))
                } else {
                    highest_idle.filter(above)
                };
                match victim {
                    Some((_, evicted)) => self.drop_waiting(&evicted),
                    None => return Err(InsertError::PendingFull(body.author)),
                }
            }
            self.waiting_per_author[author] += 1;
            self.slots.entry(slot).or_default().push(hash);
            for parent in &missing {
                self.wanted_by.entry(*parent).or_default().push(hash);
            }
            self.waiting.insert(hash, Waiting { vertex, missing });
        }
        Ok(report)
    }

    /// Accepts `vertex`, then every waiting descendant whose last missing parent it was.
    fn accept_cascade(&mut self, vertex: SignedVertex, report: &mut InsertReport) {
        let mut ready = vec![vertex];
        while let Some(vertex) = ready.pop() {
            let hash = vertex.hash();
            report.accepted.push(hash);
            if !self.config.stale_wants {
                if let Some(number) = self.wanted.remove(&hash) {
                    self.wishes.remove(&number);
                }
            }
            self.accepted.insert(hash, vertex.clone());
            for child_hash in self.wanted_by.remove(&hash).unwrap_or_default() {
                let Some(child) = self.waiting.get_mut(&child_hash) else {
                    continue;
                };
                child.missing.remove(&hash);
                let child_vertex = child.vertex.clone();
                let parent_ref = child_vertex
                    .vertex()
                    .parents
                    .iter()
                    .find(|p| p.hash == hash)
                    .copied();
                let verdict =
                    parent_ref.map_or(Ok(()), |p| check_parent(child_vertex.vertex(), &p, &vertex));
                if let Err(error) = verdict {
                    self.drop_waiting(&child_hash);
                    report.rejected.push((child_hash, error));
                } else if child.missing.is_empty() {
                    self.remove_waiting_entry(&child_hash);
                    ready.push(child_vertex);
                }
            }
        }
    }

    fn remove_waiting_entry(&mut self, hash: &Digest) -> Option<Waiting> {
        let waiting = self.waiting.remove(hash)?;
        let author = waiting.vertex.vertex().author.as_usize();
        self.waiting_per_author[author] -= 1;
        Some(waiting)
    }

    /// Drops an invalid waiting vertex and, transitively, everything waiting on it.
    fn drop_waiting(&mut self, hash: &Digest) {
        let mut doomed = vec![*hash];
        while let Some(hash) = doomed.pop() {
            let Some(waiting) = self.remove_waiting_entry(&hash) else {
                continue;
            };
            let body = waiting.vertex.vertex();
            let slot = (body.round, body.author);
            if let Some(hashes) = self.slots.get_mut(&slot) {
                hashes.retain(|h| *h != hash);
                if hashes.is_empty() {
                    self.slots.remove(&slot);
                }
            }
            for parent in waiting.missing {
                if let Some(children) = self.wanted_by.get_mut(&parent) {
                    children.retain(|c| *c != hash);
                    if children.is_empty() {
                        self.wanted_by.remove(&parent);
                    }
                }
            }
            doomed.extend(self.wanted_by.remove(&hash).unwrap_or_default());
        }
    }

    /// Raises the GC round: releases every vertex below it, and accepts waiting vertices
    /// whose only missing parents were below it. Returns what became accepted.
    pub fn set_gc_round(&mut self, gc_round: Round) -> InsertReport {
        let mut report = InsertReport::default();
        if gc_round <= self.gc_round {
            return report;
        }
        self.gc_round = gc_round;
        let kept = self.slots.split_off(&(gc_round, ValidatorIndex(0)));
        let released = std::mem::replace(&mut self.slots, kept);
        for hash in released.into_values().flatten() {
            if self.accepted.remove(&hash).is_none() {
                self.drop_waiting(&hash);
            }
        }
        self.evidence = self.evidence.split_off(&(gc_round, ValidatorIndex(0)));
        // Waiting vertices no longer need parents below the GC round.
        // Sorted, so the order of what becomes accepted never depends on hashing.
        for parent in self.missing() {
            let children = self.wanted_by.get(&parent).cloned().unwrap_or_default();
            for child in children {
                let below = self.waiting.get(&child).is_some_and(|w| {
                    w.vertex
                        .vertex()
                        .parents
                        .iter()
                        .any(|p| p.hash == parent && p.round < gc_round)
                });
                if !below {
                    continue;
                }
                if let Some(children) = self.wanted_by.get_mut(&parent) {
                    children.retain(|c| *c != child);
                    if children.is_empty() {
                        self.wanted_by.remove(&parent);
                    }
                }
                let done = self.waiting.get_mut(&child).is_some_and(|w| {
                    w.missing.remove(&parent);
                    w.missing.is_empty()
                });
                if done {
                    if let Some(waiting) = self.remove_waiting_entry(&child) {
                        self.accept_cascade(waiting.vertex, &mut report);
                    }
                }
            }
        }
        report
    }

    /// The accepted vertices in the causal history of `anchor` (the anchor included) at
    /// or above `gc_round` and not in `finalized`. Traversal stops at finalized
    /// vertices: everything they reach at or above the (monotone) GC round is final too.
    pub fn unfinalized_history(
        &self,
        anchor: &Digest,
        gc_round: Round,
        finalized: &dyn Fn(&Digest) -> bool,
    ) -> Result<Vec<&SignedVertex>, HistoryError> {
        if gc_round < self.gc_round {
            return Err(HistoryError::GcRoundReleased {
                requested: gc_round,
                released_below: self.gc_round,
            });
        }
        let mut seen = HashSet::new();
        let mut stack = vec![*anchor];
        let mut history = Vec::new();
        while let Some(hash) = stack.pop() {
            if !seen.insert(hash) || finalized(&hash) {
                continue;
            }
            let vertex = self
                .accepted
                .get(&hash)
                .ok_or(HistoryError::Missing(hash))?;
            if vertex.vertex().round < gc_round {
                continue;
            }
            stack.extend(
                vertex
                    .vertex()
                    .parents
                    .iter()
                    .filter(|p| p.round >= gc_round)
                    .map(|p| p.hash),
            );
            history.push(vertex);
        }
        Ok(history)
    }
}

/// Checks a held parent against its reference and the child's timestamp.
fn check_parent(
    child: &crate::Vertex,
    reference: &ParentRef,
    parent: &SignedVertex,
) -> Result<(), VertexError> {
    let held = parent.vertex();
    if held.author != reference.author || held.round != reference.round {
        return Err(VertexError::ParentMismatch {
            hash: reference.hash,
            actual_author: held.author,
            actual_round: held.round,
        });
    }
    if child.created_at < held.created_at {
        return Err(VertexError::CreatedBeforeParent {
            created_at: child.created_at,
            parent: held.created_at,
        });
    }
    Ok(())
}

/// Why an anchor's history could not be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A vertex of the history is not accepted (the caller must fetch it first).
    #[error("vertex {0:?} of the anchor's history is not held")]
    Missing(Digest),
    /// The DAG already released rounds the caller needs.
    #[error("GC round {requested} requested but rounds below {released_below} were released")]
    GcRoundReleased {
        /// What the caller asked for.
        requested: Round,
        /// What the DAG holds.
        released_below: Round,
    },
}
