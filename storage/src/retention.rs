//! Retention: deleting whole sealed segments, oldest first, by age, by total bytes and by
//! index size, with their index entries. A message that a replay cursor holds, or that is
//! still open, stops retention at its segment: it is not pulled from under its reader.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::segment::{hint_file_name, segment_file_name};
use crate::store::Store;

/// Segments whose index entries are gone and whose files are to be removed.
#[derive(Debug, Default)]
pub struct RetentionPlan {
    /// Segment numbers deleted from the index.
    pub segments: Vec<u32>,
    /// Their files (segment and hint).
    pub files: Vec<PathBuf>,
    /// Bytes the segments held.
    pub bytes_freed: u64,
    /// Messages removed from the index.
    pub messages_dropped: usize,
    /// Retention wanted to go further but a message was being replayed or still open.
    pub held_by_reader: bool,
}

impl RetentionPlan {
    /// Removes the files. Blocking (unlink): call it off the shard thread, or accept a short
    /// stall. A file already gone is not an error. If the process dies before this runs,
    /// the segments reappear on the next open and retention removes them again.
    /// [`crate::Committer::remove_files_later`] does it on the housekeeping thread.
    pub fn remove_files(&self) -> io::Result<()> {
        crate::housekeeping::remove_all(&self.files)
    }
}

impl Store {
    /// Drops the oldest sealed segments that are past `retention_age_ms`, or while the store
    /// is over `retention_bytes_max` or the index over `index_messages_max`. Index entries go
    /// now; the files are listed in the plan for the caller to remove.
    pub fn apply_retention(&mut self, now_us: u64) -> RetentionPlan {
        let mut plan = RetentionPlan::default();
        let mut total: u64 = self.stored_bytes();
        let sealed: Vec<u32> = self
            .segments
            .iter()
            .filter(|(_, s)| s.sealed)
            .map(|(id, _)| *id)
            .collect();
        for id in sealed {
            // A sealed segment's age is counted from its sealing: the next segment's creation.
            let sealed_us = self
                .segments
                .range(id + 1..)
                .next()
                .map_or(now_us, |(_, s)| s.created_us);
            let too_old = self
                .config
                .retention_age_ms
                .is_some_and(|ms| now_us.saturating_sub(sealed_us) >= ms.saturating_mul(1000));
            let too_big = self
                .config
                .retention_bytes_max
                .is_some_and(|max| total > max);
            let too_many = self.index.messages.len() > self.config.index_messages_max;
            if !(too_old || too_big || too_many) {
                break;
            }
            let Some(seg) = self.segments.get(&id) else {
                continue;
            };
            let held = seg.started.iter().any(|m| {
                self.writer.open.contains_key(m)
                    || self
                        .index
                        .messages
                        .get(m)
                        .is_some_and(|e| Arc::strong_count(&e.readers) > 1 || !e.end_durable)
            });
            if held {
                plan.held_by_reader = true;
                break;
            }
            let Some(seg) = self.segments.remove(&id) else {
                continue;
            };
            for msg in &seg.started {
                if self.index.remove(*msg).is_some() {
                    plan.messages_dropped += 1;
                }
            }
            total -= seg.bytes;
            plan.bytes_freed += seg.bytes;
            plan.segments.push(id);
            plan.files.push(self.dir.join(segment_file_name(id)));
            plan.files.push(self.dir.join(hint_file_name(id)));
        }
        plan
    }
}
