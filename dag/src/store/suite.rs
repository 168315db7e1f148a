//! The one test suite every Store backend runs. `store_suite!(expr)` expands to one test
//! per contract clause; `expr` builds a fresh `(guard, store)`, the guard keeping any
//! temporary directory alive for the test's duration.

use weft_crypto::Digest;

use super::{LogHead, Store, StoreBatch, StoreError};
use crate::testing::entry_chain;
use crate::{FinalizedEntry, Sequence, SignedVertex};

/// A fixed chain of entries and their vertices.
pub(crate) struct Fixture {
    pub vertices: Vec<SignedVertex>,
    pub entries: Vec<FinalizedEntry>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let (vertices, entries) = entry_chain(5, 2, 3);
        Fixture { vertices, entries }
    }

    /// Writes the first `count` entries, one batch each with their vertices and a
    /// replica-state record naming the entry.
    pub fn fill(&self, store: &dyn Store, count: usize) {
        for entry in &self.entries[..count] {
            let mut batch = StoreBatch::new();
            for vertex in self
                .vertices
                .iter()
                .filter(|v| entry.vertices.contains(&v.hash()))
            {
                batch.put_vertex(vertex.clone());
            }
            batch.append_finalized(entry.clone());
            batch.put_replica_state(b"last", &entry.sequence.0.to_le_bytes());
            store.write(batch).expect("write entry");
        }
    }

    pub fn check_filled(&self, store: &dyn Store, count: usize) {
        let last = &self.entries[count - 1];
        assert_eq!(
            store.log_head().expect("head"),
            Some(LogHead {
                sequence: last.sequence,
                state_digest: last.state_digest
            })
        );
        for entry in &self.entries[..count] {
            assert_eq!(
                store.finalized(entry.sequence).expect("read").as_ref(),
                Some(entry)
            );
            for hash in &entry.vertices {
                let vertex = store.vertex(hash).expect("read").expect("stored");
                assert_eq!(vertex.hash(), *hash);
                assert_eq!(
                    Some(&vertex),
                    self.vertices.iter().find(|v| v.hash() == *hash)
                );
            }
            for transaction in &entry.transactions {
                let location = store
                    .transaction(&transaction.id)
                    .expect("read")
                    .expect("indexed");
                assert_eq!(location.sequence, entry.sequence);
                assert_eq!(location.vertex, transaction.vertex);
                assert_eq!(location.position, transaction.position);
            }
        }
        assert_eq!(
            store.replica_state(b"last").expect("read"),
            Some(last.sequence.0.to_le_bytes().to_vec())
        );
        for entry in &self.entries[count..] {
            assert_eq!(store.finalized(entry.sequence).expect("read"), None);
            assert_eq!(
                store.transaction(&entry.transactions[0].id).expect("read"),
                None
            );
        }
    }
}

pub(crate) fn empty_store_holds_nothing(store: &dyn Store) {
    let fixture = Fixture::new();
    assert_eq!(store.log_head().expect("head"), None);
    assert_eq!(
        store.vertex(&fixture.vertices[0].hash()).expect("read"),
        None
    );
    assert_eq!(store.finalized(Sequence(1)).expect("read"), None);
    assert!(store
        .finalized_range(Sequence(1), 10)
        .expect("read")
        .is_empty());
    assert_eq!(
        store
            .transaction(&fixture.entries[0].transactions[0].id)
            .expect("read"),
        None
    );
    assert_eq!(store.replica_state(b"anything").expect("read"), None);
}

pub(crate) fn vertices_round_trip_and_delete(store: &dyn Store) {
    let fixture = Fixture::new();
    let mut batch = StoreBatch::new();
    for vertex in &fixture.vertices[..4] {
        batch.put_vertex(vertex.clone());
    }
    store.write(batch).expect("write");
    for vertex in &fixture.vertices[..4] {
        let read = store.vertex(&vertex.hash()).expect("read").expect("stored");
        assert_eq!(&read, vertex);
        assert_eq!(read.signature(), vertex.signature());
    }
    let mut batch = StoreBatch::new();
    batch.delete_vertex(fixture.vertices[1].hash());
    store.write(batch).expect("delete");
    assert_eq!(
        store.vertex(&fixture.vertices[1].hash()).expect("read"),
        None
    );
    assert!(store
        .vertex(&fixture.vertices[0].hash())
        .expect("read")
        .is_some());
}

pub(crate) fn entries_append_with_index_and_head(store: &dyn Store) {
    let fixture = Fixture::new();
    fixture.fill(store, 3);
    fixture.check_filled(store, 3);
}

pub(crate) fn several_entries_in_one_batch(store: &dyn Store) {
    let fixture = Fixture::new();
    let mut batch = StoreBatch::new();
    for entry in &fixture.entries {
        batch.append_finalized(entry.clone());
    }
    store.write(batch).expect("write");
    let last = fixture.entries.last().expect("entries");
    assert_eq!(
        store.log_head().expect("head").map(|h| h.sequence),
        Some(last.sequence)
    );
}

pub(crate) fn ranges_are_bounded_and_ordered(store: &dyn Store) {
    let fixture = Fixture::new();
    fixture.fill(store, 5);
    let range = store.finalized_range(Sequence(2), 2).expect("range");
    assert_eq!(range, fixture.entries[1..3].to_vec());
    let tail = store.finalized_range(Sequence(4), 100).expect("range");
    assert_eq!(tail, fixture.entries[3..].to_vec());
    assert!(store
        .finalized_range(Sequence(6), 10)
        .expect("range")
        .is_empty());
    assert!(store
        .finalized_range(Sequence(1), 0)
        .expect("range")
        .is_empty());
}

pub(crate) fn out_of_order_entry_changes_nothing(store: &dyn Store) {
    let fixture = Fixture::new();
    fixture.fill(store, 1);
    let mut batch = StoreBatch::new();
    batch.put_vertex(fixture.vertices[9].clone());
    batch.put_replica_state(b"last", b"must not be written");
    batch.append_finalized(fixture.entries[2].clone());
    match store.write(batch) {
        Err(StoreError::NotNext { expected, got }) => {
            assert_eq!((expected, got), (Sequence(2), Sequence(3)));
        }
        other => panic!("expected NotNext, got {other:?}"),
    }
    assert_eq!(
        store.vertex(&fixture.vertices[9].hash()).expect("read"),
        None
    );
    fixture.check_filled(store, 1);
}

pub(crate) fn broken_chain_changes_nothing(store: &dyn Store) {
    let fixture = Fixture::new();
    fixture.fill(store, 2);
    let mut forged = fixture.entries[2].clone();
    forged.vertices.reverse();
    let mut batch = StoreBatch::new();
    batch.append_finalized(forged);
    assert!(matches!(
        store.write(batch),
        Err(StoreError::BrokenChain(Sequence(3)))
    ));
    let mut wrong_digest = fixture.entries[2].clone();
    wrong_digest.state_digest = Digest::of(b"forged");
    let mut batch = StoreBatch::new();
    batch.append_finalized(wrong_digest);
    assert!(matches!(
        store.write(batch),
        Err(StoreError::BrokenChain(_))
    ));
    fixture.check_filled(store, 2);
}

pub(crate) fn replica_state_puts_overwrites_and_deletes(store: &dyn Store) {
    let mut batch = StoreBatch::new();
    batch
        .put_replica_state(b"view", b"1")
        .put_replica_state(b"vote/7", b"prepare");
    store.write(batch).expect("write");
    let mut batch = StoreBatch::new();
    batch
        .put_replica_state(b"view", b"2")
        .delete_replica_state(b"vote/7");
    store.write(batch).expect("write");
    assert_eq!(
        store.replica_state(b"view").expect("read"),
        Some(b"2".to_vec())
    );
    assert_eq!(store.replica_state(b"vote/7").expect("read"), None);
}

pub(crate) fn replica_state_prefix_scans_are_bounded_and_ordered(store: &dyn Store) {
    let mut batch = StoreBatch::new();
    batch
        .put_replica_state(b"mempool/b", b"2")
        .put_replica_state(b"mempool/a", b"1")
        .put_replica_state(b"mempool/c", b"3")
        .put_replica_state(b"mempoolx", b"not under the prefix")
        .put_replica_state(b"memo", b"before it")
        .put_replica_state(b"view", b"after it");
    store.write(batch).expect("write");
    let all = store
        .replica_state_with_prefix(b"mempool/", None, 10)
        .expect("scan");
    assert_eq!(
        all,
        vec![
            (b"mempool/a".to_vec(), b"1".to_vec()),
            (b"mempool/b".to_vec(), b"2".to_vec()),
            (b"mempool/c".to_vec(), b"3".to_vec()),
        ]
    );
    let bounded = store
        .replica_state_with_prefix(b"mempool/", None, 2)
        .expect("scan");
    assert_eq!(bounded.len(), 2);
    let next = store
        .replica_state_with_prefix(b"mempool/", Some(b"mempool/b"), 2)
        .expect("scan");
    assert_eq!(next, vec![(b"mempool/c".to_vec(), b"3".to_vec())]);
    let mut batch = StoreBatch::new();
    batch.delete_replica_state(b"mempool/a");
    store.write(batch).expect("write");
    let after = store
        .replica_state_with_prefix(b"mempool/", None, 10)
        .expect("scan");
    assert_eq!(
        after.first().map(|(k, _)| k.as_slice()),
        Some(&b"mempool/b"[..])
    );
    assert!(store
        .replica_state_with_prefix(b"nothing/", None, 10)
        .expect("scan")
        .is_empty());
}

/// Expands to one `#[test]` per clause of the Store contract.
#[macro_export]
#[doc(hidden)]
macro_rules! store_suite {
    ($make:expr) => {
        $crate::store_suite!(@tests $make;
            empty_store_holds_nothing,
            vertices_round_trip_and_delete,
            entries_append_with_index_and_head,
            several_entries_in_one_batch,
            ranges_are_bounded_and_ordered,
            out_of_order_entry_changes_nothing,
            broken_chain_changes_nothing,
            replica_state_puts_overwrites_and_deletes,
            replica_state_prefix_scans_are_bounded_and_ordered
        );
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let (_guard, store) = $make;
                $crate::store::suite::$name(&store);
            }
        )*
    };
}
