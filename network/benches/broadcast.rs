//! Broadcast among four validators over QUIC on 127.0.0.1.
//!
//! - `broadcast_latency/{4KB,512KB}`: one broadcast from validator 0, timed until the
//!   third receiver has it (one sample = one message, others idle).
//! - `broadcast_throughput/{4KB,512KB}`: a burst of messages from validator 0, timed until
//!   every receiver has all of them; criterion reports bytes per second of payload
//!   delivered to each receiver.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use weft_network::testing::{loopback, wait_until, TestCommittee};
use weft_network::{Channel, Event, Network, NetworkLimits};

struct Testnet {
    nodes: Vec<Network>,
    arrivals: mpsc::UnboundedReceiver<u16>,
}

fn testnet(runtime: &Runtime) -> Testnet {
    runtime.block_on(async {
        let committee = TestCommittee::new(4);
        let mut nodes: Vec<Network> = Vec::new();
        for index in 0..4u16 {
            let bootstrap = nodes
                .first()
                .map(|first| vec![first.listen_addrs()[0].clone()])
                .unwrap_or_default();
            let node = committee
                .start(index, loopback(0), bootstrap, NetworkLimits::default())
                .await
                .expect("start");
            nodes.push(node);
        }
        let (arrived, arrivals) = mpsc::unbounded_channel();
        for (index, node) in nodes.iter().enumerate().skip(1) {
            let node = node.clone();
            let arrived = arrived.clone();
            let index = u16::try_from(index).expect("four");
            tokio::spawn(async move {
                while let Some(event) = node.next_event().await {
                    if let Event::Message { .. } = event {
                        if arrived.send(index).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        let probe = nodes.clone();
        wait_until("four validators connected", Duration::from_secs(60), || {
            probe.iter().all(|n| n.connected().len() == 3)
        })
        .await;
        Testnet { nodes, arrivals }
    })
}

async fn deliver(testnet: &mut Testnet, payload: &[u8], count: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..count {
        while testnet.nodes[0]
            .broadcast(Channel::Vertices, payload)
            .is_err()
        {
            tokio::task::yield_now().await;
        }
    }
    for _ in 0..count * 3 {
        testnet.arrivals.recv().await.expect("receivers run");
    }
    start.elapsed()
}

fn broadcast(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut net = testnet(&runtime);
    let sizes = [("4KB", 4 << 10), ("512KB", 512 << 10)];

    let mut latency = c.benchmark_group("broadcast_latency");
    latency.measurement_time(Duration::from_secs(10));
    for (name, size) in sizes {
        let payload = vec![0xa5u8; size];
        latency.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += runtime.block_on(deliver(&mut net, &payload, 1));
                }
                total
            });
        });
    }
    latency.finish();

    let mut throughput = c.benchmark_group("broadcast_throughput");
    throughput.measurement_time(Duration::from_secs(15));
    throughput.sample_size(10);
    for (name, size, burst) in [("4KB", 4 << 10, 1000usize), ("512KB", 512 << 10, 40)] {
        let payload = vec![0x5au8; size];
        throughput.throughput(Throughput::Bytes((size * burst) as u64));
        throughput.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += runtime.block_on(deliver(&mut net, &payload, burst));
                }
                total
            });
        });
    }
    throughput.finish();
    runtime.block_on(async {
        for node in &net.nodes {
            node.shutdown().await;
        }
    });
}

criterion_group!(benches, broadcast);
criterion_main!(benches);
