//! Finality proofs a client checks against the genesis file alone (README, "Verifying
//! a transaction proof").
//!
//! A proof that transaction `t` was finalized at sequence `s` carries the finalized
//! entries `s..=S` up to a stable checkpoint `S`, the chained state digest before `s`,
//! and 2f + 1 distinct validators' signed checkpoints for `(S, digest after S)`. The
//! verifier recomputes the chain from the given previous digest through the entries and
//! checks that the signatures name the digest it reached. The signed digest commits, by
//! blake3's collision resistance, to every entry of the chain, among them `t`'s place
//! (vertex and position) in entry `s`, so a proof for any other place would need a
//! collision; an honest validator signs a checkpoint only for the state it executed, and
//! 2f + 1 signers include f + 1 honest ones, so the state is the ledger's.
//!
//! Byte layout (little-endian integers, `digest` = 32 bytes):
//!
//! ```text
//! proof       = "weft/proof/v1" chain_header tx_id:digest vertex:digest position:u32
//!               previous:digest entry_count:u32 entry{entry_count}
//!               signature_count:u16 signed_checkpoint{signature_count}
//! chain_header = chain_id_length:u8 chain_id epoch:u64
//! entry       = sequence:u64 anchor_flag:u8 [anchor:digest if flag = 1] consensus_time:u64
//!               vertex_count:u64 vertex:digest{vertex_count}
//!               transaction_count:u64 (id:digest vertex:digest position:u32){transaction_count}
//! signed_checkpoint = body_length:u32 body signature:[4627]
//! body        = chain_header sequence:u64 state_digest:digest signer:u16
//! ```

use std::collections::BTreeSet;

use weft_crypto::{Digest, SigningContext, SIGNATURE_BYTES};
use weft_dag::codec::{read_chain_header, write_chain_header, DecodeError, Reader, Writer};
use weft_dag::{
    chain_digest, ChainId, Committee, Epoch, FinalizedEntry, FinalizedTransaction, Sequence,
    TimestampMs, TxId,
};

use crate::messages::{Checkpoint, SignedCheckpoint};
use crate::Signed;

/// The proof's first bytes (and version).
pub const PROOF_MAGIC: &[u8] = b"weft/proof/v1";
/// Most entries one proof carries (a validator answers with the first stable checkpoint
/// at or above the transaction's sequence, so a proof spans about one checkpoint
/// interval; more is refused before anything is allocated).
pub const MAX_PROOF_ENTRIES: usize = 4_096;
/// Most vertices or transactions one entry of a proof lists.
pub const MAX_PROOF_ENTRY_ITEMS: usize = 1 << 20;
/// Most signatures a proof carries (a committee's size is at most this).
pub const MAX_PROOF_SIGNATURES: usize = 1_024;

/// One finalized entry as a proof carries it: what the chained digest covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofEntry {
    /// Its sequence.
    pub sequence: Sequence,
    /// The committed anchor, or none for a null sequence.
    pub anchor: Option<Digest>,
    /// Its consensus time.
    pub consensus_time: TimestampMs,
    /// The vertices it finalized, in order.
    pub vertices: Vec<Digest>,
    /// The transactions it finalized: id, vertex and position, in order.
    pub transactions: Vec<(TxId, Digest, u32)>,
}

impl ProofEntry {
    fn of(entry: &FinalizedEntry) -> ProofEntry {
        ProofEntry {
            sequence: entry.sequence,
            anchor: entry.anchor,
            consensus_time: entry.consensus_time,
            vertices: entry.vertices.clone(),
            transactions: entry
                .transactions
                .iter()
                .map(|t| (t.id, t.vertex, t.position))
                .collect(),
        }
    }

    fn chained(&self, previous: &Digest) -> Digest {
        // The expiry is not part of the chained digest (the id covers it).
        let transactions: Vec<FinalizedTransaction> = self
            .transactions
            .iter()
            .map(|(id, vertex, position)| FinalizedTransaction {
                id: *id,
                vertex: *vertex,
                position: *position,
                expires_at: TimestampMs(0),
            })
            .collect();
        chain_digest(
            previous,
            self.sequence,
            self.anchor.as_ref(),
            self.consensus_time,
            &self.vertices,
            &transactions,
        )
    }
}

/// A self-contained proof that one transaction was finalized at one sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionProof {
    /// The chain.
    pub chain_id: ChainId,
    /// The validator set's epoch.
    pub epoch: Epoch,
    /// The transaction.
    pub tx_id: TxId,
    /// The vertex that carried it.
    pub vertex: Digest,
    /// Its index among that vertex's transactions.
    pub position: u32,
    /// The chained state digest before the first entry.
    pub previous: Digest,
    /// The entries from the transaction's to the checkpoint's.
    pub entries: Vec<ProofEntry>,
    /// 2f + 1 signed checkpoints of the last entry's sequence and digest.
    pub signatures: Vec<SignedCheckpoint>,
}

/// What a valid proof establishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProvenFinality {
    /// The transaction.
    pub tx_id: TxId,
    /// The sequence that finalized it.
    pub sequence: Sequence,
    /// The vertex that carried it.
    pub vertex: Digest,
    /// Its index among that vertex's transactions.
    pub position: u32,
    /// That sequence's consensus time.
    pub consensus_time: TimestampMs,
    /// The stable checkpoint the signatures certify.
    pub checkpoint: Sequence,
    /// How many distinct validators signed it.
    pub signers: usize,
}

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The bytes do not follow the layout (or exceed a bound).
    #[error("malformed proof: {0}")]
    Malformed(String),
    /// It names another chain or epoch than the genesis.
    #[error("the proof is for chain {chain} epoch {epoch}, not this genesis")]
    WrongChain {
        /// The chain it names.
        chain: String,
        /// The epoch it names.
        epoch: u64,
    },
    /// It carries no entry.
    #[error("the proof carries no entry")]
    NoEntries,
    /// The first entry does not list the transaction at the stated place.
    #[error("the first entry does not finalize the transaction at that vertex and position")]
    NotInEntry,
    /// Entries are not consecutive.
    #[error("entry {got} follows entry {after}")]
    Gap {
        /// The entry before.
        after: u64,
        /// The one found next.
        got: u64,
    },
    /// A signed checkpoint does not name the recomputed digest or the last sequence.
    #[error("signature {index} certifies another state than the entries lead to")]
    OtherState {
        /// Its position in the proof.
        index: usize,
    },
    /// A signer outside the validator set.
    #[error("signature {index}: validator {signer} is not in the genesis")]
    UnknownSigner {
        /// Its position in the proof.
        index: usize,
        /// The signer named.
        signer: u16,
    },
    /// One validator signed twice.
    #[error("validator {signer} signs more than once")]
    RepeatedSigner {
        /// The signer.
        signer: u16,
    },
    /// An ML-DSA-87 signature does not verify.
    #[error("signature {index} (validator {signer}) does not verify")]
    BadSignature {
        /// Its position in the proof.
        index: usize,
        /// The signer named.
        signer: u16,
    },
    /// Fewer than 2f + 1 distinct signers.
    #[error("{have} distinct signers, {need} needed")]
    TooFewSigners {
        /// Distinct valid signers.
        have: usize,
        /// The quorum.
        need: usize,
    },
}

impl From<DecodeError> for ProofError {
    fn from(error: DecodeError) -> ProofError {
        ProofError::Malformed(error.to_string())
    }
}

impl TransactionProof {
    /// The proof for `tx_id` from the entries `entries` (the first finalized it, the last
    /// is the certified checkpoint's), the digest before them and the certificate.
    /// `None` when the first entry does not hold the transaction.
    pub fn build(
        tx_id: TxId,
        previous: Digest,
        entries: &[FinalizedEntry],
        certificate: &[SignedCheckpoint],
    ) -> Option<TransactionProof> {
        let first = entries.first()?;
        let placed = first.transactions.iter().find(|t| t.id == tx_id)?;
        let checkpoint = certificate.first()?.checkpoint();
        Some(TransactionProof {
            chain_id: checkpoint.chain_id.clone(),
            epoch: checkpoint.epoch,
            tx_id,
            vertex: placed.vertex,
            position: placed.position,
            previous,
            entries: entries.iter().map(ProofEntry::of).collect(),
            signatures: certificate.to_vec(),
        })
    }

    /// The bytes (see the module's layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(
            256 + self.signatures.len() * (SIGNATURE_BYTES + 128)
                + self
                    .entries
                    .iter()
                    .map(|e| 64 + 32 * e.vertices.len() + 68 * e.transactions.len())
                    .sum::<usize>(),
        );
        writer.raw(PROOF_MAGIC);
        write_chain_header(&mut writer, &self.chain_id, self.epoch);
        writer.raw(self.tx_id.0.as_bytes());
        writer.raw(self.vertex.as_bytes());
        writer.u32(self.position);
        writer.raw(self.previous.as_bytes());
        writer.u32(u32::try_from(self.entries.len()).unwrap_or(u32::MAX));
        for entry in &self.entries {
            writer.u64(entry.sequence.0);
            match &entry.anchor {
                None => writer.u8(0),
                Some(anchor) => {
                    writer.u8(1);
                    writer.raw(anchor.as_bytes());
                }
            }
            writer.u64(entry.consensus_time.0);
            writer.u64(entry.vertices.len() as u64);
            for vertex in &entry.vertices {
                writer.raw(vertex.as_bytes());
            }
            writer.u64(entry.transactions.len() as u64);
            for (id, vertex, position) in &entry.transactions {
                writer.raw(id.0.as_bytes());
                writer.raw(vertex.as_bytes());
                writer.u32(*position);
            }
        }
        writer.u16(u16::try_from(self.signatures.len()).unwrap_or(u16::MAX));
        for signed in &self.signatures {
            signed.write_wire(&mut writer);
        }
        writer.finish()
    }

    /// Parses the bytes, every count bounded before anything is allocated.
    pub fn decode(bytes: &[u8]) -> Result<TransactionProof, ProofError> {
        let mut reader = Reader::new(bytes);
        let magic = reader.take("magic", PROOF_MAGIC.len())?;
        if magic != PROOF_MAGIC {
            return Err(ProofError::Malformed(
                "not a weft/proof/v1 proof".to_string(),
            ));
        }
        let (chain_id, epoch) = read_chain_header(&mut reader)?;
        let tx_id = TxId(Digest::from_bytes(reader.array("tx id")?));
        let vertex = Digest::from_bytes(reader.array("vertex")?);
        let position = reader.u32("position")?;
        let previous = Digest::from_bytes(reader.array("previous digest")?);
        let raw = u64::from(reader.u32("entry count")?);
        let count = reader.count("entries", raw, MAX_PROOF_ENTRIES, 8 + 1 + 8 + 8 + 8)?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let sequence = Sequence(reader.u64("sequence")?);
            let anchor = match reader.u8("anchor flag")? {
                0 => None,
                1 => Some(Digest::from_bytes(reader.array("anchor")?)),
                other => {
                    return Err(ProofError::Malformed(format!("anchor flag {other}")));
                }
            };
            let consensus_time = TimestampMs(reader.u64("consensus time")?);
            let raw = reader.u64("vertex count")?;
            let vertex_count = reader.count("vertices", raw, MAX_PROOF_ENTRY_ITEMS, 32)?;
            let mut vertices = Vec::with_capacity(vertex_count);
            for _ in 0..vertex_count {
                vertices.push(Digest::from_bytes(reader.array("vertex")?));
            }
            let raw = reader.u64("transaction count")?;
            let tx_count = reader.count("transactions", raw, MAX_PROOF_ENTRY_ITEMS, 68)?;
            let mut transactions = Vec::with_capacity(tx_count);
            for _ in 0..tx_count {
                let id = TxId(Digest::from_bytes(reader.array("transaction id")?));
                let vertex = Digest::from_bytes(reader.array("transaction vertex")?);
                let position = reader.u32("transaction position")?;
                transactions.push((id, vertex, position));
            }
            entries.push(ProofEntry {
                sequence,
                anchor,
                consensus_time,
                vertices,
                transactions,
            });
        }
        let raw = u64::from(reader.u16("signature count")?);
        let count = reader.count("signatures", raw, MAX_PROOF_SIGNATURES, 4 + SIGNATURE_BYTES)?;
        let mut signatures = Vec::with_capacity(count);
        for _ in 0..count {
            signatures.push(Signed::read_wire(&mut reader)?);
        }
        reader.finish()?;
        Ok(TransactionProof {
            chain_id,
            epoch,
            tx_id,
            vertex,
            position,
            previous,
            entries,
            signatures,
        })
    }

    /// Checks the proof against `committee` (the genesis validator set): the chain,
    /// the transaction's place in the first entry, consecutive entries, the recomputed
    /// digest, and 2f + 1 distinct valid signatures over the checkpoint it reaches.
    pub fn verify(&self, committee: &Committee) -> Result<ProvenFinality, ProofError> {
        if &self.chain_id != committee.chain_id() || self.epoch != committee.epoch() {
            return Err(ProofError::WrongChain {
                chain: self.chain_id.as_str().to_string(),
                epoch: self.epoch.0,
            });
        }
        let first = self.entries.first().ok_or(ProofError::NoEntries)?;
        if !first
            .transactions
            .contains(&(self.tx_id, self.vertex, self.position))
        {
            return Err(ProofError::NotInEntry);
        }
        let mut digest = self.previous;
        let mut last = None::<Sequence>;
        for entry in &self.entries {
            if let Some(last) = last {
                if last.0.checked_add(1) != Some(entry.sequence.0) {
                    return Err(ProofError::Gap {
                        after: last.0,
                        got: entry.sequence.0,
                    });
                }
            }
            last = Some(entry.sequence);
            digest = entry.chained(&digest);
        }
        let checkpoint = last.ok_or(ProofError::NoEntries)?;
        let signers = verify_certificate(committee, checkpoint, &digest, &self.signatures)?;
        Ok(ProvenFinality {
            tx_id: self.tx_id,
            sequence: first.sequence,
            vertex: self.vertex,
            position: self.position,
            consensus_time: first.consensus_time,
            checkpoint,
            signers,
        })
    }
}

/// The signatures of `certificate` a verifier counts for `(checkpoint, digest)`: the first
/// one of each member that signs exactly that on this chain and epoch, in order. (The
/// replica counts distinct matching signers and may keep extras it was given; proofs
/// and sync answers carry only these.)
pub fn distinct_certificate(
    committee: &Committee,
    checkpoint: Sequence,
    digest: &Digest,
    certificate: &[SignedCheckpoint],
) -> Vec<SignedCheckpoint> {
    let mut signers = BTreeSet::new();
    certificate
        .iter()
        .filter(|signed| {
            let body = signed.checkpoint();
            body.sequence == checkpoint
                && body.state_digest == *digest
                && &body.chain_id == committee.chain_id()
                && body.epoch == committee.epoch()
                && committee.contains(body.signer)
                && signers.insert(body.signer)
        })
        .cloned()
        .collect()
}

/// Checks that `signatures` certify `(checkpoint, digest)` for `committee` (the genesis
/// validator set): every one signs that sequence and digest on this chain and epoch, by
/// a member, at most once per member, with a valid ML-DSA-87 signature, and at least
/// 2f + 1 of them. Returns how many distinct validators signed. State sync and finality
/// proofs both trust a checkpoint on this and nothing else.
pub fn verify_certificate(
    committee: &Committee,
    checkpoint: Sequence,
    digest: &Digest,
    signatures: &[SignedCheckpoint],
) -> Result<usize, ProofError> {
    let mut signers = BTreeSet::new();
    for (index, signed) in signatures.iter().enumerate() {
        let body: &Checkpoint = signed.checkpoint();
        let signer = body.signer;
        if body.sequence != checkpoint || body.state_digest != *digest {
            return Err(ProofError::OtherState { index });
        }
        if &body.chain_id != committee.chain_id() || body.epoch != committee.epoch() {
            return Err(ProofError::WrongChain {
                chain: body.chain_id.as_str().to_string(),
                epoch: body.epoch.0,
            });
        }
        let key = committee
            .public_key(signer)
            .ok_or(ProofError::UnknownSigner {
                index,
                signer: signer.0,
            })?;
        if !signers.insert(signer) {
            return Err(ProofError::RepeatedSigner { signer: signer.0 });
        }
        key.verify(
            SigningContext::Checkpoint,
            signed.encoded(),
            signed.signature(),
        )
        .map_err(|_| ProofError::BadSignature {
            index,
            signer: signer.0,
        })?;
    }
    let need = committee.quorum();
    if signers.len() < need {
        return Err(ProofError::TooFewSigners {
            have: signers.len(),
            need,
        });
    }
    Ok(signers.len())
}

/// A stored stable-checkpoint certificate: `sequence:u64 state_digest:digest
/// count:u16 signed_checkpoint{count}` (what a validator keeps to answer proofs).
pub fn encode_certificate(
    sequence: Sequence,
    state_digest: &Digest,
    certificate: &[SignedCheckpoint],
) -> Vec<u8> {
    let mut writer = Writer::with_capacity(48 + certificate.len() * (SIGNATURE_BYTES + 128));
    writer.u64(sequence.0);
    writer.raw(state_digest.as_bytes());
    writer.u16(u16::try_from(certificate.len()).unwrap_or(u16::MAX));
    for signed in certificate {
        signed.write_wire(&mut writer);
    }
    writer.finish()
}

/// Reads what [`encode_certificate`] wrote.
pub fn decode_certificate(
    bytes: &[u8],
) -> Result<(Sequence, Digest, Vec<SignedCheckpoint>), DecodeError> {
    let mut reader = Reader::new(bytes);
    let sequence = Sequence(reader.u64("sequence")?);
    let digest = Digest::from_bytes(reader.array("state digest")?);
    let raw = u64::from(reader.u16("certificate size")?);
    let count = reader.count(
        "certificate",
        raw,
        MAX_PROOF_SIGNATURES,
        4 + SIGNATURE_BYTES,
    )?;
    let mut certificate = Vec::with_capacity(count);
    for _ in 0..count {
        certificate.push(Signed::read_wire(&mut reader)?);
    }
    reader.finish()?;
    Ok((sequence, digest, certificate))
}
