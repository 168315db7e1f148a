//! `weft bench`: an open-loop load generator against running validators, built on the
//! `weft-client` crate.
//!
//! Transactions leave at a fixed arrival rate whatever the validators do (a closed loop
//! would slow down with them and hide queueing). They are spread round-robin over the
//! targets, each through one `SubmitTransactions` stream, and finality is followed with
//! one [`weft_client::Subscription`] (transaction ids included), which resumes on the
//! next target after the last sequence seen if a stream breaks.
//!
//! Latency is measured on the client: from the moment a transaction was handed to its
//! stream to the moment an entry that finalizes it arrives. A transaction a validator
//! answered with an error is *rejected*; one accepted but not final when the drain time
//! runs out is *lost*; one the client could not even hand over because its own send
//! queue was full is counted as *unsent* (the client, not the node, fell behind).
//!
//! With `--wait` each transaction is instead one `SubmitTransactionAndWait` call
//! ([`weft_client::Client::submit_and_wait`]), still at the fixed arrival rate, and its
//! latency is the call's: what an application that waits for finality sees.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use weft_client::{Client, ClientConfig, TxId};
use weft_proto::v1;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// gRPC addresses (`host:port` or `http://host:port`).
    pub targets: Vec<String>,
    /// Transactions per second offered.
    pub rate: u64,
    /// How long to offer them.
    pub duration: Duration,
    /// Payload bytes per transaction (at least 16).
    pub tx_size: usize,
    /// How long to wait for the last transactions after the offered load ends.
    pub drain: Duration,
    /// How long to wait, before the load, for every target to report it is not syncing.
    pub ready_timeout: Duration,
    /// Submit-and-wait calls instead of a stream and a subscription.
    pub wait: bool,
}

/// The outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BenchReport {
    /// Handed to a validator's stream.
    pub submitted: u64,
    /// Answered OK.
    pub accepted: u64,
    /// Answered with an error, by gRPC code name.
    pub rejected: Vec<(String, u64)>,
    /// Not handed over: the client's own queue to the stream was full.
    pub unsent: u64,
    /// Seen finalized.
    pub finalized: u64,
    /// Accepted but not seen finalized before the drain ended.
    pub lost: u64,
    /// Finalized transactions per second, from the first submission to the last finality.
    pub tps: f64,
    /// Latency percentiles and maximum, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl BenchReport {
    /// The summary lines; the last one is the contract other tools parse.
    pub fn lines(&self) -> Vec<String> {
        let rejected: u64 = self.rejected.iter().map(|(_, n)| n).sum();
        let by_code = self
            .rejected
            .iter()
            .map(|(code, n)| format!(" {code}={n}"))
            .collect::<String>();
        vec![
            format!(
                "bench: accepted={} rejected={rejected}{by_code} unsent={} lost={}",
                self.accepted, self.unsent, self.lost
            ),
            format!(
                "bench: submitted={} finalized={} tps={:.1} p50_ms={:.1} p95_ms={:.1} p99_ms={:.1} max_ms={:.1}",
                self.submitted,
                self.finalized,
                self.tps,
                self.p50_ms,
                self.p95_ms,
                self.p99_ms,
                self.max_ms
            ),
        ]
    }
}

/// Errors that stop a bench before it starts.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// No target, a zero rate or a too small transaction.
    #[error("{0}")]
    Options(String),
    /// A target refused the connection or the call.
    #[error("{target}: {reason}")]
    Target {
        /// The address.
        target: String,
        /// What went wrong.
        reason: String,
    },
}

/// Client-side queue per target; beyond it a transaction is counted as unsent.
const SEND_QUEUE: usize = 65_536;
/// How often the generator wakes up to send what is due.
const TICK: Duration = Duration::from_millis(1);
/// How often `wait_until_synced` asks the targets again.
const READY_POLL: Duration = Duration::from_millis(100);
/// Submit-and-wait calls in flight at most (`--wait`); beyond it a transaction is unsent.
const MAX_WAITING_CALLS: usize = 20_000;

/// A client of `target` alone (the bench measures each target; it does not fail over).
fn connect(target: &str) -> Result<Client, BenchError> {
    Client::new([target.to_owned()], ClientConfig::default()).map_err(|e| BenchError::Target {
        target: target.to_owned(),
        reason: e.to_string(),
    })
}

fn target_error(target: &str, error: weft_client::ClientError) -> BenchError {
    BenchError::Target {
        target: target.to_owned(),
        reason: error.to_string(),
    }
}

/// One unique payload: a per-run tag and a counter, then filler.
fn payload(run: u64, counter: u64, size: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&run.to_le_bytes());
    bytes.extend_from_slice(&counter.to_le_bytes());
    bytes.resize(size, 0xa5);
    bytes
}

/// The id the validators give a transaction: it covers the expiry, which the load
/// generator sets itself (so it knows every id without waiting for answers).
fn tx_id(expires_at_ms: u64, payload: &[u8]) -> [u8; 32] {
    TxId::of(expires_at_ms, payload).0
}

/// Transactions the load generator offers expire this long after they are sent.
const BENCH_TTL_MS: u64 = 120_000;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank: the smallest value with at least p % of the samples at or below it.
    let rank = (p / 100.0 * sorted.len() as f64).ceil();
    let index = sorted
        .iter()
        .enumerate()
        .position(|(i, _)| (i + 1) as f64 >= rank)
        .unwrap_or(sorted.len() - 1);
    sorted[index]
}

/// What the run has seen so far.
struct Tally {
    report: BenchReport,
    sent_at: HashMap<[u8; 32], Instant>,
    rejected: HashMap<String, u64>,
    latencies: Vec<f64>,
    last_final: Instant,
}

impl Tally {
    fn absorb(&mut self, note: Note) {
        match note {
            Note::Answer { id, code } => {
                if code == tonic::Code::Ok as i32 {
                    self.report.accepted += 1;
                } else {
                    let name = format!("{:?}", tonic::Code::from(code));
                    *self.rejected.entry(name).or_default() += 1;
                    if let Ok(id) = <[u8; 32]>::try_from(id.as_slice()) {
                        self.sent_at.remove(&id);
                    }
                }
            }
            Note::Final { ids, at } => {
                for id in ids {
                    let Ok(id) = <[u8; 32]>::try_from(id.as_slice()) else {
                        continue;
                    };
                    if let Some(sent) = self.sent_at.remove(&id) {
                        self.latencies
                            .push(at.duration_since(sent).as_secs_f64() * 1000.0);
                        self.report.finalized += 1;
                        self.last_final = at;
                    }
                }
            }
        }
    }

    fn finish(mut self, started: Instant) -> BenchReport {
        let mut rejected: Vec<(String, u64)> = self.rejected.into_iter().collect();
        rejected.sort();
        self.report.rejected = rejected;
        self.report.lost += self.sent_at.len() as u64;
        self.latencies.sort_by(f64::total_cmp);
        let elapsed = self.last_final.duration_since(started).as_secs_f64();
        self.report.tps = if elapsed > 0.0 {
            self.report.finalized as f64 / elapsed
        } else {
            0.0
        };
        self.report.p50_ms = percentile(&self.latencies, 50.0);
        self.report.p95_ms = percentile(&self.latencies, 95.0);
        self.report.p99_ms = percentile(&self.latencies, 99.0);
        self.report.max_ms = self.latencies.last().copied().unwrap_or(0.0);
        self.report
    }
}

enum Note {
    Answer { id: Vec<u8>, code: i32 },
    Final { ids: Vec<Vec<u8>>, at: Instant },
}

/// `GetNodeStatus` of `target`.
async fn node_status(
    target: &str,
    client: &mut Client,
) -> Result<v1::GetNodeStatusResponse, BenchError> {
    client.status().await.map_err(|e| target_error(target, e))
}

/// Waits until no target reports `syncing`: a syncing validator refuses submissions
/// (UNAVAILABLE), and a load offered to a devnet that has just started would count them.
async fn wait_until_synced(
    clients: &mut [(String, Client)],
    timeout: Duration,
    progress: &mut impl FnMut(String),
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    let mut told = false;
    loop {
        let mut syncing = Vec::new();
        for (target, client) in clients.iter_mut() {
            if node_status(target, client).await?.syncing {
                syncing.push(target.clone());
            }
        }
        if syncing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Target {
                target: syncing.join(","),
                reason: format!("still syncing after {} s", timeout.as_secs()),
            });
        }
        if !told {
            progress(format!(
                "bench: waiting for {} to finish syncing",
                syncing.join(", ")
            ));
            told = true;
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Runs the load and reports. Progress goes to `progress` once a second.
pub async fn run(
    options: &BenchOptions,
    mut progress: impl FnMut(String),
) -> Result<BenchReport, BenchError> {
    if options.targets.is_empty() {
        return Err(BenchError::Options("--targets lists no address".into()));
    }
    if options.rate == 0 {
        return Err(BenchError::Options("--rate must be above 0".into()));
    }
    if options.tx_size < 16 {
        return Err(BenchError::Options(
            "--tx-size must be at least 16 bytes (a run tag and a counter)".into(),
        ));
    }
    let mut clients = Vec::new();
    for target in &options.targets {
        clients.push((target.clone(), connect(target)?));
    }
    wait_until_synced(&mut clients, options.ready_timeout, &mut progress).await?;
    if options.wait {
        return run_waiting(options, clients, progress).await;
    }
    // Follow finality from the tip of the first target, failing over to the others.
    let start_sequence = {
        let (target, client) = &mut clients[0];
        node_status(target, client).await?.last_finalized_sequence + 1
    };
    let (notes, mut noted) = mpsc::unbounded_channel::<Note>();
    let all = Client::new(options.targets.iter().cloned(), ClientConfig::default())
        .map_err(|e| target_error(&options.targets.join(","), e))?;
    let follower = tokio::spawn(follow(
        all.subscribe(Some(start_sequence), true),
        notes.clone(),
    ));

    // One submit stream per target; its answers become notes.
    let mut senders = Vec::new();
    let mut answer_tasks = Vec::new();
    for (target, client) in &mut clients {
        let (sender, mut answers) = client
            .submit_stream(SEND_QUEUE)
            .await
            .map_err(|e| target_error(target, e))?;
        let notes = notes.clone();
        answer_tasks.push(tokio::spawn(async move {
            while let Some(Ok(answer)) = answers.next().await {
                if notes
                    .send(Note::Answer {
                        id: answer.tx_id,
                        code: answer.code,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }));
        senders.push(sender);
    }

    let run_tag: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let started = Instant::now();
    let total = u64::try_from(options.duration.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_mul(options.rate)
        / 1000;
    let mut tally = Tally {
        report: BenchReport::default(),
        sent_at: HashMap::new(),
        rejected: HashMap::new(),
        latencies: Vec::new(),
        last_final: started,
    };
    let mut counter: u64 = 0;
    let mut next_report = started + Duration::from_secs(1);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    // Offer the load: at each tick, send what the fixed rate says is due by now.
    while counter < total {
        ticker.tick().await;
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let due = elapsed_us.saturating_mul(options.rate) / 1_000_000;
        while counter < due.min(total) {
            let bytes = payload(run_tag, counter, options.tx_size);
            let expires_at_ms = unix_ms().saturating_add(BENCH_TTL_MS);
            let id = tx_id(expires_at_ms, &bytes);
            let target = usize::try_from(counter % senders.len() as u64).unwrap_or(0);
            counter += 1;
            match senders[target].try_send(v1::SubmitTransactionRequest {
                payload: bytes,
                expires_at_ms,
            }) {
                Ok(()) => {
                    tally.report.submitted += 1;
                    tally.sent_at.insert(id, Instant::now());
                }
                Err(_) => tally.report.unsent += 1,
            }
        }
        while let Ok(note) = noted.try_recv() {
            tally.absorb(note);
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            progress(format!(
                "bench: t={}s submitted={} finalized={} in_flight={}",
                started.elapsed().as_secs(),
                tally.report.submitted,
                tally.report.finalized,
                tally.sent_at.len()
            ));
        }
    }
    // Close the submit streams; wait for the rest to finalize.
    drop(senders);
    let drain_until = Instant::now() + options.drain;
    while !tally.sent_at.is_empty() {
        let Ok(Some(note)) = tokio::time::timeout_at(drain_until, noted.recv()).await else {
            break;
        };
        tally.absorb(note);
    }
    follower.abort();
    for task in answer_tasks {
        task.abort();
    }
    while let Ok(note) = noted.try_recv() {
        tally.absorb(note);
    }
    Ok(tally.finish(started))
}

/// Follows finality; the subscription resumes on the next target when a stream breaks.
async fn follow(mut subscription: weft_client::Subscription, notes: mpsc::UnboundedSender<Note>) {
    loop {
        match subscription.next().await {
            Ok(entry) => {
                let note = Note::Final {
                    ids: entry.transaction_ids,
                    at: Instant::now(),
                };
                if notes.send(note).is_err() {
                    return;
                }
            }
            // Every target failed for now: pause, then try again (the caller aborts this
            // task when the run ends).
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `--wait`: one submit-and-wait call per transaction at the fixed arrival rate,
/// round-robin over the targets; latency is each call's.
async fn run_waiting(
    options: &BenchOptions,
    clients: Vec<(String, Client)>,
    mut progress: impl FnMut(String),
) -> Result<BenchReport, BenchError> {
    let (notes, mut noted) = mpsc::unbounded_channel::<(Result<(), String>, Duration)>();
    let room = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_WAITING_CALLS));
    let run_tag: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let total = u64::try_from(options.duration.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_mul(options.rate)
        / 1000;
    let mut report = BenchReport::default();
    let mut rejected: HashMap<String, u64> = HashMap::new();
    let mut latencies = Vec::new();
    let mut absorb = |(outcome, latency): (Result<(), String>, Duration),
                      report: &mut BenchReport| match outcome {
        Ok(()) => {
            report.accepted += 1;
            report.finalized += 1;
            latencies.push(latency.as_secs_f64() * 1000.0);
        }
        Err(code) if code == "DeadlineExceeded" => report.lost += 1,
        Err(code) => *rejected.entry(code).or_default() += 1,
    };
    let started = Instant::now();
    let mut last_final = started;
    let mut counter: u64 = 0;
    let mut next_report = started + Duration::from_secs(1);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let wait_limit = options.duration + options.drain;
    while counter < total {
        ticker.tick().await;
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let due = elapsed_us.saturating_mul(options.rate) / 1_000_000;
        while counter < due.min(total) {
            let bytes = payload(run_tag, counter, options.tx_size);
            let expires_at_ms = unix_ms().saturating_add(BENCH_TTL_MS);
            let target = usize::try_from(counter % clients.len() as u64).unwrap_or(0);
            counter += 1;
            let Ok(permit) = room.clone().try_acquire_owned() else {
                report.unsent += 1;
                continue;
            };
            report.submitted += 1;
            let mut client = clients[target].1.clone();
            let notes = notes.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                let outcome = client
                    .submit_and_wait(bytes, Some(expires_at_ms), wait_limit)
                    .await
                    .map(|_| ())
                    .map_err(|e| match e {
                        weft_client::ClientError::DeadlineExceeded { .. } => {
                            "DeadlineExceeded".to_string()
                        }
                        other => other
                            .code()
                            .map_or_else(|| "Unavailable".to_string(), |c| format!("{c:?}")),
                    });
                drop(permit);
                let _ = notes.send((outcome, sent.elapsed()));
            });
        }
        while let Ok(note) = noted.try_recv() {
            if note.0.is_ok() {
                last_final = Instant::now();
            }
            absorb(note, &mut report);
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            progress(format!(
                "bench: t={}s submitted={} finalized={} in_flight={}",
                started.elapsed().as_secs(),
                report.submitted,
                report.finalized,
                MAX_WAITING_CALLS - room.available_permits()
            ));
        }
    }
    drop(notes);
    let drain_until = Instant::now() + options.drain;
    while let Ok(Some(note)) = tokio::time::timeout_at(drain_until, noted.recv()).await {
        if note.0.is_ok() {
            last_final = Instant::now();
        }
        absorb(note, &mut report);
    }
    // Calls still waiting when the drain ends are lost.
    report.lost += (MAX_WAITING_CALLS - room.available_permits()) as u64;
    let tally = Tally {
        report,
        sent_at: HashMap::new(),
        rejected,
        latencies,
        last_final,
    };
    Ok(tally.finish(started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 95.0), 95.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&sorted, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 50.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn payloads_are_unique_and_sized() {
        let a = payload(1, 0, 512);
        let b = payload(1, 1, 512);
        let c = payload(2, 0, 512);
        assert_eq!(a.len(), 512);
        assert_ne!(tx_id(9, &a), tx_id(9, &b));
        assert_ne!(tx_id(9, &a), tx_id(9, &c));
        assert_ne!(tx_id(9, &a), tx_id(10, &a), "the id covers the expiry");
    }

    #[test]
    fn the_last_summary_line_has_the_contract_fields_in_order() {
        let report = BenchReport {
            submitted: 10,
            accepted: 9,
            rejected: vec![("ResourceExhausted".into(), 1)],
            finalized: 9,
            tps: 4.5,
            p50_ms: 100.0,
            p95_ms: 150.0,
            p99_ms: 199.0,
            max_ms: 200.0,
            ..BenchReport::default()
        };
        let lines = report.lines();
        assert_eq!(
            lines[1],
            "bench: submitted=10 finalized=9 tps=4.5 p50_ms=100.0 p95_ms=150.0 p99_ms=199.0 max_ms=200.0"
        );
        assert!(lines[0].contains("rejected=1 ResourceExhausted=1"));
    }
}
