//! The swarm task: owns the libp2p swarm, carries out the node's commands and turns
//! swarm events into inbox events, metrics and penalties.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{
    self, InboundFailure, OutboundFailure, OutboundRequestId, ProtocolSupport, ResponseChannel,
};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, identify, kad, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::codec::{FrameCodec, OVERSIZED_MARKER};
use crate::inbox::{Inbox, Refused};
use crate::{
    Channel, Command, Event, Metrics, Network, NetworkConfig, NetworkLimits, PeerSet, Request,
    RequestError, Responder, Response, StartError,
};

const MESSAGES_PROTOCOL: &str = "/weft/messages/1";
const SYNC_PROTOCOL: &str = "/weft/sync/1";
const KAD_PROTOCOL: &str = "/weft/kad/1";
const IDENTIFY_VERSION: &str = "weft/1";

/// The answer byte on the messages protocol.
const ACCEPTED: u8 = 0;
const BUSY: u8 = 1;

/// Bincode's own bound on any decode, above every frame limit we use.
const DECODE_LIMIT: usize = 64 << 20;

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// First, so a connection from outside the set is denied before anything else.
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    messages: request_response::Behaviour<FrameCodec>,
    sync: request_response::Behaviour<FrameCodec>,
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Encoding our own plain enums into a Vec cannot fail.
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Decodes a request or response: at most `DECODE_LIMIT` bytes, nothing trailing.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    if bytes.len() > DECODE_LIMIT {
        return None;
    }
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Some(value),
        _ => None,
    }
}

/// Cuts a response to a prefix that fits `limit` bytes once encoded.
fn encode_bounded(response: Response, limit: usize) -> Vec<u8> {
    let encoded = encode(&response);
    if encoded.len() <= limit {
        return encoded;
    }
    // Keep a prefix whose items fit with room for the length prefixes.
    let budget = limit.saturating_sub(64);
    let cut = |sizes: Vec<usize>| -> usize {
        let mut total = 0;
        sizes
            .into_iter()
            .take_while(|size| {
                total += size + 16;
                total <= budget
            })
            .count()
    };
    let trimmed = match response {
        Response::Vertices(mut vertices) => {
            let keep = cut(vertices.iter().map(Vec::len).collect());
            vertices.truncate(keep);
            Response::Vertices(vertices)
        }
        other => other,
    };
    let encoded = encode(&trimmed);
    if encoded.len() <= limit {
        encoded
    } else {
        encode(&Response::Unavailable)
    }
}

#[derive(Debug, Default)]
struct Outbound {
    queue: VecDeque<(Channel, Bytes)>,
    in_flight: usize,
}

type Reply = BoxFuture<'static, (PeerId, ResponseChannel<Bytes>, Response)>;

/// A validator that stays unreachable is logged at INFO at most this often.
const DIAL_FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

struct Service {
    swarm: Swarm<Behaviour>,
    peers: PeerSet,
    index: u16,
    limits: NetworkLimits,
    metrics: Metrics,
    inbox: Inbox,
    connected: Arc<Mutex<BTreeSet<u16>>>,
    bootstrap: Vec<(PeerId, Multiaddr)>,
    outbound: HashMap<PeerId, Outbound>,
    messages_in_flight: HashMap<OutboundRequestId, (PeerId, Channel)>,
    requests_in_flight: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, RequestError>>>,
    inbound_requests: HashMap<PeerId, usize>,
    replies: FuturesUnordered<Reply>,
    banned: HashMap<PeerId, Instant>,
    /// When each validator's failed dial was last logged at INFO (once a minute each).
    dial_failures_logged: HashMap<PeerId, Instant>,
    /// When each unreachable validator may be dialed again.
    redial: Backoff<PeerId>,
}

pub(crate) async fn start(
    config: NetworkConfig,
    registry: &prometheus::Registry,
) -> Result<Network, StartError> {
    let peer_id = config.keypair.public().to_peer_id();
    if config.peers.peer_of(config.index) != Some(peer_id) {
        return Err(StartError::NotInSet {
            peer: peer_id,
            index: config.index,
        });
    }
    let mut bootstrap = Vec::new();
    for address in &config.bootstrap {
        match address.iter().last() {
            Some(Protocol::P2p(peer)) => bootstrap.push((peer, address.clone())),
            _ => return Err(StartError::Bootstrap(address.clone())),
        }
    }
    let others: Vec<u16> = config
        .peers
        .iter()
        .map(|(index, _)| index)
        .filter(|index| *index != config.index)
        .collect();
    let metrics = Metrics::new(registry, &others)?;
    let limits = config.limits.clone();
    let mut swarm = build_swarm(&config)?;
    for (_, peer) in config.peers.iter() {
        if peer != peer_id {
            swarm.behaviour_mut().allow.allow_peer(peer);
        }
    }
    for address in &config.listen {
        swarm
            .listen_on(address.clone())
            .map_err(|error| StartError::Listen {
                address: address.clone(),
                reason: error.to_string(),
            })?;
    }
    // Wait until every listener is bound, so callers learn real ports.
    let mut listen_addrs = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    while listen_addrs.len() < config.listen.len() {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    listen_addrs.push(address.with(Protocol::P2p(peer_id)));
                }
                SwarmEvent::ListenerError { error, .. } | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                    return Err(StartError::Listen {
                        address: config.listen.first().cloned().unwrap_or_else(Multiaddr::empty),
                        reason: error.to_string(),
                    });
                }
                _ => {}
            },
            () = &mut deadline => {
                return Err(StartError::Listen {
                    address: config.listen.first().cloned().unwrap_or_else(Multiaddr::empty),
                    reason: "no listen address was bound within 10 s".into(),
                });
            }
        }
    }
    let validators: Vec<u16> = config.peers.iter().map(|(i, _)| i).collect();
    let slots = usize::from(validators.iter().copied().max().unwrap_or(0)) + 1;
    let inbox = Inbox::new(slots, limits.inbound_queue_per_peer);
    let connected = Arc::new(Mutex::new(BTreeSet::new()));
    let (commands, receiver) = mpsc::channel(limits.command_queue);
    let mut service = Service {
        swarm,
        peers: config.peers.clone(),
        index: config.index,
        limits: limits.clone(),
        metrics: metrics.clone(),
        inbox: inbox.clone(),
        connected: connected.clone(),
        bootstrap,
        outbound: HashMap::new(),
        messages_in_flight: HashMap::new(),
        requests_in_flight: HashMap::new(),
        inbound_requests: HashMap::new(),
        replies: FuturesUnordered::new(),
        banned: HashMap::new(),
        dial_failures_logged: HashMap::new(),
        redial: Backoff::new(limits.redial_interval, limits.max_redial_interval),
    };
    service.dial_bootstrap();
    let task = tokio::spawn(service.run(receiver));
    Ok(Network {
        commands,
        inbox,
        metrics,
        connected,
        requests: Arc::new(Semaphore::new(limits.max_outbound_requests)),
        task: Arc::new(Mutex::new(Some(task))),
        index: config.index,
        validators,
        peer_id,
        listen_addrs,
        limits,
    })
}

fn build_swarm(config: &NetworkConfig) -> Result<Swarm<Behaviour>, StartError> {
    let limits = config.limits.clone();
    let largest_message = limits.max_vertex_message.max(limits.max_consensus_message) + 1;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
            kad_config.set_query_timeout(Duration::from_secs(10));
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_config,
            );
            kad.set_mode(Some(kad::Mode::Server));
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_VERSION.into(), key.public())
                    .with_push_listen_addr_updates(true)
                    .with_interval(Duration::from_secs(30)),
            );
            let messages = request_response::Behaviour::with_codec(
                FrameCodec {
                    max_request: largest_message,
                    max_response: 1,
                },
                [(
                    StreamProtocol::new(MESSAGES_PROTOCOL),
                    ProtocolSupport::Full,
                )],
                request_response::Config::default()
                    .with_request_timeout(limits.request_timeout)
                    .with_max_concurrent_streams(limits.max_in_flight_per_peer * 2),
            );
            let sync = request_response::Behaviour::with_codec(
                FrameCodec {
                    max_request: limits.max_request_bytes,
                    max_response: limits.max_response_bytes,
                },
                [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(limits.request_timeout)
                    .with_max_concurrent_streams(
                        limits.max_inbound_requests_per_peer + limits.max_outbound_requests,
                    ),
            );
            Behaviour {
                allow: allow_block_list::Behaviour::default(),
                identify,
                kad,
                messages,
                sync,
            }
        })
        .map_err(|error| StartError::Transport(error.to_string()))?
        .with_swarm_config(|swarm| swarm.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

impl Service {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut redial = tokio::time::interval(self.limits.redial_interval);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.on_command(command),
                },
                Some((peer, channel, response)) = self.replies.next(), if !self.replies.is_empty() => {
                    self.answer(peer, channel, response);
                }
                _ = redial.tick() => self.on_redial_tick(),
            }
        }
        for (_, reply) in self.requests_in_flight.drain() {
            // The requester learns the network stopped; it may already be gone.
            let _ = reply.send(Err(RequestError::Stopped));
        }
        self.inbox.close();
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in connected {
            // Already gone if this fails: nothing to close.
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn validator(&self, peer: &PeerId) -> Option<u16> {
        self.peers.index_of(peer).filter(|i| *i != self.index)
    }

    fn set_connected(&self, index: u16, up: bool) {
        let mut connected = self
            .connected
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if up {
            connected.insert(index);
        } else {
            connected.remove(&index);
        }
        self.metrics
            .connected_validators
            .set(i64::try_from(connected.len()).unwrap_or(i64::MAX));
        self.metrics.set_peer_connected(index, up);
    }

    fn dial_bootstrap(&mut self) {
        let now = Instant::now();
        for (peer, address) in self.bootstrap.clone() {
            if peer == *self.swarm.local_peer_id()
                || self.banned.contains_key(&peer)
                || !self.redial.due(&peer, now)
            {
                continue;
            }
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, address.clone());
            if !self.swarm.is_connected(&peer) {
                let dial = DialOpts::peer_id(peer)
                    .addresses(vec![address])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(error) = self.swarm.dial(dial) {
                    tracing::debug!(%peer, %error, "bootstrap dial not started");
                }
            }
        }
    }

    /// Lifts expired bans and dials every validator we are not connected to, looking up
    /// those without a known address.
    fn on_redial_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in expired {
            self.banned.remove(&peer);
            self.swarm.behaviour_mut().allow.allow_peer(peer);
        }
        let missing: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(index, peer)| {
                *index != self.index
                    && !self.swarm.is_connected(peer)
                    && !self.banned.contains_key(peer)
                    && self.redial.due(peer, now)
            })
            .map(|(_, peer)| peer)
            .collect();
        if missing.is_empty() {
            return;
        }
        if self.swarm.connected_peers().next().is_none() {
            self.dial_bootstrap();
        }
        for peer in missing {
            let dial = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if self.swarm.dial(dial).is_err() {
                // No address known yet: ask the DHT.
                self.swarm.behaviour_mut().kad.get_closest_peers(peer);
            }
        }
    }

    fn penalize(&mut self, peer: PeerId, reason: &'static str) {
        debug_assert!(
            crate::metrics::PENALTY_REASONS.contains(&reason),
            "unlisted penalty reason {reason}"
        );
        tracing::warn!(%peer, reason, "penalizing peer: disconnecting and banning it");
        self.metrics.penalties.with_label_values(&[reason]).inc();
        self.metrics.drop_message(reason);
        self.banned.insert(peer, Instant::now() + self.limits.ban);
        // Closes every connection to it and refuses new ones until the ban ends.
        self.swarm.behaviour_mut().allow.disallow_peer(peer);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send {
                targets,
                channel,
                frame,
            } => {
                for index in targets {
                    let Some(peer) = self.peers.peer_of(index) else {
                        continue;
                    };
                    self.queue_message(peer, channel, frame.clone());
                }
            }
            Command::Request { to, frame, reply } => {
                let Some(peer) = self.peers.peer_of(to) else {
                    // The handle checked the index; nothing to answer otherwise.
                    let _ = reply.send(Err(RequestError::UnknownValidator(to)));
                    return;
                };
                if !self.swarm.is_connected(&peer) {
                    self.metrics
                        .requests
                        .with_label_values(&["outbound", "not_connected"])
                        .inc();
                    let _ = reply.send(Err(RequestError::Failed(format!(
                        "validator {to} is not connected"
                    ))));
                    return;
                }
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, frame);
                self.requests_in_flight.insert(id, reply);
            }
            Command::Shutdown => {}
        }
    }

    fn queue_message(&mut self, peer: PeerId, channel: Channel, frame: Bytes) {
        let limit = self.limits.outbound_queue_per_peer;
        let outbound = self.outbound.entry(peer).or_default();
        if outbound.queue.len() >= limit {
            self.metrics.drop_message("outbound_queue_full");
            return;
        }
        outbound.queue.push_back((channel, frame));
        self.pump(peer);
    }

    /// Starts queued sends to `peer` while it is connected and has stream slots left.
    fn pump(&mut self, peer: PeerId) {
        if !self.swarm.is_connected(&peer) {
            return;
        }
        let limit = self.limits.max_in_flight_per_peer;
        loop {
            let Some(outbound) = self.outbound.get_mut(&peer) else {
                return;
            };
            if outbound.in_flight >= limit {
                return;
            }
            let Some((channel, frame)) = outbound.queue.pop_front() else {
                return;
            };
            outbound.in_flight += 1;
            self.metrics.sent(channel, frame.len() - 1);
            let id = self
                .swarm
                .behaviour_mut()
                .messages
                .send_request(&peer, frame);
            self.messages_in_flight.insert(id, (peer, channel));
        }
    }

    fn message_done(&mut self, id: OutboundRequestId) {
        if let Some((peer, _)) = self.messages_in_flight.remove(&id) {
            if let Some(outbound) = self.outbound.get_mut(&peer) {
                outbound.in_flight = outbound.in_flight.saturating_sub(1);
            }
            self.pump(peer);
        }
    }

    fn answer(&mut self, peer: PeerId, channel: ResponseChannel<Bytes>, response: Response) {
        if let Some(count) = self.inbound_requests.get_mut(&peer) {
            *count = count.saturating_sub(1);
        }
        let outcome = match response {
            Response::Unavailable => "unavailable",
            _ => "answered",
        };
        self.metrics
            .requests
            .with_label_values(&["inbound", outcome])
            .inc();
        let frame = encode_bounded(response, self.limits.max_response_bytes);
        if self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, Bytes::from(frame))
            .is_err()
        {
            tracing::debug!(%peer, "requester gone before the answer");
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Allow(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify(event),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Messages(event)) => self.on_messages(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                if let Some(index) = self.validator(&peer_id) {
                    self.redial.reached(&peer_id);
                    if num_established.get() == 1 {
                        tracing::info!(validator = index, peer = %peer_id, "validator connected");
                        self.set_connected(index, true);
                        self.inbox.push_control(Event::Connected(index));
                    }
                    self.pump(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(index) = self.validator(&peer_id) {
                    tracing::info!(validator = index, peer = %peer_id, "validator disconnected");
                    self.set_connected(index, false);
                    self.inbox.push_control(Event::Disconnected(index));
                }
            }
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                send_back_addr,
                ..
            } => {
                self.metrics
                    .denied_connections
                    .with_label_values(&["inbound"])
                    .inc();
                tracing::debug!(%send_back_addr, %cause, "inbound connection denied");
            }
            SwarmEvent::OutgoingConnectionError {
                error: DialError::Denied { .. },
                ..
            } => {
                self.metrics
                    .denied_connections
                    .with_label_values(&["outbound"])
                    .inc();
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                // An operator must see which validator is unreachable and why, without
                // a log line per redial.
                if let Some(index) = self.validator(&peer) {
                    let now = Instant::now();
                    let retry_in = self.redial.failed(peer, now);
                    let due = self
                        .dial_failures_logged
                        .get(&peer)
                        .is_none_or(|at| now.duration_since(*at) >= DIAL_FAILURE_LOG_EVERY);
                    if due {
                        self.dial_failures_logged.insert(peer, now);
                        tracing::info!(
                            validator = index,
                            %peer,
                            %error,
                            retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
                            "cannot reach validator; retrying with backoff"
                        );
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            _ => {}
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        if let identify::Event::Received { peer_id, info, .. } = event {
            if self.validator(&peer_id).is_none() {
                return;
            }
            for address in info.listen_addrs {
                if is_quic(&address) {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, address);
                }
            }
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        if let kad::Event::RoutingUpdated { peer, .. } = event {
            if self.validator(&peer).is_some()
                && !self.swarm.is_connected(&peer)
                && !self.banned.contains_key(&peer)
            {
                let dial = DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(error) = self.swarm.dial(dial) {
                    tracing::debug!(%peer, %error, "dial after discovery not started");
                }
            }
        }
    }

    fn on_messages(&mut self, event: request_response::Event<Bytes, Bytes>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_inbound_message(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if response.first() == Some(&BUSY) {
                        self.metrics.drop_message("peer_busy");
                    }
                    self.message_done(request_id);
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                let reason = match error {
                    OutboundFailure::Timeout => "send_timeout",
                    _ => "send_failed",
                };
                self.metrics.drop_message(reason);
                self.message_done(request_id);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                Self::on_inbound_failure(peer, &error);
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// A stream of the peer's failed after its request was read (a failed read is
    /// never reported: the codec hands up [`OVERSIZED_MARKER`] instead).
    fn on_inbound_failure(peer: PeerId, error: &InboundFailure) {
        tracing::debug!(%peer, %error, "inbound stream failed");
    }

    fn on_inbound_message(&mut self, peer: PeerId, frame: Bytes, channel: ResponseChannel<Bytes>) {
        let Some(from) = self.validator(&peer) else {
            // The allow list makes this unreachable; never deliver it anyway.
            self.metrics.drop_message("unknown_peer");
            return;
        };
        if frame[..] == *OVERSIZED_MARKER {
            self.penalize(peer, "oversized");
            return;
        }
        let Some(kind) = frame.first().copied().and_then(Channel::from_tag) else {
            self.penalize(peer, "malformed");
            return;
        };
        let payload = frame.slice(1..);
        if payload.len() > self.limits.max_message(kind) {
            self.penalize(peer, "oversized");
            return;
        }
        self.metrics.received(kind, payload.len());
        self.metrics.heard_from(from);
        let answer = match self.inbox.push_message(from, kind, payload) {
            Ok(()) => ACCEPTED,
            Err(Refused::Full) => {
                self.metrics.drop_message("inbound_queue_full");
                BUSY
            }
            Err(Refused::Closed) => BUSY,
        };
        if self
            .swarm
            .behaviour_mut()
            .messages
            .send_response(channel, Bytes::from(vec![answer]))
            .is_err()
        {
            tracing::trace!(%peer, "sender gone before the answer");
        }
    }

    fn on_sync(&mut self, event: request_response::Event<Bytes, Bytes>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_inbound_request(peer, &request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let Some(reply) = self.requests_in_flight.remove(&request_id) else {
                        return;
                    };
                    let answer = match decode::<Response>(&response) {
                        Some(response) => {
                            self.metrics
                                .requests
                                .with_label_values(&["outbound", "answered"])
                                .inc();
                            Ok(response)
                        }
                        None => {
                            self.penalize(peer, "malformed");
                            Err(RequestError::Malformed)
                        }
                    };
                    // The requester may have given up.
                    let _ = reply.send(answer);
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let OutboundFailure::Io(io_error) = &error {
                    if io_error.kind() == io::ErrorKind::InvalidData {
                        self.metrics
                            .requests
                            .with_label_values(&["outbound", "oversized_answer"])
                            .inc();
                    }
                }
                self.metrics
                    .requests
                    .with_label_values(&["outbound", "failed"])
                    .inc();
                if let Some(reply) = self.requests_in_flight.remove(&request_id) {
                    let _ = reply.send(Err(RequestError::Failed(error.to_string())));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                if matches!(error, InboundFailure::Io(_)) {
                    if let Some(count) = self.inbound_requests.get_mut(&peer) {
                        *count = count.saturating_sub(1);
                    }
                }
                Self::on_inbound_failure(peer, &error);
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound_request(&mut self, peer: PeerId, frame: &[u8], channel: ResponseChannel<Bytes>) {
        let Some(from) = self.validator(&peer) else {
            self.metrics.drop_message("unknown_peer");
            return;
        };
        if frame == OVERSIZED_MARKER {
            self.penalize(peer, "oversized");
            return;
        }
        let Some(request) = decode::<Request>(frame) else {
            self.penalize(peer, "malformed");
            return;
        };
        let too_big = match &request {
            Request::Vertices { hashes } => hashes.len() > self.limits.max_fetch_hashes,
            Request::Sync { .. } => false,
        };
        if too_big {
            self.penalize(peer, "oversized");
            return;
        }
        let request = match request {
            Request::Sync {
                from_sequence,
                max_entries,
            } => Request::Sync {
                from_sequence,
                max_entries: max_entries.min(self.limits.max_sync_entries),
            },
            other => other,
        };
        let busy = self.inbound_requests.get(&peer).copied().unwrap_or(0)
            >= self.limits.max_inbound_requests_per_peer;
        if busy {
            self.metrics
                .requests
                .with_label_values(&["inbound", "busy"])
                .inc();
            let frame = encode(&Response::Busy);
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, Bytes::from(frame));
            return;
        }
        *self.inbound_requests.entry(peer).or_insert(0) += 1;
        let (sender, answer) = oneshot::channel();
        self.inbox.push_control(Event::Request {
            from,
            request,
            reply: Responder(sender),
        });
        self.replies.push(
            async move {
                let response = answer.await.unwrap_or(Response::Unavailable);
                (peer, channel, response)
            }
            .boxed(),
        );
    }
}

fn is_quic(address: &Multiaddr) -> bool {
    address.iter().any(|p| matches!(p, Protocol::QuicV1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SyncEntry;

    #[test]
    fn an_answer_too_large_is_cut_to_a_prefix_that_fits_but_a_certified_batch_is_not() {
        let vertices: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1000]).collect();
        let full = encode(&Response::Vertices(vertices.clone()));
        assert_eq!(
            encode_bounded(Response::Vertices(vertices.clone()), full.len()),
            full
        );

        let limit = 4_500;
        let cut = encode_bounded(Response::Vertices(vertices.clone()), limit);
        assert!(cut.len() <= limit);
        match decode::<Response>(&cut) {
            Some(Response::Vertices(prefix)) => {
                assert!(!prefix.is_empty() && prefix.len() < 10);
                assert_eq!(prefix[..], vertices[..prefix.len()]);
            }
            other => panic!("expected a prefix, got {other:?}"),
        }

        let entries = vec![
            SyncEntry {
                entry: vec![1; 10],
                vertices: vec![vec![2; 3000]],
            };
            4
        ];
        // A certified batch is never cut (its end is what the certificate covers).
        let certified = encode_bounded(
            Response::Certified {
                entries,
                certificate: vec![3; 100],
            },
            limit,
        );
        assert_eq!(decode::<Response>(&certified), Some(Response::Unavailable));
    }

    #[test]
    fn decode_refuses_trailing_bytes_and_garbage() {
        let mut bytes = encode(&Request::Sync {
            from_sequence: 7,
            max_entries: 3,
        });
        assert!(decode::<Request>(&bytes).is_some());
        bytes.push(0);
        assert!(decode::<Request>(&bytes).is_none());
        assert!(decode::<Request>(&[9, 9, 9]).is_none());
    }
}
