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
//! - **Waiting vertices are bounded per sponsor**, so a flood of vertices whose parents
//!   never arrive cannot grow memory without limit, and a validator's flood uses up only
//!   its own share. A waiting vertex is charged to a [`Sponsor`]: a commit certificate
//!   for an anchor consensus wants and its history; the primary for an anchor it
//!   designated; the sponsor of a waiting vertex that needs it (its history is fixed by
//!   hashes, so what an honest validator's vertex needs is real); its own author when it
//!   came unasked. Each share keeps its lowest rounds (an arrival below a full share's
//!   highest vertex takes that one's place), because catching up accepts from the
//!   bottom; a vertex taken out that others still wait on stays missing and is fetched
//!   again, charged to them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use weft_crypto::Digest;

use crate::vertex::{Limits, ParentRef, SignedVertex, VertexError};
use crate::{Committee, Round, ValidatorIndex};

/// Bounds of the in-memory DAG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DagConfig {
    /// Vertex limits checked at insert.
    pub limits: Limits,
    /// Most waiting vertices charged to one validator's share; the share of commit
    /// certificates holds n times as many.
    pub max_pending_per_author: usize,
    #[doc(hidden)]
    /// The waiting buffer as it was before the long run found its stall (the consensus
    /// simulator's `Mutant::RefuseNeededAtCap`): every waiting vertex is charged to its
    /// own author, and at the cap a vertex is refused unless it is below that author's
    /// highest waiting vertex. Always false in a node.
    pub refuse_needed_at_cap: bool,
    #[doc(hidden)]
    /// The waiting buffer of session 12 (the consensus simulator's
    /// `Mutant::NeededDisplacesIdle`): charged to the own author, and at the cap a
    /// vertex something needs displaces the author's highest waiting vertex that nothing
    /// needs, at any round. Always false in a node.
    pub needed_displaces_idle: bool,
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
            needed_displaces_idle: false,
            stale_wants: false,
        }
    }
}

/// Whose share of the waiting buffer a waiting vertex uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sponsor {
    /// A validator: the primary that designated an anchor, or (for vertices the DAG
    /// charges itself) the author of a vertex that came unasked.
    Validator(ValidatorIndex),
    /// A commit certificate (2f + 1 commit votes): an anchor consensus committed, whose
    /// history is the ledger's.
    Certified,
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
    /// The shares that vouch for this vertex of validator {0} are full of vertices
    /// below it. Transient.
    #[error("no room among the waiting-buffer shares that vouch for this vertex of validator {0}")]
    PendingFull(ValidatorIndex),
    /// An unrequested second version of a slot: kept only as evidence.
    #[error("equivocating vertex not referenced by anything held; kept as evidence only")]
    UnwantedEquivocation(Box<Equivocation>),
}

#[derive(Debug)]
struct Waiting {
    vertex: SignedVertex,
    missing: HashSet<Digest>,
    /// The share it is charged to: a validator's index, or n for certified anchors.
    share: usize,
    /// Every share that vouches for it: its own author, the wishes for it, and the
    /// sponsors of every waiting vertex that needs it, directly or through others (kept
    /// up to date as needers arrive; never shrinks, so a sponsor that left may stay).
    sponsors: ShareSet,
}

/// A set of shares (validators by index, then certified anchors), as bits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ShareSet(Vec<u64>);

impl ShareSet {
    fn of(share: usize) -> ShareSet {
        let mut set = ShareSet::default();
        set.insert(share);
        set
    }

    fn insert(&mut self, share: usize) -> bool {
        let (word, bit) = (share / 64, 1u64 << (share % 64));
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        let grew = self.0[word] & bit == 0;
        self.0[word] |= bit;
        grew
    }

    /// Adds `other`'s shares; true when any was new.
    fn union(&mut self, other: &ShareSet) -> bool {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        let mut grew = false;
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            grew |= *theirs & !*mine != 0;
            *mine |= *theirs;
        }
        grew
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(word, bits)| {
            (0..64)
                .filter(move |bit| bits & (1u64 << bit) != 0)
                .map(move |bit| word * 64 + bit)
        })
    }
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
    /// wish and who vouches for it. Only wishes not yet fulfilled: a hash leaves when its
    /// vertex is accepted.
    wanted: HashMap<Digest, (u64, Sponsor)>,
    /// The same wishes by number, oldest first: at the bound the oldest goes.
    wishes: BTreeMap<u64, Digest>,
    /// The number of the next wish.
    next_wish: u64,
    /// (round, author) -> hashes held there, accepted or waiting (two or more only when
    /// the author equivocated).
    slots: BTreeMap<(Round, ValidatorIndex), Vec<Digest>>,
    /// Waiting vertices by share (validators by index, then certified anchors), by round.
    shares: Vec<BTreeSet<(Round, Digest)>>,
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
            shares: vec![BTreeSet::new(); size + 1],
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

    /// Number of waiting vertices charged to `sponsor`.
    pub fn charged_to(&self, sponsor: Sponsor) -> usize {
        self.shares[self.share_of(sponsor)].len()
    }

    fn share_of(&self, sponsor: Sponsor) -> usize {
        match sponsor {
            Sponsor::Validator(index) => index.as_usize().min(self.committee.size()),
            Sponsor::Certified => self.committee.size(),
        }
    }

    fn share_cap(&self, share: usize) -> usize {
        if share == self.committee.size() {
            self.config
                .max_pending_per_author
                .saturating_mul(self.committee.size())
        } else {
            self.config.max_pending_per_author
        }
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
    /// with a version already held (consensus committed or re-proposed it), and while
    /// it and its history wait they are charged to `sponsor` (a certificate once any
    /// wish for it was certified). At most `limit` wishes not yet fulfilled are
    /// remembered; wanting a hash again makes it the newest wish, and at the bound the
    /// oldest goes first.
    ///
    /// Found by the long run (seed 103,100,007,177): a set that kept every hash after
    /// its vertex arrived filled up with fulfilled wishes and, at the bound, dropped the
    /// smallest hash, often the wish just made. A committed anchor of a Byzantine author
    /// who had sent this replica another version of that slot was then refused on every
    /// fetch, and the replica never executed its sequence.
    pub fn want(&mut self, hash: Digest, sponsor: Sponsor, limit: usize) {
        if self.accepted.contains_key(&hash) {
            return;
        }
        if self.config.stale_wants {
            self.wanted.entry(hash).or_insert((0, sponsor));
            while self.wanted.len() > limit {
                let Some(smallest) = self.wanted.keys().min().copied() else {
                    break;
                };
                self.wanted.remove(&smallest);
            }
            return;
        }
        let mut sponsor = sponsor;
        if let Some((old, before)) = self.wanted.remove(&hash) {
            self.wishes.remove(&old);
            if before == Sponsor::Certified {
                sponsor = before;
            }
        }
        let number = self.next_wish;
        // 2^64 wishes are never made; were they, numbers stay unique up to there.
        self.next_wish = self.next_wish.saturating_add(1);
        self.wanted.insert(hash, (number, sponsor));
        // Already waiting (an anchor that came before its certificate): it and what it
        // waits for are vouched for by the wish from now on. Found by the attack review.
        if self.waiting.contains_key(&hash) {
            let share = ShareSet::of(self.share_of(sponsor));
            self.add_sponsors(hash, &share);
        }
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
            let own = body.author.as_usize();
            let mut sponsors = ShareSet::of(own);
            if let Some((_, wish)) = self.wanted.get(&hash) {
                sponsors.insert(self.share_of(*wish));
            }
            for child in self.wanted_by.get(&hash).into_iter().flatten() {
                if let Some(waiting) = self.waiting.get(child) {
                    sponsors.union(&waiting.sponsors);
                }
            }
            let share = self.make_room(&hash, body, &sponsors)?;
            self.shares[share].insert((body.round, hash));
            self.slots.entry(slot).or_default().push(hash);
            for parent in &missing {
                self.wanted_by.entry(*parent).or_default().push(hash);
            }
            let waiting_parents: Vec<Digest> = missing
                .iter()
                .filter(|parent| self.waiting.contains_key(*parent))
                .copied()
                .collect();
            self.waiting.insert(
                hash,
                Waiting {
                    vertex,
                    missing,
                    share,
                    sponsors: sponsors.clone(),
                },
            );
            for parent in waiting_parents {
                self.add_sponsors(parent, &sponsors);
            }
        }
        Ok(report)
    }

    /// Adds `sponsors` to a waiting vertex and, where that adds anything, to the waiting
    /// vertices it needs in turn. Each set only grows and holds at most n + 1 shares,
    /// so over a vertex's stay this costs O(n) updates per parent link.
    fn add_sponsors(&mut self, hash: Digest, sponsors: &ShareSet) {
        let mut stack = vec![hash];
        while let Some(next) = stack.pop() {
            let Some(waiting) = self.waiting.get_mut(&next) else {
                continue;
            };
            if waiting.sponsors.union(sponsors) {
                let parents: Vec<Digest> = waiting.missing.iter().copied().collect();
                stack.extend(parents.into_iter().filter(|p| self.waiting.contains_key(p)));
            }
        }
    }

    /// The share a vertex about to wait is charged to, making room in it if it is full.
    ///
    /// The share is one of the vertex's `sponsors` (its own author, the wish for it and
    /// the sponsors of every waiting vertex that needs it): a certified one first, then
    /// the one with the most room, its own author's last. When all are full, the first
    /// whose highest waiting vertex lies above the arrival gives that vertex up (see
    /// [`Dag::evict`]: it moves to another of its own sponsors if one has room or holds
    /// something higher, else it leaves the buffer and is missing again for whatever
    /// waits on it). Failing that the arrival is refused: it lies above everything in
    /// its sponsors' full shares.
    ///
    /// Found by the long run (known limit 18, seed 117,100,002,636): with every vertex
    /// charged to its author, an honest author's chain that a lagging replica walked down
    /// parent by parent shared one share with the same author's later vertices, and the
    /// rule that let a needed later vertex displace one nothing needed at any round ate
    /// the walk from its top, so the replica never caught up. Charging by sponsor keeps
    /// the walk in the shares of what needs it, and each share keeps its lowest rounds; a
    /// Byzantine validator's made-up vertices, needed at most by its own (or another
    /// Byzantine validator's), are charged only to Byzantine shares (known limit 16).
    fn make_room(
        &mut self,
        hash: &Digest,
        body: &crate::Vertex,
        sponsors: &ShareSet,
    ) -> Result<usize, InsertError> {
        let own = body.author.as_usize();
        if self.config.refuse_needed_at_cap || self.config.needed_displaces_idle {
            self.make_room_in_author_share(hash, body)?;
            return Ok(own);
        }
        let order = self.preference(sponsors, own);
        if let Some(share) = order
            .iter()
            .copied()
            .find(|share| self.shares[*share].len() < self.share_cap(*share))
        {
            return Ok(share);
        }
        for share in order {
            let victim = self.shares[share]
                .last()
                .filter(|(round, _)| *round > body.round)
                .map(|(_, victim)| *victim);
            if let Some(victim) = victim {
                self.evict(&victim);
                return Ok(share);
            }
        }
        Err(InsertError::PendingFull(body.author))
    }

    /// `sponsors` in the order they are tried: the certificate's share, then the others
    /// by room (most first), the author's own share last.
    fn preference(&self, sponsors: &ShareSet, own: usize) -> Vec<usize> {
        let certified = self.committee.size();
        let mut order: Vec<usize> = sponsors.iter().filter(|s| *s <= certified).collect();
        order.sort_by_key(|share| {
            (
                *share != certified,
                *share == own,
                self.shares[*share].len(),
                *share,
            )
        });
        order
    }

    /// The old rules (mutants only): one share per author, and at its cap the victim is
    /// the highest waiting vertex above the arrival (`refuse_needed_at_cap`) or, for a
    /// needed arrival, the highest one nothing needs at any round
    /// (`needed_displaces_idle`); the victim's waiting descendants go with it.
    fn make_room_in_author_share(
        &mut self,
        hash: &Digest,
        body: &crate::Vertex,
    ) -> Result<(), InsertError> {
        let own = body.author.as_usize();
        if self.shares[own].len() < self.config.max_pending_per_author {
            return Ok(());
        }
        let needs =
            |dag: &Dag, h: &Digest| dag.wanted_by.contains_key(h) || dag.wanted.contains_key(h);
        let highest = self.shares[own].last().copied();
        let highest_idle = self.shares[own]
            .iter()
            .rev()
            .find(|(_, h)| !needs(self, h))
            .copied();
        let above = |key: &(Round, Digest)| key.0 > body.round;
        let victim = if self.config.refuse_needed_at_cap {
            highest.filter(above)
        } else if needs(self, hash) {
            highest_idle.or_else(|| highest.filter(above))
        } else {
            highest_idle.filter(above)
        };
        match victim {
            Some((_, evicted)) => {
                self.drop_waiting(&evicted);
                Ok(())
            }
            None => Err(InsertError::PendingFull(body.author)),
        }
    }

    /// Accepts `vertex`, then every waiting descendant whose last missing parent it was.
    fn accept_cascade(&mut self, vertex: SignedVertex, report: &mut InsertReport) {
        let mut ready = vec![vertex];
        while let Some(vertex) = ready.pop() {
            let hash = vertex.hash();
            report.accepted.push(hash);
            if !self.config.stale_wants {
                if let Some((number, _)) = self.wanted.remove(&hash) {
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
        let round = waiting.vertex.vertex().round;
        self.shares[waiting.share].remove(&(round, *hash));
        Some(waiting)
    }

    /// Takes a waiting vertex out of the buffer, its slot and its parents' wishes; the
    /// vertices waiting on it keep waiting (it is missing again).
    fn unlink_waiting(&mut self, hash: &Digest) -> bool {
        let Some(waiting) = self.remove_waiting_entry(hash) else {
            return false;
        };
        let body = waiting.vertex.vertex();
        let slot = (body.round, body.author);
        if let Some(hashes) = self.slots.get_mut(&slot) {
            hashes.retain(|h| h != hash);
            if hashes.is_empty() {
                self.slots.remove(&slot);
            }
        }
        for parent in waiting.missing {
            if let Some(children) = self.wanted_by.get_mut(&parent) {
                children.retain(|c| c != hash);
                if children.is_empty() {
                    self.wanted_by.remove(&parent);
                }
            }
        }
        true
    }

    /// Makes room in a share by giving up its vertex `hash`. It moves to another share
    /// that vouches for it if one has room, or else into one whose highest waiting vertex
    /// lies above it (that vertex goes to another share vouching for it that has room, or
    /// leaves the buffer: see [`Dag::displace`]); otherwise it leaves the buffer itself,
    /// and what waits on it stays and fetches it again.
    ///
    /// Found by the attack review of the shares: a real vertex that an honest vertex and
    /// a Byzantine validator's made-up one both need could be charged to the Byzantine
    /// share (it had the most room), whose author then pushed it out with made-up
    /// vertices below it, again for each refetch. Moving it to a share that vouches for
    /// it keeps it in the buffer.
    fn evict(&mut self, hash: &Digest) {
        let Some(waiting) = self.waiting.get(hash) else {
            return;
        };
        let (round, from, author) = (
            waiting.vertex.vertex().round,
            waiting.share,
            waiting.vertex.vertex().author.as_usize(),
        );
        let order: Vec<usize> = self
            .preference(&waiting.sponsors, author)
            .into_iter()
            .filter(|share| *share != from)
            .collect();
        let target = order
            .iter()
            .copied()
            .find(|share| self.shares[*share].len() < self.share_cap(*share))
            .or_else(|| {
                order.iter().copied().find(|share| {
                    self.shares[*share]
                        .last()
                        .is_some_and(|(highest, _)| *highest > round)
                })
            });
        let Some(target) = target else {
            self.unlink_waiting(hash);
            return;
        };
        if self.shares[target].len() >= self.share_cap(target) {
            if let Some((_, displaced)) = self.shares[target].last().copied() {
                self.displace(&displaced, target);
            }
        }
        self.shares[from].remove(&(round, *hash));
        self.shares[target].insert((round, *hash));
        if let Some(waiting) = self.waiting.get_mut(hash) {
            waiting.share = target;
        }
    }

    /// Takes `hash` out of the full share `from` for a vertex moving in: it moves to
    /// another share that vouches for it if one has room, else it leaves the buffer (one
    /// step, no further displacement). Found by the second attack review of the shares:
    /// a displaced anchor whose certificate's share had room left the buffer and waited
    /// for a refetch.
    fn displace(&mut self, hash: &Digest, from: usize) {
        let Some(waiting) = self.waiting.get(hash) else {
            return;
        };
        let (round, author) = (
            waiting.vertex.vertex().round,
            waiting.vertex.vertex().author.as_usize(),
        );
        let room = self
            .preference(&waiting.sponsors, author)
            .into_iter()
            .find(|share| *share != from && self.shares[*share].len() < self.share_cap(*share));
        let Some(room) = room else {
            self.unlink_waiting(hash);
            return;
        };
        self.shares[from].remove(&(round, *hash));
        self.shares[room].insert((round, *hash));
        if let Some(waiting) = self.waiting.get_mut(hash) {
            waiting.share = room;
        }
    }

    /// Drops an invalid waiting vertex and, transitively, everything waiting on it.
    fn drop_waiting(&mut self, hash: &Digest) {
        let mut doomed = vec![*hash];
        while let Some(hash) = doomed.pop() {
            if self.unlink_waiting(&hash) {
                doomed.extend(self.wanted_by.remove(&hash).unwrap_or_default());
            }
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
        // A released waiting vertex leaves without what waits on it: those no longer
        // need it (it is below the GC round) and are accepted below if nothing else is
        // missing. Found by the attack review of the shares (it predates them): dropping
        // them with it threw away vertices the replica should accept. The old buffer
        // rules (mutants) keep the old cascade.
        let cascade = self.config.refuse_needed_at_cap || self.config.needed_displaces_idle;
        for hash in released.into_values().flatten() {
            if self.accepted.remove(&hash).is_none() {
                if cascade {
                    self.drop_waiting(&hash);
                } else {
                    self.unlink_waiting(&hash);
                }
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
