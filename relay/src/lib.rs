//! hark-relay: the thread-per-core relay server's runtime glue.
//!
//! What it is: sockets, timers, the store's I/O and the queues between cores, around the
//! sans-IO shard logic of hark-core. What it is not: protocol or ownership logic (hark-core) or
//! the on-disk format (hark-storage).
//!
//! ```text
//!  shard 0 thread (core 0)                 shard 1 thread (core 1)
//!  ┌──────────────────────┐   mesh SPSC    ┌──────────────────────┐
//!  │ sockets ─► shard ─►──┼──────────────► │ inbox ─► shard ─► …  │
//!  │ logic  ◄── inbox ◄───┼─────────────── │ ◄── outbox           │
//!  └──────────────────────┘   doorbell     └──────────────────────┘
//! ```

pub mod config;
pub mod mesh;
pub mod secret;
