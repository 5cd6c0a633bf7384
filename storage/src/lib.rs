//! hark-storage: the body store and header index of one shard.
//!
//! What it is: the durable record of every message a shard owns: append-only segment files of
//! checksummed records, group commit, recovery after a crash, replay from any frame, retention.
//!
//! What it is not: it does not relay, route or authenticate. It never decides *when* to commit;
//! the caller drives it with explicit time so the shard thread stays in charge.
