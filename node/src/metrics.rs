//! The node's Prometheus metrics and the `/metrics` endpoint.

use std::net::SocketAddr;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use weft_consensus::replica::Evidence;

/// The commit this binary was built from (see `build.rs`).
pub const COMMIT: &str = env!("WEFT_COMMIT");

/// Every `reason` of `weft_invalid_messages_total`.
pub const INVALID_MESSAGE_REASONS: &[&str] = &["decode", "signature", "verify_queue_full"];

/// Every `outcome` of `weft_submitted_transactions_total`.
pub const SUBMIT_OUTCOMES: &[&str] = &[
    "accepted",
    "duplicate",
    "mempool_full",
    "expired",
    "syncing",
    "invalid",
    "expiry",
];

/// Finality buckets, in seconds: fine below one second, up to a minute.
pub const FINALITY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6,
    0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Everything the engine and the API record.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// `weft_transaction_finality_seconds`.
    pub transaction_finality: Histogram,
    /// `weft_vertex_finality_seconds`.
    pub vertex_finality: Histogram,
    /// `weft_view`.
    pub view: IntGauge,
    /// `weft_finalized_sequence`.
    pub finalized_sequence: IntGauge,
    /// `weft_stable_checkpoint`.
    pub stable_checkpoint: IntGauge,
    /// `weft_finalized_transactions_total`.
    pub finalized_transactions: IntCounter,
    /// `weft_finalized_vertices_total`.
    pub finalized_vertices: IntCounter,
    /// `weft_mempool_transactions`.
    pub mempool: IntGauge,
    /// `weft_equivocations_total{kind}`.
    pub equivocations: IntCounterVec,
    /// `weft_invalid_messages_total{reason}`.
    pub invalid_messages: IntCounterVec,
    /// `weft_submitted_transactions_total{outcome}`.
    pub submitted: IntCounterVec,
    /// `weft_view_changes_total`.
    pub view_changes: IntCounter,
    /// `weft_syncing`.
    pub syncing: IntGauge,
    /// `weft_learning_signing_floor`.
    pub learning_signing_floor: IntGauge,
    /// `weft_sync_entries_total`.
    pub sync_entries: IntCounter,
    /// `weft_sync_rejected_batches_total`.
    pub sync_rejected: IntCounter,
    /// `weft_sync_lag_sequences`.
    pub sync_lag: IntGauge,
    /// `weft_resyncs_total`.
    pub resyncs: IntCounter,
    /// `weft_group_commit_transactions`.
    pub group_commit_transactions: Histogram,
    /// `weft_peer_finalized_sequence{validator}`: the last finalized sequence each other
    /// validator reported (0 before its first report), so a dashboard shows who is behind.
    pub peer_finalized_sequence: IntGaugeVec,
    /// Per validator index, its `weft_peer_finalized_sequence` series (looked up once).
    peer_sequences: Vec<Option<IntGauge>>,
}

impl NodeMetrics {
    /// Records the finalized sequence `validator` reported.
    pub fn peer_reported(&self, validator: u16, sequence: u64) {
        if let Some(Some(series)) = self.peer_sequences.get(usize::from(validator)) {
            series.set(i64::try_from(sequence).unwrap_or(i64::MAX));
        }
    }
}

/// What `weft_build_info` says about this validator besides the build.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    /// The chain's id from genesis.
    pub chain_id: &'a str,
    /// This validator's index.
    pub validator: u16,
    /// The other validators' indices (one `weft_peer_*` series each).
    pub others: &'a [u16],
}

impl NodeMetrics {
    /// Creates and registers the metrics, each labelled series at 0 from the start (an
    /// alert on a counter must have a series to read before its first increment), plus
    /// `weft_build_info` and the process metrics (CPU, memory, open files).
    pub fn new(registry: &Registry, identity: &Identity<'_>) -> prometheus::Result<NodeMetrics> {
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(FINALITY_BUCKETS.to_vec()))
        };
        let metrics = NodeMetrics {
            transaction_finality: histogram(
                "weft_transaction_finality_seconds",
                "From this validator accepting a transaction over gRPC to its finalization.",
            )?,
            vertex_finality: histogram(
                "weft_vertex_finality_seconds",
                "From a vertex's creation (its author's clock) to its finalization here.",
            )?,
            view: IntGauge::new("weft_view", "The current PBFT view.")?,
            finalized_sequence: IntGauge::new(
                "weft_finalized_sequence",
                "The last finalized (executed) sequence.",
            )?,
            stable_checkpoint: IntGauge::new(
                "weft_stable_checkpoint",
                "The last stable checkpoint's sequence.",
            )?,
            finalized_transactions: IntCounter::new(
                "weft_finalized_transactions_total",
                "Transactions finalized.",
            )?,
            finalized_vertices: IntCounter::new(
                "weft_finalized_vertices_total",
                "Vertices finalized.",
            )?,
            mempool: IntGauge::new(
                "weft_mempool_transactions",
                "Transactions waiting for a vertex.",
            )?,
            equivocations: IntCounterVec::new(
                Opts::new(
                    "weft_equivocations_total",
                    "Proven equivocations (two signed conflicting messages), by kind.",
                ),
                &["kind"],
            )?,
            invalid_messages: IntCounterVec::new(
                Opts::new(
                    "weft_invalid_messages_total",
                    "Messages from validators dropped before consensus, by reason.",
                ),
                &["reason"],
            )?,
            submitted: IntCounterVec::new(
                Opts::new(
                    "weft_submitted_transactions_total",
                    "Transactions submitted over gRPC, by outcome.",
                ),
                &["outcome"],
            )?,
            view_changes: IntCounter::new(
                "weft_view_changes_total",
                "Views this validator moved to after view 0.",
            )?,
            syncing: IntGauge::new(
                "weft_syncing",
                "1 while the validator syncs the finalized log from peers, else 0.",
            )?,
            learning_signing_floor: IntGauge::new(
                "weft_learning_signing_floor",
                "1 while a validator restarted on a wiped store waits for 2f+1 peers to \
                 report the floor it must sign above (it signs nothing meanwhile), else 0.",
            )?,
            sync_entries: IntCounter::new(
                "weft_sync_entries_total",
                "Finalized entries taken from peers by state sync (checked and confirmed).",
            )?,
            sync_rejected: IntCounter::new(
                "weft_sync_rejected_batches_total",
                "Sync answers that failed a check (decoding, digest chain, signatures).",
            )?,
            sync_lag: IntGauge::new(
                "weft_sync_lag_sequences",
                "How far the (f+1)-th most advanced other validator is ahead of this one.",
            )?,
            resyncs: IntCounter::new(
                "weft_resyncs_total",
                "Times the running validator fell too far behind and resynced from peers.",
            )?,
            group_commit_transactions: Histogram::with_opts(
                HistogramOpts::new(
                    "weft_group_commit_transactions",
                    "Transactions admitted together and made durable by one synced write \
                     before their acknowledgements.",
                )
                .buckets(vec![
                    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
                ]),
            )?,
            peer_finalized_sequence: IntGaugeVec::new(
                Opts::new(
                    "weft_peer_finalized_sequence",
                    "The last finalized sequence the validator reported to this one.",
                ),
                &["validator"],
            )?,
            peer_sequences: Vec::new(),
        };
        let build_info = IntGaugeVec::new(
            Opts::new(
                "weft_build_info",
                "Always 1; the labels say which build runs, on which chain, as which validator.",
            ),
            &["version", "commit", "chain_id", "validator"],
        )?;
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                COMMIT,
                identity.chain_id,
                &identity.validator.to_string(),
            ])
            .set(1);
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for kind in Evidence::KINDS {
            metrics.equivocations.with_label_values(&[kind]);
        }
        for reason in INVALID_MESSAGE_REASONS {
            metrics.invalid_messages.with_label_values(&[reason]);
        }
        for outcome in SUBMIT_OUTCOMES {
            metrics.submitted.with_label_values(&[outcome]);
        }
        let slots = identity
            .others
            .iter()
            .copied()
            .max()
            .map_or(0, |max| usize::from(max) + 1);
        let mut peer_sequences = vec![None; slots];
        for other in identity.others {
            let series = metrics
                .peer_finalized_sequence
                .with_label_values(&[&other.to_string()]);
            series.set(0);
            peer_sequences[usize::from(*other)] = Some(series);
        }
        let metrics = NodeMetrics {
            peer_sequences,
            ..metrics
        };
        registry.register(Box::new(metrics.transaction_finality.clone()))?;
        registry.register(Box::new(metrics.vertex_finality.clone()))?;
        registry.register(Box::new(metrics.view.clone()))?;
        registry.register(Box::new(metrics.finalized_sequence.clone()))?;
        registry.register(Box::new(metrics.stable_checkpoint.clone()))?;
        registry.register(Box::new(metrics.finalized_transactions.clone()))?;
        registry.register(Box::new(metrics.finalized_vertices.clone()))?;
        registry.register(Box::new(metrics.mempool.clone()))?;
        registry.register(Box::new(metrics.equivocations.clone()))?;
        registry.register(Box::new(metrics.invalid_messages.clone()))?;
        registry.register(Box::new(metrics.submitted.clone()))?;
        registry.register(Box::new(metrics.view_changes.clone()))?;
        registry.register(Box::new(metrics.syncing.clone()))?;
        registry.register(Box::new(metrics.learning_signing_floor.clone()))?;
        registry.register(Box::new(metrics.sync_entries.clone()))?;
        registry.register(Box::new(metrics.sync_rejected.clone()))?;
        registry.register(Box::new(metrics.sync_lag.clone()))?;
        registry.register(Box::new(metrics.resyncs.clone()))?;
        registry.register(Box::new(metrics.group_commit_transactions.clone()))?;
        registry.register(Box::new(metrics.peer_finalized_sequence.clone()))?;
        Ok(metrics)
    }
}

/// Serves, until `shutdown` resolves, on plain HTTP:
/// - `GET /metrics`: the Prometheus text format;
/// - `GET /readyz`: 200 while the validator is ready (synced and connected to 2f other
///   validators, as the `weft.v1.Ledger` health service says), else 503 with the reason;
/// - `GET /livez`: 200 while the process serves at all.
///
/// The probes are here as well as in `grpc.health.v1` because Kubernetes' gRPC probes
/// cannot speak TLS: with `[grpc.tls]` on, probe these instead.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    ready: tokio::sync::watch::Receiver<Result<(), String>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = Vec::new();
                    let encoder = TextEncoder::new();
                    if let Err(error) = encoder.encode(&registry.gather(), &mut body) {
                        tracing::error!(%error, "metrics encoding failed");
                    }
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            encoder.format_type().to_owned(),
                        )],
                        body,
                    )
                }
            }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let now = ready.borrow().clone();
                async move {
                    match now {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {reason}\n"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/livez",
            axum::routing::get(|| async { (StatusCode::OK, "live\n") }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Where the endpoint listens, for log lines.
pub fn url(address: SocketAddr) -> String {
    format!("http://{address}/metrics")
}
