//! hark-perf: the load tester and the benchmark programs.
//!
//! What it is: programs that measure hark and report medians of repeated rounds, so numbers
//! from a shared, noisy machine can still be compared side by side. `hark-perf micro` times the
//! hot-path building blocks (wire codec, ownership map) in-process. What it is not: a test
//! suite; nothing here asserts a timing.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod load;
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
    /// Open-loop load test: talkers and listeners against a relay; latency, loss, reports.
    Run(Box<load::run::RunArgs>),
    /// Opens N authenticated idle sessions and reports the relay's memory per connection.
    Idle(load::idle::IdleArgs),
    /// Raises the load step by step and reports the knee (best deliveries/s within --p99-ms).
    Sweep(Box<load::sweep::SweepArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Micro(args) => micro::run(&args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string()),
        Command::Run(args) => load::cli::run(&args).map_err(|e| e.to_string()),
        Command::Sweep(args) => load::sweep::run(&args).map_err(|e| e.to_string()),
        Command::Idle(args) => load::cli::idle(&args).map_err(|e| e.to_string()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hark-perf: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
