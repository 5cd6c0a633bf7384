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
use std::fs::OpenOptions;
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};

use hark_core::{ConvId, MsgId};

use crate::commit::{CommitAcks, CommitBatch, CommitDone, DurableAck, HintWrite};
use crate::error::StoreError;
use crate::format::{
    self, BLOCK_BYTES, COMMIT_HEADER_BYTES, CommitHeader, EndState, FORMAT_VERSION,
    FRAME_LEN_BYTES, RECORD_HEADER_BYTES, RecordKind, SegmentHeader,
};
use crate::hint::SegmentHint;
use crate::index::{ChunkLoc, IdMap, MessageEntry, MessageState};
use crate::segment::{RecordSummary, hint_file_name, segment_path};
use crate::store::{SegmentFile, Store};

/// Counts Writer instances, to make batch ids unique per process.
static STORE_INSTANCES: AtomicU64 = AtomicU64::new(1);

/// Recycled batch buffers kept for reuse.
const BUFFER_POOL_MAX: usize = 4;
/// Recycled chunk buffers kept for reuse (one per recently ended message).
const CHUNK_POOL_MAX: usize = 1024;

/// A message being written.
#[derive(Debug)]
pub(crate) struct OpenMessage {
    /// The record being filled: header, frames prefix, frames. Empty when no frame waits.
    chunk: Vec<u8>,
    chunk_frames: u32,
    next_seq: u32,
    /// Bumped each time the chunk is flushed, so stale flush deadlines are recognised.
    generation: u32,
}

#[derive(Debug, Clone, Copy)]
struct FlushDue {
    due_us: u64,
    msg: MsgId,
    generation: u32,
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
    msg: MsgId,
    rel: u32,
    len: u32,
    kind: PendingKind,
}

#[derive(Debug)]
struct Inflight {
    id: u64,
    segment: u32,
    commit_seq: u64,
    /// File offset of the first record.
    records_offset: u64,
    records_bytes: usize,
    records: Vec<PendingRecord>,
    header_block: bool,
    end_offset: u64,
}

/// State of the write path.
#[derive(Debug)]
pub(crate) struct Writer {
    pub open: IdMap<MsgId, OpenMessage>,
    flush_queue: VecDeque<FlushDue>,
    /// `COMMIT_HEADER_BYTES` reserved, then records.
    pending: Vec<u8>,
    pending_records: Vec<PendingRecord>,
    inflight: Option<Inflight>,
    /// The segment commits go to.
    pub active: u32,
    /// Where the next commit goes in the active segment.
    pub next_offset: u64,
    /// Sequence number of the last durable commit of the active segment.
    pub commit_seq: u64,
    /// Whether the active segment's header block is durable.
    pub header_durable: bool,
    last_commit_us: u64,
    /// Roll the active segment at the next commit (operator request).
    seal_requested: bool,
    buffers: Vec<Vec<u8>>,
    records_spare: Vec<PendingRecord>,
    chunk_pool: Vec<Vec<u8>>,
    batches: u64,
}

impl Writer {
    pub fn new(active: u32, next_offset: u64, commit_seq: u64, header_durable: bool) -> Self {
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

    fn reserve(&self, bytes: usize, max: usize) -> Result<(), StoreError> {
        let pending = self.pending_bytes();
        if pending + bytes > max {
            return Err(StoreError::CommitBacklogFull { pending, max });
        }
        Ok(())
    }

    fn push_record(&mut self, start: usize, msg: MsgId, kind: PendingKind) {
        self.pending_records.push(PendingRecord {
            msg,
            rel: (start - COMMIT_HEADER_BYTES) as u32,
            len: (self.pending.len() - start) as u32,
            kind,
        });
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        let mut buf = self.buffers.pop().unwrap_or_default();
        buf.clear();
        buf
    }

    fn recycle_buffer(&mut self, buf: Vec<u8>) {
        if self.buffers.len() < BUFFER_POOL_MAX {
            self.buffers.push(buf);
        }
    }

    /// Moves a message's chunk into pending as a finished record.
    fn flush_chunk(&mut self, msg: MsgId, pending_max: usize) -> Result<(), StoreError> {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The frame is stored (in memory; durable after a commit).
    Stored,
    /// A frame with this sequence number was stored before (a resumed talker resent it);
    /// nothing changed.
    Duplicate,
}

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
        if let Some(entry) = self.index.messages.get_mut(&msg) {
            entry.frames_appended = open.next_seq;
        }
        Ok(Appended::Stored)
    }

    /// Ends an open message at `now_us`. Its last frames and End record become durable with
    /// the next commit, reported in [`CommitAcks::ended`].
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

    /// The earliest time `poll_commit` has work: a record due for flushing or a commit due.
    /// The shard sets its timer to it.
    pub fn next_wakeup_us(&self) -> Option<u64> {
        let w = &self.writer;
        let flush = w.flush_queue.front().map(|f| f.due_us);
        let commit = if w.pending_records.is_empty() || w.inflight.is_some() {
            None
        } else {
            Some(w.last_commit_us + self.config.commit_interval_ms * 1000)
        };
        match (flush, commit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Seals the active segment at the next commit, so everything committed so far becomes
    /// an immutable file with a hint (e.g. before archiving it). No effect on a segment that
    /// has no commit yet.
    pub fn seal_on_next_commit(&mut self) {
        self.writer.seal_requested = true;
    }

    /// Record bytes waiting for a commit.
    pub fn pending_bytes(&self) -> usize {
        self.writer.pending_bytes()
    }

    /// Whether a batch is out with the I/O layer.
    pub fn commit_in_flight(&self) -> bool {
        self.writer.inflight.is_some()
    }

    /// Flushes records that are due, and hands out a commit when `commit_interval_ms` has
    /// passed since the last one or `commit_bytes` pend, and none is in flight. Errors only
    /// when a new segment file cannot be created (the batch stays pending; retry later).
    pub fn poll_commit(&mut self, now_us: u64) -> Result<Option<CommitBatch>, StoreError> {
        self.now_us = self.now_us.max(now_us);
        self.flush_due_chunks(now_us);
        let w = &self.writer;
        if self.read_only || w.inflight.is_some() || w.pending_records.is_empty() {
            return Ok(None);
        }
        let interval_us = self.config.commit_interval_ms.saturating_mul(1000);
        if now_us < w.last_commit_us.saturating_add(interval_us)
            && w.pending_bytes() < self.config.commit_bytes
        {
            return Ok(None);
        }
        self.form_batch(now_us).map(Some)
    }

    fn flush_due_chunks(&mut self, now_us: u64) {
        let pending_max = self.config.pending_bytes_max;
        let w = &mut self.writer;
        while let Some(due) = w.flush_queue.front().copied() {
            if due.due_us > now_us {
                break;
            }
            let current = w
                .open
                .get(&due.msg)
                .is_some_and(|o| o.generation == due.generation && o.chunk_frames > 0);
            if current && w.flush_chunk(due.msg, pending_max).is_err() {
                break; // backlog full: leave it queued, appends report the condition
            }
            w.flush_queue.pop_front();
        }
    }

    fn form_batch(&mut self, now_us: u64) -> Result<CommitBatch, StoreError> {
        let records_bytes = self.writer.pending_bytes();
        let blocks = format::commit_blocks(records_bytes);
        let commit_len = (blocks * BLOCK_BYTES) as u64;
        let hint = self.roll_if_due(now_us, commit_len)?;
        let w = &mut self.writer;
        let header_block = !w.header_durable;
        let segment = w.active;
        let seg = self
            .segments
            .get(&segment)
            .ok_or(StoreError::BatchUnknown)?;
        let file = seg.file.clone();
        let created_us = seg.created_us;
        let mut buf = if header_block {
            let mut buf = w.take_buffer();
            SegmentHeader {
                version: FORMAT_VERSION,
                segment,
                host: self.shard.host.0,
                core: self.shard.core,
                created_us,
            }
            .encode_block(&mut buf);
            buf.extend_from_slice(&w.pending);
            buf
        } else {
            let fresh = w.take_buffer();
            mem::replace(&mut w.pending, fresh)
        };
        w.pending.clear();
        w.pending.resize(COMMIT_HEADER_BYTES, 0);
        let head = if header_block { BLOCK_BYTES } else { 0 };
        let offset = if header_block { 0 } else { w.next_offset };
        let commit_seq = if header_block { 1 } else { w.commit_seq + 1 };
        let records = mem::replace(&mut w.pending_records, mem::take(&mut w.records_spare));
        CommitHeader {
            segment,
            commit_seq,
            records_bytes: records_bytes as u32,
            record_count: records.len() as u32,
            blocks: blocks as u32,
        }
        .encode_into(&mut buf[head..head + COMMIT_HEADER_BYTES]);
        buf.resize(head + blocks * BLOCK_BYTES, 0);
        w.batches += 1;
        let id = w.batches;
        w.inflight = Some(Inflight {
            id,
            segment,
            commit_seq,
            records_offset: offset + (head + COMMIT_HEADER_BYTES) as u64,
            records_bytes,
            records,
            header_block,
            end_offset: offset + buf.len() as u64,
        });
        w.last_commit_us = now_us;
        Ok(CommitBatch {
            id,
            segment,
            file,
            path: segment_path(&self.dir, segment),
            offset,
            buf,
            sync_dir: header_block.then(|| self.dir.clone()),
            hint,
        })
    }

    /// Seals the active segment and creates the next one when the next commit would pass
    /// `segment_bytes_max` or the segment is older than `segment_age_ms_max`.
    fn roll_if_due(
        &mut self,
        now_us: u64,
        commit_len: u64,
    ) -> Result<Option<HintWrite>, StoreError> {
        let w = &self.writer;
        if !w.header_durable || w.commit_seq == 0 {
            return Ok(None);
        }
        let Some(seg) = self.segments.get(&w.active) else {
            return Ok(None);
        };
        let age_us = now_us.saturating_sub(seg.created_us);
        let too_big = w.next_offset + commit_len > self.config.segment_bytes_max;
        let too_old = age_us >= self.config.segment_age_ms_max.saturating_mul(1000);
        if !too_big && !too_old && !w.seal_requested {
            return Ok(None);
        }
        let next = w.active + 1;
        let path = segment_path(&self.dir, next);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io("create segment", &path, e))?;
        let old = w.active;
        let old_bytes = w.next_offset;
        let hint = self.segments.get_mut(&old).map(|seg| {
            seg.sealed = true;
            SegmentHint {
                segment: old,
                segment_bytes: old_bytes,
                created_us: seg.created_us,
                records: mem::take(&mut seg.summaries),
            }
        });
        self.segments
            .insert(next, SegmentFile::new(file, now_us, 0, false));
        let w = &mut self.writer;
        w.active = next;
        w.seal_requested = false;
        w.next_offset = 0;
        w.commit_seq = 0;
        w.header_durable = false;
        // A hint that cannot be encoded is skipped: the segment is rescanned on next open.
        Ok(hint.and_then(|h| h.encode().ok()).map(|bytes| HintWrite {
            path: self.dir.join(hint_file_name(old)),
            bytes,
        }))
    }

    /// Takes the outcome of the batch in flight. On success returns what became durable; on
    /// failure nothing is acknowledged, the batch's records go back to pending (the next
    /// commit rewrites them at the same offset) and the error says why.
    pub fn commit_completed(&mut self, done: CommitDone) -> Result<CommitAcks, StoreError> {
        let matches = self
            .writer
            .inflight
            .as_ref()
            .is_some_and(|i| i.id == done.batch.id);
        if !matches {
            return Err(StoreError::BatchUnknown);
        }
        let Some(inflight) = self.writer.inflight.take() else {
            return Err(StoreError::BatchUnknown);
        };
        let CommitDone {
            batch,
            result,
            hint_result,
        } = done;
        if let Err(error) = result {
            self.restore_failed(inflight, batch.buf);
            return Err(StoreError::commit(error));
        }
        let bytes_written = batch.buf.len();
        self.writer.recycle_buffer(batch.buf);
        let mut acks = CommitAcks {
            bytes_written,
            hint_error: hint_result.and_then(Result::err),
            ..CommitAcks::default()
        };
        self.apply_durable(&inflight, &mut acks);
        let w = &mut self.writer;
        w.next_offset = inflight.end_offset;
        w.commit_seq = inflight.commit_seq;
        w.header_durable = true;
        let mut records = inflight.records;
        records.clear();
        w.records_spare = records;
        Ok(acks)
    }

    fn apply_durable(&mut self, inflight: &Inflight, acks: &mut CommitAcks) {
        let segment = inflight.segment;
        let Some(seg) = self.segments.get_mut(&segment) else {
            return;
        };
        seg.bytes = inflight.end_offset;
        for rec in &inflight.records {
            let Some(entry) = self.index.messages.get_mut(&rec.msg) else {
                continue;
            };
            let offset = (inflight.records_offset + u64::from(rec.rel)) as u32;
            let msg = rec.msg.0;
            match rec.kind {
                PendingKind::Start => {
                    entry.start_segment = Some(segment);
                    seg.started.push(rec.msg);
                    seg.summaries.push(RecordSummary::Start {
                        msg,
                        offset,
                        conv: entry.conv.0,
                        sender: entry.sender.to_vec(),
                        codec: entry.codec.to_vec(),
                    });
                }
                PendingKind::Frames { first_seq, count } => {
                    entry.chunks.push(ChunkLoc {
                        segment,
                        offset,
                        len: rec.len,
                        first_seq,
                    });
                    entry.frames_durable = first_seq + count;
                    if entry.ack_mark != inflight.id {
                        entry.ack_mark = inflight.id;
                        acks.durable.push(DurableAck {
                            msg: rec.msg,
                            durable_through_seq: 0,
                        });
                    }
                    seg.summaries.push(RecordSummary::Frames {
                        msg,
                        offset,
                        len: rec.len,
                        first_seq,
                        count,
                    });
                }
                PendingKind::End {
                    frame_count,
                    duration_us,
                    state,
                } => {
                    entry.end_durable = true;
                    acks.ended.push((rec.msg, state));
                    seg.summaries.push(RecordSummary::End {
                        msg,
                        frame_count,
                        duration_us,
                        truncated: state == EndState::Truncated,
                    });
                }
            }
        }
        for ack in &mut acks.durable {
            if let Some(entry) = self.index.messages.get(&ack.msg) {
                ack.durable_through_seq = entry.frames_durable.saturating_sub(1);
            }
        }
    }

    fn restore_failed(&mut self, inflight: Inflight, failed: Vec<u8>) {
        let w = &mut self.writer;
        let head = if inflight.header_block {
            BLOCK_BYTES
        } else {
            0
        };
        let failed_records = &failed[head + COMMIT_HEADER_BYTES..][..inflight.records_bytes];
        let mut rebuilt = w.take_buffer();
        rebuilt.resize(COMMIT_HEADER_BYTES, 0);
        rebuilt.extend_from_slice(failed_records);
        rebuilt.extend_from_slice(&w.pending[COMMIT_HEADER_BYTES..]);
        let old_pending = mem::replace(&mut w.pending, rebuilt);
        w.recycle_buffer(old_pending);
        w.recycle_buffer(failed);
        let shift = inflight.records_bytes as u32;
        let mut records = inflight.records;
        records.extend(w.pending_records.drain(..).map(|mut r| {
            r.rel += shift;
            r
        }));
        w.pending_records = records;
        // The retry must not wait for the interval: the caller decides when to retry.
        w.last_commit_us = 0;
    }
}
