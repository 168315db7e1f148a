//! Vertex encode, decode and hash; DAG insert and linearization of 10,000 vertices.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use weft_crypto::Digest;
use weft_dag::testing::{test_chain, DagBuilder};
use weft_dag::{
    Dag, DagConfig, Epoch, Finalizer, Limits, ParentRef, Round, Sequence, SignedVertex,
    TimestampMs, Transaction, ValidatorIndex, Vertex,
};

/// A typical full vertex: 10 parents, 100 transactions of 512 bytes.
fn typical_vertex() -> Vertex {
    Vertex {
        chain_id: test_chain(),
        epoch: Epoch(0),
        author: ValidatorIndex(3),
        round: Round(1_000),
        created_at: TimestampMs(1_700_000_000_000),
        proposal: None,
        parents: (0..10)
            .map(|a| ParentRef {
                author: ValidatorIndex(a),
                round: Round(999),
                hash: Digest::of(&a.to_le_bytes()),
            })
            .collect(),
        transactions: (0..100u32)
            .map(|i| {
                let mut payload = vec![0u8; 512];
                payload[..4].copy_from_slice(&i.to_le_bytes());
                Transaction::new(payload, weft_dag::TimestampMs(1_700_000_000_000))
            })
            .collect(),
    }
}

fn encoding(c: &mut Criterion) {
    let vertex = typical_vertex();
    let bytes = vertex.encode();
    let limits = Limits::default();
    let mut group = c.benchmark_group("vertex");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| b.iter(|| vertex.encode()));
    group.bench_function("decode", |b| {
        b.iter(|| Vertex::decode(&bytes, &limits).expect("decodes"))
    });
    group.bench_function("hash", |b| b.iter(|| Digest::of(&bytes)));
    group.finish();
}

/// 10,000 vertices in full rounds of n.
fn ten_thousand(n: usize) -> (DagBuilder, Vec<SignedVertex>) {
    let mut builder = DagBuilder::new(n);
    builder.genesis();
    let rounds = 10_000 / n as u64;
    for round in 1..rounds {
        builder.full_round(Round(round));
    }
    let vertices = builder.vertices();
    (builder, vertices)
}

fn insert_and_linearize(c: &mut Criterion) {
    let mut group = c.benchmark_group("dag_10k");
    group.sample_size(10);
    for n in [4usize, 10] {
        let (builder, vertices) = ten_thousand(n);
        group.throughput(Throughput::Elements(vertices.len() as u64));
        group.bench_with_input(BenchmarkId::new("insert", n), &vertices, |b, vertices| {
            b.iter_batched(
                || Dag::new(builder.committee().clone(), DagConfig::default()),
                |mut dag| {
                    for vertex in vertices {
                        dag.insert(vertex.clone()).expect("valid");
                    }
                    dag
                },
                BatchSize::LargeInput,
            )
        });
        let mut dag = Dag::new(builder.committee().clone(), DagConfig::default());
        for vertex in &vertices {
            dag.insert(vertex.clone()).expect("valid");
        }
        let anchor = vertices.last().expect("vertices").hash();
        group.bench_with_input(BenchmarkId::new("linearize", n), &dag, |b, dag| {
            b.iter(|| {
                Finalizer::new(u64::MAX)
                    .execute(dag, Sequence(1), Some(anchor), 0)
                    .expect("executes")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encoding, insert_and_linearize);
criterion_main!(benches);
