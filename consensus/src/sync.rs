//! State sync policy: what a validator that missed part of the finalized log accepts from
//! a peer, and which peers it keeps asking. The node drives the requests over the network
//! (`node/src/sync.rs`); every decision is here, pure, so tests reach it with forging peers.
//!
//! Nothing a single peer says is trusted. A peer answers a request for the log after our
//! head with consecutive entries that **end at a stable checkpoint**, the vertices those
//! entries finalized, and the checkpoint's **certificate**: 2f + 1 distinct validators of
//! the genesis set signing `(sequence, state digest)` (see [`crate::proof`]). The batch is
//! applied only when
//! - the entries follow our head (sequence + 1 each) and each carries the state digest
//!   chained from the previous one over its anchor, consensus time, vertices and
//!   transactions (id, vertex, position);
//! - the last entry is the certified checkpoint and its digest is the certified one; the
//!   certificate verifies against the genesis committee (at most f of its signers can be
//!   faulty, so f + 1 honest validators executed exactly this state, and the digest
//!   chains, by blake3's collision resistance, every entry back to our head);
//! - every vertex decodes within the limits, is named by its entry, carries a valid
//!   signature of its author, and every transaction is the one its vertex carries at its
//!   position, expiry included (the id covers the expiry, the digest does not).
//!
//! Cheap checks go first (the chain is hashing only), then the certificate's 2f + 1
//! signatures, then the vertices' signatures, so a forging peer costs little.
//!
//! A peer that serves a batch failing any check is faulty (an honest peer serves only what
//! it executed, under a certificate it verified) and is not asked again in this session.
//! A peer with nothing certified beyond our head is *level*; a peer that did not answer
//! [`MAX_UNANSWERED`] times at the same head (busy, unavailable, timed out, or unable to
//! fit its answer) is *unable* and not asked again until the head moves. The session is
//! done when every other validator is level, faulty or unable, and *settled* when every
//! connected one is (the host ends it then, once it has waited for connections: a
//! validator that is down is not waited for). f + 1 level answers would not do: an
//! honest peer that is itself behind (restarted with us) is level too, and with f lying
//! ones they would end every session before the peer that is ahead is asked (found by
//! the attack review of certified sync). Peers are asked in turn from our own index on,
//! so validators that sync together do not all ask the same peer first. Entries above the
//! last stable checkpoint are not synced: the replica catches up on them live through the
//! commit certificates its peers keep (`ReplicaConfig::decided_retention`, at least twice
//! the window, while a stable checkpoint lags the tip by less than window + interval).

use std::collections::{BTreeMap, BTreeSet};

use weft_crypto::Digest;
use weft_dag::{Committee, FinalizedEntry, Limits, Sequence, SignedVertex, ValidatorIndex};

use crate::messages::SignedCheckpoint;
use crate::proof::{verify_certificate, ProofError};

/// Non-answers at one head after which a peer is not asked again until the head moves.
pub const MAX_UNANSWERED: u32 = 2;

/// One entry as a peer served it: the entry decoded, its vertices still in wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedEntry {
    /// The entry.
    pub entry: FinalizedEntry,
    /// The vertices it finalized, as the peer sent them (decoded and checked here).
    pub vertices: Vec<Vec<u8>>,
}

/// A stable checkpoint's certificate as a peer served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCertificate {
    /// The checkpoint's sequence.
    pub sequence: Sequence,
    /// The state digest signed.
    pub state_digest: Digest,
    /// The signed checkpoints.
    pub signatures: Vec<SignedCheckpoint>,
}

/// A peer's answer to "the certified log after our head".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// The peer has nothing certified beyond our head.
    Level,
    /// Entries from our head + 1 up to a stable checkpoint, and its certificate.
    Certified {
        /// The entries, in order.
        entries: Vec<ServedEntry>,
        /// The certificate of the last entry's sequence.
        certificate: ServedCertificate,
    },
    /// An answer that does not decode (the host's wire format); the peer is faulty.
    Malformed(String),
}

/// A checked batch, ready to be written: entries with their vertices, and the certificate
/// that covers them (kept, so this validator can serve proofs and sync in turn).
#[derive(Debug, Clone)]
pub struct CertifiedBatch {
    /// The entries and their decoded, verified vertices.
    pub entries: Vec<(FinalizedEntry, Vec<SignedVertex>)>,
    /// The certificate of the last entry.
    pub certificate: ServedCertificate,
}

/// Why a served batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The answer does not decode.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// A certified answer without entries.
    #[error("a certified answer with no entries")]
    Empty,
    /// An entry out of order.
    #[error("entry {got} where {due} was due")]
    OutOfOrder {
        /// The sequence served.
        got: u64,
        /// The one due.
        due: u64,
    },
    /// An entry whose digest does not chain from the previous one.
    #[error("entry {0} does not chain from the previous digest")]
    Unchained(u64),
    /// The batch does not end at the certified checkpoint.
    #[error("the batch ends at {last}, the certificate is for {certified}")]
    NotAtCheckpoint {
        /// The last entry's sequence.
        last: u64,
        /// The certificate's sequence.
        certified: u64,
    },
    /// The last entry's digest is not the certified one.
    #[error("entry {0}'s digest is not the one the certificate names")]
    OtherDigest(u64),
    /// The certificate does not verify against the genesis committee.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A vertex that does not decode within the limits.
    #[error("entry {sequence}: undecodable vertex: {reason}")]
    UndecodableVertex {
        /// The entry.
        sequence: u64,
        /// Why.
        reason: String,
    },
    /// A vertex the entry does not name.
    #[error("entry {0}: a vertex it does not name")]
    Unnamed(u64),
    /// A vertex without its author's valid signature.
    #[error("entry {sequence}: vertex signature: {reason}")]
    VertexSignature {
        /// The entry.
        sequence: u64,
        /// Why.
        reason: String,
    },
    /// Vertices the entry names are missing.
    #[error("entry {0}: vertices missing")]
    MissingVertices(u64),
    /// A transaction at a vertex and position the entry does not carry.
    #[error("entry {0}: a transaction at a vertex and position the entry does not carry")]
    TransactionNotCarried(u64),
    /// A transaction that is not the one its vertex carries at its position.
    #[error("entry {0}: a transaction that is not the one its vertex carries at its position")]
    TransactionMismatch(u64),
}

impl From<ProofError> for SyncError {
    fn from(error: ProofError) -> SyncError {
        SyncError::Certificate(error.to_string())
    }
}

/// Checks a certified batch against our head `(head, digest)`; see the module docs for
/// the rule and the order of the checks.
pub fn check_certified(
    entries: &[ServedEntry],
    certificate: &ServedCertificate,
    head: Sequence,
    digest: Digest,
    committee: &Committee,
    limits: &Limits,
) -> Result<CertifiedBatch, SyncError> {
    let last = check_chain(entries, head, digest)?.ok_or(SyncError::Empty)?;
    if last.sequence != certificate.sequence {
        return Err(SyncError::NotAtCheckpoint {
            last: last.sequence.0,
            certified: certificate.sequence.0,
        });
    }
    if last.state_digest != certificate.state_digest {
        return Err(SyncError::OtherDigest(last.sequence.0));
    }
    verify_certificate(
        committee,
        certificate.sequence,
        &certificate.state_digest,
        &certificate.signatures,
    )?;
    let mut checked = Vec::with_capacity(entries.len());
    for served in entries {
        let vertices = check_vertices(served, committee, limits)?;
        checked.push((served.entry.clone(), vertices));
    }
    Ok(CertifiedBatch {
        entries: checked,
        certificate: certificate.clone(),
    })
}

/// The sequence and digest chain from our head; the last entry.
fn check_chain(
    entries: &[ServedEntry],
    head: Sequence,
    mut digest: Digest,
) -> Result<Option<&FinalizedEntry>, SyncError> {
    let mut due = head.0.checked_add(1);
    let mut last = None;
    for ServedEntry { entry, .. } in entries {
        if Some(entry.sequence.0) != due {
            return Err(SyncError::OutOfOrder {
                got: entry.sequence.0,
                due: due.unwrap_or(u64::MAX),
            });
        }
        if entry.chained_digest(&digest) != entry.state_digest {
            return Err(SyncError::Unchained(entry.sequence.0));
        }
        digest = entry.state_digest;
        due = entry.sequence.0.checked_add(1);
        last = Some(entry);
    }
    Ok(last)
}

/// The entry's vertices, decoded and verified; its transactions matched against them.
fn check_vertices(
    served: &ServedEntry,
    committee: &Committee,
    limits: &Limits,
) -> Result<Vec<SignedVertex>, SyncError> {
    let entry = &served.entry;
    let sequence = entry.sequence.0;
    let named: BTreeSet<&Digest> = entry.vertices.iter().chain(entry.anchor.iter()).collect();
    let mut vertices = Vec::with_capacity(served.vertices.len());
    for bytes in &served.vertices {
        let vertex =
            SignedVertex::from_wire(bytes, limits).map_err(|e| SyncError::UndecodableVertex {
                sequence,
                reason: e.to_string(),
            })?;
        if !named.contains(&vertex.hash()) {
            return Err(SyncError::Unnamed(sequence));
        }
        vertex
            .verify_signature(committee)
            .map_err(|e| SyncError::VertexSignature {
                sequence,
                reason: e.to_string(),
            })?;
        vertices.push(vertex);
    }
    let carried: BTreeMap<Digest, &SignedVertex> = vertices.iter().map(|v| (v.hash(), v)).collect();
    if entry.vertices.iter().any(|h| !carried.contains_key(h)) {
        return Err(SyncError::MissingVertices(sequence));
    }
    // The chained digest covers each id, vertex and position but not the expiry (the id
    // covers it): without this check a peer could serve a transaction expiring early, and
    // the synced replica would forget the id and finalize a later copy its peers skip, a
    // fork (found by the attack review of checkpointed restart).
    for transaction in &entry.transactions {
        let held = carried
            .get(&transaction.vertex)
            .and_then(|v| {
                v.vertex()
                    .transactions
                    .get(usize::try_from(transaction.position).ok()?)
            })
            .ok_or(SyncError::TransactionNotCarried(sequence))?;
        if held.id() != transaction.id || held.expires_at() != transaction.expires_at {
            return Err(SyncError::TransactionMismatch(sequence));
        }
    }
    Ok(vertices)
}

/// What the host does with a peer's answer.
#[derive(Debug)]
pub enum Step {
    /// Write this batch (atomically, certificate included); the session's head moved to
    /// its last entry.
    Apply(CertifiedBatch),
    /// The peer is level with us; nothing to write.
    Level,
    /// The batch was refused and the peer is no longer asked.
    Refused(SyncError),
}

/// One run of state sync: our head, the peers found level, the peers found faulty.
#[derive(Debug, Clone)]
pub struct SyncSession {
    me: ValidatorIndex,
    committee: Committee,
    limits: Limits,
    head: Sequence,
    digest: Digest,
    level: BTreeSet<ValidatorIndex>,
    faulty: BTreeSet<ValidatorIndex>,
    /// Non-answers at the current head, per peer.
    unanswered: BTreeMap<ValidatorIndex, u32>,
    turn: usize,
}

impl SyncSession {
    /// A session for validator `me` whose log ends at `(head, digest)` (sequence 0 and
    /// the zero digest for an empty log).
    pub fn new(
        me: ValidatorIndex,
        committee: Committee,
        limits: Limits,
        head: Sequence,
        digest: Digest,
    ) -> SyncSession {
        SyncSession {
            me,
            committee,
            limits,
            head,
            digest,
            level: BTreeSet::new(),
            faulty: BTreeSet::new(),
            unanswered: BTreeMap::new(),
            turn: usize::from(me.0),
        }
    }

    /// The last entry applied (or the head we started from).
    pub fn head(&self) -> Sequence {
        self.head
    }

    /// The first sequence to ask for.
    pub fn wanted(&self) -> Sequence {
        self.head.next()
    }

    /// Peers whose batches were refused.
    pub fn faulty(&self) -> &BTreeSet<ValidatorIndex> {
        &self.faulty
    }

    /// Done: every other validator is level with us, was refused, or could not answer
    /// at this head.
    pub fn done(&self) -> bool {
        self.committee
            .indices()
            .filter(|p| *p != self.me)
            .all(|p| self.finished_with(p))
    }

    /// Settled among `connected`: at least one other validator is connected and every
    /// connected one is level, refused or unable. The host ends the session then, once
    /// it has waited for connections; the peer that is ahead, if connected, has been
    /// asked until it had nothing more.
    pub fn settled(&self, connected: &[ValidatorIndex]) -> bool {
        let mut others = connected
            .iter()
            .copied()
            .filter(|p| *p != self.me && self.committee.contains(*p))
            .peekable();
        others.peek().is_some() && others.all(|p| self.finished_with(p))
    }

    fn finished_with(&self, peer: ValidatorIndex) -> bool {
        self.level.contains(&peer)
            || self.faulty.contains(&peer)
            || self.unanswered.get(&peer).copied().unwrap_or(0) >= MAX_UNANSWERED
    }

    /// `peer` did not answer a request for [`Self::wanted`] (busy, unavailable, timed
    /// out, or its answer could not fit).
    pub fn on_no_answer(&mut self, peer: ValidatorIndex) {
        let count = self.unanswered.entry(peer).or_default();
        *count = count.saturating_add(1);
    }

    /// The next peer to ask among `connected`, in turn; `None` when every connected peer
    /// is level or faulty (the host waits for others or ends the session).
    pub fn next_peer(&mut self, connected: &[ValidatorIndex]) -> Option<ValidatorIndex> {
        let candidates: Vec<ValidatorIndex> = connected
            .iter()
            .copied()
            .filter(|p| *p != self.me && self.committee.contains(*p) && !self.finished_with(*p))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let peer = candidates[self.turn % candidates.len()];
        self.turn = self.turn.wrapping_add(1);
        Some(peer)
    }

    /// Takes `peer`'s answer to a request for [`Self::wanted`].
    pub fn on_answer(&mut self, peer: ValidatorIndex, served: Served) -> Step {
        match served {
            Served::Level => {
                self.level.insert(peer);
                Step::Level
            }
            Served::Malformed(reason) => {
                self.faulty.insert(peer);
                Step::Refused(SyncError::Malformed(reason))
            }
            Served::Certified {
                entries,
                certificate,
            } => match check_certified(
                &entries,
                &certificate,
                self.head,
                self.digest,
                &self.committee,
                &self.limits,
            ) {
                Ok(batch) => {
                    self.head = batch.certificate.sequence;
                    self.digest = batch.certificate.state_digest;
                    // Who was level, or could not answer, was so at an older head; ask
                    // again.
                    self.level.clear();
                    self.unanswered.clear();
                    Step::Apply(batch)
                }
                Err(error) => {
                    self.faulty.insert(peer);
                    Step::Refused(error)
                }
            },
        }
    }
}
