//! hark: the client and operator command line.
//!
//! What it is: talk, listen, history, tokens, ring and store inspection, status, all through
//! hark-core's client library over plain sockets. What it is not: a relay; it holds no state
//! between runs beyond what is on disk.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "hark {}: no commands are in this build",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
