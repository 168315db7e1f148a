//! State sync on start: fetch the certified part of the finalized log this validator
//! missed, with its vertices, before the replica starts.
//!
//! A restarted or reset validator may be further behind than the commit certificates
//! its peers keep for live catch-up (`ReplicaConfig::decided_retention`). Before the
//! engine starts, it asks its peers for the log after its tip (`Request::Sync`). A peer
//! answers with consecutive entries that end at a stable checkpoint and that checkpoint's
//! certificate (2f + 1 signatures of the genesis validators); what is accepted, and which
//! peers are asked, is decided by the pure [`weft_consensus::sync::SyncSession`] (see its
//! module docs for the rule). Each accepted batch is written atomically with its
//! certificate, which this validator then serves to others and uses for proofs.
//!
//! A refused batch is counted in `weft_sync_rejected_batches_total` and its peer is not
//! asked again. Sync ends when every other validator, or after the connection wait every
//! connected one, has nothing certified beyond our tip, was refused, or could not answer
//! twice at this tip; when nothing progresses for a while; or after a bounded number of
//! requests; the replica then recovers from the store and catches up the last few
//! entries (above the last stable checkpoint) live through commit certificates.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use weft_consensus::proof::{decode_certificate, encode_certificate};
use weft_consensus::sync::{Served, ServedCertificate, ServedEntry, Step, SyncSession};
use weft_dag::store::{Store, StoreBatch};
use weft_dag::{Committee, FinalizedEntry, Limits, Sequence, ValidatorIndex};
use weft_network::{Network, Request, Response, SyncEntry};

use crate::api::certificate_key;
use crate::metrics::NodeMetrics;

/// Entries asked for per request (the network caps it as well).
const BATCH: u32 = 256;
/// Largest encoded entry accepted from a peer.
const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;
/// An answer is sized to stay below the network's response limit (16 MiB): it is never
/// cut by the network, since a prefix would lose the certified end.
const ANSWER_BUDGET_BYTES: usize = 12 * 1024 * 1024;
/// When no certificate is stored within the asked entries (a checkpoint this validator
/// passed without adopting it), the answer runs on to the next stored one, at most this
/// many entries.
const MAX_ANSWER_ENTRIES: usize = 4_096;
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
/// sequence, each with the vertices it finalized, ending at the highest sequence within
/// the asked count whose checkpoint certificate is stored (or, if there is none, the
/// first one after it), with that certificate; no entries when nothing certified lies at
/// or beyond the asked sequence; `Unavailable` when the entries up to the first stored
/// certificate do not fit [`ANSWER_BUDGET_BYTES`] or [`MAX_ANSWER_ENTRIES`] (not level:
/// there is more, this peer cannot serve it in one answer).
pub fn answer_sync(store: &dyn Store, from_sequence: u64, max_entries: u32) -> Response {
    let level = Response::Certified {
        entries: Vec::new(),
        certificate: Vec::new(),
    };
    if from_sequence == 0 {
        return level;
    }
    let wanted = usize::try_from(max_entries.max(1)).unwrap_or(usize::MAX);
    let mut entries: Vec<SyncEntry> = Vec::new();
    let mut bytes = 0usize;
    // The answer so far that ends at a stored certificate: its length and certificate.
    let mut certified: Option<(usize, Vec<u8>)> = None;
    // Stopped by a limit rather than by the end of the log.
    let mut cut = false;
    'pages: while entries.len() < MAX_ANSWER_ENTRIES
        && (entries.len() < wanted || certified.is_none())
    {
        let next = from_sequence.saturating_add(entries.len() as u64);
        let Ok(page) = store.finalized_range(Sequence(next), BATCH as usize) else {
            // A store that cannot be read cannot say it is level.
            return Response::Unavailable;
        };
        if page.is_empty() {
            break;
        }
        for entry in page {
            if entries.len() >= wanted && certified.is_some() {
                break 'pages;
            }
            if entries.len() >= MAX_ANSWER_ENTRIES {
                cut = true;
                break 'pages;
            }
            let sequence = entry.sequence;
            let vertices: Vec<Vec<u8>> = entry
                .vertices
                .iter()
                .filter_map(|h| store.vertex(h).ok().flatten())
                .map(|v| v.to_wire())
                .collect();
            let Some(encoded) = encode_entry(&entry) else {
                cut = true;
                break 'pages;
            };
            bytes = bytes.saturating_add(
                encoded.len() + vertices.iter().map(|v| v.len() + 16).sum::<usize>() + 32,
            );
            if bytes > ANSWER_BUDGET_BYTES {
                cut = true;
                break 'pages;
            }
            entries.push(SyncEntry {
                entry: encoded,
                vertices,
            });
            if let Ok(Some(certificate)) = store.replica_state(&certificate_key(sequence)) {
                certified = Some((entries.len(), certificate));
            }
        }
    }
    match certified {
        Some((length, certificate)) => {
            entries.truncate(length);
            Response::Certified {
                entries,
                certificate,
            }
        }
        None if cut || entries.len() >= MAX_ANSWER_ENTRIES => Response::Unavailable,
        None => level,
    }
}

/// Answers a `Request::Vertices`: each distinct hash once, those `lookup` finds, in
/// request order, stopping at the network's response limit (a peer that repeats the
/// hash of a large vertex gets it once, not once per repetition).
pub fn answer_vertices(
    hashes: &[[u8; 32]],
    lookup: impl Fn(&weft_crypto::Digest) -> Option<Vec<u8>>,
) -> Response {
    let mut seen = std::collections::HashSet::with_capacity(hashes.len());
    let mut found = Vec::new();
    let mut bytes = 0usize;
    for hash in hashes {
        if !seen.insert(*hash) {
            continue;
        }
        let Some(vertex) = lookup(&weft_crypto::Digest::from_bytes(*hash)) else {
            continue;
        };
        bytes = bytes.saturating_add(vertex.len() + 16);
        if bytes > ANSWER_BUDGET_BYTES {
            break;
        }
        found.push(vertex);
    }
    Response::Vertices(found)
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
                    Request::Vertices { hashes } => answer_vertices(&hashes, |h| {
                        store.vertex(h).ok().flatten().map(|v| v.to_wire())
                    }),
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

/// Decodes a peer's answer for the session.
fn served(entries: Vec<SyncEntry>, certificate: &[u8]) -> Served {
    if entries.is_empty() {
        return Served::Level;
    }
    let decoded: Result<Vec<ServedEntry>, String> = entries
        .into_iter()
        .map(|item| {
            Ok(ServedEntry {
                entry: decode_entry(&item.entry)?,
                vertices: item.vertices,
            })
        })
        .collect();
    let entries = match decoded {
        Ok(entries) => entries,
        Err(reason) => return Served::Malformed(reason),
    };
    match decode_certificate(certificate) {
        Ok((sequence, state_digest, signatures)) => Served::Certified {
            entries,
            certificate: ServedCertificate {
                sequence,
                state_digest,
                signatures,
            },
        },
        Err(error) => Served::Malformed(format!("undecodable certificate: {error}")),
    }
}

/// Syncs `store` from the peers until it is level with their last stable checkpoints
/// (see the module docs).
pub async fn catch_up(
    me: u16,
    network: &Network,
    store: &Arc<dyn Store>,
    committee: &Committee,
    limits: &Limits,
    metrics: &NodeMetrics,
) -> SyncOutcome {
    let others = committee.size().saturating_sub(1);
    let (from, digest) = store
        .log_head()
        .ok()
        .flatten()
        .map_or((0, weft_crypto::Digest::ZERO), |h| {
            (h.sequence.0, h.state_digest)
        });
    let connect_deadline = Instant::now() + CONNECT_WAIT;
    while network.connected().len() < others && Instant::now() < connect_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut session = SyncSession::new(
        ValidatorIndex(me),
        committee.clone(),
        *limits,
        Sequence(from),
        digest,
    );
    let mut last_progress = Instant::now();
    // Bounded: each round is at most one request.
    for _ in 0..100_000u32 {
        if session.done() || last_progress.elapsed() > STALL {
            break;
        }
        let connected: Vec<ValidatorIndex> = network
            .connected()
            .into_iter()
            .map(ValidatorIndex)
            .collect();
        // Every connected validator has nothing more, was refused, or could not answer:
        // a validator that is down is not waited for (once the connection wait is over).
        if Instant::now() >= connect_deadline && session.settled(&connected) {
            break;
        }
        let Some(peer) = session.next_peer(&connected) else {
            if connected.iter().all(|p| p.0 == me) && Instant::now() >= connect_deadline {
                break;
            }
            // Waiting for a validator to connect (bounded by the stall limit).
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let answer = network
            .request(
                peer.0,
                Request::Sync {
                    from_sequence: session.wanted().0,
                    max_entries: BATCH,
                },
            )
            .await;
        let served = match answer {
            Ok(Response::Certified {
                entries,
                certificate,
            }) => served(entries, &certificate),
            Ok(Response::Vertices(_)) => {
                Served::Malformed("vertices in answer to a sync request".into())
            }
            Ok(Response::Busy | Response::Unavailable) | Err(_) => {
                session.on_no_answer(peer);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let step = tokio::task::block_in_place(|| session.on_answer(peer, served));
        let batch = match step {
            Step::Apply(batch) => batch,
            Step::Level => continue,
            Step::Refused(reason) => {
                tracing::warn!(peer = peer.0, %reason, "sync batch refused; not asking this validator again");
                metrics.sync_rejected.inc();
                continue;
            }
        };
        let count = batch.entries.len() as u64;
        let tip = batch.certificate.sequence;
        let mut write = StoreBatch::new();
        // When this validator finalized them: now (the peer's time is not covered by
        // the digest or the certificate, so it is not taken).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        for (mut entry, vertices) in batch.entries {
            for vertex in vertices {
                write.put_vertex(vertex);
            }
            entry.finalized_unix_ms = now;
            write.append_finalized(entry);
        }
        write.put_replica_state(
            &certificate_key(tip),
            &encode_certificate(
                tip,
                &batch.certificate.state_digest,
                &batch.certificate.signatures,
            ),
        );
        let store_ref = store.clone();
        if let Err(error) = tokio::task::block_in_place(|| store_ref.write(write)) {
            tracing::error!(%error, "writing synced entries failed");
            break;
        }
        metrics.sync_entries.inc_by(count);
        metrics
            .finalized_sequence
            .set(i64::try_from(tip.0).unwrap_or(i64::MAX));
        tracing::info!(peer = peer.0, tip = tip.0, "synced certified entries");
        last_progress = Instant::now();
    }
    // What the store holds (a failed write leaves the session ahead of it).
    let to = store.log_head().ok().flatten().map_or(0, |h| h.sequence.0);
    SyncOutcome { from, to }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_dag::store::MemoryStore;
    use weft_dag::testing::entry_chain;

    /// A store holding entries 1..=10 and certificates at 4 and 8 (their bytes stand in
    /// for real certificates: the answering side does not read them).
    fn store() -> (MemoryStore, Vec<FinalizedEntry>) {
        let store = MemoryStore::new();
        let (vertices, entries) = entry_chain(10, 2, 1);
        let mut batch = StoreBatch::new();
        for vertex in vertices {
            batch.put_vertex(vertex);
        }
        for entry in &entries {
            batch.append_finalized(entry.clone());
        }
        for (sequence, stand_in) in [(4u64, 4u8), (8, 8)] {
            batch.put_replica_state(&certificate_key(Sequence(sequence)), &[stand_in]);
        }
        store.write(batch).expect("write");
        (store, entries)
    }

    fn answered(response: Response) -> (Vec<u64>, Vec<u8>) {
        let Response::Certified {
            entries,
            certificate,
        } = response
        else {
            panic!("expected a certified answer, got {response:?}");
        };
        let sequences = entries
            .iter()
            .map(|e| {
                let entry = decode_entry(&e.entry).expect("decodes");
                assert_eq!(
                    e.vertices.len(),
                    entry.vertices.len(),
                    "each entry carries its vertices"
                );
                entry.sequence.0
            })
            .collect();
        (sequences, certificate)
    }

    #[test]
    fn an_answer_ends_at_the_highest_stored_certificate_within_the_asked_count() {
        let (store, _) = store();
        assert_eq!(
            answered(answer_sync(&store, 1, 256)),
            ((1..=8).collect(), vec![8])
        );
        assert_eq!(
            answered(answer_sync(&store, 2, 5)),
            ((2..=4).collect(), vec![4])
        );
        assert_eq!(
            answered(answer_sync(&store, 5, 4)),
            ((5..=8).collect(), vec![8])
        );
    }

    #[test]
    fn without_a_certificate_in_the_asked_count_the_answer_runs_on_to_the_next_one() {
        let (store, _) = store();
        assert_eq!(
            answered(answer_sync(&store, 5, 2)),
            ((5..=8).collect(), vec![8])
        );
    }

    #[test]
    fn nothing_certified_beyond_the_asked_sequence_is_a_level_answer() {
        let (store, _) = store();
        assert_eq!(
            answered(answer_sync(&store, 9, 256)),
            (Vec::new(), Vec::new())
        );
        assert_eq!(
            answered(answer_sync(&store, 0, 256)),
            (Vec::new(), Vec::new())
        );
        assert_eq!(
            answered(answer_sync(&store, 50, 256)),
            (Vec::new(), Vec::new())
        );
    }

    /// Found by the attack review of certified sync: an answer cut by its limits before
    /// any stored certificate said "level", and a syncing validator took that as having
    /// nothing to fetch.
    #[test]
    fn an_answer_that_cannot_reach_a_certificate_within_its_limits_is_unavailable_not_level() {
        let store = MemoryStore::new();
        // Entries without vertices: the entry cap, not the byte budget, is what cuts
        // (the second review found the cap answered "level").
        let count = MAX_ANSWER_ENTRIES + 10;
        let (vertices, entries) = entry_chain(count, 0, 0);
        let mut batch = StoreBatch::new();
        for vertex in vertices {
            batch.put_vertex(vertex);
        }
        for entry in entries {
            batch.append_finalized(entry);
        }
        batch.put_replica_state(&certificate_key(Sequence(count as u64)), &[1]);
        store.write(batch).expect("write");
        assert_eq!(answer_sync(&store, 1, 256), Response::Unavailable);
        // From closer to the certificate it fits.
        let from = count as u64 - 999;
        let (sequences, certificate) = answered(answer_sync(&store, from, 256));
        assert_eq!(sequences, (from..=count as u64).collect::<Vec<_>>());
        assert_eq!(certificate, vec![1]);
    }

    #[test]
    fn a_vertex_asked_for_many_times_is_answered_once() {
        let calls = std::cell::Cell::new(0);
        let answer = answer_vertices(&[[1; 32], [2; 32], [1; 32], [1; 32], [3; 32]], |h| {
            calls.set(calls.get() + 1);
            (h.as_bytes()[0] != 3).then(|| vec![h.as_bytes()[0]; 100])
        });
        assert_eq!(answer, Response::Vertices(vec![vec![1; 100], vec![2; 100]]));
        assert_eq!(calls.get(), 3, "each distinct hash looked up once");
    }

    #[test]
    fn an_undecodable_entry_or_certificate_is_malformed_and_no_entries_are_level() {
        let (store, _) = store();
        let Response::Certified { mut entries, .. } = answer_sync(&store, 1, 256) else {
            panic!("certified");
        };
        assert_eq!(served(Vec::new(), &[]), Served::Level);
        assert!(matches!(
            served(entries.clone(), &[1, 2, 3]),
            Served::Malformed(reason) if reason.contains("certificate")
        ));
        entries[3].entry.push(0);
        assert!(matches!(
            served(entries, &[]),
            Served::Malformed(reason) if reason.contains("trailing")
        ));
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
