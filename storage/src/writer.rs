//! The write path: messages start, frames append, messages end, all in memory and without
//! waiting for disk; `poll_commit` hands out a block-padded batch, `commit_completed` turns
//! its outcome into durable acks.
//!
//! ```text
//! append ─► per-message chunk (one record, ≤ record_bytes_max, ≤ record_flush_ms old)
//!             │ full / due / message ends
//!             ▼
//!           pending  [commit header space][record][record]...   (≤ pending_bytes_max)
//!             │ poll_commit: interval elapsed or commit_bytes pend, none in flight
//!             ▼
//!           CommitBatch ─► I/O layer: pwrite + fdatasync ─► CommitDone ─► commit_completed
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use hark_core::{ConvId, MsgId};

use crate::error::StoreError;
use crate::format::{
    self, COMMIT_HEADER_BYTES, EndState, FRAME_LEN_BYTES, RECORD_HEADER_BYTES, RecordKind,
};
use crate::index::{IdMap, MessageEntry, MessageState};
use crate::store::Store;

/// Counts Writer instances, to make batch ids unique per process.
static STORE_INSTANCES: AtomicU64 = AtomicU64::new(1);

/// The flush queue holds at most this many deadlines per `open_messages_max` (one live entry
/// per open message, plus stale entries of chunks already flushed by size or end).
pub const FLUSH_QUEUE_PER_OPEN_MESSAGE: usize = 2;

/// Recycled batch buffers kept for reuse.
const BUFFER_POOL_MAX: usize = 4;
/// Recycled chunk buffers kept for reuse (one per recently ended message).
const CHUNK_POOL_MAX: usize = 1024;

/// A message being written.
#[derive(Debug)]
pub(crate) struct OpenMessage {
    /// The record being filled: header, frames prefix, frames. Empty when no frame waits.
    pub(crate) chunk: Vec<u8>,
    pub(crate) chunk_frames: u32,
    pub(crate) next_seq: u32,
    /// Bumped each time the chunk is flushed, so stale flush deadlines are recognised.
    pub(crate) generation: u32,
}

impl OpenMessage {
    /// An open message whose frames `0..next_seq` are on disk already (kept open by recovery).
    pub(crate) fn resumed_at(next_seq: u32) -> Self {
        Self {
            chunk: Vec::new(),
            chunk_frames: 0,
            next_seq,
            generation: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct FlushDue {
    pub(crate) due_us: u64,
    pub(crate) msg: MsgId,
    pub(crate) generation: u32,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum PendingKind {
    Start,
    Frames {
        first_seq: u32,
        count: u32,
    },
    End {
        frame_count: u32,
        duration_us: u64,
        state: EndState,
    },
}

/// A record in the pending buffer; `rel` is its offset after the commit header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingRecord {
    pub(crate) msg: MsgId,
    pub(crate) rel: u32,
    pub(crate) len: u32,
    pub(crate) kind: PendingKind,
}

#[derive(Debug)]
pub(crate) struct Inflight {
    pub(crate) id: u64,
    pub(crate) segment: u32,
    pub(crate) commit_seq: u64,
    /// File offset of the first record.
    pub(crate) records_offset: u64,
    pub(crate) records_bytes: usize,
    pub(crate) records: Vec<PendingRecord>,
    pub(crate) header_block: bool,
    pub(crate) end_offset: u64,
}

/// State of the write path.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) open: IdMap<MsgId, OpenMessage>,
    pub(crate) flush_queue: VecDeque<FlushDue>,
    /// `COMMIT_HEADER_BYTES` reserved, then records.
    pub(crate) pending: Vec<u8>,
    pub(crate) pending_records: Vec<PendingRecord>,
    pub(crate) inflight: Option<Inflight>,
    /// The segment commits go to.
    pub(crate) active: u32,
    /// Where the next commit goes in the active segment.
    pub(crate) next_offset: u64,
    /// Sequence number of the last durable commit of the active segment.
    pub(crate) commit_seq: u64,
    /// Whether the active segment's header block is durable.
    pub(crate) header_durable: bool,
    pub(crate) last_commit_us: u64,
    /// Roll the active segment at the next commit (operator request).
    pub(crate) seal_requested: bool,
    /// The spare file the active segment was rolled into, until its first commit (which
    /// renames it into place) is durable.
    pub(crate) adopt_spare: Option<std::path::PathBuf>,
    pub(crate) buffers: Vec<Vec<u8>>,
    pub(crate) records_spare: Vec<PendingRecord>,
    pub(crate) chunk_pool: Vec<Vec<u8>>,
    pub(crate) batches: u64,
}

impl Writer {
    pub(crate) fn new(
        active: u32,
        next_offset: u64,
        commit_seq: u64,
        header_durable: bool,
    ) -> Self {
        Self {
            open: IdMap::default(),
            flush_queue: VecDeque::new(),
            pending: vec![0; COMMIT_HEADER_BYTES],
            pending_records: Vec::new(),
            inflight: None,
            active,
            next_offset,
            commit_seq,
            header_durable,
            last_commit_us: 0,
            seal_requested: false,
            adopt_spare: None,
            buffers: Vec::new(),
            records_spare: Vec::new(),
            chunk_pool: Vec::new(),
            // Batch ids are unique across the stores of a process, so a batch handed to the
            // wrong store is refused.
            batches: STORE_INSTANCES.fetch_add(1, Ordering::Relaxed) << 32,
        }
    }

    /// Record bytes waiting for a commit (not counting the batch in flight).
    pub fn pending_bytes(&self) -> usize {
        self.pending.len() - COMMIT_HEADER_BYTES
    }

    pub(crate) fn reserve(&self, bytes: usize, max: usize) -> Result<(), StoreError> {
        let pending = self.pending_bytes();
        if pending + bytes > max {
            return Err(StoreError::CommitBacklogFull { pending, max });
        }
        Ok(())
    }

    pub(crate) fn push_record(&mut self, start: usize, msg: MsgId, kind: PendingKind) {
        self.pending_records.push(PendingRecord {
            msg,
            rel: (start - COMMIT_HEADER_BYTES) as u32,
            len: (self.pending.len() - start) as u32,
            kind,
        });
    }

    pub(crate) fn take_buffer(&mut self) -> Vec<u8> {
        let mut buf = self.buffers.pop().unwrap_or_default();
        buf.clear();
        buf
    }

    pub(crate) fn recycle_buffer(&mut self, buf: Vec<u8>) {
        if self.buffers.len() < BUFFER_POOL_MAX {
            self.buffers.push(buf);
        }
    }

    /// Frees one slot of the flush queue by flushing its oldest entry early (a smaller
    /// record, nothing lost). Fails only when the backlog is full.
    pub(crate) fn make_flush_room(&mut self, pending_max: usize) -> Result<(), StoreError> {
        let Some(due) = self.flush_queue.pop_front() else {
            return Ok(());
        };
        let current = self
            .open
            .get(&due.msg)
            .is_some_and(|o| o.generation == due.generation && o.chunk_frames > 0);
        let flushed = if current {
            self.flush_chunk(due.msg, pending_max)
        } else {
            Ok(())
        };
        if flushed.is_err() {
            self.flush_queue.push_front(due);
        }
        flushed
    }

    /// Moves a message's chunk into pending as a finished record.
    pub(crate) fn flush_chunk(&mut self, msg: MsgId, pending_max: usize) -> Result<(), StoreError> {
        let Some(open) = self.open.get(&msg) else {
            return Ok(());
        };
        if open.chunk_frames == 0 {
            return Ok(());
        }
        self.reserve(open.chunk.len(), pending_max)?;
        // Checked just above that the message is open.
        let Some(open) = self.open.get_mut(&msg) else {
            return Ok(());
        };
        let first_seq = open.next_seq - open.chunk_frames;
        let count = open.chunk_frames;
        let prefix = RECORD_HEADER_BYTES + 4;
        open.chunk[prefix..prefix + 2].copy_from_slice(&(count as u16).to_le_bytes());
        format::finish_record(&mut open.chunk, 0);
        let start = self.pending.len();
        self.pending.extend_from_slice(&open.chunk);
        open.chunk.clear();
        open.chunk_frames = 0;
        open.generation = open.generation.wrapping_add(1);
        self.push_record(start, msg, PendingKind::Frames { first_seq, count });
        Ok(())
    }
}

/// What `append` did with a frame.
pub use hark_core::shard::Appended;

impl Store {
    /// Starts message `msg` of conversation `conv`. In memory only; the Start record becomes
    /// durable with the next commit. `codec` is opaque codec metadata (e.g. the OpusHead).
    pub fn start_message(
        &mut self,
        msg: MsgId,
        conv: ConvId,
        sender: &[u8],
        codec: &[u8],
    ) -> Result<(), StoreError> {
        self.writable()?;
        let limits = &self.config;
        if sender.len() > limits.sender_bytes_max {
            return Err(StoreError::HeaderTooLarge {
                field: "sender",
                len: sender.len(),
                max: limits.sender_bytes_max,
            });
        }
        if codec.len() > limits.codec_bytes_max {
            return Err(StoreError::HeaderTooLarge {
                field: "codec",
                len: codec.len(),
                max: limits.codec_bytes_max,
            });
        }
        if self.writer.open.len() >= limits.open_messages_max {
            return Err(StoreError::TooManyOpenMessages {
                max: limits.open_messages_max,
            });
        }
        if self.index.messages.contains_key(&msg) {
            return Err(StoreError::MessageExists(msg));
        }
        let w = &mut self.writer;
        w.reserve(
            format::start_record_bytes(sender, codec),
            limits.pending_bytes_max,
        )?;
        let start = w.pending.len();
        format::encode_start(&mut w.pending, msg, conv, sender, codec);
        w.push_record(start, msg, PendingKind::Start);
        let chunk = w.chunk_pool.pop().unwrap_or_default();
        w.open.insert(
            msg,
            OpenMessage {
                chunk,
                chunk_frames: 0,
                next_seq: 0,
                generation: 0,
            },
        );
        self.index
            .insert(msg, MessageEntry::new(conv, sender, codec));
        if self.newest_msg.is_none_or(|n| msg > n) {
            self.newest_msg = Some(msg);
        }
        Ok(())
    }

    /// Appends frame `seq` of an open message. Sequence numbers start at 0 and must follow
    /// each other; a number already stored is a [`Appended::Duplicate`]. The frame is copied
    /// once into the message's record buffer; nothing waits for disk.
    pub fn append(&mut self, msg: MsgId, seq: u32, frame: &[u8]) -> Result<Appended, StoreError> {
        let frame_max = self.config.frame_bytes_max;
        if frame.len() > frame_max {
            return Err(StoreError::FrameTooLarge {
                len: frame.len(),
                max: frame_max,
            });
        }
        let record_max = self.config.record_bytes_max;
        let pending_max = self.config.pending_bytes_max;
        let flush_queue_max = self
            .config
            .open_messages_max
            .saturating_mul(FLUSH_QUEUE_PER_OPEN_MESSAGE);
        let due_us = self
            .now_us
            .saturating_add(self.config.record_flush_ms.saturating_mul(1000));
        let w = &mut self.writer;
        let open = w.open.get(&msg).ok_or(StoreError::MessageNotOpen(msg))?;
        if seq < open.next_seq {
            return Ok(Appended::Duplicate);
        }
        if seq > open.next_seq {
            return Err(StoreError::SequenceGap {
                msg,
                expected: open.next_seq,
                got: seq,
            });
        }
        let full = open.chunk_frames > 0
            && (open.chunk.len() + FRAME_LEN_BYTES + frame.len() > record_max
                || open.chunk_frames >= u32::from(u16::MAX));
        if full {
            w.flush_chunk(msg, pending_max)?;
        }
        let starts_chunk = w.open.get(&msg).is_some_and(|o| o.chunk_frames == 0);
        if starts_chunk && w.flush_queue.len() >= flush_queue_max {
            w.make_flush_room(pending_max)?;
        }
        // The message was found open above and flush_chunk does not remove it.
        let Some(open) = w.open.get_mut(&msg) else {
            return Err(StoreError::MessageNotOpen(msg));
        };
        if open.chunk_frames == 0 {
            open.chunk.clear();
            format::begin_record(&mut open.chunk, RecordKind::Frames, 0, msg);
            open.chunk.extend_from_slice(&seq.to_le_bytes());
            open.chunk.extend_from_slice(&[0; 4]);
            w.flush_queue.push_back(FlushDue {
                due_us,
                msg,
                generation: open.generation,
            });
        }
        open.chunk
            .extend_from_slice(&(frame.len() as u16).to_le_bytes());
        open.chunk.extend_from_slice(frame);
        open.chunk_frames += 1;
        open.next_seq += 1;
        Ok(Appended::Stored)
    }

    /// Ends an open message at `now_us`. Its last frames and End record become durable with
    /// the next commit, reported in [`CommitAcks::ended`](crate::CommitAcks::ended).
    pub fn end_message(
        &mut self,
        msg: MsgId,
        now_us: u64,
        state: EndState,
    ) -> Result<(), StoreError> {
        let pending_max = self.config.pending_bytes_max;
        let w = &mut self.writer;
        let open = w.open.get(&msg).ok_or(StoreError::MessageNotOpen(msg))?;
        let chunk_bytes = if open.chunk_frames > 0 {
            open.chunk.len()
        } else {
            0
        };
        w.reserve(chunk_bytes + format::END_RECORD_BYTES, pending_max)?;
        w.flush_chunk(msg, pending_max)?;
        let Some(open) = w.open.remove(&msg) else {
            return Err(StoreError::MessageNotOpen(msg));
        };
        if w.chunk_pool.len() < CHUNK_POOL_MAX {
            let mut chunk = open.chunk;
            chunk.clear();
            w.chunk_pool.push(chunk);
        }
        let duration_us = now_us.saturating_sub(msg.start_us());
        let kind = PendingKind::End {
            frame_count: open.next_seq,
            duration_us,
            state,
        };
        let start = w.pending.len();
        format::encode_end(&mut w.pending, msg, open.next_seq, duration_us, state);
        w.push_record(start, msg, kind);
        if let Some(entry) = self.index.messages.get_mut(&msg) {
            entry.frames_appended = open.next_seq;
            entry.state = MessageState::Ended(state);
            entry.duration_us = Some(duration_us);
        }
        Ok(())
    }

    /// Queues End(truncated) records for messages recovery found cut by a crash.
    pub(crate) fn queue_recovery_ends(&mut self, msgs: &[MsgId]) -> Result<(), StoreError> {
        for &msg in msgs {
            let Some(entry) = self.index.messages.get(&msg) else {
                continue;
            };
            let frame_count = entry.frames_durable;
            let w = &mut self.writer;
            w.reserve(format::END_RECORD_BYTES, self.config.pending_bytes_max)?;
            let start = w.pending.len();
            format::encode_end(&mut w.pending, msg, frame_count, 0, EndState::Truncated);
            w.push_record(
                start,
                msg,
                PendingKind::End {
                    frame_count,
                    duration_us: 0,
                    state: EndState::Truncated,
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use hark_core::{ConvId, MsgId, ShardId};

    use super::FLUSH_QUEUE_PER_OPEN_MESSAGE;
    use crate::{EndState, Store, StoreConfig};

    #[test]
    fn the_flush_queue_stays_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            open_messages_max: 4,
            frame_bytes_max: 100,
            record_bytes_max: 200,
            ..StoreConfig::default()
        };
        let shard = ShardId::new(1, 0);
        let (mut store, _) = Store::open(dir.path(), shard, config, 0).unwrap();
        let bound = 4 * FLUSH_QUEUE_PER_OPEN_MESSAGE;
        let mut longest = 0;
        // Short messages with size-flushed records leave stale deadlines behind.
        for n in 0..50u32 {
            let msg = MsgId::from_parts(1_000 + u64::from(n), shard, n);
            store.start_message(msg, ConvId(1), b"", b"").unwrap();
            for seq in 0..7 {
                store.append(msg, seq, &[seq as u8; 90]).unwrap();
                longest = longest.max(store.writer.flush_queue.len());
            }
            store.end_message(msg, 2_000, EndState::Complete).unwrap();
        }
        assert_eq!(
            longest, bound,
            "the queue filled up to its bound and no further"
        );
    }
}
