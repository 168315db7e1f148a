//! Counting votes: distinct voters per (view, sequence, digest), with double votes
//! caught as evidence.
//!
//! A quorum is counted over *voters*, never over messages: a replayed or duplicated vote
//! adds nothing, and a validator that votes for two digests in one (view, sequence) is
//! reported with both signed votes, and only its first vote counts. Two quorums of
//! n - f voters share at least f + 1 voters, so at least one honest voter, who never
//! votes twice: hence no two digests can both reach a quorum in one (view, sequence).

use std::collections::BTreeMap;

use weft_crypto::Digest;
use weft_dag::{Sequence, ValidatorIndex, View};

use crate::messages::{Phase, SignedVote};

/// What adding a vote did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Counted; the digest now has this many distinct voters.
    Counted(usize),
    /// Counted, and this vote completed the quorum for the digest (reported once).
    QuorumReached(Option<Digest>),
    /// The voter already cast this exact vote: ignored.
    Duplicate,
    /// The voter already voted for another digest here: proof of a fault.
    DoubleVote(Box<DoubleVote>),
}

/// Two conflicting signed votes by one validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoubleVote {
    /// The vote counted.
    pub first: SignedVote,
    /// The conflicting one.
    pub second: SignedVote,
}

/// The votes of one phase, by (view, sequence).
#[derive(Debug)]
pub struct VoteTracker {
    phase: Phase,
    /// Distinct voters needed: 2f + 1 commits, or 2f prepares (the primary's pre-prepare
    /// stands in for its prepare).
    quorum: usize,
    slots: BTreeMap<(Sequence, View), BTreeMap<ValidatorIndex, SignedVote>>,
}

impl VoteTracker {
    /// A tracker for `phase` needing `quorum` distinct voters (the threshold).
    pub fn new(phase: Phase, quorum: usize) -> VoteTracker {
        assert!(quorum > 0, "a quorum is at least one voter");
        VoteTracker {
            phase,
            quorum,
            slots: BTreeMap::new(),
        }
    }

    /// Adds a vote whose signature the caller verified.
    pub fn add(&mut self, signed: SignedVote) -> VoteOutcome {
        let vote = signed.vote();
        assert_eq!(vote.phase, self.phase, "vote of the wrong phase");
        let slot = self.slots.entry((vote.sequence, vote.view)).or_default();
        if let Some(previous) = slot.get(&vote.voter) {
            return if previous.vote().digest == vote.digest {
                VoteOutcome::Duplicate
            } else {
                VoteOutcome::DoubleVote(Box::new(DoubleVote {
                    first: previous.clone(),
                    second: signed,
                }))
            };
        }
        let digest = vote.digest;
        slot.insert(vote.voter, signed);
        let count = slot.values().filter(|v| v.vote().digest == digest).count();
        if count == self.quorum {
            VoteOutcome::QuorumReached(digest)
        } else {
            VoteOutcome::Counted(count)
        }
    }

    /// Distinct voters for `digest` at (view, sequence).
    pub fn count(&self, view: View, sequence: Sequence, digest: Option<&Digest>) -> usize {
        self.slots.get(&(sequence, view)).map_or(0, |slot| {
            slot.values()
                .filter(|v| v.vote().digest.as_ref() == digest)
                .count()
        })
    }

    /// The signed votes for `digest` at (view, sequence): a certificate once it holds a
    /// quorum.
    pub fn votes_for(
        &self,
        view: View,
        sequence: Sequence,
        digest: Option<&Digest>,
    ) -> Vec<SignedVote> {
        self.slots
            .get(&(sequence, view))
            .map_or_else(Vec::new, |slot| {
                slot.values()
                    .filter(|v| v.vote().digest.as_ref() == digest)
                    .cloned()
                    .collect()
            })
    }

    /// The digests voted for at (view, sequence), in voter order.
    pub fn digests(&self, view: View, sequence: Sequence) -> Vec<Option<Digest>> {
        self.slots
            .get(&(sequence, view))
            .map_or_else(Vec::new, |slot| {
                slot.values().map(|v| v.vote().digest).collect()
            })
    }

    /// Forgets every sequence at or below `stable` (a stable checkpoint covers them).
    pub fn release_through(&mut self, stable: Sequence) {
        self.slots = self.slots.split_off(&(stable.next(), View(0)));
    }

    /// Forgets every vote of a view below `view` (a view change passed them: only the
    /// claims in view changes carry them forward).
    pub fn release_views_below(&mut self, view: View) {
        self.slots.retain(|(_, v), _| *v >= view);
    }

    /// Number of (view, sequence) slots held: bounded by the watermark window times the
    /// views in flight.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Vote;
    use weft_crypto::Keypair;
    use weft_dag::testing::{committee, test_chain};
    use weft_dag::Epoch;

    fn signed(keys: &[Keypair], voter: u16, view: u64, sequence: u64, digest: &[u8]) -> SignedVote {
        Vote {
            chain_id: test_chain(),
            epoch: Epoch(0),
            phase: Phase::Prepare,
            view: View(view),
            sequence: Sequence(sequence),
            digest: Some(Digest::of(digest)),
            voter: ValidatorIndex(voter),
        }
        .sign(&keys[usize::from(voter)].secret)
    }

    #[test]
    fn quorum_counts_distinct_voters_once() {
        let (committee, keys) = committee(4);
        let mut tracker = VoteTracker::new(Phase::Prepare, committee.quorum());
        assert_eq!(
            tracker.add(signed(&keys, 0, 1, 1, b"a")),
            VoteOutcome::Counted(1)
        );
        assert_eq!(
            tracker.add(signed(&keys, 0, 1, 1, b"a")),
            VoteOutcome::Duplicate
        );
        assert_eq!(
            tracker.add(signed(&keys, 1, 1, 1, b"a")),
            VoteOutcome::Counted(2)
        );
        assert_eq!(
            tracker.add(signed(&keys, 2, 1, 1, b"a")),
            VoteOutcome::QuorumReached(Some(Digest::of(b"a")))
        );
        assert_eq!(
            tracker.add(signed(&keys, 3, 1, 1, b"a")),
            VoteOutcome::Counted(4)
        );
        assert_eq!(
            tracker
                .votes_for(View(1), Sequence(1), Some(&Digest::of(b"a")))
                .len(),
            4
        );
    }

    #[test]
    fn a_double_vote_is_evidence_and_does_not_count() {
        let (committee, keys) = committee(4);
        let mut tracker = VoteTracker::new(Phase::Prepare, committee.quorum());
        tracker.add(signed(&keys, 3, 1, 1, b"a"));
        match tracker.add(signed(&keys, 3, 1, 1, b"b")) {
            VoteOutcome::DoubleVote(evidence) => {
                assert!(evidence.first.vote().conflicts_with(evidence.second.vote()));
            }
            other => panic!("expected a double vote, got {other:?}"),
        }
        assert_eq!(
            tracker.count(View(1), Sequence(1), Some(&Digest::of(b"b"))),
            0
        );
        // Same voter, another view or sequence: not a conflict.
        assert_eq!(
            tracker.add(signed(&keys, 3, 2, 1, b"b")),
            VoteOutcome::Counted(1)
        );
        assert_eq!(
            tracker.add(signed(&keys, 3, 1, 2, b"b")),
            VoteOutcome::Counted(1)
        );
    }

    #[test]
    fn release_forgets_covered_sequences() {
        let (_, keys) = committee(4);
        let mut tracker = VoteTracker::new(Phase::Prepare, 3);
        for sequence in 1..=5 {
            tracker.add(signed(&keys, 0, 1, sequence, b"a"));
        }
        tracker.release_through(Sequence(3));
        assert_eq!(tracker.slots(), 2);
        assert_eq!(
            tracker.count(View(1), Sequence(3), Some(&Digest::of(b"a"))),
            0
        );
        assert_eq!(
            tracker.count(View(1), Sequence(4), Some(&Digest::of(b"a"))),
            1
        );
    }
}
