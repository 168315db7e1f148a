//! The RocksDB Store: one column family per kind of record, one `WriteBatch` per write,
//! synced to disk before `write` returns.
//!
//! | column family  | key                    | value                          |
//! |----------------|------------------------|--------------------------------|
//! | `vertices`     | hash (32 bytes)        | signed vertex, wire form       |
//! | `finalized`    | sequence (u64, big-endian, so keys sort in log order) | entry (postcard) |
//! | `transactions` | tx id (32 bytes)       | location (postcard)            |
//! | `replica`      | consensus-owned key    | consensus-owned value          |
//! | `meta`         | `head`                 | log head (postcard)            |
//!
//! Records are postcard (a stable, documented, maintained serde format); a record
//! decodes only if it is at most `MAX_RECORD_BYTES` long and nothing trails it.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_crypto::Digest;

use super::{check_entries, index_rows, LogHead, StateEntry, Store, StoreBatch, StoreError};
use crate::vertex::Limits;
use crate::{FinalizedEntry, Sequence, SignedVertex, TxId, TxLocation};

const VERTICES: &str = "vertices";
const FINALIZED: &str = "finalized";
const TRANSACTIONS: &str = "transactions";
const REPLICA: &str = "replica";
const META: &str = "meta";
const HEAD_KEY: &[u8] = b"head";

/// The largest record we decode from our own database (a finalized entry of 100,000
/// transactions is about 7 MB).
const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// A Store in a RocksDB database.
#[derive(Debug)]
pub struct RocksStore {
    db: DB,
    limits: Limits,
    /// Serializes writers so the head check and the write are one step.
    head: Mutex<Option<LogHead>>,
}

impl RocksStore {
    /// Opens (or creates) the database at `path`. `limits` bound the decoding of stored
    /// vertices.
    pub fn open(path: &Path, limits: Limits) -> Result<RocksStore, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_keep_log_file_num(4);
        let families = [VERTICES, FINALIZED, TRANSACTIONS, REPLICA, META]
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, path, families).map_err(backend)?;
        let store = RocksStore {
            db,
            limits,
            head: Mutex::new(None),
        };
        let head = store
            .get(META, HEAD_KEY)?
            .map(|bytes| decode::<LogHead>("log head", &bytes))
            .transpose()?;
        *store.lock_head() = head;
        Ok(store)
    }

    fn lock_head(&self) -> MutexGuard<'_, Option<LogHead>> {
        // The head is only replaced after a successful write, so it is consistent even
        // if a writer panicked.
        self.head
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn family(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Backend(format!("column family {name} is missing")))
    }

    fn get(&self, family: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.family(family)?, key).map_err(backend)
    }

    /// `weft reset-state`: deletes the finalized log, the transaction index, the log head
    /// and every vertex except `keep`, and leaves the `replica` family (what consensus
    /// signed) untouched. One synced `WriteBatch`, so a crash leaves either the old
    /// database or the reset one, never a reset without its signing record.
    pub fn reset_keeping(&self, keep: &[Digest]) -> Result<(), StoreError> {
        let mut head = self.lock_head();
        let mut write = WriteBatch::default();
        // Past every key: keys are 32-byte hashes or 8-byte sequences.
        let end = [0xffu8; 33];
        for family in [FINALIZED, TRANSACTIONS, META] {
            write.delete_range_cf(self.family(family)?, [0u8].as_slice(), end.as_slice());
        }
        let vertices = self.family(VERTICES)?;
        let mut kept: Vec<&Digest> = keep.iter().collect();
        kept.sort();
        kept.dedup();
        // Delete the ranges between the kept keys: [start, k) for each k, then (k, end).
        let mut start: Vec<u8> = Vec::new();
        for hash in kept {
            write.delete_range_cf(vertices, start.as_slice(), hash.as_bytes().as_slice());
            start = hash.as_bytes().to_vec();
            // The immediate successor of `hash` in byte order.
            start.push(0);
        }
        write.delete_range_cf(vertices, start.as_slice(), end.as_slice());
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(write, &options).map_err(backend)?;
        *head = None;
        drop(head);
        for family in [VERTICES, FINALIZED, TRANSACTIONS, META] {
            self.db
                .compact_range_cf(self.family(family)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }
}

fn backend(error: rocksdb::Error) -> StoreError {
    StoreError::Backend(error.into_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Backend(e.to_string()))
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(StoreError::Corrupt {
            what,
            reason: format!(
                "{} bytes, above the limit of {MAX_RECORD_BYTES}",
                bytes.len()
            ),
        });
    }
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        what,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(StoreError::Corrupt {
            what,
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

impl Store for RocksStore {
    fn write(&self, batch: StoreBatch) -> Result<(), StoreError> {
        let mut head = self.lock_head();
        let new_head = check_entries(*head, &batch.finalized)?;
        let mut write = WriteBatch::default();
        let vertices = self.family(VERTICES)?;
        for vertex in &batch.vertices {
            write.put_cf(vertices, vertex.hash().as_bytes(), vertex.to_wire());
        }
        for hash in &batch.deleted_vertices {
            write.delete_cf(vertices, hash.as_bytes());
        }
        let finalized = self.family(FINALIZED)?;
        let transactions = self.family(TRANSACTIONS)?;
        for entry in &batch.finalized {
            write.put_cf(finalized, entry.sequence.0.to_be_bytes(), encode(entry)?);
            for (id, location) in index_rows(entry) {
                write.put_cf(transactions, id.0.as_bytes(), encode(&location)?);
            }
        }
        let replica = self.family(REPLICA)?;
        for (key, value) in &batch.replica_state {
            match value {
                Some(value) => write.put_cf(replica, key, value),
                None => write.delete_cf(replica, key),
            }
        }
        if let Some(new_head) = new_head.filter(|_| !batch.finalized.is_empty()) {
            write.put_cf(self.family(META)?, HEAD_KEY, encode(&new_head)?);
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(write, &options).map_err(backend)?;
        *head = new_head;
        Ok(())
    }

    fn vertex(&self, hash: &Digest) -> Result<Option<SignedVertex>, StoreError> {
        self.get(VERTICES, hash.as_bytes())?
            .map(|bytes| {
                SignedVertex::from_wire(&bytes, &self.limits).map_err(|e| StoreError::Corrupt {
                    what: "vertex",
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    fn finalized(&self, sequence: Sequence) -> Result<Option<FinalizedEntry>, StoreError> {
        self.get(FINALIZED, &sequence.0.to_be_bytes())?
            .map(|bytes| decode("finalized entry", &bytes))
            .transpose()
    }

    fn finalized_range(
        &self,
        from: Sequence,
        limit: usize,
    ) -> Result<Vec<FinalizedEntry>, StoreError> {
        let start = from.0.to_be_bytes();
        let iterator = self.db.iterator_cf(
            self.family(FINALIZED)?,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut entries = Vec::new();
        for item in iterator.take(limit) {
            let (_, value) = item.map_err(backend)?;
            entries.push(decode("finalized entry", &value)?);
        }
        Ok(entries)
    }

    fn log_head(&self) -> Result<Option<LogHead>, StoreError> {
        Ok(*self.lock_head())
    }

    fn transaction(&self, id: &TxId) -> Result<Option<TxLocation>, StoreError> {
        self.get(TRANSACTIONS, id.0.as_bytes())?
            .map(|bytes| decode("transaction location", &bytes))
            .transpose()
    }

    fn replica_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(REPLICA, key)
    }

    fn replica_state_with_prefix(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StateEntry>, StoreError> {
        let start = after.unwrap_or(prefix);
        let iterator = self.db.iterator_cf(
            self.family(REPLICA)?,
            IteratorMode::From(start, Direction::Forward),
        );
        let mut found = Vec::new();
        for item in iterator {
            if found.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(backend)?;
            if after.is_some_and(|after| *key == *after) {
                continue;
            }
            if !key.starts_with(prefix) {
                break;
            }
            found.push((key.to_vec(), value.to_vec()));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, RocksStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RocksStore::open(dir.path(), Limits::default()).expect("open");
        (dir, store)
    }

    mod suite {
        crate::store_suite!(super::open_temp());
    }

    #[test]
    fn contents_survive_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fixture = crate::store::suite::Fixture::new();
        {
            let store = RocksStore::open(dir.path(), Limits::default()).expect("open");
            fixture.fill(&store, 3);
        }
        let store = RocksStore::open(dir.path(), Limits::default()).expect("reopen");
        fixture.check_filled(&store, 3);
    }

    #[test]
    fn reset_keeps_the_signing_record_and_the_named_vertices_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fixture = crate::store::suite::Fixture::new();
        let all: Vec<Digest> = fixture.entries[..3]
            .iter()
            .flat_map(|e| e.vertices.iter().copied())
            .collect();
        assert!(all.len() >= 3, "the fixture finalizes several vertices");
        let keep = all[all.len() / 2];
        {
            let store = RocksStore::open(dir.path(), Limits::default()).expect("open");
            fixture.fill(&store, 3);
            store.reset_keeping(&[keep]).expect("reset");
            assert_eq!(store.log_head().expect("head"), None);
        }
        let store = RocksStore::open(dir.path(), Limits::default()).expect("reopen");
        assert_eq!(store.log_head().expect("head"), None);
        assert!(store
            .finalized_range(Sequence(0), 100)
            .expect("range")
            .is_empty());
        for entry in &fixture.entries[..3] {
            for transaction in &entry.transactions {
                assert_eq!(store.transaction(&transaction.id).expect("read"), None);
            }
        }
        for hash in &all {
            let stored = store.vertex(hash).expect("read").is_some();
            assert_eq!(stored, *hash == keep, "vertex {hash:?}");
        }
        assert_eq!(
            store.replica_state(b"last").expect("read"),
            Some(3u64.to_le_bytes().to_vec()),
            "the signing record survives"
        );
        // The reset log starts again at sequence 1.
        fixture.fill(&store, 1);
        fixture.check_filled(&store, 1);
    }
}
