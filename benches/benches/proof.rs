//! Finality proofs: size and verification time of a proof over 4 entries (a checkpoint
//! interval) of `vertices` vertices with 25 transactions each, signed by a quorum of n.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use weft_consensus::messages::Checkpoint;
use weft_consensus::proof::TransactionProof;
use weft_crypto::Digest;
use weft_dag::testing::committee;
use weft_dag::{FinalizedEntry, FinalizedTransaction, Sequence, TimestampMs, TxId, ValidatorIndex};

fn proof(n: usize, vertices: usize) -> (weft_dag::Committee, Vec<u8>) {
    let (committee, keys) = committee(n);
    let previous = Digest::of(b"before");
    let mut digest = previous;
    let mut entries = Vec::new();
    for sequence in 1..=4u64 {
        let hashes: Vec<Digest> = (0..vertices)
            .map(|i| Digest::of(&[sequence.to_le_bytes(), (i as u64).to_le_bytes()].concat()))
            .collect();
        let transactions = hashes
            .iter()
            .flat_map(|vertex| {
                (0..25u32).map(move |position| FinalizedTransaction {
                    id: TxId(Digest::of(
                        &[vertex.as_bytes().as_slice(), &position.to_le_bytes()].concat(),
                    )),
                    vertex: *vertex,
                    position,
                    expires_at: TimestampMs(0),
                })
            })
            .collect();
        let mut entry = FinalizedEntry {
            sequence: Sequence(sequence),
            anchor: hashes.last().copied(),
            vertices: hashes,
            transactions,
            consensus_time: TimestampMs(sequence),
            state_digest: Digest::ZERO,
            finalized_unix_ms: 0,
        };
        entry.state_digest = entry.chained_digest(&digest);
        digest = entry.state_digest;
        entries.push(entry);
    }
    let certificate: Vec<_> = (0..committee.quorum())
        .map(|signer| {
            Checkpoint {
                chain_id: committee.chain_id().clone(),
                epoch: committee.epoch(),
                sequence: Sequence(4),
                state_digest: digest,
                signer: ValidatorIndex(u16::try_from(signer).unwrap_or(0)),
            }
            .sign(&keys[signer].secret)
        })
        .collect();
    let tx = entries[0].transactions[0].id;
    let proof = TransactionProof::build(tx, previous, &entries, &certificate)
        .map(|p| p.encode())
        .unwrap_or_default();
    (committee, proof)
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("proof/verify");
    for (n, vertices) in [(4, 4), (7, 7), (31, 31)] {
        let (committee, bytes) = proof(n, vertices);
        eprintln!(
            "proof n={n} vertices/entry={vertices} tx/entry={}: {} bytes",
            vertices * 25,
            bytes.len()
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &bytes, |b, bytes| {
            b.iter(|| {
                TransactionProof::decode(bytes)
                    .and_then(|p| p.verify(&committee))
                    .is_ok()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
