//! Fixtures for tests and benchmarks: DAGs built layer by layer and chains of finalized
//! entries. Vertices built here carry a placeholder signature unless signed explicitly:
//! they are for exercising the pure graph and storage code, never for anything that
//! verifies signatures.

use std::collections::BTreeMap;

use weft_crypto::{Digest, Keypair, Signature, SIGNATURE_BYTES};

use crate::{
    chain_digest, ChainId, Committee, Epoch, FinalizedEntry, FinalizedTransaction, ParentRef,
    Round, Sequence, SignedVertex, TimestampMs, Transaction, ValidatorIndex, Vertex,
};

/// The `created_at` of a [`DagBuilder`] vertex is this plus 10 ms per round.
pub const BUILDER_EPOCH_MS: u64 = 1_700_000_000_000;

/// Test transactions expire this long after their vertex's `created_at`.
pub const TEST_TTL_MS: u64 = 60_000;

/// An all-zero signature: for graph and storage tests that never verify signatures.
pub fn placeholder_signature() -> Signature {
    match Signature::from_bytes(&[0; SIGNATURE_BYTES]) {
        Ok(signature) => signature,
        Err(error) => unreachable!("placeholder has the right length: {error}"),
    }
}

/// The chain id used by fixtures.
pub fn test_chain() -> ChainId {
    match ChainId::new("weft-test") {
        Ok(chain) => chain,
        Err(error) => unreachable!("valid name: {error}"),
    }
}

/// A committee of `n` fresh keys on the test chain, with its key pairs.
pub fn committee(n: usize) -> (Committee, Vec<Keypair>) {
    let keys: Vec<Keypair> = (0..n).map(|_| Keypair::generate()).collect();
    let committee = Committee::new(
        test_chain(),
        Epoch(0),
        keys.iter().map(|k| k.public).collect(),
    );
    match committee {
        Ok(committee) => (committee, keys),
        Err(error) => panic!("fixture committee of {n}: {error}"),
    }
}

/// Builds DAGs round by round. Each author's vertex references its own latest vertex
/// first, then the chosen authors' vertices of the previous round.
#[derive(Debug)]
pub struct DagBuilder {
    committee: Committee,
    keys: Option<Vec<Keypair>>,
    /// (round, author) -> versions (more than one when the author equivocated).
    slots: BTreeMap<(Round, ValidatorIndex), Vec<SignedVertex>>,
    transactions_per_vertex: usize,
    ms_per_round: u64,
    ttl_ms: u64,
}

impl DagBuilder {
    /// A builder over a fresh committee of `n`, placeholder signatures.
    pub fn new(n: usize) -> DagBuilder {
        let (committee, _) = committee(n);
        DagBuilder {
            committee,
            keys: None,
            slots: BTreeMap::new(),
            transactions_per_vertex: 2,
            ms_per_round: 10,
            ttl_ms: TEST_TTL_MS,
        }
    }

    /// A builder that signs every vertex with real ML-DSA-87 keys.
    pub fn signed(n: usize) -> DagBuilder {
        let (committee, keys) = committee(n);
        DagBuilder {
            keys: Some(keys),
            ..DagBuilder::with_committee(committee)
        }
    }

    /// A builder over a given committee, placeholder signatures.
    pub fn with_committee(committee: Committee) -> DagBuilder {
        DagBuilder {
            committee,
            keys: None,
            slots: BTreeMap::new(),
            transactions_per_vertex: 2,
            ms_per_round: 10,
            ttl_ms: TEST_TTL_MS,
        }
    }

    /// Sets how many transactions each built vertex carries.
    pub fn transactions_per_vertex(mut self, count: usize) -> DagBuilder {
        self.transactions_per_vertex = count;
        self
    }

    /// Sets the time between rounds' `created_at` and how long after it each built
    /// transaction expires (defaults: 10 ms and `TEST_TTL_MS`).
    pub fn timing(mut self, ms_per_round: u64, ttl_ms: u64) -> DagBuilder {
        self.ms_per_round = ms_per_round;
        self.ttl_ms = ttl_ms;
        self
    }

    /// The committee.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// Every vertex built so far, round by round.
    pub fn vertices(&self) -> Vec<SignedVertex> {
        self.slots.values().flatten().cloned().collect()
    }

    /// The versions built for (round, author).
    pub fn slot(&self, round: Round, author: ValidatorIndex) -> &[SignedVertex] {
        self.slots.get(&(round, author)).map_or(&[], Vec::as_slice)
    }

    /// Round 0: one parentless vertex per validator.
    pub fn genesis(&mut self) -> Vec<SignedVertex> {
        let authors: Vec<ValidatorIndex> = self.committee.indices().collect();
        authors
            .into_iter()
            .map(|author| self.build(author, Round(0), Vec::new(), 0))
            .collect()
    }

    /// A full round where every author references every vertex of the previous round.
    pub fn full_round(&mut self, round: Round) -> Vec<SignedVertex> {
        let authors: Vec<ValidatorIndex> = self.committee.indices().collect();
        authors
            .iter()
            .map(|&author| self.vertex(author, round, &authors, 0))
            .collect()
    }

    /// A vertex by `author` at `round` referencing the first version of each of
    /// `parent_authors`' vertices at round - 1 (plus the author's own latest, first).
    /// `variant` changes the transactions, to make equivocating twins.
    pub fn vertex(
        &mut self,
        author: ValidatorIndex,
        round: Round,
        parent_authors: &[ValidatorIndex],
        variant: u64,
    ) -> SignedVertex {
        let previous = Round(round.0.saturating_sub(1));
        let parents = parent_authors
            .iter()
            .filter_map(|&a| self.slot(previous, a).first().map(SignedVertex::as_parent))
            .collect();
        self.vertex_with_parents(author, round, parents, variant)
    }

    /// A vertex with explicit parents (the author's own latest is added first when not
    /// given); parents are put in canonical order.
    pub fn vertex_with_parents(
        &mut self,
        author: ValidatorIndex,
        round: Round,
        mut parents: Vec<ParentRef>,
        variant: u64,
    ) -> SignedVertex {
        parents.retain(|p| p.author != author);
        parents.sort_by_key(|p| p.author);
        parents.dedup_by_key(|p| p.author);
        // The author's own latest vertex below this round (not the latest overall: an
        // equivocating twin at this round must reference the same own parent).
        let own = self
            .slots
            .range(..(round, ValidatorIndex(0)))
            .rev()
            .find(|((_, a), _)| *a == author)
            .and_then(|(_, versions)| versions.first())
            .map(SignedVertex::as_parent);
        if let Some(own) = own {
            parents.insert(0, own);
        }
        self.build(author, round, parents, variant)
    }

    fn build(
        &mut self,
        author: ValidatorIndex,
        round: Round,
        parents: Vec<ParentRef>,
        variant: u64,
    ) -> SignedVertex {
        let created_at = TimestampMs(BUILDER_EPOCH_MS + round.0 * self.ms_per_round);
        let transactions = (0..self.transactions_per_vertex)
            .map(|i| {
                Transaction::new(
                    format!("tx r{} a{} v{variant} #{i}", round.0, author.0).into_bytes(),
                    TimestampMs(created_at.0 + self.ttl_ms),
                )
            })
            .collect();
        let vertex = Vertex {
            chain_id: self.committee.chain_id().clone(),
            epoch: self.committee.epoch(),
            author,
            round,
            created_at,
            proposal: None,
            parents,
            transactions,
        };
        let signed = match &self.keys {
            Some(keys) => vertex.sign(&keys[author.as_usize()].secret),
            None => SignedVertex::with_signature(vertex, placeholder_signature()),
        };
        self.slots
            .entry((round, author))
            .or_default()
            .push(signed.clone());
        signed
    }
}

/// A chain of `count` finalized entries (sequences 1..=count), each finalizing
/// `vertices_per_entry` fresh vertices of `transactions_per_vertex` transactions each,
/// with correctly chained digests. Returns the vertices and the entries.
pub fn entry_chain(
    count: usize,
    vertices_per_entry: usize,
    transactions_per_vertex: usize,
) -> (Vec<SignedVertex>, Vec<FinalizedEntry>) {
    entry_chain_from(
        Sequence(1),
        Digest::ZERO,
        count,
        vertices_per_entry,
        transactions_per_vertex,
    )
}

/// Like [`entry_chain`] but continuing a log after `first - 1` whose digest is `previous`.
pub fn entry_chain_from(
    first: Sequence,
    previous: Digest,
    count: usize,
    vertices_per_entry: usize,
    transactions_per_vertex: usize,
) -> (Vec<SignedVertex>, Vec<FinalizedEntry>) {
    entry_chain_spaced(
        first,
        previous,
        count,
        vertices_per_entry,
        transactions_per_vertex,
        1,
    )
}

/// Like [`entry_chain_from`] with sequence s stamped at s * `ms_per_sequence` (its
/// consensus time, its vertices' `created_at`; transactions expire `TEST_TTL_MS` later).
pub fn entry_chain_spaced(
    first: Sequence,
    previous: Digest,
    count: usize,
    vertices_per_entry: usize,
    transactions_per_vertex: usize,
    ms_per_sequence: u64,
) -> (Vec<SignedVertex>, Vec<FinalizedEntry>) {
    let mut previous = previous;
    let mut all_vertices = Vec::new();
    let mut entries = Vec::new();
    for offset in 0..count as u64 {
        let sequence = Sequence(first.0 + offset);
        let mut hashes = Vec::new();
        let mut transactions = Vec::new();
        for slot in 0..vertices_per_entry {
            let vertex = Vertex {
                chain_id: test_chain(),
                epoch: Epoch(0),
                author: ValidatorIndex(u16::try_from(slot % 4).unwrap_or(0)),
                round: Round(sequence.0),
                created_at: TimestampMs(sequence.0 * ms_per_sequence),
                proposal: None,
                parents: Vec::new(),
                transactions: (0..transactions_per_vertex)
                    .map(|i| {
                        Transaction::new(
                            format!("s{} v{slot} t{i}", sequence.0).into_bytes(),
                            TimestampMs(sequence.0 * ms_per_sequence + TEST_TTL_MS),
                        )
                    })
                    .collect(),
            };
            let signed = SignedVertex::with_signature(vertex, placeholder_signature());
            for (position, transaction) in signed.vertex().transactions.iter().enumerate() {
                transactions.push(FinalizedTransaction {
                    id: transaction.id(),
                    vertex: signed.hash(),
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                    expires_at: transaction.expires_at(),
                });
            }
            hashes.push(signed.hash());
            all_vertices.push(signed);
        }
        let anchor = hashes.last().copied();
        let consensus_time = TimestampMs(sequence.0 * ms_per_sequence);
        let state_digest = chain_digest(
            &previous,
            sequence,
            anchor.as_ref(),
            consensus_time,
            &hashes,
            &transactions,
        );
        previous = state_digest;
        entries.push(FinalizedEntry {
            sequence,
            anchor,
            vertices: hashes,
            transactions,
            consensus_time,
            state_digest,
            finalized_unix_ms: 1_700_000_000_000 + sequence.0,
        });
    }
    (all_vertices, entries)
}
