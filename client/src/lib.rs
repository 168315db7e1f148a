//! A client for Weft validators' gRPC API (`weft.v1.Ledger`).
//!
//! [`Client`] talks to one validator at a time out of a list and fails over to the next
//! when the current one cannot be reached or answers `UNAVAILABLE` (shutting down,
//! syncing, still learning where it may sign). Every call it retries is idempotent:
//! a submission is fixed by its payload and expiry (the transaction id covers both), so
//! the client fills the expiry itself before the first attempt and a retry on another
//! validator is the same transaction, finalized at most once.
//!
//! ```no_run
//! # async fn example() -> Result<(), weft_client::ClientError> {
//! use std::time::Duration;
//! use weft_client::{Client, ClientConfig};
//!
//! let mut client = Client::new(
//!     ["http://127.0.0.1:50051", "http://127.0.0.1:50052"],
//!     ClientConfig::default(),
//! )?;
//! let final_ = client
//!     .submit_and_wait(b"hello".to_vec(), None, Duration::from_secs(30))
//!     .await?;
//! println!("finalized at sequence {}", final_.sequence);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Status;
use weft_proto::v1::ledger_client::LedgerClient;
use weft_proto::v1::{self};

pub use tonic::Code;
pub use weft_consensus::proof::{ProofEntry, ProofError, ProvenFinality, TransactionProof};
pub use weft_crypto::Digest;
pub use weft_dag::Committee;
pub use weft_proto::v1::FinalizedEntry;

/// The expiry the client gives a submission that names none: a minute ahead of the
/// local clock (validators accept up to 300 s ahead of theirs and refuse a passed one).
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// The longest wait one request may ask of a validator (`MAX_WAIT_MS` on the server);
/// longer waits are split into several requests.
pub const MAX_WAIT_PER_REQUEST: Duration = Duration::from_secs(120);

/// A transaction id: blake3 over the expiry and the payload (see the README).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId(pub [u8; 32]);

impl TxId {
    /// The id of `payload` submitted with `expires_at_ms`.
    pub fn of(expires_at_ms: u64, payload: &[u8]) -> TxId {
        let id = weft_dag::transaction_id(weft_dag::TimestampMs(expires_at_ms), payload);
        TxId(*id.0.as_bytes())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<TxId, ClientError> {
        let bytes = hex::decode(text.trim()).map_err(|e| ClientError::InvalidTxId {
            reason: e.to_string(),
        })?;
        TxId::from_slice(&bytes)
    }

    /// An id from its 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<TxId, ClientError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| ClientError::InvalidTxId {
            reason: format!("{} bytes, not 32", bytes.len()),
        })?;
        Ok(TxId(array))
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxId({self})")
    }
}

/// Where a transaction stands at the validator asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// The validator asked neither holds it pending nor finalized it.
    Unknown,
    /// Admitted, not finalized yet.
    Pending,
    /// Finalized: the location fields are set.
    Finalized,
}

impl fmt::Display for TxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TxStatus::Unknown => "UNKNOWN",
            TxStatus::Pending => "PENDING",
            TxStatus::Finalized => "FINALIZED",
        })
    }
}

/// A transaction's status and, once finalized, where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxInfo {
    /// The transaction.
    pub tx_id: TxId,
    /// Pending or finalized.
    pub status: TxStatus,
    /// The sequence that finalized it (0 while pending).
    pub sequence: u64,
    /// The vertex that carried it (empty while pending).
    pub vertex_hash: Vec<u8>,
    /// Its index among that vertex's transactions.
    pub position: u32,
    /// When the validator finalized it (Unix ms; 0 while pending).
    pub finalized_unix_ms: u64,
    /// Its finality proof, when asked for (`*_with_proof`) and a stable checkpoint
    /// covered it within the wait; check it with [`verify_proof`].
    pub proof: Option<ProofAnswer>,
}

impl TxInfo {
    fn from_proto(response: v1::GetTransactionResponse) -> Result<TxInfo, ClientError> {
        let status = match v1::TransactionStatus::try_from(response.status) {
            Ok(v1::TransactionStatus::Pending) => TxStatus::Pending,
            Ok(v1::TransactionStatus::Finalized) => TxStatus::Finalized,
            _ => {
                return Err(ClientError::Malformed(format!(
                    "transaction status {}",
                    response.status
                )))
            }
        };
        Ok(TxInfo {
            tx_id: TxId::from_slice(&response.tx_id)
                .map_err(|e| ClientError::Malformed(e.to_string()))?,
            status,
            sequence: response.sequence,
            vertex_hash: response.vertex_hash,
            position: response.position,
            finalized_unix_ms: response.finalized_unix_ms,
            proof: if response.proof.is_empty() {
                None
            } else {
                Some(ProofAnswer {
                    sequence: response.sequence,
                    checkpoint_sequence: response.checkpoint_sequence,
                    proof: response.proof,
                })
            },
        })
    }
}

/// What a submission returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The transaction id.
    pub tx_id: TxId,
    /// The expiry it was submitted with.
    pub expires_at_ms: u64,
}

/// A proof as a validator served it (`GetTransactionProof`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofAnswer {
    /// The proof's bytes (layout `weft/proof/v1`, README).
    pub proof: Vec<u8>,
    /// The sequence that finalized the transaction.
    pub sequence: u64,
    /// The stable checkpoint whose signatures it carries.
    pub checkpoint_sequence: u64,
}

/// The validator set a proof is checked against, from `genesis.json` (its `chain_id`,
/// `epoch` and each validator's `index` and hex `public_key`; other fields are not
/// needed and not read).
pub fn committee_from_genesis(json: &str) -> Result<Committee, ClientError> {
    let bad = |reason: String| ClientError::Genesis(reason);
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let chain_id = value["chain_id"]
        .as_str()
        .ok_or_else(|| bad("no chain_id".to_string()))?;
    let chain_id = weft_dag::ChainId::new(chain_id).map_err(|e| bad(e.to_string()))?;
    let epoch = value["epoch"]
        .as_u64()
        .ok_or_else(|| bad("no epoch".to_string()))?;
    let validators = value["validators"]
        .as_array()
        .ok_or_else(|| bad("no validators".to_string()))?;
    let mut keys = Vec::with_capacity(validators.len());
    for (position, validator) in validators.iter().enumerate() {
        if validator["index"].as_u64() != Some(position as u64) {
            return Err(bad(format!(
                "validators must be listed by index from 0 (position {position})"
            )));
        }
        let key = validator["public_key"]
            .as_str()
            .ok_or_else(|| bad(format!("validator {position}: no public_key")))?;
        keys.push(
            weft_crypto::PublicKey::from_hex(key)
                .map_err(|e| bad(format!("validator {position}: {e}")))?,
        );
    }
    Committee::new(chain_id, weft_dag::Epoch(epoch), keys).map_err(|e| bad(e.to_string()))
}

/// Checks proof bytes against the validator set of a genesis file: what they prove, or
/// why not.
pub fn verify_proof(proof: &[u8], committee: &Committee) -> Result<ProvenFinality, ProofError> {
    TransactionProof::decode(proof)?.verify(committee)
}

/// What a verified proof establishes beyond its own transaction: every entry it
/// carries (each one's transactions with their vertex and position, in final order),
/// chained from `previous` to `certified_digest`, which 2f + 1 validators signed.
#[derive(Clone, Debug)]
pub struct VerifiedRange {
    /// What the proof proves about its transaction.
    pub proven: ProvenFinality,
    /// The digest before the first entry (not itself certified: it is what the entries
    /// chain from, so a client that knows the digest before them links the ranges).
    pub previous: Digest,
    /// The entries, first to the certified checkpoint's.
    pub entries: Vec<ProofEntry>,
    /// The certified state digest after the last entry.
    pub certified_digest: Digest,
}

/// Checks proof bytes like [`verify_proof`] and returns the whole verified range.
pub fn verify_proof_range(
    proof: &[u8],
    committee: &Committee,
) -> Result<VerifiedRange, ProofError> {
    let proof = TransactionProof::decode(proof)?;
    let proven = proof.verify(committee)?;
    let certified_digest = proof
        .signatures
        .first()
        .map(|signed| signed.checkpoint().state_digest)
        .ok_or(ProofError::NoEntries)?;
    Ok(VerifiedRange {
        proven,
        previous: proof.previous,
        entries: proof.entries,
        certified_digest,
    })
}

/// The state digest of a subscribed entry that finalized no transaction, chained from
/// `previous` (the rule of the README, "Verifying a transaction proof"); `None` when it
/// lists transactions (their places come only with a proof) or a hash is malformed.
/// Checking it against the entry's `state_digest` and, later, the next proof's
/// `previous` links a follower's verified ranges across entries without transactions.
pub fn chain_entry_without_transactions(
    previous: &Digest,
    entry: &FinalizedEntry,
) -> Option<Digest> {
    if !entry.transaction_ids.is_empty() {
        return None;
    }
    let anchor = if entry.anchor.is_empty() {
        None
    } else {
        Some(Digest::from_slice(&entry.anchor).ok()?)
    };
    let vertices = entry
        .vertex_hashes
        .iter()
        .map(|h| Digest::from_slice(h).ok())
        .collect::<Option<Vec<Digest>>>()?;
    Some(weft_dag::chain_digest(
        previous,
        weft_dag::Sequence(entry.sequence),
        anchor.as_ref(),
        weft_dag::TimestampMs(entry.consensus_time_ms),
        &vertices,
        &[],
    ))
}

/// A vertex as a validator serves it (`GetVertex`).
pub type VertexAnswer = v1::GetVertexResponse;

/// A validator's view of itself (`GetNodeStatus`).
pub type NodeStatus = v1::GetNodeStatusResponse;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoints, or one that is not a URI.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A transaction id that is not 32 bytes of hex.
    #[error("invalid transaction id: {reason}")]
    InvalidTxId {
        /// What is wrong with it.
        reason: String,
    },
    /// Every endpoint was tried and none answered; the last error of each.
    #[error("no validator answered: {}", describe_failures(.0))]
    Unavailable(Vec<(String, String)>),
    /// The transaction's expiry passed in consensus time before it was finalized: it
    /// never will be. Submit it again with a later expiry (another transaction id).
    #[error("transaction {tx_id} expired unfinalized")]
    Expired {
        /// The transaction.
        tx_id: TxId,
    },
    /// The wait ran out before the transaction was final.
    #[error("transaction {tx_id} is still {status} after the wait")]
    DeadlineExceeded {
        /// The transaction.
        tx_id: TxId,
        /// Its last known status.
        status: TxStatus,
    },
    /// The validator answered with an error status (not one fail-over helps with).
    #[error("{endpoint}: {code:?}: {message}")]
    Status {
        /// The validator that answered.
        endpoint: String,
        /// The gRPC code.
        code: Code,
        /// Its message.
        message: String,
        /// Its `google.rpc.ErrorInfo` and `RetryInfo` (see `weft_proto::rpc`).
        details: Box<weft_proto::rpc::Details>,
    },
    /// An answer that does not follow the API.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// A genesis file that does not give a validator set.
    #[error("genesis: {0}")]
    Genesis(String),
    /// A proof that does not hold.
    #[error("the proof does not verify: {0}")]
    Proof(#[from] ProofError),
}

fn describe_failures(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(endpoint, error)| format!("{endpoint}: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ClientError {
    /// The gRPC code a validator answered with, if it answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            ClientError::DeadlineExceeded { .. } => Some(Code::DeadlineExceeded),
            ClientError::Expired { .. } => Some(Code::FailedPrecondition),
            _ => None,
        }
    }

    /// The validator's `ErrorInfo.reason` (`weft_proto::rpc::Reason` names them), if it
    /// answered with one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Status { details, .. } => details.reason.as_deref(),
            _ => None,
        }
    }

    /// How long the validator asked to wait before retrying (`RetryInfo`), if it did.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self {
            ClientError::Status { details, .. } => details.retry_delay,
            _ => None,
        }
    }
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long to wait for a connection to one validator.
    pub connect_timeout: Duration,
    /// How long one ordinary call may take (waits get their own timeout on top).
    pub request_timeout: Duration,
    /// PEM of the CA that signed validators' TLS certificates, for `https://` endpoints.
    pub ca_certificate: Option<Vec<u8>>,
    /// Client certificate and key (PEM) for validators that require mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            ca_certificate: None,
            identity: None,
        }
    }
}

/// A connection to a set of validators, one at a time. Clones share the connection
/// (HTTP/2 multiplexes their calls) and fail over independently.
#[derive(Debug, Clone)]
pub struct Client {
    endpoints: Vec<(String, Endpoint)>,
    current: usize,
    channel: Option<LedgerClient<Channel>>,
    config: ClientConfig,
}

/// Gives up on the current validator: the error says another may do better.
fn fail_over(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

impl Client {
    /// A client for `endpoints` (`http://host:port` or `https://host:port`; a bare
    /// `host:port` means `http://`), tried in order. Connects lazily, on the first call.
    pub fn new<I, S>(endpoints: I, config: ClientConfig) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut parsed = Vec::new();
        for endpoint in endpoints {
            let text: String = endpoint.into();
            let uri = if text.contains("://") {
                text.clone()
            } else {
                format!("http://{text}")
            };
            let invalid = |reason: String| ClientError::InvalidEndpoint {
                endpoint: text.clone(),
                reason,
            };
            let mut built = Endpoint::from_shared(uri.clone())
                .map_err(|e| invalid(e.to_string()))?
                .connect_timeout(config.connect_timeout)
                .timeout(config.request_timeout);
            if uri.starts_with("https://") {
                let mut tls = ClientTlsConfig::new();
                if let Some(ca) = &config.ca_certificate {
                    tls = tls.ca_certificate(Certificate::from_pem(ca));
                }
                if let Some((cert, key)) = &config.identity {
                    tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
                }
                built = built.tls_config(tls).map_err(|e| invalid(e.to_string()))?;
            }
            parsed.push((text, built));
        }
        if parsed.is_empty() {
            return Err(ClientError::InvalidEndpoint {
                endpoint: String::new(),
                reason: "no endpoint given".to_string(),
            });
        }
        Ok(Client {
            endpoints: parsed,
            current: 0,
            channel: None,
            config,
        })
    }

    /// The endpoint calls go to now.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current].0
    }

    async fn connected(&mut self) -> Result<LedgerClient<Channel>, String> {
        if let Some(client) = &self.channel {
            return Ok(client.clone());
        }
        let endpoint = self.endpoints[self.current].1.clone();
        let channel = endpoint.connect().await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        })?;
        // Subscriptions with transaction ids and streamed answers can exceed tonic's
        // 4 MiB default; the validator bounds what it sends.
        let client = LedgerClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        self.channel = Some(client.clone());
        Ok(client)
    }

    /// Moves to the next endpoint, for a caller that found the current validator
    /// behind (an answer that is well-formed but not yet useful, like NOT_FOUND for
    /// something another validator holds).
    pub fn switch_endpoint(&mut self) {
        self.next_endpoint();
    }

    fn next_endpoint(&mut self) {
        self.channel = None;
        self.current = (self.current + 1) % self.endpoints.len();
    }

    /// Runs `call` on the current validator, failing over to each other one in turn
    /// while the answer says another may do better.
    async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(LedgerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut failures = Vec::new();
        for _ in 0..self.endpoints.len() {
            let endpoint = self.endpoint().to_string();
            match self.connected().await {
                Err(error) => failures.push((endpoint, error)),
                Ok(client) => match call(client).await {
                    Ok(answer) => return Ok(answer),
                    Err(status) if fail_over(&status) => {
                        failures.push((
                            endpoint,
                            format!("{:?}: {}", status.code(), status.message()),
                        ));
                    }
                    Err(status) => {
                        return Err(ClientError::Status {
                            endpoint,
                            code: status.code(),
                            message: status.message().to_string(),
                            details: Box::new(weft_proto::rpc::details(&status)),
                        })
                    }
                },
            }
            self.next_endpoint();
        }
        Err(ClientError::Unavailable(failures))
    }

    /// Submits `payload` (expiring at `expires_at_ms`, or [`DEFAULT_TTL`] from now).
    /// Answers once the validator admitted it (durably).
    pub async fn submit(
        &mut self,
        payload: Vec<u8>,
        expires_at_ms: Option<u64>,
    ) -> Result<Submitted, ClientError> {
        let expires_at_ms = expires_at_ms.unwrap_or_else(default_expiry);
        let tx_id = TxId::of(expires_at_ms, &payload);
        let answer = self
            .call(|mut client| {
                let request = v1::SubmitTransactionRequest {
                    payload: payload.clone(),
                    expires_at_ms,
                };
                async move { client.submit_transaction(request).await }
            })
            .await;
        match answer {
            Ok(response) => {
                let response = response.into_inner();
                let answered = TxId::from_slice(&response.tx_id)
                    .map_err(|e| ClientError::Malformed(e.to_string()))?;
                if answered != tx_id {
                    return Err(ClientError::Malformed(format!(
                        "the validator named the transaction {answered}, not {tx_id}"
                    )));
                }
                Ok(Submitted {
                    tx_id,
                    expires_at_ms,
                })
            }
            // Submitted before (perhaps by an attempt whose answer was lost).
            Err(ClientError::Status {
                code: Code::AlreadyExists,
                ..
            }) => Ok(Submitted {
                tx_id,
                expires_at_ms,
            }),
            Err(error) => Err(error),
        }
    }

    /// Submits `payload` and answers once the validator asked finalized it, or
    /// [`ClientError::DeadlineExceeded`] after `timeout`. Resubmitting on another
    /// validator after a fail-over is the same transaction; while every validator is
    /// unavailable it keeps trying (backing off) until the timeout.
    pub async fn submit_and_wait(
        &mut self,
        payload: Vec<u8>,
        expires_at_ms: Option<u64>,
        timeout: Duration,
    ) -> Result<TxInfo, ClientError> {
        self.submit_and_wait_inner(payload, expires_at_ms, timeout, false)
            .await
    }

    /// [`Client::submit_and_wait`], and within the same `timeout` the finality proof
    /// ([`TxInfo::proof`]; `None` when no stable checkpoint covered the transaction in
    /// time: [`Client::proof`] gets it later).
    pub async fn submit_and_wait_with_proof(
        &mut self,
        payload: Vec<u8>,
        expires_at_ms: Option<u64>,
        timeout: Duration,
    ) -> Result<TxInfo, ClientError> {
        self.submit_and_wait_inner(payload, expires_at_ms, timeout, true)
            .await
    }

    async fn submit_and_wait_inner(
        &mut self,
        payload: Vec<u8>,
        expires_at_ms: Option<u64>,
        timeout: Duration,
        with_proof: bool,
    ) -> Result<TxInfo, ClientError> {
        let expires_at_ms = expires_at_ms.unwrap_or_else(default_expiry);
        let tx_id = TxId::of(expires_at_ms, &payload);
        self.wait_until(tx_id, timeout, |mut client, timeout_ms| {
            let request = v1::SubmitTransactionAndWaitRequest {
                payload: payload.clone(),
                expires_at_ms,
                timeout_ms,
                with_proof,
            };
            async move { client.submit_transaction_and_wait(request).await }
        })
        .await
    }

    /// Waits until `tx_id` is final at the validator asked, or
    /// [`ClientError::DeadlineExceeded`] after `timeout`.
    pub async fn wait(&mut self, tx_id: TxId, timeout: Duration) -> Result<TxInfo, ClientError> {
        self.wait_until(tx_id, timeout, |mut client, timeout_ms| {
            let request = v1::WaitForTransactionRequest {
                tx_id: tx_id.0.to_vec(),
                timeout_ms,
                with_proof: false,
            };
            async move { client.wait_for_transaction(request).await }
        })
        .await
    }

    /// Repeats a waiting call (each at most [`MAX_WAIT_PER_REQUEST`]) until it answers,
    /// `timeout` passes (DEADLINE_EXCEEDED with the last status heard) or an error other
    /// than a timeout or every validator being unavailable (then it backs off) comes.
    async fn wait_until<F, Fut>(
        &mut self,
        tx_id: TxId,
        timeout: Duration,
        mut call: F,
    ) -> Result<TxInfo, ClientError>
    where
        F: FnMut(LedgerClient<Channel>, u64) -> Fut,
        Fut: std::future::Future<
            Output = Result<tonic::Response<v1::GetTransactionResponse>, Status>,
        >,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut status = TxStatus::Unknown;
        let mut backoff = Backoff::default();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ClientError::DeadlineExceeded { tx_id, status });
            }
            let wait = left.min(MAX_WAIT_PER_REQUEST);
            match self.call_waiting(wait, &mut call).await {
                Ok(info) => return Ok(info),
                Err(ClientError::DeadlineExceeded { status: now, .. }) => status = now,
                Err(ClientError::Unavailable(_)) if !backoff.pause(deadline).await => {}
                // Busy (too many waiters): wait as long as the validator asked.
                Err(error)
                    if error
                        .retry_delay()
                        .is_some_and(|delay| tokio::time::Instant::now() + delay < deadline) =>
                {
                    tokio::time::sleep(error.retry_delay().unwrap_or_default()).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// A waiting call: the server waits `wait` (the request's own timeout is that plus
    /// the ordinary request timeout). DEADLINE_EXCEEDED from the server becomes
    /// [`ClientError::DeadlineExceeded`] with the status it reported, and
    /// FAILED_PRECONDITION naming the transaction expired [`ClientError::Expired`].
    async fn call_waiting<F, Fut>(
        &mut self,
        wait: Duration,
        call: &mut F,
    ) -> Result<TxInfo, ClientError>
    where
        F: FnMut(LedgerClient<Channel>, u64) -> Fut,
        Fut: std::future::Future<
            Output = Result<tonic::Response<v1::GetTransactionResponse>, Status>,
        >,
    {
        let timeout_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let whole = wait + self.config.request_timeout;
        let answer = self
            .call(|client| {
                let fut = call(client, timeout_ms);
                async move {
                    match tokio::time::timeout(whole, fut).await {
                        Ok(answer) => answer,
                        Err(_) => Err(Status::unavailable("no answer within the wait")),
                    }
                }
            })
            .await;
        match answer {
            Ok(response) => TxInfo::from_proto(response.into_inner()),
            Err(ClientError::Status {
                code: Code::DeadlineExceeded,
                message,
                details,
                ..
            }) => Err(ClientError::DeadlineExceeded {
                tx_id: named_tx_id(&details, &message)?,
                status: match details.metadata.get("status") {
                    Some(status) if status == "PENDING" => TxStatus::Pending,
                    Some(_) => TxStatus::Unknown,
                    // A validator without error details says it in the message.
                    None if message.ends_with("status: PENDING") => TxStatus::Pending,
                    None => TxStatus::Unknown,
                },
            }),
            Err(ClientError::Status {
                code: Code::FailedPrecondition,
                message,
                details,
                ..
            }) if details.reason.as_deref() == Some("EXPIRED_UNFINALIZED")
                || (details.reason.is_none() && message.ends_with("status: EXPIRED")) =>
            {
                Err(ClientError::Expired {
                    tx_id: named_tx_id(&details, &message)?,
                })
            }
            Err(error) => Err(error),
        }
    }

    /// The transaction's status at the validator asked (NOT_FOUND when it never saw it).
    pub async fn get(&mut self, tx_id: TxId) -> Result<TxInfo, ClientError> {
        let response = self
            .call(|mut client| {
                let request = v1::GetTransactionRequest {
                    tx_id: tx_id.0.to_vec(),
                };
                async move { client.get_transaction(request).await }
            })
            .await?;
        TxInfo::from_proto(response.into_inner())
    }

    /// The finality proof of `tx_id` from the validator asked; with
    /// [`verify_proof`] a client needs to trust no validator. UNAVAILABLE (a stable
    /// checkpoint does not cover it yet) is retried with backoff until `timeout`.
    pub async fn proof(
        &mut self,
        tx_id: TxId,
        timeout: Duration,
    ) -> Result<ProofAnswer, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = Backoff::default();
        loop {
            let answer = self
                .call(|mut client| {
                    let request = v1::GetTransactionProofRequest {
                        tx_id: tx_id.0.to_vec(),
                    };
                    async move { client.get_transaction_proof(request).await }
                })
                .await;
            match answer {
                Ok(response) => {
                    let response = response.into_inner();
                    return Ok(ProofAnswer {
                        proof: response.proof,
                        sequence: response.sequence,
                        checkpoint_sequence: response.checkpoint_sequence,
                    });
                }
                Err(ClientError::Unavailable(_)) if !backoff.pause(deadline).await => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Opens a `SubmitTransactions` stream on the current validator (failing over while
    /// none accepts the call): requests go into the sender (at most `queue` waiting),
    /// one answer per request comes back on the stream, in order. Idempotent like
    /// [`Client::submit`]: a transaction is its payload and expiry.
    pub async fn submit_stream(
        &mut self,
        queue: usize,
    ) -> Result<
        (
            tokio::sync::mpsc::Sender<v1::SubmitTransactionRequest>,
            tonic::Streaming<v1::SubmitTransactionsResponse>,
        ),
        ClientError,
    > {
        let mut opened = None;
        let answers = self
            .call(|mut client| {
                let (sender, receiver) = tokio::sync::mpsc::channel(queue.max(1));
                opened = Some(sender);
                async move {
                    client
                        .submit_transactions(tokio_stream::wrappers::ReceiverStream::new(receiver))
                        .await
                }
            })
            .await?
            .into_inner();
        let sender = opened.ok_or_else(|| ClientError::Malformed("no stream opened".into()))?;
        Ok((sender, answers))
    }

    /// The vertex with this hash (its transactions' payloads and expiries, its
    /// canonical encoding and signature), NOT_FOUND when the validator does not hold it.
    pub async fn vertex(&mut self, hash: &[u8]) -> Result<VertexAnswer, ClientError> {
        let response = self
            .call(|mut client| {
                let request = v1::GetVertexRequest {
                    hash: hash.to_vec(),
                };
                async move { client.get_vertex(request).await }
            })
            .await?;
        Ok(response.into_inner())
    }

    /// The status of the validator asked.
    pub async fn status(&mut self) -> Result<NodeStatus, ClientError> {
        let response =
            self.call(|mut client| async move {
                client.get_node_status(v1::GetNodeStatusRequest {}).await
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Finalized entries from `from_sequence` on (or from the tip when `None`), as a
    /// [`Subscription`] that resumes after the last entry it gave when its validator
    /// goes away.
    pub fn subscribe(
        self,
        from_sequence: Option<u64>,
        include_transaction_ids: bool,
    ) -> Subscription {
        Subscription {
            client: self,
            next: from_sequence,
            include_transaction_ids,
            stream: None,
        }
    }
}

/// Pauses between rounds of fail-over while every validator is unavailable (restarting,
/// syncing): 100 ms, doubling up to 2 s.
#[derive(Debug, Default)]
struct Backoff {
    rounds: u32,
}

impl Backoff {
    /// Sleeps before the next round; `true` when the deadline leaves no time for one
    /// (the caller gives up with the last error).
    async fn pause(&mut self, deadline: tokio::time::Instant) -> bool {
        let pause = Duration::from_millis(100) * 2u32.saturating_pow(self.rounds.min(4));
        self.rounds = self.rounds.saturating_add(1);
        let now = tokio::time::Instant::now();
        if now + pause >= deadline {
            return true;
        }
        tokio::time::sleep(pause).await;
        false
    }
}

/// The transaction id a DEADLINE_EXCEEDED or expiry status names: its `tx_id`
/// metadata, or (from a validator without error details) the hex in its message.
fn named_tx_id(details: &weft_proto::rpc::Details, message: &str) -> Result<TxId, ClientError> {
    if let Some(hex) = details.metadata.get("tx_id") {
        return TxId::from_hex(hex);
    }
    message
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|word| word.len() == 64)
        .map(TxId::from_hex)
        .unwrap_or_else(|| {
            Err(ClientError::Malformed(format!(
                "DEADLINE_EXCEEDED without a transaction id: {message}"
            )))
        })
}

/// [`DEFAULT_TTL`] from now, in Unix milliseconds: the expiry a submission without one
/// gets. Fix it before the first attempt so every retry is the same transaction.
pub fn default_expiry() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    now.saturating_add(u64::try_from(DEFAULT_TTL.as_millis()).unwrap_or(0))
}

/// Finalized entries in sequence order, across fail-overs.
#[derive(Debug)]
pub struct Subscription {
    client: Client,
    /// The next sequence wanted; `None` until the first entry when following the tip.
    next: Option<u64>,
    include_transaction_ids: bool,
    stream: Option<tonic::Streaming<FinalizedEntry>>,
}

impl Subscription {
    /// The next entry. On a broken stream it reconnects (failing over) and resumes
    /// after the last entry it gave, skipping anything a new validator repeats; an
    /// error means no validator could be reached.
    pub async fn next(&mut self) -> Result<FinalizedEntry, ClientError> {
        let mut broken = 0;
        loop {
            if self.stream.is_none() {
                let (from_sequence, from_tip) = match self.next {
                    Some(next) => (next, false),
                    None => (0, true),
                };
                let include = self.include_transaction_ids;
                let response = self
                    .client
                    .call(|mut client| {
                        let request = v1::SubscribeFinalizedRequest {
                            from_sequence,
                            include_transaction_ids: include,
                            from_tip,
                        };
                        async move { client.subscribe_finalized(request).await }
                    })
                    .await?;
                self.stream = Some(response.into_inner());
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.message().await {
                Ok(Some(entry)) => {
                    if self.next.is_some_and(|next| entry.sequence < next) {
                        continue;
                    }
                    self.next = Some(entry.sequence.saturating_add(1));
                    return Ok(entry);
                }
                Ok(None) | Err(_) => {
                    self.stream = None;
                    self.client.next_endpoint();
                    broken += 1;
                    if broken > self.client.endpoints.len() {
                        return Err(ClientError::Unavailable(vec![(
                            self.client.endpoint().to_string(),
                            "every subscription broke".to_string(),
                        )]));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tx_id_is_the_dag_s_id_of_expiry_and_payload() {
        let id = TxId::of(1_700_000_000_000, b"payload");
        let dag = weft_dag::transaction_id(weft_dag::TimestampMs(1_700_000_000_000), b"payload");
        assert_eq!(&id.0, dag.0.as_bytes());
        assert_ne!(id, TxId::of(1_700_000_000_001, b"payload"));
        assert_eq!(TxId::from_hex(&id.to_string()).ok(), Some(id));
    }

    #[test]
    fn malformed_ids_and_endpoints_are_refused_with_the_reason() {
        assert!(matches!(
            TxId::from_hex("abcd"),
            Err(ClientError::InvalidTxId { reason }) if reason.contains("2 bytes")
        ));
        assert!(matches!(
            TxId::from_hex("zz"),
            Err(ClientError::InvalidTxId { .. })
        ));
        let empty: [&str; 0] = [];
        assert!(matches!(
            Client::new(empty, ClientConfig::default()),
            Err(ClientError::InvalidEndpoint { .. })
        ));
        assert!(matches!(
            Client::new(["http://exa mple:1"], ClientConfig::default()),
            Err(ClientError::InvalidEndpoint { .. })
        ));
    }

    #[test]
    fn a_deadline_status_gives_back_the_transaction_id_from_its_details_or_message() {
        let id = TxId::of(5, b"x");
        let none = weft_proto::rpc::Details::default();
        let message = format!("transaction {id} is still PENDING after 100 ms");
        assert_eq!(named_tx_id(&none, &message).ok(), Some(id));
        assert!(named_tx_id(&none, "no id here").is_err());
        let other = TxId::of(6, b"y");
        let status = weft_proto::rpc::status(
            Code::DeadlineExceeded,
            weft_proto::rpc::Reason::NotFinalizedYet,
            "not yet",
            &[("tx_id", other.to_string())],
            None,
        );
        let details = weft_proto::rpc::details(&status);
        assert_eq!(named_tx_id(&details, &message).ok(), Some(other));
    }

    #[tokio::test]
    async fn every_unreachable_validator_is_named_in_the_error() {
        // Ports nobody listens on (bound then released), on loopback only.
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .unwrap_or(1)
            })
            .collect();
        let endpoints: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let config = ClientConfig {
            connect_timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        };
        let mut client = Client::new(endpoints.clone(), config).expect("valid endpoints");
        match client.status().await {
            Err(ClientError::Unavailable(failures)) => {
                let named: Vec<&str> = failures.iter().map(|(e, _)| e.as_str()).collect();
                assert_eq!(
                    named,
                    endpoints.iter().map(String::as_str).collect::<Vec<_>>()
                );
            }
            other => panic!("expected Unavailable naming both, got {other:?}"),
        }
    }
}
