//! libp2p over QUIC between a permissioned set of validators: discovery, dissemination,
//! and vertex fetch and sync. This crate moves authenticated bytes and nothing else: it
//! never decodes or judges a consensus payload.
//!
//! # Transport and identity
//!
//! One libp2p swarm on QUIC (quic-v1 over UDP, TLS 1.3 with libp2p's certificate
//! extension) under tokio; there is no TCP transport at all. The permissioned set is a
//! [`PeerSet`] of `(index, ML-DSA-87 key, peer id, binding signature)`, verified when it
//! is built (see [`peers`] for the binding). The swarm's allow list holds exactly the
//! set's peer ids: a connection from any other identity is denied as soon as the QUIC
//! handshake reveals the peer id, before any protocol stream is opened, so its messages
//! can never be delivered.
//!
//! # Discovery
//!
//! identify + Kademlia (protocol `/weft/kad/1`, server mode). A validator needs the
//! address of one other validator: it dials it, learns listen addresses through
//! identify, and looks up every validator it is not connected to with
//! `get_closest_peers` once per redial tick, dialing whichever it has an address for.
//! A peer that restarts (on a new port too) dials its bootstrap peers again and pushes
//! its new listen addresses through identify, so everyone finds it again.
//!
//! # Dissemination: direct streams, not gossipsub
//!
//! Every message to a validator is one request on the `/weft/messages/1` request-response
//! protocol: a fresh QUIC stream (no round trip to open one), a length-prefixed frame
//! whose first byte is the [`Channel`], and a one-byte answer (`accepted` or `busy`).
//! A broadcast is one such send to each connected validator. We chose this over gossipsub
//! for a validator set of tens of nodes, all directly connected, because
//! - gossipsub's mesh forwards each message again at every hop and sends IHAVE/IWANT
//!   control traffic: with everyone directly connected that is only extra bytes (for a
//!   512 KB vertex, up to D-1 redundant copies per receiver);
//! - one hop is the lowest latency there is, and the answer gives per-peer backpressure:
//!   at most `max_in_flight_per_peer` unanswered sends per peer, then a bounded queue,
//!   then drops counted by reason;
//! - consensus already retransmits what matters (votes, the own latest vertex, view
//!   changes), so gossip's store-and-forward buys us nothing but memory.
//!
//! The broadcast-latency benchmark (`cargo bench -p weft-network --bench broadcast`)
//! measures 4 KB and 512 KB messages among four validators on loopback.
//!
//! # Bounds and penalties
//!
//! Frames are length-checked before allocation ([`NetworkLimits`]): messages per channel,
//! requests and responses each have a limit. A peer that sends an oversized or malformed
//! frame is disconnected and banned for [`NetworkLimits::ban`]; `weft_network_peer_penalties_total`
//! counts it. Inbound messages wait in one bounded queue per validator, drained
//! round-robin, so a flooding peer fills only its own queue. Fetch and sync requests are
//! bounded in size (hashes per fetch, entries per sync, response bytes: an answer that
//! would not fit is cut to a prefix and the requester asks again) and in concurrency
//! (inbound per peer, outbound in total).

mod backoff;
mod codec;
mod inbox;
mod metrics;
pub mod peers;
mod service;
pub mod testing;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use libp2p::{identity, Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

pub use metrics::Metrics;
pub use peers::{binding_message, sign_binding, PeerSet, PeerSetError, ValidatorPeer};

/// Re-exported so callers can build identities and addresses without naming libp2p.
pub use libp2p::{
    identity::Keypair as Libp2pKeypair, multiaddr::Error as AddressParseError,
    multiaddr::Protocol as AddressProtocol, Multiaddr as Address,
};

/// What kind of message travels: the receiver gets it back with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Signed DAG vertices.
    Vertices,
    /// Votes, checkpoints, view changes, status and catch-up certificates.
    Consensus,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 2] = [Channel::Vertices, Channel::Consensus];

    /// The label in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Vertices => "vertices",
            Channel::Consensus => "consensus",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Channel::Vertices => 0,
            Channel::Consensus => 1,
        }
    }

    fn from_tag(tag: u8) -> Option<Channel> {
        match tag {
            0 => Some(Channel::Vertices),
            1 => Some(Channel::Consensus),
            _ => None,
        }
    }
}

/// A request to another validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The vertices with these hashes (missing parents).
    Vertices {
        /// blake3 hashes; at most [`NetworkLimits::max_fetch_hashes`].
        hashes: Vec<[u8; 32]>,
    },
    /// Finalized entries from `from_sequence` on, with their vertices, up to a stable
    /// checkpoint (answered by [`Response::Certified`]).
    Sync {
        /// The first sequence wanted.
        from_sequence: u64,
        /// At most this many (capped by [`NetworkLimits::max_sync_entries`]).
        max_entries: u32,
    },
}

/// One finalized entry with the vertices it finalized, as opaque encodings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncEntry {
    /// The encoded entry.
    pub entry: Vec<u8>,
    /// The encoded vertices it finalized.
    pub vertices: Vec<Vec<u8>>,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Encoded vertices, those of the requested hashes the peer holds, in request order.
    Vertices(Vec<Vec<u8>>),
    /// Consecutive entries from the requested sequence that end at a stable checkpoint,
    /// and that checkpoint's certificate (`weft_consensus::proof::encode_certificate`);
    /// no entries when the peer has nothing certified beyond the requested sequence. Never
    /// cut to fit the response limit (a prefix would lose the certified end): the
    /// answering node sizes it.
    Certified {
        /// The entries, in order.
        entries: Vec<SyncEntry>,
        /// The certificate of the last entry's sequence (empty with no entries).
        certificate: Vec<u8>,
    },
    /// The peer has too many requests of ours in progress; ask again later or elsewhere.
    Busy,
    /// The peer could not answer (it dropped the request).
    Unavailable,
}

/// What the network hands to the node.
#[derive(Debug)]
pub enum Event {
    /// A message from validator `from`.
    Message {
        /// The sender's validator index (authenticated by the connection).
        from: u16,
        /// The channel it was sent on.
        channel: Channel,
        /// The bytes, undecoded.
        payload: Bytes,
    },
    /// A request from validator `from`; answer through `reply`.
    Request {
        /// The requester.
        from: u16,
        /// What it asks.
        request: Request,
        /// Where the answer goes (dropping it answers [`Response::Unavailable`]).
        reply: Responder,
    },
    /// A first connection to this validator opened.
    Connected(u16),
    /// The last connection to this validator closed.
    Disconnected(u16),
}

/// Answers one inbound [`Request`].
#[derive(Debug)]
pub struct Responder(oneshot::Sender<Response>);

impl Responder {
    /// Sends the answer; it is cut to fit the response limit if needed.
    pub fn reply(self, response: Response) {
        // The requester may be gone; then there is nobody to answer.
        let _ = self.0.send(response);
    }
}

/// Size, queue and timing limits. Every queue and every decode has one.
#[derive(Debug, Clone)]
pub struct NetworkLimits {
    /// Largest message on [`Channel::Vertices`], in bytes.
    pub max_vertex_message: usize,
    /// Largest message on [`Channel::Consensus`], in bytes.
    pub max_consensus_message: usize,
    /// Largest encoded [`Request`].
    pub max_request_bytes: usize,
    /// Largest encoded [`Response`].
    pub max_response_bytes: usize,
    /// Most hashes in one fetch.
    pub max_fetch_hashes: usize,
    /// Most entries in one sync answer.
    pub max_sync_entries: u32,
    /// Messages waiting for the node, per validator.
    pub inbound_queue_per_peer: usize,
    /// Messages waiting to be sent, per validator.
    pub outbound_queue_per_peer: usize,
    /// Unanswered message streams per validator.
    pub max_in_flight_per_peer: usize,
    /// Inbound requests in progress per validator.
    pub max_inbound_requests_per_peer: usize,
    /// Outbound requests in progress in total.
    pub max_outbound_requests: usize,
    /// Commands from the node waiting for the network task.
    pub command_queue: usize,
    /// How long a request or a message stream may take.
    pub request_timeout: Duration,
    /// How long a penalized peer stays banned.
    pub ban: Duration,
    /// How often missing validators are looked up and dialed, and the first wait after a
    /// failed dial to one.
    pub redial_interval: Duration,
    /// The longest wait between dials to a validator that stays unreachable (the wait
    /// doubles after each failure up to this, and starts over once it is reached).
    pub max_redial_interval: Duration,
}

impl Default for NetworkLimits {
    fn default() -> NetworkLimits {
        NetworkLimits {
            max_vertex_message: 8 << 20,
            max_consensus_message: 4 << 20,
            max_request_bytes: 64 << 10,
            max_response_bytes: 16 << 20,
            max_fetch_hashes: 1024,
            max_sync_entries: 256,
            inbound_queue_per_peer: 4096,
            outbound_queue_per_peer: 4096,
            max_in_flight_per_peer: 64,
            max_inbound_requests_per_peer: 8,
            max_outbound_requests: 16,
            command_queue: 16_384,
            request_timeout: Duration::from_secs(10),
            ban: Duration::from_secs(30),
            redial_interval: Duration::from_secs(1),
            max_redial_interval: Duration::from_secs(10),
        }
    }
}

impl NetworkLimits {
    fn max_message(&self, channel: Channel) -> usize {
        match channel {
            Channel::Vertices => self.max_vertex_message,
            Channel::Consensus => self.max_consensus_message,
        }
    }
}

/// How to start the network of one validator.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// This validator's libp2p identity (its peer id must be in `peers` at `index`).
    pub keypair: identity::Keypair,
    /// This validator's index.
    pub index: u16,
    /// The verified validator set.
    pub peers: PeerSet,
    /// Where to listen, e.g. `/ip4/127.0.0.1/udp/7000/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Addresses of other validators, each ending in `/p2p/<peer id>`; one is enough.
    pub bootstrap: Vec<Multiaddr>,
    /// Limits.
    pub limits: NetworkLimits,
}

/// Why the network did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The keypair's peer id is not the one the set binds to `index`.
    #[error("this node's libp2p identity {peer} is not validator {index}'s in the peer set")]
    NotInSet {
        /// Our peer id.
        peer: PeerId,
        /// The index we claimed.
        index: u16,
    },
    /// A listen address was refused.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A bootstrap address lacks `/p2p/<peer id>`.
    #[error("bootstrap address {0} does not end in /p2p/<peer id>")]
    Bootstrap(Multiaddr),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The swarm could not be built.
    #[error("transport: {0}")]
    Transport(String),
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// Over the channel's limit; nothing was sent.
    #[error("{size} bytes exceed the {channel:?} limit of {limit}")]
    TooLarge {
        /// The channel.
        channel: Channel,
        /// The message size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// No such validator.
    #[error("validator {0} is not in the set")]
    UnknownValidator(u16),
    /// The network task's command queue is full: slow down.
    #[error("the network is saturated; the message was dropped")]
    Backpressure,
    /// The network has stopped.
    #[error("the network has stopped")]
    Stopped,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The request breaks a limit.
    #[error("request too large: {0}")]
    TooLarge(String),
    /// No such validator.
    #[error("validator {0} is not in the set")]
    UnknownValidator(u16),
    /// Not connected, timed out, or the stream failed.
    #[error("request failed: {0}")]
    Failed(String),
    /// The answer could not be decoded (the peer is penalized).
    #[error("malformed response")]
    Malformed,
    /// The network has stopped.
    #[error("the network has stopped")]
    Stopped,
}

pub(crate) enum Command {
    Send {
        targets: Vec<u16>,
        channel: Channel,
        frame: Bytes,
    },
    Request {
        to: u16,
        frame: Bytes,
        reply: oneshot::Sender<Result<Response, RequestError>>,
    },
    Shutdown,
}

/// The node's handle on the running network. Cheap to clone; one task should consume
/// [`Network::next_event`].
#[derive(Debug, Clone)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    inbox: inbox::Inbox,
    metrics: Metrics,
    connected: Arc<Mutex<BTreeSet<u16>>>,
    requests: Arc<Semaphore>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    index: u16,
    validators: Vec<u16>,
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    limits: NetworkLimits,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Send {
                targets,
                channel,
                frame,
            } => {
                write!(f, "Send({targets:?}, {channel:?}, {} bytes)", frame.len())
            }
            Command::Request { to, .. } => write!(f, "Request({to})"),
            Command::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl Network {
    /// Starts the swarm, listens, dials the bootstrap peers and returns once every
    /// listen address is bound. Metrics go into `registry`.
    pub async fn start(
        config: NetworkConfig,
        registry: &prometheus::Registry,
    ) -> Result<Network, StartError> {
        service::start(config, registry).await
    }

    /// Sends `payload` to validator `to`. Returns at once: the send is queued (bounded),
    /// and a message that cannot be delivered is dropped and counted, never retried here.
    pub fn send(&self, to: u16, channel: Channel, payload: &[u8]) -> Result<(), SendError> {
        if !self.validators.contains(&to) || to == self.index {
            return Err(SendError::UnknownValidator(to));
        }
        self.enqueue(vec![to], channel, payload)
    }

    /// Sends `payload` to every other validator.
    pub fn broadcast(&self, channel: Channel, payload: &[u8]) -> Result<(), SendError> {
        let targets = self
            .validators
            .iter()
            .copied()
            .filter(|i| *i != self.index)
            .collect();
        self.enqueue(targets, channel, payload)
    }

    fn enqueue(
        &self,
        targets: Vec<u16>,
        channel: Channel,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let limit = self.limits.max_message(channel);
        if payload.len() > limit {
            return Err(SendError::TooLarge {
                channel,
                size: payload.len(),
                limit,
            });
        }
        let mut frame = Vec::with_capacity(payload.len() + 1);
        frame.push(channel.tag());
        frame.extend_from_slice(payload);
        let count = targets.len();
        match self.commands.try_send(Command::Send {
            targets,
            channel,
            frame: Bytes::from(frame),
        }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                for _ in 0..count {
                    self.metrics.drop_message("command_queue_full");
                }
                Err(SendError::Backpressure)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Stopped),
        }
    }

    /// Asks validator `to`. At most [`NetworkLimits::max_outbound_requests`] run at once;
    /// further calls wait for a slot.
    pub async fn request(&self, to: u16, request: Request) -> Result<Response, RequestError> {
        if !self.validators.contains(&to) || to == self.index {
            return Err(RequestError::UnknownValidator(to));
        }
        match &request {
            Request::Vertices { hashes } if hashes.len() > self.limits.max_fetch_hashes => {
                return Err(RequestError::TooLarge(format!(
                    "{} hashes, at most {}",
                    hashes.len(),
                    self.limits.max_fetch_hashes
                )));
            }
            _ => {}
        }
        let frame = service::encode(&request);
        if frame.len() > self.limits.max_request_bytes {
            return Err(RequestError::TooLarge(format!("{} bytes", frame.len())));
        }
        let _slot = self
            .requests
            .acquire()
            .await
            .map_err(|_| RequestError::Stopped)?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request {
                to,
                frame: Bytes::from(frame),
                reply,
            })
            .await
            .map_err(|_| RequestError::Stopped)?;
        answer.await.map_err(|_| RequestError::Stopped)?
    }

    /// The next event; `None` once the network has stopped and everything was handed out.
    pub async fn next_event(&self) -> Option<Event> {
        self.inbox.recv().await
    }

    /// Validators with an open connection now.
    pub fn connected(&self) -> BTreeSet<u16> {
        self.connected
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The bound listen addresses (with the real ports when 0 was asked), each ending in
    /// `/p2p/<peer id>`, ready to be someone's bootstrap address.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// Messages from validator `from` waiting in the inbox.
    pub fn queued_from(&self, from: u16) -> usize {
        self.inbox.queued(from)
    }

    /// Closes every connection and stops the network task.
    pub async fn shutdown(&self) {
        // The task may already be gone; then there is nothing to stop.
        let _ = self.commands.send(Command::Shutdown).await;
        let task = self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            if let Err(error) = task.await {
                tracing::warn!(%error, "network task ended abnormally");
            }
        }
    }
}
