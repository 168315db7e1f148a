//! Restart cost: `Replica::recover` over a RocksDB store whose finalized log holds
//! 1,000, 10,000 and 100,000 sequences (one vertex of 10 transactions per sequence, a
//! sequence every 100 ms of consensus time), with the finalizer's snapshot at the log's
//! head as a running replica leaves it.
//!
//! Recovery reads the snapshot, the entries of its dedup window (consensus time within
//! `MAX_TTL_MS` = 300 s of the snapshot's: here the last 3,000 sequences) and the tail
//! above the snapshot, so its time stops growing once the log is longer than the window.
//! The `full-replay` group recovers the same stores without the snapshot, as every
//! restart did before checkpointed recovery (and as a store synced from peers still does
//! once).
//!
//! `cargo bench --workspace --profile dev --bench restart` reuses the dev profile's
//! RocksDB build (dependencies are at opt-level 3 there); the release profile compiles
//! RocksDB once more.

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use weft_consensus::replica::{put_finalizer_snapshot, Replica, ReplicaConfig};
use weft_consensus::Signer;
use weft_crypto::Digest;
use weft_dag::store::{RocksStore, Store, StoreBatch};
use weft_dag::testing::{committee, entry_chain_spaced};
use weft_dag::{Finalizer, Limits, Round, Sequence, ValidatorIndex};

/// Consensus time between two sequences.
const MS_PER_SEQUENCE: u64 = 100;

/// Writes a finalized log of `count` sequences, 1,000 per batch, then (with `snapshot`)
/// the finalizer's snapshot at its head.
fn fill(store: &RocksStore, count: usize, gc_depth: u64, snapshot: bool) {
    let mut first = Sequence(1);
    let mut previous = Digest::ZERO;
    let mut left = count;
    let mut finalizer = Finalizer::new(gc_depth);
    while left > 0 {
        let chunk = left.min(1_000);
        let (vertices, entries) =
            entry_chain_spaced(first, previous, chunk, 1, 10, MS_PER_SEQUENCE);
        let rounds: HashMap<Digest, Round> = vertices
            .iter()
            .map(|v| (v.hash(), v.vertex().round))
            .collect();
        let mut batch = StoreBatch::new();
        for vertex in vertices {
            batch.put_vertex(vertex);
        }
        let last = entries.last().expect("a chunk is not empty");
        first = last.sequence.next();
        previous = last.state_digest;
        // Only the snapshot is written, and it holds no dedup set: each chunk continues
        // from the previous chunk's snapshot.
        finalizer = Finalizer::restore_from_snapshot(
            gc_depth,
            finalizer.snapshot(),
            [],
            entries.iter().cloned(),
            |h| rounds.get(h).copied(),
        )
        .expect("the chain replays");
        for entry in entries {
            batch.append_finalized(entry);
        }
        store.write(batch).expect("write");
        left -= chunk;
    }
    if snapshot {
        let mut batch = StoreBatch::new();
        put_finalizer_snapshot(&mut batch, &finalizer.snapshot(), gc_depth);
        store.write(batch).expect("write");
    }
}

fn restart(c: &mut Criterion) {
    let (committee, _) = committee(4);
    let mut config = ReplicaConfig::new(ValidatorIndex(0), committee);
    config.fresh = true;
    // `cargo test --all-targets` runs each benchmark once: there the 100,000-sequence
    // store (about 500 MB) would only cost time.
    let benching = std::env::args().any(|a| a == "--bench");
    let counts: &[usize] = if benching {
        &[1_000, 10_000, 100_000]
    } else {
        &[1_000]
    };
    for (group, snapshot) in [("restart", true), ("full-replay", false)] {
        let mut group = c.benchmark_group(group);
        group.sample_size(10);
        for &count in counts {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = RocksStore::open(dir.path(), Limits::default()).expect("open");
            fill(&store, count, config.gc_depth, snapshot);
            let head = store.log_head().expect("reads").expect("a log");
            group.bench_with_input(BenchmarkId::new("recover", count), &count, |b, _| {
                b.iter(|| {
                    let replica = Replica::recover(config.clone(), Signer::Placeholder, &store)
                        .expect("recovers");
                    assert_eq!(replica.last_executed(), head.sequence);
                    replica
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, restart);
criterion_main!(benches);
