//! Restart cost: `Replica::recover` over a RocksDB store whose finalized log holds 1,000
//! and 100,000 sequences (one vertex of 10 transactions per sequence). Recovery replays
//! the whole log and reads every finalized vertex's round, so today its time grows with
//! the log's length; checkpointed recovery should make the two figures close.
//!
//! `cargo bench --workspace --profile dev --bench restart` reuses the dev profile's
//! RocksDB build (dependencies are at opt-level 3 there); the release profile compiles
//! RocksDB once more.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use weft_consensus::replica::{Replica, ReplicaConfig};
use weft_consensus::Signer;
use weft_crypto::Digest;
use weft_dag::store::{RocksStore, Store, StoreBatch};
use weft_dag::testing::{committee, entry_chain_from};
use weft_dag::{Limits, Sequence, ValidatorIndex};

/// Writes a finalized log of `count` sequences, 1,000 per batch.
fn fill(store: &RocksStore, count: usize) {
    let mut first = Sequence(1);
    let mut previous = Digest::ZERO;
    let mut left = count;
    while left > 0 {
        let chunk = left.min(1_000);
        let (vertices, entries) = entry_chain_from(first, previous, chunk, 1, 10);
        let mut batch = StoreBatch::new();
        for vertex in vertices {
            batch.put_vertex(vertex);
        }
        let last = entries.last().expect("a chunk is not empty");
        first = last.sequence.next();
        previous = last.state_digest;
        for entry in entries {
            batch.append_finalized(entry);
        }
        store.write(batch).expect("write");
        left -= chunk;
    }
}

fn restart(c: &mut Criterion) {
    let (committee, _) = committee(4);
    let mut config = ReplicaConfig::new(ValidatorIndex(0), committee);
    config.fresh = true;
    let mut group = c.benchmark_group("restart");
    group.sample_size(10);
    // `cargo test --all-targets` runs each benchmark once: there the 100,000-sequence
    // store (about 500 MB) would only cost time.
    let benching = std::env::args().any(|a| a == "--bench");
    let counts: &[usize] = if benching {
        &[1_000, 100_000]
    } else {
        &[1_000]
    };
    for &count in counts {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RocksStore::open(dir.path(), Limits::default()).expect("open");
        fill(&store, count);
        group.bench_with_input(BenchmarkId::new("recover", count), &count, |b, _| {
            b.iter(|| {
                Replica::recover(config.clone(), Signer::Placeholder, &store).expect("recovers")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, restart);
criterion_main!(benches);
