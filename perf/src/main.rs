//! hark-perf: the load tester and the benchmark programs.
//!
//! What it is: programs that measure hark (micro-benchmarks of the hot path, load runs against a
//! relay) and report medians. What it is not: a test suite; nothing here asserts a timing.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "hark-perf {}: no commands are in this build",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
