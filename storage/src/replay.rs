//! Replay: the durable frames of a message from any sequence number, in bounded batches, and
//! where live begins.
//!
//! Reads are synchronous `pread`s on the shard thread. Replay mostly reads what was written
//! seconds or minutes ago, which is in the page cache, where a pread costs about a
//! microsecond and an io_uring round trip would cost more. A cold read of old history can
//! block the shard for one disk read per batch; batches are bounded
//! ([`REPLAY_FRAMES_MAX`], [`READ_SPAN_BYTES_MAX`]) so the stall is bounded too.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use hark_core::MsgId;

use crate::error::StoreError;
use crate::format::{Record, RecordKind};
use crate::index::MessageState;
use crate::segment::segment_path;
use crate::store::Store;

/// Most frames one `replay_next` call returns.
pub const REPLAY_FRAMES_MAX: usize = 4096;
/// Most bytes one read covers: neighbouring chunks of a message are read together up to this.
pub const READ_SPAN_BYTES_MAX: usize = 256 * 1024;

/// A reader's position in one message. While it exists, retention keeps the message.
#[derive(Debug, Clone)]
pub struct ReplayCursor {
    msg: MsgId,
    next_seq: u32,
    _pin: Arc<()>,
}

impl ReplayCursor {
    /// The message being replayed.
    pub fn msg(&self) -> MsgId {
        self.msg
    }
    /// The next frame the cursor will return.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }
}

/// Frames returned by one replay call, stored in one buffer (no allocation per frame once
/// warmed up). Reuse it across calls.
#[derive(Debug, Default)]
pub struct FrameBatch {
    data: Vec<u8>,
    frames: Vec<(u32, usize, usize)>,
    scratch: Vec<u8>,
}

impl FrameBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Frames in the batch.
    pub fn len(&self) -> usize {
        self.frames.len()
    }
    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
    /// `(seq, frame bytes)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.frames
            .iter()
            .map(|&(seq, from, to)| (seq, &self.data[from..to]))
    }
    fn clear(&mut self) {
        self.data.clear();
        self.frames.clear();
    }
    fn push(&mut self, seq: u32, frame: &[u8]) {
        let from = self.data.len();
        self.data.extend_from_slice(frame);
        self.frames.push((seq, from, self.data.len()));
    }
}

/// Where a replay stands after a call.
pub use hark_core::shard::ReplayStatus;

impl Store {
    /// A cursor on `msg` starting at frame `from_seq`.
    pub fn replay_from(&self, msg: MsgId, from_seq: u32) -> Result<ReplayCursor, StoreError> {
        let entry = self
            .index
            .messages
            .get(&msg)
            .ok_or(StoreError::MessageUnknown(msg))?;
        Ok(ReplayCursor {
            msg,
            next_seq: from_seq,
            _pin: entry.readers.clone(),
        })
    }

    /// Fills `out` (cleared first) with up to `frames_max` durable frames from the cursor on
    /// (at most [`REPLAY_FRAMES_MAX`]), byte-identical to what was appended, and advances
    /// the cursor. Every record read is checked against its checksum.
    pub fn replay_next(
        &self,
        cursor: &mut ReplayCursor,
        frames_max: usize,
        out: &mut FrameBatch,
    ) -> Result<ReplayStatus, StoreError> {
        out.clear();
        let msg = cursor.msg;
        let entry = self
            .index
            .messages
            .get(&msg)
            .ok_or(StoreError::MessageUnknown(msg))?;
        let frames_max = frames_max.clamp(1, REPLAY_FRAMES_MAX);
        while out.len() < frames_max && cursor.next_seq < entry.frames_durable {
            // chunks[0].first_seq is 0 and chunks cover 0..frames_durable without gaps.
            let first = entry
                .chunks
                .partition_point(|c| c.first_seq <= cursor.next_seq)
                .saturating_sub(1);
            let base = entry.chunks[first];
            let mut last = first;
            let mut frames_planned = entry.chunk_frames(first) as usize;
            while let Some(next) = entry.chunks.get(last + 1) {
                // Chunks of one segment are in file order; a later segment starts over.
                let span = (next.segment == base.segment)
                    .then(|| (next.offset + next.len).checked_sub(base.offset))
                    .flatten()
                    .map_or(usize::MAX, |s| s as usize);
                if span > READ_SPAN_BYTES_MAX || frames_planned >= frames_max - out.len() {
                    break;
                }
                last += 1;
                frames_planned += entry.chunk_frames(last) as usize;
            }
            let end = entry.chunks[last].offset + entry.chunks[last].len;
            let span = (end - base.offset) as usize;
            let seg = self
                .segments
                .get(&base.segment)
                .ok_or(StoreError::MessageUnknown(msg))?;
            let scratch = &mut out.scratch;
            scratch.resize(span, 0);
            seg.file
                .read_exact_at(scratch, u64::from(base.offset))
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => StoreError::RecordCorrupt {
                        segment: base.segment,
                        offset: u64::from(base.offset),
                    },
                    _ => StoreError::io("read segment", segment_path(&self.dir, base.segment), e),
                })?;
            let scratch = std::mem::take(&mut out.scratch);
            let result = copy_frames(
                &scratch,
                entry,
                first..=last,
                base.offset,
                cursor,
                frames_max,
                out,
            );
            out.scratch = scratch;
            result?;
        }
        Ok(self.replay_status(entry, cursor.next_seq))
    }

    fn replay_status(&self, entry: &crate::index::MessageEntry, next_seq: u32) -> ReplayStatus {
        if next_seq < entry.frames_durable {
            return ReplayStatus::More;
        }
        match entry.state {
            MessageState::Ended(state) if entry.frames_durable == entry.frames_appended => {
                ReplayStatus::Ended {
                    frame_count: entry.frames_durable,
                    state,
                }
            }
            _ => ReplayStatus::CaughtUp {
                live_from_seq: entry.frames_durable,
            },
        }
    }
}

fn copy_frames(
    span: &[u8],
    entry: &crate::index::MessageEntry,
    chunks: std::ops::RangeInclusive<usize>,
    base_offset: u32,
    cursor: &mut ReplayCursor,
    frames_max: usize,
    out: &mut FrameBatch,
) -> Result<(), StoreError> {
    for i in chunks {
        let loc = entry.chunks[i];
        let corrupt = StoreError::RecordCorrupt {
            segment: loc.segment,
            offset: u64::from(loc.offset),
        };
        let from = (loc.offset - base_offset) as usize;
        let bytes = span.get(from..from + loc.len as usize).ok_or(corrupt)?;
        let Ok((record, _)) = Record::decode(bytes) else {
            return Err(StoreError::RecordCorrupt {
                segment: loc.segment,
                offset: u64::from(loc.offset),
            });
        };
        let first_seq = record.frames_prefix().map(|(s, _)| s);
        if record.msg != cursor.msg
            || record.kind != RecordKind::Frames
            || first_seq != Ok(loc.first_seq)
        {
            return Err(StoreError::RecordCorrupt {
                segment: loc.segment,
                offset: u64::from(loc.offset),
            });
        }
        let frames = record.frames().map_err(|_| StoreError::RecordCorrupt {
            segment: loc.segment,
            offset: u64::from(loc.offset),
        })?;
        for frame in frames {
            let Ok((seq, bytes)) = frame else {
                return Err(StoreError::RecordCorrupt {
                    segment: loc.segment,
                    offset: u64::from(loc.offset),
                });
            };
            if seq < cursor.next_seq {
                continue;
            }
            if out.len() >= frames_max {
                return Ok(());
            }
            out.push(seq, bytes);
            cursor.next_seq = seq + 1;
        }
    }
    Ok(())
}
