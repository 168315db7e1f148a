//! The PBFT replica as a pure state machine that finalizes DAG anchors, and the seeded simulator that attacks it.
//!
//! - [`messages`]: prepare and commit votes, checkpoints and the wire form of every
//!   message, each signed object with a canonical encoding that begins with the chain id
//!   and epoch and its own FIPS 204 signing context (a primary's vertex, from
//!   `weft-dag`, is the pre-prepare);
//! - [`quorum`]: vote counting over distinct voters, with double votes reported as
//!   evidence;
//! - [`view_change`]: `ViewChange` / `NewView` and the deterministic TOCS 2002 decision
//!   rule on claims;
//! - [`replica`]: the replica, `Input` in, `Output`s out: vertices, pre-prepare, prepare,
//!   commit, in-order execution, checkpoints, view change, catch-up, recovery;
//! - [`sim`]: the seeded simulator with faults, Byzantine behaviours and the checkers;
//! - [`sync`]: what state sync accepts from a peer (batches under checkpoint
//!   certificates) and which peers it keeps asking;
//! - [`proof`]: finality proofs and the certificate check they share with sync.
//!
//! The crate depends on no runtime, clock, socket or disk: `weft-dag` comes without its
//! RocksDB feature. Time will arrive as an input and timers leave as outputs.

pub mod messages;
pub mod proof;
pub mod quorum;
pub mod replica;
mod signed;
mod signer;
pub mod sim;
pub mod sync;
pub mod view_change;

pub use signed::{Body, Signed};
pub use signer::Signer;
