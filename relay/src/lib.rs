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
//!
//! | module | concept |
//! |---|---|
//! | `runtime` | shard threads, connections, timers, commits, start-up and drain |
//! | `mesh` | the bounded SPSC queues between shards, with doorbells |
//! | `store` | the shard's body store: its own store plus the archive of other directories |
//! | `signals` | SIGTERM / SIGINT as events |
//! | `config`, `secret` | flags and TOML config, the secret file bootstrap |
//! | `metrics`, `admin` | per-shard statistics and the Prometheus / health endpoint |

pub mod admin;
pub mod cluster;
pub mod config;
pub mod mesh;
pub mod metrics;
pub mod runtime;
pub mod secret;
pub mod signals;
pub mod store;
