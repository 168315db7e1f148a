//! The in-memory Store: for tests and the simulator. Same contract as RocksDB, minus
//! durability across processes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use weft_crypto::Digest;

use super::{check_entries, index_rows, LogHead, StateEntry, Store, StoreBatch, StoreError};
use crate::{FinalizedEntry, Sequence, SignedVertex, TxId, TxLocation};

/// A Store held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default, Clone)]
struct Inner {
    vertices: HashMap<Digest, SignedVertex>,
    finalized: BTreeMap<Sequence, FinalizedEntry>,
    transactions: HashMap<TxId, TxLocation>,
    replica_state: BTreeMap<Vec<u8>, Vec<u8>>,
    head: Option<LogHead>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A copy of this store's contents, as a restarted replica in the simulator would
    /// find them.
    pub fn snapshot(&self) -> MemoryStore {
        MemoryStore {
            inner: Mutex::new(self.lock().clone()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied batch (batches are
        // applied after all checks), so a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    fn write(&self, batch: StoreBatch) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let head = check_entries(inner.head, &batch.finalized)?;
        for vertex in batch.vertices {
            inner.vertices.insert(vertex.hash(), vertex);
        }
        for hash in &batch.deleted_vertices {
            inner.vertices.remove(hash);
        }
        for entry in batch.finalized {
            let rows: Vec<_> = index_rows(&entry).collect();
            inner.transactions.extend(rows);
            inner.finalized.insert(entry.sequence, entry);
        }
        for (key, value) in batch.replica_state {
            match value {
                Some(value) => inner.replica_state.insert(key, value),
                None => inner.replica_state.remove(&key),
            };
        }
        inner.head = head;
        Ok(())
    }

    fn vertex(&self, hash: &Digest) -> Result<Option<SignedVertex>, StoreError> {
        Ok(self.lock().vertices.get(hash).cloned())
    }

    fn finalized(&self, sequence: Sequence) -> Result<Option<FinalizedEntry>, StoreError> {
        Ok(self.lock().finalized.get(&sequence).cloned())
    }

    fn finalized_range(
        &self,
        from: Sequence,
        limit: usize,
    ) -> Result<Vec<FinalizedEntry>, StoreError> {
        Ok(self
            .lock()
            .finalized
            .range(from..)
            .take(limit)
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    fn log_head(&self) -> Result<Option<LogHead>, StoreError> {
        Ok(self.lock().head)
    }

    fn transaction(&self, id: &TxId) -> Result<Option<TxLocation>, StoreError> {
        Ok(self.lock().transactions.get(id).copied())
    }

    fn replica_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().replica_state.get(key).cloned())
    }

    fn replica_state_with_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateEntry>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(after) => Bound::Excluded(after.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        Ok(self
            .lock()
            .replica_state
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    crate::store_suite!(((), super::MemoryStore::new()));
}
