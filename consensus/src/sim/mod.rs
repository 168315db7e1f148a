//! The deterministic simulator: n replicas on simulated time and a simulated network,
//! all driven by one seed, with the checkers of ARCHITECTURE.md run at the end.
//!
//! Faults: random delay (hence reordering), duplication and loss; one partition per run
//! (primary isolated, a minority, or a symmetric split) that heals; targeted delivery
//! faults (chosen message kinds to one chosen replica dropped or delayed for a while);
//! crash and restart of honest replicas from their store (a `MemoryStore` that receives
//! every `Output::Persist`, in order, before the outputs after it), also crashes that
//! cut one `handle` step after its k-th output, and at most one wiped restart (an empty
//! store, keys kept); and Byzantine replicas with one [`Behaviour`] each, most of which
//! craft messages signed with their own key ([`adversary`]). Every message goes through
//! its wire encoding. Clients submit transactions over the whole run and re-submit, to
//! another validator, what no honest validator acknowledged after a while; one
//! transaction in eight also goes, identically, to a second validator a second later
//! (an impatient client), so deduplication meets restarts from a snapshot.
//!
//! Checkers, on every seed: agreement (anchor, ordered vertex hashes, transaction ids and
//! digest per sequence, restarted and wiped replicas included); the exact finalized set
//! and topological order, recomputed independently from the anchors; integrity (every
//! submitted transaction final exactly once everywhere, nothing else); no honest key
//! signing two conflicting messages (vertices by (author, round), pre-prepares by
//! (view, sequence), votes, checkpoints, view changes, new views), no evidence naming an
//! honest validator, every honest vertex valid; every honest message decodes from its
//! wire form; monotonicity of height and view across restarts; liveness (everything an
//! honest replica acknowledged final before the time limit, long after faults heal);
//! memory bounded in bytes over the whole run; evidence recorded when equivocation was
//! injected.

mod adversary;
mod checkers;
mod options;

pub use checkers::{check_agreement, check_exact_set, check_integrity};
pub use options::{run_many, SimCommand, SimOptions, SimSummary};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_crypto::{Digest, Signature, SIGNATURE_BYTES};
use weft_dag::store::{MemoryStore, Store};
use weft_dag::{
    Committee, FinalizedEntry, Limits, ParentRef, Round, Sequence, SignedVertex, TimestampMs,
    Transaction, TxId, ValidatorIndex, Vertex, View,
};

use crate::messages::{Checkpoint, Message, Phase, Vote};
use crate::replica::{Input, Mutant, Output, Replica, ReplicaConfig, Timer};
use crate::view_change::{Signed, ViewChange};
use crate::Signer;

/// What a Byzantine replica does. The first eight run the honest code underneath and
/// corrupt what leaves it; the others also craft messages of their own, signed with the
/// Byzantine validator's key (so they pass every signature check), from what the honest
/// code underneath emits and what the replica heard.
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
    /// Floods future rounds, far sequences, future views and far checkpoints, and
    /// vertices just above the top round whose made-up parents sort low (they wait in
    /// honest buffers and crowd what those replicas fetch).
    Flooding,
    /// As primary, proposes different anchors for one (view, sequence) to different
    /// replicas: the honest anchor to some, another vertex of the same round, or one of
    /// the next round (its own chain rewritten for them), to the others, with its own
    /// prepare and commit for each anchor to its group (review findings 3 and 1).
    SplitAnchors,
    /// As the primary of a view entered through a NewView, proposes fresh anchors for
    /// sequences the NewView re-proposed, to replicas still lacking the re-proposed
    /// anchor, votes for them, and later claims in its view change to have prepared them
    /// (review finding 1).
    HijackReproposals,
    /// As primary, sends its own prepare vote for each of its anchors (review finding 3).
    SelfPreparingPrimary,
    /// View changes with false, inflated, far-away (stable + 5,000, u64::MAX - 1) or
    /// per-recipient-different claims (review findings 2 and 3).
    LyingViewChanges,
    /// As a new primary, sends NewViews with wrong decisions, missing view changes or
    /// extra proposals, different per recipient.
    ByzantineNewView,
    /// Each vote goes out for one digest to some replicas and another to the others.
    SplitVotes,
    /// Answers fetches with other or old vertices, its forged versions, or nothing.
    LyingFetches,
    /// Lies when others sync: a `Status` with a huge view and executed sequence,
    /// `Decided` certificates mixed from votes of other sequences and its own forgeries.
    LyingSync,
    /// All of the crafting strategies above at once, chosen at random per message.
    Adaptive,
}

impl Behaviour {
    /// Every behaviour, in the order `--behaviour all` cycles through them.
    pub const ALL: [Behaviour; 17] = [
        Behaviour::Silent,
        Behaviour::EquivocatingPrimary,
        Behaviour::EquivocatingAuthor,
        Behaviour::DoubleVoting,
        Behaviour::Twins,
        Behaviour::InvalidSignatures,
        Behaviour::StaleReplay,
        Behaviour::Flooding,
        Behaviour::SplitAnchors,
        Behaviour::HijackReproposals,
        Behaviour::SelfPreparingPrimary,
        Behaviour::LyingViewChanges,
        Behaviour::ByzantineNewView,
        Behaviour::SplitVotes,
        Behaviour::LyingFetches,
        Behaviour::LyingSync,
        Behaviour::Adaptive,
    ];

    /// The behaviours that only corrupt what the honest code sends (the first eight).
    pub const CLASSIC: [Behaviour; 8] = [
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
            Behaviour::SplitAnchors => "split-anchors",
            Behaviour::HijackReproposals => "hijack-reproposals",
            Behaviour::SelfPreparingPrimary => "self-preparing-primary",
            Behaviour::LyingViewChanges => "lying-view-changes",
            Behaviour::ByzantineNewView => "byzantine-new-view",
            Behaviour::SplitVotes => "split-votes",
            Behaviour::LyingFetches => "lying-fetches",
            Behaviour::LyingSync => "lying-sync",
            Behaviour::Adaptive => "adaptive",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Behaviour> {
        Behaviour::ALL.into_iter().find(|b| b.name() == name)
    }

    /// True for the behaviours that craft messages (not only corrupt the honest ones).
    pub fn crafts(self) -> bool {
        !Behaviour::CLASSIC.contains(&self)
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
    /// Crashes may cut one `handle` step after its k-th output: the rest, persists
    /// included, is never carried out.
    pub cut_crashes: bool,
    /// One crash per seed (where f allows) may restart from an empty store, keys kept.
    pub wipes: bool,
    /// Drop or delay chosen message kinds to one chosen replica for a while.
    pub targeted_faults: bool,
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
    /// Every replica's idle heartbeat (`ReplicaConfig::idle_interval_ms`). Short, it
    /// builds empty rounds that paper over a rule that forgets work; the node's default
    /// (`NODE_IDLE_INTERVAL_MS`) leaves rounds to the load alone.
    pub idle_interval_ms: u64,
    /// A deliberate bug in every honest replica (checker tests only).
    pub mutant: Option<Mutant>,
    /// Every honest replica runs as it was when the replayed seeds were found
    /// (`ReplicaConfig::legacy_replay`), and clients resubmit after 4 s whatever
    /// happened (acknowledged or not), as they did then.
    pub legacy_replay: bool,
    /// Byzantine replicas run `mutant` underneath too (a Byzantine validator runs any
    /// code it likes): replays a seed found when every replica ran the old rule, since
    /// the honest code under a Byzantine behaviour shapes the trajectory as well.
    pub byzantine_mutant: bool,
}

/// The node's default idle heartbeat (`[consensus] idle_heartbeat_ms`): 5 minutes, longer
/// than any simulated run, so no empty round is built for idleness.
pub const NODE_IDLE_INTERVAL_MS: u64 = 300_000;

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
            cut_crashes: false,
            wipes: false,
            targeted_faults: false,
            byzantine: 0,
            behaviour: Behaviour::Silent,
            real_signatures: false,
            client_retry_ms: 4_000,
            max_time_ms: 60_000,
            idle_interval_ms: 50,
            mutant: None,
            legacy_replay: false,
            byzantine_mutant: false,
        }
    }

    /// Every fault at once: loss, duplication, a partition, targeted delivery faults,
    /// crashes (cutting steps, one wiped restart), and `byzantine` replicas doing
    /// `behaviour`; clients submit over 8 s, past every fault. Odd seeds run the node's
    /// idle heartbeat, even seeds a 50 ms one.
    pub fn adversarial(
        validators: usize,
        seed: u64,
        byzantine: usize,
        behaviour: Behaviour,
    ) -> SimConfig {
        SimConfig {
            cut_crashes: true,
            wipes: true,
            targeted_faults: true,
            transactions: 400,
            submit_window_ms: 8_000,
            idle_interval_ms: SimConfig::alternating_idle(seed),
            ..SimConfig::classic_faults(validators, seed, byzantine, behaviour)
        }
    }

    /// The idle heartbeat of a seed that does not choose one: the node's default for odd
    /// seeds, 50 ms for even seeds.
    pub fn alternating_idle(seed: u64) -> u64 {
        if seed % 2 == 1 {
            NODE_IDLE_INTERVAL_MS
        } else {
            50
        }
    }

    /// The faults of the first simulator: loss, duplication, a partition and whole-step
    /// crashes, load over 2 s (what the unfixed replica survives with the classic
    /// behaviours).
    pub fn classic_faults(
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
    /// Byzantine messages whose wire form did not decode (dropped).
    pub undecodable_byzantine: u64,
    /// Messages the Byzantine replicas crafted (not sent by their honest code).
    pub crafted: u64,
    /// The largest estimated memory of an honest replica over the run, in bytes.
    pub peak_memory_bytes: u64,
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
    /// An impatient client's identical copy of a transaction, to a second validator.
    Copy {
        transaction: Transaction,
    },
    Crash {
        instance: usize,
        down_ms: u64,
        cut: bool,
        wipe: bool,
    },
    Restart {
        instance: usize,
        wipe: bool,
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
    /// What a crafting Byzantine replica remembers.
    adversary: adversary::Adversary,
    /// A crash that waits for a step to cut.
    armed_cut: Option<ArmedCut>,
    /// View changes it holds (by sender): view and wire size, for the memory checker.
    held_view_changes: BTreeMap<ValidatorIndex, (View, usize)>,
    /// The memory checker already fired for it.
    memory_flagged: bool,
    /// Wiped and restarted: crash again once it saved a view while still learning.
    crash_while_learning: bool,
}

impl Instance {
    fn new(index: ValidatorIndex, replica: Replica, byzantine: bool, side: Option<u8>) -> Self {
        Instance {
            index,
            replica: Some(replica),
            store: MemoryStore::new(),
            byzantine,
            side,
            heard: Vec::new(),
            last_view: View(0),
            last_sequence: Sequence(0),
            adversary: adversary::Adversary::default(),
            armed_cut: None,
            held_view_changes: BTreeMap::new(),
            memory_flagged: false,
            crash_while_learning: false,
        }
    }
}

/// A crash waiting for a step with at least one output (sooner for a step that sends a
/// NewView, an anchor or a view change) to cut it.
#[derive(Clone, Copy, Debug)]
struct ArmedCut {
    /// Cut whatever step comes after this time.
    deadline: u64,
    down_ms: u64,
    wipe: bool,
    /// Wait for the step that sends a NewView (the deadline still applies).
    new_view_only: bool,
}

/// Chosen message kinds to one chosen replica are dropped (or delayed) for a while.
#[derive(Clone, Debug)]
struct TargetedFault {
    kinds: Vec<&'static str>,
    target: ValidatorIndex,
    from: u64,
    until: u64,
    /// `None`: dropped; otherwise delayed by this much more.
    delay: Option<u64>,
    /// Only messages (and fetch answers) from honest validators are affected.
    honest_senders_only: bool,
    /// A hand-over: withholds fetch answers too.
    hand_over: bool,
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
    /// Transactions an honest replica acknowledged (admitted in a whole step, so its
    /// record was durable), by the instances that did and were not wiped since: only
    /// these are owed liveness (a client that only ever reached a Byzantine validator can
    /// be censored), and their clients stop retrying.
    acknowledged: HashMap<TxId, BTreeSet<usize>>,
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
    /// NewViews each honest key sent since its store was last wiped, (index, view): a
    /// wiped replica does not hold what it sent before (its floor covers that).
    new_views_since_wipe: BTreeSet<(ValidatorIndex, View)>,
    /// View changes each honest key signed since its store was last wiped.
    view_changes_since_wipe: BTreeSet<(ValidatorIndex, View)>,
    violations: Vec<String>,
    evidence: usize,
    evidence_against_byzantine: usize,
    /// Slots (author, round) a Byzantine author signed twice, with both versions.
    equivocated: HashMap<(ValidatorIndex, Round), [Digest; 2]>,
    /// Side-history anchors a Byzantine primary crafted: its hand-over does not
    /// withhold them.
    side_vertices: HashSet<Digest>,
    /// The version of an equivocated slot each honest instance received first.
    equivocation_seen: HashMap<(usize, ValidatorIndex, Round), Digest>,
    /// Some honest instance received both versions of one slot (by push or fetch): only
    /// then is evidence owed.
    equivocation_reached: bool,
    limits: Limits,
    targeted: Vec<TargetedFault>,
    /// Logs of wiped replicas before the wipe (checked for agreement too).
    old_logs: Vec<Vec<FinalizedEntry>>,
    undecodable_byzantine: u64,
    crafted: u64,
    /// Wire bytes and count of vertices delivered, for the memory estimate.
    vertex_bytes: (u64, u64),
    peak_memory_bytes: u64,
    /// Statuses sent to each instance in the last `STALE_STATUS_MS`, oldest first: when
    /// an instance is wiped, the network delivers the oldest from each sender after its
    /// restart (messages delayed across the wipe, as an asynchronous network may).
    recent_statuses: Vec<VecDeque<(u64, usize, Message)>>,
}

/// Simulated clients' transactions expire this long after their first submission (well
/// beyond any run's end: liveness owes them finality).
const CLIENT_TTL_MS: u64 = 240_000;
/// One transaction in this many (by its id) is also sent, identically, to a second
/// validator by an impatient client...
const IMPATIENT_ONE_IN: u8 = 8;
/// ...this long after its first submission.
const IMPATIENT_AFTER_MS: u64 = 1_000;

/// How far back a status may be held and delivered across a wipe.
const STALE_STATUS_MS: u64 = 3_000;

/// Every signing floor an honest replica learned lies within what honest replicas
/// reached: its round at most two above the highest round an honest replica holds (a
/// learner holds at most one round above them, a Byzantine vertex on their quorum, and a
/// report is credible one round above that), its executed sequence at most the highest
/// executed. A floor above them came from a lie, and silences the replica: it never
/// builds (or never votes) again.
fn check_floors(honest: &[&Instance]) -> Vec<String> {
    let replicas: Vec<&Replica> = honest.iter().filter_map(|i| i.replica.as_ref()).collect();
    let top = replicas
        .iter()
        .filter_map(|r| r.dag().highest_round())
        .max()
        .map_or(0, |r| r.0);
    let executed = replicas
        .iter()
        .map(|r| r.last_executed())
        .max()
        .unwrap_or(Sequence(0));
    let mut violations = Vec::new();
    for replica in replicas {
        let Some((_, round, floor_executed)) = replica.signing_floor() else {
            continue;
        };
        let round_above = round.is_some_and(|r| r.0 > top.saturating_add(2));
        if round_above || floor_executed > executed {
            violations.push(format!(
                "floor: replica {} learned a signing floor above what honest replicas reached: \
                 round {:?} (honest top {top}), executed {} (honest {})",
                replica.index(),
                round.map(|r| r.0),
                floor_executed.0,
                executed.0
            ));
        }
    }
    violations
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
        // Primaries' attacks need the primary: of view 0 (its anchors), of view 1 (the
        // first NewView after a view change), or either.
        let primary_of = match config.behaviour {
            Behaviour::EquivocatingPrimary
            | Behaviour::SplitAnchors
            | Behaviour::SelfPreparingPrimary => Some(0),
            Behaviour::HijackReproposals
            | Behaviour::ByzantineNewView
            | Behaviour::LyingViewChanges => Some(1),
            Behaviour::Adaptive => Some(rng.gen_range(0..2usize)),
            _ => None,
        };
        if let Some(first) = primary_of {
            order.retain(|i| *i != first);
            order.insert(0, first);
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
            recent_statuses: Vec::new(),
            timer_generations: HashMap::new(),
            submitted: HashMap::new(),
            final_anywhere: HashSet::new(),
            acknowledged: HashMap::new(),
            latencies: Vec::new(),
            trace: blake3::Hasher::new(),
            rejected_signatures: 0,
            partition: None,
            twins_split_until: 0,
            honest_side,
            vertices: HashMap::new(),
            signed_slots: HashMap::new(),
            new_views_since_wipe: BTreeSet::new(),
            view_changes_since_wipe: BTreeSet::new(),
            violations: Vec::new(),
            evidence: 0,
            evidence_against_byzantine: 0,
            equivocated: HashMap::new(),
            side_vertices: HashSet::new(),
            equivocation_seen: HashMap::new(),
            equivocation_reached: false,
            limits: Limits::default(),
            targeted: Vec::new(),
            old_logs: Vec::new(),
            undecodable_byzantine: 0,
            crafted: 0,
            vertex_bytes: (0, 0),
            peak_memory_bytes: 0,
            config,
        };
        for i in 0..n {
            let replica = world.new_replica(i);
            let byzantine = world.byzantine[i];
            world
                .instances
                .push(Instance::new(validator(i), replica, byzantine, None));
        }
        if world.config.behaviour == Behaviour::Twins && world.config.byzantine > 0 {
            world.twins_split_until = world.rng.gen_range(1_000..=3_000);
            for i in (0..n).filter(|i| world.byzantine[*i]) {
                world.instances[i].side = Some(0);
                let replica = world.new_replica(i);
                world
                    .instances
                    .push(Instance::new(validator(i), replica, true, Some(1)));
            }
        }
        world
    }

    fn replica_config(&self, i: usize) -> ReplicaConfig {
        let mut config = ReplicaConfig::new(validator(i), self.committee.clone());
        // Different at every (re)start, like the node's.
        config.boot_nonce = self.next_event;
        config.idle_interval_ms = self.config.idle_interval_ms;
        // Restarts from a snapshot taken with every entry, with every third, or (rarely
        // within a run) with every 64th; chosen without drawing from the seed's stream.
        config.snapshot_interval = [1, 3, 64][usize::try_from(self.config.seed % 3).unwrap_or(0)];
        if !self.byzantine[i] || self.config.byzantine_mutant {
            config.mutant = self.config.mutant;
        }
        // Byzantine replicas run the honest code underneath: as it was, too.
        config.legacy_replay = self.config.legacy_replay;
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
                    transaction: Transaction::new(payload, TimestampMs(at + CLIENT_TTL_MS)),
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
            // Byzantine + crashed-or-wiped <= f: one crash per honest replica in the
            // budget, at most one of them wiped.
            let f = self.committee.max_faulty();
            let budget = f.saturating_sub(self.config.byzantine);
            let mut honest: Vec<usize> = (0..self.config.validators)
                .filter(|i| !self.byzantine[*i])
                .collect();
            honest.shuffle(&mut self.rng);
            // Half the time the first crash goes to view 0's primary: its cut steps are
            // the ones that send anchors (and, after a view change, NewViews go to the
            // next primaries, chosen at random like the rest).
            if self.config.cut_crashes && self.rng.gen_bool(0.5) {
                if let Some(at) = honest.iter().position(|i| *i == 0) {
                    honest.swap(0, at);
                }
            }
            let mut wiped = false;
            let latest = self.config.submit_window_ms.clamp(2_500, 5_000);
            for instance in honest.into_iter().take(budget) {
                let at = self.rng.gen_range(100..=latest);
                let down_ms = self.rng.gen_range(50..=1_500);
                let cut = self.config.cut_crashes && self.rng.gen_bool(0.7);
                // With Byzantine validators in the run, most crashes wipe: a learner
                // meets a lying reporter (known limit 12 before its fix).
                let wipe_probability = if self.config.byzantine > 0 { 0.7 } else { 0.3 };
                let wipe = self.config.wipes && !wiped && self.rng.gen_bool(wipe_probability);
                wiped |= wipe;
                self.schedule(
                    at,
                    Event::Crash {
                        instance,
                        down_ms,
                        cut,
                        wipe,
                    },
                );
            }
        }
        if self.config.targeted_faults {
            self.plan_targeted_faults();
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
                let behaviour = self.behaves(to);
                if behaviour == Some(Behaviour::StaleReplay)
                    || behaviour.is_some_and(Behaviour::crafts)
                {
                    if self.instances[to].heard.len() < 256 {
                        self.instances[to].heard.push(message.clone());
                    } else {
                        let slot = self.rng.gen_range(0..256);
                        self.instances[to].heard[slot] = message.clone();
                    }
                }
                if let (Some(b), Message::ViewChange { view_change, .. }) = (behaviour, &message) {
                    if b.crafts() {
                        self.adversary_heard_view_change(to, view_change.body().view);
                    }
                }
                let held = match &message {
                    Message::ViewChange { view_change, .. } if behaviour.is_none() => Some((
                        view_change.body().replica,
                        view_change.body().view,
                        message.to_wire().len(),
                    )),
                    _ => None,
                };
                let dropped_before = self.instances[to]
                    .replica
                    .as_ref()
                    .map_or(0, |r| r.drops().invalid_view_messages);
                if let Message::Vertex(vertex) = &message {
                    self.note_equivocation_reached(to, vertex);
                }
                self.step(to, Input::Message { from, message });
                if let (Some((sender, view, bytes)), Some(replica)) =
                    (held, self.instances[to].replica.as_ref())
                {
                    // Held unless refused (counted as a drop) or stale.
                    if replica.drops().invalid_view_messages == dropped_before
                        && view >= replica.view()
                    {
                        self.instances[to]
                            .held_view_changes
                            .insert(sender, (view, bytes));
                    }
                }
            }
            Event::Fetch {
                server,
                client,
                hashes,
            } => {
                if !self.connected(server, client) || self.lost() {
                    return;
                }
                if self.vertices_withheld(server, client) {
                    return;
                }
                let behaviour = self.behaves(server);
                if behaviour == Some(Behaviour::Silent) {
                    return;
                }
                let vertices = match self.lying_fetch_answer(server, &hashes) {
                    Some(lie) => lie,
                    None => {
                        let store = &self.instances[server].store;
                        hashes
                            .iter()
                            .filter_map(|h| store.vertex(h).ok().flatten())
                            .collect()
                    }
                };
                // The answer travels in wire form too.
                let byzantine = self.instances[server].byzantine;
                let mut decoded = Vec::with_capacity(vertices.len());
                for vertex in vertices {
                    match SignedVertex::from_wire(&vertex.to_wire(), &self.limits) {
                        Ok(vertex) => decoded.push(vertex),
                        Err(error) if byzantine => {
                            let _ = error;
                            self.undecodable_byzantine += 1;
                        }
                        Err(error) => self.violations.push(format!(
                            "wire: a vertex served by {} did not decode: {error}",
                            self.instances[server].index
                        )),
                    }
                }
                let vertices = decoded;
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
                for vertex in &vertices {
                    self.note_equivocation_reached(to, vertex);
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
                    if timer == Timer::Tick {
                        self.sample_memory(instance);
                    }
                }
            }
            Event::Submit {
                transaction,
                attempt,
            } => self.submit(transaction, attempt),
            Event::Copy { transaction } => self.submit_copy(transaction),
            Event::Crash {
                instance,
                down_ms,
                cut,
                wipe,
            } => {
                if self.instances[instance].replica.is_none() {
                    return;
                }
                if cut {
                    // Cut the next step that has outputs (see `plan_cut`); some crashes
                    // wait (up to 15 s) for the step that sends a NewView.
                    let new_view_only = self.rng.gen_bool(0.3);
                    self.instances[instance].armed_cut = Some(ArmedCut {
                        deadline: self.now + if new_view_only { 15_000 } else { 1_500 },
                        down_ms,
                        wipe,
                        new_view_only,
                    });
                } else {
                    self.crash_now(instance, down_ms, wipe);
                }
            }
            Event::Restart { instance, wipe } => {
                self.trace_event(b"restart", instance, instance, &[u8::from(wipe)]);
                let index = self.instances[instance].index.as_usize();
                let config = self.replica_config(index);
                if wipe {
                    // An empty store, keys kept: the log it finalized before is kept
                    // aside for the agreement checker and it starts over.
                    self.instances[instance].store = MemoryStore::new();
                    self.instances[instance].last_view = View(0);
                    self.instances[instance].last_sequence = Sequence(0);
                    let old = std::mem::take(&mut self.finalized[index]);
                    self.old_logs.push(old);
                    let wiped = validator(index);
                    self.new_views_since_wipe.retain(|(i, _)| *i != wiped);
                    for by in self.acknowledged.values_mut() {
                        by.remove(&instance);
                    }
                    self.view_changes_since_wipe.retain(|(i, _)| *i != wiped);
                    // Half the time the network keeps statuses from the learner for a
                    // while, and it crashes again if it saves a view before it learns
                    // (a NewView, or its view-change timer): a crash inside learning.
                    if self.rng.gen_bool(0.5) {
                        let hold = self.rng.gen_range(500..=3_000);
                        self.targeted.push(TargetedFault {
                            kinds: vec!["status"],
                            target: validator(index),
                            from: self.now,
                            until: self.now + hold,
                            delay: None,
                            honest_senders_only: false,
                            hand_over: false,
                        });
                        self.instances[instance].crash_while_learning = true;
                    }
                } else {
                    // A step cut between the persist of a finalized entry and its
                    // `Finalized` output: the entry is durable, the sim's log takes it
                    // from the store.
                    let have = self.finalized[index].last().map_or(0, |e| e.sequence.0);
                    if let Ok(entries) = self.instances[instance]
                        .store
                        .finalized_range(Sequence(have + 1), 1_024)
                    {
                        self.finalized[index].extend(entries);
                    }
                }
                let recovered = Replica::recover(
                    config,
                    self.signers[index].clone(),
                    &self.instances[instance].store,
                );
                match recovered {
                    Ok(replica) => {
                        self.check_monotonic(instance, &replica);
                        self.check_new_view_durable(instance, &replica);
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
        let retry = self.now + self.config.client_retry_ms;
        if self.config.legacy_replay {
            self.submit_as_in_session_8(transaction, attempt, retry);
            return;
        }
        if self.acknowledged.get(&id).is_some_and(|by| !by.is_empty()) {
            // An honest validator acknowledged it: the client waits (and resubmits only
            // if that validator's store is wiped, which loses what it acknowledged).
            self.schedule(
                retry,
                Event::Submit {
                    transaction,
                    attempt,
                },
            );
            return;
        }
        if attempt == 0 && id.0.as_bytes()[0].is_multiple_of(IMPATIENT_ONE_IN) {
            self.schedule(
                self.now + IMPATIENT_AFTER_MS,
                Event::Copy {
                    transaction: transaction.clone(),
                },
            );
        }
        let instance = self.rng.gen_range(0..self.instances.len());
        self.trace_event(b"submit", instance, instance, id.0.as_bytes());
        if self.instances[instance].replica.is_some() {
            self.step(instance, Input::Transactions(vec![transaction.clone()]));
            // Acknowledged: the whole step ran (a crash that cut it leaves no replica)
            // and the replica holds the transaction, durable since the step's first
            // output.
            let holds = self.instances[instance]
                .replica
                .as_ref()
                .is_some_and(|r| r.is_transaction_pending(&id));
            if holds && !self.instances[instance].byzantine {
                self.acknowledged.entry(id).or_default().insert(instance);
            }
        }
        self.schedule(
            retry,
            Event::Submit {
                transaction,
                attempt: attempt + 1,
            },
        );
    }

    /// An impatient client heard nothing within `IMPATIENT_AFTER_MS` (its answer was
    /// lost, say) and sends the identical transaction to another validator, finalized or
    /// not: deduplication must keep it final once, across crashes and restarts (the
    /// dedup set a restarted replica rebuilds from its snapshot's window). The copy's
    /// acknowledgement is not counted: the first submission's is.
    fn submit_copy(&mut self, transaction: Transaction) {
        let id = transaction.id();
        let instance = usize::from(id.0.as_bytes()[1]) % self.instances.len();
        self.trace_event(b"copy", instance, instance, id.0.as_bytes());
        if self.instances[instance].replica.is_some() {
            self.step(instance, Input::Transactions(vec![transaction]));
        }
    }

    /// The clients of the replayed seeds: acknowledged means sent to an honest replica
    /// that was up, and they resubmit after `retry` regardless.
    fn submit_as_in_session_8(&mut self, transaction: Transaction, attempt: u32, retry: u64) {
        let id = transaction.id();
        let instance = self.rng.gen_range(0..self.instances.len());
        self.trace_event(b"submit", instance, instance, id.0.as_bytes());
        if self.instances[instance].replica.is_some() {
            if !self.byzantine[self.instances[instance].index.as_usize()] {
                self.acknowledged.entry(id).or_default().insert(instance);
            }
            self.step(instance, Input::Transactions(vec![transaction.clone()]));
        }
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

    /// Recovery rule: a new primary that sent the NewView of its view comes back active in
    /// that view (the NewView and the activation are one durable batch before it leaves);
    /// otherwise it may decide and sign a second NewView.
    fn check_new_view_durable(&mut self, instance: usize, replica: &Replica) {
        let held = &self.instances[instance];
        if held.byzantine {
            return;
        }
        let sent = self
            .new_views_since_wipe
            .contains(&(held.index, replica.view()));
        if !replica.view_active() && sent {
            self.violations.push(format!(
                "recovery: replica {} restarted inactive in view {} after sending its NewView",
                held.index,
                replica.view().0
            ));
        }
    }

    /// Rule of the NewView: in a view entered through a NewView, an honest replica
    /// prepares exactly the NewView's decision for every sequence it decided.
    fn check_prepares_follow_new_view(&mut self, instance: usize, outputs: &[Output]) {
        let Some(replica) = self.instances[instance].replica.as_ref() else {
            return;
        };
        if self.instances[instance].byzantine {
            return;
        }
        let mut found = Vec::new();
        for output in outputs {
            let (Output::Broadcast(Message::Vote(vote))
            | Output::Send {
                message: Message::Vote(vote),
                ..
            }) = output
            else {
                continue;
            };
            let v = vote.vote();
            if v.phase != Phase::Prepare {
                continue;
            }
            if let Some(decided) = replica.new_view_decision(v.view, v.sequence) {
                if decided != v.digest {
                    found.push(format!(
                        "new view: honest replica {} prepared sequence {} in view {} against its NewView's decision",
                        self.instances[instance].index, v.sequence, v.view.0
                    ));
                }
            }
        }
        self.violations.extend(found);
    }

    fn step(&mut self, instance: usize, input: Input) {
        let Some(replica) = self.instances[instance].replica.as_mut() else {
            return;
        };
        let input_kind = match &input {
            Input::Timer(timer) => Some(*timer),
            _ => None,
        };
        let now = TimestampMs(self.now);
        let outputs = match catch_unwind(AssertUnwindSafe(|| replica.handle(now, input))) {
            Ok(outputs) => outputs,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                let index = self.instances[instance].index;
                if !self.instances[instance].byzantine {
                    self.violations
                        .push(format!("panic: replica {index} panicked: {what}"));
                }
                self.instances[instance].replica = None;
                return;
            }
        };
        let (view, executed) = (replica.view(), replica.last_executed());
        let held = &mut self.instances[instance];
        if view < held.last_view || executed < held.last_sequence {
            self.violations.push(format!(
                "monotonicity: replica {} went back to view {} / sequence {executed}",
                held.index, view.0
            ));
        }
        // A step cut by a crash carried out only part of its outputs: what it did in
        // memory was never durable (nor visible), so only whole steps count.
        if held.armed_cut.is_none() {
            held.last_view = view;
            held.last_sequence = executed;
        }
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
        if tick && behaviour.is_some_and(Behaviour::crafts) {
            self.adversary_tick(instance);
        }
        self.check_prepares_follow_new_view(instance, &outputs);
        let cut = self.plan_cut(instance, &outputs);
        for (k, output) in outputs.into_iter().enumerate() {
            if cut.is_some_and(|(at, _)| at == k) {
                break;
            }
            self.carry_out(instance, behaviour, output);
        }
        if let Some((_, armed)) = cut {
            self.crash_now(instance, armed.down_ms, armed.wipe);
            return;
        }
        if self.instances[instance].crash_while_learning {
            let held = &self.instances[instance];
            let learning = held
                .replica
                .as_ref()
                .is_some_and(Replica::learning_signing_floor);
            // `view`: the key a replica saves when it enters or leaves a view.
            let saved_view = held.store.replica_state(b"view").ok().flatten().is_some();
            if !learning {
                self.instances[instance].crash_while_learning = false;
            } else if saved_view {
                self.instances[instance].crash_while_learning = false;
                let down_ms = self.rng.gen_range(50..=500);
                self.trace_event(b"crash-while-learning", instance, instance, &[]);
                self.crash_now(instance, down_ms, false);
            }
        }
    }

    /// Where an armed crash cuts this step's outputs: right before or right after a
    /// NewView, an anchor or a view change leaves (between its persist and the persists
    /// after it), or, once the deadline passed, anywhere (before the first output, or
    /// after the last, included).
    fn plan_cut(&mut self, instance: usize, outputs: &[Output]) -> Option<(usize, ArmedCut)> {
        let armed = self.instances[instance].armed_cut?;
        if outputs.is_empty() {
            return None;
        }
        let index = self.instances[instance].index;
        let juicy = outputs.iter().position(|o| match o {
            Output::Broadcast(Message::NewView(_)) => true,
            _ if armed.new_view_only => false,
            Output::Broadcast(Message::ViewChange { .. }) => true,
            Output::Broadcast(Message::Vertex(v)) => {
                v.vertex().author == index && v.vertex().proposal.is_some()
            }
            _ => false,
        });
        let at = match juicy {
            Some(position) => position + usize::from(self.rng.gen_bool(0.7)),
            None if self.now >= armed.deadline => self.rng.gen_range(0..=outputs.len()),
            None => return None,
        };
        self.instances[instance].armed_cut = None;
        Some((at, armed))
    }

    fn crash_now(&mut self, instance: usize, down_ms: u64, wipe: bool) {
        self.trace_event(b"crash", instance, instance, &[u8::from(wipe)]);
        self.instances[instance].replica = None;
        self.instances[instance].armed_cut = None;
        self.instances[instance].held_view_changes.clear();
        self.schedule(self.now + down_ms, Event::Restart { instance, wipe });
        if wipe {
            self.deliver_stale_statuses(instance, down_ms);
        }
    }

    /// The network holds back, across the wipe of `instance`, the oldest status each
    /// peer sent it in the last few seconds, and delivers them just after its restart:
    /// a wiped replica that took them for its peers' current state would sign below
    /// rounds it signed before the wipe.
    fn deliver_stale_statuses(&mut self, instance: usize, down_ms: u64) {
        let Some(recent) = self.recent_statuses.get_mut(instance) else {
            return;
        };
        let held = std::mem::take(recent);
        let mut oldest: BTreeMap<usize, Message> = BTreeMap::new();
        for (_, source, message) in held {
            oldest.entry(source).or_insert(message);
        }
        for (source, message) in oldest {
            let from = self.instances[source].index;
            let at = self.now + down_ms + self.rng.gen_range(1..=200);
            self.schedule(
                at,
                Event::Deliver {
                    to: instance,
                    from,
                    message,
                    forged: false,
                },
            );
        }
    }

    /// One or two targeted faults per seed: chosen message kinds to one honest replica
    /// are dropped or delayed for a while (the NewView, anchors, votes of one phase...).
    fn plan_targeted_faults(&mut self) {
        const KINDS: [&[&str]; 8] = [
            &["new_view"],
            &["anchor"],
            &["anchor", "new_view"],
            &["prepare"],
            &["commit"],
            &["view_change"],
            &["decided", "status"],
            &["vertex", "anchor"],
        ];
        let honest: Vec<usize> = (0..self.config.validators)
            .filter(|i| !self.byzantine[*i])
            .collect();
        // The hand-over: when the primary of view 1 is Byzantine, the network (the
        // adversary controls delays) keeps view 0's anchors from one honest replica and
        // then isolates primary 0, so view 1's NewView re-proposes an anchor that replica
        // lacks, and the Byzantine primary can offer it another one for that sequence.
        let hand_over = self.byzantine.get(1).copied().unwrap_or(false)
            && !self.byzantine[0]
            && self.rng.gen_bool(0.5);
        if hand_over {
            let lacking: Vec<usize> = honest.iter().copied().filter(|i| *i != 0).collect();
            if let Some(target) = lacking.choose(&mut self.rng).copied() {
                let from: u64 = self.rng.gen_range(300..=1_500);
                let isolate = from + self.rng.gen_range(100..=400);
                self.trace_event(b"hand-over", target, 0, &from.to_le_bytes());
                self.targeted.push(TargetedFault {
                    kinds: vec!["anchor", "vertex"],
                    target: validator(target),
                    from,
                    until: isolate + 2_500,
                    delay: None,
                    // Half the time the Byzantine primary withholds its own vertices
                    // too (then only its side-history anchors reach the target).
                    honest_senders_only: self.rng.gen_bool(0.5),
                    hand_over: true,
                });
                let until = isolate + self.rng.gen_range(1_500..=3_000);
                self.schedule(isolate, Event::PartitionStart { kind: 0, until });
            }
        }
        let count = self.rng.gen_range(1..=2);
        for _ in 0..count {
            let Some(target) = honest.choose(&mut self.rng).copied() else {
                return;
            };
            let kinds = KINDS[self.rng.gen_range(0..KINDS.len())].to_vec();
            let from = self
                .rng
                .gen_range(0..=self.config.submit_window_ms.max(1_000) / 2);
            let until = from + self.rng.gen_range(300..=3_000);
            let delay = self
                .rng
                .gen_bool(0.5)
                .then(|| self.rng.gen_range(100..=1_500));
            self.trace_event(b"targeted", target, kinds.len(), &from.to_le_bytes());
            self.targeted.push(TargetedFault {
                kinds,
                target: validator(target),
                from,
                until,
                delay,
                honest_senders_only: false,
                hand_over: false,
            });
        }
    }

    /// True while a hand-over fault keeps `source`'s vertices (pushed or fetched) from
    /// `target`.
    fn vertices_withheld(&self, source: usize, target: usize) -> bool {
        let index = self.instances[target].index;
        self.targeted.iter().any(|t| {
            t.hand_over
                && !(t.honest_senders_only && self.instances[source].byzantine)
                && t.target == index
                && self.now >= t.from
                && self.now < t.until
                && t.kinds.contains(&"vertex")
        })
    }

    /// `None`: deliver normally; `Some(None)`: drop; `Some(Some(d))`: d ms later.
    fn targeted_effect(
        &self,
        source: usize,
        target: usize,
        message: &Message,
    ) -> Option<Option<u64>> {
        if self.targeted.is_empty() {
            return None;
        }
        let kind = match message {
            Message::Vertex(v) if v.vertex().proposal.is_some() => "anchor",
            other => other.kind(),
        };
        let side_vertex =
            matches!(message, Message::Vertex(v) if self.side_vertices.contains(&v.hash()));
        let index = self.instances[target].index;
        self.targeted
            .iter()
            .find(|t| {
                t.target == index
                    && !(t.honest_senders_only && self.instances[source].byzantine)
                    && !(t.hand_over && side_vertex)
                    && self.now >= t.from
                    && self.now < t.until
                    && t.kinds.contains(&kind)
            })
            .map(|t| t.delay)
    }

    /// The memory checker, sampled on every heartbeat (a bound over the whole run, not a
    /// snapshot at the end): an estimate in bytes from the replica's counts, the average
    /// wire size of the vertices seen and the view changes (claims included) it holds.
    fn sample_memory(&mut self, instance: usize) {
        if self.instances[instance].byzantine || self.instances[instance].memory_flagged {
            return;
        }
        let Some(replica) = self.instances[instance].replica.as_ref() else {
            return;
        };
        let (view, active) = (replica.view(), replica.view_active());
        let memory = replica.memory();
        let n = self.config.validators as u64;
        let quorum = self.committee.quorum() as u64;
        let defaults = ReplicaConfig::new(ValidatorIndex(0), self.committee.clone());
        let vertex_unit = (self.vertex_bytes.0 / self.vertex_bytes.1.max(1)).max(256);
        let vote_unit = SIGNATURE_BYTES as u64 + 96;
        let held = &mut self.instances[instance].held_view_changes;
        held.retain(|_, (v, _)| *v > view || (*v == view && !active));
        let view_change_bytes: u64 = held.values().map(|(_, bytes)| *bytes as u64).sum();
        let count = |c: usize| c as u64;
        let bytes = count(memory.dag_vertices + memory.waiting_vertices) * vertex_unit
            + count(memory.vote_slots) * n * vote_unit
            + count(memory.checkpoint_slots) * n * vote_unit
            + count(memory.decided_slots) * quorum * vote_unit
            + view_change_bytes;
        let (vertex_bound, vote_bound) = memory_bounds(self.config.validators, &defaults);
        // A view change: header, at most W prepared and 4W pre-prepared claims of 50
        // bytes, and its checkpoint certificate.
        let view_change_bound = 512 + 5 * defaults.window * 50 + quorum * vote_unit;
        let bound = count(vertex_bound) * vertex_unit
            + 2 * count(vote_bound) * n * vote_unit
            + defaults.decided_retention * quorum * vote_unit
            + n * view_change_bound;
        self.peak_memory_bytes = self.peak_memory_bytes.max(bytes);
        if bytes > bound {
            let index = self.instances[instance].index;
            self.instances[instance].memory_flagged = true;
            self.violations.push(format!(
                "memory: replica {index} holds about {bytes} bytes at {} ms ({memory:?}, view changes {view_change_bytes} bytes), bound {bound}",
                self.now
            ));
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
            Output::Broadcast(message) if behaviour.is_some_and(Behaviour::crafts) => {
                self.adversary_send(instance, message, None);
            }
            Output::Send { to, message } if behaviour.is_some_and(Behaviour::crafts) => {
                self.adversary_send(instance, message, Some(to));
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
        // A primary's anchor is also its pre-prepare: one anchor per (view, sequence).
        // Only the author's own anchors (a NewView re-proposes others' anchors).
        if let Message::Vertex(vertex) = message {
            let body = vertex.vertex();
            if let (Some(proposal), true) = (body.proposal, body.author == index) {
                let slot = format!(
                    "pre-prepare/{index}/{}/{}",
                    proposal.view.0, proposal.sequence.0
                );
                self.record_slot(index, slot, vertex.hash());
            }
        }
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
                let slot = format!("view-change/{index}/{}", body.view.0);
                let since_wipe = self.view_changes_since_wipe.contains(&(index, body.view));
                self.view_changes_since_wipe.insert((index, body.view));
                if !since_wipe && self.rejoined_past_floor(index, body) {
                    // §8: once its stable checkpoint passed its floor (E + W), a wiped
                    // replica may announce a view it may have announced before the wipe
                    // (at most floor view + 1); the new view change omits nothing a
                    // decision looks at. Its earlier one is forgotten, not contradicted.
                    self.signed_slots
                        .insert(slot.into_bytes(), view_change.hash());
                    return;
                }
                (slot, view_change.hash())
            }
            Message::NewView(new_view) => {
                let body = new_view.new_view.body();
                if body.primary != index {
                    return;
                }
                (
                    {
                        self.new_views_since_wipe.insert((index, body.view));
                        format!("new-view/{index}/{}", body.view.0)
                    },
                    new_view.new_view.hash(),
                )
            }
            Message::Status { .. }
            | Message::StatusRequest { .. }
            | Message::Nudge { .. }
            | Message::Decided(_) => return,
        };
        self.record_slot(index, slot, digest);
    }

    /// True when honest `index` was wiped, learned its floor (view V, executed E), and
    /// announces `view_change` for a view of at most V + 1 from a stable checkpoint of at
    /// least E + W: the one re-signing §8 allows.
    fn rejoined_past_floor(&self, index: ValidatorIndex, view_change: &ViewChange) -> bool {
        let window = ReplicaConfig::new(index, self.committee.clone()).window;
        self.instances
            .iter()
            .filter(|i| i.index == index && !i.byzantine)
            .filter_map(|i| i.replica.as_ref())
            .filter_map(Replica::signing_floor)
            .any(|(floor_view, _, executed)| {
                view_change.view.0 <= floor_view.0.saturating_add(1)
                    && executed
                        .checked_add(window)
                        .is_some_and(|top| view_change.stable_sequence >= top)
            })
    }

    fn record_slot(&mut self, index: ValidatorIndex, slot: String, digest: Digest) {
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
        self.deliver_later(source, target, message, forged, 0);
    }

    /// [`World::deliver`], `later_ms` after the network's own delay.
    fn deliver_later(
        &mut self,
        source: usize,
        target: usize,
        message: Message,
        forged: bool,
        later_ms: u64,
    ) {
        if !self.connected(source, target) || self.lost() {
            return;
        }
        let extra = match self.targeted_effect(source, target, &message) {
            Some(None) => return,
            Some(Some(extra)) => extra + later_ms,
            None => later_ms,
        };
        // Every message travels in its wire form: what does not decode never arrives.
        let bytes = message.to_wire();
        let message = match Message::from_wire(&bytes, &self.limits) {
            Ok(message) => message,
            Err(error) => {
                let from = self.instances[source].index;
                if self.instances[source].byzantine {
                    self.undecodable_byzantine += 1;
                } else {
                    let violation = format!(
                        "wire: honest replica {from} sent a {} of {} bytes that does not decode: {error}",
                        message.kind(),
                        bytes.len()
                    );
                    if !self.violations.contains(&violation) {
                        self.violations.push(violation);
                    }
                }
                return;
            }
        };
        if matches!(message, Message::Vertex(_)) {
            self.vertex_bytes.0 += bytes.len() as u64;
            self.vertex_bytes.1 += 1;
        }
        if matches!(message, Message::Status { .. }) {
            if self.recent_statuses.len() <= target {
                self.recent_statuses.resize_with(target + 1, VecDeque::new);
            }
            if let Some(recent) = self.recent_statuses.get_mut(target) {
                while recent
                    .front()
                    .is_some_and(|(at, _, _)| at + STALE_STATUS_MS < self.now)
                {
                    recent.pop_front();
                }
                recent.push_back((self.now, source, message.clone()));
            }
        }
        let from = self.instances[source].index;
        let delay = self.delay() + extra;
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

    /// Records that honest instance `to` received `vertex`; two versions of one
    /// equivocated slot reaching one honest instance make evidence owed.
    fn note_equivocation_reached(&mut self, to: usize, vertex: &SignedVertex) {
        if self.instances[to].byzantine || self.equivocation_reached {
            return;
        }
        let slot = (vertex.vertex().author, vertex.vertex().round);
        if !self.equivocated.contains_key(&slot) {
            return;
        }
        let first = *self
            .equivocation_seen
            .entry((to, slot.0, slot.1))
            .or_insert_with(|| vertex.hash());
        if first != vertex.hash() {
            self.equivocation_reached = true;
        }
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
        self.equivocated.insert(
            (index, vertex.vertex().round),
            [vertex.hash(), other.hash()],
        );
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
        // Just above the top round, vertices naming made-up parents whose hashes sort
        // below any real one: they wait in honest buffers (up to `gc_depth` of them)
        // and fill what those replicas fetch on retransmission (found by the attack
        // review of the wanted-set fix, `Mutant::FetchByHashOrder`). They take the
        // flooder's own future slots, so its real vertices are mostly refused there and
        // it ends up banned: a third of the seeds (seed % 3 == 1) keep the classic flood,
        // whose flooder still takes part. Not in the session-8 replay either, whose
        // seeds were found with the old flood.
        if !self.config.legacy_replay && self.config.seed % 3 != 1 {
            let top = replica.dag().highest_round().map_or(0, |r| r.0);
            for k in 2..10u64 {
                let round = Round(top + k);
                let mut parents = Vec::with_capacity(self.committee.size());
                let own_first =
                    std::iter::once(index).chain(self.committee.indices().filter(|a| *a != index));
                for author in own_first.collect::<Vec<_>>() {
                    let mut bytes = [0u8; 32];
                    bytes[8..].copy_from_slice(&self.rng.gen::<[u8; 24]>());
                    let Ok(hash) = Digest::from_slice(&bytes) else {
                        continue;
                    };
                    parents.push(ParentRef {
                        author,
                        round: Round(round.0 - 1),
                        hash,
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
            }
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
        let mut all_logs = honest_logs.clone();
        all_logs.extend(self.old_logs.iter().cloned());
        violations.extend(check_agreement(&all_logs));
        violations.extend(check_integrity(
            &honest_logs,
            &self.submitted,
            &self
                .acknowledged
                .iter()
                .filter(|(_, by)| !by.is_empty())
                .map(|(id, _)| *id)
                .collect(),
        ));
        let gc_depth = ReplicaConfig::new(ValidatorIndex(0), self.committee.clone()).gc_depth;
        violations.extend(check_exact_set(&honest_logs, &self.vertices, gc_depth));
        violations.extend(self.check_memory());
        // Evidence is owed once it could exist: both versions of a vertex reached one honest
        // replica (a view change before any equivocated anchor arrived leaves none), or
        // double votes were cast.
        let injected = match self.config.behaviour {
            Behaviour::DoubleVoting => true,
            _ => self.equivocation_reached,
        };
        if self.config.behaviour.equivocates()
            && injected
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
        violations.extend(check_floors(&honest));
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
            undecodable_byzantine: self.undecodable_byzantine,
            crafted: self.crafted,
            peak_memory_bytes: self.peak_memory_bytes,
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
        let as_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let (vertex_bound, vote_bound) = memory_bounds(n, &defaults);
        let mut violations = Vec::new();
        for instance in &self.instances {
            let Some(replica) = &instance.replica else {
                continue;
            };
            // Honest replicas only: a Byzantine one runs our code, but its statuses are
            // dropped or corrupted, so no peer sends it the commit certificates it lacks;
            // it stops executing while anchor histories it fetches still arrive, and its
            // DAG outgrows the bound (seeds 10,000,029 and 10,000,187 on the node's idle
            // heartbeat: 1,011 and 964 vertices, against 920).
            if self.byzantine[instance.index.as_usize()] {
                continue;
            }
            let memory = replica.memory();
            if memory.dag_vertices + memory.waiting_vertices > vertex_bound
                || memory.vote_slots > vote_bound
                || memory.checkpoint_slots > vote_bound
                || memory.decided_slots > as_usize(defaults.decided_retention)
                || memory.view_changes > n
            {
                violations.push(format!(
                    "memory: replica {} holds {memory:?}, bound {vertex_bound} vertices / {vote_bound} slots; state: {}",
                    instance.index,
                    replica.describe()
                ));
            }
        }
        violations
    }
}

/// Vertices and vote slots a replica may hold: accepted rounds above the GC round plus
/// what waits (bounded per author); vote slots of the window in a few views.
fn memory_bounds(n: usize, defaults: &ReplicaConfig) -> (usize, usize) {
    let as_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let rounds = defaults.gc_depth + 4 * defaults.window + 8;
    // Waiting vertices: n validator shares of D and the certificates' share of nD.
    let vertex_bound = 2 * n * as_usize(rounds) + 2 * n * as_usize(defaults.gc_depth);
    let vote_bound = 2 * as_usize(3 * defaults.window + defaults.checkpoint_interval) + 4;
    (vertex_bound, vote_bound)
}

fn message_id(message: &Message) -> Vec<u8> {
    match message {
        Message::Vertex(vertex) => vertex.hash().as_bytes().to_vec(),
        Message::Vote(vote) => vote.encoded().to_vec(),
        Message::Checkpoint(checkpoint) => checkpoint.encoded().to_vec(),
        other => Digest::of(&other.to_wire()).as_bytes().to_vec(),
    }
}
