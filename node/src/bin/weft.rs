//! The `weft` validator binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    weft_node::cli::main(weft_node::cli::Cli::parse())
}
