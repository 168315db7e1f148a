//! Finality proofs (issue 13): a proof verifies against the genesis validator set
//! alone, and tampering with any byte, signing below 2f + 1, repeating a signer or
//! checking against another chain's keys makes it fail.

use weft_consensus::messages::Checkpoint;
use weft_consensus::proof::{
    decode_certificate, distinct_certificate, encode_certificate, verify_certificate, ProofError,
    TransactionProof,
};
use weft_crypto::{Digest, Keypair};
use weft_dag::testing::committee;
use weft_dag::{
    ChainId, Committee, Epoch, FinalizedEntry, FinalizedTransaction, Sequence, TimestampMs, TxId,
    ValidatorIndex,
};

/// Entries 5..=8 chained from a made-up digest; entry 5 holds the proven transaction at
/// position 1 of its second vertex, entry 6 is null.
fn entries() -> (Digest, Vec<FinalizedEntry>) {
    let previous = Digest::of(b"the state after sequence 4");
    let mut digest = previous;
    let mut entries = Vec::new();
    for sequence in 5..=8u64 {
        let null = sequence == 6;
        let vertices: Vec<Digest> = if null {
            Vec::new()
        } else {
            (0..3u8)
                .map(|i| Digest::of(&[sequence.to_le_bytes()[0], i]))
                .collect()
        };
        let transactions: Vec<FinalizedTransaction> = vertices
            .iter()
            .flat_map(|vertex| {
                (0..2u32).map(move |position| FinalizedTransaction {
                    id: TxId(Digest::of(&[
                        vertex.as_bytes()[0],
                        position.to_le_bytes()[0],
                        9,
                    ])),
                    vertex: *vertex,
                    position,
                    expires_at: TimestampMs(1_700_000_090_000),
                })
            })
            .collect();
        let mut entry = FinalizedEntry {
            sequence: Sequence(sequence),
            anchor: (!null).then(|| vertices[2]),
            vertices,
            transactions,
            consensus_time: TimestampMs(1_700_000_000_000 + sequence),
            state_digest: Digest::ZERO,
            finalized_unix_ms: 0,
        };
        entry.state_digest = entry.chained_digest(&digest);
        digest = entry.state_digest;
        entries.push(entry);
    }
    (previous, entries)
}

fn certificate(
    committee: &Committee,
    keys: &[Keypair],
    signers: &[u16],
    sequence: Sequence,
    digest: Digest,
) -> Vec<weft_consensus::messages::SignedCheckpoint> {
    signers
        .iter()
        .map(|signer| {
            Checkpoint {
                chain_id: committee.chain_id().clone(),
                epoch: committee.epoch(),
                sequence,
                state_digest: digest,
                signer: ValidatorIndex(*signer),
            }
            .sign(&keys[usize::from(*signer)].secret)
        })
        .collect()
}

struct Fixture {
    committee: Committee,
    keys: Vec<Keypair>,
    proof: TransactionProof,
}

fn fixture(signers: &[u16]) -> Fixture {
    let (committee, keys) = committee(4);
    let (previous, entries) = entries();
    let last = entries.last().expect("entries");
    let certificate = certificate(&committee, &keys, signers, last.sequence, last.state_digest);
    let tx = entries[0].transactions[3].id;
    let proof =
        TransactionProof::build(tx, previous, &entries, &certificate).expect("entry 5 holds it");
    Fixture {
        committee,
        keys,
        proof,
    }
}

#[test]
fn a_proof_verifies_against_the_validator_set_and_names_the_transactions_place() {
    let fixture = fixture(&[0, 2, 3]);
    let bytes = fixture.proof.encode();
    let decoded = TransactionProof::decode(&bytes).expect("decodes");
    assert_eq!(decoded, fixture.proof);
    let proven = decoded.verify(&fixture.committee).expect("verifies");
    let (_, entries) = entries();
    let placed = &entries[0].transactions[3];
    assert_eq!(proven.tx_id, placed.id);
    assert_eq!(proven.sequence, Sequence(5));
    assert_eq!((proven.vertex, proven.position), (placed.vertex, 1));
    assert_eq!(proven.checkpoint, Sequence(8));
    assert_eq!(proven.signers, 3);
    let _ = fixture.keys;
}

#[test]
fn tampering_with_any_byte_makes_the_proof_fail() {
    let fixture = fixture(&[0, 1, 2]);
    let bytes = fixture.proof.encode();
    // Every byte before the signatures, and a stride through them (each signature is
    // checked in full by ML-DSA, so a few positions per signature suffice).
    let signatures_start =
        bytes.len() - 3 * (4 + fixture.proof.signatures[0].encoded().len() + 4_627) - 2;
    let positions = (0..signatures_start)
        .chain((signatures_start..bytes.len()).step_by(61))
        .chain([bytes.len() - 1]);
    let mut checked = 0;
    for position in positions {
        let mut tampered = bytes.clone();
        tampered[position] ^= 0x01;
        let verdict =
            TransactionProof::decode(&tampered).and_then(|proof| proof.verify(&fixture.committee));
        assert!(verdict.is_err(), "byte {position} flipped still verifies");
        checked += 1;
    }
    assert!(checked > signatures_start);
    // A truncated or extended proof is malformed.
    assert!(TransactionProof::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(TransactionProof::decode(&longer).is_err());
}

#[test]
fn fewer_than_2f_plus_1_or_repeated_signers_do_not_make_a_proof() {
    let two = fixture(&[0, 1]);
    assert_eq!(
        two.proof.verify(&two.committee),
        Err(ProofError::TooFewSigners { have: 2, need: 3 })
    );
    let mut repeated = fixture(&[0, 1]);
    let again = repeated.proof.signatures[1].clone();
    repeated.proof.signatures.push(again);
    assert_eq!(
        repeated.proof.verify(&repeated.committee),
        Err(ProofError::RepeatedSigner { signer: 1 })
    );
}

#[test]
fn a_proof_checked_against_another_chains_keys_fails() {
    let fixture = fixture(&[0, 1, 3]);
    // The same chain id and epoch, other keys: every signature fails.
    let (other, _) = committee(4);
    assert!(matches!(
        fixture.proof.verify(&other),
        Err(ProofError::BadSignature { .. })
    ));
    // Another chain id.
    let keys: Vec<_> = (0..4u16)
        .map(|i| {
            *fixture
                .committee
                .public_key(ValidatorIndex(i))
                .expect("member")
        })
        .collect();
    let renamed = Committee::new(
        ChainId::new("another-chain").expect("valid"),
        Epoch(0),
        keys,
    )
    .expect("committee");
    assert!(matches!(
        fixture.proof.verify(&renamed),
        Err(ProofError::WrongChain { .. })
    ));
}

#[test]
fn a_proof_for_another_place_or_a_broken_chain_fails() {
    let fixture = fixture(&[0, 1, 2]);
    let mut moved = fixture.proof.clone();
    moved.position = 0;
    assert_eq!(
        moved.verify(&fixture.committee),
        Err(ProofError::NotInEntry)
    );
    let mut skipped = fixture.proof.clone();
    skipped.entries.remove(1);
    assert!(matches!(
        skipped.verify(&fixture.committee),
        Err(ProofError::Gap { after: 5, got: 7 })
    ));
    let mut other_state = fixture.proof.clone();
    other_state.previous = Digest::of(b"another history");
    assert_eq!(
        other_state.verify(&fixture.committee),
        Err(ProofError::OtherState { index: 0 })
    );
}

#[test]
fn a_stored_certificate_reads_back() {
    let (committee, keys) = committee(4);
    let digest = Digest::of(b"state");
    let certificate = certificate(&committee, &keys, &[1, 2, 3], Sequence(12), digest);
    let bytes = encode_certificate(Sequence(12), &digest, &certificate);
    let (sequence, read_digest, read) = decode_certificate(&bytes).expect("decodes");
    assert_eq!((sequence, read_digest), (Sequence(12), digest));
    assert_eq!(read, certificate);
    assert!(decode_certificate(&bytes[..bytes.len() - 1]).is_err());
}

/// Found by the attack review of certified sync: a certificate adopted from a NewView may
/// carry extras the replica's count ignores (a repeated signer, another sequence's
/// checkpoint); verifiers refuse those, so validators store and serve only the distinct
/// matching signatures.
#[test]
fn a_certificate_with_extras_is_refused_whole_and_accepted_once_made_distinct() {
    let (committee, keys) = committee(4);
    let (_, entries) = entries();
    let last = entries.last().expect("entries");
    let mut padded = certificate(
        &committee,
        &keys,
        &[0, 1, 2],
        last.sequence,
        last.state_digest,
    );
    padded.push(padded[1].clone());
    padded.extend(certificate(
        &committee,
        &keys,
        &[3],
        Sequence(4),
        last.state_digest,
    ));
    assert!(verify_certificate(&committee, last.sequence, &last.state_digest, &padded).is_err());
    let distinct = distinct_certificate(&committee, last.sequence, &last.state_digest, &padded);
    assert_eq!(distinct.len(), 3);
    assert_eq!(
        verify_certificate(&committee, last.sequence, &last.state_digest, &distinct),
        Ok(3)
    );
}
