//! hark-relay: the thread-per-core relay server.
//!
//! What it is: the runtime glue around hark-core's shard logic: sockets, timers, the store's
//! I/O and the queues between cores. What it is not: protocol or ownership logic, which live in
//! hark-core, or the on-disk format, which lives in hark-storage.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "hark-relay {}: the serving loop is not in this build; nothing was started",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
