//! The `weft.v1.Ledger` gRPC service.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use weft_crypto::Digest;
use weft_dag::store::Store;
use weft_dag::{FinalizedEntry, Limits, Sequence, TimestampMs, Transaction, TxId, MAX_TTL_MS};
use weft_network::Network;
use weft_proto::rpc::Reason;
use weft_proto::v1;
use weft_proto::v1::ledger_server::Ledger;

use crate::config::CheckedGenesis;
use crate::engine::{Admission, EngineHandle};
use crate::metrics::NodeMetrics;

/// Most entries one `ListFinalized` returns.
pub const LIST_LIMIT: u32 = 1_000;
/// Most entries one `ListFinalized` returns when it carries transaction ids (an entry
/// may hold tens of thousands of them; this keeps a response within gRPC's 4 MiB default).
pub const LIST_LIMIT_WITH_IDS: u32 = 100;
/// Most streamed submissions handed to the engine as one batch.
const SUBMIT_BATCH: usize = 512;
/// Where the engine keeps each stable checkpoint's certificate for proofs:
/// `certificate/` then the sequence as 8 big-endian bytes, so keys sort by sequence.
pub fn certificate_key(sequence: Sequence) -> Vec<u8> {
    let mut key = CERTIFICATE_PREFIX.to_vec();
    key.extend_from_slice(&sequence.0.to_be_bytes());
    key
}

pub(crate) const CERTIFICATE_PREFIX: &[u8] = b"certificate/";

/// The expiry filled in when a request leaves `expires_at_ms` at 0: the validator's
/// clock plus this.
pub const DEFAULT_TTL_MS: u64 = 120_000;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
/// Entries a subscriber may fall behind before it is closed.
pub const SUBSCRIBER_BUFFER: usize = 1_024;
/// How long `SubmitTransactionAndWait` and `WaitForTransaction` wait when asked for 0.
pub const DEFAULT_WAIT_MS: u64 = 30_000;
/// The longest wait they allow.
pub const MAX_WAIT_MS: u64 = 120_000;
/// Clients that may wait on finality at once; beyond, RESOURCE_EXHAUSTED.
pub const MAX_WAITERS: usize = 10_000;

/// The service state.
#[derive(Debug, Clone)]
pub struct LedgerService {
    /// This validator.
    pub index: u16,
    /// The engine.
    pub engine: EngineHandle,
    /// The node's store (reads only).
    pub store: Arc<dyn Store>,
    /// The network (connected peers).
    pub network: Network,
    /// The validator set.
    pub genesis: CheckedGenesis,
    /// Limits on transactions.
    pub limits: Limits,
    /// Metrics.
    pub metrics: NodeMetrics,
    /// Becomes true when the node stops: open streams end so the server can drain.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Room for clients waiting on finality (`MAX_WAITERS` permits).
    pub waiters: Arc<tokio::sync::Semaphore>,
}

/// How long a client should wait before retrying a full mempool.
const RETRY_FULL: std::time::Duration = std::time::Duration::from_millis(500);
/// How long a client should wait before retrying a syncing or busy validator.
const RETRY_LATER: std::time::Duration = std::time::Duration::from_secs(1);

/// A refusal with its `google.rpc.ErrorInfo` (and `RetryInfo` when `retry` is set).
fn refuse(
    code: tonic::Code,
    reason: Reason,
    message: impl Into<String>,
    metadata: &[(&str, String)],
    retry: Option<std::time::Duration>,
) -> Status {
    weft_proto::rpc::status(code, reason, message, metadata, retry)
}

fn internal_error(message: String) -> Status {
    refuse(tonic::Code::Internal, Reason::Internal, message, &[], None)
}

fn tx_meta(id: &TxId) -> [(&'static str, String); 1] {
    [("tx_id", id.0.to_hex())]
}

fn shutting_down() -> Status {
    refuse(
        tonic::Code::Unavailable,
        Reason::ShuttingDown,
        "the validator is shutting down; use another",
        &[],
        Some(RETRY_LATER),
    )
}

/// Resolves once `shutdown` says stop (or its sender is gone).
async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn digest(bytes: &[u8], what: &str) -> Result<Digest, Status> {
    Digest::from_slice(bytes).map_err(|_| {
        refuse(
            tonic::Code::InvalidArgument,
            Reason::MalformedDigest,
            format!("{what} must be 32 bytes, got {}", bytes.len()),
            &[("field", what.to_string())],
            None,
        )
    })
}

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "store read failed");
    internal_error(format!("store: {error}"))
}

fn entry_to_proto(entry: &FinalizedEntry, with_ids: bool) -> v1::FinalizedEntry {
    v1::FinalizedEntry {
        sequence: entry.sequence.0,
        anchor: entry
            .anchor
            .map(|a| a.as_bytes().to_vec())
            .unwrap_or_default(),
        vertex_hashes: entry
            .vertices
            .iter()
            .map(|h| h.as_bytes().to_vec())
            .collect(),
        state_digest: entry.state_digest.as_bytes().to_vec(),
        finalized_unix_ms: entry.finalized_unix_ms,
        consensus_time_ms: entry.consensus_time.0,
        transaction_ids: if with_ids {
            entry
                .transactions
                .iter()
                .map(|t| t.id.0.as_bytes().to_vec())
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn wait_limit(timeout_ms: u64) -> u64 {
    if timeout_ms == 0 {
        DEFAULT_WAIT_MS
    } else {
        timeout_ms.min(MAX_WAIT_MS)
    }
}

/// When a wait of `timeout_ms` (0: the default) that starts now ends.
fn wait_deadline(timeout_ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_millis(wait_limit(timeout_ms))
}

/// How often a wait for a proof looks for a new stable checkpoint.
const PROOF_POLL: std::time::Duration = std::time::Duration::from_millis(25);

fn fell_behind(resume_from: u64) -> Status {
    refuse(
        tonic::Code::ResourceExhausted,
        Reason::SubscriberLagged,
        format!("subscriber fell behind; resume from sequence {resume_from}"),
        &[("resume_from", resume_from.to_string())],
        Some(std::time::Duration::ZERO),
    )
}

impl LedgerService {
    fn check_payload(&self, payload: &[u8]) -> Result<(), Status> {
        if payload.is_empty() {
            return Err(refuse(
                tonic::Code::InvalidArgument,
                Reason::EmptyPayload,
                "empty payload",
                &[],
                None,
            ));
        }
        if payload.len() > self.limits.max_transaction_bytes {
            return Err(refuse(
                tonic::Code::InvalidArgument,
                Reason::PayloadTooLarge,
                format!(
                    "payload of {} bytes exceeds the limit of {}",
                    payload.len(),
                    self.limits.max_transaction_bytes
                ),
                &[(
                    "max_transaction_bytes",
                    self.limits.max_transaction_bytes.to_string(),
                )],
                None,
            ));
        }
        Ok(())
    }

    /// The expiry a request asks for, or the default; refused when already passed or
    /// further ahead of our clock than the dedup window.
    fn expiry(&self, requested_ms: u64) -> Result<TimestampMs, Status> {
        let now = unix_ms();
        if requested_ms == 0 {
            return Ok(TimestampMs(now.saturating_add(DEFAULT_TTL_MS)));
        }
        if requested_ms < now {
            return Err(refuse(
                tonic::Code::FailedPrecondition,
                Reason::Expired,
                format!(
                    "the transaction expired at {requested_ms} ms; this validator's clock reads {now} ms"
                ),
                &[("now_ms", now.to_string())],
                None,
            ));
        }
        if requested_ms > now.saturating_add(MAX_TTL_MS) {
            return Err(refuse(
                tonic::Code::InvalidArgument,
                Reason::ExpiryTooFar,
                format!(
                    "expires_at_ms {requested_ms} is more than {MAX_TTL_MS} ms ahead of this validator's clock ({now} ms)"
                ),
                &[("now_ms", now.to_string()), ("max_ttl_ms", MAX_TTL_MS.to_string())],
                None,
            ));
        }
        Ok(TimestampMs(requested_ms))
    }

    fn outcome(&self, admission: Admission) -> Result<(), Status> {
        let label = match admission {
            Admission::Accepted => "accepted",
            Admission::Duplicate => "duplicate",
            Admission::Full => "mempool_full",
            Admission::Expired => "expired",
        };
        self.metrics.submitted.with_label_values(&[label]).inc();
        match admission {
            Admission::Accepted => Ok(()),
            Admission::Duplicate => Err(refuse(
                tonic::Code::AlreadyExists,
                Reason::AlreadySubmitted,
                "this transaction (payload and expiry) is already pending or finalized",
                &[],
                None,
            )),
            Admission::Full => Err(refuse(
                tonic::Code::ResourceExhausted,
                Reason::MempoolFull,
                "the mempool is full; retry later",
                &[],
                Some(RETRY_FULL),
            )),
            Admission::Expired => Err(refuse(
                tonic::Code::FailedPrecondition,
                Reason::Expired,
                "the transaction expired while it waited to be admitted; submit it with a later expires_at_ms",
                &[],
                None,
            )),
        }
    }

    /// Submissions wait until the node has synced and its engine runs.
    fn ready(&self) -> Result<(), Status> {
        if self.engine.status.borrow().syncing {
            self.metrics.submitted.with_label_values(&["syncing"]).inc();
            return Err(refuse(
                tonic::Code::Unavailable,
                Reason::Syncing,
                "the validator is syncing the finalized log; retry shortly or use another validator",
                &[],
                Some(RETRY_LATER),
            ));
        }
        Ok(())
    }

    async fn submit_one(
        &self,
        payload: Vec<u8>,
        expires_at_ms: u64,
    ) -> Result<(TxId, TimestampMs), Status> {
        self.ready()?;
        if let Err(status) = self.check_payload(&payload) {
            self.metrics.submitted.with_label_values(&["invalid"]).inc();
            return Err(status);
        }
        let expires_at = match self.expiry(expires_at_ms) {
            Ok(expires_at) => expires_at,
            Err(status) => {
                self.metrics.submitted.with_label_values(&["expiry"]).inc();
                return Err(status);
            }
        };
        let transaction = Transaction::new(payload, expires_at);
        let id = transaction.id();
        let answers = self
            .engine
            .submit(vec![transaction])
            .await
            .ok_or_else(shutting_down)?;
        let admission = answers.first().copied().unwrap_or(Admission::Full);
        self.outcome(admission).map(|()| (id, expires_at))
    }

    /// The transaction a submission describes (its id and expiry), as `submit_one`
    /// would admit it, without admitting it.
    fn describe(&self, payload: &[u8], expires_at_ms: u64) -> Result<(TxId, TimestampMs), Status> {
        let expires_at = self.expiry(expires_at_ms)?;
        Ok((
            Transaction::new(payload.to_vec(), expires_at).id(),
            expires_at,
        ))
    }
}

impl LedgerService {
    /// Where `id` was finalized here, if it was.
    fn finalized_answer(&self, id: &TxId) -> Result<Option<v1::GetTransactionResponse>, Status> {
        let Some(location) = self.store.transaction(id).map_err(internal)? else {
            return Ok(None);
        };
        let finalized_unix_ms = self
            .store
            .finalized(location.sequence)
            .map_err(internal)?
            .map_or(0, |e| e.finalized_unix_ms);
        Ok(Some(v1::GetTransactionResponse {
            tx_id: id.0.as_bytes().to_vec(),
            status: v1::TransactionStatus::Finalized as i32,
            sequence: location.sequence.0,
            vertex_hash: location.vertex.as_bytes().to_vec(),
            position: location.position,
            finalized_unix_ms,
            ..Default::default()
        }))
    }

    /// Waits until `id` is finalized here, at most `timeout_ms` (see `wait_limit`). With
    /// its expiry known, answers FAILED_PRECONDITION as soon as an entry of a later
    /// consensus time is finalized without it: it never will be (§4 of the protocol).
    async fn wait_final(
        &self,
        id: TxId,
        expires_at: Option<TimestampMs>,
        timeout_ms: u64,
    ) -> Result<v1::GetTransactionResponse, Status> {
        let limit = wait_limit(timeout_ms);
        let Ok(_permit) = self.waiters.clone().try_acquire_owned() else {
            return Err(refuse(
                tonic::Code::ResourceExhausted,
                Reason::TooManyWaiters,
                format!(
                    "{MAX_WAITERS} clients already wait on finality here; poll GetTransaction for {} or retry later",
                    id.0.to_hex()
                ),
                &tx_meta(&id),
                Some(RETRY_LATER),
            ));
        };
        // Subscribe before looking, so nothing finalized in between is missed.
        let mut live = self.engine.finalized.subscribe();
        if let Some(answer) = self.finalized_answer(&id)? {
            return Ok(answer);
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(limit);
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                () = tokio::time::sleep_until(deadline) => {
                    let pending = self.engine.is_pending(id).await;
                    let status = if pending { "PENDING" } else { "unknown here" };
                    let mut metadata = tx_meta(&id).to_vec();
                    metadata.push(("status", if pending { "PENDING" } else { "UNKNOWN" }.to_string()));
                    return Err(refuse(
                        tonic::Code::DeadlineExceeded,
                        Reason::NotFinalizedYet,
                        format!(
                            "transaction {} not finalized after {limit} ms; status: {status}",
                            id.0.to_hex()
                        ),
                        &metadata,
                        None,
                    ));
                }
                () = stopped(self.shutdown.clone()) => return Err(shutting_down()),
            };
            let (look, passed) = match next {
                Ok(entry) => {
                    let passed = expires_at.is_some_and(|e| entry.consensus_time > e);
                    (
                        passed || entry.transactions.iter().any(|t| t.id == id),
                        passed,
                    )
                }
                // Lagged: whatever we missed is in the store.
                Err(broadcast::error::RecvError::Lagged(_)) => (true, false),
                Err(broadcast::error::RecvError::Closed) => return Err(shutting_down()),
            };
            if !look {
                continue;
            }
            if let Some(answer) = self.finalized_answer(&id)? {
                return Ok(answer);
            }
            if passed {
                return Err(refuse(
                    tonic::Code::FailedPrecondition,
                    Reason::ExpiredUnfinalized,
                    format!(
                        "transaction {} expired unfinalized: consensus time passed its expiry ({} ms); status: EXPIRED",
                        id.0.to_hex(),
                        expires_at.map_or(0, |e| e.0)
                    ),
                    &tx_meta(&id),
                    None,
                ));
            }
        }
    }

    /// With `wanted`, waits until `deadline` for a stable checkpoint to cover the final
    /// transaction `id` and adds its proof to `answer`; past the deadline the answer
    /// goes out without one (GetTransactionProof gives it later).
    async fn with_proof(
        &self,
        mut answer: v1::GetTransactionResponse,
        id: TxId,
        wanted: bool,
        deadline: tokio::time::Instant,
    ) -> Result<v1::GetTransactionResponse, Status> {
        if !wanted {
            return Ok(answer);
        }
        loop {
            let store = self.store.clone();
            let built = tokio::task::spawn_blocking(move || transaction_proof(store.as_ref(), id))
                .await
                .map_err(|e| internal_error(format!("proof task: {e}")))?;
            match built {
                Ok(proof) => {
                    answer.proof = proof.proof;
                    answer.checkpoint_sequence = proof.checkpoint_sequence;
                    return Ok(answer);
                }
                // No stable checkpoint covers it yet.
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    if tokio::time::Instant::now() + PROOF_POLL >= deadline {
                        return Ok(answer);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(PROOF_POLL) => {}
                        () = stopped(self.shutdown.clone()) => return Err(shutting_down()),
                    }
                }
                Err(status) => return Err(status),
            }
        }
    }

    /// The streamed submit: every payload gets an answer, in order.
    async fn submit_many(
        &self,
        requests: Vec<v1::SubmitTransactionRequest>,
    ) -> Vec<v1::SubmitTransactionsResponse> {
        let mut answers: Vec<Option<Result<(), Status>>> = Vec::with_capacity(requests.len());
        let mut ids = Vec::with_capacity(requests.len());
        let mut valid = Vec::new();
        for request in requests {
            let expiry = self.expiry(request.expires_at_ms);
            let expires_at = expiry
                .as_ref()
                .map_or(TimestampMs(request.expires_at_ms), |e| *e);
            let transaction = Transaction::new(request.payload, expires_at);
            ids.push((transaction.id(), expires_at));
            match self
                .ready()
                .and_then(|()| self.check_payload(transaction.payload()))
                .and_then(|()| {
                    expiry.map(|_| ()).inspect_err(|_| {
                        self.metrics.submitted.with_label_values(&["expiry"]).inc();
                    })
                }) {
                Ok(()) => {
                    answers.push(None);
                    valid.push(transaction);
                }
                Err(status) => {
                    if status.code() == tonic::Code::InvalidArgument {
                        self.metrics.submitted.with_label_values(&["invalid"]).inc();
                    }
                    answers.push(Some(Err(status)));
                }
            }
        }
        let admissions = if valid.is_empty() {
            Some(Vec::new())
        } else {
            self.engine.submit(valid).await
        };
        let mut admissions = admissions.map(Vec::into_iter);
        ids.into_iter()
            .zip(answers)
            .map(|((id, expires_at), answer)| {
                let result = answer.unwrap_or_else(|| match admissions.as_mut() {
                    Some(admissions) => self.outcome(admissions.next().unwrap_or(Admission::Full)),
                    None => Err(shutting_down()),
                });
                let (code, message, details) = match result {
                    Ok(()) => (tonic::Code::Ok, String::new(), Default::default()),
                    Err(status) => (
                        status.code(),
                        status.message().to_owned(),
                        weft_proto::rpc::details(&status),
                    ),
                };
                v1::SubmitTransactionsResponse {
                    tx_id: id.0.as_bytes().to_vec(),
                    code: code as i32,
                    message,
                    expires_at_ms: expires_at.0,
                    reason: details.reason.unwrap_or_default(),
                    retry_after_ms: details
                        .retry_delay
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                }
            })
            .collect()
    }
}

type EntrySender = mpsc::Sender<Result<v1::FinalizedEntry, Status>>;

/// Sends without ever taking the channel's last slot, which stays free for the error
/// that ends the stream. False if the subscriber is gone.
async fn send_keeping_a_slot(sender: &EntrySender, entry: v1::FinalizedEntry) -> bool {
    match sender.reserve_many(2).await {
        Ok(mut permits) => {
            if let Some(permit) = permits.next() {
                permit.send(Ok(entry));
            }
            true
        }
        Err(_) => false,
    }
}

/// Feeds one `SubscribeFinalized` stream: replays the store from `next`, then follows
/// `live`. Replay waits for the client; live entries do not: a subscriber whose buffer
/// is full (one slot short, kept for this) or who lagged the broadcast is told
/// RESOURCE_EXHAUSTED with the sequence to resume from, and the stream ends.
async fn pump_subscription(
    store: Arc<dyn Store>,
    mut live: broadcast::Receiver<Arc<FinalizedEntry>>,
    sender: EntrySender,
    mut next: u64,
    with_ids: bool,
) {
    loop {
        let replay = match store.finalized_range(Sequence(next), 256) {
            Ok(entries) => entries,
            Err(error) => {
                let _ = sender.send(Err(internal(error))).await;
                return;
            }
        };
        if replay.is_empty() {
            break;
        }
        for entry in replay {
            next = entry.sequence.0 + 1;
            if !send_keeping_a_slot(&sender, entry_to_proto(&entry, with_ids)).await {
                return;
            }
        }
    }
    loop {
        let entry = match live.recv().await {
            Ok(entry) => entry,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let _ = sender.try_send(Err(fell_behind(next)));
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if entry.sequence.0 < next {
            continue;
        }
        // Finalized between the replay and the subscription's first entry: from the store.
        if entry.sequence.0 > next {
            let gap = usize::try_from(entry.sequence.0 - next).unwrap_or(usize::MAX);
            match store.finalized_range(Sequence(next), gap) {
                Ok(missed) => {
                    for missed in missed {
                        next = missed.sequence.0 + 1;
                        if !send_keeping_a_slot(&sender, entry_to_proto(&missed, with_ids)).await {
                            return;
                        }
                    }
                }
                Err(error) => {
                    let _ = sender.try_send(Err(internal(error)));
                    return;
                }
            }
        }
        if next != entry.sequence.0 || sender.capacity() <= 1 {
            let _ = sender.try_send(Err(fell_behind(next)));
            return;
        }
        if sender
            .try_send(Ok(entry_to_proto(&entry, with_ids)))
            .is_err()
        {
            return;
        }
        next = entry.sequence.0 + 1;
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Ledger for LedgerService {
    async fn submit_transaction(
        &self,
        request: Request<v1::SubmitTransactionRequest>,
    ) -> Result<Response<v1::SubmitTransactionResponse>, Status> {
        let request = request.into_inner();
        let (id, expires_at) = self
            .submit_one(request.payload, request.expires_at_ms)
            .await?;
        Ok(Response::new(v1::SubmitTransactionResponse {
            tx_id: id.0.as_bytes().to_vec(),
            expires_at_ms: expires_at.0,
        }))
    }

    type SubmitTransactionsStream = BoxStream<v1::SubmitTransactionsResponse>;

    async fn submit_transactions(
        &self,
        request: Request<Streaming<v1::SubmitTransactionRequest>>,
    ) -> Result<Response<Self::SubmitTransactionsStream>, Status> {
        let mut inbound = request.into_inner();
        let (answers, receiver) = mpsc::channel(1024);
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    next = inbound.next() => match next {
                        Some(first) => first,
                        None => return,
                    },
                    () = stopped(service.shutdown.clone()) => {
                        let _ = answers.send(Err(shutting_down())).await;
                        return;
                    }
                };
                // Whatever else has already arrived joins this batch: one engine round
                // trip for many transactions, answers still one per request, in order.
                let mut batch = vec![first];
                while batch.len() < SUBMIT_BATCH {
                    match futures::FutureExt::now_or_never(inbound.next()) {
                        Some(Some(next)) => batch.push(next),
                        _ => break,
                    }
                }
                let mut requests = Vec::with_capacity(batch.len());
                let mut broken = false;
                for next in batch {
                    match next {
                        Ok(request) => requests.push(request),
                        Err(_) => {
                            broken = true;
                            break;
                        }
                    }
                }
                for answer in service.submit_many(requests).await {
                    if answers.send(Ok(answer)).await.is_err() {
                        return;
                    }
                }
                if broken {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_transaction(
        &self,
        request: Request<v1::GetTransactionRequest>,
    ) -> Result<Response<v1::GetTransactionResponse>, Status> {
        let id = TxId(digest(&request.into_inner().tx_id, "tx_id")?);
        if let Some(answer) = self.finalized_answer(&id)? {
            return Ok(Response::new(answer));
        }
        if self.engine.status.borrow().syncing {
            return Err(refuse(
                tonic::Code::Unavailable,
                Reason::Syncing,
                "not finalized here yet, and this validator is syncing: its mempool is not readable; retry shortly",
                &tx_meta(&id),
                Some(RETRY_LATER),
            ));
        }
        if self.engine.is_pending(id).await {
            return Ok(Response::new(v1::GetTransactionResponse {
                tx_id: id.0.as_bytes().to_vec(),
                status: v1::TransactionStatus::Pending as i32,
                ..Default::default()
            }));
        }
        Err(refuse(
            tonic::Code::NotFound,
            Reason::TransactionNotFound,
            "no such transaction here",
            &tx_meta(&id),
            None,
        ))
    }

    async fn get_vertex(
        &self,
        request: Request<v1::GetVertexRequest>,
    ) -> Result<Response<v1::GetVertexResponse>, Status> {
        let hash = digest(&request.into_inner().hash, "hash")?;
        let vertex = self.store.vertex(&hash).map_err(internal)?.ok_or_else(|| {
            refuse(
                tonic::Code::NotFound,
                Reason::VertexNotFound,
                "no such vertex here",
                &[("hash", hash.to_hex())],
                None,
            )
        })?;
        let body = vertex.vertex();
        Ok(Response::new(v1::GetVertexResponse {
            hash: hash.as_bytes().to_vec(),
            author: u32::from(body.author.0),
            round: body.round.0,
            parents: body
                .parents
                .iter()
                .map(|p| p.hash.as_bytes().to_vec())
                .collect(),
            transactions: body
                .transactions
                .iter()
                .map(|t| t.payload().to_vec())
                .collect(),
            encoded: vertex.encoded().to_vec(),
            signature: vertex.signature().as_bytes().to_vec(),
            transaction_expires_at_ms: body.transactions.iter().map(|t| t.expires_at().0).collect(),
        }))
    }

    async fn list_finalized(
        &self,
        request: Request<v1::ListFinalizedRequest>,
    ) -> Result<Response<v1::ListFinalizedResponse>, Status> {
        let request = request.into_inner();
        let from = request.from_sequence.max(1);
        let tip = self
            .store
            .log_head()
            .map_err(internal)?
            .map_or(0, |h| h.sequence.0);
        if from > tip {
            return Err(refuse(
                tonic::Code::OutOfRange,
                Reason::PastTip,
                format!("from_sequence {from} is past the tip {tip}"),
                &[("tip", tip.to_string())],
                None,
            ));
        }
        let cap = if request.include_transaction_ids {
            LIST_LIMIT_WITH_IDS
        } else {
            LIST_LIMIT
        };
        let limit = match request.limit {
            0 => cap,
            n => n.min(cap),
        };
        let entries = self
            .store
            .finalized_range(Sequence(from), limit as usize)
            .map_err(internal)?;
        Ok(Response::new(v1::ListFinalizedResponse {
            entries: entries
                .iter()
                .map(|e| entry_to_proto(e, request.include_transaction_ids))
                .collect(),
        }))
    }

    async fn submit_transaction_and_wait(
        &self,
        request: Request<v1::SubmitTransactionAndWaitRequest>,
    ) -> Result<Response<v1::GetTransactionResponse>, Status> {
        let request = request.into_inner();
        let deadline = wait_deadline(request.timeout_ms);
        let (id, expires_at) = match self
            .submit_one(request.payload.clone(), request.expires_at_ms)
            .await
        {
            Ok(admitted) => admitted,
            // Already pending or finalized: the same transaction, so wait for it.
            Err(status) if status.code() == tonic::Code::AlreadyExists => {
                self.describe(&request.payload, request.expires_at_ms)?
            }
            Err(status) => return Err(status),
        };
        let answer = self
            .wait_final(id, Some(expires_at), request.timeout_ms)
            .await?;
        self.with_proof(answer, id, request.with_proof, deadline)
            .await
            .map(Response::new)
    }

    async fn get_transaction_proof(
        &self,
        request: Request<v1::GetTransactionProofRequest>,
    ) -> Result<Response<v1::GetTransactionProofResponse>, Status> {
        let id = TxId(digest(&request.into_inner().tx_id, "tx_id")?);
        let store = self.store.clone();
        let built = tokio::task::spawn_blocking(move || transaction_proof(store.as_ref(), id))
            .await
            .map_err(|e| internal_error(format!("proof task: {e}")))??;
        Ok(Response::new(built))
    }

    async fn wait_for_transaction(
        &self,
        request: Request<v1::WaitForTransactionRequest>,
    ) -> Result<Response<v1::GetTransactionResponse>, Status> {
        let request = request.into_inner();
        let deadline = wait_deadline(request.timeout_ms);
        let id = TxId(digest(&request.tx_id, "tx_id")?);
        let answer = self.wait_final(id, None, request.timeout_ms).await?;
        self.with_proof(answer, id, request.with_proof, deadline)
            .await
            .map(Response::new)
    }

    type SubscribeFinalizedStream = BoxStream<v1::FinalizedEntry>;

    async fn subscribe_finalized(
        &self,
        request: Request<v1::SubscribeFinalizedRequest>,
    ) -> Result<Response<Self::SubscribeFinalizedStream>, Status> {
        let request = request.into_inner();
        let with_ids = request.include_transaction_ids;
        // Subscribe before replaying, so nothing finalized in between is missed.
        let live = self.engine.finalized.subscribe();
        let next = if request.from_tip {
            // The tip read after subscribing: every entry above it arrives live.
            self.store
                .log_head()
                .map_err(internal)?
                .map_or(1, |head| head.sequence.0.saturating_add(1))
        } else {
            request.from_sequence.max(1)
        };
        let store = self.store.clone();
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let shutdown = self.shutdown.clone();
        let closer = sender.clone();
        let pump = pump_subscription(store, live, sender, next, with_ids);
        tokio::spawn(async move {
            tokio::select! {
                () = pump => {}
                () = stopped(shutdown) => {
                    let _ = closer.try_send(Err(shutting_down()));
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_node_status(
        &self,
        _: Request<v1::GetNodeStatusRequest>,
    ) -> Result<Response<v1::GetNodeStatusResponse>, Status> {
        let status = self.engine.status.borrow().clone();
        let connected = self.network.connected().len();
        let readiness = crate::node::readiness(
            status.syncing,
            connected,
            2 * self.genesis.committee.max_faulty(),
        );
        let tip = match status.last_finalized {
            0 => None,
            last => self.store.finalized(Sequence(last)).map_err(internal)?,
        };
        Ok(Response::new(v1::GetNodeStatusResponse {
            validator_index: u32::from(self.index),
            view: status.view,
            primary_index: u32::from(status.primary),
            last_finalized_sequence: status.last_finalized,
            last_stable_checkpoint: status.stable_checkpoint,
            connected_validators: u32::try_from(connected).unwrap_or(u32::MAX),
            mempool_transactions: status.mempool as u64,
            syncing: status.syncing,
            learning_signing_floor: status.learning_signing_floor,
            ready: readiness.is_ok(),
            not_ready_reason: readiness.err().unwrap_or_default(),
            chain_id: self.genesis.genesis.chain_id.clone(),
            version: format!(
                "{} (commit {})",
                env!("CARGO_PKG_VERSION"),
                crate::metrics::COMMIT
            ),
            last_finalized_unix_ms: tip.as_ref().map_or(0, |e| e.finalized_unix_ms),
            last_finalized_consensus_time_ms: tip.as_ref().map_or(0, |e| e.consensus_time.0),
        }))
    }

    async fn get_validators(
        &self,
        _: Request<v1::GetValidatorsRequest>,
    ) -> Result<Response<v1::GetValidatorsResponse>, Status> {
        let validators = self
            .genesis
            .genesis
            .validators
            .iter()
            .map(|v| v1::Validator {
                index: u32::from(v.index),
                public_key: hex::decode(&v.public_key).unwrap_or_default(),
                peer_id: v.peer_id.clone(),
                addresses: vec![v.p2p_address.clone()],
            })
            .collect();
        Ok(Response::new(v1::GetValidatorsResponse {
            validators,
            max_faulty: u32::try_from(self.genesis.committee.max_faulty()).unwrap_or(0),
        }))
    }
}

/// Builds the proof for `id` from the store: its entry, the entries up to the first
/// stored certificate at or above it, the digest before it and that certificate.
fn transaction_proof(
    store: &dyn Store,
    id: TxId,
) -> Result<v1::GetTransactionProofResponse, Status> {
    use weft_consensus::proof::{decode_certificate, TransactionProof, MAX_PROOF_ENTRIES};
    let Some(location) = store.transaction(&id).map_err(internal)? else {
        return Err(refuse(
            tonic::Code::NotFound,
            Reason::TransactionNotFound,
            format!(
                "transaction {} is not finalized here (GetTransaction says whether it is pending)",
                id.0.to_hex()
            ),
            &tx_meta(&id),
            None,
        ));
    };
    let sequence = location.sequence;
    let before = certificate_key(Sequence(sequence.0.saturating_sub(1)));
    let found = store
        .replica_state_with_prefix(CERTIFICATE_PREFIX, Some(&before), 1)
        .map_err(internal)?;
    let not_yet = || {
        refuse(
            tonic::Code::Unavailable,
            Reason::CheckpointPending,
            format!(
                "no stable checkpoint this validator executed covers sequence {} yet; retry in a moment",
                sequence.0
            ),
            &[("sequence", sequence.0.to_string())],
            Some(RETRY_LATER),
        )
    };
    let Some((_, value)) = found.into_iter().next() else {
        return Err(not_yet());
    };
    let (checkpoint, checkpoint_digest, certificate) = decode_certificate(&value)
        .map_err(|e| internal_error(format!("stored certificate: {e}")))?;
    let span = checkpoint.0.saturating_sub(sequence.0).saturating_add(1);
    let span = usize::try_from(span).unwrap_or(usize::MAX);
    if span > MAX_PROOF_ENTRIES {
        return Err(refuse(
            tonic::Code::FailedPrecondition,
            Reason::ProofTooLong,
            format!(
                "the first stored checkpoint above sequence {} is {} sequences later (at most {MAX_PROOF_ENTRIES} fit in a proof)",
                sequence.0, span
            ),
            &[("sequence", sequence.0.to_string())],
            None,
        ));
    }
    let mut entries = Vec::with_capacity(span);
    while entries.len() < span {
        let from = Sequence(sequence.0 + entries.len() as u64);
        let page = store
            .finalized_range(from, span - entries.len())
            .map_err(internal)?;
        if page.is_empty() {
            return Err(not_yet());
        }
        entries.extend(page);
    }
    let consecutive = entries
        .iter()
        .enumerate()
        .all(|(i, e)| e.sequence.0 == sequence.0 + i as u64);
    if !consecutive || entries.last().map(|e| e.state_digest) != Some(checkpoint_digest) {
        return Err(internal_error(format!(
            "the stored log does not lead from sequence {} to checkpoint {}",
            sequence.0, checkpoint.0
        )));
    }
    let previous = if sequence.0 <= 1 {
        weft_crypto::Digest::ZERO
    } else {
        store
            .finalized(Sequence(sequence.0 - 1))
            .map_err(internal)?
            .map(|e| e.state_digest)
            .ok_or_else(|| internal_error(format!("entry {} is missing", sequence.0 - 1)))?
    };
    let proof = TransactionProof::build(id, previous, &entries, &certificate).ok_or_else(|| {
        internal_error(format!(
            "entry {} does not list the transaction its index names",
            sequence.0
        ))
    })?;
    Ok(v1::GetTransactionProofResponse {
        proof: proof.encode(),
        sequence: sequence.0,
        checkpoint_sequence: checkpoint.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_dag::store::{MemoryStore, StoreBatch};
    use weft_dag::testing::entry_chain;

    fn store_with(entries: &[FinalizedEntry]) -> Arc<dyn Store> {
        let store = MemoryStore::new();
        for entry in entries {
            let mut batch = StoreBatch::new();
            batch.append_finalized(entry.clone());
            store.write(batch).expect("write");
        }
        Arc::new(store)
    }

    /// Lets the (single-threaded) runtime run the pump until `count` entries wait in the
    /// subscriber's buffer, i.e. until the replay is done.
    async fn until_buffered(
        receiver: &mpsc::Receiver<Result<v1::FinalizedEntry, Status>>,
        count: usize,
    ) {
        for _ in 0..10_000 {
            if receiver.len() >= count {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the replay never produced {count} entries");
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_replay_then_live_entries_in_order() {
        let (_, entries) = entry_chain(8, 1, 2);
        let store = store_with(&entries[..3]);
        let (live, subscription) = broadcast::channel(16);
        let (sender, mut receiver) = mpsc::channel(16);
        let pump = tokio::spawn(pump_subscription(
            store.clone(),
            subscription,
            sender,
            2,
            true,
        ));
        until_buffered(&receiver, 2).await;
        // Entries 4 and 5 reach the store before the broadcast is read; 5 is announced
        // first, so 4 comes from the store (the gap), then 5..8 live.
        for entry in &entries[3..5] {
            let mut batch = StoreBatch::new();
            batch.append_finalized(entry.clone());
            store.write(batch).expect("write");
        }
        for entry in &entries[4..] {
            if entry.sequence.0 > 5 {
                let mut batch = StoreBatch::new();
                batch.append_finalized(entry.clone());
                store.write(batch).expect("write");
            }
            live.send(Arc::new(entry.clone())).expect("a subscriber");
        }
        let mut got = Vec::new();
        while got.len() < 7 {
            let entry = receiver.recv().await.expect("open").expect("an entry");
            got.push(entry.sequence);
            assert_eq!(entry.transaction_ids.len(), 2, "ids were asked for");
        }
        assert_eq!(got, (2..=8).collect::<Vec<u64>>());
        drop(receiver);
        drop(live);
        pump.await.expect("pump ends");
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_told_where_to_resume() {
        let (_, entries) = entry_chain(10, 1, 1);
        let store = store_with(&entries[..2]);
        let (live, subscription) = broadcast::channel(64);
        let (sender, mut receiver) = mpsc::channel(4);
        let pump = tokio::spawn(pump_subscription(
            store.clone(),
            subscription,
            sender,
            1,
            false,
        ));
        until_buffered(&receiver, 2).await;
        for entry in &entries[2..] {
            let mut batch = StoreBatch::new();
            batch.append_finalized(entry.clone());
            store.write(batch).expect("write");
            live.send(Arc::new(entry.clone())).expect("a subscriber");
        }
        // Nobody read: the pump gives up on its own, without waiting for the client.
        tokio::time::timeout(std::time::Duration::from_secs(10), pump)
            .await
            .expect("the pump does not wait for a slow subscriber")
            .expect("pump ends");
        let mut delivered = Vec::new();
        let mut closing = None;
        while let Some(item) = receiver.recv().await {
            match item {
                Ok(entry) => delivered.push(entry.sequence),
                Err(status) => closing = Some(status),
            }
        }
        assert_eq!(
            delivered,
            vec![1, 2, 3],
            "in order, up to the buffer less one slot"
        );
        let status = closing.expect("the stream ends with a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("resume from sequence 4"),
            "{}",
            status.message()
        );
    }
}
