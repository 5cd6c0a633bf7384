//! The load tester: open-loop talkers and listeners against a hark relay (or Redis Streams),
//! with latency, loss, duplicate and reorder accounting. See docs/perf.md.

pub mod cli;
pub mod hark;
pub mod html;
pub mod idle;
pub mod payload;
pub mod procstat;
pub mod redis_target;
pub mod report;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod sweep;
pub mod tracker;
pub mod wire;
