//! ML-DSA-87 sign, verify, and parallel verification of 64 signatures.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weft_crypto::{verify_batch, Keypair, Signature, SigningContext, VerifyItem};

fn signing(c: &mut Criterion) {
    let keys = Keypair::generate();
    let message = vec![7u8; 256];
    let signature = keys.sign(SigningContext::Vertex, &message);
    c.bench_function("ml_dsa_87/sign", |b| {
        b.iter(|| keys.sign(SigningContext::Vertex, &message))
    });
    c.bench_function("ml_dsa_87/verify", |b| {
        b.iter(|| {
            keys.public
                .verify(SigningContext::Vertex, &message, &signature)
        })
    });
}

fn parallel_verify(c: &mut Criterion) {
    let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
    let messages: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 256]).collect();
    let signatures: Vec<Signature> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| keys[i % 4].sign(SigningContext::Prepare, m))
        .collect();
    let items: Vec<VerifyItem<'_>> = messages
        .iter()
        .zip(&signatures)
        .enumerate()
        .map(|(i, (message, signature))| VerifyItem {
            public_key: &keys[i % 4].public,
            context: SigningContext::Prepare,
            message,
            signature,
        })
        .collect();
    let mut group = c.benchmark_group("ml_dsa_87/verify_64");
    group.throughput(Throughput::Elements(64));
    group.bench_function(BenchmarkId::from_parameter("parallel"), |b| {
        b.iter(|| assert!(verify_batch(&items).all_valid()))
    });
    group.bench_function(BenchmarkId::from_parameter("sequential"), |b| {
        b.iter(|| {
            items.iter().all(|item| {
                item.public_key
                    .verify(item.context, item.message, item.signature)
                    .is_ok()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, signing, parallel_verify);
criterion_main!(benches);
