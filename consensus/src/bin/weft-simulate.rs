//! `weft-simulate`: runs the seeded simulator over many seeds and prints one line per
//! failing seed (with the command that replays it) and a summary line. `weft simulate`
//! exposes the same options.
//!
//! ```text
//! weft-simulate --validators 4 --byzantine 1 --behaviour all --seeds 1000 --seed-base 0
//!               [--transactions 200] [--loss 0.02] [--partitions] [--crashes]
//!               [--faults] [--real-signatures]
//! ```

use std::process::ExitCode;

use weft_consensus::sim::{run_many, SimOptions};

#[allow(clippy::print_stdout)]
fn main() -> ExitCode {
    let options = match SimOptions::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("weft-simulate: {error}\n{}", SimOptions::USAGE);
            return ExitCode::from(2);
        }
    };
    let summary = run_many(&options, "weft-simulate", |line| println!("{line}"));
    if summary.violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
