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

/// Child validators, stopped (SIGKILL) whatever happens to the test.
struct Validators {
    children: Vec<Option<Child>>,
}

impl Drop for Validators {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Validators {
    fn start(homes: &[PathBuf]) -> Validators {
        Validators {
            children: homes.iter().map(|home| Some(spawn(home))).collect(),
        }
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
    let log = std::fs::File::create(home.join("node.log")).expect("log file");
    Command::new(WEFT)
        .arg("run")
        .arg("--home")
        .arg(home)
        .env("RUST_LOG", "info")
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
    (homes, endpoints)
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
    let (homes, endpoints) = testnet(dir.path(), 4);
    let mut validators = Validators::start(&homes);
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connect(endpoint).await);
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut all = true;
        for client in &mut clients {
            all &= status(client).await.connected_validators == 3;
        }
        if all {
            break;
        }
        assert!(Instant::now() < deadline, "validators never all connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut ids = Vec::new();
    for i in 0..1_000u32 {
        let client = &mut clients[(i % 4) as usize];
        let payload = format!("e2e transaction {i}").into_bytes();
        let id = client
            .submit_transaction(v1::SubmitTransactionRequest { payload })
            .await
            .expect("submit")
            .into_inner()
            .tx_id;
        assert_eq!(id.len(), 32);
        ids.push(id);
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
        let mut log = Vec::new();
        let mut from = 1;
        while from <= tip {
            let entries = client
                .list_finalized(v1::ListFinalizedRequest {
                    from_sequence: from,
                    limit: 0,
                })
                .await
                .expect("list")
                .into_inner()
                .entries;
            assert!(!entries.is_empty());
            for entry in entries {
                if entry.sequence <= tip {
                    from = entry.sequence + 1;
                    log.push((
                        entry.sequence,
                        entry.anchor,
                        entry.vertex_hashes,
                        entry.state_digest,
                    ));
                }
            }
        }
        logs.push(log);
    }
    for log in &logs[1..] {
        assert_eq!(log, &logs[0], "finalized sequences differ");
    }

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
    let code = |r: Result<tonic::Response<v1::SubmitTransactionResponse>, tonic::Status>| {
        r.expect_err("refused").code()
    };
    assert_eq!(
        code(
            client
                .submit_transaction(v1::SubmitTransactionRequest { payload: vec![] })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .submit_transaction(v1::SubmitTransactionRequest {
                    payload: vec![1; 1 << 20]
                })
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .submit_transaction(v1::SubmitTransactionRequest {
                    payload: b"e2e transaction 7".to_vec()
                })
                .await
        ),
        Code::AlreadyExists
    );
    let bad_id = client
        .get_transaction(v1::GetTransactionRequest { tx_id: vec![1; 5] })
        .await
        .expect_err("short id");
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    let unknown = client
        .get_transaction(v1::GetTransactionRequest { tx_id: vec![7; 32] })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let past = client
        .list_finalized(v1::ListFinalizedRequest {
            from_sequence: u64::MAX,
            limit: 1,
        })
        .await
        .expect_err("past the tip");
    assert_eq!(past.code(), Code::OutOfRange);
    let bad_hash = client
        .get_vertex(v1::GetVertexRequest { hash: vec![0; 3] })
        .await
        .expect_err("short hash");
    assert_eq!(bad_hash.code(), Code::InvalidArgument);
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
