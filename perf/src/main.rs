//! hark-perf: the load tester and the benchmark programs.
//!
//! What it is: programs that measure hark and report medians of repeated rounds, so numbers
//! from a shared, noisy machine can still be compared side by side. `hark-perf micro` times the
//! hot-path building blocks (wire codec, ownership map) in-process. What it is not: a test
//! suite; nothing here asserts a timing.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod micro;

#[derive(Debug, Parser)]
#[command(
    name = "hark-perf",
    version,
    about = "hark's load tester and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Times the hot-path building blocks in-process: frame decode and encode, owner lookup.
    Micro(micro::MicroArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Micro(args) => micro::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hark-perf: {e}");
            ExitCode::FAILURE
        }
    }
}
