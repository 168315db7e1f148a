//! The signed consensus messages besides vertices (a primary's vertex is the
//! pre-prepare): prepare and commit votes, checkpoints. Each has a canonical encoding
//! that begins with the chain id and epoch, and its own FIPS 204 signing context, so a
//! prepare signature can never be replayed as a commit or on another chain.
//!
//! Canonical encoding of a vote (little-endian, fixed width):
//!
//! ```text
//! chain_id  u8 length, bytes       epoch     u64
//! phase     u8: 0 prepare, 1 commit (it also picks the signing context)
//! view      u64                    sequence  u64
//! digest    u8 tag: 0 = null sequence, 1 = followed by the anchor hash [32]
//! voter     u16
//! ```
//!
//! A checkpoint is `chain_id, epoch, sequence u64, state digest [32], signer u16`. Every
//! signed type travels in the one envelope [`crate::Signed`].

use weft_crypto::{Digest, SecretKey, SigningContext, SIGNATURE_BYTES};
use weft_dag::codec::{read_chain_header, write_chain_header, DecodeError, Reader, Writer};
use weft_dag::{
    ChainId, Committee, Epoch, Limits, Round, Sequence, SignedVertex, ValidatorIndex, View,
};

use crate::signed::{Body, Signed};
use crate::view_change::{SignedNewView, SignedViewChange};

/// Everything replicas send each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A DAG vertex; a primary's vertex with a proposal is also the pre-prepare.
    Vertex(SignedVertex),
    /// A prepare or commit vote.
    Vote(SignedVote),
    /// A checkpoint vote.
    Checkpoint(SignedCheckpoint),
    /// A view change, with the certificate of the sender's stable checkpoint (empty for
    /// the genesis checkpoint).
    ViewChange {
        /// The signed view change.
        view_change: SignedViewChange,
        /// 2f + 1 checkpoint signatures for its stable checkpoint.
        certificate: Vec<SignedCheckpoint>,
    },
    /// A new view with the view changes it was computed from and the certificate of its
    /// starting checkpoint.
    NewView(Box<NewViewMessage>),
    /// "Where I am": lets peers that are ahead send what this replica missed. Unsigned:
    /// it only prompts replies that carry their own signatures.
    Status {
        /// The sender's view.
        view: View,
        /// The sender's last executed sequence.
        executed: Sequence,
        /// The round of the sender's own latest vertex (none before its first): a
        /// replica whose store was wiped learns from 2f + 1 of these where it may sign.
        round: Option<Round>,
        /// The nonce of the [`Message::StatusRequest`] this status answers; none for the
        /// periodic broadcast. A learning replica counts only answers to its own nonce:
        /// a status sent before it asked may predate its last signature.
        answers: Option<u64>,
    },
    /// "My store is empty: where are you?" A learning replica's request, answered by a
    /// [`Message::Status`] echoing `nonce`. Unsigned, like `Status`.
    StatusRequest {
        /// Drawn afresh at every start, so no status sent before it can echo it.
        nonce: u64,
    },
    /// "I hold client transactions but no quorum of `round` to build on": peers that
    /// have not built `round` yet build it even with nothing of their own to order, so a
    /// replica that alone holds work in an otherwise idle network is not stuck until the
    /// idle heartbeat. Unsigned, like `Status`: it only prompts vertices.
    Nudge {
        /// The round whose quorum the sender lacks.
        round: Round,
    },
    /// A commit certificate: 2f + 1 matching commit votes for one sequence.
    Decided(Vec<SignedVote>),
}

/// The parts of a `NewView` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewViewMessage {
    /// The primary's signed decision.
    pub new_view: SignedNewView,
    /// The view changes it names.
    pub view_changes: Vec<SignedViewChange>,
    /// The certificate of its starting checkpoint.
    pub certificate: Vec<SignedCheckpoint>,
}

/// Most checkpoint signatures in a certificate or commit votes in a decided message.
const MAX_CERTIFICATE: usize = crate::view_change::MAX_VALIDATORS;

impl Message {
    /// Checks every signature the message carries (embedded view changes and
    /// certificates included) against `committee`.
    pub fn verify(&self, committee: &Committee) -> Result<(), MessageError> {
        match self {
            Message::Vertex(vertex) => vertex
                .verify_signature(committee)
                .map_err(|_| MessageError::BadSignature),
            Message::Vote(vote) => vote.verify(committee),
            Message::Checkpoint(checkpoint) => checkpoint.verify(committee),
            Message::ViewChange {
                view_change,
                certificate,
            } => {
                view_change.verify(committee)?;
                certificate.iter().try_for_each(|c| c.verify(committee))
            }
            Message::NewView(message) => {
                message.new_view.verify(committee)?;
                message
                    .view_changes
                    .iter()
                    .try_for_each(|vc| vc.verify(committee))?;
                message
                    .certificate
                    .iter()
                    .try_for_each(|c| c.verify(committee))
            }
            Message::Status { .. } | Message::StatusRequest { .. } | Message::Nudge { .. } => {
                Ok(())
            }
            Message::Decided(votes) => votes.iter().try_for_each(|v| v.verify(committee)),
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Vertex(_) => "vertex",
            Message::Vote(vote) => match vote.vote().phase {
                Phase::Prepare => "prepare",
                Phase::Commit => "commit",
            },
            Message::Checkpoint(_) => "checkpoint",
            Message::ViewChange { .. } => "view_change",
            Message::NewView(_) => "new_view",
            Message::Status { .. } => "status",
            Message::StatusRequest { .. } => "status_request",
            Message::Nudge { .. } => "nudge",
            Message::Decided(_) => "decided",
        }
    }

    /// Wire form: a tag byte, then the variant.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(256);
        match self {
            Message::Vertex(vertex) => {
                writer.u8(0);
                writer.raw(&vertex.to_wire());
            }
            Message::Vote(vote) => {
                writer.u8(1);
                writer.raw(&vote.to_wire());
            }
            Message::Checkpoint(checkpoint) => {
                writer.u8(2);
                checkpoint.write_wire(&mut writer);
            }
            Message::ViewChange {
                view_change,
                certificate,
            } => {
                writer.u8(3);
                view_change.write_wire(&mut writer);
                write_certificate(&mut writer, certificate);
            }
            Message::NewView(message) => {
                writer.u8(4);
                message.new_view.write_wire(&mut writer);
                writer.u16(u16::try_from(message.view_changes.len()).unwrap_or(u16::MAX));
                for vc in &message.view_changes {
                    vc.write_wire(&mut writer);
                }
                write_certificate(&mut writer, &message.certificate);
            }
            Message::Status {
                view,
                executed,
                round,
                answers,
            } => {
                writer.u8(5);
                writer.u64(view.0);
                writer.u64(executed.0);
                write_optional(&mut writer, round.map(|r| r.0));
                write_optional(&mut writer, *answers);
            }
            Message::StatusRequest { nonce } => {
                writer.u8(7);
                writer.u64(*nonce);
            }
            Message::Nudge { round } => {
                writer.u8(8);
                writer.u64(round.0);
            }
            Message::Decided(votes) => {
                writer.u8(6);
                writer.u16(u16::try_from(votes.len()).unwrap_or(u16::MAX));
                for vote in votes {
                    let bytes = vote.to_wire();
                    writer.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
                    writer.raw(&bytes);
                }
            }
        }
        writer.finish()
    }

    /// Reads the wire form; every count and length is bounded before allocation.
    /// Signatures are not verified (see [`Message::verify`]).
    pub fn from_wire(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
        let mut reader = Reader::new(bytes);
        let message = match reader.u8("message tag")? {
            0 => {
                let rest = reader.take("vertex", reader.remaining())?;
                Message::Vertex(SignedVertex::from_wire(rest, limits)?)
            }
            1 => {
                let rest = reader.take("vote", reader.remaining())?;
                Message::Vote(SignedVote::from_wire(rest)?)
            }
            2 => Message::Checkpoint(Signed::read_wire(&mut reader)?),
            3 => Message::ViewChange {
                view_change: Signed::read_wire(&mut reader)?,
                certificate: read_certificate(&mut reader)?,
            },
            4 => {
                let new_view = Signed::read_wire(&mut reader)?;
                let raw = u64::from(reader.u16("view change count")?);
                let count = reader.count("view changes", raw, MAX_CERTIFICATE, 4)?;
                let mut view_changes = Vec::with_capacity(count);
                for _ in 0..count {
                    view_changes.push(Signed::read_wire(&mut reader)?);
                }
                Message::NewView(Box::new(NewViewMessage {
                    new_view,
                    view_changes,
                    certificate: read_certificate(&mut reader)?,
                }))
            }
            5 => Message::Status {
                view: View(reader.u64("view")?),
                executed: Sequence(reader.u64("executed")?),
                round: read_optional(&mut reader, "round")?.map(Round),
                answers: read_optional(&mut reader, "answers")?,
            },
            7 => Message::StatusRequest {
                nonce: reader.u64("nonce")?,
            },
            8 => Message::Nudge {
                round: Round(reader.u64("round")?),
            },
            6 => {
                let raw = u64::from(reader.u16("vote count")?);
                let count = reader.count("votes", raw, MAX_CERTIFICATE, 4)?;
                let mut votes = Vec::with_capacity(count);
                for _ in 0..count {
                    let length = u64::from(reader.u32("vote length")?);
                    let length = reader.count("vote bytes", length, 4 * SIGNATURE_BYTES, 1)?;
                    votes.push(SignedVote::from_wire(reader.take("vote", length)?)?);
                }
                Message::Decided(votes)
            }
            tag => {
                return Err(DecodeError::Invalid {
                    field: "message tag",
                    reason: format!("unknown tag {tag}"),
                })
            }
        };
        reader.finish()?;
        Ok(message)
    }
}

pub(crate) fn write_certificate(writer: &mut Writer, certificate: &[SignedCheckpoint]) {
    writer.u16(u16::try_from(certificate.len()).unwrap_or(u16::MAX));
    for checkpoint in certificate {
        checkpoint.write_wire(writer);
    }
}

/// An optional u64: a tag byte (0 none, 1 some), then the value.
fn write_optional(writer: &mut Writer, value: Option<u64>) {
    match value {
        None => writer.u8(0),
        Some(value) => {
            writer.u8(1);
            writer.u64(value);
        }
    }
}

fn read_optional(reader: &mut Reader<'_>, field: &'static str) -> Result<Option<u64>, DecodeError> {
    match reader.u8(field)? {
        0 => Ok(None),
        1 => Ok(Some(reader.u64(field)?)),
        tag => Err(DecodeError::Invalid {
            field,
            reason: format!("tag {tag} is neither 0 nor 1"),
        }),
    }
}

pub(crate) fn read_certificate(
    reader: &mut Reader<'_>,
) -> Result<Vec<SignedCheckpoint>, DecodeError> {
    let raw = u64::from(reader.u16("certificate size")?);
    let count = reader.count("certificate", raw, MAX_CERTIFICATE, 2 + SIGNATURE_BYTES)?;
    let mut certificate = Vec::with_capacity(count);
    for _ in 0..count {
        certificate.push(Signed::read_wire(reader)?);
    }
    Ok(certificate)
}

/// Which PBFT phase a vote belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Prepare: "I accept this pre-prepare for (view, sequence)".
    Prepare,
    /// Commit: "I have seen 2f+1 prepares for (view, sequence, digest)".
    Commit,
}

impl Phase {
    /// The signing context of this phase.
    pub fn context(self) -> SigningContext {
        match self {
            Phase::Prepare => SigningContext::Prepare,
            Phase::Commit => SigningContext::Commit,
        }
    }
}

/// A prepare or commit vote, unsigned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Vote {
    /// The chain.
    pub chain_id: ChainId,
    /// The validator set's epoch.
    pub epoch: Epoch,
    /// Prepare or commit.
    pub phase: Phase,
    /// The view.
    pub view: View,
    /// The sequence.
    pub sequence: Sequence,
    /// The anchor's hash, or `None` for a null sequence (after a view change).
    pub digest: Option<Digest>,
    /// Who votes.
    pub voter: ValidatorIndex,
}

/// Why a message is refused. All variants are permanent for those bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Undecodable.
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    /// For another chain or epoch.
    #[error("message belongs to another chain or epoch")]
    WrongChain,
    /// The signer is not a validator.
    #[error("validator {0} is not in the validator set")]
    UnknownSigner(ValidatorIndex),
    /// The signature does not verify.
    #[error("message signature does not verify")]
    BadSignature,
}

pub(crate) fn write_optional_digest(writer: &mut Writer, digest: Option<&Digest>) {
    match digest {
        None => writer.u8(0),
        Some(digest) => {
            writer.u8(1);
            writer.raw(digest.as_bytes());
        }
    }
}

pub(crate) fn read_optional_digest(reader: &mut Reader<'_>) -> Result<Option<Digest>, DecodeError> {
    match reader.u8("digest tag")? {
        0 => Ok(None),
        1 => Ok(Some(Digest::from_bytes(reader.array("digest")?))),
        tag => Err(DecodeError::Invalid {
            field: "digest tag",
            reason: format!("{tag} is neither 0 nor 1"),
        }),
    }
}

impl Vote {
    /// The canonical bytes that are signed.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(128);
        write_chain_header(&mut writer, &self.chain_id, self.epoch);
        writer.u8(match self.phase {
            Phase::Prepare => 0,
            Phase::Commit => 1,
        });
        writer.u64(self.view.0);
        writer.u64(self.sequence.0);
        write_optional_digest(&mut writer, self.digest.as_ref());
        writer.u16(self.voter.0);
        writer.finish()
    }

    /// Decodes a vote.
    pub fn decode(bytes: &[u8]) -> Result<Vote, DecodeError> {
        let mut reader = Reader::new(bytes);
        let (chain_id, epoch) = read_chain_header(&mut reader)?;
        let phase = match reader.u8("phase")? {
            0 => Phase::Prepare,
            1 => Phase::Commit,
            other => {
                return Err(DecodeError::Invalid {
                    field: "phase",
                    reason: format!("{other} is neither 0 nor 1"),
                })
            }
        };
        let vote = Vote {
            chain_id,
            epoch,
            phase,
            view: View(reader.u64("view")?),
            sequence: Sequence(reader.u64("sequence")?),
            digest: read_optional_digest(&mut reader)?,
            voter: ValidatorIndex(reader.u16("voter")?),
        };
        reader.finish()?;
        Ok(vote)
    }

    /// Signs the vote. ML-DSA signing is randomized: persist the result and re-send it,
    /// never sign the same vote twice.
    pub fn sign(self, secret: &SecretKey) -> SignedVote {
        Signed::sign(self, secret)
    }

    /// Signs the vote with `signer` (see [`Vote::sign`]).
    pub fn sign_with(self, signer: &crate::Signer) -> SignedVote {
        Signed::sign_with(self, signer)
    }

    /// True when `other` is a different vote for the same slot by the same voter:
    /// signing both is a proven fault.
    pub fn conflicts_with(&self, other: &Vote) -> bool {
        self.phase == other.phase
            && self.chain_id == other.chain_id
            && self.epoch == other.epoch
            && self.view == other.view
            && self.sequence == other.sequence
            && self.voter == other.voter
            && self.digest != other.digest
    }
}

impl Body for Vote {
    const MAX_BYTES: usize = 256;

    fn context(&self) -> SigningContext {
        self.phase.context()
    }

    fn encode(&self) -> Vec<u8> {
        Vote::encode(self)
    }

    fn decode(bytes: &[u8]) -> Result<Vote, DecodeError> {
        Vote::decode(bytes)
    }

    fn signer(&self) -> ValidatorIndex {
        self.voter
    }

    fn chain(&self) -> (&ChainId, Epoch) {
        (&self.chain_id, self.epoch)
    }
}

/// A vote with its canonical bytes and signature.
pub type SignedVote = Signed<Vote>;

impl Signed<Vote> {
    /// The vote.
    pub fn vote(&self) -> &Vote {
        self.body()
    }
}

/// A checkpoint vote: "after `sequence`, my chained state digest is `state_digest`".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// The chain.
    pub chain_id: ChainId,
    /// The validator set's epoch.
    pub epoch: Epoch,
    /// The last sequence covered.
    pub sequence: Sequence,
    /// The chained state digest after it.
    pub state_digest: Digest,
    /// Who signs.
    pub signer: ValidatorIndex,
}

impl Checkpoint {
    /// The canonical bytes that are signed.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(128);
        write_chain_header(&mut writer, &self.chain_id, self.epoch);
        writer.u64(self.sequence.0);
        writer.raw(self.state_digest.as_bytes());
        writer.u16(self.signer.0);
        writer.finish()
    }

    /// Decodes a checkpoint.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, DecodeError> {
        let mut reader = Reader::new(bytes);
        let (chain_id, epoch) = read_chain_header(&mut reader)?;
        let checkpoint = Checkpoint {
            chain_id,
            epoch,
            sequence: Sequence(reader.u64("sequence")?),
            state_digest: Digest::from_bytes(reader.array("state digest")?),
            signer: ValidatorIndex(reader.u16("signer")?),
        };
        reader.finish()?;
        Ok(checkpoint)
    }

    /// Signs the checkpoint with `signer`.
    pub fn sign_with(self, signer: &crate::Signer) -> SignedCheckpoint {
        Signed::sign_with(self, signer)
    }

    /// Signs the checkpoint.
    pub fn sign(self, secret: &SecretKey) -> SignedCheckpoint {
        Signed::sign(self, secret)
    }
}

impl Body for Checkpoint {
    const MAX_BYTES: usize = 256;

    fn context(&self) -> SigningContext {
        SigningContext::Checkpoint
    }

    fn encode(&self) -> Vec<u8> {
        Checkpoint::encode(self)
    }

    fn decode(bytes: &[u8]) -> Result<Checkpoint, DecodeError> {
        Checkpoint::decode(bytes)
    }

    fn signer(&self) -> ValidatorIndex {
        self.signer
    }

    fn chain(&self) -> (&ChainId, Epoch) {
        (&self.chain_id, self.epoch)
    }
}

/// A checkpoint with its canonical bytes and signature.
pub type SignedCheckpoint = Signed<Checkpoint>;

impl Signed<Checkpoint> {
    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        self.body()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use weft_dag::testing::{committee, test_chain};

    fn vote(phase: Phase, digest: Option<Digest>) -> Vote {
        Vote {
            chain_id: test_chain(),
            epoch: Epoch(0),
            phase,
            view: View(3),
            sequence: Sequence(7),
            digest,
            voter: ValidatorIndex(1),
        }
    }

    #[test]
    fn votes_verify_and_bind_their_phase() {
        let (committee, keys) = committee(4);
        let prepare = vote(Phase::Prepare, Some(Digest::of(b"anchor"))).sign(&keys[1].secret);
        assert_eq!(prepare.verify(&committee), Ok(()));
        // The phase is in the signed bytes and picks the signing context: the same
        // signature on the bytes relabelled as a commit does not verify.
        let mut wire = prepare.to_wire();
        let phase_at = 4 + 1 + test_chain().as_str().len() + 8;
        assert_eq!(wire[phase_at], 0, "the phase byte follows the chain header");
        wire[phase_at] = 1;
        let as_commit = SignedVote::from_wire(&wire).expect("still decodes");
        assert_eq!(as_commit.vote().phase, Phase::Commit);
        assert_eq!(
            as_commit.verify(&committee),
            Err(MessageError::BadSignature)
        );
        // Signed by another validator's key.
        let forged = vote(Phase::Prepare, None).sign(&keys[2].secret);
        assert_eq!(forged.verify(&committee), Err(MessageError::BadSignature));
    }

    #[test]
    fn wire_round_trips() {
        let (_, keys) = committee(4);
        for signed in [
            vote(Phase::Prepare, None).sign(&keys[1].secret),
            vote(Phase::Commit, Some(Digest::of(b"a"))).sign(&keys[1].secret),
        ] {
            assert_eq!(SignedVote::from_wire(&signed.to_wire()), Ok(signed));
        }
    }

    #[test]
    fn conflicting_votes_are_recognized() {
        let a = vote(Phase::Prepare, Some(Digest::of(b"a")));
        let b = vote(Phase::Prepare, Some(Digest::of(b"b")));
        assert!(a.conflicts_with(&b));
        assert!(!a.conflicts_with(&a));
        let other_phase = vote(Phase::Commit, Some(Digest::of(b"b")));
        assert!(!a.conflicts_with(&other_phase));
        assert!(a.conflicts_with(&vote(Phase::Prepare, None)));
    }

    #[test]
    fn checkpoints_verify() {
        let (committee, keys) = committee(4);
        let checkpoint = Checkpoint {
            chain_id: test_chain(),
            epoch: Epoch(0),
            sequence: Sequence(100),
            state_digest: Digest::of(b"state"),
            signer: ValidatorIndex(2),
        };
        assert_eq!(
            Checkpoint::decode(&checkpoint.encode()),
            Ok(checkpoint.clone())
        );
        let signed = checkpoint.sign(&keys[2].secret);
        assert_eq!(signed.verify(&committee), Ok(()));
        assert_eq!(signed.checkpoint().sequence, Sequence(100));
    }

    proptest! {
        #[test]
        fn vote_decoding_never_panics_and_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(decoded) = Vote::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes.clone());
            }
            let _ = SignedVote::from_wire(&bytes);
            if let Ok(decoded) = Checkpoint::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }
    }
}
