//! RocksDB commit of one finalized entry with 1,000 transactions (entry, transaction
//! index and log head in one synced WriteBatch).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft_dag::store::{RocksStore, Store, StoreBatch};
use weft_dag::testing::entry_chain_from;
use weft_dag::Limits;

fn commit_entry(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RocksStore::open(dir.path(), Limits::default()).expect("open");
    let mut group = c.benchmark_group("rocksdb");
    group.throughput(Throughput::Elements(1_000));
    group.sample_size(20);
    group.bench_function("commit_entry_1000_tx", |b| {
        b.iter_custom(|iterations| {
            let head = store.log_head().expect("head");
            let (first, previous) = head
                .map_or((weft_dag::Sequence(1), weft_crypto::Digest::ZERO), |h| {
                    (h.sequence.next(), h.state_digest)
                });
            // 10 vertices x 100 transactions per entry; built outside the timed part.
            let count = usize::try_from(iterations).expect("iteration count fits in memory");
            let (_, entries) = entry_chain_from(first, previous, count, 10, 100);
            let mut elapsed = Duration::ZERO;
            for entry in entries {
                let mut batch = StoreBatch::new();
                batch.append_finalized(entry);
                let start = Instant::now();
                store.write(batch).expect("commit");
                elapsed += start.elapsed();
            }
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, commit_entry);
criterion_main!(benches);
