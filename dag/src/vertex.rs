//! DAG vertices: signed batches of transactions that reference earlier vertices.
//!
//! A vertex's identity is the blake3 hash of its canonical encoding (the signed bytes),
//! which begins with the chain id and epoch, so a vertex cannot be replayed on another
//! chain or epoch. The signature is ML-DSA-87 with context `weft/vertex/v1` over exactly
//! those bytes.
//!
//! Canonical encoding (all integers little-endian, fixed width):
//!
//! ```text
//! chain_id      u8 length, then that many bytes (1..=64, a-z 0-9 - _ .)
//! epoch         u64
//! author        u16
//! round         u64
//! created_at    u64   milliseconds since the Unix epoch
//! proposal      u8 tag: 0 = none, 1 = followed by view u64, sequence u64
//! parents       u16 count, then per parent: author u16, round u64, hash [32]
//! transactions  u32 count, then per transaction: expires_at u64 (ms), u32 length,
//!               payload bytes
//! ```
//!
//! On the wire a signed vertex is `u32 length, encoding, signature [4627]`.

use std::sync::Arc;

use weft_crypto::{Digest, PublicKey, Signature, SigningContext, SIGNATURE_BYTES};

use crate::codec::{read_chain_header, write_chain_header, DecodeError, Reader, Writer};
use crate::{
    ChainId, Committee, Epoch, Round, Sequence, TimestampMs, Transaction, ValidatorIndex, View,
};

/// Size limits for vertices. Decoding checks them before allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most parents a vertex may name (at most one per validator, so n suffices).
    pub max_parents: usize,
    /// Most transactions in one vertex.
    pub max_transactions: usize,
    /// Largest transaction payload, in bytes.
    pub max_transaction_bytes: usize,
    /// Largest encoded vertex (without signature), in bytes.
    pub max_vertex_bytes: usize,
    /// How many rounds below its own a vertex may reference another author's vertex.
    /// This is the garbage-collection depth D: history more than D rounds below a
    /// vertex is never pulled back in through it.
    pub max_parent_depth: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_parents: 1024,
            max_transactions: 100_000,
            max_transaction_bytes: 64 * 1024,
            max_vertex_bytes: 8 * 1024 * 1024,
            max_parent_depth: 50,
        }
    }
}

/// The reference from a vertex to one of its parents. Naming the author and round
/// beside the hash lets a replica check parent coverage and fetch missing parents
/// before it holds them; once the parent arrives, its author and round must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParentRef {
    /// The parent's author.
    pub author: ValidatorIndex,
    /// The parent's round.
    pub round: Round,
    /// The parent's hash.
    pub hash: Digest,
}

/// The PBFT proposal a primary's vertex carries: this vertex is the pre-prepare for
/// `sequence` in `view`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Proposal {
    /// The view the author is primary of.
    pub view: View,
    /// The sequence proposed.
    pub sequence: Sequence,
}

/// The signed content of a vertex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vertex {
    /// The chain.
    pub chain_id: ChainId,
    /// The validator set's epoch.
    pub epoch: Epoch,
    /// Who made it.
    pub author: ValidatorIndex,
    /// Its DAG round.
    pub round: Round,
    /// The author's clock when it made the vertex; never below the parents'.
    pub created_at: TimestampMs,
    /// Present when this vertex is a PBFT pre-prepare.
    pub proposal: Option<Proposal>,
    /// Parents: the author's own latest vertex first (if any), then others by author.
    pub parents: Vec<ParentRef>,
    /// The batch.
    pub transactions: Vec<Transaction>,
}

/// Fixed part of a parent reference: author u16, round u64, hash.
const PARENT_BYTES: usize = 2 + 8 + 32;

impl Vertex {
    /// The canonical encoding: the bytes that are hashed and signed.
    pub fn encode(&self) -> Vec<u8> {
        let payload_bytes: usize = self
            .transactions
            .iter()
            .map(|t| 12 + t.payload().len())
            .sum();
        let mut writer = Writer::with_capacity(
            1 + self.chain_id.as_str().len()
                + 47
                + self.parents.len() * PARENT_BYTES
                + payload_bytes,
        );
        write_chain_header(&mut writer, &self.chain_id, self.epoch);
        writer.u16(self.author.0);
        writer.u64(self.round.0);
        writer.u64(self.created_at.0);
        match self.proposal {
            None => writer.u8(0),
            Some(proposal) => {
                writer.u8(1);
                writer.u64(proposal.view.0);
                writer.u64(proposal.sequence.0);
            }
        }
        writer.u16(u16::try_from(self.parents.len()).unwrap_or(u16::MAX));
        for parent in &self.parents {
            writer.u16(parent.author.0);
            writer.u64(parent.round.0);
            writer.raw(parent.hash.as_bytes());
        }
        writer.u32(u32::try_from(self.transactions.len()).unwrap_or(u32::MAX));
        for transaction in &self.transactions {
            writer.u64(transaction.expires_at().0);
            writer.u32(u32::try_from(transaction.payload().len()).unwrap_or(u32::MAX));
            writer.raw(transaction.payload());
        }
        writer.finish()
    }

    /// Decodes a canonical encoding, within `limits`. Every byte string that decodes
    /// re-encodes to itself.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Vertex, DecodeError> {
        check_limit("vertex bytes", bytes.len(), limits.max_vertex_bytes)?;
        let mut reader = Reader::new(bytes);
        let (chain_id, epoch) = read_chain_header(&mut reader)?;
        let author = ValidatorIndex(reader.u16("author")?);
        let round = Round(reader.u64("round")?);
        let created_at = TimestampMs(reader.u64("created_at")?);
        let proposal = match reader.u8("proposal tag")? {
            0 => None,
            1 => Some(Proposal {
                view: View(reader.u64("proposal view")?),
                sequence: Sequence(reader.u64("proposal sequence")?),
            }),
            tag => {
                return Err(DecodeError::Invalid {
                    field: "proposal tag",
                    reason: format!("{tag} is neither 0 nor 1"),
                })
            }
        };
        let raw_parents = u64::from(reader.u16("parent count")?);
        let parent_count =
            reader.count("parents", raw_parents, limits.max_parents, PARENT_BYTES)?;
        let mut parents = Vec::with_capacity(parent_count);
        for _ in 0..parent_count {
            parents.push(ParentRef {
                author: ValidatorIndex(reader.u16("parent author")?),
                round: Round(reader.u64("parent round")?),
                hash: Digest::from_bytes(reader.array("parent hash")?),
            });
        }
        let raw_transactions = u64::from(reader.u32("transaction count")?);
        let transaction_count = reader.count(
            "transactions",
            raw_transactions,
            limits.max_transactions,
            12,
        )?;
        let mut transactions = Vec::with_capacity(transaction_count);
        for _ in 0..transaction_count {
            let expires_at = TimestampMs(reader.u64("transaction expiry")?);
            let length = u64::from(reader.u32("transaction length")?);
            let length =
                reader.count("transaction bytes", length, limits.max_transaction_bytes, 1)?;
            transactions.push(Transaction::new(
                reader.take("transaction", length)?.to_vec(),
                expires_at,
            ));
        }
        reader.finish()?;
        Ok(Vertex {
            chain_id,
            epoch,
            author,
            round,
            created_at,
            proposal,
            parents,
            transactions,
        })
    }

    /// Signs the canonical encoding with the author's key.
    pub fn sign(self, secret: &weft_crypto::SecretKey) -> SignedVertex {
        self.signed_by(|context, bytes| secret.sign(context, bytes))
    }

    /// Encodes once and signs those bytes with `sign` (context `weft/vertex/v1`).
    pub fn signed_by(self, sign: impl FnOnce(SigningContext, &[u8]) -> Signature) -> SignedVertex {
        let encoded = self.encode();
        let signature = sign(SigningContext::Vertex, &encoded);
        SignedVertex::from_parts(self, encoded, signature)
    }

    /// Checks every rule that needs only the vertex itself and the validator set (not its
    /// parents, not the local clock or state), so every honest replica reaches the same
    /// verdict. The signature is checked separately ([`SignedVertex::verify_signature`])
    /// because it is the expensive part and is done in parallel batches.
    pub fn check_structure(
        &self,
        committee: &Committee,
        limits: &Limits,
    ) -> Result<(), VertexError> {
        if &self.chain_id != committee.chain_id() || self.epoch != committee.epoch() {
            return Err(VertexError::WrongChain);
        }
        if !committee.contains(self.author) {
            return Err(VertexError::UnknownAuthor(self.author));
        }
        check_limit(
            "transactions",
            self.transactions.len(),
            limits.max_transactions,
        )?;
        for transaction in &self.transactions {
            if transaction.payload().is_empty() {
                return Err(VertexError::EmptyTransaction);
            }
            check_limit(
                "transaction bytes",
                transaction.payload().len(),
                limits.max_transaction_bytes,
            )?;
        }
        check_limit(
            "parents",
            self.parents.len(),
            limits.max_parents.min(committee.size()),
        )?;
        let Some(previous_round) = self.round.previous() else {
            // Genesis round: nothing to reference.
            return if self.parents.is_empty() {
                Ok(())
            } else {
                Err(VertexError::GenesisWithParents)
            };
        };
        self.check_parent_order(committee)?;
        let lowest_allowed = Round(self.round.0.saturating_sub(limits.max_parent_depth));
        for parent in &self.parents {
            if parent.round >= self.round {
                return Err(VertexError::ParentNotBelow(parent.round));
            }
            // The author's own chain link may reach back any distance (a validator that
            // was offline for a while); other authors' vertices must be recent.
            if parent.author != self.author && parent.round < lowest_allowed {
                return Err(VertexError::ParentTooOld {
                    parent: parent.round,
                    lowest: lowest_allowed,
                });
            }
        }
        // Count distinct authors, not vertices: an equivocator can sign many vertices
        // for one round, but at most one parent per author is allowed (checked above),
        // so each author counts once.
        let previous_round_authors = self
            .parents
            .iter()
            .filter(|p| p.round == previous_round)
            .count();
        if previous_round_authors < committee.quorum() {
            return Err(VertexError::TooFewParents {
                authors: previous_round_authors,
                quorum: committee.quorum(),
            });
        }
        Ok(())
    }

    /// Own parent first, then strictly ascending authors: this makes "at most one parent
    /// per author" checkable in one pass and gives each parent set one encoding.
    fn check_parent_order(&self, committee: &Committee) -> Result<(), VertexError> {
        let others = match self.parents.first() {
            Some(first) if first.author == self.author => &self.parents[1..],
            _ => &self.parents[..],
        };
        let mut previous: Option<ValidatorIndex> = None;
        for parent in others {
            if !committee.contains(parent.author) {
                return Err(VertexError::UnknownAuthor(parent.author));
            }
            if parent.author == self.author || previous.is_some_and(|p| p >= parent.author) {
                return Err(VertexError::ParentOrder);
            }
            previous = Some(parent.author);
        }
        Ok(())
    }
}

fn check_limit(field: &'static str, actual: usize, limit: usize) -> Result<(), DecodeError> {
    if actual > limit {
        Err(DecodeError::TooLarge {
            field,
            actual: u64::try_from(actual).unwrap_or(u64::MAX),
            limit: u64::try_from(limit).unwrap_or(u64::MAX),
        })
    } else {
        Ok(())
    }
}

/// Why a vertex is invalid. Every variant is permanent: the same bytes are invalid for
/// every honest replica, forever.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VertexError {
    /// Not decodable.
    #[error("undecodable vertex: {0}")]
    Decode(#[from] DecodeError),
    /// Signed for another chain or epoch.
    #[error("vertex belongs to another chain or epoch")]
    WrongChain,
    /// Author or parent author outside the validator set.
    #[error("validator {0} is not in the validator set")]
    UnknownAuthor(ValidatorIndex),
    /// The signature does not verify.
    #[error("vertex signature does not verify")]
    BadSignature,
    /// A zero-length transaction.
    #[error("vertex contains an empty transaction")]
    EmptyTransaction,
    /// A round-0 vertex names parents.
    #[error("a genesis-round vertex has no parents")]
    GenesisWithParents,
    /// Parents are not own-first then strictly ascending by author.
    #[error(
        "parents must be the author's own vertex first, then one per author in ascending order"
    )]
    ParentOrder,
    /// A parent at or above the vertex's round.
    #[error("parent round {0} is not below the vertex's round")]
    ParentNotBelow(Round),
    /// Another author's parent more than the GC depth below.
    #[error("parent round {parent} is below the lowest referencable round {lowest}")]
    ParentTooOld {
        /// The parent's round.
        parent: Round,
        /// The lowest allowed.
        lowest: Round,
    },
    /// Fewer than a quorum of distinct authors in the previous round.
    #[error("parents cover {authors} authors of the previous round, a quorum is {quorum}")]
    TooFewParents {
        /// Distinct authors in round r-1.
        authors: usize,
        /// The quorum.
        quorum: usize,
    },
    /// A parent's content does not match its reference.
    #[error("parent {hash:?} is by {actual_author} at round {actual_round}, not as referenced")]
    ParentMismatch {
        /// The parent.
        hash: Digest,
        /// Its real author.
        actual_author: ValidatorIndex,
        /// Its real round.
        actual_round: Round,
    },
    /// Created before one of its parents.
    #[error("created_at {created_at} is below parent's {parent}")]
    CreatedBeforeParent {
        /// The vertex's timestamp.
        created_at: TimestampMs,
        /// The parent's timestamp.
        parent: TimestampMs,
    },
}

/// A vertex with its canonical bytes, hash and signature. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedVertex {
    inner: Arc<SignedInner>,
}

#[derive(Debug, PartialEq, Eq)]
struct SignedInner {
    vertex: Vertex,
    encoded: Vec<u8>,
    hash: Digest,
    signature: Signature,
}

impl SignedVertex {
    fn from_parts(vertex: Vertex, encoded: Vec<u8>, signature: Signature) -> SignedVertex {
        let hash = Digest::of(&encoded);
        SignedVertex {
            inner: Arc::new(SignedInner {
                vertex,
                encoded,
                hash,
                signature,
            }),
        }
    }

    /// Attaches a signature made elsewhere (or, in unit tests of the pure core, a
    /// placeholder). The signature is not checked here.
    pub fn with_signature(vertex: Vertex, signature: Signature) -> SignedVertex {
        let encoded = vertex.encode();
        SignedVertex::from_parts(vertex, encoded, signature)
    }

    /// The signed content.
    pub fn vertex(&self) -> &Vertex {
        &self.inner.vertex
    }

    /// The canonical bytes that were hashed and signed.
    pub fn encoded(&self) -> &[u8] {
        &self.inner.encoded
    }

    /// blake3 of [`Self::encoded`].
    pub fn hash(&self) -> Digest {
        self.inner.hash
    }

    /// The ML-DSA-87 signature.
    pub fn signature(&self) -> &Signature {
        &self.inner.signature
    }

    /// This vertex as a parent reference.
    pub fn as_parent(&self) -> ParentRef {
        ParentRef {
            author: self.vertex().author,
            round: self.vertex().round,
            hash: self.hash(),
        }
    }

    /// Checks the signature against the author's key in `committee`.
    pub fn verify_signature(&self, committee: &Committee) -> Result<(), VertexError> {
        let key: &PublicKey = committee
            .public_key(self.vertex().author)
            .ok_or(VertexError::UnknownAuthor(self.vertex().author))?;
        key.verify(SigningContext::Vertex, self.encoded(), self.signature())
            .map_err(|_| VertexError::BadSignature)
    }

    /// The wire form: `u32 length, encoding, signature`.
    pub fn to_wire(&self) -> Vec<u8> {
        let encoded = self.encoded();
        let mut writer = Writer::with_capacity(4 + encoded.len() + SIGNATURE_BYTES);
        writer.u32(u32::try_from(encoded.len()).unwrap_or(u32::MAX));
        writer.raw(encoded);
        writer.raw(self.signature().as_bytes());
        writer.finish()
    }

    /// Reads the wire form within `limits`. The signature is not verified.
    pub fn from_wire(bytes: &[u8], limits: &Limits) -> Result<SignedVertex, DecodeError> {
        let mut reader = Reader::new(bytes);
        let length = u64::from(reader.u32("vertex length")?);
        let length = reader.count("vertex bytes", length, limits.max_vertex_bytes, 1)?;
        let encoded = reader.take("vertex", length)?;
        let vertex = Vertex::decode(encoded, limits)?;
        let signature_bytes = reader.take("signature", SIGNATURE_BYTES)?;
        reader.finish()?;
        let signature =
            Signature::from_bytes(signature_bytes).map_err(|e| DecodeError::Invalid {
                field: "signature",
                reason: e.to_string(),
            })?;
        Ok(SignedVertex::from_parts(
            vertex,
            encoded.to_vec(),
            signature,
        ))
    }
}
