//! Command-line options of the simulator, shared by `weft-simulate` and `weft simulate`,
//! and the loop over many seeds.

use crate::replica::Mutant;

use super::{run, Behaviour, SimConfig};

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
    /// Crashes may cut a step between its outputs.
    pub cut_crashes: bool,
    /// One crash per seed may restart from an empty store (keys kept).
    pub wipes: bool,
    /// Targeted delivery faults: chosen message kinds to one replica dropped or delayed.
    pub targeted: bool,
    /// Clients submit over this many simulated milliseconds.
    pub load_ms: u64,
    /// ML-DSA-87 on every message.
    pub real_signatures: bool,
    /// The replicas' idle heartbeat; `None` alternates by seed like
    /// [`SimConfig::adversarial`] (odd seeds the node's 5 minutes, even seeds 50 ms).
    pub idle_ms: Option<u64>,
    /// Clients submit once and never retry (pair with no crashes: a crash may lose a
    /// mempool, which only a retry recovers).
    pub no_retries: bool,
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

/// What the command line asks for.
#[derive(Clone, Debug)]
pub enum SimCommand {
    /// Run these options.
    Run(SimOptions),
    /// `--help` or `-h`: print [`SimOptions::usage`] and exit 0.
    Help,
}

impl SimOptions {
    /// The usage text (every flag, behaviour and mutant; [`SimOptions::usage`] builds the
    /// same from `Behaviour::ALL` and `Mutant::ALL`, and a test keeps the two equal).
    pub const USAGE: &'static str = "usage: simulate [--validators N] [--byzantine K] [--behaviour NAME|all] \
[--seeds S] [--seed-base B] [--transactions T] [--load-ms MS] [--idle-ms MS] [--loss P] [--partitions] [--crashes] \
[--cut-crashes] [--wipes] [--targeted] [--faults] [--no-retries] [--real-signatures] [--mutant NAME] [--help]
  --faults: --loss 0.02 --partitions --crashes --cut-crashes --wipes --targeted --load-ms 8000
  --idle-ms: the idle heartbeat (default: odd seeds 300000, the node's, even seeds 50)
  --no-retries: clients submit once, even when refused (they never resubmit what an honest
    validator acknowledged anyway)
behaviours: silent, equivocating-primary, equivocating-author, double-voting, twins, \
invalid-signatures, stale-replay, flooding, split-anchors, hijack-reproposals, \
self-preparing-primary, lying-view-changes, byzantine-new-view, split-votes, lying-fetches, \
lying-sync, adaptive, all
mutants: no-durable-own-vertex, count-parent-vertices, per-author-frontier, \
pre-prepare-over-new-view, unbounded-claims, count-primary-prepare, proposal-not-durable, \
new-view-not-durable, wiped-store-signs-at-once, pre-prepare-below-stable, no-round-jump, \
stale-status-counts, latest-vertex-only, learning-not-durable, unverified-reports, \
mempool-not-durable, no-nudge, snapshot-without-window, stale-wants, fetch-by-hash-order, refuse-needed-at-cap, \
fetch-by-rotation-only, needed-displaces-idle";

    /// The usage text, generated from `Behaviour::ALL` and `Mutant::ALL`.
    pub fn usage() -> String {
        let behaviours: Vec<&str> = Behaviour::ALL.iter().map(|b| b.name()).collect();
        let mutants: Vec<&str> = Mutant::ALL.iter().map(|m| m.name()).collect();
        format!(
            "usage: simulate [--validators N] [--byzantine K] [--behaviour NAME|all] \
[--seeds S] [--seed-base B] [--transactions T] [--load-ms MS] [--idle-ms MS] [--loss P] [--partitions] [--crashes] \
[--cut-crashes] [--wipes] [--targeted] [--faults] [--no-retries] [--real-signatures] [--mutant NAME] [--help]
  --faults: --loss 0.02 --partitions --crashes --cut-crashes --wipes --targeted --load-ms 8000
  --idle-ms: the idle heartbeat (default: odd seeds 300000, the node's, even seeds 50)
  --no-retries: clients submit once, even when refused (they never resubmit what an honest
    validator acknowledged anyway)
behaviours: {}, all
mutants: {}",
            behaviours.join(", "),
            mutants.join(", ")
        )
    }

    /// Parses command-line words (without the program name). `--help` or `-h` gives
    /// `Err` with the usage text; [`SimOptions::parse_command`] tells help apart.
    pub fn parse(words: impl IntoIterator<Item = String>) -> Result<SimOptions, String> {
        match SimOptions::parse_command(words)? {
            SimCommand::Run(options) => Ok(options),
            SimCommand::Help => Err(SimOptions::usage()),
        }
    }

    /// Parses command-line words (without the program name), help included.
    pub fn parse_command(words: impl IntoIterator<Item = String>) -> Result<SimCommand, String> {
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
            cut_crashes: false,
            wipes: false,
            targeted: false,
            load_ms: 2_000,
            real_signatures: false,
            idle_ms: None,
            no_retries: false,
            mutant: None,
        };
        let mut load_given = false;
        let mut words = words.into_iter();
        while let Some(flag) = words.next() {
            match flag.as_str() {
                "--help" | "-h" => return Ok(SimCommand::Help),
                "--real-signatures" => options.real_signatures = true,
                "--partitions" => options.partitions = true,
                "--crashes" => options.crashes = true,
                "--cut-crashes" => {
                    options.crashes = true;
                    options.cut_crashes = true;
                }
                "--wipes" => {
                    options.crashes = true;
                    options.wipes = true;
                }
                "--targeted" => options.targeted = true,
                "--no-retries" => options.no_retries = true,
                "--faults" => {
                    options.partitions = true;
                    options.crashes = true;
                    options.cut_crashes = true;
                    options.wipes = true;
                    options.targeted = true;
                    options.loss = 0.02;
                    if !load_given {
                        options.load_ms = 8_000;
                    }
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
                        "--idle-ms" => options.idle_ms = Some(number("--idle-ms")?.max(1)),
                        "--load-ms" => {
                            options.load_ms = number("--load-ms")?;
                            load_given = true;
                        }
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
        Ok(SimCommand::Run(options))
    }

    /// The configuration of one seed.
    pub fn config(&self, seed: u64) -> SimConfig {
        let behaviour = self.behaviour.unwrap_or_else(|| {
            Behaviour::ALL[usize::try_from(seed % Behaviour::ALL.len() as u64).unwrap_or(0)]
        });
        let mut config = SimConfig {
            transactions: self.transactions,
            submit_window_ms: self.load_ms,
            loss_probability: self.loss,
            partitions: self.partitions,
            crashes: self.crashes,
            cut_crashes: self.cut_crashes,
            wipes: self.wipes,
            targeted_faults: self.targeted,
            byzantine: self.byzantine,
            behaviour,
            real_signatures: self.real_signatures,
            idle_interval_ms: self
                .idle_ms
                .unwrap_or_else(|| SimConfig::alternating_idle(seed)),
            mutant: self.mutant,
            ..SimConfig::new(self.validators, seed)
        };
        if self.no_retries {
            config.client_retry_ms = config.max_time_ms.saturating_mul(2);
        }
        config
    }

    /// The command that replays one seed.
    pub fn replay(&self, program: &str, seed: u64) -> String {
        let config = self.config(seed);
        let mut command = format!(
            "{program} --validators {} --byzantine {} --behaviour {} --seeds 1 --seed-base {seed} --transactions {} --load-ms {}",
            self.validators, self.byzantine, config.behaviour, self.transactions, self.load_ms
        );
        if self.loss > 0.0 {
            command.push_str(&format!(" --loss {}", self.loss));
        }
        if let Some(idle) = self.idle_ms {
            command.push_str(&format!(" --idle-ms {idle}"));
        }
        if let Some(mutant) = self.mutant {
            let name = mutant.name();
            command.push_str(&format!(" --mutant {name}"));
        }
        for (on, flag) in [
            (self.partitions, " --partitions"),
            (self.crashes, " --crashes"),
            (self.cut_crashes, " --cut-crashes"),
            (self.wipes, " --wipes"),
            (self.targeted, " --targeted"),
            (self.no_retries, " --no-retries"),
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
