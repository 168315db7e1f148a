//! The permissioned peer set: which libp2p identities speak for which validator.
//!
//! A validator has two keys. Its ML-DSA-87 key signs everything consensus sees and is
//! named in the genesis validator set; its libp2p key (Ed25519) only authenticates QUIC
//! connections (libp2p's TLS certificate extension signs the connection's certificate
//! with it) and derives its [`PeerId`]. The two are tied by a **peer binding**: the
//! validator signs, with its ML-DSA-87 key and the FIPS 204 context
//! `weft/peer-binding/v1`, the bytes
//!
//! ```text
//! "weft-peer-binding" || u32 len || chain id || u16 index (BE) || u32 len || peer id bytes
//! ```
//!
//! and the genesis file carries `(index, ML-DSA public key, peer id, binding)` for every
//! validator. [`PeerSet::new`] refuses a set whose bindings do not verify, so a peer id
//! only speaks for an index whose post-quantum key vouched for it; the libp2p key alone
//! never makes a validator. The binding names the chain, so it cannot be replayed into
//! another network, and the index, so one peer id cannot be moved to another seat.

use std::collections::HashMap;

use libp2p::PeerId;
use weft_crypto::{PublicKey, SecretKey, Signature, SigningContext};

/// Why a peer set was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerSetError {
    /// Two entries for one index.
    #[error("validator index {0} appears twice")]
    DuplicateIndex(u16),
    /// Two validators claim one libp2p identity.
    #[error("peer id {0} is bound to two validators")]
    DuplicatePeer(PeerId),
    /// The binding signature does not verify under the validator's ML-DSA-87 key.
    #[error(
        "the peer binding of validator {index} ({peer}) does not verify under its ML-DSA-87 key"
    )]
    BadBinding {
        /// The validator.
        index: u16,
        /// The peer id it claims.
        peer: PeerId,
    },
    /// No validators at all.
    #[error("the peer set is empty")]
    Empty,
}

/// One validator's network identity, as the genesis file states it.
#[derive(Debug, Clone)]
pub struct ValidatorPeer {
    /// The validator's index in the committee.
    pub index: u16,
    /// Its ML-DSA-87 public key.
    pub public_key: PublicKey,
    /// Its libp2p identity.
    pub peer_id: PeerId,
    /// The ML-DSA-87 signature over [`binding_message`].
    pub binding: Signature,
}

/// The bytes a validator signs to bind `peer_id` to its seat `index` on `chain_id`.
pub fn binding_message(chain_id: &[u8], index: u16, peer_id: &PeerId) -> Vec<u8> {
    let peer = peer_id.to_bytes();
    let mut out = Vec::with_capacity(17 + 4 + chain_id.len() + 2 + 4 + peer.len());
    out.extend_from_slice(b"weft-peer-binding");
    out.extend_from_slice(&length_prefix(chain_id.len()));
    out.extend_from_slice(chain_id);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&length_prefix(peer.len()));
    out.extend_from_slice(&peer);
    out
}

/// A `u32` big-endian length; chain ids and peer ids are tens of bytes, so saturating
/// at 4 GiB never changes a real binding.
fn length_prefix(length: usize) -> [u8; 4] {
    u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes()
}

/// Signs the binding of `peer_id` to `index` with the validator's ML-DSA-87 key.
pub fn sign_binding(
    secret: &SecretKey,
    chain_id: &[u8],
    index: u16,
    peer_id: &PeerId,
) -> Signature {
    secret.sign(
        SigningContext::PeerBinding,
        &binding_message(chain_id, index, peer_id),
    )
}

/// The verified validator set, both ways round.
#[derive(Debug, Clone)]
pub struct PeerSet {
    by_index: HashMap<u16, PeerId>,
    by_peer: HashMap<PeerId, u16>,
}

impl PeerSet {
    /// Verifies every binding and indexes the set.
    pub fn new(chain_id: &[u8], validators: &[ValidatorPeer]) -> Result<PeerSet, PeerSetError> {
        if validators.is_empty() {
            return Err(PeerSetError::Empty);
        }
        let mut set = PeerSet {
            by_index: HashMap::new(),
            by_peer: HashMap::new(),
        };
        for validator in validators {
            let message = binding_message(chain_id, validator.index, &validator.peer_id);
            validator
                .public_key
                .verify(SigningContext::PeerBinding, &message, &validator.binding)
                .map_err(|_| PeerSetError::BadBinding {
                    index: validator.index,
                    peer: validator.peer_id,
                })?;
            if set
                .by_index
                .insert(validator.index, validator.peer_id)
                .is_some()
            {
                return Err(PeerSetError::DuplicateIndex(validator.index));
            }
            if set
                .by_peer
                .insert(validator.peer_id, validator.index)
                .is_some()
            {
                return Err(PeerSetError::DuplicatePeer(validator.peer_id));
            }
        }
        Ok(set)
    }

    /// The validator a peer speaks for, if any.
    pub fn index_of(&self, peer: &PeerId) -> Option<u16> {
        self.by_peer.get(peer).copied()
    }

    /// The peer id of validator `index`.
    pub fn peer_of(&self, index: u16) -> Option<PeerId> {
        self.by_index.get(&index).copied()
    }

    /// Every validator, by index.
    pub fn iter(&self) -> impl Iterator<Item = (u16, PeerId)> + '_ {
        let mut all: Vec<(u16, PeerId)> = self.by_index.iter().map(|(i, p)| (*i, *p)).collect();
        all.sort_unstable_by_key(|(i, _)| *i);
        all.into_iter()
    }

    /// How many validators.
    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    /// Never true for a set [`PeerSet::new`] accepted.
    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity;
    use weft_crypto::Keypair;

    fn validator(index: u16, chain: &[u8]) -> (ValidatorPeer, Keypair) {
        let keys = Keypair::generate();
        let peer_id = identity::Keypair::generate_ed25519().public().to_peer_id();
        let binding = sign_binding(&keys.secret, chain, index, &peer_id);
        (
            ValidatorPeer {
                index,
                public_key: keys.public,
                peer_id,
                binding,
            },
            keys,
        )
    }

    #[test]
    fn a_valid_set_maps_both_ways() {
        let (a, _) = validator(0, b"weft-test");
        let (b, _) = validator(1, b"weft-test");
        let set = PeerSet::new(b"weft-test", &[a.clone(), b.clone()]).expect("valid set");
        assert_eq!(set.index_of(&b.peer_id), Some(1));
        assert_eq!(set.peer_of(0), Some(a.peer_id));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn a_binding_for_another_chain_index_or_peer_is_refused() {
        let (a, _) = validator(0, b"other-chain");
        let refused = PeerSet::new(b"weft-test", &[a]).expect_err("wrong chain");
        assert!(matches!(refused, PeerSetError::BadBinding { index: 0, .. }));

        let (mut moved, _) = validator(0, b"weft-test");
        moved.index = 1;
        assert!(PeerSet::new(b"weft-test", &[moved]).is_err());

        let (mut stolen, _) = validator(0, b"weft-test");
        stolen.peer_id = identity::Keypair::generate_ed25519().public().to_peer_id();
        assert!(PeerSet::new(b"weft-test", &[stolen]).is_err());
    }

    #[test]
    fn duplicates_are_refused() {
        let (a, keys) = validator(0, b"weft-test");
        let mut twin = a.clone();
        twin.index = 1;
        twin.binding = sign_binding(&keys.secret, b"weft-test", 1, &twin.peer_id);
        assert_eq!(
            PeerSet::new(b"weft-test", &[a.clone(), twin]).expect_err("same peer"),
            PeerSetError::DuplicatePeer(a.peer_id)
        );
        assert_eq!(
            PeerSet::new(b"weft-test", &[a.clone(), a]).expect_err("same index"),
            PeerSetError::DuplicateIndex(0)
        );
        assert_eq!(
            PeerSet::new(b"weft-test", &[]).expect_err("empty"),
            PeerSetError::Empty
        );
    }
}
