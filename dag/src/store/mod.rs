//! The Store: a narrow synchronous trait over what a replica keeps on disk, with one
//! atomic, durable batch per write.
//!
//! - vertices by hash (own vertices are written here before they are sent);
//! - the finalized log: entries appended in order, each checked to extend the hash
//!   chain, together with the transaction index (tx id -> sequence, vertex, position)
//!   and the log head, in the same batch;
//! - the replica's own durable consensus state (what it has signed), as opaque
//!   key/value pairs owned by the consensus crate, for persist-before-send.
//!
//! Both backends, [`MemoryStore`] and (with the `rocksdb` feature) [`RocksStore`], run
//! through one shared test suite.

mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;
#[cfg(test)]
pub(crate) mod suite;

use std::fmt;

use weft_crypto::Digest;

use crate::{FinalizedEntry, Sequence, SignedVertex, TxId, TxLocation};

pub use memory::MemoryStore;
#[cfg(feature = "rocksdb")]
pub use rocks::RocksStore;

/// A key of the replica's durable state and its value.
pub type StateEntry = (Vec<u8>, Vec<u8>);

/// The newest entry of the finalized log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogHead {
    /// Its sequence.
    pub sequence: Sequence,
    /// Its chained state digest.
    pub state_digest: Digest,
}

/// Everything one write changes, applied atomically: after a crash either all of it is
/// on disk or none of it.
#[derive(Clone, Debug, Default)]
pub struct StoreBatch {
    pub(crate) vertices: Vec<SignedVertex>,
    pub(crate) deleted_vertices: Vec<Digest>,
    pub(crate) finalized: Vec<FinalizedEntry>,
    pub(crate) replica_state: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl StoreBatch {
    /// An empty batch.
    pub fn new() -> StoreBatch {
        StoreBatch::default()
    }

    /// Stores a vertex under its hash.
    pub fn put_vertex(&mut self, vertex: SignedVertex) -> &mut Self {
        self.vertices.push(vertex);
        self
    }

    /// Deletes a vertex (released below a stable checkpoint).
    pub fn delete_vertex(&mut self, hash: Digest) -> &mut Self {
        self.deleted_vertices.push(hash);
        self
    }

    /// Appends a finalized entry and indexes its transactions. Entries must extend the
    /// log head in order, with correctly chained digests.
    pub fn append_finalized(&mut self, entry: FinalizedEntry) -> &mut Self {
        self.finalized.push(entry);
        self
    }

    /// Sets a key of the replica's durable consensus state.
    pub fn put_replica_state(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.replica_state
            .push((key.to_vec(), Some(value.to_vec())));
        self
    }

    /// Removes a key of the replica's durable consensus state.
    pub fn delete_replica_state(&mut self, key: &[u8]) -> &mut Self {
        self.replica_state.push((key.to_vec(), None));
        self
    }

    /// True when the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.vertices.is_empty()
            && self.deleted_vertices.is_empty()
            && self.finalized.is_empty()
            && self.replica_state.is_empty()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (disk full, I/O error). Possibly transient; nothing of the
    /// batch was applied.
    #[error("storage backend: {0}")]
    Backend(String),
    /// Stored bytes do not decode. Permanent: the database is damaged.
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it does not decode.
        reason: String,
    },
    /// A finalized entry does not extend the log head. A caller bug; nothing applied.
    #[error("finalized entry {got} does not follow the log head; expected {expected}")]
    NotNext {
        /// The sequence the log expects.
        expected: Sequence,
        /// The sequence given.
        got: Sequence,
    },
    /// A finalized entry's digest does not chain from the previous one. Nothing applied.
    #[error("finalized entry {0} does not chain from the previous state digest")]
    BrokenChain(Sequence),
}

/// A replica's durable storage. Every method is synchronous; `write` returns only once
/// the batch is durable.
pub trait Store: Send + Sync + fmt::Debug {
    /// Applies `batch` atomically and durably, or not at all.
    fn write(&self, batch: StoreBatch) -> Result<(), StoreError>;

    /// A stored vertex.
    fn vertex(&self, hash: &Digest) -> Result<Option<SignedVertex>, StoreError>;

    /// The finalized entry at `sequence`.
    fn finalized(&self, sequence: Sequence) -> Result<Option<FinalizedEntry>, StoreError>;

    /// Up to `limit` consecutive finalized entries starting at `from`.
    fn finalized_range(
        &self,
        from: Sequence,
        limit: usize,
    ) -> Result<Vec<FinalizedEntry>, StoreError>;

    /// The newest finalized entry's sequence and digest; `None` for an empty log.
    fn log_head(&self) -> Result<Option<LogHead>, StoreError>;

    /// Where a finalized transaction is.
    fn transaction(&self, id: &TxId) -> Result<Option<TxLocation>, StoreError>;

    /// A key of the replica's durable consensus state.
    fn replica_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` keys of the replica's durable state that start with `prefix` (and
    /// come after `after`, to page through them), with their values, in key order.
    fn replica_state_with_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateEntry>, StoreError>;
}

/// Checks that `entries` extend `head` in order with correctly chained digests, and
/// returns the new head.
pub(crate) fn check_entries(
    head: Option<LogHead>,
    entries: &[FinalizedEntry],
) -> Result<Option<LogHead>, StoreError> {
    let mut head = head;
    for entry in entries {
        let (expected, previous) = match head {
            Some(head) => (head.sequence.next(), head.state_digest),
            None => (Sequence(1), Digest::ZERO),
        };
        if entry.sequence != expected {
            return Err(StoreError::NotNext {
                expected,
                got: entry.sequence,
            });
        }
        if entry.chained_digest(&previous) != entry.state_digest {
            return Err(StoreError::BrokenChain(entry.sequence));
        }
        head = Some(LogHead {
            sequence: entry.sequence,
            state_digest: entry.state_digest,
        });
    }
    Ok(head)
}

/// The transaction index rows of an entry.
pub(crate) fn index_rows(entry: &FinalizedEntry) -> impl Iterator<Item = (TxId, TxLocation)> + '_ {
    entry.transactions.iter().map(move |t| {
        (
            t.id,
            TxLocation {
                sequence: entry.sequence,
                vertex: t.vertex,
                position: t.position,
            },
        )
    })
}
