//! Group commit: `poll_commit` turns pending records into one block-padded batch when
//! `commit_interval_ms` has passed or `commit_bytes` pend, rolling and sealing the segment when
//! it is full or old; `commit_completed` turns the batch's outcome into durable acks, or puts
//! its records back for the next commit to rewrite at the same offset.

use std::fs::OpenOptions;
use std::mem;

use crate::commit::{CommitAcks, CommitBatch, CommitDone, DurableAck, HintWrite};
use crate::error::StoreError;
use crate::format::{
    self, BLOCK_BYTES, COMMIT_HEADER_BYTES, CommitHeader, EndState, FORMAT_VERSION, SegmentHeader,
};
use crate::hint::SegmentHint;
use crate::index::ChunkLoc;
use crate::segment::{RecordSummary, hint_file_name, segment_path};
use crate::spare::{SpareRequest, SpareSegment};
use crate::store::{SegmentFile, Store};
use crate::writer::{Inflight, PendingKind};

impl Store {
    /// The earliest time `poll_commit` has work: a record due for flushing or a commit due.
    /// The shard sets its timer to it.
    pub fn next_wakeup_us(&self) -> Option<u64> {
        let w = &self.writer;
        let flush = w.flush_queue.front().map(|f| f.due_us);
        let commit = if w.pending_records.is_empty() || w.inflight.is_some() {
            None
        } else if w.pending_bytes() >= self.config.commit_bytes {
            Some(self.now_us)
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
        let adopt_spare = if header_block {
            w.adopt_spare.clone()
        } else {
            None
        };
        let spare_wanted = self.spare_wanted();
        Ok(CommitBatch {
            id,
            segment,
            file,
            path: segment_path(&self.dir, segment),
            offset,
            buf,
            sync_dir: header_block.then(|| self.dir.clone()),
            hint,
            adopt_spare,
            spare_wanted,
        })
    }

    /// The spare segment the store would roll into next, when it has none ready. Without
    /// preallocation it is an empty file: the I/O layer creates it, so the roll does not have
    /// to create the segment file on the shard thread.
    fn spare_wanted(&self) -> Option<SpareRequest> {
        if self.read_only || self.spare.is_some() {
            return None;
        }
        let bytes = if self.config.preallocate_segments {
            self.config.segment_bytes_max
        } else {
            0
        };
        Some(SpareRequest {
            dir: self.dir.clone(),
            segment: self.writer.active + 1,
            bytes,
        })
    }

    /// Keeps a spare the I/O layer prepared. One asked for an earlier segment (it came late
    /// and the store rolled without it) serves the next roll just as well: a spare is only
    /// zeros under a temporary name, renamed to whatever segment adopts it. A second spare
    /// (only an I/O layer that ignores `spare_wanted` sends one) is deleted: a short blocking
    /// unlink, only on that path.
    fn take_spare(&mut self, spare: SpareSegment) {
        if self.spare.is_none() {
            self.spare = Some(spare);
        } else {
            // A leftover spare is harmless (removed on the next open), so a failed unlink
            // is not reported.
            let _ = std::fs::remove_file(&spare.path);
        }
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
        let (file, adopt_spare) = match self.spare.take() {
            Some(spare) => (spare.file, Some(spare.path)),
            None => {
                // No spare ready (the I/O layer does not prepare them, or it is late, or it
                // failed): create the file here, a short blocking call on this rare path.
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| StoreError::io("create segment", &path, e))?;
                (file, None)
            }
        };
        let w = &self.writer;
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
        w.adopt_spare = adopt_spare;
        Ok(hint.map(|hint| HintWrite {
            path: self.dir.join(hint_file_name(old)),
            hint,
            trim_segment: Some((segment_path(&self.dir, old), old_bytes)),
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
            spare,
        } = done;
        if let Some(spare) = spare {
            self.take_spare(spare);
        }
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
        w.adopt_spare = None;
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
