//! `weft-simulate`: runs the seeded simulator over many seeds and prints one line per
//! failing seed (with the command that replays it) and a summary line. `weft simulate`
//! will expose the same once the node exists.
//!
//! ```text
//! weft-simulate --validators 4 --seeds 1000 --seed-base 0 [--transactions 200] [--real-signatures]
//! ```

use std::process::ExitCode;

use weft_consensus::sim::{run, SimConfig};

struct Arguments {
    validators: usize,
    seeds: u64,
    seed_base: u64,
    transactions: usize,
    real_signatures: bool,
}

fn parse() -> Result<Arguments, String> {
    let mut arguments = Arguments {
        validators: 4,
        seeds: 100,
        seed_base: 0,
        transactions: 200,
        real_signatures: false,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        if flag == "--real-signatures" {
            arguments.real_signatures = true;
            continue;
        }
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |name: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{name} takes a whole number, got {value:?}"))
        };
        match flag.as_str() {
            "--validators" => {
                arguments.validators =
                    usize::try_from(number("--validators")?).map_err(|e| e.to_string())?
            }
            "--seeds" => arguments.seeds = number("--seeds")?,
            "--seed-base" => arguments.seed_base = number("--seed-base")?,
            "--transactions" => {
                arguments.transactions =
                    usize::try_from(number("--transactions")?).map_err(|e| e.to_string())?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if arguments.validators < 4 {
        return Err("--validators must be at least 4".into());
    }
    Ok(arguments)
}

#[allow(clippy::print_stdout)]
fn main() -> ExitCode {
    let arguments = match parse() {
        Ok(arguments) => arguments,
        Err(error) => {
            eprintln!("weft-simulate: {error}");
            return ExitCode::from(2);
        }
    };
    let mut violations = 0;
    let mut min_finalized = u64::MAX;
    let mut max_view = 0;
    let mut latency_sum = 0.0;
    let mut final_sum = 0;
    let mut elapsed_sum = 0;
    for seed in arguments.seed_base..arguments.seed_base + arguments.seeds {
        let mut config = SimConfig::new(arguments.validators, seed);
        config.transactions = arguments.transactions;
        config.real_signatures = arguments.real_signatures;
        let report = run(&config);
        if !report.violations.is_empty() {
            violations += 1;
            println!(
                "seed {seed}: {} -- replay: weft-simulate --validators {} --seeds 1 --seed-base {seed} --transactions {}{}",
                report.violations.join("; "),
                arguments.validators,
                arguments.transactions,
                if arguments.real_signatures { " --real-signatures" } else { "" },
            );
        }
        min_finalized = min_finalized.min(report.min_finalized);
        max_view = max_view.max(report.max_view);
        latency_sum += report.mean_latency_ms;
        final_sum += report.submitted;
        elapsed_sum += report.elapsed_ms;
    }
    let seeds = arguments.seeds.max(1) as f64;
    println!(
        "simulate: mean finality latency {:.1} ms (simulated), {:.0} tx/s of simulated time",
        latency_sum / seeds,
        final_sum as f64 / (elapsed_sum.max(1) as f64 / 1000.0)
    );
    println!(
        "simulate: seeds={} violations={violations} min_finalized={} max_view={max_view}",
        arguments.seeds,
        if min_finalized == u64::MAX {
            0
        } else {
            min_finalized
        }
    );
    if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
