//! Prometheus metrics of the network layer, registered into the node's registry.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use crate::Channel;

/// Counters and gauges of one network service.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `weft_network_connected_validators`.
    pub connected_validators: IntGauge,
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
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let metrics = Metrics {
            connected_validators: IntGauge::new(
                "weft_network_connected_validators",
                "Validators (other than this one) with an open connection.",
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
        };
        registry.register(Box::new(metrics.connected_validators.clone()))?;
        registry.register(Box::new(metrics.messages.clone()))?;
        registry.register(Box::new(metrics.bytes.clone()))?;
        registry.register(Box::new(metrics.dropped.clone()))?;
        registry.register(Box::new(metrics.penalties.clone()))?;
        registry.register(Box::new(metrics.denied_connections.clone()))?;
        registry.register(Box::new(metrics.requests.clone()))?;
        Ok(metrics)
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
