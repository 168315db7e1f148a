//! libp2p over QUIC between a permissioned set of validators: discovery, gossip and vertex fetch.
