//! Seeded simulations of the normal case (ARCHITECTURE.md, "What must always hold":
//! agreement, integrity, liveness) under delay, reordering and duplication.
//! `WEFT_SIM_SEEDS` raises the number of seeds per configuration (default 20).

use weft_consensus::sim::{check_agreement, run, SimConfig};

fn seeds() -> u64 {
    std::env::var("WEFT_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn assert_clean(config: &SimConfig) -> weft_consensus::sim::SimReport {
    let report = run(config);
    assert!(
        report.violations.is_empty(),
        "seed {} (n={}): {:?}",
        config.seed,
        config.validators,
        report.violations
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
