//! State sync on start: fetch the finalized entries this validator missed, with their
//! vertices, before the replica starts.
//!
//! A restarted or reset validator may be further behind than the commit certificates
//! its peers keep for live catch-up (`ReplicaConfig::decided_retention`). Before the
//! engine starts, it asks its peers for ranges of the finalized log (`Request::Sync`),
//! writes what checks out to its store, and only then recovers the replica from the
//! store, which resumes at the synced tip.
//!
//! Nothing a single peer says is trusted:
//! - every vertex must decode within the limits, carry a valid ML-DSA-87 signature of its
//!   author, and be one the entry names;
//! - every entry must follow the previous one (sequence + 1) and carry the state digest
//!   chained from the previous digest over its anchor, vertices and transaction ids;
//! - the digest of the last entry of each batch must be confirmed by f other validators.
//!   With the batch's own sender that is f + 1 validators, so at least one honest one
//!   finalized exactly this chain (digests chain, so confirming the last one confirms
//!   every one before it).
//!
//! A batch that fails a check is dropped (counted in
//! `weft_sync_rejected_batches_total`) and the next peer is asked. Sync ends when f + 1
//! peers have nothing beyond our tip, when no connected peer helps for a while, or
//! after a bounded number of rounds; live catch-up through commit certificates does the
//! rest.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use weft_dag::store::{Store, StoreBatch};
use weft_dag::{Committee, FinalizedEntry, Limits, SignedVertex};
use weft_network::{Network, Request, Response, SyncEntry};

use crate::metrics::NodeMetrics;

/// Entries asked for per request (the network caps it as well).
const BATCH: u32 = 256;
/// Largest encoded entry accepted from a peer.
const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;
/// An answer this large may have been cut to fit the network's response limit (16 MiB).
const CUT_HINT_BYTES: usize = 4 * 1024 * 1024;
/// How long to wait for peers to connect before syncing with whoever is there.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Give up after this long without progress.
const STALL: Duration = Duration::from_secs(20);

/// The wire form of a finalized entry in a sync answer.
pub fn encode_entry(entry: &FinalizedEntry) -> Option<Vec<u8>> {
    postcard::to_stdvec(entry)
        .ok()
        .filter(|bytes| bytes.len() <= MAX_ENTRY_BYTES)
}

fn decode_entry(bytes: &[u8]) -> Result<FinalizedEntry, String> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(format!(
            "an entry of {} bytes, above the limit of {MAX_ENTRY_BYTES}",
            bytes.len()
        ));
    }
    let (entry, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| format!("undecodable entry: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after an entry", rest.len()));
    }
    Ok(entry)
}

/// Answers a peer's `Request::Sync` from the store: consecutive entries from the asked
/// sequence, each with the vertices it finalized.
pub fn answer_sync(store: &dyn Store, from_sequence: u64, max_entries: u32) -> Response {
    let entries = store
        .finalized_range(weft_dag::Sequence(from_sequence), max_entries as usize)
        .unwrap_or_default();
    let mut answer = Vec::with_capacity(entries.len());
    for entry in entries {
        let vertices = entry
            .vertices
            .iter()
            .filter_map(|h| store.vertex(h).ok().flatten())
            .map(|v| v.to_wire())
            .collect();
        let Some(encoded) = encode_entry(&entry) else {
            break;
        };
        answer.push(SyncEntry {
            entry: encoded,
            vertices,
        });
    }
    Response::Entries(answer)
}

/// While this validator syncs (its engine not running yet), peers' requests are still
/// answered from the store, so validators that start together do not wait on each
/// other. Messages are dropped: consensus retransmits, and the engine fetches what it
/// misses. Never returns; race it against [`catch_up`].
pub async fn serve_while_syncing(
    network: &Network,
    store: &Arc<dyn Store>,
) -> std::convert::Infallible {
    loop {
        match network.next_event().await {
            Some(weft_network::Event::Request { request, reply, .. }) => {
                let response = match request {
                    Request::Sync {
                        from_sequence,
                        max_entries,
                    } => answer_sync(store.as_ref(), from_sequence, max_entries),
                    Request::Vertices { hashes } => Response::Vertices(
                        hashes
                            .iter()
                            .filter_map(|h| weft_crypto::Digest::from_slice(h).ok())
                            .filter_map(|h| store.vertex(&h).ok().flatten())
                            .map(|v| v.to_wire())
                            .collect(),
                    ),
                };
                reply.reply(response);
            }
            Some(_) => {}
            None => return std::future::pending().await,
        }
    }
}

/// What one sync run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The tip before.
    pub from: u64,
    /// The tip after.
    pub to: u64,
}

/// Checks one batch from a peer against our head; the entries with their vertices.
pub fn check_batch(
    answer: &[SyncEntry],
    mut sequence: u64,
    mut digest: weft_crypto::Digest,
    committee: &Committee,
    limits: &Limits,
) -> Result<Vec<(FinalizedEntry, Vec<SignedVertex>)>, String> {
    let mut checked = Vec::with_capacity(answer.len());
    for item in answer {
        let entry = decode_entry(&item.entry)?;
        if entry.sequence.0 != sequence + 1 {
            return Err(format!(
                "entry {} where {} was due",
                entry.sequence.0,
                sequence + 1
            ));
        }
        if entry.chained_digest(&digest) != entry.state_digest {
            return Err(format!(
                "entry {} does not chain from the previous digest",
                entry.sequence.0
            ));
        }
        let named: BTreeSet<_> = entry.vertices.iter().chain(entry.anchor.iter()).collect();
        let mut vertices = Vec::with_capacity(item.vertices.len());
        for bytes in &item.vertices {
            let vertex = SignedVertex::from_wire(bytes, limits)
                .map_err(|e| format!("entry {}: undecodable vertex: {e}", entry.sequence.0))?;
            if !named.contains(&vertex.hash()) {
                return Err(format!(
                    "entry {}: a vertex it does not name",
                    entry.sequence.0
                ));
            }
            vertex
                .verify_signature(committee)
                .map_err(|e| format!("entry {}: vertex signature: {e}", entry.sequence.0))?;
            vertices.push(vertex);
        }
        let carried: BTreeSet<_> = vertices.iter().map(SignedVertex::hash).collect();
        if entry.vertices.iter().any(|h| !carried.contains(h)) {
            return Err(format!("entry {}: vertices missing", entry.sequence.0));
        }
        check_transactions(&entry, &vertices)?;
        sequence = entry.sequence.0;
        digest = entry.state_digest;
        checked.push((entry, vertices));
    }
    Ok(checked)
}

/// Every finalized transaction of `entry` is the one its vertex carries at its position,
/// expiry included. The chained digest covers each id, vertex and position but not the
/// expiry (the id covers it): without this check a peer could serve an entry whose
/// transaction expires early, and the synced replica would forget the id and finalize a
/// later copy its peers skip, a fork (found by the attack review of checkpointed
/// restart).
fn check_transactions(entry: &FinalizedEntry, vertices: &[SignedVertex]) -> Result<(), String> {
    let by_hash: std::collections::HashMap<_, _> = vertices.iter().map(|v| (v.hash(), v)).collect();
    for transaction in &entry.transactions {
        let carried = by_hash
            .get(&transaction.vertex)
            .and_then(|v| {
                v.vertex()
                    .transactions
                    .get(usize::try_from(transaction.position).ok()?)
            })
            .ok_or_else(|| {
                format!(
                    "entry {}: a transaction at a vertex and position the entry does not carry",
                    entry.sequence.0
                )
            })?;
        if carried.id() != transaction.id || carried.expires_at() != transaction.expires_at {
            return Err(format!(
                "entry {}: a transaction that is not the one its vertex carries at its position",
                entry.sequence.0
            ));
        }
    }
    Ok(())
}

/// Syncs `store` from the peers until it is level with them (see the module docs).
pub async fn catch_up(
    me: u16,
    network: &Network,
    store: &Arc<dyn Store>,
    committee: &Committee,
    limits: &Limits,
    metrics: &NodeMetrics,
) -> SyncOutcome {
    let others = committee.size().saturating_sub(1);
    let confirmations = committee.max_faulty();
    let head = |store: &Arc<dyn Store>| {
        store
            .log_head()
            .ok()
            .flatten()
            .map_or((0, weft_crypto::Digest::ZERO), |h| {
                (h.sequence.0, h.state_digest)
            })
    };
    let from = head(store).0;
    let connect_deadline = Instant::now() + CONNECT_WAIT;
    while network.connected().len() < others && Instant::now() < connect_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut level_with: BTreeSet<u16> = BTreeSet::new();
    let mut last_progress = Instant::now();
    let mut turn = 0usize;
    // Bounded: each round is one request; at most this many rounds.
    for _ in 0..100_000u32 {
        if level_with.len() > confirmations || last_progress.elapsed() > STALL {
            break;
        }
        let peers: Vec<u16> = network
            .connected()
            .into_iter()
            .filter(|p| *p != me && !level_with.contains(p))
            .collect();
        if peers.is_empty() {
            if network.connected().is_empty() && Instant::now() >= connect_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let peer = peers[turn % peers.len()];
        turn += 1;
        let (sequence, digest) = head(store);
        let answer = network
            .request(
                peer,
                Request::Sync {
                    from_sequence: sequence + 1,
                    max_entries: BATCH,
                },
            )
            .await;
        let entries = match answer {
            Ok(Response::Entries(entries)) if entries.is_empty() => {
                level_with.insert(peer);
                continue;
            }
            Ok(Response::Entries(entries)) => entries,
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let checked = match tokio::task::block_in_place(|| {
            check_batch(&entries, sequence, digest, committee, limits)
        }) {
            Ok(checked) if !checked.is_empty() => checked,
            Ok(_) => continue,
            Err(reason) => {
                tracing::warn!(peer, %reason, "sync batch rejected");
                metrics.sync_rejected.inc();
                continue;
            }
        };
        let Some((last, _)) = checked.last() else {
            continue;
        };
        if !confirmed(network, me, peer, last, confirmations).await {
            tracing::info!(
                peer,
                sequence = last.sequence.0,
                "sync batch not confirmed by f other validators yet"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let bytes: usize = entries
            .iter()
            .map(|e| e.entry.len() + e.vertices.iter().map(Vec::len).sum::<usize>())
            .sum();
        let mut batch = StoreBatch::new();
        let count = checked.len() as u64;
        let tip = last.sequence.0;
        for (entry, vertices) in checked {
            for vertex in vertices {
                batch.put_vertex(vertex);
            }
            batch.append_finalized(entry);
        }
        let store_ref = store.clone();
        if let Err(error) = tokio::task::block_in_place(|| store_ref.write(batch)) {
            tracing::error!(%error, "writing synced entries failed");
            break;
        }
        metrics.sync_entries.inc_by(count);
        metrics
            .finalized_sequence
            .set(i64::try_from(tip).unwrap_or(i64::MAX));
        tracing::info!(peer, tip, "synced entries");
        // A short batch that is also small was that peer's whole tip: it counts as
        // level with us. A full one, or one cut to fit the response limit, means there
        // is more.
        if count < u64::from(BATCH) && bytes < CUT_HINT_BYTES {
            level_with.insert(peer);
        } else {
            level_with.clear();
        }
        last_progress = Instant::now();
    }
    SyncOutcome {
        from,
        to: head(store).0,
    }
}

/// Whether `needed` validators other than `me` and `sender` report `last`'s digest.
async fn confirmed(
    network: &Network,
    me: u16,
    sender: u16,
    last: &FinalizedEntry,
    needed: usize,
) -> bool {
    let mut agreeing = 0;
    for peer in network.connected() {
        if agreeing >= needed {
            break;
        }
        if peer == me || peer == sender {
            continue;
        }
        let answer = network
            .request(
                peer,
                Request::Sync {
                    from_sequence: last.sequence.0,
                    max_entries: 1,
                },
            )
            .await;
        if let Ok(Response::Entries(entries)) = answer {
            let theirs = entries.first().and_then(|e| decode_entry(&e.entry).ok());
            if theirs
                .is_some_and(|e| e.sequence == last.sequence && e.state_digest == last.state_digest)
            {
                agreeing += 1;
            }
        }
    }
    agreeing >= needed
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_dag::testing::{committee, entry_chain};

    /// A chain of 3 entries whose vertices are signed by the committee's keys, as sync
    /// answers.
    fn signed_chain() -> (Committee, Vec<SyncEntry>, Vec<FinalizedEntry>) {
        let (committee, keys) = committee(4);
        let (vertices, entries) = entry_chain(3, 2, 2);
        let answers = entries
            .iter()
            .map(|entry| SyncEntry {
                entry: encode_entry(entry).expect("encode"),
                vertices: vertices
                    .iter()
                    .filter(|v| entry.vertices.contains(&v.hash()))
                    .map(|v| {
                        let author = v.vertex().author.as_usize();
                        let signed = v.vertex().clone().sign(&keys[author].secret);
                        assert_eq!(signed.hash(), v.hash(), "the signature is not hashed");
                        signed.to_wire()
                    })
                    .collect(),
            })
            .collect();
        (committee, answers, entries)
    }

    #[test]
    fn a_valid_chain_from_our_head_is_accepted_whole() {
        let (committee, answers, entries) = signed_chain();
        let checked = check_batch(
            &answers,
            0,
            weft_crypto::Digest::ZERO,
            &committee,
            &Limits::default(),
        )
        .expect("valid");
        let got: Vec<&FinalizedEntry> = checked.iter().map(|(e, _)| e).collect();
        assert_eq!(got, entries.iter().collect::<Vec<_>>());
        assert!(checked.iter().all(|(e, v)| v.len() == e.vertices.len()));
    }

    /// Found by the attack review of checkpointed restart: an entry whose transaction
    /// carries an earlier expiry than its vertex's still chains (the digest covers the id,
    /// vertex and position, not the expiry), and a replica synced from it would forget
    /// the id at once and finalize a later copy its peers skip. It is refused.
    #[test]
    fn an_entry_whose_transaction_expiry_was_lowered_is_refused() {
        let (committee, keys) = committee(4);
        let (vertices, entries) = entry_chain(1, 1, 2);
        let mut forged = entries[0].clone();
        forged.transactions[1].expires_at = weft_dag::TimestampMs(0);
        forged.state_digest = forged.chained_digest(&weft_crypto::Digest::ZERO);
        assert_eq!(
            forged.state_digest, entries[0].state_digest,
            "the digest does not see the expiry"
        );
        let signed: Vec<Vec<u8>> = vertices
            .iter()
            .map(|v| {
                let author = v.vertex().author.as_usize();
                v.vertex().clone().sign(&keys[author].secret).to_wire()
            })
            .collect();
        let answer = |entry: &FinalizedEntry| {
            vec![SyncEntry {
                entry: encode_entry(entry).expect("encode"),
                vertices: signed.clone(),
            }]
        };
        let limits = Limits::default();
        let zero = weft_crypto::Digest::ZERO;
        assert!(check_batch(&answer(&entries[0]), 0, zero, &committee, &limits).is_ok());
        let refused = check_batch(&answer(&forged), 0, zero, &committee, &limits)
            .expect_err("a lowered expiry is refused");
        assert!(
            refused.contains("not the one its vertex carries"),
            "{refused}"
        );
    }

    #[test]
    fn a_chain_that_does_not_continue_our_head_is_refused() {
        let (committee, answers, _) = signed_chain();
        let limits = Limits::default();
        // From the wrong previous digest.
        let wrong_digest = check_batch(
            &answers,
            0,
            weft_crypto::Digest::of(b"another history"),
            &committee,
            &limits,
        );
        assert!(wrong_digest
            .expect_err("refused")
            .contains("does not chain"));
        // Skipping an entry.
        let gap = check_batch(
            &answers[1..],
            0,
            weft_crypto::Digest::ZERO,
            &committee,
            &limits,
        );
        assert!(gap.expect_err("refused").contains("where 1 was due"));
    }

    #[test]
    fn forged_or_missing_vertices_are_refused() {
        let (committee, answers, _) = signed_chain();
        let limits = Limits::default();
        // A vertex signed by the wrong key: the unsigned original.
        let (vertices, _) = entry_chain(3, 2, 2);
        let mut forged = answers.clone();
        forged[1].vertices[0] = vertices[2].to_wire();
        let refused = check_batch(&forged, 0, weft_crypto::Digest::ZERO, &committee, &limits);
        assert!(refused.expect_err("refused").contains("signature"));
        let mut missing = answers.clone();
        missing[2].vertices.pop();
        let refused = check_batch(&missing, 0, weft_crypto::Digest::ZERO, &committee, &limits);
        assert!(refused.expect_err("refused").contains("missing"));
        let mut foreign = answers;
        let stray = foreign[0].vertices[0].clone();
        foreign[2].vertices.push(stray);
        let refused = check_batch(&foreign, 0, weft_crypto::Digest::ZERO, &committee, &limits);
        assert!(refused.expect_err("refused").contains("does not name"));
    }

    #[test]
    fn a_tampered_entry_breaks_the_digest_chain() {
        let (committee, mut answers, entries) = signed_chain();
        let mut tampered = entries[1].clone();
        tampered.transactions.pop();
        answers[1].entry = encode_entry(&tampered).expect("encode");
        let refused = check_batch(
            &answers,
            0,
            weft_crypto::Digest::ZERO,
            &committee,
            &Limits::default(),
        );
        assert!(refused
            .expect_err("refused")
            .contains("entry 2 does not chain"));
    }

    #[test]
    fn entries_round_trip_and_trailing_bytes_are_refused() {
        let (_, entries) = entry_chain(1, 1, 1);
        let mut bytes = encode_entry(&entries[0]).expect("encode");
        assert_eq!(decode_entry(&bytes).expect("decode"), entries[0]);
        bytes.push(0);
        assert!(decode_entry(&bytes).is_err());
    }
}
