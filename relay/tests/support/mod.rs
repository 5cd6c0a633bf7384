//! The relay's integration-test harness: real `hark-relay` processes on loopback, clients
//! from `hark_tools::client`, and strict checkers for what listeners hear.
//!
//! ```text
//!  test ──► RelayProcess::start(args) ──► hark-relay --listen 127.0.0.1:0 --admin 127.0.0.1:0
//!    │            │                                  --data-dir <temp> --cores … (args)
//!    │            └── waits for "hark-relay listening client=… admin=… shards=N" on stdout
//!    ├──► Client (talkers, listeners) ──► Heard::record(event) checks order, gaps, duplicates
//!    └──► sigterm_and_wait / kill9 / restart on the same data dir
//! ```
//!
//! Every wait has a deadline ([`WAIT`], [`STARTUP_WAIT`]) that is a safety net only: tests
//! wait for events, never for time to pass.

// Each test file uses a different part of the harness; what one file leaves unused is used
// by another.
#![allow(dead_code)]

pub mod admin;
pub mod bystanders;
pub mod cluster;
pub mod heard;
pub mod names;
pub mod process;
pub mod talk;

use std::time::Duration;

/// How long a test waits for an event it expects. A safety net for a stuck relay, far above
/// anything a working relay needs even on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a relay may take to print its listening line.
pub const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// How long a relay may take to exit after a signal.
pub const EXIT_WAIT: Duration = Duration::from_secs(30);

/// Relay flags that lift the talk rate limit, for tests that send frames faster than a
/// person speaks (the limit itself is tested in bad_input.rs).
pub const FAST_TALK: &[&str] = &[
    "--talk-frames-per-second-max",
    "60000",
    "--talk-burst-frames",
    "60000",
];

/// Relay flag for a short group-commit interval, so `stored` acks come quickly.
pub const QUICK_COMMITS: &[&str] = &["--commit-interval-ms", "2"];

/// The cores of a two-shard relay on this 2-core machine.
pub const TWO_SHARDS: &[&str] = &["--cores", "0,1"];

/// The core list of [`TWO_SHARDS`].
pub const TWO_SHARD_CORES: &[u16] = &[0, 1];

/// Joins flag lists into one argument list.
pub fn args(parts: &[&[&'static str]]) -> Vec<&'static str> {
    parts.iter().flat_map(|part| part.iter().copied()).collect()
}
