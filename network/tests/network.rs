//! Real validators on 127.0.0.1 over QUIC: discovery from one bootstrap address,
//! reconnection after a restart on a new port, delivery on every channel, fetch and
//! range sync, refusal of an identity outside the set, penalties for oversized frames,
//! and fairness under a flood. Every wait is on a condition with a bounded timeout.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_network::testing::{loopback, wait_until, TestCommittee, TEST_CHAIN};
use weft_network::{
    sign_binding, Channel, Event, Network, NetworkConfig, NetworkLimits, PeerSet, Request,
    Response, SendError, SyncEntry, ValidatorPeer,
};

const TIMEOUT: Duration = Duration::from_secs(60);

type Received = Arc<Mutex<Vec<(u16, Channel, Vec<u8>)>>>;

/// Consumes a node's events: records messages, answers fetches from `vertices` and
/// syncs from `entries` (sequence s is `entries[s - 1]`).
fn collect(
    network: &Network,
    vertices: HashMap<[u8; 32], Vec<u8>>,
    entries: Vec<SyncEntry>,
) -> Received {
    let received: Received = Arc::default();
    let sink = received.clone();
    let network = network.clone();
    tokio::spawn(async move {
        while let Some(event) = network.next_event().await {
            match event {
                Event::Message {
                    from,
                    channel,
                    payload,
                } => sink
                    .lock()
                    .expect("lock")
                    .push((from, channel, payload.to_vec())),
                Event::Request { request, reply, .. } => match request {
                    Request::Vertices { hashes } => reply.reply(Response::Vertices(
                        hashes
                            .iter()
                            .filter_map(|h| vertices.get(h).cloned())
                            .collect(),
                    )),
                    Request::Sync {
                        from_sequence,
                        max_entries,
                    } => reply.reply(Response::Certified {
                        entries: entries
                            .iter()
                            .skip(usize::try_from(from_sequence.saturating_sub(1)).unwrap_or(0))
                            .take(max_entries as usize)
                            .cloned()
                            .collect(),
                        certificate: vec![7; 64],
                    }),
                },
                Event::Connected(_) | Event::Disconnected(_) => {}
            }
        }
    });
    received
}

fn everyone_but(n: u16, me: u16) -> BTreeSet<u16> {
    (0..n).filter(|i| *i != me).collect()
}

/// Starts `n` validators in a chain: validator i is told only validator i-1's address.
async fn start_chain(committee: &TestCommittee, n: u16, limits: &[NetworkLimits]) -> Vec<Network> {
    let mut nodes: Vec<Network> = Vec::new();
    for index in 0..n {
        let bootstrap = nodes
            .last()
            .map(|previous| vec![previous.listen_addrs()[0].clone()])
            .unwrap_or_default();
        let node = committee
            .start(
                index,
                loopback(0),
                bootstrap,
                limits[usize::from(index)].clone(),
            )
            .await
            .expect("start");
        nodes.push(node);
    }
    nodes
}

async fn all_connected(nodes: &[Network], n: u16) {
    let probe = nodes.to_vec();
    wait_until("every validator connected to every other", TIMEOUT, || {
        probe
            .iter()
            .enumerate()
            .all(|(i, node)| node.connected() == everyone_but(n, u16::try_from(i).expect("small")))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_find_each_other_from_one_address_and_after_a_restart() {
    let committee = TestCommittee::new(4);
    let limits = vec![NetworkLimits::default(); 4];
    let mut nodes = start_chain(&committee, 4, &limits).await;
    for node in &nodes {
        collect(node, HashMap::new(), Vec::new());
    }
    all_connected(&nodes, 4).await;

    // Validator 2 restarts with the same key on a new port, told only validator 1.
    let old_address = nodes[2].listen_addrs()[0].clone();
    nodes[2].shutdown().await;
    let others = [nodes[0].clone(), nodes[1].clone(), nodes[3].clone()];
    wait_until("the others see validator 2 leave", TIMEOUT, || {
        others.iter().all(|n| !n.connected().contains(&2))
    })
    .await;
    let restarted = committee
        .start(
            2,
            loopback(0),
            vec![nodes[1].listen_addrs()[0].clone()],
            NetworkLimits::default(),
        )
        .await
        .expect("restart");
    assert_ne!(restarted.listen_addrs()[0], old_address, "a new address");
    collect(&restarted, HashMap::new(), Vec::new());
    nodes[2] = restarted;
    all_connected(&nodes, 4).await;
    assert_eq!(nodes[0].metrics().connected_validators.get(), 3);
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_validator_and_fetch_and_sync_answer() {
    let committee = TestCommittee::new(4);
    let limits = vec![NetworkLimits::default(); 4];
    let nodes = start_chain(&committee, 4, &limits).await;
    let vertices: HashMap<[u8; 32], Vec<u8>> = (0..3u8)
        .map(|i| ([i; 32], vec![i; 100 + usize::from(i)]))
        .collect();
    let entries: Vec<SyncEntry> = (1..=10u8)
        .map(|s| SyncEntry {
            entry: vec![s; 8],
            vertices: vec![vec![s; 50]],
        })
        .collect();
    let received: Vec<Received> = nodes
        .iter()
        .map(|node| collect(node, vertices.clone(), entries.clone()))
        .collect();
    all_connected(&nodes, 4).await;

    let mut expected: Vec<BTreeSet<(u16, &str, Vec<u8>)>> = vec![BTreeSet::new(); 4];
    for (i, node) in nodes.iter().enumerate() {
        let from = u16::try_from(i).expect("small");
        for channel in Channel::ALL {
            for k in 0..20u8 {
                let mut payload = from.to_be_bytes().to_vec();
                payload.extend_from_slice(&[k]);
                payload.extend_from_slice(channel.name().as_bytes());
                node.broadcast(channel, &payload).expect("broadcast");
                for (j, want) in expected.iter_mut().enumerate() {
                    if j != i {
                        want.insert((from, channel.name(), payload.clone()));
                    }
                }
            }
        }
        // One direct message to the next validator, which only it gets.
        let to = (from + 1) % 4;
        node.send(to, Channel::Consensus, b"direct").expect("send");
        expected[usize::from(to)].insert((from, "consensus", b"direct".to_vec()));
    }
    let snapshot = |r: &Received| -> BTreeSet<(u16, &'static str, Vec<u8>)> {
        r.lock()
            .expect("lock")
            .iter()
            .map(|(f, c, p)| (*f, c.name(), p.clone()))
            .collect()
    };
    wait_until("every message at every validator", TIMEOUT, || {
        received
            .iter()
            .zip(&expected)
            .all(|(r, want)| snapshot(r) == *want)
    })
    .await;
    for r in &received {
        assert_eq!(
            r.lock().expect("lock").len(),
            20 * 2 * 3 + 1,
            "each exactly once"
        );
    }

    let fetched = nodes[0]
        .request(
            1,
            Request::Vertices {
                hashes: vec![[2; 32], [9; 32], [0; 32]],
            },
        )
        .await
        .expect("fetch");
    assert_eq!(
        fetched,
        Response::Vertices(vec![vec![2; 102], vec![0; 100]])
    );

    let synced = nodes[3]
        .request(
            2,
            Request::Sync {
                from_sequence: 5,
                max_entries: 3,
            },
        )
        .await
        .expect("sync");
    assert_eq!(
        synced,
        Response::Certified {
            entries: entries[4..7].to_vec(),
            certificate: vec![7; 64],
        }
    );

    let too_many = Request::Vertices {
        hashes: vec![[0; 32]; NetworkLimits::default().max_fetch_hashes + 1],
    };
    assert!(nodes[0].request(1, too_many).await.is_err());
    assert_eq!(
        nodes[0].send(0, Channel::Consensus, b"self"),
        Err(SendError::UnknownValidator(0))
    );
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outside_the_set_can_neither_connect_nor_deliver() {
    let committee = TestCommittee::new(4);
    let limits = vec![NetworkLimits::default(); 4];
    let nodes = start_chain(&committee, 4, &limits).await;
    let received: Vec<Received> = nodes
        .iter()
        .map(|node| collect(node, HashMap::new(), Vec::new()))
        .collect();
    all_connected(&nodes, 4).await;

    // The outsider believes it is validator 4: its own set includes itself, with a
    // valid binding from its own ML-DSA key. Nobody else's set does.
    let identity = libp2p::identity::Keypair::generate_ed25519();
    let keys = weft_crypto::Keypair::generate();
    let peer_id = identity.public().to_peer_id();
    let mut validators: Vec<ValidatorPeer> = committee.validators.clone();
    validators.push(ValidatorPeer {
        index: 4,
        public_key: keys.public,
        peer_id,
        binding: sign_binding(&keys.secret, TEST_CHAIN, 4, &peer_id),
    });
    let outsider = Network::start(
        NetworkConfig {
            keypair: identity,
            index: 4,
            peers: PeerSet::new(TEST_CHAIN, &validators).expect("its own set"),
            listen: vec![loopback(0)],
            bootstrap: vec![nodes[0].listen_addrs()[0].clone()],
            limits: NetworkLimits::default(),
        },
        &prometheus::Registry::new(),
    )
    .await
    .expect("outsider starts");
    collect(&outsider, HashMap::new(), Vec::new());

    let validator_zero = nodes[0].clone();
    wait_until("validator 0 denies the outsider", TIMEOUT, || {
        validator_zero
            .metrics()
            .denied_connections
            .with_label_values(&["inbound"])
            .get()
            > 0
    })
    .await;
    for _ in 0..10 {
        // Sends to validators it never reaches are queued or dropped, never delivered.
        let _ = outsider.broadcast(Channel::Consensus, b"outsider");
    }
    // A message sent after the outsider's, between validators, arrives: so the
    // outsider's had every chance to arrive first.
    nodes[1]
        .broadcast(Channel::Consensus, b"after")
        .expect("broadcast");
    wait_until("the later message at every validator", TIMEOUT, || {
        received
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .all(|(_, r)| {
                r.lock()
                    .expect("lock")
                    .iter()
                    .any(|(_, _, p)| p == b"after")
            })
    })
    .await;
    for (i, r) in received.iter().enumerate() {
        assert!(
            r.lock()
                .expect("lock")
                .iter()
                .all(|(_, _, p)| p != b"outsider"),
            "validator {i} delivered the outsider's message"
        );
        assert!(!nodes[i].connected().contains(&4));
    }
    assert!(
        outsider.connected().is_empty(),
        "no validator stays connected to it"
    );
    outsider.shutdown().await;
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_dropped_and_its_sender_penalized() {
    let committee = TestCommittee::new(4);
    let strict = NetworkLimits {
        max_vertex_message: 64 << 10,
        max_consensus_message: 64 << 10,
        ..NetworkLimits::default()
    };
    // Validator 1 would send up to 4 MiB; the others accept 64 KiB.
    let mut limits = vec![strict.clone(); 4];
    limits[1] = NetworkLimits::default();
    let nodes = start_chain(&committee, 4, &limits).await;
    let received: Vec<Received> = nodes
        .iter()
        .map(|node| collect(node, HashMap::new(), Vec::new()))
        .collect();
    all_connected(&nodes, 4).await;

    nodes[1]
        .send(0, Channel::Consensus, &vec![7u8; 1 << 20])
        .expect("within the sender's own limit");
    let zero = nodes[0].clone();
    wait_until("validator 0 penalizes validator 1", TIMEOUT, || {
        zero.metrics().penalties_for("oversized") == 1 && !zero.connected().contains(&1)
    })
    .await;
    assert_eq!(zero.metrics().dropped_for("oversized"), 1);

    // Others are unaffected.
    nodes[2]
        .send(0, Channel::Vertices, b"still here")
        .expect("send");
    wait_until("validator 2's message at validator 0", TIMEOUT, || {
        received[0]
            .lock()
            .expect("lock")
            .iter()
            .any(|(f, _, p)| *f == 2 && p == b"still here")
    })
    .await;
    assert!(received[0]
        .lock()
        .expect("lock")
        .iter()
        .all(|(_, _, p)| p.len() <= 64 << 10));
    // The sender's own limit refuses before anything is sent.
    assert!(matches!(
        nodes[2].send(0, Channel::Consensus, &vec![0u8; (64 << 10) + 1]),
        Err(SendError::TooLarge { .. })
    ));
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_validator_does_not_starve_the_others() {
    let committee = TestCommittee::new(3);
    let mut limits = vec![NetworkLimits::default(); 3];
    limits[0].inbound_queue_per_peer = 256;
    limits[1].outbound_queue_per_peer = 10_000;
    let nodes = start_chain(&committee, 3, &limits).await;
    // Validator 0 consumes nothing yet: its queues fill.
    collect(&nodes[1], HashMap::new(), Vec::new());
    collect(&nodes[2], HashMap::new(), Vec::new());
    all_connected(&nodes, 3).await;
    // Connection events wait in validator 0's inbox; they come first later.

    for k in 0..5_000u32 {
        nodes[1]
            .send(0, Channel::Consensus, &k.to_be_bytes())
            .expect("flood");
    }
    for k in 0..100u32 {
        nodes[2]
            .send(0, Channel::Vertices, &k.to_be_bytes())
            .expect("honest traffic");
    }
    let zero = nodes[0].clone();
    wait_until(
        "all of validator 2's messages queued at validator 0",
        TIMEOUT,
        || zero.queued_from(2) == 100 && zero.metrics().dropped_for("inbound_queue_full") > 0,
    )
    .await;
    assert!(zero.queued_from(1) <= 256);

    // Round-robin: validator 2's 100 messages come within the first 200 messages.
    let mut from_two = 0;
    let mut messages = 0;
    while messages < 200 {
        match zero.next_event().await.expect("event") {
            Event::Message { from, .. } => {
                messages += 1;
                if from == 2 {
                    from_two += 1;
                }
            }
            _ => continue,
        }
    }
    assert_eq!(from_two, 100);
    for node in &nodes {
        node.shutdown().await;
    }
}
