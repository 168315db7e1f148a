//! The deterministic simulator: n replicas on simulated time and a simulated network,
//! all driven by one seed, with the checkers of ARCHITECTURE.md run at the end.
//!
//! First version (issue 3 continues): random delays (hence reordering) and duplication,
//! real ML-DSA-87 signatures verified by the network or placeholders, clients submitting
//! throughout. Still to come: loss, partitions, crash and restart, Byzantine actors.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_crypto::Digest;
use weft_dag::{
    Committee, FinalizedEntry, SignedVertex, TimestampMs, Transaction, TxId, ValidatorIndex,
};

use crate::messages::Message;
use crate::replica::{Input, Output, Replica, ReplicaConfig, Timer};
use crate::Signer;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// n.
    pub validators: usize,
    /// The seed of everything random.
    pub seed: u64,
    /// Client transactions submitted.
    pub transactions: usize,
    /// They are submitted uniformly over this many milliseconds.
    pub submit_window_ms: u64,
    /// One-way delay bounds.
    pub min_delay_ms: u64,
    /// One-way delay bounds.
    pub max_delay_ms: u64,
    /// Probability that a message is delivered twice.
    pub duplicate_probability: f64,
    /// Sign with ML-DSA-87 and verify every message on delivery.
    pub real_signatures: bool,
    /// Give up after this much simulated time.
    pub max_time_ms: u64,
}

impl SimConfig {
    /// Defaults for `validators` and `seed`.
    pub fn new(validators: usize, seed: u64) -> SimConfig {
        SimConfig {
            validators,
            seed,
            transactions: 200,
            submit_window_ms: 2_000,
            min_delay_ms: 1,
            max_delay_ms: 40,
            duplicate_probability: 0.05,
            real_signatures: false,
            max_time_ms: 60_000,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Checker violations (empty on a correct run).
    pub violations: Vec<String>,
    /// The lowest finalized height across replicas.
    pub min_finalized: u64,
    /// The highest view reached.
    pub max_view: u64,
    /// The lowest stable checkpoint across replicas.
    pub min_stable_checkpoint: u64,
    /// Simulated milliseconds until every transaction was final everywhere (or the limit).
    pub elapsed_ms: u64,
    /// Transactions submitted.
    pub submitted: usize,
    /// Mean submit-to-final latency on the submitting replica, in simulated ms.
    pub mean_latency_ms: f64,
    /// A digest of every event in order: same seed, same trace.
    pub trace: Digest,
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        message: Message,
    },
    Fetch {
        server: usize,
        client: usize,
        hashes: Vec<Digest>,
    },
    Fetched {
        to: usize,
        from: usize,
        vertices: Vec<SignedVertex>,
    },
    Timer {
        replica: usize,
        timer: Timer,
        generation: u64,
    },
    Submit {
        replica: usize,
        transaction: Transaction,
    },
}

struct World {
    rng: ChaCha8Rng,
    config: SimConfig,
    committee: Committee,
    replicas: Vec<Replica>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    next_event: u64,
    now: u64,
    timer_generations: HashMap<(usize, Timer), u64>,
    finalized: Vec<Vec<FinalizedEntry>>,
    submitted_at: HashMap<TxId, (usize, u64)>,
    latencies: Vec<u64>,
    trace: blake3::Hasher,
    rejected_signatures: u64,
}

/// Runs one seed.
pub fn run(config: &SimConfig) -> SimReport {
    let mut world = World::new(config.clone());
    world.run();
    world.report()
}

impl World {
    fn new(config: SimConfig) -> World {
        let (committee, keys) = weft_dag::testing::committee(config.validators);
        let replicas = keys
            .into_iter()
            .enumerate()
            .map(|(i, keypair)| {
                let index = ValidatorIndex(u16::try_from(i).unwrap_or(u16::MAX));
                let signer = if config.real_signatures {
                    Signer::MlDsa87(keypair.secret)
                } else {
                    Signer::Placeholder
                };
                match Replica::new(ReplicaConfig::new(index, committee.clone()), signer) {
                    Ok(replica) => replica,
                    Err(error) => panic!("simulated replica config: {error}"),
                }
            })
            .collect();
        World {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            finalized: vec![Vec::new(); config.validators],
            config,
            committee,
            replicas,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_event: 0,
            now: 0,
            timer_generations: HashMap::new(),
            submitted_at: HashMap::new(),
            latencies: Vec::new(),
            trace: blake3::Hasher::new(),
            rejected_signatures: 0,
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, event);
        self.queue.push(Reverse((at, id)));
    }

    fn delay(&mut self) -> u64 {
        self.rng
            .gen_range(self.config.min_delay_ms..=self.config.max_delay_ms)
    }

    fn run(&mut self) {
        for index in 0..self.replicas.len() {
            self.step(index, Input::Start);
        }
        for i in 0..self.config.transactions {
            let at = self.rng.gen_range(0..=self.config.submit_window_ms);
            let replica = self.rng.gen_range(0..self.replicas.len());
            let payload = format!("seed {} tx {i}", self.config.seed).into_bytes();
            self.schedule(
                at,
                Event::Submit {
                    replica,
                    transaction: Transaction::new(payload),
                },
            );
        }
        while let Some(Reverse((at, id))) = self.queue.pop() {
            if at > self.config.max_time_ms || self.all_final() {
                break;
            }
            self.now = at;
            let Some(event) = self.events.remove(&id) else {
                continue;
            };
            self.dispatch(event);
        }
    }

    fn all_final(&self) -> bool {
        let submitted = self.submitted_at.len();
        submitted == self.config.transactions
            && self
                .finalized
                .iter()
                .all(|log| log.iter().map(|e| e.transactions.len()).sum::<usize>() >= submitted)
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { to, from, message } => {
                self.trace_event(b"deliver", to, from, &message_id(&message));
                if self.config.real_signatures && !self.verify(&message) {
                    self.rejected_signatures += 1;
                    return;
                }
                let from = ValidatorIndex(u16::try_from(from).unwrap_or(u16::MAX));
                self.step(to, Input::Message { from, message });
            }
            Event::Fetch {
                server,
                client,
                hashes,
            } => {
                let vertices = self.replicas[server].vertices(&hashes);
                let delay = self.delay();
                self.schedule(
                    self.now + delay,
                    Event::Fetched {
                        to: client,
                        from: server,
                        vertices,
                    },
                );
            }
            Event::Fetched { to, from, vertices } => {
                for vertex in &vertices {
                    self.trace_event(b"fetched", to, from, vertex.hash().as_bytes());
                }
                let from = ValidatorIndex(u16::try_from(from).unwrap_or(u16::MAX));
                self.step(to, Input::Fetched { from, vertices });
            }
            Event::Timer {
                replica,
                timer,
                generation,
            } => {
                if self.timer_generations.get(&(replica, timer)) == Some(&generation) {
                    self.trace_event(b"timer", replica, replica, &[]);
                    self.step(replica, Input::Timer(timer));
                }
            }
            Event::Submit {
                replica,
                transaction,
            } => {
                self.trace_event(b"submit", replica, replica, transaction.id().0.as_bytes());
                self.submitted_at
                    .insert(transaction.id(), (replica, self.now));
                self.step(replica, Input::Transactions(vec![transaction]));
            }
        }
    }

    fn verify(&self, message: &Message) -> bool {
        match message {
            Message::Vertex(vertex) => vertex.verify_signature(&self.committee).is_ok(),
            Message::Vote(vote) => vote.verify(&self.committee).is_ok(),
            Message::Checkpoint(checkpoint) => checkpoint.verify(&self.committee).is_ok(),
        }
    }

    fn trace_event(&mut self, kind: &[u8], to: usize, from: usize, id: &[u8]) {
        self.trace.update(&self.now.to_le_bytes());
        self.trace.update(kind);
        self.trace.update(&(to as u64).to_le_bytes());
        self.trace.update(&(from as u64).to_le_bytes());
        self.trace.update(id);
    }

    fn step(&mut self, index: usize, input: Input) {
        let outputs = self.replicas[index].handle(TimestampMs(self.now), input);
        for output in outputs {
            match output {
                // The simulated store is the replica's memory; persistence order is
                // what matters and outputs are carried out in order.
                Output::Persist(_) => {}
                Output::Broadcast(message) => {
                    for to in (0..self.replicas.len()).filter(|&to| to != index) {
                        let delay = self.delay();
                        self.schedule(
                            self.now + delay,
                            Event::Deliver {
                                to,
                                from: index,
                                message: message.clone(),
                            },
                        );
                        if self.rng.gen_bool(self.config.duplicate_probability) {
                            let again = self.delay();
                            self.schedule(
                                self.now + delay + again,
                                Event::Deliver {
                                    to,
                                    from: index,
                                    message: message.clone(),
                                },
                            );
                        }
                    }
                }
                Output::Fetch { from, hashes } => {
                    let delay = self.delay();
                    self.schedule(
                        self.now + delay,
                        Event::Fetch {
                            server: from.as_usize(),
                            client: index,
                            hashes,
                        },
                    );
                }
                Output::SetTimer { timer, after_ms } => {
                    let generation = self.timer_generations.entry((index, timer)).or_insert(0);
                    *generation += 1;
                    let generation = *generation;
                    self.schedule(
                        self.now + after_ms,
                        Event::Timer {
                            replica: index,
                            timer,
                            generation,
                        },
                    );
                }
                Output::Finalized(entry) => {
                    self.trace_event(b"final", index, index, entry.state_digest.as_bytes());
                    for transaction in &entry.transactions {
                        if let Some((submitter, at)) = self.submitted_at.get(&transaction.id) {
                            if *submitter == index {
                                self.latencies.push(self.now - at);
                            }
                        }
                    }
                    self.finalized[index].push(entry);
                }
                Output::Evidence(_) => {}
            }
        }
    }

    fn report(&self) -> SimReport {
        let mut violations = check_agreement(&self.finalized);
        violations.extend(check_integrity(&self.finalized, &self.submitted_at));
        violations.extend(self.check_memory());
        if self.rejected_signatures > 0 {
            violations.push(format!(
                "{} honest messages failed signature checks",
                self.rejected_signatures
            ));
        }
        let min_finalized = self
            .finalized
            .iter()
            .map(|log| log.len() as u64)
            .min()
            .unwrap_or(0);
        let mean_latency_ms = if self.latencies.is_empty() {
            0.0
        } else {
            self.latencies.iter().sum::<u64>() as f64 / self.latencies.len() as f64
        };
        SimReport {
            seed: self.config.seed,
            violations,
            min_finalized,
            max_view: self.replicas.iter().map(|r| r.view().0).max().unwrap_or(0),
            min_stable_checkpoint: self
                .replicas
                .iter()
                .map(|r| r.stable_checkpoint().sequence.0)
                .min()
                .unwrap_or(0),
            elapsed_ms: self.now,
            submitted: self.submitted_at.len(),
            mean_latency_ms,
            trace: Digest::from_bytes(*self.trace.clone().finalize().as_bytes()),
        }
    }
}

impl World {
    /// Checker 6, memory part: what a replica holds is bounded by the protocol's
    /// parameters, not by the length of the run.
    fn check_memory(&self) -> Vec<String> {
        let n = self.replicas.len();
        let defaults = ReplicaConfig::new(ValidatorIndex(0), self.committee.clone());
        let rounds = defaults.gc_depth + 4 * defaults.window + 8;
        let vertex_bound = n * usize::try_from(rounds).unwrap_or(usize::MAX);
        let vote_bound = 2 * usize::try_from(2 * defaults.window + defaults.checkpoint_interval)
            .unwrap_or(usize::MAX);
        let mut violations = Vec::new();
        for (index, replica) in self.replicas.iter().enumerate() {
            let memory = replica.memory();
            if memory.dag_vertices + memory.waiting_vertices > vertex_bound
                || memory.vote_slots > vote_bound
                || memory.checkpoint_slots > vote_bound
            {
                violations.push(format!("memory: replica {index} holds {memory:?}, bound {vertex_bound} vertices / {vote_bound} slots"));
            }
        }
        violations
    }
}

fn message_id(message: &Message) -> Vec<u8> {
    match message {
        Message::Vertex(vertex) => vertex.hash().as_bytes().to_vec(),
        Message::Vote(vote) => vote.encoded().to_vec(),
        Message::Checkpoint(checkpoint) => checkpoint.checkpoint().encode(),
    }
}

/// Checker 1 (agreement): every sequence two replicas both finalized has the same
/// anchor, ordered vertex hashes, transaction ids and chained digest.
pub fn check_agreement(logs: &[Vec<FinalizedEntry>]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut reference: BTreeMap<u64, (usize, &FinalizedEntry)> = BTreeMap::new();
    for (replica, log) in logs.iter().enumerate() {
        for entry in log {
            match reference.get(&entry.sequence.0) {
                None => {
                    reference.insert(entry.sequence.0, (replica, entry));
                }
                Some((first, expected)) => {
                    let same = expected.anchor == entry.anchor
                        && expected.vertices == entry.vertices
                        && expected.transactions == entry.transactions
                        && expected.state_digest == entry.state_digest;
                    if !same {
                        violations.push(format!(
                            "agreement: sequence {} differs between replicas {first} and {replica}",
                            entry.sequence
                        ));
                    }
                }
            }
        }
    }
    violations
}

/// Checker 2 (integrity): no replica finalizes a transaction twice or one that was never
/// submitted, and every submitted transaction is final everywhere.
pub fn check_integrity(
    logs: &[Vec<FinalizedEntry>],
    submitted: &HashMap<TxId, (usize, u64)>,
) -> Vec<String> {
    let mut violations = Vec::new();
    for (replica, log) in logs.iter().enumerate() {
        let mut seen = HashSet::new();
        for entry in log {
            for transaction in &entry.transactions {
                if !seen.insert(transaction.id) {
                    violations.push(format!(
                        "integrity: replica {replica} finalized {:?} twice",
                        transaction.id
                    ));
                }
                if !submitted.contains_key(&transaction.id) {
                    violations.push(format!(
                        "integrity: replica {replica} finalized unsubmitted {:?}",
                        transaction.id
                    ));
                }
            }
        }
        let missing = submitted.keys().filter(|id| !seen.contains(*id)).count();
        if missing > 0 {
            violations.push(format!(
                "liveness: replica {replica} never finalized {missing} submitted transactions"
            ));
        }
    }
    violations
}
