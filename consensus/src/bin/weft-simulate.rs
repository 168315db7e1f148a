//! `weft-simulate`: runs the seeded simulator over many seeds and prints one line per
//! failing seed (with the command that replays it) and a summary line. `weft simulate`
//! exposes the same options; `--help` lists every flag, behaviour and mutant.
//!
//! ```text
//! weft-simulate --validators 4 --byzantine 1 --behaviour all --seeds 1000 --seed-base 0
//!               [--transactions 200] [--load-ms 2000] [--loss 0.02] [--partitions]
//!               [--crashes] [--cut-crashes] [--wipes] [--targeted] [--faults]
//!               [--real-signatures] [--mutant NAME]
//! ```

use std::process::ExitCode;

use weft_consensus::sim::{run_many, SimCommand, SimOptions};

#[allow(clippy::print_stdout)]
fn main() -> ExitCode {
    let options = match SimOptions::parse_command(std::env::args().skip(1)) {
        Ok(SimCommand::Run(options)) => options,
        Ok(SimCommand::Help) => {
            println!("{}", SimOptions::usage());
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("weft-simulate: {error}\n{}", SimOptions::usage());
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
