//! Seeded simulations (ARCHITECTURE.md, "What must always hold"): the normal case under
//! delay, reordering and duplication; every Byzantine behaviour with loss, partitions
//! and crashes; and the deliberate mutants that the checkers must catch.
//! `WEFT_SIM_SEEDS` sets the seeds of the normal-case tests (default 20),
//! `WEFT_SIM_ADVERSARIAL_SEEDS` those of the adversarial n = 4 test (default 2,000) and
//! `WEFT_SIM_CRAFTED_SEEDS` those of the crafted-strategy gates (default 400).

use std::collections::{HashMap, HashSet};
use weft_consensus::replica::Mutant;
use weft_consensus::sim::{
    check_agreement, check_integrity, run, Behaviour, SimCommand, SimConfig, SimOptions, SimReport,
};

/// `Behaviour::ALL` cycled by seed, as `--behaviour all` does.
fn nth_behaviour(seed: u64) -> Behaviour {
    let count = Behaviour::ALL.len() as u64;
    Behaviour::ALL[usize::try_from(seed % count).unwrap_or(0)]
}

fn seeds() -> u64 {
    env_seeds("WEFT_SIM_SEEDS", 20)
}

fn env_seeds(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn assert_clean(config: &SimConfig) -> SimReport {
    let report = run(config);
    assert!(
        report.violations.is_empty(),
        "seed {} (n={}, {} x {}): {:?}\n{}",
        config.seed,
        config.validators,
        config.byzantine,
        config.behaviour,
        report.violations,
        report.states.join("\n")
    );
    assert!(
        report.min_finalized > 0,
        "seed {}: nothing finalized",
        config.seed
    );
    report
}

#[test]
fn normal_case_agrees_and_finalizes_everything_n4() {
    for seed in 0..seeds() {
        assert_clean(&SimConfig::new(4, seed));
    }
}

#[test]
fn normal_case_agrees_and_finalizes_everything_n7() {
    for seed in 0..seeds() / 4 + 1 {
        assert_clean(&SimConfig::new(7, 1_000 + seed));
    }
}

/// A run long enough for several checkpoints and GC: checkpoints become stable and the
/// memory checker (run on every seed) holds.
#[test]
fn checkpoints_become_stable_and_memory_stays_bounded() {
    let mut config = SimConfig::new(4, 9);
    config.transactions = 2_000;
    config.submit_window_ms = 20_000;
    let report = assert_clean(&config);
    assert!(
        report.min_stable_checkpoint >= 100,
        "stable checkpoint only {}",
        report.min_stable_checkpoint
    );
}

#[test]
fn real_ml_dsa_87_signatures_verify_on_every_delivery() {
    let mut config = SimConfig::new(4, 77);
    config.real_signatures = true;
    config.transactions = 50;
    config.submit_window_ms = 500;
    assert_clean(&config);
}

/// Seeds that stalled when replicas dropped pre-prepares and votes beyond their own
/// window (the primary's stable checkpoint was ahead of theirs). Found by a 5,000-seed run.
#[test]
fn early_pre_prepares_from_a_primary_ahead_of_us_are_not_lost() {
    for seed in [147, 199, 575, 1655, 2150, 2588, 2686, 4640] {
        assert_clean(&SimConfig::new(4, seed));
    }
}

#[test]
fn same_seed_same_trace() {
    let config = SimConfig::new(4, 42);
    let first = run(&config);
    let second = run(&config);
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.elapsed_ms, second.elapsed_ms);
    let other = run(&SimConfig::new(4, 43));
    assert_ne!(first.trace, other.trace, "the seed must matter");
}

/// The agreement checker is trusted only after it fires: replicas whose logs differ in
/// one vertex's position at one sequence.
#[test]
fn agreement_checker_fires_on_diverging_logs() {
    let (_, entries) = weft_dag::testing::entry_chain(3, 3, 1);
    let mut forked = entries.clone();
    forked[1].vertices.swap(0, 1);
    assert!(check_agreement(&[entries.clone(), entries.clone()]).is_empty());
    let violations = check_agreement(&[entries, forked]);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("sequence 2"));
}

/// The liveness half of the integrity checker fires on a transaction an honest replica
/// acknowledged and never finalized, but not on one only a Byzantine validator ever saw.
#[test]
fn liveness_checker_fires_only_for_acknowledged_transactions() {
    let (_, entries) = weft_dag::testing::entry_chain(3, 3, 1);
    let mut submitted: HashMap<_, u64> = entries
        .iter()
        .flat_map(|e| e.transactions.iter().map(|t| (t.id, 0)))
        .collect();
    let mut acknowledged: HashSet<_> = submitted.keys().copied().collect();
    let logs = [entries.clone(), entries];
    assert!(check_integrity(&logs, &submitted, &acknowledged).is_empty());
    let lost =
        weft_dag::Transaction::new(b"never finalized".to_vec(), weft_dag::TimestampMs(1)).id();
    submitted.insert(lost, 0);
    assert!(check_integrity(&logs, &submitted, &acknowledged).is_empty());
    acknowledged.insert(lost);
    let violations = check_integrity(&logs, &submitted, &acknowledged);
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations[0].contains("never finalized 1 acknowledged"));
}

/// Seed 1024932 of the 100,000-seed run: the client's 15 attempts all went to the two
/// Twins instances, which may censor; no honest replica acknowledged the transaction.
#[test]
fn a_transaction_only_byzantine_replicas_saw_is_not_owed_liveness() {
    assert_clean(&SimConfig::adversarial(4, 1_024_932, 1, Behaviour::Twins));
}

/// The classic behaviours under the classic faults (loss, one healing partition, crashes
/// where f allows), every message through its wire form: `WEFT_SIM_ADVERSARIAL_SEEDS`
/// seeds (default 200). The crafting behaviours and the new faults are in the gate below.
#[test]
fn classic_behaviours_under_classic_faults_n4() {
    let count = env_seeds("WEFT_SIM_ADVERSARIAL_SEEDS", 200);
    let mut views = 0;
    for seed in 0..count {
        let behaviour = Behaviour::CLASSIC[(seed % 8) as usize];
        let report = assert_clean(&SimConfig::classic_faults(4, 100_000 + seed, 1, behaviour));
        views += report.max_view;
    }
    assert!(views > 0, "no seed ever changed view");
}

/// n = 7 with f = 2 Byzantine replicas and the classic faults; crashes use what f leaves.
#[test]
fn every_behaviour_under_every_fault_n7() {
    for seed in 0..env_seeds("WEFT_SIM_SEEDS", 20) * 2 {
        let behaviour = Behaviour::CLASSIC[(seed % 8) as usize];
        assert_clean(&SimConfig::classic_faults(7, 200_000 + seed, 2, behaviour));
    }
    for seed in 0..16 {
        let behaviour = Behaviour::CLASSIC[(seed % 8) as usize];
        assert_clean(&SimConfig::classic_faults(7, 300_000 + seed, 1, behaviour));
    }
}

/// The gate: every behaviour, crafting ones included, under every fault (targeted
/// delivery, cut steps, one wiped store, loss, a partition), n = 4, one Byzantine
/// replica; every fourth seed also without a Byzantine replica (the crash budget then
/// goes to cut steps and wiped stores). `WEFT_SIM_CRAFTED_SEEDS` (default 200 in this
/// dev-profile suite; `make sim-gate` runs 2,000 on the release build) seeds, split over
/// two tests so they run on two cores.
fn crafted_gate_n4(half: u64) {
    let count = env_seeds("WEFT_SIM_CRAFTED_SEEDS", 200) / 2;
    for seed in half * count..(half + 1) * count {
        let behaviour = nth_behaviour(seed);
        assert_clean(&SimConfig::adversarial(4, 2_000_000 + seed, 1, behaviour));
        // No Byzantine replica: the crash budget goes to cut steps and wiped stores.
        if seed % 4 == 0 {
            assert_clean(&SimConfig::adversarial(
                4,
                2_500_000 + seed,
                0,
                Behaviour::Silent,
            ));
        }
    }
}

#[test]
fn every_behaviour_under_every_fault_n4_first_half() {
    crafted_gate_n4(0);
}

#[test]
fn every_behaviour_under_every_fault_n4_second_half() {
    crafted_gate_n4(1);
}

/// The same gate at n = 7 with f = 2 (two Byzantine replicas, or one and a crash):
/// `WEFT_SIM_CRAFTED_SEEDS` / 10 seeds (20 by default here, 200 in `make sim-gate`).
#[test]
fn every_crafted_behaviour_under_every_fault_n7() {
    let count = env_seeds("WEFT_SIM_CRAFTED_SEEDS", 200) / 10;
    for seed in 0..count {
        let behaviour = nth_behaviour(seed);
        let byzantine = 1 + (seed % 2) as usize;
        assert_clean(&SimConfig::adversarial(
            7,
            3_000_000 + seed,
            byzantine,
            behaviour,
        ));
    }
}

/// Crash and restart without Byzantine replicas: restarted replicas recover from their
/// store, never sign a conflicting message, and end with the same log.
#[test]
fn crashed_replicas_recover_from_their_store() {
    let mut restarted = 0;
    for seed in 0..40 {
        let mut config = SimConfig::adversarial(4, 400_000 + seed, 0, Behaviour::Silent);
        config.partitions = false;
        let report = assert_clean(&config);
        restarted += usize::from(report.states.iter().all(|s| !s.contains("down")));
    }
    assert_eq!(restarted, 40, "every crashed replica came back");
}

/// The silent primary of view 0 is replaced and everything still finalizes.
#[test]
fn a_silent_primary_is_replaced() {
    for seed in 0..8 {
        let mut config = SimConfig::new(4, 500_000 + seed);
        config.byzantine = 1;
        config.behaviour = Behaviour::EquivocatingPrimary;
        assert_clean(&config);
        config.behaviour = Behaviour::Silent;
        // Silent with the primary chosen: the first Byzantine slot is random, so force
        // it through the equivocating-primary placement and silence it.
        let report = assert_clean(&config);
        assert!(report.min_finalized > 0);
    }
}

#[test]
fn real_signatures_with_byzantine_replicas() {
    for (seed, behaviour) in [
        (600_000, Behaviour::InvalidSignatures),
        (600_001, Behaviour::EquivocatingPrimary),
    ] {
        let mut config = SimConfig::adversarial(4, seed, 1, behaviour);
        config.real_signatures = true;
        config.transactions = 40;
        config.submit_window_ms = 400;
        let report = assert_clean(&config);
        if behaviour == Behaviour::InvalidSignatures {
            assert!(
                report.rejected_signatures > 0,
                "forged messages were delivered unchecked"
            );
        }
    }
}

#[test]
fn same_seed_same_trace_under_faults() {
    let config = SimConfig::adversarial(4, 77, 1, Behaviour::Twins);
    assert_eq!(run(&config).trace, run(&config).trace);
}

/// Runs `config` over seeds until a violation containing `needle` appears.
fn fires(mut config: SimConfig, seeds: u64, needle: &str) -> String {
    let base = config.seed;
    for seed in base..base + seeds {
        config.seed = seed;
        let report = run(&config);
        if let Some(found) = report.violations.iter().find(|v| v.contains(needle)) {
            return found.clone();
        }
    }
    panic!("no violation containing {needle:?} in {seeds} seeds of {config:?}");
}

/// Mutant 1: f + 1 Byzantine replicas (two Twins pairs at n = 4, each twin on one side
/// of a split of the honest ones): both sides reach quorums and the logs fork.
#[test]
fn checkers_fire_with_f_plus_one_twins() {
    let mut config = SimConfig::new(4, 700_000);
    config.byzantine = 2;
    config.behaviour = Behaviour::Twins;
    let found = fires(config, 20, "agreement");
    assert!(found.contains("differs"), "{found}");
}

/// Mutant 2: finality by per-author frontier. An equivocator's second version, seen by
/// fewer replicas (and later, with loss and a partition), reaches an anchor after the
/// first version of the same round was finalized; the frontier skips it, the exact-set
/// oracle does not.
#[test]
fn checkers_fire_on_per_author_frontier() {
    let mut config = SimConfig::adversarial(4, 0, 1, Behaviour::EquivocatingAuthor);
    config.mutant = Some(Mutant::PerAuthorFrontier);
    fires(config, 40, "order:");
}

/// Mutant 3: the own vertex is sent without being made durable; a crashed replica comes
/// back without it and signs a second vertex for the same round.
#[test]
fn checkers_fire_without_a_durable_own_vertex() {
    let mut config = SimConfig::adversarial(4, 0, 0, Behaviour::Silent);
    config.partitions = false;
    config.loss_probability = 0.0;
    config.mutant = Some(Mutant::NoDurableOwnVertex);
    fires(config, 20, "double signing");
}

/// Mutant 4: rounds advance on 2f + 1 parent vertices instead of authors: with an
/// equivocator's two versions an honest replica builds a vertex too few authors support.
#[test]
fn checkers_fire_when_counting_parent_vertices() {
    let mut config = SimConfig::new(4, 730_000);
    config.byzantine = 1;
    config.behaviour = Behaviour::EquivocatingAuthor;
    config.mutant = Some(Mutant::CountParentVertices);
    fires(config, 20, "validity");
}

/// Seeds a 100,000-seed run found: an equivocating primary's second version, committed or
/// re-proposed as an anchor, was refused as an unwanted equivocation by replicas holding
/// the first (so the sequence never executed), and vote slots of old views piled up.
#[test]
fn a_committed_equivocated_anchor_is_fetched_and_taken() {
    for seed in [1_004_186, 1_012_050] {
        assert_clean(&SimConfig::adversarial(
            4,
            seed,
            1,
            Behaviour::EquivocatingAuthor,
        ));
    }
}

/// Runs `SimConfig::adversarial` over `seeds` seeds from `base`, the behaviour cycling
/// through `Behaviour::ALL`, with `mutant` in every honest replica; returns the first
/// seed with a violation containing one of `needles` (any violation when empty). Every
/// seed runs the idle heartbeat `idle_ms` when given (otherwise odd seeds the node's 5
/// minutes and even seeds 50 ms).
fn find(
    mutant: Option<Mutant>,
    validators: usize,
    byzantine: usize,
    base: u64,
    seeds: u64,
    needles: &[&str],
    idle_ms: Option<u64>,
) -> Option<(u64, String)> {
    for seed in base..base + seeds {
        let behaviour = nth_behaviour(seed);
        let mut config = SimConfig::adversarial(validators, seed, byzantine, behaviour);
        config.mutant = mutant;
        if let Some(idle) = idle_ms {
            config.idle_interval_ms = idle;
        }
        let report = run(&config);
        let found = report
            .violations
            .iter()
            .find(|v| needles.is_empty() || needles.iter().any(|n| v.contains(n)));
        if let Some(found) = found {
            return Some((seed, format!("{behaviour}: {found}")));
        }
    }
    None
}

/// Each mutant of a review finding (the old rule behind `Mutant`) must be caught within a
/// bound of random seeds (`SimConfig::adversarial`, behaviours cycling through
/// `Behaviour::ALL`, seeds from a fixed base): the adversary is strong enough to have
/// found the bug. The bound is stated in each test.
fn mutant_is_caught(mutant: Mutant, byzantine: usize, seeds: u64, needles: &[&str]) {
    mutant_is_caught_with_idle(mutant, byzantine, seeds, needles, None);
}

fn mutant_is_caught_with_idle(
    mutant: Mutant,
    byzantine: usize,
    seeds: u64,
    needles: &[&str],
    idle_ms: Option<u64>,
) {
    let found = find(
        Some(mutant),
        4,
        byzantine,
        5_000_000,
        seeds,
        needles,
        idle_ms,
    );
    let Some((seed, violation)) = found else {
        panic!("mutant {} not caught in {seeds} seeds", mutant.name());
    };
    eprintln!(
        "mutant {} caught at seed +{}: {violation}",
        mutant.name(),
        seed - 5_000_000
    );
}

/// Reached by the side-history strategy: after its NewView, a Byzantine primary sends a
/// replica still fetching a re-proposed anchor a fresh anchor for that sequence whose
/// parents the replica already holds (the hand-over schedule keeps view 0's anchors from
/// it). The strategy needs a busy DAG: every seed runs a 50 ms idle heartbeat (an
/// operator's `idle_heartbeat_ms` allows it). The deterministic twin is
/// `attacks::a_primary_vertex_cannot_take_a_sequence_the_new_view_decided`.
#[test]
fn mutant_pre_prepare_over_new_view_is_caught_by_random_seeds() {
    mutant_is_caught_with_idle(Mutant::PrePrepareOverNewView, 1, 600, &[], Some(50));
}

#[test]
fn mutant_unbounded_claims_is_caught_by_random_seeds() {
    mutant_is_caught(
        Mutant::UnboundedClaims,
        1,
        600,
        &["wire:", "liveness", "memory"],
    );
}

#[test]
fn mutant_count_primary_prepare_is_caught_by_random_seeds() {
    mutant_is_caught(Mutant::CountPrimaryPrepare, 1, 600, &[]);
}

#[test]
fn mutant_proposal_not_durable_is_caught_by_random_seeds() {
    mutant_is_caught(Mutant::ProposalNotDurable, 0, 300, &["for pre-prepare/"]);
}

#[test]
fn mutant_new_view_not_durable_is_caught_by_random_seeds() {
    mutant_is_caught(
        Mutant::NewViewNotDurable,
        0,
        300,
        &["for new-view/", "recovery:"],
    );
}

/// Rare in random seeds: the replica's stable checkpoint must pass its execution while
/// it enters (or restarts into) a Byzantine primary's view whose NewView re-proposed
/// sequences below that checkpoint. The crafted gate found it once in 2,000 seeds, at
/// seed 10,001,024 (`hijack-reproposals`); 600 seeds from 5,000,000 do not reach it.
/// This replays that seed: without the rule the side history makes the replica prepare
/// against its NewView, with the rule the seed is clean.
#[test]
fn the_seed_that_found_pre_prepares_below_the_stable_checkpoint_stays_fixed() {
    let config = |mutant, legacy_replay| {
        let mut config = SimConfig::adversarial(4, 10_001_024, 1, Behaviour::HijackReproposals);
        config.mutant = mutant;
        config.legacy_replay = legacy_replay;
        config
    };
    for legacy_replay in [false, true] {
        let fixed = run(&config(None, legacy_replay));
        assert!(fixed.violations.is_empty(), "{:?}", fixed.violations);
    }
    // The seed's trajectory as found, before the anchoring fix changed it.
    let mutant = run(&config(Some(Mutant::PrePrepareBelowStable), true));
    assert!(
        mutant.violations.iter().any(|v| v.contains("new view:")),
        "{:?}",
        mutant.violations
    );
}

/// Replays `seed` under the replay command's `words`: clean with the rules, and with
/// `mutant` (the Byzantine validator's code underneath running it too, as the seed was
/// found) a liveness violation.
fn replayed_seed_stays_fixed(words: &str, seed: u64, mutant: Mutant) {
    let options = SimOptions::parse(words.split_whitespace().map(str::to_string))
        .expect("the replay command parses");
    let fixed = run(&options.config(seed));
    assert!(fixed.violations.is_empty(), "{:?}", fixed.violations);
    let mut old = options.config(seed);
    old.mutant = Some(mutant);
    old.byzantine_mutant = true;
    let old = run(&old);
    assert!(
        old.violations.iter().any(|v| v.contains("liveness:")),
        "{:?}",
        old.violations
    );
}

/// Found by the long run once in 147,500 seeds (seed 103,100,007,177, n = 7,
/// `hijack-reproposals`, every fault): a replica kept every hash it ever wanted after
/// its vertex arrived, so its wanted set filled up and dropped the wish for an anchor it
/// had just committed, whose Byzantine author had sent it another version of the slot;
/// every fetch of that anchor was then refused as an unwanted equivocation and the
/// replica never executed the sequence (an acknowledged transaction of its own stayed
/// unfinalized). It needs a Byzantine author's equivocated anchor committed while an
/// honest replica holds the other version, after that replica made 4W wishes: 4,500
/// `hijack-reproposals` seeds from 6,000,000 (n = 4 and 7) do not reach it. This
/// replays the seed that found it. The deterministic twins are
/// `graph::a_wanted_version_is_taken_however_many_wishes_were_fulfilled_before` and
/// `graph::at_the_bound_the_oldest_open_wish_goes_unless_made_again` (dag crate).
#[test]
fn the_seed_that_found_a_refused_committed_anchor_stays_fixed() {
    replayed_seed_stays_fixed(
        "--validators 7 --byzantine 1 --behaviour hijack-reproposals --transactions 400 \
                 --load-ms 8000 --loss 0.02 --partitions --crashes --cut-crashes --wipes --targeted",
        103_100_007_177,
        Mutant::StaleWants,
    );
}

/// After a wiped restart the network may keep statuses from the learner for a while,
/// and the simulator crashes it again once it saved a view before learning. The
/// deterministic twin is `attacks::a_learning_replica_that_crashes_keeps_learning`.
#[test]
fn mutant_learning_not_durable_is_caught_by_random_seeds() {
    mutant_is_caught(Mutant::LearningNotDurable, 0, 300, &["double signing"]);
}

/// Needs a Byzantine reporter and a wiped replica in one run, so n = 7 with one Byzantine
/// validator (the crash budget's one crash wipes 7 times in 10 when a Byzantine validator
/// is in the run, and crafting Byzantine validators answer learners with lies 7 times in
/// 10). The `floor:` checker fires on a floor above what honest replicas reached. The
/// deterministic twin is `attacks::a_byzantine_round_lie_never_silences_a_wiped_replica`.
#[test]
fn mutant_unverified_reports_is_caught_by_random_seeds_at_n_7() {
    let seeds = 60;
    let found = find(
        Some(Mutant::UnverifiedReports),
        7,
        1,
        5_000_000,
        seeds,
        &["floor:"],
        None,
    );
    let Some((seed, violation)) = found else {
        panic!("mutant unverified-reports not caught in {seeds} seeds");
    };
    eprintln!(
        "mutant unverified-reports caught at seed +{}: {violation}",
        seed - 5_000_000
    );
}

/// Found by the attack review of the wanted-set fix. The flooding validator's vertices
/// just above the top round name made-up parents that sort low; at n = 7 the 50 its
/// buffer slot holds name 350 of them, so retransmission fetches sorted by hash and cut
/// to 256 never again ask for a committed anchor whose direct fetch was lost: a stall.
/// Only `flooding` crafts such vertices, so this runs the `flooding` seeds of the
/// `--behaviour all` cycle from 5,000,000 (seed % 17), 600 seeds of the cycle: caught
/// 3 times in those 600 (first at +217, the 13th flooding seed; +302 since the
/// waiting-buffer rule of `RefuseNeededAtCap` changed the trajectories), measured with
/// `weft-simulate --validators 7 --byzantine 1 --behaviour all --faults --transactions
/// 400 --seeds 600 --seed-base 5000000 --mutant fetch-by-hash-order`. The deterministic
/// twin is `attacks::every_retransmission_fetches_a_committed_anchor_whatever_else_is_missing`.
#[test]
fn mutant_fetch_by_hash_order_is_caught_by_flooding_seeds_at_n_7() {
    let cycle = 600;
    let Some((seed, violation)) =
        caught_by_flooding_seeds(Mutant::FetchByHashOrder, 7, cycle, "liveness:")
    else {
        panic!("mutant fetch-by-hash-order not caught in the flooding seeds of {cycle}");
    };
    eprintln!(
        "mutant fetch-by-hash-order caught at seed +{}: {violation}",
        seed - 5_000_000
    );
}

/// The runs of `flooding` seeds of the `--behaviour all` cycle from 5,000,000 with
/// `mutant`, at n = `validators`: the first seed whose violations name `needle`.
fn caught_by_flooding_seeds(
    mutant: Mutant,
    validators: usize,
    cycle: u64,
    needle: &str,
) -> Option<(u64, String)> {
    (5_000_000..5_000_000 + cycle)
        .filter(|seed| nth_behaviour(*seed) == Behaviour::Flooding)
        .find_map(|seed| {
            let mut config = SimConfig::adversarial(validators, seed, 1, Behaviour::Flooding);
            config.mutant = Some(mutant);
            run(&config)
                .violations
                .into_iter()
                .find(|v| v.contains(needle))
                .map(|v| (seed, v))
        })
}

/// Found by the long run once the flood crafted vertices just above the top round
/// (seed 116,150,001,177, n = 4, `flooding`): the flooding validator's made-up
/// vertices, below the rounds of its real ones, filled its share of an honest
/// replica's waiting buffer, so that replica could take neither the real vertices nor
/// the honest vertices referencing them and fell out of every quorum. Rare in random
/// seeds: `weft-simulate --validators 4 --byzantine 1 --behaviour flooding --faults
/// --transactions 400 --seeds 400 --seed-base 5000000 --mutant refuse-needed-at-cap`
/// catches it once (+365), so this replays the seed that found it. The deterministic
/// twin is
/// `graph::a_vertex_an_honest_vertex_needs_is_charged_to_that_vertexs_share` (dag crate).
#[test]
fn the_seed_that_found_needed_vertices_refused_at_the_cap_stays_fixed() {
    replayed_seed_stays_fixed(
        "--validators 4 --byzantine 1 --behaviour flooding --transactions 400 \
                 --load-ms 8000 --loss 0.02 --partitions --crashes --cut-crashes --wipes --targeted",
        116_150_001_177,
        Mutant::RefuseNeededAtCap,
    );
}

/// Found by the long run on session 12's waiting-buffer rule (known limit 18; 3 in
/// 46,700 seeds, all n = 4 with one Byzantine validator, none of them `flooding`):
/// replica 2, cut off from validator 1 for a while, walked 1's chain down parent by
/// parent while 1's later vertices, needed by other validators' vertices, arrived; each
/// displaced the walk's top (nothing needed it), until the walk was gone and replica 2
/// never executed past sequence 16. The deterministic twin is
/// `graph::a_chain_walked_down_parent_by_parent_survives_later_rounds_of_its_author`
/// (dag crate); the other two seeds were 117,100,003,753 (`lying-sync`) and
/// 117,150,006,096 (`double-voting`).
#[test]
fn the_seed_that_found_a_chain_walk_eaten_from_its_top_stays_fixed() {
    replayed_seed_stays_fixed(
        "--validators 4 --byzantine 1 --behaviour double-voting --transactions 400 \
                 --load-ms 8000 --loss 0.02 --partitions --crashes --cut-crashes --wipes --targeted",
        117_100_002_636,
        Mutant::NeededDisplacesIdle,
    );
}

/// Clients no longer resubmit what an honest validator acknowledged, so a crash that
/// forgets an admitted transaction leaves it unfinalized: the liveness checker owes it.
/// The deterministic twin is `attacks::an_acknowledged_transaction_survives_a_crash`.
#[test]
fn mutant_mempool_not_durable_is_caught_by_random_seeds() {
    mutant_is_caught(Mutant::MempoolNotDurable, 0, 100, &["liveness:"]);
}

/// Found by those clients: a replica holding a transaction without a quorum of its
/// previous round, its peers idle (odd seeds run the node's 300 s heartbeat). First
/// caught at +175 since impatient clients' copies (which often give a second replica
/// work) joined the run; rare (about 4 in 1,000 seeds: `weft-simulate --validators 4
/// --byzantine 0 --behaviour all --faults --transactions 400 --mutant no-nudge`, 1 in
/// 500 from 5,000,300 and 3 in 500 from 5,300,000), so the bound is 600 since the
/// waiting-buffer rule of session 12 moved the first catch to +563. The deterministic
/// twin is `attacks::an_idle_replica_builds_the_round_a_peer_with_work_lacks`.
#[test]
fn mutant_no_nudge_is_caught_by_random_seeds() {
    mutant_is_caught(Mutant::NoNudge, 0, 600, &["liveness:"]);
}

/// Checkpointed restart: a replica restarted from its finalizer's snapshot without the
/// dedup window's entries finalizes an impatient client's later copy of a transaction
/// it had already finalized (first caught at +17). The deterministic twin is
/// `attacks::a_replica_restarted_from_its_snapshot_never_finalizes_a_copy_twice`.
#[test]
fn mutant_snapshot_without_window_is_caught_by_random_seeds() {
    mutant_is_caught(
        Mutant::SnapshotWithoutWindow,
        0,
        100,
        &["integrity:", "agreement:"],
    );
}

#[test]
fn mutant_wiped_store_signs_at_once_is_caught_by_random_seeds() {
    mutant_is_caught(Mutant::WipedStoreSignsAtOnce, 0, 300, &["double signing"]);
}

/// The network holds statuses back across a wipe (`deliver_stale_statuses`): a wiped
/// replica that learned its signing floor from them signs rounds it signed before.
/// The deterministic twin is
/// `attacks::a_wiped_replica_learns_its_floor_only_from_answers_to_its_own_request`.
#[test]
fn mutant_stale_status_counts_is_caught_by_random_seeds() {
    mutant_is_caught(Mutant::StaleStatusCounts, 0, 300, &["double signing"]);
}

/// Rare in random seeds: a replica's own chain must fall below the GC round (in the
/// seed, `flooding` kept it busy while the others built on, and commit certificates
/// then moved its GC round), and it must matter (it was the primary of the stalled
/// view). The long run found it once in about 10,000 seeds, at seed 100,017,076; this
/// replays it. The deterministic twin is
/// `attacks::a_replica_whose_own_round_fell_below_the_gc_round_builds_above_the_quorum_round`.
#[test]
fn the_seed_that_found_the_stall_below_the_gc_round_stays_fixed() {
    let config = |mutant, legacy_replay| {
        let mut config = SimConfig::adversarial(4, 100_017_076, 1, Behaviour::Flooding);
        config.mutant = mutant;
        config.legacy_replay = legacy_replay;
        config
    };
    for legacy_replay in [false, true] {
        let fixed = run(&config(None, legacy_replay));
        assert!(fixed.violations.is_empty(), "{:?}", fixed.violations);
    }
    // The seed's trajectory as found, before the anchoring fix changed it.
    let mutant = run(&config(Some(Mutant::NoRoundJump), true));
    assert!(
        mutant.violations.iter().any(|v| v.contains("liveness:")),
        "{:?}",
        mutant.violations
    );
}

/// `--help` is its own result, and the usage lists every behaviour and mutant (the
/// constant and the generated text agree).
#[test]
fn help_lists_every_behaviour_and_mutant() {
    for flag in ["--help", "-h"] {
        let parsed = SimOptions::parse_command([flag.to_string()]);
        assert!(matches!(parsed, Ok(SimCommand::Help)), "{flag}");
        assert_eq!(
            SimOptions::parse([flag.to_string()]).err(),
            Some(SimOptions::usage())
        );
    }
    assert_eq!(SimOptions::USAGE, SimOptions::usage());
    for name in Behaviour::ALL.iter().map(|b| b.name()) {
        assert!(SimOptions::usage().contains(name), "{name}");
    }
    for mutant in Mutant::ALL {
        assert!(SimOptions::usage().contains(mutant.name()));
        let parsed = SimOptions::parse(["--mutant".to_string(), mutant.name().to_string()]);
        assert_eq!(parsed.map(|o| o.mutant), Ok(Some(mutant)));
    }
}

/// Seed 2,001,844 of the crafted gate (split anchors): replicas that had executed a
/// sequence skipped it when a NewView re-proposed it, so only the replica that had not
/// executed it claimed it in the new view, with no f + 1 vouchers: every later view
/// change was undecidable. Executed re-proposals are now pre-prepared (claimed) too.
#[test]
fn replicas_that_executed_a_reproposed_sequence_still_vouch_for_it() {
    assert_clean(&SimConfig::adversarial(
        4,
        2_001_844,
        1,
        Behaviour::SplitAnchors,
    ));
}

/// Clients that submit once and never retry, replicas on the node's idle heartbeat (no
/// empty rounds for idleness), message loss, a partition and `byzantine` replicas, but
/// no crash (a crash may lose a mempool, which only a retry recovers): every
/// transaction an honest replica acknowledged is still owed finality, so a rule that
/// forgets work shows as a liveness violation instead of a delay a retry hides.
fn patient_clients(seed: u64, byzantine: usize, mutant: Option<Mutant>) -> SimConfig {
    let mut config = SimConfig::classic_faults(4, seed, byzantine, nth_behaviour(seed));
    config.crashes = false;
    config.transactions = 400;
    config.submit_window_ms = 8_000;
    config.idle_interval_ms = weft_consensus::sim::NODE_IDLE_INTERVAL_MS;
    config.client_retry_ms = config.max_time_ms * 2;
    config.mutant = mutant;
    config
}

#[test]
fn patient_clients_see_every_acknowledged_transaction_final() {
    for seed in 7_000_000..7_000_000 + env_seeds("WEFT_SIM_SEEDS", 20) * 2 {
        assert_clean(&patient_clients(seed, 1, None));
    }
}

/// The deterministic twin is
/// `attacks::a_vertex_carrying_transactions_is_anchored_after_its_authors_next_vertex_overtakes_it`.
#[test]
fn mutant_latest_vertex_only_is_caught_by_patient_clients() {
    let caught = (7_000_000..7_000_300).find_map(|seed| {
        let report = run(&patient_clients(seed, 0, Some(Mutant::LatestVertexOnly)));
        report
            .violations
            .iter()
            .find(|v| v.contains("liveness:"))
            .map(|v| (seed, v.clone()))
    });
    let Some((seed, violation)) = caught else {
        panic!("mutant latest-vertex-only not caught in 300 seeds");
    };
    eprintln!(
        "mutant latest-vertex-only caught at seed +{}: {violation}",
        seed - 7_000_000
    );
}
