//! End-to-end: real `weft` processes on 127.0.0.1, spoken to over gRPC.

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::Code;
use weft_proto::v1;
use weft_proto::v1::ledger_client::LedgerClient;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const TIMEOUT: Duration = Duration::from_secs(120);

/// One expiry for every transaction these tests submit themselves (so a resubmission is
/// the same transaction): 290 s after first use, within the 300 s validators accept.
fn expiry_ms() -> u64 {
    static EXPIRY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *EXPIRY.get_or_init(|| unix_ms() + 290_000)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Child validators, stopped (SIGKILL) whatever happens to the test.
struct Validators {
    children: Vec<Option<Child>>,
    homes: Vec<PathBuf>,
}

/// Lines of each validator's log printed when a test fails.
const LOG_TAIL_LINES: usize = 150;

impl Drop for Validators {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failing test shows what each validator was doing (the harness captures this).
        if std::thread::panicking() {
            for (index, home) in self.homes.iter().enumerate() {
                let log = std::fs::read_to_string(home.join("node.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                eprintln!(
                    "===== validator {index}: last {} of {} log lines =====\n{}",
                    tail.len(),
                    lines.len(),
                    tail.join("\n")
                );
            }
        }
    }
}

impl Validators {
    fn start(homes: &[PathBuf]) -> Validators {
        Validators {
            children: homes.iter().map(|home| Some(spawn(home))).collect(),
            homes: homes.to_vec(),
        }
    }

    /// SIGKILL one validator: no flush, no goodbye.
    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    fn signal(&mut self, index: usize, signal: nix::sys::signal::Signal) {
        let child = self.children[index].as_ref().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal");
    }

    fn restart(&mut self, index: usize, home: &Path) {
        assert!(
            self.children[index].is_none(),
            "validator {index} still runs"
        );
        self.children[index] = Some(spawn(home));
    }

    /// SIGTERM every validator and expect a clean exit.
    fn stop_cleanly(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        }
        for (index, slot) in self.children.iter_mut().enumerate() {
            let Some(mut child) = slot.take() else {
                continue;
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    assert!(status.success(), "validator {index} exited with {status}");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "validator {index} ignored SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn spawn(home: &Path) -> Child {
    spawn_in(home, None)
}

/// `weft run`, inside `namespace` if given (`ip netns exec` replaces itself with weft, so
/// the child is the validator).
fn spawn_in(home: &Path, namespace: Option<&Netns>) -> Child {
    let log = std::fs::File::create(home.join("node.log")).expect("log file");
    let mut command = match namespace {
        Some(namespace) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &namespace.name, WEFT]);
            command
        }
        None => Command::new(WEFT),
    };
    command
        .arg("run")
        .arg("--home")
        .arg(home)
        // WEFT_E2E_LOG overrides the validators' log levels when chasing a failure.
        .env(
            "RUST_LOG",
            std::env::var("WEFT_E2E_LOG").unwrap_or_else(|_| "info".to_owned()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn weft run")
}

/// A base port with `count` consecutive free TCP and UDP ports (checked, then released).
fn free_base(count: u16) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = probe.local_addr().expect("addr").port();
        drop(probe);
        if base > 60_000 {
            continue;
        }
        let free = (0..count).all(|i| {
            TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && UdpSocket::bind(("127.0.0.1", base + i)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free port range");
}

fn testnet(dir: &Path, n: u16) -> (Vec<PathBuf>, Vec<String>) {
    let (homes, endpoints, _) = testnet_with_metrics(dir, n);
    (homes, endpoints)
}

/// Also the metrics addresses.
fn testnet_with_metrics(dir: &Path, n: u16) -> (Vec<PathBuf>, Vec<String>, Vec<String>) {
    let p2p = free_base(n);
    let grpc = free_base(n);
    let metrics = free_base(n);
    let status = Command::new(WEFT)
        .args(["testnet", "--validators", &n.to_string(), "--out"])
        .arg(dir)
        .args(["--p2p-base-port", &p2p.to_string()])
        .args(["--grpc-base-port", &grpc.to_string()])
        .args(["--metrics-base-port", &metrics.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("weft testnet");
    assert!(status.success());
    let homes = (0..n).map(|i| dir.join(format!("node{i}"))).collect();
    let endpoints = (0..n)
        .map(|i| format!("http://127.0.0.1:{}", grpc + i))
        .collect();
    let metrics = (0..n)
        .map(|i| format!("127.0.0.1:{}", metrics + i))
        .collect();
    (homes, endpoints, metrics)
}

/// `GET /metrics` over plain HTTP/1.0; the body.
async fn scrape(address: &str) -> String {
    let (code, body) = http_get(address, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    body
}

/// `GET path` on the metrics endpoint: the status code and the body.
async fn http_get(address: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("metrics endpoint");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: weft\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut response = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut response))
        .await
        .expect("answer in time")
        .expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_owned())
}

/// The exposition-format rules `promtool check metrics` enforces that our names can
/// break: every family has HELP and TYPE, counters end in `_total`, histograms have
/// buckets, a sum and a count.
fn lint_metrics(body: &str) {
    let mut helped = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP text");
            assert!(!help.trim().is_empty(), "{name} has an empty HELP");
            helped.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE kind");
            assert!(helped.contains(name), "{name} has TYPE but no HELP");
            match kind {
                "counter" => assert!(name.ends_with("_total"), "counter {name} lacks _total"),
                "histogram" => {
                    for suffix in ["_bucket{", "_sum", "_count"] {
                        assert!(
                            body.contains(&format!("{name}{suffix}")),
                            "histogram {name} lacks {suffix}"
                        );
                    }
                }
                "gauge" => {}
                other => panic!("{name}: unexpected type {other}"),
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().expect("a sample name");
            assert!(
                helped
                    .iter()
                    .any(|family| name.starts_with(family.as_str())),
                "sample {name} outside any family"
            );
        }
    }
}

/// The series operators alert and build dashboards on, in a scrape of a validator of a
/// connected 4-validator set: one connected gauge, every labelled counter present (at 0
/// where nothing happened), build info, process metrics and a series per other validator.
fn assert_operator_series(body: &str) {
    let value = |sample: &str| -> Option<f64> {
        body.lines().find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    };
    assert_eq!(value("weft_connected_validators"), Some(3.0), "{body}");
    assert!(
        !body.contains("weft_network_connected_validators"),
        "one connected-validators gauge"
    );
    for kind in ["vertex", "vote", "pre_prepare", "primary_prepare"] {
        let sample = format!("weft_equivocations_total{{kind=\"{kind}\"}}");
        assert_eq!(value(&sample), Some(0.0), "{sample} present at 0");
    }
    for sample in [
        "weft_invalid_messages_total{reason=\"signature\"}",
        "weft_network_peer_penalties_total{reason=\"malformed\"}",
        "weft_network_dropped_messages_total{reason=\"inbound_queue_full\"}",
        "weft_submitted_transactions_total{outcome=\"mempool_full\"}",
    ] {
        assert!(value(sample).is_some(), "{sample} missing");
    }
    let build = body
        .lines()
        .find(|l| l.starts_with("weft_build_info{"))
        .expect("weft_build_info");
    assert!(
        build.contains("chain_id=\"") && build.contains("commit=\"") && build.ends_with(" 1"),
        "{build}"
    );
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(value(process).is_some_and(|v| v > 0.0), "{process}");
    }
    let peers: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("weft_peer_connected{"))
        .collect();
    assert_eq!(peers.len(), 3, "one series per other validator: {peers:?}");
    assert!(peers.iter().all(|l| l.ends_with(" 1")), "{peers:?}");
    let heard = body
        .lines()
        .filter(|l| {
            l.starts_with("weft_peer_last_message_timestamp_seconds{") && !l.ends_with(" 0")
        })
        .count();
    assert_eq!(heard, 3, "heard from every other validator");
    let sequences = body
        .lines()
        .filter(|l| l.starts_with("weft_peer_finalized_sequence{") && !l.ends_with(" 0"))
        .count();
    assert_eq!(sequences, 3, "every other validator reported its sequence");
}

/// A refusal's code and `google.rpc.ErrorInfo` reason.
fn reason_of(status: &tonic::Status) -> (Code, String) {
    (
        status.code(),
        weft_proto::rpc::details(status).reason.unwrap_or_default(),
    )
}

async fn connect(endpoint: &str) -> LedgerClient<tonic::transport::Channel> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(client) = LedgerClient::connect(endpoint.to_owned()).await {
            return client;
        }
        assert!(Instant::now() < deadline, "{endpoint} never accepted gRPC");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every validator connected to the others and done syncing.
async fn wait_connected(clients: &mut [LedgerClient<tonic::transport::Channel>]) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut all = true;
        for client in clients.iter_mut() {
            let status = status(client).await;
            all &= status.connected_validators == 3 && !status.syncing;
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "validators never all connected and synced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `condition` holds on validator `client`'s status, or fails with `what`.
async fn wait_status(
    client: &mut LedgerClient<tonic::transport::Channel>,
    what: &str,
    condition: impl Fn(&v1::GetNodeStatusResponse) -> bool,
) -> v1::GetNodeStatusResponse {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(answer) = client.get_node_status(v1::GetNodeStatusRequest {}).await {
            let answer = answer.into_inner();
            if condition(&answer) {
                return answer;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Streams `payloads` through one `SubmitTransactions` call; the ids answered OK.
async fn submit_stream(
    client: &mut LedgerClient<tonic::transport::Channel>,
    payloads: Vec<Vec<u8>>,
) -> Vec<Vec<u8>> {
    let count = payloads.len();
    let requests =
        tokio_stream::iter(
            payloads
                .into_iter()
                .map(|payload| v1::SubmitTransactionRequest {
                    payload,
                    expires_at_ms: expiry_ms(),
                }),
        );
    let mut answers = client
        .submit_transactions(requests)
        .await
        .expect("stream accepted")
        .into_inner();
    let mut accepted = Vec::new();
    let mut answered = 0;
    while let Some(answer) = answers.message().await.expect("answer") {
        answered += 1;
        if answer.code == Code::Ok as i32 {
            accepted.push(answer.tx_id);
        } else {
            // Mempool full, or a payload this validator already holds or finalized.
            let full = answer.code == Code::ResourceExhausted as i32;
            assert!(
                (full && answer.reason == "MEMPOOL_FULL" && answer.retry_after_ms > 0)
                    || (answer.code == Code::AlreadyExists as i32
                        && answer.reason == "ALREADY_SUBMITTED"),
                "unexpected refusal: {} {} {}",
                answer.code,
                answer.reason,
                answer.message
            );
        }
    }
    assert_eq!(answered, count, "one answer per submission");
    accepted
}

/// The whole finalized log up to `tip`: (sequence, anchor, vertices, digest) and the
/// transaction ids in final order.
async fn full_log(
    client: &mut LedgerClient<tonic::transport::Channel>,
    tip: u64,
) -> (Vec<(u64, Vec<u8>, Vec<Vec<u8>>, Vec<u8>)>, Vec<Vec<u8>>) {
    let mut log = Vec::new();
    let mut ids = Vec::new();
    let mut from = 1;
    while from <= tip {
        let entries = client
            .list_finalized(v1::ListFinalizedRequest {
                from_sequence: from,
                limit: 0,
                include_transaction_ids: true,
            })
            .await
            .expect("list")
            .into_inner()
            .entries;
        assert!(!entries.is_empty());
        for entry in entries {
            if entry.sequence > tip {
                break;
            }
            assert_eq!(entry.sequence, from, "no gap in the log");
            from = entry.sequence + 1;
            ids.extend(entry.transaction_ids);
            log.push((
                entry.sequence,
                entry.anchor,
                entry.vertex_hashes,
                entry.state_digest,
            ));
        }
    }
    (log, ids)
}

async fn status(client: &mut LedgerClient<tonic::transport::Channel>) -> v1::GetNodeStatusResponse {
    client
        .get_node_status(v1::GetNodeStatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_finalize_a_thousand_transactions_identically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints, metrics) = testnet_with_metrics(dir.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;
    let deadline = Instant::now() + TIMEOUT;

    let mut ids = Vec::new();
    for i in 0..1_000u32 {
        let client = &mut clients[(i % 4) as usize];
        let payload = format!("e2e transaction {i}").into_bytes();
        let answer = client
            .submit_transaction(v1::SubmitTransactionRequest {
                payload,
                expires_at_ms: expiry_ms(),
            })
            .await
            .expect("submit")
            .into_inner();
        assert_eq!(answer.tx_id.len(), 32);
        assert_eq!(answer.expires_at_ms, expiry_ms());
        ids.push(answer.tx_id);
    }

    // Every transaction final on every validator.
    for (index, client) in clients.iter_mut().enumerate() {
        for id in &ids {
            loop {
                let answer = client
                    .get_transaction(v1::GetTransactionRequest { tx_id: id.clone() })
                    .await;
                if let Ok(answer) = answer {
                    if answer.get_ref().status == v1::TransactionStatus::Finalized as i32 {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline + TIMEOUT,
                    "validator {index} never finalized a transaction"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    // Identical finalized sequences up to the lowest tip.
    let mut tips = Vec::new();
    for client in &mut clients {
        tips.push(status(client).await.last_finalized_sequence);
    }
    let tip = *tips.iter().min().expect("four");
    assert!(tip > 0);
    let mut logs = Vec::new();
    for client in &mut clients {
        logs.push(full_log(client, tip).await);
    }
    for log in &logs[1..] {
        assert_eq!(log, &logs[0], "finalized sequences or transactions differ");
    }
    let (logs, _): (Vec<_>, Vec<_>) = logs.into_iter().unzip();

    // Each vertex a client can check: encoded bytes hash to the hash asked for.
    let some_vertex = logs[0]
        .iter()
        .find_map(|(_, _, hashes, _)| hashes.first().cloned())
        .expect("a finalized vertex");
    let vertex = clients[2]
        .get_vertex(v1::GetVertexRequest {
            hash: some_vertex.clone(),
        })
        .await
        .expect("vertex")
        .into_inner();
    assert_eq!(vertex.hash, some_vertex);
    assert!(!vertex.encoded.is_empty() && !vertex.signature.is_empty());

    // Bad input gets its status, and the node keeps serving.
    let client = &mut clients[1];
    // Each refusal names its reason (google.rpc.ErrorInfo) for programs to act on.
    let code = |r: Result<tonic::Response<v1::SubmitTransactionResponse>, tonic::Status>| {
        reason_of(&r.expect_err("refused"))
    };
    assert_eq!(
        code(
            client
                .submit_transaction(v1::SubmitTransactionRequest {
                    payload: vec![],
                    expires_at_ms: 0,
                })
                .await
        ),
        (Code::InvalidArgument, "EMPTY_PAYLOAD".to_string())
    );
    assert_eq!(
        code(
            client
                .submit_transaction(v1::SubmitTransactionRequest {
                    payload: vec![1; 1 << 20],
                    expires_at_ms: 0,
                })
                .await
        ),
        (Code::InvalidArgument, "PAYLOAD_TOO_LARGE".to_string())
    );
    assert_eq!(
        code(
            client
                .submit_transaction(v1::SubmitTransactionRequest {
                    payload: b"e2e transaction 7".to_vec(),
                    expires_at_ms: expiry_ms(),
                })
                .await
        ),
        (Code::AlreadyExists, "ALREADY_SUBMITTED".to_string())
    );
    // Expired, and further ahead than the dedup window.
    assert_eq!(
        code(
            client
                .submit_transaction(v1::SubmitTransactionRequest {
                    payload: b"e2e transaction 7".to_vec(),
                    expires_at_ms: 1,
                })
                .await
        ),
        (Code::FailedPrecondition, "EXPIRED".to_string())
    );
    assert_eq!(
        code(
            client
                .submit_transaction(v1::SubmitTransactionRequest {
                    payload: b"e2e transaction 7".to_vec(),
                    expires_at_ms: unix_ms() + 3_600_000,
                })
                .await
        ),
        (Code::InvalidArgument, "EXPIRY_TOO_FAR".to_string())
    );
    // Left at 0, the validator fills in its clock + 120 s: another transaction.
    let filled = client
        .submit_transaction(v1::SubmitTransactionRequest {
            payload: b"e2e transaction 7".to_vec(),
            expires_at_ms: 0,
        })
        .await
        .expect("a new expiry is a new transaction")
        .into_inner();
    let now = unix_ms();
    assert!(filled.expires_at_ms > now + 100_000 && filled.expires_at_ms <= now + 120_000);
    let bad_id = client
        .get_transaction(v1::GetTransactionRequest { tx_id: vec![1; 5] })
        .await
        .expect_err("short id");
    assert_eq!(
        reason_of(&bad_id),
        (Code::InvalidArgument, "MALFORMED_DIGEST".to_string())
    );
    let unknown = client
        .get_transaction(v1::GetTransactionRequest { tx_id: vec![7; 32] })
        .await
        .expect_err("unknown");
    assert_eq!(
        reason_of(&unknown),
        (Code::NotFound, "TRANSACTION_NOT_FOUND".to_string())
    );
    let past = client
        .list_finalized(v1::ListFinalizedRequest {
            from_sequence: u64::MAX,
            limit: 1,
            include_transaction_ids: false,
        })
        .await
        .expect_err("past the tip");
    assert_eq!(reason_of(&past), (Code::OutOfRange, "PAST_TIP".to_string()));
    assert!(weft_proto::rpc::details(&past).metadata.contains_key("tip"));
    let bad_hash = client
        .get_vertex(v1::GetVertexRequest { hash: vec![0; 3] })
        .await
        .expect_err("short hash");
    assert_eq!(
        reason_of(&bad_hash),
        (Code::InvalidArgument, "MALFORMED_DIGEST".to_string())
    );
    let validators_answer = client
        .get_validators(v1::GetValidatorsRequest {})
        .await
        .expect("validators")
        .into_inner();
    assert_eq!(validators_answer.validators.len(), 4);
    assert_eq!(validators_answer.max_faulty, 1);
    let indices: BTreeSet<u32> = validators_answer
        .validators
        .iter()
        .map(|v| v.index)
        .collect();
    assert_eq!(indices, (0..4).collect());
    assert!(
        status(client).await.last_finalized_sequence >= tip,
        "still serving"
    );

    // The finality histograms saw the thousand transactions, and the text is clean.
    let mut observed = 0.0;
    for address in &metrics {
        let body = scrape(address).await;
        lint_metrics(&body);
        let count = |name: &str| -> f64 {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        observed += count("weft_transaction_finality_seconds_count ");
        assert!(count("weft_vertex_finality_seconds_count ") > 0.0);
        assert!(count("weft_finalized_sequence ") >= tip as f64);
        assert_eq!(count("weft_syncing "), 0.0);
        assert_operator_series(&body);
    }
    assert_eq!(
        observed, 1_000.0,
        "each transaction timed once, where it was accepted"
    );

    validators.stop_cleanly();
}

#[test]
fn run_refuses_to_start_without_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, _) = testnet(dir.path(), 4);
    std::fs::remove_file(homes[0].join("keys").join("validator.key")).expect("remove key");
    let output = Command::new(WEFT)
        .arg("run")
        .arg("--home")
        .arg(&homes[0])
        .output()
        .expect("weft run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("weft keys generate"), "{stderr}");
    assert!(
        !homes[0].join("keys").join("validator.key").exists(),
        "never generated silently"
    );
}

/// Streams batches of transactions to `clients` in turn until `stop`; the ids accepted.
fn spawn_load(
    mut clients: Vec<LedgerClient<tonic::transport::Channel>>,
    tag: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Vec<u8>>> {
    tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut next = 0u64;
        // Bounded: at most 200 batches of 50 (about 10,000 transactions).
        for round in 0..200usize {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            let payloads: Vec<Vec<u8>> = (0..50)
                .map(|_| {
                    next += 1;
                    format!("{tag} {next}").into_bytes()
                })
                .collect();
            let target = round % clients.len();
            // Every fifth batch also goes to a second validator, as a client retrying
            // elsewhere would send it: both may accept it, and it must still be final once.
            if round % 5 == 0 {
                let twice: Vec<Vec<u8>> = payloads.clone();
                let other = (target + 1) % clients.len();
                accepted.extend(submit_stream(&mut clients[other], twice).await);
            }
            accepted.extend(submit_stream(&mut clients[target], payloads).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        accepted
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_validator_catches_up_and_every_acknowledged_transaction_is_final_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints) = testnet(dir.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;
    // The victim is not view 0's primary, so this test is about catching up, not
    // about view changes (the next test).
    let victim: usize = 3;
    assert_ne!(status(&mut clients[0]).await.primary_index, 3);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = spawn_load(clients[..3].to_vec(), "crash load", stop.clone());
    wait_status(
        &mut clients[victim],
        "the victim finalizes under load",
        |s| s.last_finalized_sequence >= 5,
    )
    .await;
    validators.kill(victim);
    let at_kill = status(&mut clients[0]).await.last_finalized_sequence;
    // The others keep finalizing without it.
    for client in &mut clients[..3] {
        wait_status(client, "the survivors finalize without the victim", |s| {
            s.last_finalized_sequence >= at_kill + 10
        })
        .await;
    }
    validators.restart(victim, &homes[victim]);
    clients[victim] = connect(&endpoints[victim]).await;
    // Keep the load on while it catches up, then stop it.
    let behind = status(&mut clients[0]).await.last_finalized_sequence;
    wait_status(
        &mut clients[victim],
        "the restarted victim catches up",
        |s| s.last_finalized_sequence >= behind,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let accepted = load.await.expect("load task");
    assert!(accepted.len() >= 500, "only {} accepted", accepted.len());

    // Every acknowledged transaction final, on every validator, exactly once.
    assert_final_exactly_once(&mut clients, &accepted).await;
    validators.stop_cleanly();
}

/// Issue 11 (durable acknowledgement): SIGKILL a validator right after it answered a
/// stream of submissions, three times. Its peers get those transactions only through its
/// vertices, so whatever was still in its mempool at the kill lives only in its store.
/// Every acknowledged transaction ends final on every validator, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_killed_right_after_acknowledging_finalizes_everything_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints) = testnet(dir.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;
    let victim: usize = 3;
    let mut accepted = Vec::new();
    for cycle in 0..3u32 {
        let payloads: Vec<Vec<u8>> = (0..200u32)
            .map(|i| format!("acknowledged then killed {cycle} {i}").into_bytes())
            .collect();
        let acknowledged = submit_stream(&mut clients[victim], payloads).await;
        validators.kill(victim);
        assert!(
            !acknowledged.is_empty(),
            "cycle {cycle}: nothing acknowledged"
        );
        accepted.extend(acknowledged);
        validators.restart(victim, &homes[victim]);
        clients[victim] = connect(&endpoints[victim]).await;
        wait_connected(&mut clients).await;
    }
    assert_final_exactly_once(&mut clients, &accepted).await;
    validators.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_primary_changes_the_view_and_finalization_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints) = testnet(dir.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;
    let before = status(&mut clients[1]).await;
    let primary = usize::try_from(before.primary_index).expect("index");
    validators.kill(primary);
    let survivors: Vec<usize> = (0..4).filter(|i| *i != primary).collect();

    let payloads: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("after the primary stopped {i}").into_bytes())
        .collect();
    let accepted = submit_stream(&mut clients[survivors[0]], payloads).await;
    assert_eq!(accepted.len(), 100);
    for &index in &survivors {
        let after = wait_status(&mut clients[index], "a view change", |s| {
            s.view > before.view && s.primary_index != before.primary_index
        })
        .await;
        assert_ne!(after.primary_index, before.primary_index);
    }
    for &index in &survivors {
        for id in &accepted {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let answer = clients[index]
                    .get_transaction(v1::GetTransactionRequest { tx_id: id.clone() })
                    .await;
                if matches!(&answer, Ok(a) if a.get_ref().status == v1::TransactionStatus::Finalized as i32)
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "validator {index} never finalized {} after the view change",
                    hex(id)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The subscription replays the log and then follows it live.
    let mut subscription = clients[survivors[1]]
        .subscribe_finalized(v1::SubscribeFinalizedRequest {
            from_sequence: 1,
            include_transaction_ids: true,
            from_tip: false,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let tip = status(&mut clients[survivors[1]])
        .await
        .last_finalized_sequence;
    let mut seen = std::collections::HashSet::new();
    let mut expected = 1;
    while expected <= tip {
        let entry = tokio::time::timeout(TIMEOUT, subscription.message())
            .await
            .expect("an entry in time")
            .expect("stream healthy")
            .expect("stream open");
        assert_eq!(entry.sequence, expected, "entries in order, no gap");
        expected += 1;
        seen.extend(entry.transaction_ids);
    }
    assert!(accepted.iter().all(|id| seen.contains(id)));
    let live = submit_stream(
        &mut clients[survivors[2]],
        vec![b"seen live by a subscriber".to_vec()],
    )
    .await;
    let deadline = Instant::now() + TIMEOUT;
    while !seen.contains(&live[0]) {
        let entry = tokio::time::timeout_at(deadline.into(), subscription.message())
            .await
            .expect("the live transaction in time")
            .expect("stream healthy")
            .expect("stream open");
        assert_eq!(entry.sequence, expected, "live entries in order");
        expected += 1;
        seen.extend(entry.transaction_ids);
    }
    drop(subscription);

    // The old primary, wiped by reset-state (keys and signing record kept), comes back,
    // syncs the log from its peers and agrees with them.
    let reset = Command::new(WEFT)
        .args(["reset-state", "--yes", "--home"])
        .arg(&homes[primary])
        .output()
        .expect("weft reset-state");
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert!(homes[primary].join("keys").join("validator.key").exists());
    validators.restart(primary, &homes[primary]);
    clients[primary] = connect(&endpoints[primary]).await;
    let tip = status(&mut clients[survivors[0]])
        .await
        .last_finalized_sequence;
    let back = wait_status(&mut clients[primary], "the reset validator is back", |s| {
        !s.syncing && s.last_finalized_sequence >= tip
    })
    .await;
    assert!(back.last_finalized_sequence >= tip);
    let (theirs, their_ids) = full_log(&mut clients[survivors[0]], tip).await;
    let (ours, our_ids) = full_log(&mut clients[primary], tip).await;
    assert_eq!(ours, theirs, "the synced log is the survivors' log");
    assert_eq!(our_ids, their_ids);
    validators.stop_cleanly();
}

/// Every id in `accepted` is finalized exactly once on every validator (nothing twice at
/// all), and all logs agree up to the highest tip seen when the check starts.
async fn assert_final_exactly_once(
    clients: &mut [LedgerClient<tonic::transport::Channel>],
    accepted: &[Vec<u8>],
) {
    let mut tip = 0;
    for client in clients.iter_mut() {
        tip = tip.max(status(client).await.last_finalized_sequence);
    }
    let mut logs = Vec::new();
    for (index, client) in clients.iter_mut().enumerate() {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let own_tip = status(client).await.last_finalized_sequence;
            let (log, ids) = full_log(client, own_tip).await;
            let finalized: std::collections::HashMap<&Vec<u8>, usize> =
                ids.iter().fold(Default::default(), |mut counts, id| {
                    *counts.entry(id).or_default() += 1;
                    counts
                });
            if let Some((id, count)) = finalized.iter().find(|(_, count)| **count > 1) {
                panic!("validator {index} finalized {} {count} times", hex(id));
            }
            let missing = accepted
                .iter()
                .filter(|id| !finalized.contains_key(id))
                .count();
            if missing == 0 && log.len() as u64 >= tip {
                logs.push(log[..usize::try_from(tip).expect("tip")].to_vec());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "validator {index}: {missing} acknowledged transactions never finalized"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for (index, log) in logs.iter().enumerate().skip(1) {
        assert_eq!(log, &logs[0], "validator {index}'s log differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_paused_past_the_kept_certificates_resyncs_while_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints, metrics) = testnet_with_metrics(dir.path(), 4);
    // Peers keep only 32 commit certificates, so a validator that misses more than that
    // cannot catch up live and must resync from their logs.
    for home in &homes {
        let path = home.join("config.toml");
        let config = std::fs::read_to_string(&path).expect("config");
        assert!(config.contains("decided_retention = 1024"), "{config}");
        std::fs::write(
            &path,
            config.replace("decided_retention = 1024", "decided_retention = 32"),
        )
        .expect("write config");
    }
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;
    let victim: usize = 3;
    assert_ne!(status(&mut clients[0]).await.primary_index, 3);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = spawn_load(clients[..3].to_vec(), "pause load", stop.clone());
    validators.signal(victim, nix::sys::signal::Signal::SIGSTOP);
    let at_pause = status(&mut clients[0]).await.last_finalized_sequence;
    for client in &mut clients[..3] {
        wait_status(
            client,
            "the others finalize 100 sequences without it",
            |s| s.last_finalized_sequence >= at_pause + 100,
        )
        .await;
    }
    validators.signal(victim, nix::sys::signal::Signal::SIGCONT);
    let ahead = status(&mut clients[0]).await.last_finalized_sequence;
    wait_status(
        &mut clients[victim],
        "the paused validator catches up",
        |s| !s.syncing && s.last_finalized_sequence >= ahead,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let accepted = load.await.expect("load task");
    let body = scrape(&metrics[victim]).await;
    let resyncs: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("weft_resyncs_total ")?.trim().parse().ok())
        .expect("weft_resyncs_total");
    assert!(resyncs >= 1.0, "caught up without resyncing: {body}");
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {body}"))
    };
    // The resync took certified batches from honest peers and refused none of them.
    assert!(value("weft_sync_entries_total ") >= 1.0, "{body}");
    assert_eq!(value("weft_sync_rejected_batches_total "), 0.0, "{body}");
    assert_final_exactly_once(&mut clients, &accepted).await;
    validators.stop_cleanly();
}

/// Issue 11 (a wiped validator never double-signs): SIGKILL a validator under load and
/// delete its data folder, keys kept and no `reset-state`. An empty store is not a fresh
/// validator: it learns a signing floor from 2f + 1 peers before it signs again. No
/// validator may see proof of a conflicting message (`weft_equivocations_total` stays
/// absent everywhere), the wiped one catches up, and every acknowledged transaction is
/// final exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_validator_rejoins_without_signing_a_conflicting_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints, metrics) = testnet_with_metrics(dir.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;
    let victim: usize = 3;
    assert_ne!(status(&mut clients[0]).await.primary_index, 3);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = spawn_load(clients[..3].to_vec(), "wipe load", stop.clone());
    // It signs vertices and votes for a while first.
    wait_status(
        &mut clients[victim],
        "the victim finalizes under load",
        |s| s.last_finalized_sequence >= 10,
    )
    .await;
    validators.kill(victim);
    let data = homes[victim].join("data");
    assert!(data.is_dir(), "no data folder at {}", data.display());
    std::fs::remove_dir_all(&data).expect("wipe the data folder");
    assert!(
        homes[victim]
            .join("keys")
            .join("validator.started")
            .is_file(),
        "the marker of a validator that signed before is kept with its keys"
    );
    let at_kill = status(&mut clients[0]).await.last_finalized_sequence;
    for client in &mut clients[..3] {
        wait_status(client, "the survivors finalize without the victim", |s| {
            s.last_finalized_sequence >= at_kill + 10
        })
        .await;
    }
    validators.restart(victim, &homes[victim]);
    clients[victim] = connect(&endpoints[victim]).await;
    let ahead = status(&mut clients[0]).await.last_finalized_sequence;
    wait_status(
        &mut clients[victim],
        "the wiped validator catches up and learns its signing floor",
        |s| !s.syncing && !s.learning_signing_floor && s.last_finalized_sequence >= ahead,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let accepted = load.await.expect("load task");
    assert!(accepted.len() >= 500, "only {} accepted", accepted.len());
    assert_final_exactly_once(&mut clients, &accepted).await;
    let log = std::fs::read_to_string(homes[victim].join("node.log")).expect("victim log");
    assert!(
        log.contains("signing floor learned"),
        "the wiped validator never learned a signing floor (taken for fresh?): {log}"
    );
    for (index, address) in metrics.iter().enumerate() {
        let body = scrape(address).await;
        let proofs: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("weft_equivocations_total{") && !l.ends_with(" 0"))
            .collect();
        assert!(
            proofs.is_empty(),
            "validator {index} holds proof of a conflicting message: {proofs:?}"
        );
        assert!(
            body.lines().any(|l| l == "weft_learning_signing_floor 0"),
            "validator {index} still reports learning its signing floor"
        );
    }
    validators.stop_cleanly();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Issue 12: four validators set up as four operators would (`weft init` each, no
/// bootstrap, then one `weft genesis`) form a network: genesis is the address book, so
/// every validator dials the others' genesis addresses, and the set finalizes. Then one
/// validator is cut off from the others: it is live but not ready (NOT_SERVING, and says
/// why), while the other three stay ready and keep finalizing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separately_initialized_validators_connect_through_genesis_and_finalize() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (p2p, grpc, metrics) = (free_base(4), free_base(4), free_base(4));
    let chain = "weft-e2e-genesis-book";
    let homes: Vec<PathBuf> = (0..4u16)
        .map(|i| dir.path().join(format!("op{i}")))
        .collect();
    for (i, home) in (0u16..).zip(&homes) {
        let quic = format!("/ip4/127.0.0.1/udp/{}/quic-v1", p2p + i);
        let status = Command::new(WEFT)
            .arg("init")
            .arg("--home")
            .arg(home)
            .args(["--index", &i.to_string(), "--chain-id", chain])
            .args(["--p2p-listen", &quic, "--p2p-external", &quic])
            .args(["--grpc-listen", &format!("127.0.0.1:{}", grpc + i)])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", metrics + i)])
            .stdout(Stdio::null())
            .status()
            .expect("weft init");
        assert!(status.success(), "weft init {i}");
        let config = std::fs::read_to_string(home.join("config.toml")).expect("config");
        assert!(config.contains("bootstrap = []"), "{config}");
    }
    let genesis = dir.path().join("genesis.json");
    let status = Command::new(WEFT)
        .args(["genesis", "--chain-id", chain, "--out"])
        .arg(&genesis)
        .args(homes.iter().map(|h| h.join("validator.json")))
        .stdout(Stdio::null())
        .status()
        .expect("weft genesis");
    assert!(status.success(), "weft genesis");
    for home in &homes {
        std::fs::copy(&genesis, home.join("genesis.json")).expect("copy genesis");
    }
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for i in 0..4u16 {
        clients.push(connect(&format!("http://127.0.0.1:{}", grpc + i)).await);
    }
    wait_connected(&mut clients).await;
    let accepted = submit_stream(&mut clients[0], vec![b"through genesis".to_vec()]).await;
    assert_eq!(accepted.len(), 1);
    assert_final_exactly_once(&mut clients, &accepted).await;

    // Cut validator 3 off: restarted in a network namespace of its own, where the others'
    // addresses lead nowhere and its own cannot be reached. Only its gRPC port is
    // reachable, through a veth pair, so the test can ask it.
    let Some(namespace) = Netns::create() else {
        eprintln!(
            "SKIPPED the cut-off half: it needs root and iproute2 to make a network namespace"
        );
        return;
    };
    validators.kill(3);
    let config_path = homes[3].join("config.toml");
    let config = std::fs::read_to_string(&config_path).expect("config");
    let local = format!("127.0.0.1:{}", grpc + 3);
    let inside = format!("{}:{}", namespace.inside, grpc + 3);
    assert!(config.contains(&local), "{config}");
    std::fs::write(&config_path, config.replace(&local, &inside)).expect("config");
    validators.children[3] = Some(spawn_in(&homes[3], Some(&namespace)));
    let endpoint = format!("http://{inside}");
    let mut cut_off = connect(&endpoint).await;
    let status = wait_status(&mut cut_off, "validator 3 gave up syncing", |s| !s.syncing).await;
    assert!(!status.ready, "{status:?}");
    assert!(
        status.not_ready_reason.contains("connected to 0"),
        "{}",
        status.not_ready_reason
    );
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(
        health(&endpoint, "weft.v1.Ledger").await,
        ServingStatus::NotServing as i32,
        "the cut-off validator must not be ready"
    );
    assert_eq!(
        health(&endpoint, "").await,
        ServingStatus::Serving as i32,
        "but it is live"
    );
    clients.truncate(3);
    for i in 0..3u16 {
        assert_eq!(
            health(&format!("http://127.0.0.1:{}", grpc + i), "weft.v1.Ledger").await,
            ServingStatus::Serving as i32,
            "validator {i} keeps serving with 2f others connected"
        );
    }
    let accepted = submit_stream(&mut clients[1], vec![b"without validator 3".to_vec()]).await;
    assert_eq!(accepted.len(), 1);
    assert_final_exactly_once(&mut clients, &accepted).await;
    validators.stop_cleanly();
}

/// A network namespace made by the test (it needs root and iproute2), joined to the host
/// by a veth pair with its own /30; deleted, with the pair, on drop.
struct Netns {
    name: String,
    /// The namespace's address on the pair.
    inside: String,
}

impl Netns {
    fn create() -> Option<Netns> {
        let id = std::process::id();
        let name = format!("weft-e2e-{id}");
        let subnet = format!("10.233.{}", id % 64 * 4);
        let outside = format!("wo{id}");
        let netns = Netns {
            name: name.clone(),
            inside: format!("{subnet}.2"),
        };
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let made = ip(&["-n", &name, "link", "set", "lo", "up"])
            && ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", "wi", "netns", &name,
            ])
            && ip(&["addr", "add", &format!("{subnet}.1/30"), "dev", &outside])
            && ip(&["link", "set", &outside, "up"])
            && ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{subnet}.2/30"),
                "dev",
                "wi",
            ])
            && ip(&["-n", &name, "link", "set", "wi", "up"]);
        made.then_some(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair; the validator in it is gone first.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// What `grpc.health.v1` says for `service` ("" is the server as a whole).
async fn health(endpoint: &str, service: &str) -> i32 {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("health connects");
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// Issue 12: health tells the truth. A validator whose peers are down is live (the server
/// as a whole serves) but not ready: `weft.v1.Ledger` is NOT_SERVING once it has given up
/// syncing, and `GetNodeStatus` and `/readyz` (503) say why. With two peers up (2f = 2
/// others connected) it becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_validator_is_live_but_not_ready_until_a_quorum_is_connected() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dir = tempfile::tempdir().expect("temp dir");
    let (homes, endpoints, metrics) = testnet_with_metrics(dir.path(), 4);
    let mut validators = Validators {
        children: vec![Some(spawn(&homes[0])), None, None, None],
        homes: homes.clone(),
    };
    let mut client = connect(&endpoints[0]).await;
    let alone = wait_status(&mut client, "validator 0 done syncing", |s| !s.syncing).await;
    // The same answers over plain HTTP, for probes that cannot speak TLS (the readiness
    // watcher may still report the sync it saw last: wait for its next word).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (code, body) = http_get(&metrics[0], "/readyz").await;
        assert_eq!(code, 503, "{body}");
        if body.contains("connected to 0") {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never said why: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(&metrics[0], "/livez").await.0, 200);
    assert!(!alone.ready, "{alone:?}");
    assert!(
        alone.not_ready_reason.contains("connected to 0"),
        "{}",
        alone.not_ready_reason
    );
    assert_eq!(
        health(&endpoints[0], "weft.v1.Ledger").await,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        health(&endpoints[0], "").await,
        ServingStatus::Serving as i32
    );
    validators.restart(1, &homes[1]);
    validators.restart(2, &homes[2]);
    let ready = wait_status(&mut client, "validator 0 ready", |s| s.ready).await;
    assert!(ready.not_ready_reason.is_empty(), "{ready:?}");
    let deadline = Instant::now() + TIMEOUT;
    while health(&endpoints[0], "weft.v1.Ledger").await != ServingStatus::Serving as i32 {
        assert!(Instant::now() < deadline, "health never turned SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        http_get(&metrics[0], "/readyz").await,
        (200, "ready\n".to_owned())
    );
}

/// A channel to `endpoint` (https) that trusts the test CA and, if `with_certificate`,
/// presents the test client certificate.
async fn tls_channel(
    endpoint: &str,
    with_certificate: bool,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let read = |name: &str| std::fs::read(fixtures.join(name)).expect("TLS fixture");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    if with_certificate {
        tls = tls.identity(Identity::from_pem(read("client.pem"), read("client.key")));
    }
    tonic::transport::Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .tls_config(tls)?
        .connect()
        .await
}

async fn health_over(channel: tonic::transport::Channel) -> Result<i32, tonic::Status> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(answer.into_inner().status)
}

/// Issue 12: with `[grpc.tls]` the API is served over TLS (rustls) only, and with
/// `client_ca` only to clients whose certificate that CA signed: such a client gets
/// answers (health, node status), a TLS client without a certificate and a plaintext
/// client get none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_answers_only_clients_that_complete_the_handshake() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dir = tempfile::tempdir().expect("temp dir");
    let (homes, endpoints) = testnet(dir.path(), 4);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let tls_dir = homes[0].join("tls");
    std::fs::create_dir(&tls_dir).expect("tls dir");
    for name in ["server.pem", "server.key", "ca.pem"] {
        std::fs::copy(fixtures.join(name), tls_dir.join(name)).expect("copy fixture");
    }
    let config_path = homes[0].join("config.toml");
    let mut config = std::fs::read_to_string(&config_path).expect("config");
    // Paths relative to the home folder, as an operator would write them.
    config.push_str(
        "\n[grpc.tls]\ncert = \"tls/server.pem\"\nkey = \"tls/server.key\"\nclient_ca = \"tls/ca.pem\"\n",
    );
    std::fs::write(&config_path, config).expect("config");
    let _validators = Validators {
        children: vec![Some(spawn(&homes[0])), None, None, None],
        homes: homes.clone(),
    };
    let https = endpoints[0].replacen("http://", "https://", 1);
    let deadline = Instant::now() + TIMEOUT;
    let channel = loop {
        match tls_channel(&https, true).await {
            Ok(channel) => break channel,
            Err(error) => {
                assert!(Instant::now() < deadline, "no TLS server: {error:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(
        health_over(channel.clone()).await.expect("health over TLS"),
        ServingStatus::Serving as i32
    );
    let status = LedgerClient::new(channel)
        .get_node_status(v1::GetNodeStatusRequest {})
        .await
        .expect("node status over TLS")
        .into_inner();
    assert_eq!(status.validator_index, 0);

    let without_certificate = match tls_channel(&https, false).await {
        Ok(channel) => health_over(channel).await.is_ok(),
        Err(_) => false,
    };
    assert!(
        !without_certificate,
        "a client without a certificate was answered"
    );
    let plaintext = match tonic::transport::Channel::from_shared(endpoints[0].clone())
        .expect("endpoint")
        .connect()
        .await
    {
        Ok(channel) => health_over(channel).await.is_ok(),
        Err(_) => false,
    };
    assert!(!plaintext, "a plaintext client was answered");
}

/// Issue 13, submit and wait: `SubmitTransactionAndWait` answers once this validator has
/// finalized the transaction, with where (what `GetTransaction` then says); resubmitting
/// the same payload and expiry waits for the same transaction instead of failing;
/// `WaitForTransaction` on another validator answers the same place for the id, and
/// DEADLINE_EXCEEDED naming the id for one never submitted; a subscription from the tip
/// starts above the tip it was opened at and follows live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_wait_answers_once_final_and_a_resubmission_waits_for_the_same_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints) = testnet(dir.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;

    let request = v1::SubmitTransactionAndWaitRequest {
        payload: b"submitted and waited for".to_vec(),
        expires_at_ms: expiry_ms(),
        timeout_ms: 60_000,
        with_proof: false,
    };
    let first = clients[0]
        .submit_transaction_and_wait(request.clone())
        .await
        .expect("final within the wait")
        .into_inner();
    assert_eq!(first.status, v1::TransactionStatus::Finalized as i32);
    assert!(first.sequence > 0 && first.vertex_hash.len() == 32);
    let got = clients[0]
        .get_transaction(v1::GetTransactionRequest {
            tx_id: first.tx_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, first, "GetTransaction says the same");
    let again = clients[0]
        .submit_transaction_and_wait(request)
        .await
        .expect("a resubmission is not an error")
        .into_inner();
    assert_eq!(again, first, "a resubmission answers the same transaction");

    let place = |a: &v1::GetTransactionResponse| (a.sequence, a.vertex_hash.clone(), a.position);
    let waited = clients[1]
        .wait_for_transaction(v1::WaitForTransactionRequest {
            tx_id: first.tx_id.clone(),
            timeout_ms: 60_000,
            with_proof: false,
        })
        .await
        .expect("final on another validator")
        .into_inner();
    assert_eq!(place(&waited), place(&first));

    let never = vec![7u8; 32];
    let started = Instant::now();
    let refused = clients[2]
        .wait_for_transaction(v1::WaitForTransactionRequest {
            tx_id: never.clone(),
            timeout_ms: 300,
            with_proof: false,
        })
        .await
        .expect_err("never submitted");
    assert_eq!(
        reason_of(&refused),
        (Code::DeadlineExceeded, "NOT_FINALIZED_YET".to_string())
    );
    assert!(
        refused.message().contains(&hex(&never)),
        "the message names the id: {}",
        refused.message()
    );
    let details = weft_proto::rpc::details(&refused);
    assert_eq!(details.metadata.get("tx_id"), Some(&hex(&never)));
    assert_eq!(
        details.metadata.get("status").map(String::as_str),
        Some("UNKNOWN")
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    let tip = status(&mut clients[3]).await.last_finalized_sequence;
    let mut live = clients[3]
        .subscribe_finalized(v1::SubscribeFinalizedRequest {
            from_sequence: 1,
            include_transaction_ids: true,
            from_tip: true,
        })
        .await
        .expect("subscribe from the tip")
        .into_inner();
    let later = clients[3]
        .submit_transaction_and_wait(v1::SubmitTransactionAndWaitRequest {
            payload: b"finalized after the subscription".to_vec(),
            expires_at_ms: expiry_ms(),
            timeout_ms: 60_000,
            with_proof: false,
        })
        .await
        .expect("final")
        .into_inner();
    let mut previous = None;
    loop {
        let entry = tokio::time::timeout(TIMEOUT, tokio_stream::StreamExt::next(&mut live))
            .await
            .expect("an entry within the timeout")
            .expect("the stream stays open")
            .expect("an entry");
        assert!(
            entry.sequence > tip,
            "replayed {} at or below the tip {tip}",
            entry.sequence
        );
        if let Some(previous) = previous {
            assert_eq!(entry.sequence, previous + 1, "live entries in order");
        }
        previous = Some(entry.sequence);
        if entry.sequence == later.sequence {
            assert!(entry.transaction_ids.contains(&later.tx_id));
            break;
        }
        assert!(
            entry.sequence < later.sequence,
            "passed the transaction's entry"
        );
    }
    validators.stop_cleanly();
}

/// Runs `weft ARGS` with `envs`; its exit code and stdout parsed as one JSON object.
fn weft_json(
    args: &[&str],
    envs: &[(&str, &Path)],
    stdin: Option<&[u8]>,
) -> (i32, serde_json::Value) {
    use std::io::Write;
    let mut command = Command::new(WEFT);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn weft");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(bytes).expect("write stdin");
    }
    let output = child.wait_with_output().expect("weft ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "weft {args:?} printed no JSON object ({e}): stdout {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tx_and_status_commands_submit_wait_and_get_past_an_unreachable_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints) = testnet(dir.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;

    // Nobody listens on the first endpoint: the command fails over to the second.
    let unreachable = format!("http://127.0.0.1:{}", free_base(1));
    let both = format!("{unreachable},{}", endpoints[0]);
    let (code, submitted) = weft_json(
        &[
            "tx",
            "submit",
            "--wait",
            "--timeout",
            "60s",
            "--payload-hex",
            "c0ffee",
            "--endpoint",
            &both,
            "--output",
            "json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{submitted}");
    assert_eq!(submitted["status"], "FINALIZED");
    assert_eq!(submitted["endpoint"], endpoints[0].as_str());
    let expires_at_ms = submitted["expires_at_ms"].as_u64().expect("expiry printed");
    let id = weft_client::TxId::of(expires_at_ms, &[0xc0, 0xff, 0xee]).to_string();
    assert_eq!(
        submitted["tx_id"],
        id.as_str(),
        "the id covers the printed expiry"
    );
    assert!(submitted["sequence"].as_u64().is_some_and(|s| s > 0));

    // Another validator: wait, then get, give the same place.
    let (code, waited) = weft_json(
        &[
            "tx",
            "wait",
            &id,
            "--endpoint",
            &endpoints[1],
            "--output",
            "json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{waited}");
    let (code, got) = weft_json(
        &[
            "tx",
            "get",
            &id,
            "--endpoint",
            &endpoints[1],
            "--output",
            "json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{got}");
    for field in ["status", "sequence", "vertex_hash", "position"] {
        assert_eq!(got[field], submitted[field], "{field}");
        assert_eq!(waited[field], submitted[field], "{field}");
    }

    // A payload from stdin, without waiting; then the id is known to the validator.
    let (code, piped) = weft_json(
        &[
            "tx",
            "submit",
            "-",
            "--endpoint",
            &endpoints[2],
            "--output",
            "json",
        ],
        &[],
        Some(b"from standard input"),
    );
    assert_eq!(code, 0, "{piped}");
    assert_eq!(piped["status"], "SUBMITTED");
    let piped_id = weft_client::TxId::of(
        piped["expires_at_ms"].as_u64().expect("expiry"),
        b"from standard input",
    )
    .to_string();
    assert_eq!(piped["tx_id"], piped_id.as_str());
    let (code, _) = weft_json(
        &[
            "tx",
            "wait",
            &piped_id,
            "--endpoint",
            &endpoints[2],
            "--output",
            "json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0);

    // A wait that runs out: exit status 2, the id and its status in the answer.
    let never = "07".repeat(32);
    let (code, timed_out) = weft_json(
        &[
            "tx",
            "wait",
            &never,
            "--timeout",
            "300ms",
            "--endpoint",
            &endpoints[3],
            "--output",
            "json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 2, "{timed_out}");
    assert_eq!(timed_out["code"], "DeadlineExceeded");
    assert_eq!(timed_out["tx_id"], never.as_str());
    assert_eq!(timed_out["status"], "UNKNOWN");

    // `weft status` finds its validator through WEFT_HOME.
    let (code, status) = weft_json(
        &["status", "--output", "json"],
        &[("WEFT_HOME", &homes[2])],
        None,
    );
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["validator_index"], 2);
    assert_eq!(status["ready"], true);
    assert_eq!(status["chain_id"], "weft-testnet");
    assert!(status["version"]
        .as_str()
        .is_some_and(|v| v.starts_with(env!("CARGO_PKG_VERSION"))));
    let tip = status["last_finalized_sequence"].as_u64().expect("tip");
    assert!(tip >= submitted["sequence"].as_u64().expect("sequence"));
    assert!(status["last_finalized_unix_ms"]
        .as_u64()
        .is_some_and(|t| t > 0));
    assert!(status["last_finalized_consensus_time_ms"]
        .as_u64()
        .is_some_and(|t| t > 0));
    validators.stop_cleanly();
}

/// Issue 13's fail-over case: the validator a client waits on is killed mid-wait while
/// nothing can finalize; the client resubmits the same transaction to the next
/// validator and learns its final status there, and it is final exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_validator_is_killed_mid_wait_fails_over_and_learns_the_final_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints) = testnet(dir.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;
    // Without a quorum nothing finalizes, so the wait is still on when 0 dies.
    validators.kill(2);
    validators.kill(3);

    let payload = b"waited for across a fail-over".to_vec();
    let expires_at_ms = expiry_ms();
    let id = weft_client::TxId::of(expires_at_ms, &payload);
    let mut client = weft_client::Client::new(
        [endpoints[0].clone(), endpoints[1].clone()],
        weft_client::ClientConfig::default(),
    )
    .expect("endpoints");
    let waiting = tokio::spawn(async move {
        let answer = client
            .submit_and_wait(payload, Some(expires_at_ms), TIMEOUT)
            .await;
        (answer, client.endpoint().to_string())
    });
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let pending = clients[0]
            .get_transaction(v1::GetTransactionRequest {
                tx_id: id.0.to_vec(),
            })
            .await
            .is_ok_and(|a| a.into_inner().status == v1::TransactionStatus::Pending as i32);
        if pending {
            break;
        }
        assert!(Instant::now() < deadline, "validator 0 never admitted it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    validators.kill(0);
    validators.restart(2, &homes[2]);
    validators.restart(3, &homes[3]);

    let (answer, endpoint) = tokio::time::timeout(TIMEOUT + Duration::from_secs(10), waiting)
        .await
        .expect("the wait ends")
        .expect("the task ran");
    let info = answer.expect("final after the fail-over");
    assert_eq!(info.tx_id, id);
    assert_eq!(info.status, weft_client::TxStatus::Finalized);
    assert_eq!(endpoint, endpoints[1], "answered by the next validator");
    let tip = status(&mut clients[1]).await.last_finalized_sequence;
    let (_, ids) = full_log(&mut clients[1], tip).await;
    assert_eq!(
        ids.iter()
            .filter(|t| t.as_slice() == id.0.as_slice())
            .count(),
        1,
        "final exactly once"
    );
    validators.stop_cleanly();
}

/// Issue 13's verifiable finality: a proof fetched from one validator verifies against
/// `genesis.json` alone, and a tampered proof, one with 2f signatures and one checked
/// against another network's genesis are refused (by the client crate and by
/// `weft tx proof --verify`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finality_proof_verifies_against_genesis_alone_and_forgeries_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints) = testnet(dir.path(), 4);
    let other = tempfile::tempdir().expect("tempdir");
    let (other_homes, _) = testnet(other.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;

    let mut client =
        weft_client::Client::new([endpoints[1].clone()], weft_client::ClientConfig::default())
            .expect("endpoint");
    let info = client
        .submit_and_wait(b"proven final".to_vec(), Some(expiry_ms()), TIMEOUT)
        .await
        .expect("final");
    // A proof needs a stable checkpoint at or above the transaction's sequence (every
    // 4 sequences here); an idle network orders no further sequence, so more
    // transactions go in until one covers it.
    let deadline = Instant::now() + TIMEOUT;
    let mut filler = 0u32;
    let answer = loop {
        match client.proof(info.tx_id, Duration::from_secs(2)).await {
            Ok(answer) => break answer,
            Err(error) => {
                assert!(Instant::now() < deadline, "no proof: {error}");
                filler += 1;
                client
                    .submit_and_wait(filler.to_le_bytes().to_vec(), Some(expiry_ms()), TIMEOUT)
                    .await
                    .expect("filler final");
            }
        }
    };
    assert_eq!(answer.sequence, info.sequence);
    assert!(answer.checkpoint_sequence >= info.sequence);
    let genesis = std::fs::read_to_string(homes[0].join("genesis.json")).expect("genesis");
    let committee = weft_client::committee_from_genesis(&genesis).expect("committee");
    let proven = weft_client::verify_proof(&answer.proof, &committee).expect("it verifies");
    assert_eq!(proven.tx_id.0.as_bytes(), &info.tx_id.0);
    assert_eq!(proven.sequence.0, info.sequence);
    assert_eq!(
        proven.vertex.as_bytes().as_slice(),
        info.vertex_hash.as_slice()
    );
    assert_eq!(proven.position, info.position);
    assert!(proven.signers >= 3);

    let mut tampered = answer.proof.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x40;
    assert!(weft_client::verify_proof(&tampered, &committee).is_err());
    let mut short = weft_client::TransactionProof::decode(&answer.proof).expect("decodes");
    short.signatures.truncate(2);
    assert!(matches!(
        short.verify(&committee),
        Err(weft_client::ProofError::TooFewSigners { have: 2, need: 3 })
    ));
    let foreign = std::fs::read_to_string(other_homes[0].join("genesis.json")).expect("genesis");
    let foreign = weft_client::committee_from_genesis(&foreign).expect("committee");
    assert!(weft_client::verify_proof(&answer.proof, &foreign).is_err());

    let id = info.tx_id.to_string();
    let genesis_path = homes[2].join("genesis.json");
    let genesis_arg = genesis_path.to_str().expect("utf-8 path");
    let (code, checked) = weft_json(
        &[
            "tx",
            "proof",
            &id,
            "--verify",
            "--genesis",
            genesis_arg,
            "--endpoint",
            &endpoints[3],
            "--output",
            "json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{checked}");
    assert_eq!(checked["verified"], true);
    assert_eq!(checked["sequence"], info.sequence);
    let foreign_path = other_homes[0].join("genesis.json");
    let (code, refused) = weft_json(
        &[
            "tx",
            "proof",
            &id,
            "--verify",
            "--genesis",
            foreign_path.to_str().expect("utf-8"),
            "--endpoint",
            &endpoints[3],
            "--output",
            "json",
        ],
        &[],
        None,
    );
    assert_eq!(code, 1, "{refused}");
    assert!(refused["error"]
        .as_str()
        .is_some_and(|e| e.contains("does not verify")));
    validators.stop_cleanly();
}

/// Issue 13: the key-value example. Two followers, one reading from validators 0 and 1,
/// the other from 2 and 3, apply only operations that finality proofs verified against
/// `genesis.json`. Operations go in one at a time while validator 0 is killed and
/// restarted in the middle; both followers end with the state the operations give in
/// the order they were submitted (each was final before the next went in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_examples_two_followers_agree_after_a_validator_restarts_mid_run() {
    use weft_kv::{Follower, Op, State};
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints) = testnet(dir.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;
    let genesis = std::fs::read_to_string(homes[0].join("genesis.json")).expect("genesis");
    let committee = weft_client::committee_from_genesis(&genesis).expect("committee");
    let client = |indexes: &[usize]| {
        weft_client::Client::new(
            indexes.iter().map(|i| endpoints[*i].clone()),
            weft_client::ClientConfig::default(),
        )
        .expect("endpoints")
    };
    let mut followers = Vec::new();
    for reading in [[0usize, 1], [2, 3]] {
        let state = std::sync::Arc::new(std::sync::RwLock::new(State::default()));
        let follower = Follower::new(client(&reading), committee.clone(), state.clone())
            .proof_timeout(TIMEOUT);
        let task = tokio::spawn(follower.run(client(&reading).subscribe(Some(1), true)));
        followers.push((state, task));
    }

    let mut writer = client(&[0, 1, 2, 3]);
    let mut expected = std::collections::BTreeMap::new();
    let mut last = 0;
    for i in 0..24u32 {
        if i == 12 {
            validators.kill(0);
        }
        if i == 16 {
            validators.restart(0, &homes[0]);
        }
        let key = format!("k{}", i % 5);
        let op = if i % 4 == 3 {
            expected.remove(&key);
            Op::Delete { key }
        } else {
            let value = format!("v{i}");
            expected.insert(key.clone(), value.clone());
            Op::Set { key, value }
        };
        let (_, sequence) = weft_kv::submit(&mut writer, &op, TIMEOUT)
            .await
            .expect("final");
        last = last.max(sequence);
    }
    // The last operations need a stable checkpoint above them before a proof covers
    // them; an idle network orders nothing more, so other transactions go in meanwhile.
    let deadline = Instant::now() + TIMEOUT;
    let mut filler = 0u32;
    loop {
        let states: Vec<State> = followers
            .iter()
            .map(|(state, _)| state.read().expect("state").clone())
            .collect();
        if states.iter().all(|s| s.verified_through >= last) {
            for state in &states {
                assert_eq!(state.entries, expected, "a follower's state");
                assert_eq!(state.applied, 24, "every operation applied once");
            }
            assert_eq!(states[0].digest(), states[1].digest());
            break;
        }
        for (_, task) in &mut followers {
            if task.is_finished() {
                let outcome = (&mut *task).await;
                panic!("a follower stopped: {outcome:?}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "followers verified through {:?}, not {last}",
            states
                .iter()
                .map(|s| s.verified_through)
                .collect::<Vec<_>>()
        );
        filler += 1;
        writer
            .submit_and_wait(filler.to_le_bytes().to_vec(), Some(expiry_ms()), TIMEOUT)
            .await
            .expect("filler final");
    }
    for (_, task) in &followers {
        task.abort();
    }
    validators.stop_cleanly();
}

/// Issue 13: submit-and-wait answers with the finality proof when asked. Other
/// transactions keep the network ordering meanwhile (an idle network orders nothing
/// more, and a proof needs a stable checkpoint above the transaction); the proof that
/// comes back verifies against `genesis.json` alone and names the transaction's place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_wait_with_proof_answers_a_proof_that_verifies_against_genesis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (homes, endpoints) = testnet(dir.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    wait_connected(&mut clients).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = spawn_load(clients[1..].to_vec(), "proof load", stop.clone());
    let mut client =
        weft_client::Client::new([endpoints[0].clone()], weft_client::ClientConfig::default())
            .expect("endpoint");
    let info = client
        .submit_and_wait_with_proof(b"final with its proof".to_vec(), Some(expiry_ms()), TIMEOUT)
        .await
        .expect("final");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let proof = info.proof.expect("a proof within the wait");
    assert_eq!(proof.sequence, info.sequence);
    assert!(proof.checkpoint_sequence >= info.sequence);
    let genesis = std::fs::read_to_string(homes[0].join("genesis.json")).expect("genesis");
    let committee = weft_client::committee_from_genesis(&genesis).expect("committee");
    let proven = weft_client::verify_proof(&proof.proof, &committee).expect("verifies");
    assert_eq!(*proven.tx_id.0.as_bytes(), info.tx_id.0);
    assert_eq!(proven.sequence.0, info.sequence);
    assert_eq!(
        proven.vertex.as_bytes().as_slice(),
        info.vertex_hash.as_slice()
    );
    assert_eq!(proven.position, info.position);
    load.await.expect("load task");
    validators.stop_cleanly();
}
