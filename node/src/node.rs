//! `weft run`: one validator, from its home folder until SIGINT or SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weft_consensus::replica::{Replica, ReplicaConfig};
use weft_consensus::Signer;
use weft_dag::store::RocksStore;
use weft_dag::store::Store;
use weft_dag::{Limits, ValidatorIndex};
use weft_network::{Address, Network, NetworkConfig, NetworkLimits};
use weft_proto::v1::ledger_server::LedgerServer;

use crate::api::LedgerService;
use crate::config::{ConfigError, Genesis, Home, TlsConfig};
use crate::engine::{CarriedWork, Engine, Stopped};
use crate::metrics::{Identity, NodeMetrics};

/// Why the node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The home folder is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Keys and genesis disagree.
    #[error("{0}")]
    Mismatch(String),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

fn other(context: &str) -> impl FnOnce(String) -> NodeError + '_ {
    move |e| NodeError::Other(format!("{context}: {e}"))
}

fn serving_status(serving: bool) -> tonic_health::ServingStatus {
    if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    }
}

/// Readiness: the health of the Ledger service (`weft.v1.Ledger`), SERVING only while
/// [`readiness`] holds.
async fn set_ready(reporter: &tonic_health::server::HealthReporter, ready: bool) {
    reporter
        .set_service_status(
            <LedgerServer<LedgerService> as tonic::server::NamedService>::NAME,
            serving_status(ready),
        )
        .await;
}

/// Liveness: the health of the server as a whole (""), SERVING while the process runs
/// its gRPC server, whatever consensus does.
async fn set_live(reporter: &tonic_health::server::HealthReporter, live: bool) {
    reporter.set_service_status("", serving_status(live)).await;
}

/// Whether this validator can serve clients: done syncing, and connected to at least
/// `needed` (2f) other validators, so that with itself they are a quorum and what it
/// accepts can be finalized. The reason when not.
pub(crate) fn readiness(syncing: bool, connected: usize, needed: usize) -> Result<(), String> {
    if syncing {
        return Err("syncing the finalized log from peers".into());
    }
    if connected < needed {
        return Err(format!(
            "connected to {connected} other validators; {needed} needed for a quorum"
        ));
    }
    Ok(())
}

/// How often readiness is re-evaluated.
const READINESS_POLL: Duration = Duration::from_millis(250);

/// Keeps the Ledger service's health equal to [`readiness`], and logs each change with
/// its reason, until shutdown.
async fn watch_readiness(
    reporter: tonic_health::server::HealthReporter,
    status: tokio::sync::watch::Receiver<crate::engine::Status>,
    network: Network,
    needed: usize,
    ready: watch::Sender<Result<(), String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last: Option<Result<(), String>> = None;
    let mut tick = tokio::time::interval(READINESS_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            // The watch guard is not Send: drop it inside this future.
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => true,
        };
        if stopping {
            let _previous = ready.send_replace(Err("shutting down".into()));
            set_ready(&reporter, false).await;
            set_live(&reporter, false).await;
            return;
        }
        let syncing = status.borrow().syncing;
        let now = readiness(syncing, network.connected().len(), needed);
        if last.as_ref() != Some(&now) {
            match &now {
                Ok(()) => tracing::info!("ready: serving clients"),
                Err(reason) => tracing::info!(reason = %reason, "not ready"),
            }
            set_ready(&reporter, now.is_ok()).await;
            let _previous = ready.send_replace(now.clone());
            last = Some(now);
        }
    }
}

/// Waits for SIGINT or SIGTERM.
pub async fn termination() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves once SIGINT or SIGTERM arrived (false), or once the gRPC server stopped by
/// itself (true): a validator whose API is gone must not keep looking live. Both are
/// level-triggered watches, so a signal that arrived while nobody waited (during
/// recovery, say) is not lost.
async fn stop_requested(
    mut terminated: watch::Receiver<bool>,
    mut grpc_down: watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        // The watch guards are not Send: drop them inside these futures.
        () = async { let _ = terminated.wait_for(|signalled| *signalled).await; } => false,
        () = async { let _ = grpc_down.wait_for(|down| *down).await; } => true,
    }
}

/// The gRPC server's TLS settings from `[grpc.tls]`.
fn server_tls(
    home: &Home,
    tls: &TlsConfig,
) -> Result<tonic::transport::ServerTlsConfig, NodeError> {
    let read = |what: &str, path: &Path| {
        let path = home.resolve(path);
        std::fs::read(&path)
            .map_err(|e| NodeError::Other(format!("grpc.tls.{what}: {}: {e}", path.display())))
    };
    let identity =
        tonic::transport::Identity::from_pem(read("cert", &tls.cert)?, read("key", &tls.key)?);
    // A client that never finishes its handshake must not hold a connection forever.
    let mut config = tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(
            "client_ca",
            ca,
        )?));
    }
    Ok(config)
}

/// Runs the validator in `home` until a termination signal.
pub async fn run(home: &Path) -> Result<(), NodeError> {
    let home = Home::new(home);
    let config = home.load_config()?;
    // TLS first: a missing or malformed certificate stops the start before anything else.
    let mut grpc_server = tonic::transport::Server::builder();
    if let Some(tls) = &config.grpc.tls {
        grpc_server = grpc_server
            .tls_config(server_tls(&home, tls)?)
            .map_err(|e| other("grpc.tls")(e.to_string()))?;
    }
    let genesis = Genesis::load(&home.genesis_path())?;
    // Checked now; loaded again for each replica (the signer takes the key).
    let keys = home.load_validator_key()?;
    let p2p = home.load_p2p_key()?;
    let index = config.index;
    let committee = genesis.committee.clone();
    match committee.public_key(ValidatorIndex(index)) {
        Some(key) if *key == keys.public => {}
        Some(_) => {
            return Err(NodeError::Mismatch(format!(
                "keys/validator.key is not validator {index}'s key in genesis.json; check `index` in config.toml"
            )))
        }
        None => {
            return Err(NodeError::Mismatch(format!(
                "config.toml says index {index}, but genesis.json has {} validators",
                committee.size()
            )))
        }
    }
    if genesis.peers.peer_of(index) != Some(p2p.public().to_peer_id()) {
        return Err(NodeError::Mismatch(format!(
            "keys/p2p.key is not the peer id genesis.json binds to validator {index}"
        )));
    }

    let limits = Limits::default();
    let data_dir = home.data_dir(&config);
    let store: Arc<dyn Store> = Arc::new(
        RocksStore::open(&data_dir, limits)
            .map_err(|e| NodeError::Other(format!("opening {}: {e}", data_dir.display())))?,
    );
    let registry = prometheus::Registry::new();
    let others: Vec<u16> = (0..committee.size())
        .filter_map(|i| u16::try_from(i).ok())
        .filter(|i| *i != index)
        .collect();
    let metrics = NodeMetrics::new(
        &registry,
        &Identity {
            chain_id: &genesis.genesis.chain_id,
            validator: index,
            others: &others,
        },
    )
    .map_err(|e| other("metrics")(e.to_string()))?;
    let listen: Address = config
        .p2p
        .listen
        .parse()
        .map_err(|e: weft_network::AddressParseError| other("p2p.listen")(e.to_string()))?;
    // Genesis is the address book: every other validator's genesis address is dialed,
    // and `p2p.bootstrap` adds to them (an operator-known relay, or a changed address).
    let mut bootstrap = config
        .p2p
        .bootstrap
        .iter()
        .map(|a| a.parse())
        .collect::<Result<Vec<Address>, _>>()
        .map_err(|e| other("p2p.bootstrap")(e.to_string()))?;
    for validator in &genesis.genesis.validators {
        if validator.index == index {
            continue;
        }
        match validator.p2p_address.parse::<Address>() {
            Ok(address) if !ends_in_peer_id(&address) => tracing::warn!(
                validator = validator.index,
                %address,
                "genesis address does not end in /p2p/<peer id>; this validator is found through the others"
            ),
            Ok(address) if !bootstrap.contains(&address) => bootstrap.push(address),
            Ok(_) => {}
            Err(error) => tracing::warn!(
                validator = validator.index,
                address = %validator.p2p_address,
                %error,
                "genesis address does not parse; this validator is found through the others"
            ),
        }
    }
    let network = Network::start(
        NetworkConfig {
            keypair: p2p,
            index,
            peers: genesis.peers.clone(),
            listen: vec![listen],
            bootstrap,
            limits: NetworkLimits::default(),
        },
        &registry,
    )
    .await
    .map_err(|e| other("network")(e.to_string()))?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // One listener for the whole run, so a signal between two waits is kept.
    let (terminated_tx, terminated_rx) = watch::channel(false);
    let signals = tokio::spawn(async move {
        termination().await;
        let _ = terminated_tx.send(true);
    });
    let (engine_handle, engine_inbox) = crate::engine::channels();
    let engine_status = engine_handle.status.clone();
    let service = LedgerService {
        index,
        engine: engine_handle,
        store: store.clone(),
        network: network.clone(),
        genesis: genesis.clone(),
        limits,
        metrics: metrics.clone(),
        shutdown: shutdown_rx.clone(),
        waiters: Arc::new(tokio::sync::Semaphore::new(crate::api::MAX_WAITERS)),
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Not ready until the finalized log is synced and a quorum is connected (the
    // readiness watcher below); live as soon as the gRPC server runs.
    set_ready(&health_reporter, false).await;
    set_live(&health_reporter, true).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weft_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| other("reflection")(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weft_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| other("reflection")(e.to_string()))?;

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc.listen)
        .await
        .map_err(|e| other("grpc.listen")(format!("{}: {e}", config.grpc.listen)))?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics.listen)
        .await
        .map_err(|e| other("metrics.listen")(format!("{}: {e}", config.metrics.listen)))?;
    tracing::info!(
        validator = index,
        grpc = %config.grpc.listen,
        grpc_tls = config.grpc.tls.is_some(),
        metrics = %crate::metrics::url(config.metrics.listen),
        p2p = %network.listen_addrs()[0],
        "validator running"
    );

    let mut grpc_shutdown = shutdown_rx.clone();
    let (grpc_down_tx, grpc_down_rx) = watch::channel(false);
    let grpc_serving = grpc_server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(LedgerServer::new(service))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            async move {
                let _ = grpc_shutdown.wait_for(|stop| *stop).await;
            },
        );
    let grpc = tokio::spawn(async move {
        let served = grpc_serving.await;
        let _ = grpc_down_tx.send(true);
        served
    });
    let (ready_tx, ready_rx) = watch::channel(Err("starting".to_owned()));
    let readiness_task = tokio::spawn(watch_readiness(
        health_reporter.clone(),
        engine_status,
        network.clone(),
        2 * committee.max_faulty(),
        ready_tx,
        shutdown_rx.clone(),
    ));
    let mut metrics_shutdown = shutdown_rx.clone();
    let metrics_server = tokio::spawn(crate::metrics::serve(
        metrics_listener,
        registry,
        ready_rx,
        async move {
            let _ = metrics_shutdown.wait_for(|stop| *stop).await;
        },
    ));

    // State sync, then a replica recovered from the synced store, then the engine; again
    // whenever the engine finds itself too far behind for live catch-up.
    // A validator whose key never ran signs at once on an empty store; after its first
    // start an empty store means a wiped disk (see ReplicaConfig::fresh).
    let marker = home.signing_marker_path();
    let mut fresh = !marker.exists();
    if fresh {
        crate::config::write_private(&marker, b"this validator's key has signed\n")
            .map_err(NodeError::from)?;
    }
    let mut next_inbox = Some(engine_inbox);
    let mut work = CarriedWork::default();
    let mut first = true;
    let mut grpc_failed = false;
    // Why the validator stopped without being asked to, if it did.
    let mut failure: Option<String> = None;
    loop {
        let synced = tokio::select! {
            outcome = async {
                metrics.syncing.set(1);
                let outcome = tokio::select! {
                    outcome = crate::sync::catch_up(index, &network, &store, &committee, &limits, &metrics) => outcome,
                    never = crate::sync::serve_while_syncing(&network, &store) => match never {},
                };
                metrics.syncing.set(0);
                outcome
            } => Some(outcome),
            down = stop_requested(terminated_rx.clone(), grpc_down_rx.clone()) => {
                grpc_failed = down;
                None
            }
        };
        let Some(outcome) = synced else { break };
        tracing::info!(from = outcome.from, to = outcome.to, "state sync done");
        if !first {
            metrics.resyncs.inc();
        }
        first = false;
        let mut replica_config = ReplicaConfig::new(ValidatorIndex(index), committee.clone());
        replica_config.max_mempool_transactions = config.mempool.max_transactions;
        replica_config.decided_retention = config.consensus.decided_retention;
        replica_config.idle_interval_ms = config.consensus.idle_heartbeat_ms;
        replica_config.fresh = std::mem::take(&mut fresh);
        replica_config.boot_nonce = boot_nonce();
        let recovered = home
            .load_validator_key()
            .map_err(NodeError::from)
            .and_then(|keys| {
                Replica::recover(
                    replica_config,
                    Signer::ml_dsa_87(keys.secret),
                    store.as_ref(),
                )
                .map_err(|e| {
                    NodeError::Other(format!("recovering from {}: {e}", data_dir.display()))
                })
            });
        let replica = match recovered {
            Ok(replica) => {
                let oversized = replica.oversized_mempool_records();
                if oversized > 0 {
                    tracing::warn!(
                        oversized,
                        max_transaction_bytes = limits.max_transaction_bytes,
                        "acknowledged transactions above the lowered max_transaction_bytes were not put back in the mempool: they cannot be finalized under this limit"
                    );
                }
                replica
            }
            Err(error) => {
                let _ = shutdown_tx.send(true);
                signals.abort();
                network.shutdown().await;
                return Err(error);
            }
        };
        let Some(inbox) = next_inbox.take() else {
            break;
        };
        let engine = Engine::new(
            replica,
            inbox,
            store.clone(),
            network.clone(),
            committee.clone(),
            limits,
            metrics.clone(),
            config.mempool.max_transactions,
        )
        .resync_beyond(config.consensus.decided_retention / 2)
        .carry_over(std::mem::take(&mut work));
        let mut task = tokio::spawn(engine.run(shutdown_rx.clone()));
        tracing::info!("engine running");
        let stopped = tokio::select! {
            stopped = &mut task => stopped,
            down = stop_requested(terminated_rx.clone(), grpc_down_rx.clone()) => {
                grpc_failed = down;
                let _ = shutdown_tx.send(true);
                let _ = task.await;
                break;
            }
        };
        match stopped {
            Ok(Stopped::Resync(rest)) => {
                next_inbox = Some(rest.inbox);
                work = rest.work;
            }
            Ok(Stopped::Shutdown) => {
                if !*terminated_rx.borrow() && !grpc_failed {
                    failure = Some("the network stopped under the engine".into());
                }
                break;
            }
            Err(error) => {
                failure = Some(format!("the engine failed: {error}"));
                break;
            }
        }
    }
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = readiness_task.await;
    network.shutdown().await;
    if let Ok(Err(error)) = grpc.await {
        tracing::warn!(%error, "gRPC server stopped with an error");
    }
    if let Ok(Err(error)) = metrics_server.await {
        tracing::warn!(%error, "metrics server stopped with an error");
    }
    signals.abort();
    drop(store);
    if let Some(failure) = failure {
        return Err(NodeError::Other(format!(
            "{failure}; stopped the validator"
        )));
    }
    if grpc_failed {
        return Err(NodeError::Other(
            "the gRPC server stopped while the validator ran; stopped the validator too".into(),
        ));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Entropy that differs at every start of the replica: the clock's nanoseconds and the
/// process id. Not secret; it only has to differ from every earlier start's.
fn boot_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let folded = u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or(0);
    folded ^ (u64::from(std::process::id()) << 32)
}

/// True when `address` names its peer (`.../p2p/<peer id>`), as a dial address must.
fn ends_in_peer_id(address: &Address) -> bool {
    matches!(
        address.iter().last(),
        Some(weft_network::AddressProtocol::P2p(_))
    )
}
