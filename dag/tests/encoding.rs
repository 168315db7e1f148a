//! The canonical vertex encoding (ARCHITECTURE.md, "Signing"): decode(encode(v)) == v,
//! a valid byte string has exactly one decoding, and untrusted bytes give typed errors
//! within explicit limits, never a panic.

use proptest::prelude::*;
use weft_crypto::{Digest, SIGNATURE_BYTES};
use weft_dag::codec::DecodeError;
use weft_dag::testing::{placeholder_signature, test_chain};
use weft_dag::{
    Epoch, Limits, ParentRef, Proposal, Round, Sequence, SignedVertex, TimestampMs, Transaction,
    ValidatorIndex, Vertex, View,
};

fn arbitrary_vertex() -> impl Strategy<Value = Vertex> {
    (
        any::<u64>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        proptest::option::of((any::<u64>(), any::<u64>())),
        proptest::collection::vec((any::<u16>(), any::<u64>(), any::<[u8; 32]>()), 0..8),
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..40), any::<u64>()),
            0..8,
        ),
    )
        .prop_map(
            |(epoch, author, round, created, proposal, parents, txs)| Vertex {
                chain_id: test_chain(),
                epoch: Epoch(epoch),
                author: ValidatorIndex(author),
                round: Round(round),
                created_at: TimestampMs(created),
                proposal: proposal.map(|(v, s)| Proposal {
                    view: View(v),
                    sequence: Sequence(s),
                }),
                parents: parents
                    .into_iter()
                    .map(|(a, r, h)| ParentRef {
                        author: ValidatorIndex(a),
                        round: Round(r),
                        hash: Digest::from_bytes(h),
                    })
                    .collect(),
                transactions: txs
                    .into_iter()
                    .map(|(payload, expiry)| Transaction::new(payload, TimestampMs(expiry)))
                    .collect(),
            },
        )
}

proptest! {
    #[test]
    fn decode_inverts_encode(vertex in arbitrary_vertex()) {
        let bytes = vertex.encode();
        prop_assert_eq!(Vertex::decode(&bytes, &Limits::default()), Ok(vertex));
    }

    /// Exactly one decoding: whatever decodes re-encodes to the same bytes.
    #[test]
    fn whatever_decodes_re_encodes_identically(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(vertex) = Vertex::decode(&bytes, &Limits::default()) {
            prop_assert_eq!(vertex.encode(), bytes);
        }
    }

    /// Mutating a valid encoding either fails with a typed error or yields a vertex that
    /// re-encodes to the mutated bytes (never a panic, never a second reading).
    #[test]
    fn mutated_encodings_never_panic(
        vertex in arbitrary_vertex(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = vertex.encode();
        let at = position.index(bytes.len());
        bytes[at] = byte;
        if let Ok(decoded) = Vertex::decode(&bytes, &Limits::default()) {
            prop_assert_eq!(decoded.encode(), bytes.clone());
        }
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(Vertex::decode(truncated, &Limits::default()).is_err());
    }

    #[test]
    fn wire_form_round_trips(vertex in arbitrary_vertex()) {
        let signed = SignedVertex::with_signature(vertex, placeholder_signature());
        let wire = signed.to_wire();
        let back = SignedVertex::from_wire(&wire, &Limits::default()).expect("decodes");
        prop_assert_eq!(back.hash(), signed.hash());
        prop_assert_eq!(back, signed);
    }
}

fn sample() -> Vertex {
    Vertex {
        chain_id: test_chain(),
        epoch: Epoch(1),
        author: ValidatorIndex(2),
        round: Round(3),
        created_at: TimestampMs(4),
        proposal: None,
        parents: vec![ParentRef {
            author: ValidatorIndex(1),
            round: Round(2),
            hash: Digest::of(b"p"),
        }],
        transactions: vec![Transaction::new(b"hello".to_vec(), TimestampMs(9))],
    }
}

#[test]
fn layout_begins_with_chain_id_then_epoch() {
    let bytes = sample().encode();
    let chain = test_chain();
    assert_eq!(usize::from(bytes[0]), chain.as_str().len());
    assert_eq!(
        &bytes[1..1 + chain.as_str().len()],
        chain.as_str().as_bytes()
    );
    let epoch_at = 1 + chain.as_str().len();
    assert_eq!(&bytes[epoch_at..epoch_at + 8], &1u64.to_le_bytes());
}

#[test]
fn hash_is_blake3_of_the_signed_bytes() {
    let signed = SignedVertex::with_signature(sample(), placeholder_signature());
    assert_eq!(signed.hash(), Digest::of(&sample().encode()));
    assert_eq!(signed.encoded(), sample().encode().as_slice());
}

#[test]
fn limits_are_enforced_before_allocation() {
    let limits = Limits {
        max_transactions: 1,
        max_parents: 1,
        max_transaction_bytes: 4,
        ..Limits::default()
    };
    let mut vertex = sample();
    vertex
        .transactions
        .push(Transaction::new(b"x".to_vec(), TimestampMs(9)));
    assert!(matches!(
        Vertex::decode(&vertex.encode(), &limits),
        Err(DecodeError::TooLarge {
            field: "transactions",
            ..
        })
    ));
    // "hello" is 5 bytes, above 4.
    assert!(matches!(
        Vertex::decode(&sample().encode(), &limits),
        Err(DecodeError::TooLarge {
            field: "transaction bytes",
            ..
        })
    ));
    // A count that claims more elements than bytes remain is refused up front.
    let mut bytes = sample().encode();
    // The count, then one transaction: expiry u64, length u32, "hello".
    let count_at = bytes.len() - (4 + 8 + 4 + 5);
    bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(Vertex::decode(&bytes, &Limits::default()).is_err());
    let big = Limits {
        max_vertex_bytes: 10,
        ..Limits::default()
    };
    assert!(matches!(
        Vertex::decode(&sample().encode(), &big),
        Err(DecodeError::TooLarge {
            field: "vertex bytes",
            ..
        })
    ));
}

#[test]
fn typed_errors_for_malformed_fields() {
    let mut bytes = sample().encode();
    bytes.push(0);
    assert_eq!(
        Vertex::decode(&bytes, &Limits::default()),
        Err(DecodeError::TrailingBytes(1))
    );
    let mut bad_tag = sample().encode();
    let tag_at = 1 + test_chain().as_str().len() + 8 + 2 + 8 + 8;
    bad_tag[tag_at] = 2;
    assert!(matches!(
        Vertex::decode(&bad_tag, &Limits::default()),
        Err(DecodeError::Invalid {
            field: "proposal tag",
            ..
        })
    ));
    let mut bad_chain = sample().encode();
    bad_chain[1] = b'A';
    assert!(matches!(
        Vertex::decode(&bad_chain, &Limits::default()),
        Err(DecodeError::Invalid {
            field: "chain id",
            ..
        })
    ));
    let wire = SignedVertex::with_signature(sample(), placeholder_signature()).to_wire();
    assert!(SignedVertex::from_wire(&wire[..wire.len() - 1], &Limits::default()).is_err());
    assert_eq!(wire.len(), 4 + sample().encode().len() + SIGNATURE_BYTES);
}
