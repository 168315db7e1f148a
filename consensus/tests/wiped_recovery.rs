//! A replica whose store was wiped (keys kept) rejoins for good: once a stable
//! checkpoint passes everything it may have signed, its signing floor no longer keeps it
//! out of votes and view changes. Found by the review of the fixes: with a floor that
//! never expired, one silent Byzantine validator stalled the network for good.
//!
//! A small deterministic network of four honest replicas driven only through
//! `Replica::handle`, with in-order output execution, fetches answered from the target's
//! store, and timers delivered on a virtual clock.

use std::collections::VecDeque;

use weft_consensus::replica::{Input, Output, Replica, ReplicaConfig, Timer};
use weft_consensus::Signer;
use weft_dag::store::{MemoryStore, Store};
use weft_dag::testing::committee;
use weft_dag::{TimestampMs, Transaction, ValidatorIndex};

fn v(i: usize) -> ValidatorIndex {
    ValidatorIndex(u16::try_from(i).expect("small"))
}

struct Net {
    replicas: Vec<Replica>,
    stores: Vec<MemoryStore>,
    configs: Vec<ReplicaConfig>,
    /// Silent nodes neither receive nor send (crashed or Byzantine-silent).
    silent: Vec<bool>,
    idle_due: Vec<Option<u64>>,
    queue: VecDeque<(usize, Input)>,
    now: u64,
    /// Extra Status messages a Byzantine peer injects (from, view, round).
    tx_counter: u64,
}

impl Net {
    fn new(n: usize) -> Net {
        let (committee, _) = committee(n);
        let configs: Vec<ReplicaConfig> = (0..n)
            .map(|i| ReplicaConfig::new(v(i), committee.clone()))
            .collect();
        let replicas = configs
            .iter()
            .map(|c| Replica::new(c.clone(), Signer::Placeholder).expect("config"))
            .collect();
        let mut net = Net {
            replicas,
            stores: (0..n).map(|_| MemoryStore::new()).collect(),
            configs,
            silent: vec![false; n],
            idle_due: vec![None; n],
            queue: VecDeque::new(),
            now: 1_000,
            tx_counter: 0,
        };
        for i in 0..n {
            net.queue.push_back((i, Input::Start));
        }
        net.drain();
        net
    }

    fn carry_out(&mut self, i: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Persist(batch) => self.stores[i].write(batch).expect("store"),
                Output::Broadcast(message) => {
                    for to in 0..self.replicas.len() {
                        if to != i {
                            self.queue.push_back((
                                to,
                                Input::Message {
                                    from: v(i),
                                    message: message.clone(),
                                },
                            ));
                        }
                    }
                }
                Output::Send { to, message } => self.queue.push_back((
                    to.as_usize(),
                    Input::Message {
                        from: v(i),
                        message,
                    },
                )),
                Output::Fetch { from, hashes } => {
                    let server = from.as_usize();
                    if self.silent[server] {
                        continue;
                    }
                    let vertices: Vec<_> = hashes
                        .iter()
                        .filter_map(|h| self.stores[server].vertex(h).ok().flatten())
                        .collect();
                    if !vertices.is_empty() {
                        self.queue.push_back((i, Input::Fetched { from, vertices }));
                    }
                }
                Output::SetTimer { timer, after_ms } => {
                    if timer == Timer::Idle {
                        self.idle_due[i] = Some(self.now + after_ms);
                    }
                }
                Output::Finalized(_) | Output::Evidence(_) => {}
            }
        }
    }

    fn step(&mut self, i: usize, input: Input) {
        if self.silent[i] {
            return;
        }
        // A silent sender's messages are dropped too.
        if let Input::Message { from, .. } | Input::Fetched { from, .. } = &input {
            if self.silent[from.as_usize()] {
                return;
            }
        }
        let outputs = self.replicas[i].handle(TimestampMs(self.now), input);
        self.carry_out(i, outputs);
    }

    fn drain(&mut self) {
        let mut budget = 2_000_000;
        while let Some((to, input)) = self.queue.pop_front() {
            self.step(to, input);
            budget -= 1;
            assert!(budget > 0, "message storm");
        }
    }

    /// Runs `ms` of virtual time in 50 ms ticks, submitting one transaction to every
    /// live replica per tick.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 50;
            self.tx_counter += 1;
            for i in 0..self.replicas.len() {
                let tx = Transaction::new(
                    format!("tx {} at {}", self.tx_counter, i).into_bytes(),
                    TimestampMs(self.now + 60_000),
                );
                self.queue.push_back((i, Input::Transactions(vec![tx])));
                self.queue.push_back((i, Input::Timer(Timer::Tick)));
                if self.idle_due[i].is_some_and(|due| due <= self.now) {
                    self.idle_due[i] = None;
                    self.queue.push_back((i, Input::Timer(Timer::Idle)));
                }
            }
            self.drain();
        }
    }

    /// Disk wiped, keys kept: the replica restarts from an empty store.
    fn wipe(&mut self, i: usize) {
        self.stores[i] = MemoryStore::new();
        self.replicas[i] = Replica::recover(
            self.configs[i].clone(),
            Signer::Placeholder,
            &self.stores[i],
        )
        .expect("recovers from an empty store");
        self.idle_due[i] = None;
        self.queue.push_back((i, Input::Start));
        self.drain();
    }

    /// Crash and restart with the store intact.
    fn restart(&mut self, i: usize) {
        self.replicas[i] = Replica::recover(
            self.configs[i].clone(),
            Signer::Placeholder,
            &self.stores[i],
        )
        .expect("recovers");
        self.idle_due[i] = None;
        self.queue.push_back((i, Input::Start));
        self.drain();
    }

    fn executed(&self) -> Vec<u64> {
        self.replicas.iter().map(|r| r.last_executed().0).collect()
    }

    fn describe(&self) -> String {
        self.replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{i}: {}", r.describe()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Schedule: n = 4, view 0 (primary 0). Replica 3's disk is wiped (keys kept); it learns
/// its signing floor from the others' Status and catches up. The network runs healthy
/// long enough for stable checkpoints to pass far beyond anything replica 3 could have
/// signed before the wipe. Then replica 2 (the one Byzantine validator, f = 1) goes
/// silent for good: replicas 0, 1 and 3 must still change view and finalize (before the
/// fix replica 3 never voted in view 0 nor signed the view change to view 1, so neither
/// view got its 2f + 1).
///
/// `wipe = false` is the control: the same schedule with a plain crash and restart.
fn floor_schedule(wipe: bool) -> (Vec<u64>, Vec<u64>, Net) {
    let mut net = Net::new(4);
    net.run(2_000);
    assert!(net.executed().iter().all(|e| *e > 0), "{}", net.describe());
    if wipe {
        net.wipe(3);
    } else {
        net.restart(3);
    }
    // Heal: a long healthy run, checkpoints pass.
    net.run(20_000);
    // The Byzantine validator 2 goes silent for good.
    net.silent[2] = true;
    net.run(2_000);
    let before = net.executed();
    net.run(60_000);
    let after = net.executed();
    (before, after, net)
}

#[test]
fn control_a_restarted_replica_keeps_the_network_live() {
    let (before, after, net) = floor_schedule(false);
    for i in [0, 1, 3] {
        assert!(
            after[i] > before[i] + 10,
            "control stalled: {before:?} -> {after:?}\n{}",
            net.describe()
        );
    }
}

#[test]
fn a_wiped_replica_rejoins_once_a_stable_checkpoint_passes_its_floor() {
    let (before, after, net) = floor_schedule(true);
    // The wipe has healed by the architecture's own criterion: checkpoints stable far
    // above everything replica 3 signed before the wipe, and it caught up.
    assert!(
        net.replicas[3].stable_checkpoint().sequence.0 > 40,
        "{}",
        net.describe()
    );
    for i in [0, 1, 3] {
        assert!(
            after[i] > before[i] + 10,
            "STALL: honest replica {i} finalized nothing in 60 s with only one silent Byzantine: {before:?} -> {after:?}\n{}",
            net.describe()
        );
    }
}
