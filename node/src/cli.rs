//! The `weft` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Genesis, Home};
use crate::testnet::{generate_keys, write_testnet, TestnetOptions};

/// weft: a permissioned DAG ledger validator (PBFT over DAG vertices, ML-DSA-87, libp2p QUIC).
#[derive(Debug, Parser)]
#[command(name = "weft", version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WEFT_COMMIT"), ")"), about)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Key management.
    Keys {
        /// What to do with keys.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Write a home folder for each of N validators on this machine, with a shared genesis.
    Testnet {
        /// How many validators (n = 3f + 1, at least 4).
        #[arg(long, default_value_t = 4)]
        validators: u16,
        /// Where the node folders go.
        #[arg(long)]
        out: PathBuf,
        /// Node i listens for peers on this port + i (QUIC, UDP).
        #[arg(long, default_value_t = 7000)]
        p2p_base_port: u16,
        /// Node i serves gRPC on this port + i.
        #[arg(long, default_value_t = 50051)]
        grpc_base_port: u16,
        /// Node i serves /metrics on this port + i.
        #[arg(long, default_value_t = 26660)]
        metrics_base_port: u16,
        /// The host every node listens on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The chain id.
        #[arg(long, default_value = "weft-testnet")]
        chain_id: String,
    },
    /// Run one validator from its home folder until SIGINT or SIGTERM.
    Run {
        /// The home folder: config.toml, genesis.json, keys/ (default `$WEFT_HOME`).
        #[arg(long, env = "WEFT_HOME")]
        home: PathBuf,
    },
    /// Start a local validator set as child processes until Ctrl-C.
    Devnet {
        /// How many validators.
        #[arg(long, default_value_t = 4)]
        validators: u16,
        /// Where their home folders are (created by `weft testnet` if absent).
        #[arg(long, default_value = "./devnet")]
        dir: PathBuf,
    },
    /// Print this validator's index, public key and peer id.
    ShowValidator {
        /// The home folder (default `$WEFT_HOME`).
        #[arg(long, env = "WEFT_HOME")]
        home: PathBuf,
    },
    /// Run the consensus simulator (same flags as weft-simulate; --help lists them).
    #[command(disable_help_flag = true)]
    Simulate {
        /// Simulator flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Create a home folder for one validator of a new set: keys (mode 0600), config.toml,
    /// and validator.json, this validator's entry for the set's genesis.json.
    Init(crate::testnet::InitOptions),
    /// Assemble genesis.json from every validator's validator.json.
    Genesis {
        /// The chain id (must match what each validator signed).
        #[arg(long)]
        chain_id: String,
        /// Where to write genesis.json.
        #[arg(long)]
        out: PathBuf,
        /// The validator.json files, any order.
        #[arg(required = true)]
        validators: Vec<PathBuf>,
    },
    /// Wipe this validator's data (finalized log, vertices, indexes) but keep its keys
    /// and the record of what it signed, so it cannot double-sign after the reset.
    ResetState {
        /// The home folder (default `$WEFT_HOME`).
        #[arg(long, env = "WEFT_HOME")]
        home: PathBuf,
        /// Really do it.
        #[arg(long)]
        yes: bool,
    },
    /// Open-loop load against running validators; ends with
    /// `bench: submitted=N finalized=N tps=X p50_ms=X p95_ms=X p99_ms=X max_ms=X`.
    Bench {
        /// gRPC addresses, comma-separated (host:port).
        #[arg(long, value_delimiter = ',', required = true)]
        targets: Vec<String>,
        /// Transactions per second offered, whatever the validators do.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// How long to offer load: 30s, 2m, 500ms, or seconds.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Payload bytes per transaction.
        #[arg(long, default_value_t = 512)]
        tx_size: usize,
        /// How long to wait for outstanding transactions after the load ends.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        drain: Duration,
        /// How long to wait, before offering load, for every target to finish syncing
        /// (a syncing validator refuses submissions with UNAVAILABLE).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        ready_timeout: Duration,
        /// One `SubmitTransactionAndWait` call per transaction (still at --rate), its
        /// latency the call's, instead of submit streams and a subscription.
        #[arg(long)]
        wait: bool,
    },
    /// Submit, look up and wait for transactions through validators' gRPC API.
    Tx {
        /// What to do.
        #[command(subcommand)]
        command: crate::client_cli::TxCommand,
    },
    /// Print a validator's status (`GetNodeStatus`) through its gRPC API.
    Status(crate::client_cli::ClientOptions),
    /// Print the version.
    Version,
}

/// `30s`, `2m`, `500ms`, `1h` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 30s, 2m, 500ms)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (ms, s, m, h)")),
    };
    if !seconds.is_finite() || !(0.0..=365.0 * 24.0 * 3600.0).contains(&seconds) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `weft keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate an ML-DSA-87 validator key and a libp2p identity in HOME/keys (mode 0600).
    Generate {
        /// The home folder (default `$WEFT_HOME`).
        #[arg(long, env = "WEFT_HOME")]
        home: PathBuf,
    },
}

/// Sets up tracing: `RUST_LOG` levels (default info), plain or JSON lines on stderr.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only on a terminal: never in log files or `kubectl logs`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("weft: {message}");
    ExitCode::from(1)
}

/// Runs the parsed command.
#[allow(clippy::print_stdout)]
pub fn main(cli: Cli) -> ExitCode {
    init_logging(cli.log_format);
    match cli.command {
        Command::Version => {
            println!(
                "weft {} (commit {})",
                env!("CARGO_PKG_VERSION"),
                crate::metrics::COMMIT
            );
            ExitCode::SUCCESS
        }
        Command::Keys {
            command: KeysCommand::Generate { home },
        } => match generate_keys(&home) {
            Ok((public, peer_id)) => {
                println!(
                    "validator key: {}",
                    Home::new(&home).validator_key_path().display()
                );
                println!("public key fingerprint: {}", public.fingerprint());
                println!("peer id: {peer_id}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(error),
        },
        Command::Testnet {
            validators,
            out,
            p2p_base_port,
            grpc_base_port,
            metrics_base_port,
            host,
            chain_id,
        } => {
            let options = TestnetOptions {
                validators,
                out,
                p2p_base_port,
                grpc_base_port,
                metrics_base_port,
                host,
                chain_id,
            };
            match write_testnet(&options) {
                Ok(homes) => {
                    for (index, home) in homes.iter().enumerate() {
                        println!(
                            "node{index}: {} (gRPC {}:{}, metrics {}:{})",
                            home.display(),
                            options.host,
                            usize::from(options.grpc_base_port) + index,
                            options.host,
                            usize::from(options.metrics_base_port) + index
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => fail(error),
            }
        }
        Command::ShowValidator { home } => {
            let home = Home::new(&home);
            let shown = home
                .load_config()
                .map_err(|e| e.to_string())
                .and_then(|config| {
                    let keys = home.load_validator_key().map_err(|e| e.to_string())?;
                    let p2p = home.load_p2p_key().map_err(|e| e.to_string())?;
                    Ok((config.index, keys.public, p2p.public().to_peer_id()))
                });
            match shown {
                Ok((index, public, peer)) => {
                    println!("index: {index}");
                    println!("public key fingerprint: {}", public.fingerprint());
                    println!("public key: {}", public.to_hex());
                    println!("peer id: {peer}");
                    ExitCode::SUCCESS
                }
                Err(error) => fail(error),
            }
        }
        Command::Simulate { args } => simulate(args),
        Command::Init(options) => match crate::testnet::init(&options) {
            Ok(entry) => {
                println!("home: {}", options.home.display());
                println!("genesis entry: {}", entry.display());
                println!("next: collect every validator.json, then `weft genesis --chain-id {} --out genesis.json ...` and copy genesis.json into each home", options.chain_id);
                ExitCode::SUCCESS
            }
            Err(error) => fail(error),
        },
        Command::Genesis {
            chain_id,
            out,
            validators,
        } => match crate::testnet::assemble_genesis(&chain_id, &validators, &out) {
            Ok(count) => {
                println!("genesis: {count} validators written to {}", out.display());
                ExitCode::SUCCESS
            }
            Err(error) => fail(error),
        },
        Command::ResetState { home, yes } => {
            if !yes {
                return fail(format!(
                    "reset-state deletes the finalized log under {}; add --yes to confirm",
                    home.display()
                ));
            }
            match crate::reset::reset_state(&home) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(error) => fail(error),
            }
        }
        Command::Bench {
            targets,
            rate,
            duration,
            tx_size,
            drain,
            ready_timeout,
            wait,
        } => {
            let options = crate::bench::BenchOptions {
                targets,
                rate,
                duration,
                tx_size,
                drain,
                ready_timeout,
                wait,
            };
            let ran = runtime().and_then(|rt| {
                rt.block_on(crate::bench::run(&options, |line| eprintln!("{line}")))
                    .map_err(|e| e.to_string())
            });
            match ran {
                Ok(report) => {
                    for line in report.lines() {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => fail(error),
            }
        }
        Command::Tx { command } => crate::client_cli::tx(command),
        Command::Status(options) => crate::client_cli::status(options),
        Command::Run { home } => {
            runtime().map_or_else(fail, |rt| match rt.block_on(crate::node::run(&home)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(error),
            })
        }
        Command::Devnet { validators, dir } => {
            runtime().map_or_else(fail, |rt| match rt.block_on(devnet(validators, dir)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(error),
            })
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

#[allow(clippy::print_stdout)]
fn simulate(args: Vec<String>) -> ExitCode {
    use weft_consensus::sim::{run_many, SimCommand, SimOptions};
    let options = match SimOptions::parse_command(args) {
        Ok(SimCommand::Run(options)) => options,
        Ok(SimCommand::Help) => {
            println!("{}", SimOptions::usage());
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("weft simulate: {error}\n{}", SimOptions::usage());
            return ExitCode::from(2);
        }
    };
    let summary = run_many(&options, "weft simulate", |line| println!("{line}"));
    if summary.violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `weft devnet`: a testnet folder (written if absent), one child process per
/// validator, their addresses printed, all stopped on Ctrl-C or SIGTERM.
#[allow(clippy::print_stdout)]
async fn devnet(validators: u16, dir: PathBuf) -> Result<(), String> {
    if !dir.join("node0").join("config.toml").exists() {
        write_testnet(&TestnetOptions {
            validators,
            out: dir.clone(),
            p2p_base_port: 7000,
            grpc_base_port: 50051,
            metrics_base_port: 26660,
            host: "127.0.0.1".into(),
            chain_id: "weft-devnet".into(),
        })
        .map_err(|e| e.to_string())?;
        println!(
            "devnet: wrote {validators} validator folders under {}",
            dir.display()
        );
    }
    let genesis =
        Genesis::load(&dir.join("node0").join("genesis.json")).map_err(|e| e.to_string())?;
    let count = genesis.genesis.validators.len();
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the weft binary: {e}"))?;
    let mut children = Vec::new();
    let mut targets = Vec::new();
    for index in 0..count {
        let home = dir.join(format!("node{index}"));
        let config = Home::new(&home).load_config().map_err(|e| e.to_string())?;
        let log = std::fs::File::create(home.join("node.log"))
            .map_err(|e| format!("{}: {e}", home.join("node.log").display()))?;
        let child = tokio::process::Command::new(&exe)
            .arg("run")
            .arg("--home")
            .arg(&home)
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start validator {index}: {e}"))?;
        println!(
            "validator {index}: gRPC {}  metrics {}  log {}",
            config.grpc.listen,
            crate::metrics::url(config.metrics.listen),
            home.join("node.log").display()
        );
        children.push(child);
        targets.push(config.grpc.listen.to_string());
    }
    println!(
        "devnet: {count} validators running; try\n  grpcurl -plaintext -d '{{\"payload\":\"aGVsbG8=\"}}' 127.0.0.1:50051 weft.v1.Ledger/SubmitTransaction\n  {} bench --targets {} --rate 1000 --duration 10s\nCtrl-C stops them all.",
        exe.display(),
        targets.join(",")
    );
    crate::node::termination().await;
    println!("devnet: stopping");
    for child in &mut children {
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
            // SIGTERM: each validator flushes and exits 0.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for (index, child) in children.iter_mut().enumerate() {
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(Ok(status)) => println!("validator {index}: {status}"),
            _ => {
                let _ = child.kill().await;
                println!("validator {index}: killed after 10 s");
            }
        }
    }
    Ok(())
}
