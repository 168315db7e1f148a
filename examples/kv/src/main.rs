//! `weft-kv`: the key-value example's command line (see the crate docs and the README,
//! "The key-value example").
//!
//! - `weft-kv set KEY VALUE` / `weft-kv delete KEY`: submit and wait until final; with
//!   `--genesis`, also fetch the operation's finality proof and verify it.
//! - `weft-kv serve --genesis FILE --listen ADDR`: follow the ledger, apply verified
//!   operations, answer `GET /kv/{key}` and `GET /state` over HTTP.
//! - `weft-kv dump --genesis FILE --through SEQ`: follow until the state is verified
//!   through `SEQ`, print it as JSON and exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use clap::{Parser, Subcommand};
use weft_client::{committee_from_genesis, verify_proof, Client, ClientConfig, Committee};
use weft_kv::{submit, Follower, Op, State};

#[derive(Debug, Parser)]
#[command(name = "weft-kv", about = "A replicated key-value store on Weft")]
struct Cli {
    /// Validators' gRPC endpoints, tried in order (repeat or separate with commas).
    #[arg(
        long = "endpoint",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    endpoints: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set KEY to VALUE (waits until final).
    Set {
        key: String,
        value: String,
        /// Verify the finality proof against this genesis file.
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// How long to wait for finality.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Delete KEY (waits until final).
    Delete {
        key: String,
        /// Verify the finality proof against this genesis file.
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// How long to wait for finality.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Follow the ledger and answer reads over HTTP.
    Serve {
        /// The genesis file whose validator set signs the proofs.
        #[arg(long)]
        genesis: PathBuf,
        /// Where to answer `GET /kv/{key}` and `GET /state`.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Follow until the state is verified through a sequence, print it, exit.
    Dump {
        /// The genesis file whose validator set signs the proofs.
        #[arg(long)]
        genesis: PathBuf,
        /// The sequence to reach.
        #[arg(long)]
        through: u64,
        /// Give up after this long.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
}

fn committee(path: &PathBuf) -> Result<Committee, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    committee_from_genesis(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn client(endpoints: &[String]) -> Result<Client, String> {
    Client::new(endpoints.iter().cloned(), ClientConfig::default()).map_err(|e| e.to_string())
}

async fn write(
    endpoints: &[String],
    op: Op,
    genesis: Option<PathBuf>,
    timeout: Duration,
) -> Result<String, String> {
    let mut client = client(endpoints)?;
    let (tx_id, sequence) = submit(&mut client, &op, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let mut line = format!("tx_id {tx_id}\nsequence {sequence}");
    if let Some(genesis) = genesis {
        let committee = committee(&genesis)?;
        let answer = client
            .proof(tx_id, timeout)
            .await
            .map_err(|e| format!("proof: {e}"))?;
        let proven = verify_proof(&answer.proof, &committee).map_err(|e| e.to_string())?;
        line.push_str(&format!(
            "\nproof verified: final at sequence {}, certified at checkpoint {} by {} validators",
            proven.sequence.0, proven.checkpoint.0, proven.signers
        ));
    }
    Ok(line)
}

/// A follower's task.
type FollowerTask = tokio::task::JoinHandle<Result<(), weft_kv::KvError>>;

/// Starts a follower on its own task; the shared state it fills.
fn follow(
    endpoints: &[String],
    committee: Committee,
) -> Result<(Arc<RwLock<State>>, FollowerTask), String> {
    let state = Arc::new(RwLock::new(State::default()));
    let follower = Follower::new(client(endpoints)?, committee, state.clone());
    let subscription = client(endpoints)?.subscribe(Some(1), true);
    Ok((state, tokio::spawn(follower.run(subscription))))
}

fn snapshot(state: &RwLock<State>) -> State {
    state
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn as_json(state: &State) -> serde_json::Value {
    serde_json::json!({
        "verified_through": state.verified_through,
        "applied": state.applied,
        "digest": state.digest(),
        "entries": state.entries,
    })
}

async fn serve(
    endpoints: &[String],
    genesis: PathBuf,
    listen: std::net::SocketAddr,
) -> Result<String, String> {
    use axum::extract::Path;
    use axum::http::StatusCode;
    let (state, follower) = follow(endpoints, committee(&genesis)?)?;
    let for_key = state.clone();
    let for_state = state.clone();
    let app = axum::Router::new()
        .route(
            "/kv/{key}",
            axum::routing::get(move |Path(key): Path<String>| {
                let state = snapshot(&for_key);
                async move {
                    match state.entries.get(&key) {
                        Some(value) => (StatusCode::OK, value.clone()),
                        None => (StatusCode::NOT_FOUND, format!("no key {key}\n")),
                    }
                }
            }),
        )
        .route(
            "/state",
            axum::routing::get(move || {
                let state = snapshot(&for_state);
                async move { as_json(&state).to_string() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listen on {listen}: {e}"))?;
    eprintln!(
        "weft-kv: following {} and serving reads on http://{listen}",
        endpoints.join(",")
    );
    tokio::select! {
        served = axum::serve(listener, app) => served.map(|()| String::new()).map_err(|e| e.to_string()),
        followed = follower => Err(match followed {
            Ok(Ok(())) => "the follower stopped".to_string(),
            Ok(Err(error)) => format!("the follower stopped: {error}"),
            Err(error) => format!("the follower failed: {error}"),
        }),
        _ = tokio::signal::ctrl_c() => Ok(String::new()),
    }
}

async fn dump(
    endpoints: &[String],
    genesis: PathBuf,
    through: u64,
    timeout: Duration,
) -> Result<String, String> {
    let (state, follower) = follow(endpoints, committee(&genesis)?)?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = snapshot(&state);
        if now.verified_through >= through {
            follower.abort();
            return Ok(serde_json::to_string_pretty(&as_json(&now)).unwrap_or_default());
        }
        if follower.is_finished() {
            return Err(match follower.await {
                Ok(Err(error)) => format!("the follower stopped: {error}"),
                _ => "the follower stopped".to_string(),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            follower.abort();
            return Err(format!(
                "not verified through {through} after {} s (verified through {})",
                timeout.as_secs(),
                now.verified_through
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let endpoints = cli.endpoints;
    let result = match cli.command {
        Command::Set {
            key,
            value,
            genesis,
            timeout_secs,
        } => {
            write(
                &endpoints,
                Op::Set { key, value },
                genesis,
                Duration::from_secs(timeout_secs),
            )
            .await
        }
        Command::Delete {
            key,
            genesis,
            timeout_secs,
        } => {
            write(
                &endpoints,
                Op::Delete { key },
                genesis,
                Duration::from_secs(timeout_secs),
            )
            .await
        }
        Command::Serve { genesis, listen } => serve(&endpoints, genesis, listen).await,
        Command::Dump {
            genesis,
            through,
            timeout_secs,
        } => {
            dump(
                &endpoints,
                genesis,
                through,
                Duration::from_secs(timeout_secs),
            )
            .await
        }
    };
    match result {
        Ok(text) => {
            if !text.is_empty() {
                #[allow(clippy::print_stdout)]
                {
                    println!("{text}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("weft-kv: {error}");
            ExitCode::FAILURE
        }
    }
}
