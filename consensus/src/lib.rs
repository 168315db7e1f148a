//! The PBFT replica as a pure state machine that finalizes DAG anchors, and the seeded simulator that attacks it.
//!
//! Work in progress (issue 3). What exists so far:
//!
//! - [`messages`]: prepare and commit votes and checkpoints, each with a canonical
//!   encoding that begins with the chain id and epoch and its own FIPS 204 signing
//!   context (a primary's vertex, from `weft-dag`, is the pre-prepare);
//! - [`quorum`]: vote counting over distinct voters, with double votes reported as
//!   evidence;
//! - [`replica`]: the normal case of the replica (vertices, pre-prepare, prepare, commit,
//!   in-order execution), `Input` in, `Output`s out;
//! - [`sim`]: a seeded simulator with delays, reordering and duplication, and the
//!   agreement, integrity and liveness checkers.
//!
//! The crate depends on no runtime, clock, socket or disk: `weft-dag` comes without its
//! RocksDB feature. Time will arrive as an input and timers leave as outputs.

pub mod messages;
pub mod quorum;
pub mod replica;
mod signer;
pub mod sim;
pub mod view_change;

pub use signer::Signer;
