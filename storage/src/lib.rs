//! hark-storage: the body store and header index of one shard.
//!
//! What it is: the durable record of every message a shard owns: append-only segment files of
//! checksummed records, group commit, recovery after a crash, replay from any frame, retention.
//!
//! What it is not: it does not relay, route or authenticate. It never decides *when* to commit;
//! the caller drives it with explicit time so the shard thread stays in charge. The in-memory
//! calls never touch the disk; the disk work is in [`io::Committer`].
//!
//! ```text
//!  shard thread (sans-IO)                                   I/O layer (io.rs)
//!  start_message / append / end_message ─► records pending
//!  poll_commit(now_us) ─────────────────► CommitBatch ─► Committer::commit (ring or sync thread)
//!  commit_completed(done) ◄──────────────────────────── CommitDone
//!      └─► CommitAcks { durable: (MsgId, durable_through_seq), ended }  ─► stored-acks
//!  replay_from / replay_next ─► frames (pread, checksummed) + where live begins
//!  timeline(conv, since | after, limit) ─► MessageHeader
//!  apply_retention(now_us) ─► RetentionPlan (whole sealed segments) ─► Committer::remove_files_later
//! ```
//!
//! Segments are preallocated (`StoreConfig::preallocate_segments`): the committer's
//! housekeeping thread writes the next segment file with zeros ahead of need and it travels to
//! the store with a commit result, so commits overwrite allocated blocks instead of growing the
//! file. Call [`Store::preallocate_open_segment`] once after [`Store::open`] for the first one.
//!
//! ```
//! use hark_core::{ConvId, MsgId, ShardId};
//! use hark_storage::{EndState, FrameBatch, ReplayStatus, Store, StoreConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let shard = ShardId::new(1, 0);
//! let (mut store, _report) = Store::open(dir.path(), shard, StoreConfig::default(), 0).unwrap();
//! let msg = MsgId::from_parts(1_000, shard, 0);
//! store.start_message(msg, ConvId(7), b"alice", b"OpusHead").unwrap();
//! store.append(msg, 0, b"frame zero").unwrap();
//! store.end_message(msg, 21_000, EndState::Complete).unwrap();
//! // The runtime would hand this to io::Committer; write_blocking does the same in place.
//! let batch = store.poll_commit(50_000).unwrap().expect("records pend");
//! let acks = store.commit_completed(batch.write_blocking()).unwrap();
//! assert_eq!(acks.durable[0].durable_through_seq, 0);
//!
//! let mut cursor = store.replay_from(msg, 0).unwrap();
//! let mut frames = FrameBatch::new();
//! let status = store.replay_next(&mut cursor, 64, &mut frames).unwrap();
//! assert_eq!(frames.iter().next(), Some((0, &b"frame zero"[..])));
//! assert_eq!(status, ReplayStatus::Ended { frame_count: 1, state: EndState::Complete });
//! ```

pub mod commit;
pub mod config;
pub mod dir;
pub mod error;
pub mod format;
mod group_commit;
pub mod hint;
pub mod housekeeping;
mod index;
pub mod io;
pub mod replay;
pub mod retention;
pub mod segment;
pub mod spare;
mod store;
mod writer;

pub use commit::{CommitAcks, CommitBatch, CommitDone, DurableAck};
pub use config::StoreConfig;
pub use dir::{
    find_shard_dirs, open_other_shards, parse_shard_dir_name, shard_dir, shard_dir_name,
};
pub use error::StoreError;
pub use format::EndState;
pub use index::{ChunkLoc, MessageState};
pub use io::{Committer, IoMode};
pub use replay::{FrameBatch, ReplayCursor, ReplayStatus};
pub use retention::RetentionPlan;
pub use segment::DroppedRange;
pub use spare::{SpareRequest, SpareSegment};
pub use store::{MessageHeader, OpenReport, Store, TIMELINE_LIMIT_MAX, TimelineFrom};
pub use writer::Appended;
