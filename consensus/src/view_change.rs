//! View-change messages (TOCS 2002 PBFT, with claims instead of certificates) and the
//! deterministic rule that turns 2f + 1 view changes into the new view's proposals.
//!
//! A `ViewChange(v', h, P, Q)` names the sender's stable checkpoint h and two sets of
//! *claims* `(sequence, digest, view)`: P, what it prepared (sent a commit for), and Q,
//! what it pre-prepared (sent a prepare for, or proposed). Claims are not proofs, so a
//! view change stays a few hundred bytes at any n; the rule below is safe anyway because
//! it needs 2f + 1 senders to agree that nothing conflicting prepared (A1) and f + 1 to
//! vouch for the pre-prepare (A2), so at least one honest replica stands behind every
//! choice.
//!
//! Canonical encodings (little-endian, after the chain header):
//!
//! ```text
//! ViewChange: view u64, stable sequence u64, stable digest [32],
//!             u16 count, P claims, u16 count, Q claims, replica u16
//!   claim:    sequence u64, view u64, digest tag u8 (0 null, 1 + [32])
//! NewView:    view u64, primary u16, stable sequence u64, stable digest [32],
//!             u16 count, (sequence u64, digest tag, [32]?) proposals,
//!             u16 count, view-change hashes [32]
//! ```

use std::collections::BTreeMap;

use weft_crypto::{Digest, SigningContext};
use weft_dag::codec::{read_chain_header, write_chain_header, DecodeError, Reader, Writer};
use weft_dag::{ChainId, Epoch, Sequence, ValidatorIndex, View};

use crate::messages::{read_optional_digest, write_optional_digest};
pub use crate::signed::{Body, Signed};

/// Most claims or proposals in one message: far above any window.
pub const MAX_CLAIMS: usize = 4_096;
/// Most view changes carried by a new view (the largest supported validator set).
pub const MAX_VALIDATORS: usize = 1_024;
/// Most pre-prepared (Q) claims per sequence in one view change: the newest digest and
/// the one the sender's prepared claim names. P holds at most one claim per sequence, so
/// with the window rule P has at most W claims and Q at most 2W.
pub const MAX_Q_PER_SEQUENCE: usize = 2;

/// Why a view change's claims are refused (the whole view change is then invalid).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// A claim outside (h, h + W] of the sender's stable checkpoint h.
    #[error("claim for sequence {sequence} outside ({stable}, {stable} + W]")]
    OutsideWindow {
        /// The claimed sequence.
        sequence: Sequence,
        /// The sender's stable checkpoint.
        stable: Sequence,
    },
    /// A claim from a view at or above the view change's own view.
    #[error("claim from view {claim} in a view change to view {view}")]
    FutureView {
        /// The claim's view.
        claim: View,
        /// The view change's view.
        view: View,
    },
    /// Two prepared claims for one sequence, or too many pre-prepared ones.
    #[error("too many claims for sequence {0}")]
    TooMany(Sequence),
}

/// "In `view` I (pre-)prepared `digest` (null when `None`) for `sequence`."
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Claim {
    /// The sequence.
    pub sequence: Sequence,
    /// The view in which it happened.
    pub view: View,
    /// The anchor, or null.
    pub digest: Option<Digest>,
}

/// `ViewChange(v', h, P, Q)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewChange {
    /// The chain.
    pub chain_id: ChainId,
    /// The validator set's epoch.
    pub epoch: Epoch,
    /// The view the sender moves to.
    pub view: View,
    /// The sender's stable checkpoint.
    pub stable_sequence: Sequence,
    /// Its state digest.
    pub stable_digest: Digest,
    /// P: what the sender prepared above h (the highest view per sequence).
    pub prepared: Vec<Claim>,
    /// Q: what it pre-prepared above h (the highest view per sequence and digest).
    pub pre_prepared: Vec<Claim>,
    /// The sender.
    pub replica: ValidatorIndex,
}

/// A signed view change.
pub type SignedViewChange = Signed<ViewChange>;

impl ViewChange {
    /// The window rule on claims: every claim lies in (h, h + W] above the sender's
    /// stable checkpoint h and comes from a view below this view change's; P names a
    /// sequence at most once, Q at most [`MAX_Q_PER_SEQUENCE`] times (so P is at most W
    /// long and Q at most 2W). Without it one far claim (h + 5,000, or near `u64::MAX`)
    /// makes every honest primary's NewView undecodable or its decision endless (finding
    /// 2 of the review).
    pub fn check_claims(&self, window: u64) -> Result<(), ClaimError> {
        let stable = self.stable_sequence;
        let top = stable.0.checked_add(window);
        let mut prepared: BTreeMap<Sequence, usize> = BTreeMap::new();
        let mut pre_prepared: BTreeMap<Sequence, usize> = BTreeMap::new();
        for (claims, counts, most) in [
            (&self.prepared, &mut prepared, 1),
            (&self.pre_prepared, &mut pre_prepared, MAX_Q_PER_SEQUENCE),
        ] {
            for claim in claims {
                if claim.sequence <= stable || top.is_none_or(|top| claim.sequence.0 > top) {
                    return Err(ClaimError::OutsideWindow {
                        sequence: claim.sequence,
                        stable,
                    });
                }
                if claim.view >= self.view {
                    return Err(ClaimError::FutureView {
                        claim: claim.view,
                        view: self.view,
                    });
                }
                let count = counts.entry(claim.sequence).or_insert(0);
                *count += 1;
                if *count > most {
                    return Err(ClaimError::TooMany(claim.sequence));
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn write_claims(writer: &mut Writer, claims: &[Claim]) {
    writer.u16(u16::try_from(claims.len()).unwrap_or(u16::MAX));
    for claim in claims {
        writer.u64(claim.sequence.0);
        writer.u64(claim.view.0);
        write_optional_digest(writer, claim.digest.as_ref());
    }
}

pub(crate) fn read_claims(reader: &mut Reader<'_>) -> Result<Vec<Claim>, DecodeError> {
    let raw = u64::from(reader.u16("claim count")?);
    let count = reader.count("claims", raw, MAX_CLAIMS, 17)?;
    let mut claims = Vec::with_capacity(count);
    for _ in 0..count {
        claims.push(Claim {
            sequence: Sequence(reader.u64("claim sequence")?),
            view: View(reader.u64("claim view")?),
            digest: read_optional_digest(reader)?,
        });
    }
    Ok(claims)
}

impl Body for ViewChange {
    const MAX_BYTES: usize = 1 << 20;

    fn context(&self) -> SigningContext {
        SigningContext::ViewChange
    }

    fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(128 + 50 * self.prepared.len());
        write_chain_header(&mut writer, &self.chain_id, self.epoch);
        writer.u64(self.view.0);
        writer.u64(self.stable_sequence.0);
        writer.raw(self.stable_digest.as_bytes());
        write_claims(&mut writer, &self.prepared);
        write_claims(&mut writer, &self.pre_prepared);
        writer.u16(self.replica.0);
        writer.finish()
    }

    fn decode(bytes: &[u8]) -> Result<ViewChange, DecodeError> {
        let mut reader = Reader::new(bytes);
        let (chain_id, epoch) = read_chain_header(&mut reader)?;
        let view_change = ViewChange {
            chain_id,
            epoch,
            view: View(reader.u64("view")?),
            stable_sequence: Sequence(reader.u64("stable sequence")?),
            stable_digest: Digest::from_bytes(reader.array("stable digest")?),
            prepared: read_claims(&mut reader)?,
            pre_prepared: read_claims(&mut reader)?,
            replica: ValidatorIndex(reader.u16("replica")?),
        };
        reader.finish()?;
        Ok(view_change)
    }

    fn signer(&self) -> ValidatorIndex {
        self.replica
    }

    fn chain(&self) -> (&ChainId, Epoch) {
        (&self.chain_id, self.epoch)
    }
}

/// `NewView(v', h, proposals)`: the new primary's decision, with the hashes of the view
/// changes it was computed from (the view changes travel next to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewView {
    /// The chain.
    pub chain_id: ChainId,
    /// The validator set's epoch.
    pub epoch: Epoch,
    /// The new view.
    pub view: View,
    /// Its primary.
    pub primary: ValidatorIndex,
    /// The checkpoint the new view starts from.
    pub stable_sequence: Sequence,
    /// Its state digest.
    pub stable_digest: Digest,
    /// The anchor (or null) of every sequence in (h, max-s], ascending.
    pub proposals: Vec<(Sequence, Option<Digest>)>,
    /// blake3 of each view change used, in sender order.
    pub view_changes: Vec<Digest>,
}

/// A signed new view.
pub type SignedNewView = Signed<NewView>;

impl Body for NewView {
    const MAX_BYTES: usize = 1 << 20;

    fn context(&self) -> SigningContext {
        SigningContext::NewView
    }

    fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(128 + 41 * self.proposals.len());
        write_chain_header(&mut writer, &self.chain_id, self.epoch);
        writer.u64(self.view.0);
        writer.u16(self.primary.0);
        writer.u64(self.stable_sequence.0);
        writer.raw(self.stable_digest.as_bytes());
        writer.u16(u16::try_from(self.proposals.len()).unwrap_or(u16::MAX));
        for (sequence, digest) in &self.proposals {
            writer.u64(sequence.0);
            write_optional_digest(&mut writer, digest.as_ref());
        }
        writer.u16(u16::try_from(self.view_changes.len()).unwrap_or(u16::MAX));
        for hash in &self.view_changes {
            writer.raw(hash.as_bytes());
        }
        writer.finish()
    }

    fn decode(bytes: &[u8]) -> Result<NewView, DecodeError> {
        let mut reader = Reader::new(bytes);
        let (chain_id, epoch) = read_chain_header(&mut reader)?;
        let view = View(reader.u64("view")?);
        let primary = ValidatorIndex(reader.u16("primary")?);
        let stable_sequence = Sequence(reader.u64("stable sequence")?);
        let stable_digest = Digest::from_bytes(reader.array("stable digest")?);
        let raw = u64::from(reader.u16("proposal count")?);
        let count = reader.count("proposals", raw, MAX_CLAIMS, 9)?;
        let mut proposals = Vec::with_capacity(count);
        for _ in 0..count {
            let sequence = Sequence(reader.u64("proposal sequence")?);
            proposals.push((sequence, read_optional_digest(&mut reader)?));
        }
        let raw = u64::from(reader.u16("view change count")?);
        let count = reader.count("view changes", raw, MAX_VALIDATORS, 32)?;
        let mut view_changes = Vec::with_capacity(count);
        for _ in 0..count {
            view_changes.push(Digest::from_bytes(reader.array("view change hash")?));
        }
        reader.finish()?;
        Ok(NewView {
            chain_id,
            epoch,
            view,
            primary,
            stable_sequence,
            stable_digest,
            proposals,
            view_changes,
        })
    }

    fn signer(&self) -> ValidatorIndex {
        self.primary
    }

    fn chain(&self) -> (&ChainId, Epoch) {
        (&self.chain_id, self.epoch)
    }
}

/// What a set of view changes decides for the new view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// h: the highest stable checkpoint among the view changes.
    pub stable_sequence: Sequence,
    /// Its digest.
    pub stable_digest: Digest,
    /// The index of a view change that claims h (its certificate is used).
    pub stable_from: ValidatorIndex,
    /// (h, max-s] with an anchor or null each.
    pub proposals: Vec<(Sequence, Option<Digest>)>,
}

/// The TOCS 2002 rule, on claims. For every sequence n in (h, max-s], where h is the
/// highest stable checkpoint and max-s the highest prepared claim:
///
/// - **A**: choose d if some view change claims it prepared (n, d, v), and
///   A1: 2f + 1 view changes either claim no prepare for n, or one in a view below v,
///   or exactly (n, d, v); and A2: f + 1 claim they pre-prepared (n, d, v') with v' >= v.
/// - **B**: choose null if 2f + 1 view changes claim no prepare for n.
///
/// Returns `None` when some sequence has no decision yet: the primary waits for more view
/// changes (with all 3f + 1 an honest set always decides). Safety: if (n, d) committed in
/// some view v, 2f + 1 replicas prepared it, so f + 1 honest ones did; any 2f + 1 view
/// changes include at least one of them (f + 1 + 2f + 1 > 3f + 1), which claims
/// (n, d, v'') with v'' >= v, and no conflicting prepare can have a view at or above v
/// (it would have needed prepares from honest replicas that had committed to d, and
/// every later NewView re-proposed d), so A1 fails for every other digest and B fails.
///
/// `view_changes` must all be for one view and from distinct senders.
///
/// `window` is W: the decision never reaches past h + W (claims beyond are ignored; valid
/// view changes have none, see [`ViewChange::check_claims`]). `None` is the old,
/// unbounded rule, kept only for the `UnboundedClaims` mutant (capped so the simulator
/// still terminates).
pub fn decide(
    view_changes: &[&ViewChange],
    max_faulty: usize,
    window: Option<u64>,
) -> Option<Decision> {
    let quorum = 2 * max_faulty + 1;
    if view_changes.len() < quorum {
        return None;
    }
    let top = view_changes.iter().max_by_key(|vc| vc.stable_sequence)?;
    let (h, h_digest, h_from) = (top.stable_sequence, top.stable_digest, top.replica);
    let limit = match window {
        Some(window) => h.0.checked_add(window)?,
        None => h.0.saturating_add(2 * MAX_CLAIMS as u64),
    };
    let max_s = view_changes
        .iter()
        .flat_map(|vc| vc.prepared.iter())
        .map(|c| c.sequence)
        .filter(|s| *s > h && s.0 <= limit)
        .max()
        .unwrap_or(h);
    // The prepared claim of each sender per sequence (the highest view wins).
    let prepared: Vec<BTreeMap<Sequence, Claim>> = view_changes
        .iter()
        .map(|vc| {
            let mut by_sequence: BTreeMap<Sequence, Claim> = BTreeMap::new();
            for claim in &vc.prepared {
                let slot = by_sequence.entry(claim.sequence).or_insert(*claim);
                if claim.view > slot.view {
                    *slot = *claim;
                }
            }
            by_sequence
        })
        .collect();
    let mut proposals = Vec::new();
    let mut n = h.next();
    while n <= max_s {
        let mut chosen = None;
        for candidate in prepared.iter().filter_map(|p| p.get(&n)) {
            let a1 = prepared
                .iter()
                .filter(|p| {
                    p.get(&n).is_none_or(|c| {
                        c.view < candidate.view
                            || (c.view == candidate.view && c.digest == candidate.digest)
                    })
                })
                .count();
            let a2 = view_changes
                .iter()
                .filter(|vc| {
                    vc.pre_prepared.iter().any(|q| {
                        q.sequence == n && q.digest == candidate.digest && q.view >= candidate.view
                    })
                })
                .count();
            if a1 >= quorum && a2 > max_faulty {
                chosen = Some(candidate.digest);
                break;
            }
        }
        let decision = match chosen {
            Some(digest) => digest,
            None if prepared.iter().filter(|p| !p.contains_key(&n)).count() >= quorum => None,
            None => return None,
        };
        proposals.push((n, decision));
        match n.0.checked_add(1) {
            Some(next) => n = Sequence(next),
            None => break,
        }
    }
    Some(Decision {
        stable_sequence: h,
        stable_digest: h_digest,
        stable_from: h_from,
        proposals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_dag::testing::{committee, test_chain};

    fn vc(replica: u16, stable: u64, prepared: Vec<Claim>, pre_prepared: Vec<Claim>) -> ViewChange {
        ViewChange {
            chain_id: test_chain(),
            epoch: Epoch(0),
            view: View(2),
            stable_sequence: Sequence(stable),
            stable_digest: Digest::of(&stable.to_le_bytes()),
            prepared,
            pre_prepared,
            replica: ValidatorIndex(replica),
        }
    }

    fn claim(sequence: u64, view: u64, digest: &[u8]) -> Claim {
        Claim {
            sequence: Sequence(sequence),
            view: View(view),
            digest: Some(Digest::of(digest)),
        }
    }

    #[test]
    fn view_changes_sign_and_round_trip() {
        let (committee, keys) = committee(4);
        let body = vc(1, 4, vec![claim(5, 1, b"a")], vec![claim(5, 1, b"a")]);
        assert_eq!(ViewChange::decode(&body.encode()), Ok(body.clone()));
        let secret = keys.into_iter().nth(1).expect("four keys").secret;
        let signed = Signed::sign_with(body, &crate::Signer::ml_dsa_87(secret));
        assert_eq!(signed.verify(&committee), Ok(()));
        let mut writer = Writer::with_capacity(0);
        signed.write_wire(&mut writer);
        let bytes = writer.finish();
        let mut reader = Reader::new(&bytes);
        assert_eq!(Signed::read_wire(&mut reader), Ok(signed));
    }

    #[test]
    fn a_prepared_claim_backed_by_f_plus_one_pre_prepares_is_kept() {
        let p = claim(5, 1, b"a");
        let set = [
            vc(0, 4, vec![p], vec![p]),
            vc(1, 4, vec![], vec![p]),
            vc(2, 4, vec![], vec![]),
        ];
        let refs: Vec<&ViewChange> = set.iter().collect();
        let decision = decide(&refs, 1, Some(8)).expect("decides");
        assert_eq!(decision.stable_sequence, Sequence(4));
        assert_eq!(decision.proposals, vec![(Sequence(5), p.digest)]);
    }

    #[test]
    fn an_unbacked_prepared_claim_waits_and_unclaimed_sequences_are_null() {
        // Only the (possibly lying) sender vouches for its pre-prepare: no decision.
        let p = claim(6, 1, b"a");
        let set = [
            vc(0, 4, vec![p], vec![p]),
            vc(1, 4, vec![], vec![]),
            vc(2, 4, vec![], vec![]),
        ];
        let refs: Vec<&ViewChange> = set.iter().collect();
        assert_eq!(decide(&refs, 1, Some(8)), None);
        // With a second voucher it decides: 5 is null, 6 is the claim.
        let set = [
            vc(0, 4, vec![p], vec![p]),
            vc(1, 4, vec![], vec![p]),
            vc(2, 4, vec![], vec![]),
        ];
        let refs: Vec<&ViewChange> = set.iter().collect();
        let decision = decide(&refs, 1, Some(8)).expect("decides");
        assert_eq!(
            decision.proposals,
            vec![(Sequence(5), None), (Sequence(6), p.digest)]
        );
    }

    #[test]
    fn a_later_view_prepare_wins_over_an_earlier_one() {
        let old = claim(5, 1, b"old");
        let new = claim(5, 3, b"new");
        let set = [
            vc(0, 4, vec![old], vec![old]),
            vc(1, 4, vec![new], vec![new, old]),
            vc(2, 4, vec![], vec![new]),
        ];
        let refs: Vec<&ViewChange> = set.iter().collect();
        let decision = decide(&refs, 1, Some(8)).expect("decides");
        assert_eq!(decision.proposals, vec![(Sequence(5), new.digest)]);
    }

    #[test]
    fn fewer_than_a_quorum_never_decides() {
        let set = [vc(0, 0, vec![], vec![]), vc(1, 0, vec![], vec![])];
        let refs: Vec<&ViewChange> = set.iter().collect();
        assert_eq!(decide(&refs, 1, Some(8)), None);
    }
}
