//! Client commands: `weft tx submit | get | wait` and `weft status`, through
//! [`weft_client`] against one or more validators' gRPC API.
//!
//! Exit status: 0 when the command did what it says (for `--wait` and `tx wait`, the
//! transaction is final), 1 on an error, 2 when a wait ran out with the transaction
//! still unfinalized, 3 when the transaction expired unfinalized (it never will be).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

/// An answer's fields, in the order a table prints them.
type Fields = Vec<(&'static str, Value)>;
use weft_client::{Client, ClientConfig, ClientError, TxId, TxInfo};

use crate::cli::parse_duration;
use crate::config::Home;

/// Where the commands connect, and how they print.
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    /// Validators' gRPC endpoints (`http://host:port`, `https://host:port` or
    /// `host:port`), tried in order, failing over to the next; repeat the flag or separate
    /// with commas. Default: the validator of `--home`, else http://127.0.0.1:50051.
    #[arg(long = "endpoint", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// A validator home folder whose `[grpc] listen` address is the default endpoint.
    #[arg(long, env = "WEFT_HOME")]
    pub home: Option<PathBuf>,
    /// PEM of the CA that signed the validators' TLS certificates (for https).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// How to print the answer.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One `field  value` line each.
    Table,
    /// One JSON object.
    Json,
}

/// `weft tx`.
#[derive(Debug, Subcommand)]
pub enum TxCommand {
    /// Submit one transaction; prints its id (and, with --wait, where it was finalized).
    Submit {
        /// Where to connect.
        #[command(flatten)]
        client: ClientOptions,
        /// The payload in hex.
        #[arg(long, conflicts_with_all = ["file", "stdin"])]
        payload_hex: Option<String>,
        /// Read the payload from this file.
        #[arg(long, conflicts_with = "stdin")]
        file: Option<PathBuf>,
        /// `-`: read the payload from standard input.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
        stdin: Option<String>,
        /// Consensus time (Unix ms) after which it is never finalized; default one
        /// minute from now. The id covers it: the same payload and expiry is the same
        /// transaction, so resubmitting it is safe.
        #[arg(long)]
        expires_at_ms: Option<u64>,
        /// Wait until the validator finalized it.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Print a transaction's status at the validator asked.
    Get {
        /// Where to connect.
        #[command(flatten)]
        client: ClientOptions,
        /// The transaction id (64 hex digits).
        id: String,
    },
    /// Fetch a transaction's finality proof (2f + 1 signatures over a checkpoint whose
    /// digest chains to it); with --verify, check it against a genesis file.
    Proof {
        /// Where to connect.
        #[command(flatten)]
        client: ClientOptions,
        /// The transaction id (64 hex digits).
        id: String,
        /// Write the proof's bytes to this file (otherwise they are printed in hex).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Check the proof against the genesis: exit 1 unless it holds.
        #[arg(long)]
        verify: bool,
        /// The genesis file to check against (default: genesis.json in --home).
        #[arg(long, requires = "verify")]
        genesis: Option<PathBuf>,
        /// How long to wait for a stable checkpoint to cover the transaction.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Wait until a transaction is final at the validator asked.
    Wait {
        /// Where to connect.
        #[command(flatten)]
        client: ClientOptions,
        /// The transaction id (64 hex digits).
        id: String,
        /// How long to wait.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// Runs `weft tx ...`.
pub fn tx(command: TxCommand) -> ExitCode {
    let output = match &command {
        TxCommand::Submit { client, .. }
        | TxCommand::Get { client, .. }
        | TxCommand::Proof { client, .. }
        | TxCommand::Wait { client, .. } => client.output,
    };
    report(output, run_tx(command))
}

/// Runs `weft status`.
pub fn status(options: ClientOptions) -> ExitCode {
    let output = options.output;
    let answer = runtime().and_then(|rt| {
        rt.block_on(async {
            let mut client = connect(&options)?;
            let status = client.status().await?;
            Ok(vec![
                ("endpoint", json!(client.endpoint())),
                ("chain_id", json!(status.chain_id)),
                ("version", json!(status.version)),
                ("validator_index", json!(status.validator_index)),
                ("ready", json!(status.ready)),
                ("not_ready_reason", json!(status.not_ready_reason)),
                ("view", json!(status.view)),
                ("primary_index", json!(status.primary_index)),
                (
                    "last_finalized_sequence",
                    json!(status.last_finalized_sequence),
                ),
                (
                    "last_finalized_unix_ms",
                    json!(status.last_finalized_unix_ms),
                ),
                (
                    "last_finalized_consensus_time_ms",
                    json!(status.last_finalized_consensus_time_ms),
                ),
                (
                    "last_stable_checkpoint",
                    json!(status.last_stable_checkpoint),
                ),
                ("connected_validators", json!(status.connected_validators)),
                ("mempool_transactions", json!(status.mempool_transactions)),
                ("syncing", json!(status.syncing)),
                (
                    "learning_signing_floor",
                    json!(status.learning_signing_floor),
                ),
            ])
        })
    });
    report(output, answer)
}

fn run_tx(command: TxCommand) -> Result<Fields, CommandError> {
    let rt = runtime()?;
    match command {
        TxCommand::Submit {
            client,
            payload_hex,
            file,
            stdin,
            expires_at_ms,
            wait,
            timeout,
        } => {
            let payload = read_payload(payload_hex, file.as_deref(), stdin.is_some())?;
            rt.block_on(async {
                let mut client = connect(&client)?;
                if wait {
                    let expires_at_ms = expires_at_ms.unwrap_or_else(weft_client::default_expiry);
                    let info = client
                        .submit_and_wait(payload, Some(expires_at_ms), timeout)
                        .await?;
                    let mut fields = describe(&info);
                    fields.push(("expires_at_ms", json!(expires_at_ms)));
                    fields.push(("endpoint", json!(client.endpoint())));
                    Ok(fields)
                } else {
                    let submitted = client.submit(payload, expires_at_ms).await?;
                    Ok(vec![
                        ("tx_id", json!(submitted.tx_id.to_string())),
                        ("status", json!("SUBMITTED")),
                        ("expires_at_ms", json!(submitted.expires_at_ms)),
                        ("endpoint", json!(client.endpoint())),
                    ])
                }
            })
        }
        TxCommand::Get { client, id } => {
            let id = TxId::from_hex(&id)?;
            rt.block_on(async {
                let mut client = connect(&client)?;
                let info = client.get(id).await?;
                Ok(describe(&info))
            })
        }
        TxCommand::Proof {
            client,
            id,
            out,
            verify,
            genesis,
            timeout,
        } => {
            let id = TxId::from_hex(&id)?;
            let committee = if verify {
                let path = match (genesis, &client.home) {
                    (Some(path), _) => path,
                    (None, Some(home)) => Home::new(home).genesis_path(),
                    (None, None) => {
                        return Err(CommandError::Input(
                            "--verify needs --genesis FILE (or --home)".to_string(),
                        ))
                    }
                };
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| CommandError::Input(format!("{}: {e}", path.display())))?;
                Some(weft_client::committee_from_genesis(&text)?)
            } else {
                None
            };
            rt.block_on(async {
                let mut client = connect(&client)?;
                let answer = client.proof(id, timeout).await?;
                let mut fields = vec![
                    ("tx_id", json!(id.to_string())),
                    ("sequence", json!(answer.sequence)),
                    ("checkpoint_sequence", json!(answer.checkpoint_sequence)),
                    ("proof_bytes", json!(answer.proof.len())),
                ];
                if let Some(committee) = &committee {
                    let proven = weft_client::verify_proof(&answer.proof, committee)
                        .map_err(ClientError::from)?;
                    if *proven.tx_id.0.as_bytes() != id.0 || proven.sequence.0 != answer.sequence {
                        return Err(CommandError::Input(format!(
                            "the proof is for {} at sequence {}, not what was asked",
                            TxId(*proven.tx_id.0.as_bytes()),
                            proven.sequence.0
                        )));
                    }
                    fields.push(("verified", json!(true)));
                    fields.push(("signers", json!(proven.signers)));
                    fields.push(("vertex_hash", json!(proven.vertex.to_hex())));
                    fields.push(("position", json!(proven.position)));
                }
                match &out {
                    Some(path) => {
                        std::fs::write(path, &answer.proof)
                            .map_err(|e| CommandError::Input(format!("{}: {e}", path.display())))?;
                        fields.push(("written_to", json!(path.display().to_string())));
                    }
                    None => fields.push(("proof", json!(hex::encode(&answer.proof)))),
                }
                Ok(fields)
            })
        }
        TxCommand::Wait {
            client,
            id,
            timeout,
        } => {
            let id = TxId::from_hex(&id)?;
            rt.block_on(async {
                let mut client = connect(&client)?;
                let info = client.wait(id, timeout).await?;
                Ok(describe(&info))
            })
        }
    }
}

fn describe(info: &TxInfo) -> Fields {
    let mut fields = vec![
        ("tx_id", json!(info.tx_id.to_string())),
        ("status", json!(info.status.to_string())),
    ];
    if info.status == weft_client::TxStatus::Finalized {
        fields.push(("sequence", json!(info.sequence)));
        fields.push(("vertex_hash", json!(hex::encode(&info.vertex_hash))));
        fields.push(("position", json!(info.position)));
        fields.push(("finalized_unix_ms", json!(info.finalized_unix_ms)));
    }
    fields
}

/// Why a client command failed, with its exit status.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Input(String),
}

impl CommandError {
    fn exit_code(&self) -> u8 {
        match self {
            CommandError::Client(ClientError::DeadlineExceeded { .. }) => 2,
            CommandError::Client(ClientError::Expired { .. }) => 3,
            _ => 1,
        }
    }
}

/// Prints the answer (stdout) or the error (stderr, and as JSON on stdout with
/// `--output json`, so a program reads one object either way).
#[allow(clippy::print_stdout)]
fn report(output: Output, answer: Result<Fields, CommandError>) -> ExitCode {
    match answer {
        Ok(fields) => {
            println!("{}", render(output, &fields));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("weft: {error}");
            if output == Output::Json {
                let mut fields = vec![("error", json!(error.to_string()))];
                if let CommandError::Client(client) = &error {
                    if let Some(code) = client.code() {
                        fields.push(("code", json!(format!("{code:?}"))));
                    }
                    match client {
                        ClientError::DeadlineExceeded { tx_id, status } => {
                            fields.push(("tx_id", json!(tx_id.to_string())));
                            fields.push(("status", json!(status.to_string())));
                        }
                        ClientError::Expired { tx_id } => {
                            fields.push(("tx_id", json!(tx_id.to_string())));
                            fields.push(("status", json!("EXPIRED")));
                        }
                        _ => {}
                    }
                }
                println!("{}", render(Output::Json, &fields));
            }
            ExitCode::from(error.exit_code())
        }
    }
}

/// `field  value` lines in order, or one JSON object.
fn render(output: Output, fields: &Fields) -> String {
    match output {
        Output::Json => Value::Object(
            fields
                .iter()
                .map(|(key, value)| ((*key).to_string(), value.clone()))
                .collect(),
        )
        .to_string(),
        Output::Table => {
            let width = fields.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
            fields
                .iter()
                .map(|(key, value)| {
                    let text = match value {
                        Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    format!("{key:width$}  {text}")
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

/// The payload: hex, a file or stdin, at most the vertex limit's transaction size (the
/// validator refuses more, and reading more would only cost memory).
fn read_payload(
    payload_hex: Option<String>,
    file: Option<&Path>,
    stdin: bool,
) -> Result<Vec<u8>, CommandError> {
    let limit = weft_dag::Limits::default().max_transaction_bytes;
    let payload = match (payload_hex, file, stdin) {
        (Some(text), None, false) => hex::decode(text.trim())
            .map_err(|e| CommandError::Input(format!("--payload-hex: {e}")))?,
        (None, Some(path), false) => read_bounded(
            std::fs::File::open(path)
                .map_err(|e| CommandError::Input(format!("{}: {e}", path.display())))?,
            limit,
        )
        .map_err(|e| CommandError::Input(format!("{}: {e}", path.display())))?,
        (None, None, true) => read_bounded(std::io::stdin().lock(), limit)
            .map_err(|e| CommandError::Input(format!("stdin: {e}")))?,
        _ => {
            return Err(CommandError::Input(
                "give the payload as --payload-hex HEX, --file FILE or - (stdin)".to_string(),
            ))
        }
    };
    if payload.is_empty() {
        return Err(CommandError::Input("the payload is empty".to_string()));
    }
    if payload.len() > limit {
        return Err(CommandError::Input(format!(
            "the payload is {} bytes; a transaction holds at most {limit}",
            payload.len()
        )));
    }
    Ok(payload)
}

fn read_bounded(reader: impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut payload = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut payload)?;
    Ok(payload)
}

fn connect(options: &ClientOptions) -> Result<Client, CommandError> {
    let mut config = ClientConfig::default();
    if let Some(path) = &options.ca_cert {
        config.ca_certificate = Some(
            std::fs::read(path)
                .map_err(|e| CommandError::Input(format!("{}: {e}", path.display())))?,
        );
    }
    Ok(Client::new(endpoints(options)?, config)?)
}

/// `--endpoint`, else the `[grpc] listen` address of `--home` (loopback when it listens
/// on every interface; https when it serves TLS), else the devnet's first validator.
fn endpoints(options: &ClientOptions) -> Result<Vec<String>, CommandError> {
    if !options.endpoints.is_empty() {
        return Ok(options.endpoints.clone());
    }
    let Some(home) = &options.home else {
        return Ok(vec!["http://127.0.0.1:50051".to_string()]);
    };
    let config = Home::new(home)
        .load_config()
        .map_err(|e| CommandError::Input(e.to_string()))?;
    let mut address = config.grpc.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let scheme = if config.grpc.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(vec![format!("{scheme}://{address}")])
}

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Input(format!("cannot start the async runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_lists_fields_in_order_with_aligned_values() {
        let fields: Fields = vec![
            ("tx_id", json!("ab")),
            ("status", json!("FINALIZED")),
            ("sequence", json!(7)),
        ];
        assert_eq!(
            render(Output::Table, &fields),
            "tx_id     ab\nstatus    FINALIZED\nsequence  7"
        );
        let json: Value = serde_json::from_str(&render(Output::Json, &fields)).expect("JSON");
        assert_eq!(
            json,
            json!({"tx_id": "ab", "status": "FINALIZED", "sequence": 7})
        );
    }

    #[test]
    fn payloads_come_from_exactly_one_source_and_are_bounded() {
        assert_eq!(
            read_payload(Some("0aff".into()), None, false).ok(),
            Some(vec![0x0a, 0xff])
        );
        assert!(read_payload(None, None, false).is_err());
        assert!(read_payload(Some("zz".into()), None, false).is_err());
        assert!(read_payload(Some(String::new()), None, false).is_err());
        let limit = weft_dag::Limits::default().max_transaction_bytes;
        let big = "00".repeat(limit + 1);
        assert!(matches!(
            read_payload(Some(big), None, false),
            Err(CommandError::Input(message)) if message.contains("at most")
        ));
        let bounded = read_bounded(std::io::repeat(1).take(10_000_000), 100).expect("reads");
        assert_eq!(bounded.len(), 101, "reading stops one byte past the limit");
    }

    #[test]
    fn timeouts_and_expiries_have_their_own_exit_status() {
        let id = TxId::of(1, b"x");
        let timed_out = CommandError::Client(ClientError::DeadlineExceeded {
            tx_id: id,
            status: weft_client::TxStatus::Pending,
        });
        assert_eq!(timed_out.exit_code(), 2);
        assert_eq!(
            CommandError::Client(ClientError::Expired { tx_id: id }).exit_code(),
            3
        );
        assert_eq!(CommandError::Input("x".into()).exit_code(), 1);
    }
}
