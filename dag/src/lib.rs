//! Weft's data model: signed DAG vertices, their canonical encoding and validation, the in-memory DAG with its deterministic linearization, and the Store with memory and RocksDB backends.
//!
//! - [`Vertex`] and [`SignedVertex`]: a signed batch of [`Transaction`]s that references
//!   parents of earlier rounds, with a canonical, bounded encoding ([`codec`]).
//! - [`Dag`]: accepted vertices, missing-ancestor tracking, equivocation evidence.
//! - [`Finalizer`]: the deterministic linearization of a committed anchor's history
//!   into a [`FinalizedEntry`], against the exact finalized set.
//! - [`store`]: the narrow synchronous [`Store`](store::Store) trait, one atomic batch
//!   per write, with memory and RocksDB backends run through one test suite.
//!
//! Everything here is synchronous and pure except the RocksDB module, the only code that
//! touches the disk.

pub mod codec;
mod committee;
mod finalize;
mod graph;
pub mod store;
pub mod testing;
mod transaction;
mod types;
mod vertex;

pub use committee::{Committee, CommitteeError};
pub use finalize::{
    chain_digest, order_vertices, ExecuteError, FinalizedEntry, FinalizedTransaction, Finalizer,
    FinalizerSnapshot, TxLocation,
};
pub use graph::{Dag, DagConfig, Equivocation, HistoryError, InsertError, InsertReport, Sponsor};
pub use transaction::{transaction_id, Transaction, TxId, MAX_TTL_MS};
pub use types::{
    ChainId, ChainIdError, Epoch, Round, Sequence, TimestampMs, ValidatorIndex, View,
    MAX_CHAIN_ID_BYTES,
};
pub use vertex::{Limits, ParentRef, Proposal, SignedVertex, Vertex, VertexError};
