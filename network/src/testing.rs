//! Helpers for tests and benchmarks that run real validators on 127.0.0.1: a committee
//! of fresh keys with valid peer bindings, and a node started on an ephemeral port.

use std::time::Duration;

use libp2p::{identity, Multiaddr};
use weft_crypto::Keypair;

use crate::{
    sign_binding, Network, NetworkConfig, NetworkLimits, PeerSet, StartError, ValidatorPeer,
};

/// The chain id test committees bind to.
pub const TEST_CHAIN: &[u8] = b"weft-network-test";

/// A committee of `n` validators with fresh ML-DSA-87 and libp2p keys.
#[derive(Debug)]
pub struct TestCommittee {
    /// Each validator's libp2p identity.
    pub identities: Vec<identity::Keypair>,
    /// The entries with their binding signatures.
    pub validators: Vec<ValidatorPeer>,
    /// The verified set.
    pub peers: PeerSet,
}

impl TestCommittee {
    /// Fresh keys for `n` validators.
    pub fn new(n: u16) -> TestCommittee {
        let mut identities = Vec::new();
        let mut validators = Vec::new();
        for index in 0..n {
            let identity = identity::Keypair::generate_ed25519();
            let keys = Keypair::generate();
            let peer_id = identity.public().to_peer_id();
            validators.push(ValidatorPeer {
                index,
                public_key: keys.public,
                peer_id,
                binding: sign_binding(&keys.secret, TEST_CHAIN, index, &peer_id),
            });
            identities.push(identity);
        }
        let peers = PeerSet::new(TEST_CHAIN, &validators)
            .unwrap_or_else(|error| unreachable!("freshly signed bindings verify: {error}"));
        TestCommittee {
            identities,
            validators,
            peers,
        }
    }

    /// Starts validator `index` on `listen` (port 0 for any), told only `bootstrap`.
    pub async fn start(
        &self,
        index: u16,
        listen: Multiaddr,
        bootstrap: Vec<Multiaddr>,
        limits: NetworkLimits,
    ) -> Result<Network, StartError> {
        let registry = prometheus::Registry::new();
        Network::start(
            NetworkConfig {
                keypair: self.identities[usize::from(index)].clone(),
                index,
                peers: self.peers.clone(),
                listen: vec![listen],
                bootstrap,
                limits,
            },
            &registry,
        )
        .await
    }
}

/// `/ip4/127.0.0.1/udp/{port}/quic-v1`.
pub fn loopback(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .unwrap_or_else(|error| unreachable!("a well-formed address: {error}"))
}

/// Polls `condition` every few milliseconds until it holds; panics naming `what` after
/// `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
