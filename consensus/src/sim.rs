//! The deterministic simulator: n replicas on simulated time and a simulated network,
//! all driven by one seed, with the checkers of ARCHITECTURE.md run at the end.
//!
//! Faults: random delay (hence reordering), duplication and loss; one partition per run
//! (primary isolated, a minority, or a symmetric split) that heals; crash and restart of
//! honest replicas from their store (a `MemoryStore` that receives every
//! `Output::Persist`, in order, before the outputs after it); and Byzantine replicas with
//! one [`Behaviour`] each. Clients submit transactions throughout and re-submit, to
//! another validator, what is not final after a while, as real clients do.
//!
//! Checkers, on every seed: agreement (anchor, ordered vertex hashes, transaction ids and
//! digest per sequence, restarted replicas included); the exact finalized set and
//! topological order, recomputed independently from the anchors; integrity (every
//! submitted transaction final exactly once everywhere, nothing else); no honest key
//! signing two conflicting messages, no evidence naming an honest validator, every
//! honest vertex valid; monotonicity of height and view across restarts; liveness
//! (everything final before the time limit, after faults heal); bounded memory; evidence
//! recorded when equivocation was injected.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fmt;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_crypto::{Digest, Signature};
use weft_dag::store::{MemoryStore, Store};
use weft_dag::{
    Committee, FinalizedEntry, ParentRef, Round, Sequence, SignedVertex, TimestampMs, Transaction,
    TxId, ValidatorIndex, Vertex, View,
};

use crate::messages::{Checkpoint, Message, Phase, Vote};
use crate::replica::{Input, Mutant, Output, Replica, ReplicaConfig, Timer};
use crate::view_change::{Signed, ViewChange};
use crate::Signer;

/// What a Byzantine replica does. Each runs the honest code underneath and corrupts what
/// leaves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// Sends nothing, answers nothing.
    Silent,
    /// The primary of view 0 sends two versions of every pre-prepare vertex, one to
    /// each half of the validators.
    EquivocatingPrimary,
    /// Sends two versions of every vertex, one to each half.
    EquivocatingAuthor,
    /// Every vote goes out with a conflicting twin.
    DoubleVoting,
    /// Two replicas with the same key, each on one side of a split of the honest
    /// validators that heals later.
    Twins,
    /// Everything it sends carries a broken signature.
    InvalidSignatures,
    /// Re-sends old messages it received, at random.
    StaleReplay,
    /// Floods future rounds, far sequences, future views and far checkpoints.
    Flooding,
}

impl Behaviour {
    /// Every behaviour, in the order `--behaviour all` cycles through them.
    pub const ALL: [Behaviour; 8] = [
        Behaviour::Silent,
        Behaviour::EquivocatingPrimary,
        Behaviour::EquivocatingAuthor,
        Behaviour::DoubleVoting,
        Behaviour::Twins,
        Behaviour::InvalidSignatures,
        Behaviour::StaleReplay,
        Behaviour::Flooding,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Silent => "silent",
            Behaviour::EquivocatingPrimary => "equivocating-primary",
            Behaviour::EquivocatingAuthor => "equivocating-author",
            Behaviour::DoubleVoting => "double-voting",
            Behaviour::Twins => "twins",
            Behaviour::InvalidSignatures => "invalid-signatures",
            Behaviour::StaleReplay => "stale-replay",
            Behaviour::Flooding => "flooding",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Behaviour> {
        Behaviour::ALL.into_iter().find(|b| b.name() == name)
    }

    fn equivocates(self) -> bool {
        matches!(
            self,
            Behaviour::EquivocatingPrimary
                | Behaviour::EquivocatingAuthor
                | Behaviour::DoubleVoting
        )
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
    /// Probability that a message (or fetch) is lost.
    pub loss_probability: f64,
    /// One partition per run (kind chosen by the seed), healed after at most 2.5 s.
    pub partitions: bool,
    /// Crash and restart honest replicas (at most f minus the Byzantine count).
    pub crashes: bool,
    /// Byzantine replicas (f + 1 or more is the deliberate-failure test).
    pub byzantine: usize,
    /// What they do.
    pub behaviour: Behaviour,
    /// Sign with ML-DSA-87 and verify every message on delivery.
    pub real_signatures: bool,
    /// Clients re-submit what is not final after this long.
    pub client_retry_ms: u64,
    /// Give up after this much simulated time.
    pub max_time_ms: u64,
    /// A deliberate bug in every honest replica (checker tests only).
    pub mutant: Option<Mutant>,
}

impl SimConfig {
    /// Defaults for `validators` and `seed`: no loss, partitions, crashes or Byzantine
    /// replicas.
    pub fn new(validators: usize, seed: u64) -> SimConfig {
        SimConfig {
            validators,
            seed,
            transactions: 200,
            submit_window_ms: 2_000,
            min_delay_ms: 1,
            max_delay_ms: 40,
            duplicate_probability: 0.05,
            loss_probability: 0.0,
            partitions: false,
            crashes: false,
            byzantine: 0,
            behaviour: Behaviour::Silent,
            real_signatures: false,
            client_retry_ms: 4_000,
            max_time_ms: 60_000,
            mutant: None,
        }
    }

    /// Every fault at once: loss, duplication, a partition, crashes, and `byzantine`
    /// replicas doing `behaviour`.
    pub fn adversarial(
        validators: usize,
        seed: u64,
        byzantine: usize,
        behaviour: Behaviour,
    ) -> SimConfig {
        SimConfig {
            loss_probability: 0.02,
            partitions: true,
            crashes: true,
            byzantine,
            behaviour,
            ..SimConfig::new(validators, seed)
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
    /// The lowest finalized height across honest replicas.
    pub min_finalized: u64,
    /// The highest view an honest replica reached.
    pub max_view: u64,
    /// The lowest stable checkpoint across honest replicas.
    pub min_stable_checkpoint: u64,
    /// Simulated milliseconds until every transaction was final everywhere (or the limit).
    pub elapsed_ms: u64,
    /// Transactions submitted.
    pub submitted: usize,
    /// Mean first-submit-to-final latency, on the first replica to finalize, in simulated ms.
    pub mean_latency_ms: f64,
    /// Evidence reports by honest replicas.
    pub evidence: usize,
    /// Messages the simulated network refused for bad signatures.
    pub rejected_signatures: u64,
    /// A digest of every event in order: same seed, same trace.
    pub trace: Digest,
    /// Each instance's state at the end, for diagnosing a failing seed.
    pub states: Vec<String>,
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: ValidatorIndex,
        message: Message,
        forged: bool,
    },
    Fetch {
        server: usize,
        client: usize,
        hashes: Vec<Digest>,
    },
    Fetched {
        to: usize,
        from: ValidatorIndex,
        vertices: Vec<SignedVertex>,
        forged: bool,
    },
    Timer {
        instance: usize,
        timer: Timer,
        generation: u64,
    },
    Submit {
        transaction: Transaction,
        attempt: u32,
    },
    Crash {
        instance: usize,
        down_ms: u64,
    },
    Restart {
        instance: usize,
    },
    PartitionStart {
        kind: u8,
        until: u64,
    },
}

/// One running copy of a validator (Twins run two per index).
struct Instance {
    index: ValidatorIndex,
    replica: Option<Replica>,
    store: MemoryStore,
    byzantine: bool,
    /// Twins: which side of the honest split this copy talks to.
    side: Option<u8>,
    /// Messages received, for the stale-replay behaviour.
    heard: Vec<Message>,
    last_view: View,
    last_sequence: Sequence,
}

struct World {
    rng: ChaCha8Rng,
    config: SimConfig,
    committee: Committee,
    signers: Vec<Signer>,
    instances: Vec<Instance>,
    byzantine: Vec<bool>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    next_event: u64,
    now: u64,
    timer_generations: HashMap<(usize, Timer), u64>,
    /// Honest validators' finalized logs (by validator index; Byzantine ones stay empty).
    finalized: Vec<Vec<FinalizedEntry>>,
    submitted: HashMap<TxId, u64>,
    final_anywhere: HashSet<TxId>,
    /// Transactions an honest replica received while up: only these are owed liveness
    /// (a client that only ever reached a Byzantine validator can be censored).
    acknowledged: HashSet<TxId>,
    latencies: Vec<u64>,
    trace: blake3::Hasher,
    rejected_signatures: u64,
    /// Group of each validator during the active partition.
    partition: Option<(u64, Vec<u8>)>,
    /// Twins: the honest split, healed at this time.
    twins_split_until: u64,
    honest_side: Vec<u8>,
    /// Every vertex seen, for the exact-set oracle.
    vertices: HashMap<Digest, SignedVertex>,
    /// What each honest key signed, by slot.
    signed_slots: HashMap<Vec<u8>, Digest>,
    violations: Vec<String>,
    evidence: usize,
    evidence_against_byzantine: usize,
}

/// Runs one seed.
pub fn run(config: &SimConfig) -> SimReport {
    let mut world = World::new(config.clone());
    world.run();
    world.report()
}

fn validator(i: usize) -> ValidatorIndex {
    ValidatorIndex(u16::try_from(i).unwrap_or(u16::MAX))
}

impl World {
    fn new(config: SimConfig) -> World {
        let n = config.validators;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let (committee, keys) = weft_dag::testing::committee(n);
        let signers: Vec<Signer> = keys
            .into_iter()
            .map(|k| {
                if config.real_signatures {
                    Signer::ml_dsa_87(k.secret)
                } else {
                    Signer::Placeholder
                }
            })
            .collect();
        // Who is Byzantine: the equivocating primary must be view 0's primary.
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        if config.behaviour == Behaviour::EquivocatingPrimary {
            order.retain(|i| *i != 0);
            order.insert(0, 0);
        }
        let mut byzantine = vec![false; n];
        for i in order.iter().take(config.byzantine.min(n)) {
            byzantine[*i] = true;
        }
        let mut honest_side = vec![0u8; n];
        let honest: Vec<usize> = (0..n).filter(|i| !byzantine[*i]).collect();
        for (k, i) in honest.iter().enumerate() {
            honest_side[*i] = u8::from(k % 2 == 1);
        }
        let mut world = World {
            rng,
            finalized: vec![Vec::new(); n],
            committee,
            signers,
            instances: Vec::new(),
            byzantine,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_event: 0,
            now: 0,
            timer_generations: HashMap::new(),
            submitted: HashMap::new(),
            final_anywhere: HashSet::new(),
            acknowledged: HashSet::new(),
            latencies: Vec::new(),
            trace: blake3::Hasher::new(),
            rejected_signatures: 0,
            partition: None,
            twins_split_until: 0,
            honest_side,
            vertices: HashMap::new(),
            signed_slots: HashMap::new(),
            violations: Vec::new(),
            evidence: 0,
            evidence_against_byzantine: 0,
            config,
        };
        for i in 0..n {
            let replica = world.new_replica(i);
            let byzantine = world.byzantine[i];
            world.instances.push(Instance {
                index: validator(i),
                replica: Some(replica),
                store: MemoryStore::new(),
                byzantine,
                side: None,
                heard: Vec::new(),
                last_view: View(0),
                last_sequence: Sequence(0),
            });
        }
        if world.config.behaviour == Behaviour::Twins && world.config.byzantine > 0 {
            world.twins_split_until = world.rng.gen_range(1_000..=3_000);
            for i in (0..n).filter(|i| world.byzantine[*i]) {
                world.instances[i].side = Some(0);
                let replica = world.new_replica(i);
                world.instances.push(Instance {
                    index: validator(i),
                    replica: Some(replica),
                    store: MemoryStore::new(),
                    byzantine: true,
                    side: Some(1),
                    heard: Vec::new(),
                    last_view: View(0),
                    last_sequence: Sequence(0),
                });
            }
        }
        world
    }

    fn replica_config(&self, i: usize) -> ReplicaConfig {
        let mut config = ReplicaConfig::new(validator(i), self.committee.clone());
        if !self.byzantine[i] {
            config.mutant = self.config.mutant;
        }
        config
    }

    fn new_replica(&self, i: usize) -> Replica {
        match Replica::new(self.replica_config(i), self.signers[i].clone()) {
            Ok(replica) => replica,
            Err(error) => panic!("simulated replica config: {error}"),
        }
    }

    fn behaves(&self, instance: usize) -> Option<Behaviour> {
        self.instances[instance]
            .byzantine
            .then_some(self.config.behaviour)
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
        for instance in 0..self.instances.len() {
            self.step(instance, Input::Start);
        }
        for i in 0..self.config.transactions {
            let at = self.rng.gen_range(0..=self.config.submit_window_ms);
            let payload = format!("seed {} tx {i}", self.config.seed).into_bytes();
            self.schedule(
                at,
                Event::Submit {
                    transaction: Transaction::new(payload),
                    attempt: 0,
                },
            );
        }
        if self.config.partitions {
            let at = self.rng.gen_range(200..=1_500);
            let until = at + self.rng.gen_range(300..=2_500);
            let kind = self.rng.gen_range(0..3u8);
            self.schedule(at, Event::PartitionStart { kind, until });
        }
        if self.config.crashes {
            let f = self.committee.max_faulty();
            let budget = f.saturating_sub(self.config.byzantine);
            let mut honest: Vec<usize> = (0..self.config.validators)
                .filter(|i| !self.byzantine[*i])
                .collect();
            honest.shuffle(&mut self.rng);
            for instance in honest.into_iter().take(budget) {
                let at = self.rng.gen_range(100..=2_500);
                let down_ms = self.rng.gen_range(50..=1_500);
                self.schedule(at, Event::Crash { instance, down_ms });
            }
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
        self.submitted.len() == self.config.transactions
            && self.finalized.iter().enumerate().all(|(i, log)| {
                self.byzantine[i]
                    || log.iter().map(|e| e.transactions.len()).sum::<usize>()
                        >= self.submitted.len()
            })
    }

    /// Two instances can talk now: both up, same side of every active split.
    fn connected(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.instances[a], &self.instances[b]);
        if x.replica.is_none() || y.replica.is_none() {
            return false;
        }
        if let Some((until, groups)) = &self.partition {
            if self.now < *until && groups[x.index.as_usize()] != groups[y.index.as_usize()] {
                return false;
            }
        }
        if self.now < self.twins_split_until {
            let side = |i: &Instance| i.side.unwrap_or(self.honest_side[i.index.as_usize()]);
            if side(x) != side(y) {
                return false;
            }
        }
        true
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver {
                to,
                from,
                message,
                forged,
            } => {
                if self.instances[to].replica.is_none() {
                    return;
                }
                self.trace_event(b"deliver", to, from.as_usize(), &message_id(&message));
                if forged
                    || (self.config.real_signatures && message.verify(&self.committee).is_err())
                {
                    if !forged {
                        self.violations.push(format!(
                            "an honest message from {from} failed its signature check"
                        ));
                    }
                    self.rejected_signatures += 1;
                    return;
                }
                if self.behaves(to) == Some(Behaviour::StaleReplay) {
                    let heard = &mut self.instances[to].heard;
                    if heard.len() < 256 {
                        heard.push(message.clone());
                    }
                }
                self.step(to, Input::Message { from, message });
            }
            Event::Fetch {
                server,
                client,
                hashes,
            } => {
                if !self.connected(server, client) || self.lost() {
                    return;
                }
                let behaviour = self.behaves(server);
                if behaviour == Some(Behaviour::Silent) {
                    return;
                }
                let store = &self.instances[server].store;
                let vertices: Vec<SignedVertex> = hashes
                    .iter()
                    .filter_map(|h| store.vertex(h).ok().flatten())
                    .collect();
                let delay = self.delay();
                let from = self.instances[server].index;
                self.schedule(
                    self.now + delay,
                    Event::Fetched {
                        to: client,
                        from,
                        vertices,
                        forged: behaviour == Some(Behaviour::InvalidSignatures),
                    },
                );
            }
            Event::Fetched {
                to,
                from,
                vertices,
                forged,
            } => {
                if self.instances[to].replica.is_none() {
                    return;
                }
                if forged {
                    self.rejected_signatures += 1;
                    return;
                }
                for vertex in &vertices {
                    self.trace_event(b"fetched", to, from.as_usize(), vertex.hash().as_bytes());
                    if self.config.real_signatures
                        && vertex.verify_signature(&self.committee).is_err()
                    {
                        self.violations.push(format!(
                            "a fetched vertex from {from} failed its signature check"
                        ));
                        return;
                    }
                }
                self.step(to, Input::Fetched { from, vertices });
            }
            Event::Timer {
                instance,
                timer,
                generation,
            } => {
                if self.timer_generations.get(&(instance, timer)) == Some(&generation)
                    && self.instances[instance].replica.is_some()
                {
                    self.trace_event(b"timer", instance, instance, &[]);
                    self.step(instance, Input::Timer(timer));
                }
            }
            Event::Submit {
                transaction,
                attempt,
            } => self.submit(transaction, attempt),
            Event::Crash { instance, down_ms } => {
                self.trace_event(b"crash", instance, instance, &[]);
                self.instances[instance].replica = None;
                self.schedule(self.now + down_ms, Event::Restart { instance });
            }
            Event::Restart { instance } => {
                self.trace_event(b"restart", instance, instance, &[]);
                let index = self.instances[instance].index.as_usize();
                let config = self.replica_config(index);
                let recovered = Replica::recover(
                    config,
                    self.signers[index].clone(),
                    &self.instances[instance].store,
                );
                match recovered {
                    Ok(replica) => {
                        self.check_monotonic(instance, &replica);
                        self.instances[instance].replica = Some(replica);
                        for timer in [Timer::Idle, Timer::Tick] {
                            *self.timer_generations.entry((instance, timer)).or_insert(0) += 1;
                        }
                        self.step(instance, Input::Start);
                    }
                    Err(error) => self
                        .violations
                        .push(format!("replica {index} could not recover: {error}")),
                }
            }
            Event::PartitionStart { kind, until } => {
                let n = self.config.validators;
                let f = self.committee.max_faulty();
                let mut groups = vec![0u8; n];
                match kind {
                    // The current primary alone.
                    0 => {
                        let view = self.instances[0]
                            .replica
                            .as_ref()
                            .map_or(View(0), Replica::view);
                        let primary = usize::try_from(view.0 % n as u64).unwrap_or(0);
                        groups[primary] = 1;
                    }
                    // f validators cut off.
                    1 => {
                        let mut all: Vec<usize> = (0..n).collect();
                        all.shuffle(&mut self.rng);
                        for i in all.into_iter().take(f) {
                            groups[i] = 1;
                        }
                    }
                    // Two halves, neither a quorum.
                    _ => {
                        for (i, group) in groups.iter_mut().enumerate() {
                            *group = u8::from(i % 2 == 1);
                        }
                    }
                }
                self.trace_event(b"partition", usize::from(kind), 0, &until.to_le_bytes());
                self.partition = Some((until, groups));
            }
        }
    }

    fn lost(&mut self) -> bool {
        self.config.loss_probability > 0.0 && self.rng.gen_bool(self.config.loss_probability)
    }

    /// A client submits to a random validator and comes back later; it re-submits
    /// elsewhere what is not final anywhere yet.
    fn submit(&mut self, transaction: Transaction, attempt: u32) {
        let id = transaction.id();
        if self.final_anywhere.contains(&id) || attempt > 20 {
            return;
        }
        self.submitted.entry(id).or_insert(self.now);
        let instance = self.rng.gen_range(0..self.instances.len());
        self.trace_event(b"submit", instance, instance, id.0.as_bytes());
        if self.instances[instance].replica.is_some() {
            if !self.byzantine[self.instances[instance].index.as_usize()] {
                self.acknowledged.insert(id);
            }
            self.step(instance, Input::Transactions(vec![transaction.clone()]));
        }
        let retry = self.now + self.config.client_retry_ms;
        self.schedule(
            retry,
            Event::Submit {
                transaction,
                attempt: attempt + 1,
            },
        );
    }

    fn trace_event(&mut self, kind: &[u8], to: usize, from: usize, id: &[u8]) {
        self.trace.update(&self.now.to_le_bytes());
        self.trace.update(kind);
        self.trace.update(&(to as u64).to_le_bytes());
        self.trace.update(&(from as u64).to_le_bytes());
        self.trace.update(id);
    }

    fn check_monotonic(&mut self, instance: usize, replica: &Replica) {
        let held = &self.instances[instance];
        if replica.view() < held.last_view || replica.last_executed() < held.last_sequence {
            self.violations.push(format!(
                "monotonicity: replica {} restarted at view {} / sequence {} after {} / {}",
                held.index,
                replica.view().0,
                replica.last_executed(),
                held.last_view.0,
                held.last_sequence
            ));
        }
    }

    fn step(&mut self, instance: usize, input: Input) {
        let Some(replica) = self.instances[instance].replica.as_mut() else {
            return;
        };
        let input_kind = match &input {
            Input::Timer(timer) => Some(*timer),
            _ => None,
        };
        let outputs = replica.handle(TimestampMs(self.now), input);
        let (view, executed) = (replica.view(), replica.last_executed());
        let held = &mut self.instances[instance];
        if view < held.last_view || executed < held.last_sequence {
            self.violations.push(format!(
                "monotonicity: replica {} went back to view {} / sequence {executed}",
                held.index, view.0
            ));
        }
        held.last_view = view;
        held.last_sequence = executed;
        let behaviour = self.behaves(instance);
        // Replay and flooding run on the heartbeat: a fixed rate, as bandwidth would
        // impose, not an echo of every message received.
        let tick = matches!(input_kind, Some(Timer::Tick));
        if tick
            && behaviour == Some(Behaviour::StaleReplay)
            && !self.instances[instance].heard.is_empty()
        {
            let pick = self.rng.gen_range(0..self.instances[instance].heard.len());
            let old = self.instances[instance].heard.swap_remove(pick);
            self.broadcast(instance, &old, false);
        }
        if tick && behaviour == Some(Behaviour::Flooding) {
            self.flood(instance);
        }
        for output in outputs {
            self.carry_out(instance, behaviour, output);
        }
    }

    fn carry_out(&mut self, instance: usize, behaviour: Option<Behaviour>, output: Output) {
        let index = self.instances[instance].index;
        let honest = behaviour.is_none();
        match output {
            Output::Persist(batch) => {
                if let Err(error) = self.instances[instance].store.write(batch) {
                    self.violations
                        .push(format!("replica {index} store write failed: {error}"));
                }
            }
            Output::Broadcast(message) | Output::Send { message, .. }
                if behaviour == Some(Behaviour::Silent) =>
            {
                drop(message);
            }
            Output::Broadcast(message) => {
                if honest {
                    self.record_signed(index, &message);
                }
                match (behaviour, &message) {
                    (Some(Behaviour::EquivocatingPrimary), Message::Vertex(v))
                        if v.vertex().proposal.is_some() =>
                    {
                        self.equivocate(instance, v.clone());
                    }
                    (Some(Behaviour::EquivocatingAuthor), Message::Vertex(v)) => {
                        self.equivocate(instance, v.clone());
                    }
                    (Some(Behaviour::DoubleVoting), Message::Vote(vote)) => {
                        self.broadcast(instance, &message, false);
                        let mut other = vote.vote().clone();
                        other.digest = match other.digest {
                            Some(_) => None,
                            None => Some(Digest::of(b"double vote")),
                        };
                        let twin = Message::Vote(other.sign_with(&self.signers[index.as_usize()]));
                        self.broadcast(instance, &twin, false);
                    }
                    (Some(Behaviour::InvalidSignatures), _) => {
                        let forged = self.forge(message);
                        self.broadcast(instance, &forged, true);
                    }
                    _ => self.broadcast(instance, &message, false),
                }
            }
            Output::Send { to, message } => {
                if honest {
                    self.record_signed(index, &message);
                }
                let forged = behaviour == Some(Behaviour::InvalidSignatures);
                let targets: Vec<usize> = (0..self.instances.len())
                    .filter(|t| self.instances[*t].index == to)
                    .collect();
                for target in targets {
                    self.deliver(instance, target, message.clone(), forged);
                }
            }
            Output::Fetch { from, hashes } => {
                let servers: Vec<usize> = (0..self.instances.len())
                    .filter(|t| {
                        self.instances[*t].index == from && self.instances[*t].replica.is_some()
                    })
                    .collect();
                let Some(server) = servers.choose(&mut self.rng).copied() else {
                    return;
                };
                let delay = self.delay();
                self.schedule(
                    self.now + delay,
                    Event::Fetch {
                        server,
                        client: instance,
                        hashes,
                    },
                );
            }
            Output::SetTimer { timer, after_ms } => {
                let generation = self.timer_generations.entry((instance, timer)).or_insert(0);
                *generation += 1;
                let generation = *generation;
                self.schedule(
                    self.now + after_ms,
                    Event::Timer {
                        instance,
                        timer,
                        generation,
                    },
                );
            }
            Output::Finalized(entry) => {
                self.trace_event(b"final", instance, instance, entry.state_digest.as_bytes());
                if !honest {
                    return;
                }
                for transaction in &entry.transactions {
                    if self.final_anywhere.insert(transaction.id) {
                        if let Some(at) = self.submitted.get(&transaction.id) {
                            self.latencies.push(self.now - at);
                        }
                    }
                }
                let log = &mut self.finalized[index.as_usize()];
                let expected = log.last().map_or(Sequence(1), |e| e.sequence.next());
                if entry.sequence != expected {
                    self.violations.push(format!(
                        "monotonicity: replica {index} finalized {} after {}",
                        entry.sequence,
                        expected.0 - 1
                    ));
                }
                log.push(entry);
            }
            Output::Evidence(evidence) => {
                if !honest {
                    return;
                }
                self.evidence += 1;
                let culprit = evidence.culprit();
                if self.byzantine[culprit.as_usize()] {
                    self.evidence_against_byzantine += 1;
                } else {
                    self.violations.push(format!(
                        "evidence: replica {index} holds evidence against honest validator {culprit}"
                    ));
                }
            }
        }
    }

    /// Checker 4 and vertex validity: what an honest key signs never conflicts with what
    /// it signed before (restarts included), and every honest vertex is valid.
    fn record_signed(&mut self, index: ValidatorIndex, message: &Message) {
        let (slot, digest) = match message {
            Message::Vertex(vertex) => {
                let body = vertex.vertex();
                if body.author != index {
                    return;
                }
                self.vertices.insert(vertex.hash(), vertex.clone());
                if let Err(error) = body.check_structure(&self.committee, &Default::default()) {
                    self.violations.push(format!(
                        "validity: honest replica {index} signed an invalid vertex at round {}: {error}",
                        body.round
                    ));
                }
                (format!("vertex/{index}/{}", body.round.0), vertex.hash())
            }
            Message::Vote(vote) => {
                let v = vote.vote();
                if v.voter != index {
                    return;
                }
                (
                    format!("vote/{index}/{:?}/{}/{}", v.phase, v.view.0, v.sequence.0),
                    v.digest.unwrap_or_default(),
                )
            }
            Message::Checkpoint(checkpoint) => {
                let c = checkpoint.checkpoint();
                if c.signer != index {
                    return;
                }
                (
                    format!("checkpoint/{index}/{}", c.sequence.0),
                    c.state_digest,
                )
            }
            Message::ViewChange { view_change, .. } => {
                let body = view_change.body();
                if body.replica != index {
                    return;
                }
                (
                    format!("view-change/{index}/{}", body.view.0),
                    view_change.hash(),
                )
            }
            Message::NewView(new_view) => {
                let body = new_view.new_view.body();
                if body.primary != index {
                    return;
                }
                (
                    format!("new-view/{index}/{}", body.view.0),
                    new_view.new_view.hash(),
                )
            }
            Message::Status { .. } | Message::Decided(_) => return,
        };
        match self.signed_slots.get(slot.as_bytes()) {
            Some(previous) if *previous != digest => self.violations.push(format!(
                "double signing: honest replica {index} signed two different messages for {slot}"
            )),
            Some(_) => {}
            None => {
                self.signed_slots.insert(slot.into_bytes(), digest);
            }
        }
    }

    fn broadcast(&mut self, instance: usize, message: &Message, forged: bool) {
        if let Message::Vertex(vertex) = message {
            self.vertices
                .entry(vertex.hash())
                .or_insert_with(|| vertex.clone());
        }
        let from = self.instances[instance].index;
        let targets: Vec<usize> = (0..self.instances.len())
            .filter(|t| self.instances[*t].index != from)
            .collect();
        for target in targets {
            self.deliver(instance, target, message.clone(), forged);
        }
    }

    fn deliver(&mut self, source: usize, target: usize, message: Message, forged: bool) {
        if !self.connected(source, target) || self.lost() {
            return;
        }
        let from = self.instances[source].index;
        let delay = self.delay();
        let duplicate = self.rng.gen_bool(self.config.duplicate_probability);
        if duplicate {
            let again = self.delay();
            self.schedule(
                self.now + delay + again,
                Event::Deliver {
                    to: target,
                    from,
                    message: message.clone(),
                    forged,
                },
            );
        }
        self.schedule(
            self.now + delay,
            Event::Deliver {
                to: target,
                from,
                message,
                forged,
            },
        );
    }

    /// Two versions of one vertex (a different creation time), one to each half.
    fn equivocate(&mut self, instance: usize, vertex: SignedVertex) {
        let index = self.instances[instance].index;
        let mut body: Vertex = vertex.vertex().clone();
        body.created_at = TimestampMs(body.created_at.0 + 1);
        let signer = self.signers[index.as_usize()].clone();
        let other = body.signed_by(|context, bytes| signer.sign(context, bytes));
        // The honest code underneath keeps the first version in its store, so it answers
        // fetches of either from its own history.
        let mut batch = weft_dag::store::StoreBatch::new();
        batch.put_vertex(other.clone());
        let _ = self.instances[instance].store.write(batch);
        self.vertices.insert(other.hash(), other.clone());
        self.vertices.insert(vertex.hash(), vertex.clone());
        let targets: Vec<usize> = (0..self.instances.len())
            .filter(|t| self.instances[*t].index != index)
            .collect();
        for (k, target) in targets.into_iter().enumerate() {
            let version = if k % 2 == 0 { &vertex } else { &other };
            self.deliver(instance, target, Message::Vertex(version.clone()), false);
        }
    }

    /// Breaks the signature of what a Byzantine replica sends. With placeholder
    /// signatures the network's check is modelled by the `forged` flag alone.
    fn forge(&self, message: Message) -> Message {
        if !self.config.real_signatures {
            return message;
        }
        let garbage = || Signature::from_bytes(&[7u8; weft_crypto::SIGNATURE_BYTES]).ok();
        match message {
            Message::Vote(vote) => match garbage() {
                Some(signature) => Message::Vote(vote.with_signature(signature)),
                None => Message::Vote(vote),
            },
            Message::Vertex(vertex) => match garbage() {
                Some(signature) => Message::Vertex(SignedVertex::with_signature(
                    vertex.vertex().clone(),
                    signature,
                )),
                None => Message::Vertex(vertex),
            },
            other => other,
        }
    }

    /// A burst of junk that is validly signed but useless: vertices for future rounds
    /// with made-up parents, votes for far sequences, view changes for future views,
    /// far checkpoints.
    fn flood(&mut self, instance: usize) {
        let index = self.instances[instance].index;
        let Some(replica) = self.instances[instance].replica.as_ref() else {
            return;
        };
        let (view, executed) = (replica.view(), replica.last_executed());
        let signer = self.signers[index.as_usize()].clone();
        let chain_id = self.committee.chain_id().clone();
        let epoch = self.committee.epoch();
        let quorum = self.committee.quorum();
        let mut junk = Vec::new();
        for k in 0..4u64 {
            let round = Round(self.rng.gen_range(1..10_000));
            let mut parents = vec![ParentRef {
                author: index,
                round: Round(round.0 - 1),
                hash: Digest::of(&self.rng.gen::<u64>().to_le_bytes()),
            }];
            for author in self
                .committee
                .indices()
                .filter(|a| *a != index)
                .take(quorum)
            {
                parents.push(ParentRef {
                    author,
                    round: Round(round.0 - 1),
                    hash: Digest::of(&self.rng.gen::<u64>().to_le_bytes()),
                });
            }
            let vertex = Vertex {
                chain_id: chain_id.clone(),
                epoch,
                author: index,
                round,
                created_at: TimestampMs(self.now),
                proposal: None,
                parents,
                transactions: Vec::new(),
            };
            junk.push(Message::Vertex(vertex.signed_by(|c, b| signer.sign(c, b))));
            junk.push(Message::Vote(
                Vote {
                    chain_id: chain_id.clone(),
                    epoch,
                    phase: Phase::Prepare,
                    view: View(view.0 + k),
                    sequence: Sequence(executed.0 + 1_000 + k),
                    digest: Some(Digest::of(b"flood")),
                    voter: index,
                }
                .sign_with(&signer),
            ));
            junk.push(Message::Checkpoint(
                Checkpoint {
                    chain_id: chain_id.clone(),
                    epoch,
                    sequence: Sequence(executed.0 + 10_000 * (k + 1)),
                    state_digest: Digest::of(b"flood"),
                    signer: index,
                }
                .sign_with(&signer),
            ));
            junk.push(Message::ViewChange {
                view_change: Signed::sign_with(
                    ViewChange {
                        chain_id: chain_id.clone(),
                        epoch,
                        view: View(view.0 + 100 + self.rng.gen_range(0..1_000)),
                        stable_sequence: Sequence(0),
                        stable_digest: Digest::default(),
                        prepared: Vec::new(),
                        pre_prepared: Vec::new(),
                        replica: index,
                    },
                    &signer,
                ),
                certificate: Vec::new(),
            });
        }
        for message in junk {
            self.broadcast(instance, &message, false);
        }
    }

    fn report(&self) -> SimReport {
        let mut violations = self.violations.clone();
        let honest_logs: Vec<Vec<FinalizedEntry>> = self
            .finalized
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.byzantine[*i])
            .map(|(_, log)| log.clone())
            .collect();
        violations.extend(check_agreement(&honest_logs));
        violations.extend(check_integrity(
            &honest_logs,
            &self.submitted,
            &self.acknowledged,
        ));
        let gc_depth = ReplicaConfig::new(ValidatorIndex(0), self.committee.clone()).gc_depth;
        violations.extend(check_exact_set(&honest_logs, &self.vertices, gc_depth));
        violations.extend(self.check_memory());
        if self.config.behaviour.equivocates()
            && self.config.byzantine > 0
            && self.config.byzantine <= self.committee.max_faulty()
            && self.evidence_against_byzantine == 0
            && honest_logs.iter().all(|log| log.len() >= 4)
        {
            violations.push(format!(
                "evidence: {} was injected but no honest replica recorded evidence",
                self.config.behaviour
            ));
        }
        let honest: Vec<&Instance> = self.instances.iter().filter(|i| !i.byzantine).collect();
        for instance in &honest {
            if let Some(at) = instance.replica.as_ref().and_then(Replica::diverged) {
                violations.push(format!(
                    "agreement: replica {} diverged from a checkpoint quorum at sequence {at}",
                    instance.index
                ));
            }
        }
        let min_finalized = honest_logs
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
            max_view: honest.iter().map(|i| i.last_view.0).max().unwrap_or(0),
            min_stable_checkpoint: honest
                .iter()
                .filter_map(|i| i.replica.as_ref())
                .map(|r| r.stable_checkpoint().sequence.0)
                .min()
                .unwrap_or(0),
            elapsed_ms: self.now,
            submitted: self.submitted.len(),
            mean_latency_ms,
            evidence: self.evidence,
            rejected_signatures: self.rejected_signatures,
            trace: Digest::from_bytes(*self.trace.clone().finalize().as_bytes()),
            states: self
                .instances
                .iter()
                .map(|i| {
                    format!(
                        "{}{}: {}",
                        i.index,
                        if i.byzantine { " (byzantine)" } else { "" },
                        i.replica.as_ref().map_or("down".into(), Replica::describe)
                    )
                })
                .collect(),
        }
    }

    /// Checker 6, memory part: what a replica holds is bounded by the protocol's
    /// parameters, not by the length of the run.
    fn check_memory(&self) -> Vec<String> {
        let n = self.config.validators;
        let defaults = ReplicaConfig::new(ValidatorIndex(0), self.committee.clone());
        let rounds = defaults.gc_depth + 4 * defaults.window + 8;
        let as_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        // Accepted rounds above the GC round, plus what waits (bounded per author).
        let vertex_bound = 2 * n * as_usize(rounds) + n * as_usize(defaults.gc_depth);
        let vote_bound = 2 * as_usize(3 * defaults.window + defaults.checkpoint_interval) + 4;
        let mut violations = Vec::new();
        for instance in &self.instances {
            let Some(replica) = &instance.replica else {
                continue;
            };
            let memory = replica.memory();
            if memory.dag_vertices + memory.waiting_vertices > vertex_bound
                || memory.vote_slots > vote_bound
                || memory.checkpoint_slots > vote_bound
                || memory.decided_slots > as_usize(defaults.decided_retention)
                || memory.view_changes > n
            {
                violations.push(format!(
                    "memory: replica {} holds {memory:?}, bound {vertex_bound} vertices / {vote_bound} slots",
                    instance.index
                ));
            }
        }
        violations
    }
}

fn message_id(message: &Message) -> Vec<u8> {
    match message {
        Message::Vertex(vertex) => vertex.hash().as_bytes().to_vec(),
        Message::Vote(vote) => vote.encoded().to_vec(),
        Message::Checkpoint(checkpoint) => checkpoint.encoded().to_vec(),
        other => Digest::of(&other.to_wire()).as_bytes().to_vec(),
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
/// submitted, and every transaction an honest replica acknowledged is final everywhere.
/// A transaction whose client only ever reached Byzantine validators is owed nothing:
/// they may censor it (seed 1024932 of the first long run: 15 retries, all to a twin).
pub fn check_integrity(
    logs: &[Vec<FinalizedEntry>],
    submitted: &HashMap<TxId, u64>,
    acknowledged: &HashSet<TxId>,
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
        let missing = acknowledged.iter().filter(|id| !seen.contains(*id)).count();
        if missing > 0 {
            violations.push(format!(
                "liveness: replica {replica} never finalized {missing} acknowledged transactions"
            ));
        }
    }
    violations
}

/// Checker 3 (order) with the exact-set rule recomputed independently: sequence s
/// finalizes exactly the anchor's history at or above `G_s` that no earlier sequence
/// finalized, in an order where every parent comes before its children.
pub fn check_exact_set(
    logs: &[Vec<FinalizedEntry>],
    vertices: &HashMap<Digest, SignedVertex>,
    gc_depth: u64,
) -> Vec<String> {
    let Some(log) = logs.iter().max_by_key(|log| log.len()) else {
        return Vec::new();
    };
    let mut finalized: HashSet<Digest> = HashSet::new();
    let mut highest: Option<Round> = None;
    let mut violations = Vec::new();
    for entry in log {
        let Some(anchor) = entry.anchor else {
            if !entry.vertices.is_empty() {
                violations.push(format!(
                    "order: null sequence {} finalized vertices",
                    entry.sequence
                ));
            }
            continue;
        };
        let Some(anchor_vertex) = vertices.get(&anchor) else {
            continue;
        };
        let round = anchor_vertex.vertex().round;
        highest = Some(highest.map_or(round, |h| h.max(round)));
        let gc = Round(highest.map_or(0, |h| h.0.saturating_sub(gc_depth)));
        let mut expected = HashSet::new();
        let mut stack = vec![anchor];
        let mut complete = true;
        while let Some(hash) = stack.pop() {
            if finalized.contains(&hash) || !expected.insert(hash) {
                continue;
            }
            let Some(vertex) = vertices.get(&hash) else {
                complete = false;
                continue;
            };
            for parent in &vertex.vertex().parents {
                if parent.round >= gc {
                    stack.push(parent.hash);
                }
            }
        }
        let got: HashSet<Digest> = entry.vertices.iter().copied().collect();
        if complete && got != expected {
            violations.push(format!(
                "order: sequence {} finalized {} vertices, the exact-set rule gives {}",
                entry.sequence,
                got.len(),
                expected.len()
            ));
        }
        let mut position = HashMap::new();
        for (k, hash) in entry.vertices.iter().enumerate() {
            position.insert(*hash, k);
        }
        for (k, hash) in entry.vertices.iter().enumerate() {
            if let Some(vertex) = vertices.get(hash) {
                for parent in &vertex.vertex().parents {
                    if position.get(&parent.hash).is_some_and(|p| *p > k) {
                        violations.push(format!(
                            "order: sequence {} puts a vertex before its parent",
                            entry.sequence
                        ));
                    }
                }
            }
        }
        finalized.extend(got);
    }
    violations
}

/// Command-line options of `weft simulate` (and `weft-simulate`).
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// n.
    pub validators: usize,
    /// Byzantine replicas per seed.
    pub byzantine: usize,
    /// One behaviour, or `None` to cycle through all of them by seed.
    pub behaviour: Option<Behaviour>,
    /// Seeds to run.
    pub seeds: u64,
    /// The first seed.
    pub seed_base: u64,
    /// Transactions per seed.
    pub transactions: usize,
    /// Message loss probability.
    pub loss: f64,
    /// One healing partition per seed.
    pub partitions: bool,
    /// Crash and restart honest replicas.
    pub crashes: bool,
    /// ML-DSA-87 on every message.
    pub real_signatures: bool,
    /// A deliberate bug in every honest replica, to watch the checkers fire.
    pub mutant: Option<Mutant>,
}

/// Totals over many seeds.
#[derive(Clone, Debug, Default)]
pub struct SimSummary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds with at least one violation.
    pub violations: u64,
    /// The lowest finalized height over all seeds.
    pub min_finalized: u64,
    /// The highest view over all seeds.
    pub max_view: u64,
}

impl SimOptions {
    /// The usage text.
    pub const USAGE: &'static str = "usage: simulate [--validators N] [--byzantine K] [--behaviour NAME|all] \
[--seeds S] [--seed-base B] [--transactions T] [--loss P] [--partitions] [--crashes] [--faults] \
[--real-signatures] [--mutant no-durable-own-vertex|count-parent-vertices|per-author-frontier]\nbehaviours: silent, equivocating-primary, equivocating-author, double-voting, twins, \
invalid-signatures, stale-replay, flooding, all";

    /// Parses command-line words (without the program name).
    pub fn parse(words: impl IntoIterator<Item = String>) -> Result<SimOptions, String> {
        let mut options = SimOptions {
            validators: 4,
            byzantine: 0,
            behaviour: None,
            seeds: 100,
            seed_base: 0,
            transactions: 200,
            loss: 0.0,
            partitions: false,
            crashes: false,
            real_signatures: false,
            mutant: None,
        };
        let mut words = words.into_iter();
        while let Some(flag) = words.next() {
            match flag.as_str() {
                "--real-signatures" => options.real_signatures = true,
                "--partitions" => options.partitions = true,
                "--crashes" => options.crashes = true,
                "--faults" => {
                    options.partitions = true;
                    options.crashes = true;
                    options.loss = 0.02;
                }
                _ => {
                    let value = words
                        .next()
                        .ok_or_else(|| format!("{flag} needs a value"))?;
                    let number = |name: &str| {
                        value
                            .parse::<u64>()
                            .map_err(|_| format!("{name} takes a whole number, got {value:?}"))
                    };
                    let size = |name: &str| {
                        number(name).and_then(|v| usize::try_from(v).map_err(|e| e.to_string()))
                    };
                    match flag.as_str() {
                        "--validators" => options.validators = size("--validators")?,
                        "--byzantine" => options.byzantine = size("--byzantine")?,
                        "--behaviour" | "--behavior" => {
                            options.behaviour = if value == "all" {
                                None
                            } else {
                                Some(
                                    Behaviour::parse(&value)
                                        .ok_or_else(|| format!("unknown behaviour {value:?}"))?,
                                )
                            }
                        }
                        "--seeds" => options.seeds = number("--seeds")?,
                        "--mutant" => {
                            options.mutant = Some(
                                Mutant::parse(&value)
                                    .ok_or_else(|| format!("unknown mutant {value:?}"))?,
                            )
                        }
                        "--seed-base" => options.seed_base = number("--seed-base")?,
                        "--transactions" => options.transactions = size("--transactions")?,
                        "--loss" => {
                            options.loss = value
                                .parse::<f64>()
                                .ok()
                                .filter(|p| (0.0..0.5).contains(p))
                                .ok_or_else(|| {
                                    format!("--loss takes a probability below 0.5, got {value:?}")
                                })?
                        }
                        other => return Err(format!("unknown flag {other}")),
                    }
                }
            }
        }
        if options.validators < 4 || options.validators > 64 {
            return Err("--validators must be between 4 and 64".into());
        }
        if options.byzantine >= options.validators {
            return Err("--byzantine must be below --validators".into());
        }
        Ok(options)
    }

    /// The configuration of one seed.
    pub fn config(&self, seed: u64) -> SimConfig {
        let behaviour = self.behaviour.unwrap_or_else(|| {
            Behaviour::ALL[usize::try_from(seed % Behaviour::ALL.len() as u64).unwrap_or(0)]
        });
        SimConfig {
            transactions: self.transactions,
            loss_probability: self.loss,
            partitions: self.partitions,
            crashes: self.crashes,
            byzantine: self.byzantine,
            behaviour,
            real_signatures: self.real_signatures,
            mutant: self.mutant,
            ..SimConfig::new(self.validators, seed)
        }
    }

    /// The command that replays one seed.
    pub fn replay(&self, program: &str, seed: u64) -> String {
        let config = self.config(seed);
        let mut command = format!(
            "{program} --validators {} --byzantine {} --behaviour {} --seeds 1 --seed-base {seed} --transactions {}",
            self.validators, self.byzantine, config.behaviour, self.transactions
        );
        if self.loss > 0.0 {
            command.push_str(&format!(" --loss {}", self.loss));
        }
        if let Some(mutant) = self.mutant {
            let name = mutant.name();
            command.push_str(&format!(" --mutant {name}"));
        }
        for (on, flag) in [
            (self.partitions, " --partitions"),
            (self.crashes, " --crashes"),
            (self.real_signatures, " --real-signatures"),
        ] {
            if on {
                command.push_str(flag);
            }
        }
        command
    }
}

/// Runs every seed of `options`, reporting lines through `print`: one per failing seed
/// with its replay command, then the throughput and latency line and the summary line
/// `simulate: seeds=S violations=V min_finalized=M max_view=X`.
pub fn run_many(options: &SimOptions, program: &str, mut print: impl FnMut(String)) -> SimSummary {
    let mut summary = SimSummary {
        min_finalized: u64::MAX,
        ..SimSummary::default()
    };
    let (mut latency_sum, mut submitted, mut elapsed) = (0.0, 0usize, 0u64);
    for seed in options.seed_base..options.seed_base.saturating_add(options.seeds) {
        let report = run(&options.config(seed));
        summary.seeds += 1;
        if !report.violations.is_empty() {
            summary.violations += 1;
            print(format!(
                "seed {seed}: {} -- replay: {}",
                report.violations.join("; "),
                options.replay(program, seed)
            ));
            if options.seeds == 1 {
                for state in &report.states {
                    print(format!("  {state}"));
                }
            }
        }
        summary.min_finalized = summary.min_finalized.min(report.min_finalized);
        summary.max_view = summary.max_view.max(report.max_view);
        latency_sum += report.mean_latency_ms;
        submitted += report.submitted;
        elapsed += report.elapsed_ms;
    }
    if summary.min_finalized == u64::MAX {
        summary.min_finalized = 0;
    }
    print(format!(
        "simulate: mean finality latency {:.1} ms, {:.0} tx/s of simulated time (offered load)",
        latency_sum / summary.seeds.max(1) as f64,
        submitted as f64 / (elapsed.max(1) as f64 / 1000.0)
    ));
    print(format!(
        "simulate: seeds={} violations={} min_finalized={} max_view={}",
        summary.seeds, summary.violations, summary.min_finalized, summary.max_view
    ));
    summary
}
