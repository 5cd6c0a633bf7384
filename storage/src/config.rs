//! The store's knobs and limits. Every bound the store enforces has a name here.

use crate::error::StoreError;
use crate::format::{
    BLOCK_BYTES, FRAME_BYTES_LIMIT, FRAME_LEN_BYTES, FRAMES_PREFIX_BYTES, RECORD_HEADER_BYTES,
};

/// Largest segment the format can address (record offsets are u32), minus room for the
/// commit that crosses `segment_bytes_max`.
pub const SEGMENT_BYTES_LIMIT: u64 = 1 << 30;
/// Hard cap on `pending_bytes_max` (one commit stays within the format's commit limit and
/// every record offset within a u32).
pub const PENDING_BYTES_LIMIT: usize = 1 << 30;
/// Longest sender identity a Start record holds.
pub const SENDER_BYTES_LIMIT: usize = u16::MAX as usize;
/// Largest codec metadata a Start record holds.
pub const CODEC_BYTES_LIMIT: usize = u16::MAX as usize;

/// Configuration of one shard's store. `Default` gives production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Longest time pending records wait before a commit is offered by `poll_commit`.
    pub commit_interval_ms: u64,
    /// A commit is offered as soon as this many record bytes pend, even before the interval.
    pub commit_bytes: usize,
    /// A message's frames are gathered into one record for at most this long (or until the
    /// record is full) so a record header is shared by several frames. The durable ack of a
    /// frame comes at most `record_flush_ms + commit_interval_ms` + one sync after it.
    pub record_flush_ms: u64,
    /// Largest frame `append` accepts; larger ones get `StoreError::FrameTooLarge`.
    pub frame_bytes_max: usize,
    /// Largest record (header included) the writer builds; a full record is flushed.
    pub record_bytes_max: usize,
    /// Messages that may be open (started, not ended) at once; the next start gets
    /// `StoreError::TooManyOpenMessages`.
    pub open_messages_max: usize,
    /// A segment rolls at the first commit that would take it past this size.
    pub segment_bytes_max: u64,
    /// Segments are written with zeros to `segment_bytes_max` ahead of need (see
    /// `spare.rs`), so commits overwrite allocated blocks: their fdatasync flushes no file
    /// size. Costs one extra write of each segment's size, off the shard thread. Turn off for
    /// huge segments or tests that do not want the extra disk writes.
    pub preallocate_segments: bool,
    /// What `Store::open` does with messages a crash left open (no End record): `false` ends
    /// them truncated at once; `true` keeps them open for appends from their first frame not
    /// on disk, so a talker can resume them (the relay then ends them after its resume grace;
    /// see `OpenReport::open_messages`). Read-only opens always treat them as truncated.
    pub keep_cut_messages_open: bool,
    /// A segment rolls at the first commit after it is this old.
    pub segment_age_ms_max: u64,
    /// Bytes of records that may wait for a commit (disk slow or failing); beyond it appends
    /// get `StoreError::CommitBacklogFull`.
    pub pending_bytes_max: usize,
    /// Largest sender identity `start_message` accepts.
    pub sender_bytes_max: usize,
    /// Largest codec metadata (e.g. the OpusHead bytes) `start_message` accepts.
    pub codec_bytes_max: usize,
    /// Sealed segments older than this are deleted by retention. `None`: keep forever.
    pub retention_age_ms: Option<u64>,
    /// Retention deletes the oldest sealed segments while the store is larger. `None`: no cap.
    pub retention_bytes_max: Option<u64>,
    /// Messages the header index holds; retention deletes the oldest sealed segments while
    /// there are more.
    pub index_messages_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            commit_interval_ms: 5,
            commit_bytes: 256 * 1024,
            record_flush_ms: 100,
            frame_bytes_max: 4096,
            record_bytes_max: 16 * 1024,
            open_messages_max: 16 * 1024,
            segment_bytes_max: 64 * 1024 * 1024,
            preallocate_segments: true,
            keep_cut_messages_open: false,
            segment_age_ms_max: 60 * 60 * 1000,
            pending_bytes_max: 64 * 1024 * 1024,
            sender_bytes_max: 255,
            codec_bytes_max: 1024,
            retention_age_ms: None,
            retention_bytes_max: None,
            index_messages_max: 10_000_000,
        }
    }
}

impl StoreConfig {
    /// Checks that the limits fit together; the store refuses to open otherwise.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |reason: &'static str| Err(StoreError::ConfigInvalid { reason });
        if self.frame_bytes_max == 0 || self.frame_bytes_max > FRAME_BYTES_LIMIT {
            return bad("frame_bytes_max must be 1..=65535");
        }
        let one_frame_record =
            RECORD_HEADER_BYTES + FRAMES_PREFIX_BYTES + FRAME_LEN_BYTES + self.frame_bytes_max;
        if self.record_bytes_max < one_frame_record {
            return bad("record_bytes_max must hold one frame of frame_bytes_max");
        }
        if self.open_messages_max == 0 {
            return bad("open_messages_max must be at least 1");
        }
        if self.segment_bytes_max < 2 * BLOCK_BYTES as u64
            || self.segment_bytes_max > SEGMENT_BYTES_LIMIT
        {
            return bad("segment_bytes_max must be 8 KiB..=1 GiB");
        }
        if self.pending_bytes_max > PENDING_BYTES_LIMIT
            || self.pending_bytes_max < self.record_bytes_max
        {
            return bad("pending_bytes_max must be record_bytes_max..=1 GiB");
        }
        if self.commit_bytes == 0 || self.commit_bytes > self.pending_bytes_max {
            return bad("commit_bytes must be 1..=pending_bytes_max");
        }
        if self.sender_bytes_max > SENDER_BYTES_LIMIT || self.codec_bytes_max > CODEC_BYTES_LIMIT {
            return bad("sender_bytes_max and codec_bytes_max must be at most 65535");
        }
        if self.index_messages_max == 0 {
            return bad("index_messages_max must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_inconsistent_limits_are_refused() {
        StoreConfig::default().validate().unwrap();
        let small_record = StoreConfig {
            record_bytes_max: 100,
            ..StoreConfig::default()
        };
        assert!(matches!(
            small_record.validate(),
            Err(StoreError::ConfigInvalid { .. })
        ));
        let huge_frame = StoreConfig {
            frame_bytes_max: 70_000,
            ..StoreConfig::default()
        };
        assert!(huge_frame.validate().is_err());
        let huge_segment = StoreConfig {
            segment_bytes_max: 2 << 30,
            ..StoreConfig::default()
        };
        assert!(huge_segment.validate().is_err());
    }
}
