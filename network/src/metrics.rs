//! Prometheus metrics of the network layer, registered into the node's registry.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::Channel;

/// Every `reason` of `weft_network_dropped_messages_total`, registered at 0 from start-up
/// so an alert on any of them has a series to read before the first drop.
pub const DROP_REASONS: &[&str] = &[
    "command_queue_full",
    "outbound_queue_full",
    "inbound_queue_full",
    "peer_busy",
    "send_timeout",
    "send_failed",
    "unknown_peer",
    "oversized",
    "malformed",
];

/// Every `reason` of `weft_network_peer_penalties_total`.
pub const PENALTY_REASONS: &[&str] = &["oversized", "malformed"];

/// Every `(kind, outcome)` of `weft_network_requests_total`.
pub const REQUEST_OUTCOMES: &[(&str, &str)] = &[
    ("inbound", "answered"),
    ("inbound", "unavailable"),
    ("inbound", "busy"),
    ("outbound", "answered"),
    ("outbound", "not_connected"),
    ("outbound", "oversized_answer"),
    ("outbound", "failed"),
];

/// Counters and gauges of one network service.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `weft_connected_validators`: the one connected-validators gauge, kept by the
    /// network service itself so it is right from start-up (state sync included).
    pub connected_validators: IntGauge,
    /// `weft_peer_connected{validator}`: 1 while that validator is connected, else 0.
    pub peer_connected: IntGaugeVec,
    /// `weft_peer_last_message_timestamp_seconds{validator}`: Unix time of the last
    /// message received from that validator (0 before the first), so a dashboard
    /// shows which validator went quiet: `time() - weft_peer_last_message_timestamp_seconds`.
    pub peer_last_message: IntGaugeVec,
    /// `weft_network_messages_total{direction, channel}`.
    pub messages: IntCounterVec,
    /// `weft_network_bytes_total{direction, channel}`.
    pub bytes: IntCounterVec,
    /// `weft_network_dropped_messages_total{reason}`.
    pub dropped: IntCounterVec,
    /// `weft_network_peer_penalties_total{reason}`.
    pub penalties: IntCounterVec,
    /// `weft_network_denied_connections_total{direction}`: `inbound` (someone outside
    /// the set, or banned, tried us) or `outbound` (we tried to reach a banned peer).
    pub denied_connections: IntCounterVec,
    /// `weft_network_requests_total{kind, outcome}`.
    pub requests: IntCounterVec,
    /// Per validator index: its `weft_peer_connected` and
    /// `weft_peer_last_message_timestamp_seconds` series, looked up once at start-up
    /// (a message's arrival then costs no label hashing or allocation).
    peer_series: Vec<Option<(IntGauge, IntGauge)>>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`, every labelled series at 0:
    /// per-peer series for each of `others` (the other validators' indices), and every
    /// reason, direction and channel.
    pub fn new(registry: &Registry, others: &[u16]) -> prometheus::Result<Metrics> {
        let metrics = Metrics {
            connected_validators: IntGauge::new(
                "weft_connected_validators",
                "Other validators with an open connection.",
            )?,
            peer_connected: IntGaugeVec::new(
                Opts::new(
                    "weft_peer_connected",
                    "1 while the validator is connected to this one, else 0.",
                ),
                &["validator"],
            )?,
            peer_last_message: IntGaugeVec::new(
                Opts::new(
                    "weft_peer_last_message_timestamp_seconds",
                    "Unix time of the last message received from the validator (0: none yet).",
                ),
                &["validator"],
            )?,
            messages: IntCounterVec::new(
                Opts::new(
                    "weft_network_messages_total",
                    "Messages sent to or received from validators, by direction and channel.",
                ),
                &["direction", "channel"],
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "weft_network_bytes_total",
                    "Payload bytes sent to or received from validators, by direction and channel.",
                ),
                &["direction", "channel"],
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "weft_network_dropped_messages_total",
                    "Messages dropped instead of sent or delivered, by reason.",
                ),
                &["reason"],
            )?,
            penalties: IntCounterVec::new(
                Opts::new(
                    "weft_network_peer_penalties_total",
                    "Peers disconnected and banned for a while, by reason.",
                ),
                &["reason"],
            )?,
            denied_connections: IntCounterVec::new(
                Opts::new(
                    "weft_network_denied_connections_total",
                    "Connections refused because the peer is not in the validator set or is banned, by direction.",
                ),
                &["direction"],
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "weft_network_requests_total",
                    "Fetch and sync requests, by kind and outcome.",
                ),
                &["kind", "outcome"],
            )?,
            peer_series: Vec::new(),
        };
        registry.register(Box::new(metrics.connected_validators.clone()))?;
        registry.register(Box::new(metrics.peer_connected.clone()))?;
        registry.register(Box::new(metrics.peer_last_message.clone()))?;
        registry.register(Box::new(metrics.messages.clone()))?;
        registry.register(Box::new(metrics.bytes.clone()))?;
        registry.register(Box::new(metrics.dropped.clone()))?;
        registry.register(Box::new(metrics.penalties.clone()))?;
        registry.register(Box::new(metrics.denied_connections.clone()))?;
        registry.register(Box::new(metrics.requests.clone()))?;
        let slots = others
            .iter()
            .copied()
            .max()
            .map_or(0, |max| usize::from(max) + 1);
        let mut peer_series = vec![None; slots];
        for other in others {
            let label = other.to_string();
            let connected = metrics.peer_connected.with_label_values(&[&label]);
            let last = metrics.peer_last_message.with_label_values(&[&label]);
            connected.set(0);
            last.set(0);
            peer_series[usize::from(*other)] = Some((connected, last));
        }
        for direction in ["in", "out"] {
            for channel in [Channel::Vertices, Channel::Consensus] {
                metrics
                    .messages
                    .with_label_values(&[direction, channel.name()]);
                metrics
                    .bytes
                    .with_label_values(&[direction, channel.name()]);
            }
        }
        for reason in DROP_REASONS {
            metrics.dropped.with_label_values(&[reason]);
        }
        for reason in PENALTY_REASONS {
            metrics.penalties.with_label_values(&[reason]);
        }
        for direction in ["inbound", "outbound"] {
            metrics.denied_connections.with_label_values(&[direction]);
        }
        for (kind, outcome) in REQUEST_OUTCOMES {
            metrics.requests.with_label_values(&[kind, outcome]);
        }
        Ok(Metrics {
            peer_series,
            ..metrics
        })
    }

    fn peer(&self, validator: u16) -> Option<&(IntGauge, IntGauge)> {
        self.peer_series.get(usize::from(validator))?.as_ref()
    }

    pub(crate) fn set_peer_connected(&self, validator: u16, up: bool) {
        if let Some((connected, _)) = self.peer(validator) {
            connected.set(i64::from(up));
        }
    }

    pub(crate) fn heard_from(&self, validator: u16) {
        if let Some((_, last)) = self.peer(validator) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            last.set(i64::try_from(now).unwrap_or(i64::MAX));
        }
    }

    pub(crate) fn sent(&self, channel: Channel, bytes: usize) {
        self.messages
            .with_label_values(&["out", channel.name()])
            .inc();
        self.bytes
            .with_label_values(&["out", channel.name()])
            .inc_by(bytes as u64);
    }

    pub(crate) fn received(&self, channel: Channel, bytes: usize) {
        self.messages
            .with_label_values(&["in", channel.name()])
            .inc();
        self.bytes
            .with_label_values(&["in", channel.name()])
            .inc_by(bytes as u64);
    }

    pub(crate) fn drop_message(&self, reason: &str) {
        debug_assert!(
            DROP_REASONS.contains(&reason),
            "unlisted drop reason {reason}"
        );
        self.dropped.with_label_values(&[reason]).inc();
    }

    /// Messages dropped for `reason` so far.
    pub fn dropped_for(&self, reason: &str) -> u64 {
        self.dropped.with_label_values(&[reason]).get()
    }

    /// Penalties for `reason` so far.
    pub fn penalties_for(&self, reason: &str) -> u64 {
        self.penalties.with_label_values(&[reason]).get()
    }
}
