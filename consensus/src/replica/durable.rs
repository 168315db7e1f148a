//! Persist before send, and recovery (ARCHITECTURE.md, "Recovery"): the replica-state
//! records, their encodings, and [`Replica::recover`].

use super::*;
use weft_dag::codec::DecodeError;
use weft_dag::store::LogHead;
use weft_dag::{FinalizedEntry, FinalizerSnapshot};

/// Why a replica could not be rebuilt from its store.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The finalized log does not replay.
    #[error("finalized log does not replay: {0}")]
    Log(#[from] ExecuteError),
    /// A replica-state record is damaged.
    #[error("replica state record {key} is damaged: {reason}")]
    Damaged {
        /// The record.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// The vertices the signing record in `store` refers to (our own latest vertex, which
/// [`Replica::recover`] needs so that the next vertex is built in a later round). A host
/// that wipes its data (`weft reset-state`) keeps these and the replica-state records.
pub fn signing_record_vertices(store: &dyn Store) -> Result<Vec<Digest>, RecoverError> {
    let Some(bytes) = store.replica_state(keys::OWN_LATEST)? else {
        return Ok(Vec::new());
    };
    let hash = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| RecoverError::Damaged {
        key: String::from_utf8_lossy(keys::OWN_LATEST).into_owned(),
        reason: "not 32 bytes".into(),
    })?;
    Ok(vec![Digest::from_bytes(hash)])
}

/// Keys of the replica-state records.
pub(super) mod keys {
    pub const VIEW: &[u8] = b"view";
    pub const VIEW_CHANGE: &[u8] = b"view-change";
    pub const NEW_VIEW: &[u8] = b"new-view";
    pub const CLAIMS: &[u8] = b"claims";
    pub const STABLE: &[u8] = b"stable";
    pub const OWN_LATEST: &[u8] = b"own/latest";
    /// The finalizer's snapshot (`weft_dag::FinalizerSnapshot`, postcard).
    pub const FINALIZER: &[u8] = b"finalizer";
    pub const FLOOR: &[u8] = b"floor";
    /// Written at the start of a replica that learns its floor: until `floor` is
    /// written, it stays learning across restarts, whatever else it saved meanwhile.
    pub const LEARNING: &[u8] = b"learning";
    /// `mempool/{tx id}`: a transaction this replica admitted (acknowledged), until it is
    /// finalized or expires; recovery puts it back in the mempool.
    pub const MEMPOOL: &[u8] = b"mempool/";

    pub fn mempool(id: &weft_dag::TxId) -> Vec<u8> {
        let mut key = MEMPOOL.to_vec();
        key.extend_from_slice(id.0.as_bytes());
        key
    }

    pub fn vote(phase: crate::messages::Phase, view: u64, sequence: u64) -> Vec<u8> {
        format!("vote/{phase:?}/{view}/{sequence}").into_bytes()
    }
}
type ClaimSets = (BTreeMap<Sequence, Claim>, BTreeMap<Sequence, Vec<Claim>>);

pub(super) fn decode_claims(bytes: &[u8]) -> Result<ClaimSets, String> {
    let mut reader = Reader::new(bytes);
    let prepared = crate::view_change::read_claims(&mut reader).map_err(|e| e.to_string())?;
    let pre_prepared = crate::view_change::read_claims(&mut reader).map_err(|e| e.to_string())?;
    reader.finish().map_err(|e| e.to_string())?;
    let mut q: BTreeMap<Sequence, Vec<Claim>> = BTreeMap::new();
    for claim in pre_prepared {
        q.entry(claim.sequence).or_default().push(claim);
    }
    Ok((prepared.into_iter().map(|c| (c.sequence, c)).collect(), q))
}

pub(super) fn encode_view(view: View, active: bool) -> Vec<u8> {
    let mut writer = Writer::with_capacity(9);
    writer.u64(view.0);
    writer.u8(u8::from(active));
    writer.finish()
}

pub(super) fn encode_stable(stable: &StableCheckpoint) -> Vec<u8> {
    let mut writer = Writer::with_capacity(64 + 5_000 * stable.certificate.len());
    writer.u64(stable.sequence.0);
    writer.raw(stable.state_digest.as_bytes());
    crate::messages::write_certificate(&mut writer, &stable.certificate);
    writer.finish()
}

pub(super) fn decode_stable(bytes: &[u8]) -> Result<StableCheckpoint, String> {
    let mut reader = Reader::new(bytes);
    let sequence = Sequence(reader.u64("sequence").map_err(|e| e.to_string())?);
    let state_digest = Digest::from_bytes(reader.array("digest").map_err(|e| e.to_string())?);
    let certificate = crate::messages::read_certificate(&mut reader).map_err(|e| e.to_string())?;
    reader.finish().map_err(|e| e.to_string())?;
    Ok(StableCheckpoint {
        sequence,
        state_digest,
        certificate,
    })
}

impl Replica {
    /// Rebuilds a replica from what it persisted: the finalized log, its view and
    /// whether it was changing view, its prepared and pre-prepared claims, its votes in
    /// that view, its stable checkpoint and its own latest vertex. What it signed before
    /// the crash constrains what it signs after: it never votes twice for one slot, never
    /// builds a second vertex for a round it built, never goes back a view.
    pub fn recover(
        config: ReplicaConfig,
        signer: Signer,
        store: &dyn Store,
    ) -> Result<Replica, RecoverError> {
        let mut replica = Replica::new(config, signer)?;
        replica.restore_floor(store)?;
        let limits = replica.config.limits;
        // The finalized log: from the last snapshot, its dedup window and the tail above
        // it; from the whole log when there is no usable snapshot.
        if let Some(head) = store.log_head()? {
            replica.finalizer = match load_snapshot(store, head.sequence, replica.config.gc_depth)?
            {
                Some(snapshot) => restore_from_snapshot(store, &replica.config, snapshot, head)?,
                None => {
                    let entries = read_entries(store, Sequence(1), head.sequence)?;
                    let rounds = vertex_rounds(store, &entries)?;
                    Finalizer::restore(replica.config.gc_depth, entries, |h| {
                        rounds.get(h).copied()
                    })?
                }
            };
            if replica.config.mutant == Some(Mutant::PerAuthorFrontier) {
                replica.finalizer.use_per_author_frontier_mutant();
            }
            replica.dag.set_gc_round(replica.finalizer.gc_round());
        }
        let damaged = |key: &[u8], reason: String| RecoverError::Damaged {
            key: String::from_utf8_lossy(key).into_owned(),
            reason,
        };
        replica.restore_mempool(store)?;
        if let Some(bytes) = store.replica_state(keys::STABLE)? {
            replica.stable = decode_stable(&bytes).map_err(|e| damaged(keys::STABLE, e))?;
        }
        if let Some(bytes) = store.replica_state(keys::VIEW)? {
            let mut reader = Reader::new(&bytes);
            let view = reader
                .u64("view")
                .map_err(|e| damaged(keys::VIEW, e.to_string()))?;
            let active = reader
                .u8("active")
                .map_err(|e| damaged(keys::VIEW, e.to_string()))?;
            replica.view = View(view);
            replica.view_active = active == 1;
        }
        if let Some(bytes) = store.replica_state(keys::CLAIMS)? {
            let (prepared, pre_prepared) =
                decode_claims(&bytes).map_err(|e| damaged(keys::CLAIMS, e))?;
            replica.prepared_claims = prepared;
            replica.pre_prepared_claims = pre_prepared;
        }
        let mutant = replica.config.mutant;
        let mut new_view = None;
        if !replica.view_active {
            if let Some(bytes) = store.replica_state(keys::VIEW_CHANGE)? {
                let message = Message::from_wire(&bytes, &limits)
                    .map_err(|e| damaged(keys::VIEW_CHANGE, e.to_string()))?;
                if let Message::ViewChange {
                    view_change,
                    certificate,
                } = &message
                {
                    if view_change.body().view == replica.view {
                        // Our own view change counts toward the new view again (a new
                        // primary that restarted must not wait for a quorum without it).
                        if mutant != Some(Mutant::NewViewNotDurable) {
                            replica.view_changes.insert(
                                replica.config.index,
                                (view_change.clone(), certificate.clone()),
                            );
                        }
                        replica.own_view_change = Some(message);
                    }
                }
            }
        } else if let Some(bytes) = store.replica_state(keys::NEW_VIEW)? {
            let message = Message::from_wire(&bytes, &limits)
                .map_err(|e| damaged(keys::NEW_VIEW, e.to_string()))?;
            if let Message::NewView(body) = &message {
                if body.new_view.body().view == replica.view {
                    new_view = Some((**body).clone());
                    replica.new_view = Some(message);
                }
            }
        }
        // The NewView's decisions are the pre-prepares of their sequences in this view.
        let mut ignored = Vec::new();
        if let Some(message) = &new_view {
            let body = message.new_view.body();
            replica.next_proposal = body
                .proposals
                .last()
                .map_or(body.stable_sequence, |p| p.0)
                .next();
            if mutant != Some(Mutant::NewViewNotDurable) {
                replica.install_new_view(message, &mut ignored);
            }
        }
        // Our votes in this view: never sign another digest for those slots. A vote for a
        // sequence the NewView decided keeps the NewView as its source (even at or below
        // our stable checkpoint, where the NewView's entries are not installed): taken as
        // the primary's, a re-proposed anchor would pose as its pre-prepare and the round
        // rule would name an honest primary.
        let decided: BTreeSet<Sequence> = new_view
            .as_ref()
            .map(|m| {
                m.new_view
                    .body()
                    .proposals
                    .iter()
                    .map(|(s, _)| *s)
                    .collect()
            })
            .unwrap_or_default();
        let executed = replica.finalizer.last_sequence().0;
        let horizon = replica.stable.sequence.0.max(executed) + 2 * replica.config.window;
        for sequence in (executed + 1)..=horizon {
            for phase in [Phase::Prepare, Phase::Commit] {
                let key = keys::vote(phase, replica.view.0, sequence);
                let Some(bytes) = store.replica_state(&key)? else {
                    continue;
                };
                let vote =
                    SignedVote::from_wire(&bytes).map_err(|e| damaged(&key, e.to_string()))?;
                let s = Sequence(sequence);
                let state = match phase {
                    Phase::Prepare => SlotState::PrePrepared,
                    Phase::Commit => SlotState::Prepared,
                };
                let source = if decided.contains(&s) {
                    Source::NewView
                } else {
                    Source::Primary { round: Round(0) }
                };
                let slot = replica.log.entry(s).or_insert(Slot {
                    source,
                    digest: vote.vote().digest,
                    state,
                });
                if slot.state != SlotState::Prepared {
                    slot.state = state;
                }
                replica.vote_keys.entry(s).or_default().push(key);
                replica.own_votes.insert((s, phase), vote.clone());
                let tracker = match phase {
                    Phase::Prepare => &mut replica.prepares,
                    Phase::Commit => &mut replica.commits,
                };
                tracker.add(vote);
            }
        }
        // The anchors' rounds, for the round-order rule (entries from votes).
        let rounds: Vec<(Sequence, Round)> = replica
            .log
            .iter()
            .filter_map(|(s, slot)| {
                let hash = slot.digest?;
                let vertex = store.vertex(&hash).ok().flatten()?;
                Some((*s, vertex.vertex().round))
            })
            .collect();
        for (sequence, round) in rounds {
            if let Some(slot) = replica.log.get_mut(&sequence) {
                if let Source::Primary { .. } = slot.source {
                    slot.source = Source::Primary { round };
                }
            }
        }
        if replica.primary(replica.view) == replica.config.index {
            let proposed = replica.log.keys().next_back().copied();
            if let Some(last) = proposed {
                replica.next_proposal = replica.next_proposal.max(last.next());
            }
            replica.next_proposal = replica
                .next_proposal
                .max(replica.finalizer.last_sequence().next());
        }
        // Our own latest vertex: the next one must be in a later round.
        if let Some(bytes) = store.replica_state(keys::OWN_LATEST)? {
            let hash = Digest::from_bytes(
                <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| damaged(keys::OWN_LATEST, "not 32 bytes".into()))?,
            );
            let vertex = store.vertex(&hash)?.ok_or_else(|| {
                damaged(keys::OWN_LATEST, "names a vertex the store lacks".into())
            })?;
            replica.own_latest = Some(vertex.clone());
            if vertex.vertex().round >= replica.dag.gc_round() {
                // Its ancestors arrive by fetch from peers (see Input::Start).
                let _ = replica.dag.insert(vertex);
            }
        }
        // A primary resumes proposing above everything it ever proposed in this view:
        // its latest vertex's proposal and its pre-prepared claims of this view are
        // durable with the anchors that carry them (finding 4: recovering from votes
        // alone re-proposed sequences already proposed, a double pre-prepare).
        if replica.primary(replica.view) == replica.config.index
            && mutant != Some(Mutant::ProposalNotDurable)
        {
            let view = replica.view;
            let mut proposed: Vec<(Sequence, Digest)> = replica
                .pre_prepared_claims
                .values()
                .flatten()
                .filter(|c| c.view == view)
                .filter_map(|c| c.digest.map(|d| (c.sequence, d)))
                .collect();
            if let Some(own) = &replica.own_latest {
                if let Some(p) = own.vertex().proposal.filter(|p| p.view == view) {
                    proposed.push((p.sequence, own.hash()));
                }
            }
            for (sequence, digest) in proposed {
                replica.next_proposal = replica.next_proposal.max(sequence.next());
                if sequence <= replica.finalizer.last_sequence() {
                    continue;
                }
                let Some(round) = store.vertex(&digest)?.map(|v| v.vertex().round) else {
                    continue;
                };
                if round == Round(0) || replica.log.contains_key(&sequence) {
                    continue;
                }
                replica.log.insert(
                    sequence,
                    Slot {
                        source: Source::Primary { round },
                        digest: Some(digest),
                        state: SlotState::PrePrepared,
                    },
                );
            }
            replica.next_proposal = replica.next_proposal.max(replica.stable.sequence.next());
        }
        Ok(replica)
    }

    /// P and Q, in the view-change claim codec.
    pub(super) fn encode_claims(&self) -> Vec<u8> {
        let prepared: Vec<Claim> = self.prepared_claims.values().copied().collect();
        let pre_prepared: Vec<Claim> = self
            .pre_prepared_claims
            .values()
            .flatten()
            .copied()
            .collect();
        let mut writer = Writer::with_capacity(64 * (prepared.len() + pre_prepared.len()) + 4);
        crate::view_change::write_claims(&mut writer, &prepared);
        crate::view_change::write_claims(&mut writer, &pre_prepared);
        writer.finish()
    }
}

/// Adds the finalizer's snapshot to `batch` (the replica does so with every
/// `snapshot_interval`-th finalized entry, in the entry's own batch; a host that wrote a
/// log itself, by state sync or in a benchmark, may do the same).
///
/// The record names the GC depth it was taken under and `MAX_TTL_MS`: the finalized set
/// it keeps starts at that depth's GC round and its dedup window is that long, so a
/// replica running other constants ignores it and replays the whole log. A snapshot too
/// large to read back is not written (the previous one stays valid).
pub fn put_finalizer_snapshot(batch: &mut StoreBatch, snapshot: &FinalizerSnapshot, gc_depth: u64) {
    if snapshot.finalized_vertices.len() <= MAX_SNAPSHOT_VERTICES {
        batch.put_replica_state(keys::FINALIZER, &encode_snapshot(snapshot, gc_depth));
    }
}

/// The most finalized hashes a snapshot may hold when read back (far above D rounds of
/// n vertices, equivocating twins included).
const MAX_SNAPSHOT_VERTICES: usize = 1 << 20;

fn encode_snapshot(snapshot: &FinalizerSnapshot, gc_depth: u64) -> Vec<u8> {
    let mut writer = Writer::with_capacity(112 + 40 * snapshot.finalized_vertices.len());
    writer.u64(gc_depth);
    writer.u64(weft_dag::MAX_TTL_MS);
    writer.u64(snapshot.sequence.0);
    writer.raw(snapshot.state_digest.as_bytes());
    match snapshot.highest_anchor_round {
        None => writer.u8(0),
        Some(round) => {
            writer.u8(1);
            writer.u64(round.0);
        }
    }
    writer.u64(snapshot.consensus_time.0);
    writer.u64(snapshot.finalized_vertices.len() as u64);
    for (round, hash) in &snapshot.finalized_vertices {
        writer.u64(round.0);
        writer.raw(hash.as_bytes());
    }
    writer.finish()
}

/// The record's GC depth and dedup window, then the snapshot.
fn decode_snapshot(bytes: &[u8]) -> Result<(u64, u64, FinalizerSnapshot), DecodeError> {
    let mut reader = Reader::new(bytes);
    let gc_depth = reader.u64("gc depth")?;
    let max_ttl_ms = reader.u64("max ttl")?;
    let sequence = Sequence(reader.u64("sequence")?);
    let state_digest = Digest::from_bytes(reader.array("state digest")?);
    let highest_anchor_round = match reader.u8("anchor round tag")? {
        0 => None,
        _ => Some(Round(reader.u64("anchor round")?)),
    };
    let consensus_time = TimestampMs(reader.u64("consensus time")?);
    let raw = reader.u64("vertex count")?;
    let count = reader.count("vertex count", raw, MAX_SNAPSHOT_VERTICES, 40)?;
    let mut finalized_vertices = Vec::with_capacity(count);
    for _ in 0..count {
        let round = Round(reader.u64("vertex round")?);
        finalized_vertices.push((round, Digest::from_bytes(reader.array("vertex hash")?)));
    }
    reader.finish()?;
    let snapshot = FinalizerSnapshot {
        sequence,
        state_digest,
        highest_anchor_round,
        consensus_time,
        finalized_vertices,
    };
    Ok((gc_depth, max_ttl_ms, snapshot))
}

/// The snapshot record, if it is usable with a log whose head is `head`: readable, taken
/// under this replica's GC depth and `MAX_TTL_MS`, at or below the head, and naming the
/// digest the log holds at its sequence (a log reset or rewritten under it makes it
/// stale). Otherwise recovery replays the whole log: the record only saves time, so one
/// that cannot be used never keeps a validator from starting.
fn load_snapshot(
    store: &dyn Store,
    head: Sequence,
    gc_depth: u64,
) -> Result<Option<FinalizerSnapshot>, RecoverError> {
    let Some(bytes) = store.replica_state(keys::FINALIZER)? else {
        return Ok(None);
    };
    let Ok((taken_gc_depth, max_ttl_ms, snapshot)) = decode_snapshot(&bytes) else {
        return Ok(None);
    };
    if taken_gc_depth != gc_depth
        || max_ttl_ms != weft_dag::MAX_TTL_MS
        || snapshot.sequence.0 == 0
        || snapshot.sequence > head
    {
        return Ok(None);
    }
    let matches = store
        .finalized(snapshot.sequence)?
        .is_some_and(|entry| entry.state_digest == snapshot.state_digest);
    Ok(matches.then_some(snapshot))
}

/// Restart in time independent of the log's length: the snapshot at S, the entries of
/// its dedup window (found by binary search: consensus time is monotone in the
/// sequence) and the entries above S.
fn restore_from_snapshot(
    store: &dyn Store,
    config: &ReplicaConfig,
    snapshot: FinalizerSnapshot,
    head: LogHead,
) -> Result<Finalizer, RecoverError> {
    let start = snapshot.dedup_window_start();
    // The first sequence in [1, S] whose consensus time is at least `start`.
    let (mut low, mut high) = (1, snapshot.sequence.0);
    while low < high {
        let middle = low + (high - low) / 2;
        let time = store.finalized(Sequence(middle))?.map(|e| e.consensus_time);
        if time.is_some_and(|t| t >= start) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    let window = read_entries(store, Sequence(low), snapshot.sequence)?;
    let tail = read_entries(store, snapshot.sequence.next(), head.sequence)?;
    let rounds = vertex_rounds(store, &tail)?;
    if config.mutant == Some(Mutant::SnapshotWithoutWindow) {
        return Ok(Finalizer::restore_from_snapshot(
            config.gc_depth,
            snapshot,
            [],
            tail,
            |h| rounds.get(h).copied(),
        )?);
    }
    Ok(Finalizer::restore_from_snapshot(
        config.gc_depth,
        snapshot,
        window,
        tail,
        |h| rounds.get(h).copied(),
    )?)
}

/// The finalized entries `from..=to`, in order.
fn read_entries(
    store: &dyn Store,
    from: Sequence,
    to: Sequence,
) -> Result<Vec<FinalizedEntry>, RecoverError> {
    let mut entries = Vec::new();
    let mut next = from;
    while next <= to {
        let chunk = store.finalized_range(next, 1_024)?;
        let Some(last) = chunk.last() else { break };
        next = last.sequence.next();
        entries.extend(chunk.into_iter().filter(|e| e.sequence <= to));
    }
    Ok(entries)
}

/// The rounds of the anchors and vertices `entries` finalized, from the store.
fn vertex_rounds(
    store: &dyn Store,
    entries: &[FinalizedEntry],
) -> Result<std::collections::HashMap<Digest, Round>, RecoverError> {
    let mut rounds = std::collections::HashMap::new();
    for entry in entries {
        for hash in entry.anchor.iter().chain(entry.vertices.iter()) {
            if let Some(vertex) = store.vertex(hash)? {
                rounds.insert(*hash, vertex.vertex().round);
            }
        }
    }
    Ok(rounds)
}

/// Where a replica whose signing record was lost may sign again, learned from 2f + 1
/// peers' `Status` (ARCHITECTURE.md, "Recovery": an empty store is not a fresh
/// validator, and counts as faulty until a stable checkpoint passes what it may have
/// signed).
///
/// Safety, with `view`, `round` and `executed` the highest reported values:
/// - A vertex we signed at round R had parents by 2f + 1 authors of round R - 1, at
///   least f of them honest others whose own rounds are now >= R - 1; 2f + 1 of the 3f
///   others include at least one of them, so R <= `round` + 1: we build from `round` + 2.
/// - A vote we signed in view w needed the view active (w = 0, or 2f + 1 view changes
///   for w, at least f of them from honest others), so likewise w <= `view`; and it was
///   for a sequence at most h + 2W with h our stable checkpoint then, h <= `executed`
///   (f + 1 honest validators executed h). So we vote in views above `view`, or for
///   sequences above `executed` + 2W (where we cannot have voted in any view).
/// - A view change (or NewView) we signed for a view up to `view` + 1 carried claims of
///   sequences at most h + W <= `executed` + W. Once our own stable checkpoint passes
///   that, a new one omits nothing the decision looks at (it starts above our h), so we
///   announce views from `view` + 2, or any view once stable >= `executed` + W; the same
///   bound lets us lead a view at or below `view`.
/// - When no reporter holds any vertex the set has just started (every replica builds
///   its round 0 when it starts): we vote from `view` and announce above it, or a
///   validator set started from empty stores could never change view.
///
/// A reporter may lie upward; that only delays this replica, which counts as faulty
/// meanwhile (a lie near `u64::MAX` keeps it from voting until the next view: see
/// docs/protocol.md, known limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SigningFloor {
    /// The highest view reported.
    pub(super) view: View,
    /// The highest own-latest round reported (none: no reporter holds a vertex).
    pub(super) round: Option<Round>,
    /// The highest executed sequence reported.
    pub(super) executed: Sequence,
}

impl SigningFloor {
    fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(25);
        writer.u64(self.view.0);
        writer.u64(self.executed.0);
        match self.round {
            None => writer.u8(0),
            Some(round) => {
                writer.u8(1);
                writer.u64(round.0);
            }
        }
        writer.finish()
    }

    fn decode(bytes: &[u8]) -> Result<SigningFloor, String> {
        let mut reader = Reader::new(bytes);
        let view = View(reader.u64("view").map_err(|e| e.to_string())?);
        let executed = Sequence(reader.u64("executed").map_err(|e| e.to_string())?);
        let round = match reader.u8("round tag").map_err(|e| e.to_string())? {
            0 => None,
            _ => Some(Round(reader.u64("round").map_err(|e| e.to_string())?)),
        };
        reader.finish().map_err(|e| e.to_string())?;
        Ok(SigningFloor {
            view,
            round,
            executed,
        })
    }
}

/// A mempool record: the expiry, then the payload.
fn encode_transaction(transaction: &Transaction) -> Vec<u8> {
    let mut writer = Writer::with_capacity(8 + transaction.payload().len());
    writer.u64(transaction.expires_at().0);
    writer.raw(transaction.payload());
    writer.finish()
}

/// A `mempool/` record: expiry, then payload (its size is checked by the caller).
fn decode_transaction(bytes: &[u8]) -> Result<Transaction, String> {
    let mut reader = Reader::new(bytes);
    let expires_at = reader.u64("expires_at").map_err(|e| e.to_string())?;
    let payload = reader
        .take("payload", reader.remaining())
        .map_err(|e| e.to_string())?;
    Ok(Transaction::new(payload.to_vec(), TimestampMs(expires_at)))
}

impl Replica {
    /// Makes `admitted` durable before anything acknowledges them: one batch for all of
    /// them (the host's group commit), ahead of every later output of the step.
    pub(super) fn persist_admitted(&mut self, admitted: &[Transaction], outputs: &mut Vec<Output>) {
        if admitted.is_empty()
            || self.config.mutant == Some(Mutant::MempoolNotDurable)
            || self.config.legacy_replay
        {
            return;
        }
        let mut batch = StoreBatch::new();
        for transaction in admitted {
            let id = transaction.id();
            batch.put_replica_state(&keys::mempool(&id), &encode_transaction(transaction));
            self.mempool_records.insert(id, transaction.expires_at());
        }
        outputs.push(Output::Persist(batch));
    }

    /// Deletes the records of finalized transactions, in the batch that finalizes them.
    pub(super) fn forget_finalized_records(
        &mut self,
        finalized: &HashSet<TxId>,
        batch: &mut StoreBatch,
    ) {
        if self.mempool_records.is_empty() {
            return;
        }
        for id in finalized {
            if self.mempool_records.remove(id).is_some() {
                batch.delete_replica_state(&keys::mempool(id));
            }
        }
    }

    /// Deletes the records of transactions expired by our clock: none of them can be
    /// put in a vertex any more (a vertex we build is stamped later), and any vertex
    /// already holding one is in the DAG, not in the mempool.
    pub(super) fn forget_expired_records(&mut self, now: TimestampMs, outputs: &mut Vec<Output>) {
        let expired: Vec<TxId> = self
            .mempool_records
            .iter()
            .filter(|(_, expires_at)| **expires_at < now)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return;
        }
        let mut batch = StoreBatch::new();
        for id in expired {
            self.mempool_records.remove(&id);
            batch.delete_replica_state(&keys::mempool(&id));
        }
        outputs.push(Output::Persist(batch));
    }

    /// Puts the transactions this replica acknowledged and had not seen finalized back
    /// in its mempool (their vertices, if any, may never be anchored; deduplication keeps
    /// them exactly-once).
    fn restore_mempool(&mut self, store: &dyn Store) -> Result<(), RecoverError> {
        // Every record, page by page: they may outnumber the mempool's cap (those of
        // transactions in our own unfinalized vertices too), and one left out would be
        // an acknowledged transaction lost (found by the attack review).
        const PAGE: usize = 4_096;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.replica_state_with_prefix(keys::MEMPOOL, after.as_deref(), PAGE)?;
            let full = page.len() == PAGE;
            after = page.last().map(|(key, _)| key.clone());
            self.restore_records(store, page)?;
            if !full {
                return Ok(());
            }
        }
    }

    fn restore_records(
        &mut self,
        store: &dyn Store,
        records: Vec<weft_dag::store::StateEntry>,
    ) -> Result<(), RecoverError> {
        for (key, bytes) in records {
            let transaction =
                decode_transaction(&bytes).map_err(|reason| RecoverError::Damaged {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason,
                })?;
            let id = transaction.id();
            self.mempool_records.insert(id, transaction.expires_at());
            if transaction.payload().len() > self.config.limits.max_transaction_bytes {
                // Acknowledged under a larger `max_transaction_bytes`: no vertex may carry
                // it now. The record stays until it expires (the sweep deletes it), the
                // host reports the count, and the validator still starts.
                self.oversized_records += 1;
                continue;
            }
            let finalized =
                self.finalizer.is_transaction_finalized(&id) || store.transaction(&id)?.is_some();
            if !finalized && self.mempool_ids.insert(id) {
                self.mempool.push_back(transaction);
            }
        }
        Ok(())
    }

    /// True while this replica may not sign anything yet (it is learning its floor).
    pub(super) fn learning(&self) -> bool {
        self.learning.is_some()
    }

    /// May we sign a prepare, a commit or a pre-prepare for `sequence` in `view`?
    pub(super) fn may_vote(&self, view: View, sequence: Sequence) -> bool {
        match (&self.learning, &self.floor) {
            (Some(_), _) => false,
            (None, None) => true,
            (None, Some(floor)) => {
                let above_views = if floor.round.is_none() {
                    view >= floor.view
                } else {
                    view > floor.view
                };
                // Before its wipe every vote it signed was at most C + W for a certified
                // checkpoint C (its own h, or a NewView's, whose slots it may prepare
                // after a crash before adopting that checkpoint), and C <= E: f + 1
                // honest validators executed C.
                let fresh = floor
                    .executed
                    .checked_add(self.config.window)
                    .is_some_and(|top| sequence > top);
                above_views || fresh
            }
        }
    }

    /// True once our stable checkpoint passed every claim we may have signed before.
    fn stable_passed_floor(&self, floor: &SigningFloor) -> bool {
        floor
            .executed
            .checked_add(self.config.window)
            .is_some_and(|top| self.stable.sequence >= top)
    }

    /// May we sign a view change for `view`?
    pub(super) fn may_announce(&self, view: View) -> bool {
        match (&self.learning, &self.floor) {
            (Some(_), _) => false,
            (None, None) => true,
            (None, Some(floor)) if self.stable_passed_floor(floor) => true,
            (None, Some(floor)) if floor.round.is_none() => view > floor.view,
            (None, Some(floor)) => view.0 >= floor.view.0.saturating_add(2),
        }
    }

    /// May we sign the NewView of `view`? Never for a view at or below the floor view:
    /// a NewView we signed before the wipe entered its view with q view changes, so some
    /// reporter is at least at that view, and a second, different NewView for it would
    /// be a double signature (found by the attack review of the credible reports).
    pub(super) fn may_lead(&self, view: View) -> bool {
        match (&self.learning, &self.floor) {
            (Some(_), _) => false,
            (None, None) => true,
            (None, Some(floor)) => view > floor.view,
        }
    }

    /// The lowest round our next vertex may have.
    pub(super) fn lowest_own_round(&self) -> Round {
        self.floor
            .and_then(|f| f.round)
            .map_or(Round(0), |r| Round(r.0.saturating_add(2)))
    }

    /// Records a peer's status while learning. A report that is already credible is
    /// kept (an honest peer's later answers only move ahead of what we can check yet);
    /// one that is not may be replaced by a later answer of the same peer.
    pub(super) fn learn_from_status(
        &mut self,
        from: ValidatorIndex,
        view: View,
        executed: Sequence,
        round: Option<Round>,
        outputs: &mut Vec<Output>,
    ) {
        if from == self.config.index || !self.config.committee.contains(from) {
            return;
        }
        let held = self
            .learning
            .as_ref()
            .and_then(|reports| reports.get(&from))
            .copied();
        let report = match held {
            Some(held) if self.credible(&held) => held,
            // Not credible yet: the lower of its answers, field by field. Every answer to
            // this start's nonce was sent after the wipe, so each bounds what the peer
            // held then; keeping the lowest lets an honest report become credible while
            // the peer moves on (replacing it chased the peer forever, found by the
            // attack review), and a liar may still retract.
            Some((held_view, held_executed, held_round)) => (
                held_view.min(view),
                held_executed.min(executed),
                match (held_round, round) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            ),
            None => (view, executed, round),
        };
        if let Some(reports) = self.learning.as_mut() {
            reports.insert(from, report);
        }
        self.try_learn(outputs);
    }

    /// A report we can check against what we verified ourselves (§8): its round is at
    /// most one above the highest round of a vertex we accepted (a vertex of round t has
    /// 2f + 1 signed parents of round t - 1, so t - 1 was really reached), its executed
    /// sequence is at most our own executed sequence or stable checkpoint (both rest on
    /// 2f + 1 signatures). An honest peer's report becomes credible as we catch
    /// up; a Byzantine one far above everything never does, so it cannot raise the floor
    /// beyond what the DAG and the log reached.
    fn credible(&self, report: &PeerReport) -> bool {
        if self.config.mutant == Some(Mutant::UnverifiedReports) {
            return true;
        }
        let (view, executed, round) = *report;
        let top = self
            .dag
            .highest_round()
            .map_or(0, |top| top.0.saturating_add(1));
        let round_checked = round.is_none_or(|round| round.0 <= top);
        let executed_checked = executed <= self.finalizer.last_sequence().max(self.stable.sequence);
        // The view is not checked: an honest reporter that learned a floor answers up
        // to its floor view + 1, which may be two views above a set that stayed put, so
        // a check against our view stalled the next learner (found by the attack
        // review). A view lie only keeps us from leading views up to it (known limit 12).
        let _ = view;
        round_checked && executed_checked
    }

    /// With 2f + 1 credible reports, the floor is the highest of them, made durable, and
    /// the replica may sign above it. Called after every step while learning.
    pub(super) fn try_learn(&mut self, outputs: &mut Vec<Output>) {
        let Some(reports) = self.learning.as_ref() else {
            return;
        };
        let credible: Vec<PeerReport> = reports
            .values()
            .filter(|report| self.credible(report))
            .copied()
            .collect();
        if credible.len() < self.config.committee.quorum() {
            return;
        }
        let floor = SigningFloor {
            view: credible.iter().map(|(v, _, _)| *v).max().unwrap_or(View(0)),
            round: credible.iter().filter_map(|(_, _, r)| *r).max(),
            executed: credible
                .iter()
                .map(|(_, e, _)| *e)
                .max()
                .unwrap_or(Sequence(0)),
        };
        self.learning = None;
        self.floor = Some(floor);
        let mut batch = StoreBatch::new();
        batch.put_replica_state(keys::FLOOR, &floor.encode());
        outputs.push(Output::Persist(batch));
    }

    /// The floor from the store, or learning mode when the store holds no signing
    /// record at all (an empty store is not a fresh validator).
    pub(super) fn restore_floor(&mut self, store: &dyn Store) -> Result<(), RecoverError> {
        if let Some(bytes) = store.replica_state(keys::FLOOR)? {
            self.floor =
                Some(
                    SigningFloor::decode(&bytes).map_err(|reason| RecoverError::Damaged {
                        key: String::from_utf8_lossy(keys::FLOOR).into_owned(),
                        reason,
                    })?,
                );
            return Ok(());
        }
        // A learning replica may save a view before it learns (it enters a view through
        // a NewView, or its view-change timer moves it without announcing): the marker
        // keeps it learning after a crash, which `view` alone would end with no floor.
        let interrupted = store.replica_state(keys::LEARNING)?.is_some();
        let no_record = store.replica_state(keys::OWN_LATEST)?.is_none()
            && store.replica_state(keys::VIEW)?.is_none();
        if (no_record || interrupted)
            && !self.config.fresh
            && self.config.mutant != Some(Mutant::WipedStoreSignsAtOnce)
        {
            self.learning = Some(BTreeMap::new());
        }
        Ok(())
    }
}
