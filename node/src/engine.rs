//! The engine: feeds the pure replica its inputs and carries out its outputs, in order.
//!
//! - Messages from the network are decoded and their signatures verified on a pool of
//!   verifier threads (bounded queue), off the replica's task.
//! - `Output::Persist` is written to RocksDB (synced) before any later output is carried
//!   out: persist before send.
//! - Timers are deadlines on tokio's clock; fetches are network requests whose vertices
//!   are verified before the replica sees them.
//! - Finalized entries go to the metrics, to gRPC subscribers (a bounded broadcast
//!   channel) and to the status the API reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use weft_consensus::messages::Message;
use weft_consensus::replica::{Input, Output, Replica, Timer};
use weft_dag::store::Store;
use weft_dag::{
    Committee, FinalizedEntry, Limits, SignedVertex, TimestampMs, Transaction, TxId, ValidatorIndex,
};
use weft_network::{Channel, Event, Network, Request, Response};

use crate::metrics::NodeMetrics;

/// What happened to a submitted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// In the mempool.
    Accepted,
    /// Already pending or finalized.
    Duplicate,
    /// The mempool is full.
    Full,
    /// Its expiry passed while it waited for the engine.
    Expired,
}

/// What the API can read without asking the engine.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The current view.
    pub view: u64,
    /// Its primary.
    pub primary: u16,
    /// The last executed sequence.
    pub last_finalized: u64,
    /// The last stable checkpoint.
    pub stable_checkpoint: u64,
    /// Transactions waiting in the mempool.
    pub mempool: usize,
    /// Still syncing the finalized log from peers (the engine has not started).
    pub syncing: bool,
    /// Started from a wiped store with a key that has signed before, and not yet
    /// signing: waiting for 2f + 1 peers to report the floor it must sign above.
    pub learning_signing_floor: bool,
}

enum Command {
    Submit {
        transactions: Vec<Transaction>,
        reply: oneshot::Sender<Vec<Admission>>,
    },
    Pending {
        id: TxId,
        reply: oneshot::Sender<bool>,
    },
}

/// The API's handle on the engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    /// The latest status.
    pub status: watch::Receiver<Status>,
    /// Finalized entries as they happen.
    pub finalized: broadcast::Sender<Arc<FinalizedEntry>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Submit { transactions, .. } => write!(f, "Submit({})", transactions.len()),
            Command::Pending { id, .. } => write!(f, "Pending({id:?})"),
        }
    }
}

/// The engine's ends of the channels an [`EngineHandle`] talks through. Made before the
/// engine so the API can serve (and say "syncing") while state sync runs.
#[derive(Debug)]
pub struct EngineInbox {
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<Status>,
    finalized: broadcast::Sender<Arc<FinalizedEntry>>,
}

/// Why [`Engine::run`] returned.
#[derive(Debug)]
pub enum Stopped {
    /// Shutdown was asked for, or the network stopped.
    Shutdown,
    /// This validator fell further behind than live catch-up reaches: the host should
    /// sync the log from peers, recover a replica from the store and start a new engine
    /// with what this one carries.
    Resync(Carried),
}

/// What a resyncing engine hands to the next one.
#[derive(Debug)]
pub struct Carried {
    /// The API's channels, still connected.
    pub inbox: EngineInbox,
    /// The unfinished work.
    pub work: CarriedWork,
}

/// Transactions accepted but not final (mempool and own unfinished vertices), and when
/// they were accepted (for the finality histogram).
#[derive(Debug, Default)]
pub struct CarriedWork {
    transactions: Vec<Transaction>,
    accepted_at: HashMap<TxId, Instant>,
}

/// Queued API commands (submits, lookups) before the API waits.
const COMMAND_QUEUE: usize = 1024;
/// Finalized entries buffered for subscribers; a slower one is told to resume.
const FINALIZED_BUFFER: usize = 4096;

/// The API's handle and the engine's inbox, connected; the status says `syncing`.
pub fn channels() -> (EngineHandle, EngineInbox) {
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (status, status_rx) = watch::channel(Status {
        syncing: true,
        ..Status::default()
    });
    let (finalized, _) = broadcast::channel(FINALIZED_BUFFER);
    (
        EngineHandle {
            commands: commands_tx,
            status: status_rx,
            finalized: finalized.clone(),
        },
        EngineInbox {
            commands,
            status,
            finalized,
        },
    )
}

impl EngineHandle {
    /// Offers transactions to the mempool; one answer each, in order. `None` if the
    /// engine has stopped.
    pub async fn submit(&self, transactions: Vec<Transaction>) -> Option<Vec<Admission>> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Submit {
                transactions,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }

    /// Whether a transaction waits in the mempool or in a not yet final vertex.
    pub async fn is_pending(&self, id: TxId) -> bool {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Pending { id, reply })
            .await
            .is_err()
        {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

/// Turns each `Accepted` answer whose transaction the replica does not hold after the
/// admitting step into why it refused it: expired by `now_ms`, or else no room. Returns
/// the ids so refused.
fn settle(
    answers: &mut [Admission],
    ids: &[(TxId, TimestampMs)],
    holds: impl Fn(&TxId) -> bool,
    now_ms: u64,
) -> Vec<TxId> {
    let mut refused = Vec::new();
    for ((id, expires_at), answer) in ids.iter().zip(answers.iter_mut()) {
        if *answer == Admission::Accepted && !holds(id) {
            refused.push(*id);
            *answer = if expires_at.0 < now_ms {
                Admission::Expired
            } else {
                Admission::Full
            };
        }
    }
    refused
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn channel_of(message: &Message) -> Channel {
    match message {
        Message::Vertex(_) => Channel::Vertices,
        _ => Channel::Consensus,
    }
}

/// A decoded, verified message or fetch answer, ready for the replica.
type Verified = Input;

/// Everything the engine task owns.
pub struct Engine {
    replica: Replica,
    store: Arc<dyn Store>,
    network: Network,
    committee: Committee,
    limits: Limits,
    metrics: NodeMetrics,
    timers: HashMap<Timer, Instant>,
    /// When this node accepted each transaction over gRPC (for the finality histogram).
    accepted_at: HashMap<TxId, Instant>,
    mempool_cap: usize,
    verified_tx: mpsc::Sender<Verified>,
    verified: Option<mpsc::Receiver<Verified>>,
    inbox: Option<mpsc::Receiver<Command>>,
    status: watch::Sender<Status>,
    finalized: broadcast::Sender<Arc<FinalizedEntry>>,
    /// The highest view seen, for the view-change counter.
    last_view: u64,
    /// The replica started from a wiped store and has not learned its signing floor.
    learning_floor: bool,
    /// The executed sequence each validator last reported (its `Status` messages).
    peer_executed: Vec<u64>,
    /// Our executed sequence and when it last moved.
    progress: (u64, Instant),
    /// Behind by more than this, without progress, means resync.
    resync_lag: u64,
    /// Transactions a previous engine carried over, handed to the replica at start.
    carried: Vec<Transaction>,
    /// When the replica's state was last written to the debug log.
    described_at: Instant,
    /// The highest stable checkpoint whose certificate is stored for proofs.
    certified: u64,
}

/// How often the debug log shows the replica's state (`RUST_LOG=weft_node=debug`).
const DESCRIBE_EVERY: Duration = Duration::from_secs(1);

/// How long a validator far behind may go without executing before it resyncs.
const RESYNC_AFTER: Duration = Duration::from_secs(2);

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("replica", &self.replica.index())
            .finish_non_exhaustive()
    }
}

/// Most transactions whose acceptance time is remembered for the histogram.
const ACCEPTED_AT_CAP: usize = 1_000_000;
/// Most API commands taken together into one group commit.
const GROUP_COMMIT_COMMANDS: usize = 256;

impl Engine {
    /// An engine around a recovered replica, answering through `inbox`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        replica: Replica,
        inbox: EngineInbox,
        store: Arc<dyn Store>,
        network: Network,
        committee: Committee,
        limits: Limits,
        metrics: NodeMetrics,
        mempool_cap: usize,
    ) -> Engine {
        let (verified_tx, verified) = mpsc::channel::<Verified>(4096);
        let last_view = replica.view().0;
        let learning_floor = replica.learning_signing_floor();
        metrics
            .learning_signing_floor
            .set(i64::from(learning_floor));
        if learning_floor {
            tracing::warn!(
                "empty store for a validator whose key has signed before: learning the \
                 signing floor from 2f+1 peers before signing anything"
            );
        }
        let executed = replica.last_executed().0;
        let size = committee.size();
        Engine {
            replica,
            store,
            network,
            committee,
            limits,
            metrics,
            timers: HashMap::new(),
            accepted_at: HashMap::new(),
            mempool_cap,
            verified_tx,
            verified: Some(verified),
            inbox: Some(inbox.commands),
            status: inbox.status,
            finalized: inbox.finalized,
            last_view,
            learning_floor,
            peer_executed: vec![0; size],
            progress: (executed, Instant::now()),
            resync_lag: u64::MAX,
            carried: Vec::new(),
            described_at: Instant::now(),
            certified: 0,
        }
    }

    /// Resync when the validator is more than `lag` sequences behind what f + 1
    /// validators report and does not execute for a while (live catch-up through commit
    /// certificates reaches as far back as peers keep them).
    pub fn resync_beyond(mut self, lag: u64) -> Engine {
        self.resync_lag = lag;
        self
    }

    /// Takes over the work a resyncing engine carried.
    pub fn carry_over(mut self, work: CarriedWork) -> Engine {
        self.carried = work.transactions;
        self.accepted_at = work.accepted_at;
        self
    }

    /// How far behind this validator is: the (f + 1)-th highest executed sequence other
    /// validators report (at least one honest validator reached it) minus ours.
    fn lag(&self) -> u64 {
        let mut reported = self.peer_executed.clone();
        reported.sort_unstable_by(|a, b| b.cmp(a));
        let certain = reported
            .get(self.committee.max_faulty())
            .copied()
            .unwrap_or(0);
        certain.saturating_sub(self.replica.last_executed().0)
    }

    /// Runs until `shutdown` fires, the network stops, or the validator must resync.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Stopped {
        let (Some(mut commands), Some(mut verified)) = (self.inbox.take(), self.verified.take())
        else {
            return Stopped::Shutdown;
        };
        let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<(u16, Vec<u8>)>(4096);
        spawn_verifiers(
            raw_rx,
            self.verified_tx.clone(),
            self.committee.clone(),
            self.limits,
            self.metrics.clone(),
        );

        self.apply(Input::Start).await;
        let carried = std::mem::take(&mut self.carried);
        if !carried.is_empty() {
            let unfinished: Vec<Transaction> = carried
                .into_iter()
                .filter(|t| !matches!(self.store.transaction(&t.id()), Ok(Some(_))))
                .collect();
            tracing::info!(
                count = unfinished.len(),
                "re-proposing carried transactions"
            );
            self.apply(Input::Transactions(unfinished)).await;
        }
        let mut resync = false;
        loop {
            let next_timer = self.timers.values().min().copied();
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                event = self.network.next_event() => match event {
                    None => break,
                    Some(Event::Message { from, payload, .. }) => {
                        if raw_tx.try_send((from, payload.to_vec())).is_err() {
                            self.metrics.invalid_messages.with_label_values(&["verify_queue_full"]).inc();
                        }
                    }
                    Some(Event::Request { request, reply, .. }) => self.answer(request, reply),
                    // The network service keeps `weft_connected_validators` itself.
                    Some(Event::Connected(_) | Event::Disconnected(_)) => {}
                },
                Some(input) = verified.recv() => {
                    if let Input::Message { from, message: Message::Status { executed, .. } } = &input {
                        if let Some(slot) = self.peer_executed.get_mut(from.as_usize()) {
                            *slot = (*slot).max(executed.0);
                            self.metrics.peer_reported(from.0, *slot);
                        }
                    }
                    self.apply(input).await;
                    if self.must_resync() {
                        resync = true;
                        break;
                    }
                }
                Some(command) = commands.recv() => {
                    // Group commit: every command already queued goes in with this one,
                    // so their admitted transactions share one synced write.
                    let mut group = vec![command];
                    while group.len() < GROUP_COMMIT_COMMANDS {
                        match commands.try_recv() {
                            Ok(next) => group.push(next),
                            Err(_) => break,
                        }
                    }
                    self.on_commands(group).await;
                }
                () = sleep_until(next_timer) => {
                    let now = Instant::now();
                    let due: Vec<Timer> = self.timers.iter().filter(|(_, at)| **at <= now).map(|(t, _)| *t).collect();
                    for timer in due {
                        self.timers.remove(&timer);
                        self.apply(Input::Timer(timer)).await;
                    }
                }
            }
        }
        drop(raw_tx);
        if resync {
            tracing::warn!(
                lag = self.lag(),
                executed = self.replica.last_executed().0,
                "too far behind for live catch-up; resyncing from peers"
            );
            self.status.send_modify(|status| status.syncing = true);
            let transactions = self.replica.unfinished_transactions();
            return Stopped::Resync(Carried {
                inbox: EngineInbox {
                    commands,
                    status: self.status,
                    finalized: self.finalized,
                },
                work: CarriedWork {
                    transactions,
                    accepted_at: self.accepted_at,
                },
            });
        }
        tracing::info!("engine stopped");
        Stopped::Shutdown
    }

    /// Queued API commands, together. Submissions are admitted in order, handed to the
    /// replica as one input (whose first output is one durable batch of their mempool
    /// records), and answered only after that write: an OK is a durable acknowledgement.
    /// Lookups are answered after the submissions before them.
    async fn on_commands(&mut self, group: Vec<Command>) {
        let mut admitted = Vec::new();
        // Ids admitted from this group: a payload twice in it is a duplicate, found
        // without hashing the group again for each entry.
        let mut admitted_ids = std::collections::HashSet::new();
        let mut replies = Vec::new();
        let mut lookups = Vec::new();
        for command in group {
            match command {
                Command::Submit {
                    transactions,
                    reply,
                } => {
                    let mut answers = Vec::with_capacity(transactions.len());
                    let mut ids = Vec::with_capacity(transactions.len());
                    for transaction in transactions {
                        let id = transaction.id();
                        ids.push((id, transaction.expires_at()));
                        let finalized = self.store.transaction(&id).ok().flatten().is_some();
                        if finalized
                            || self.replica.is_transaction_pending(&id)
                            || self.replica.is_transaction_finalized(&id)
                        {
                            answers.push(Admission::Duplicate);
                        } else if self.replica.mempool_len() + admitted.len() >= self.mempool_cap {
                            answers.push(Admission::Full);
                        } else if !admitted_ids.insert(id) {
                            answers.push(Admission::Duplicate);
                        } else {
                            if self.accepted_at.len() < ACCEPTED_AT_CAP {
                                self.accepted_at.insert(id, Instant::now());
                            }
                            answers.push(Admission::Accepted);
                            admitted.push(transaction);
                        }
                    }
                    replies.push((reply, ids, answers));
                }
                Command::Pending { id, reply } => lookups.push((id, reply)),
            }
        }
        if !admitted.is_empty() {
            self.metrics
                .group_commit_transactions
                .observe(admitted.len() as f64);
            self.apply(Input::Transactions(admitted)).await;
        }
        // Only what the replica holds is acknowledged: it refuses a transaction whose
        // expiry passed while the command was queued (or whose room another took).
        let now = now_ms();
        for (reply, ids, mut answers) in replies {
            let replica = &self.replica;
            for id in settle(
                &mut answers,
                &ids,
                |id| replica.is_transaction_pending(id),
                now,
            ) {
                self.accepted_at.remove(&id);
            }
            let _ = reply.send(answers);
        }
        for (id, reply) in lookups {
            let _ = reply.send(self.replica.is_transaction_pending(&id));
        }
    }

    /// Serves a peer's fetch or sync from the replica's memory and the store.
    fn answer(&self, request: Request, reply: weft_network::Responder) {
        match request {
            Request::Vertices { hashes } => {
                // Memory first (recent vertices), then the store; in request order.
                reply.reply(crate::sync::answer_vertices(&hashes, |digest| {
                    self.replica
                        .vertices(std::slice::from_ref(digest))
                        .into_iter()
                        .next()
                        .or_else(|| self.store.vertex(digest).ok().flatten())
                        .map(|vertex| vertex.to_wire())
                }));
            }
            Request::Sync {
                from_sequence,
                max_entries,
            } => reply.reply(crate::sync::answer_sync(
                self.store.as_ref(),
                from_sequence,
                max_entries,
            )),
        }
    }

    /// Hands one input to the replica and carries out what it asks, in order.
    async fn apply(&mut self, input: Input) {
        let outputs = self.replica.handle(weft_dag::TimestampMs(now_ms()), input);
        for output in outputs {
            match output {
                Output::Persist(batch) => {
                    let store = self.store.clone();
                    let written = tokio::task::block_in_place(|| store.write(batch));
                    if let Err(error) = written {
                        // Nothing after this may be sent: the node stops rather than
                        // risk signing something it could forget.
                        tracing::error!(%error, "store write failed; stopping");
                        std::process::exit(2);
                    }
                }
                Output::Broadcast(message) => {
                    if let Err(error) = self
                        .network
                        .broadcast(channel_of(&message), &message.to_wire())
                    {
                        tracing::debug!(%error, kind = message.kind(), "broadcast dropped");
                    }
                }
                Output::Send { to, message } => {
                    if let Err(error) =
                        self.network
                            .send(to.0, channel_of(&message), &message.to_wire())
                    {
                        tracing::debug!(%error, kind = message.kind(), "send dropped");
                    }
                }
                Output::Fetch { from, hashes } => self.fetch(from, hashes),
                Output::SetTimer { timer, after_ms } => {
                    self.timers
                        .insert(timer, Instant::now() + Duration::from_millis(after_ms));
                }
                Output::Finalized(entry) => self.on_finalized(entry),
                Output::Evidence(evidence) => {
                    tracing::warn!(
                        culprit = evidence.culprit().0,
                        ?evidence,
                        "proof of a Byzantine fault"
                    );
                    self.metrics
                        .equivocations
                        .with_label_values(&[evidence.kind()])
                        .inc();
                }
            }
        }
        if self.learning_floor && !self.replica.learning_signing_floor() {
            self.learning_floor = false;
            self.metrics.learning_signing_floor.set(0);
            if let Some((view, round, executed)) = self.replica.signing_floor() {
                tracing::info!(
                    view = view.0,
                    round = round.map(|r| r.0),
                    executed = executed.0,
                    "signing floor learned from 2f+1 peers; signing only above it"
                );
            }
        }
        if tracing::enabled!(tracing::Level::DEBUG) && self.described_at.elapsed() >= DESCRIBE_EVERY
        {
            self.described_at = Instant::now();
            tracing::debug!(state = %self.replica.describe(), "replica");
        }
        let view = self.replica.view();
        if view.0 > self.last_view {
            self.metrics.view_changes.inc_by(view.0 - self.last_view);
            tracing::info!(
                view = view.0,
                primary = self.replica.primary(view).0,
                "view change"
            );
            self.last_view = view.0;
        }
        self.metrics
            .view
            .set(i64::try_from(view.0).unwrap_or(i64::MAX));
        self.metrics
            .mempool
            .set(i64::try_from(self.replica.mempool_len()).unwrap_or(i64::MAX));
        let stable = self.replica.stable_checkpoint().sequence.0;
        if stable > self.certified {
            self.store_certificate();
        }
        self.metrics
            .stable_checkpoint
            .set(i64::try_from(stable).unwrap_or(i64::MAX));
        let executed = self.replica.last_executed().0;
        if executed > self.progress.0 {
            self.progress = (executed, Instant::now());
        }
        self.metrics
            .sync_lag
            .set(i64::try_from(self.lag()).unwrap_or(i64::MAX));
        let status = Status {
            view: view.0,
            primary: self.replica.primary(view).0,
            last_finalized: self.replica.last_executed().0,
            stable_checkpoint: stable,
            mempool: self.replica.mempool_len(),
            syncing: false,
            learning_signing_floor: self.learning_floor,
        };
        self.status.send_replace(status);
    }

    /// Keeps the certificate of each new stable checkpoint, from which the API builds
    /// transaction proofs (`GetTransactionProof`). Not part of the replica's durable
    /// state: a crash before this write only lengthens the proofs that would have used
    /// it, which then reach the next stored checkpoint.
    fn store_certificate(&mut self) {
        let stable = self.replica.stable_checkpoint();
        self.certified = stable.sequence.0;
        if stable.certificate.is_empty() {
            return;
        }
        // Kept as verifiers check it: one matching signature per member. A certificate
        // adopted from a NewView may carry extras (a repeated signer, another
        // sequence's checkpoint) that the replica's count ignores but a strict
        // verifier refuses (found by the attack review of certified sync).
        let certificate = weft_consensus::proof::distinct_certificate(
            &self.committee,
            stable.sequence,
            &stable.state_digest,
            &stable.certificate,
        );
        let mut batch = weft_dag::store::StoreBatch::new();
        batch.put_replica_state(
            &crate::api::certificate_key(stable.sequence),
            &weft_consensus::proof::encode_certificate(
                stable.sequence,
                &stable.state_digest,
                &certificate,
            ),
        );
        let store = self.store.clone();
        if let Err(error) = tokio::task::block_in_place(|| store.write(batch)) {
            tracing::warn!(%error, sequence = stable.sequence.0, "could not store a checkpoint certificate");
        }
    }

    fn must_resync(&self) -> bool {
        self.lag() > self.resync_lag && self.progress.1.elapsed() > RESYNC_AFTER
    }

    fn fetch(&self, from: ValidatorIndex, hashes: Vec<weft_crypto::Digest>) {
        let network = self.network.clone();
        let committee = self.committee.clone();
        let limits = self.limits;
        let sender = self.verified_tx.clone();
        tokio::spawn(async move {
            let request = Request::Vertices {
                hashes: hashes.iter().map(|h| *h.as_bytes()).collect(),
            };
            let Ok(Response::Vertices(encoded)) = network.request(from.0, request).await else {
                return;
            };
            let vertices = tokio::task::spawn_blocking(move || {
                encoded
                    .iter()
                    .filter_map(|bytes| SignedVertex::from_wire(bytes, &limits).ok())
                    .filter(|v| v.verify_signature(&committee).is_ok())
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            if !vertices.is_empty() {
                // The engine may be stopping.
                let _ = sender.send(Input::Fetched { from, vertices }).await;
            }
        });
    }

    fn on_finalized(&mut self, entry: FinalizedEntry) {
        let now = Instant::now();
        for transaction in &entry.transactions {
            if let Some(at) = self.accepted_at.remove(&transaction.id) {
                self.metrics
                    .transaction_finality
                    .observe(now.duration_since(at).as_secs_f64());
            }
        }
        let now_ms = now_ms();
        // The vertices were just ordered, so the replica still holds them.
        for vertex in self.replica.vertices(&entry.vertices) {
            let created = vertex.vertex().created_at.0;
            let seconds = now_ms.saturating_sub(created) as f64 / 1000.0;
            self.metrics.vertex_finality.observe(seconds);
        }
        self.metrics
            .finalized_sequence
            .set(i64::try_from(entry.sequence.0).unwrap_or(i64::MAX));
        self.metrics
            .finalized_transactions
            .inc_by(entry.transactions.len() as u64);
        self.metrics
            .finalized_vertices
            .inc_by(entry.vertices.len() as u64);
        // A client told "finalized at s" (woken by the broadcast below) may next ask
        // for the node's status: its tip must already cover s, not wait for the end
        // of this engine step.
        let sequence = entry.sequence.0;
        self.status.send_if_modified(|status| {
            let behind = status.last_finalized < sequence;
            if behind {
                status.last_finalized = sequence;
            }
            behind
        });
        // No subscriber is fine.
        let _ = self.finalized.send(Arc::new(entry));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Decodes and verifies messages on worker threads; what passes goes to the replica.
fn spawn_verifiers(
    raw: std::sync::mpsc::Receiver<(u16, Vec<u8>)>,
    verified: mpsc::Sender<Verified>,
    committee: Committee,
    limits: Limits,
    metrics: NodeMetrics,
) {
    let raw = Arc::new(std::sync::Mutex::new(raw));
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(1);
    for worker in 0..workers {
        let raw = raw.clone();
        let verified = verified.clone();
        let committee = committee.clone();
        let metrics = metrics.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("weft-verify-{worker}"))
            .spawn(move || loop {
                let next = raw.lock().map(|r| r.recv());
                let Ok(Ok((from, bytes))) = next else {
                    return;
                };
                let message = match Message::from_wire(&bytes, &limits) {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::debug!(from, %error, "undecodable message");
                        metrics
                            .invalid_messages
                            .with_label_values(&["decode"])
                            .inc();
                        continue;
                    }
                };
                if let Err(error) = message.verify(&committee) {
                    tracing::debug!(from, %error, kind = message.kind(), "bad signature");
                    metrics
                        .invalid_messages
                        .with_label_values(&["signature"])
                        .inc();
                    continue;
                }
                let input = Input::Message {
                    from: ValidatorIndex(from),
                    message,
                };
                if verified.blocking_send(input).is_err() {
                    return;
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start a verifier thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer is `Accepted` only if the replica holds the transaction after the step:
    /// one that expired while queued is answered `Expired`, one refused for room `Full`;
    /// other answers are left alone.
    #[test]
    fn only_what_the_replica_holds_is_acknowledged() {
        let tx = |payload: &[u8], expires_at: u64| {
            let t = Transaction::new(payload.to_vec(), TimestampMs(expires_at));
            (t.id(), t.expires_at())
        };
        let ids = [
            tx(b"held", 2_000),
            tx(b"expired in the queue", 999),
            tx(b"no room", 2_000),
            tx(b"duplicate", 999),
        ];
        let mut answers = [
            Admission::Accepted,
            Admission::Accepted,
            Admission::Accepted,
            Admission::Duplicate,
        ];
        let held = ids[0].0;
        let refused = settle(&mut answers, &ids, |id| *id == held, 1_000);
        assert_eq!(
            answers,
            [
                Admission::Accepted,
                Admission::Expired,
                Admission::Full,
                Admission::Duplicate
            ]
        );
        assert_eq!(refused, vec![ids[1].0, ids[2].0]);
    }
}
