//! Segments: the append-only files of a shard's store, and the recovery scan that reads one.
//!
//! A segment is named `seg-<8 hex digits>.hark` after its number. The scan walks commits from
//! block 1 on, checks every header and record checksum, and stops at the first commit header
//! that is missing, invalid or out of sequence: that is the end of the log. Inside a commit a
//! bad record drops the rest of that commit (reported), and the scan goes on with the next
//! commit, whose header proves it was written after.

use std::path::{Path, PathBuf};

use hark_core::MsgId;

use crate::format::{
    BLOCK_BYTES, COMMIT_HEADER_BYTES, CommitHeader, Record, RecordFault, RecordKind, SegmentHeader,
    SegmentHeaderFault,
};

/// File name of segment `segment`.
pub fn segment_file_name(segment: u32) -> String {
    format!("seg-{segment:08x}.hark")
}

/// File name of the hint file of segment `segment`.
pub fn hint_file_name(segment: u32) -> String {
    format!("seg-{segment:08x}.hint")
}

/// The segment number of a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u32> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".hark")?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// Path of segment `segment` in `dir`.
pub fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(segment_file_name(segment))
}

/// What one record of a segment says, without its frames: enough to rebuild the header index.
/// Hint files are a list of these.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum RecordSummary {
    /// A message started.
    Start {
        /// The message (u128 value of its MsgId).
        msg: u128,
        /// File offset of the record.
        offset: u32,
        /// Conversation id.
        conv: u64,
        /// Sender bytes.
        sender: Vec<u8>,
        /// Codec metadata bytes.
        codec: Vec<u8>,
    },
    /// A chunk of frames.
    Frames {
        /// The message.
        msg: u128,
        /// File offset of the record.
        offset: u32,
        /// Record length in bytes, header included.
        len: u32,
        /// Sequence number of its first frame.
        first_seq: u32,
        /// Number of frames.
        count: u32,
    },
    /// A message ended.
    End {
        /// The message.
        msg: u128,
        /// Frames the writer says it had.
        frame_count: u32,
        /// Duration, µs.
        duration_us: u64,
        /// Whether it was cut rather than ended by its talker.
        truncated: bool,
    },
}

impl RecordSummary {
    /// Summarises a verified record found at `offset`.
    pub fn of(record: &Record<'_>, offset: u32, len: u32) -> Result<Self, RecordFault> {
        let msg = record.msg.0;
        Ok(match record.kind {
            RecordKind::Start => {
                let (conv, sender, codec) = record.start()?;
                Self::Start {
                    msg,
                    offset,
                    conv: conv.0,
                    sender: sender.to_vec(),
                    codec: codec.to_vec(),
                }
            }
            RecordKind::Frames => {
                let (first_seq, count) = record.frames_prefix()?;
                Self::Frames {
                    msg,
                    offset,
                    len,
                    first_seq,
                    count,
                }
            }
            RecordKind::End => {
                let (frame_count, duration_us, state) = record.end()?;
                Self::End {
                    msg,
                    frame_count,
                    duration_us,
                    truncated: state == crate::format::EndState::Truncated,
                }
            }
        })
    }

    /// The message the record belongs to.
    pub fn msg(&self) -> MsgId {
        match self {
            Self::Start { msg, .. } | Self::Frames { msg, .. } | Self::End { msg, .. } => {
                MsgId(*msg)
            }
        }
    }
}

/// A byte range of a segment that recovery could not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DroppedRange {
    /// The segment.
    pub segment: u32,
    /// First byte not used.
    pub from_offset: u64,
    /// One past the last byte not used.
    pub to_offset: u64,
}

/// The result of scanning one segment file.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    /// The segment header.
    pub header: SegmentHeader,
    /// Every valid record, in file order.
    pub records: Vec<RecordSummary>,
    /// End of the last valid commit (block aligned): where the next commit goes.
    pub valid_end: u64,
    /// Sequence number of the last valid commit (0 when there is none).
    pub last_commit_seq: u64,
    /// What was skipped: the rest of commits with a bad record, and the bytes after the log.
    pub dropped: Vec<DroppedRange>,
    /// Bytes in the file when scanned.
    pub file_bytes: u64,
    /// Everything after `valid_end` is zero: preallocated space, not damage (also true when
    /// nothing follows the log).
    pub zero_tail: bool,
}

/// Why a segment could not be scanned at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanFault {
    /// Its header is torn or foreign: nothing in it can be trusted.
    HeaderInvalid,
    /// It was written by a newer format version.
    TooNew(u32),
    /// Its header names another segment number than its file name.
    WrongSegment(u32),
}

/// Scans the bytes of segment `segment` (the whole file).
pub fn scan_segment(segment: u32, bytes: &[u8]) -> Result<SegmentScan, ScanFault> {
    let header = SegmentHeader::decode(bytes).map_err(|fault| match fault {
        SegmentHeaderFault::Invalid => ScanFault::HeaderInvalid,
        SegmentHeaderFault::TooNew(v) => ScanFault::TooNew(v),
    })?;
    if header.segment != segment {
        return Err(ScanFault::WrongSegment(header.segment));
    }
    let len = bytes.len();
    let mut records = Vec::new();
    let mut dropped = Vec::new();
    let mut pos = BLOCK_BYTES;
    let mut last_commit_seq = 0u64;
    // Each iteration consumes at least one block, so the loop ends within len / BLOCK_BYTES.
    while let Some(commit) = bytes.get(pos..).and_then(CommitHeader::decode) {
        if commit.segment != segment || commit.commit_seq != last_commit_seq + 1 {
            break;
        }
        let end = pos + commit.blocks as usize * BLOCK_BYTES;
        let records_end = (pos + COMMIT_HEADER_BYTES + commit.records_bytes as usize).min(len);
        let mut at = pos + COMMIT_HEADER_BYTES;
        for _ in 0..commit.record_count {
            let parsed = Record::decode(&bytes[at..records_end])
                .and_then(|(r, n)| RecordSummary::of(&r, at as u32, n as u32).map(|s| (s, n)));
            match parsed {
                Ok((summary, n)) => {
                    records.push(summary);
                    at += n;
                }
                Err(_) => {
                    dropped.push(DroppedRange {
                        segment,
                        from_offset: at as u64,
                        to_offset: end as u64,
                    });
                    break;
                }
            }
        }
        last_commit_seq = commit.commit_seq;
        pos = end;
    }
    let zero_tail = bytes
        .get(pos..)
        .is_none_or(|tail| tail.iter().all(|b| *b == 0));
    // A zero tail is a preallocated segment's unused space: nothing was lost there.
    if pos < len && !zero_tail {
        dropped.push(DroppedRange {
            segment,
            from_offset: pos as u64,
            to_offset: len as u64,
        });
    }
    Ok(SegmentScan {
        header,
        records,
        valid_end: pos as u64,
        last_commit_seq,
        dropped,
        file_bytes: len as u64,
        zero_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_lookalikes() {
        assert_eq!(segment_file_name(0x2a), "seg-0000002a.hark");
        assert_eq!(parse_segment_file_name("seg-0000002a.hark"), Some(0x2a));
        assert_eq!(parse_segment_file_name("seg-2a.hark"), None);
        assert_eq!(parse_segment_file_name("seg-0000002a.hint"), None);
        assert_eq!(parse_segment_file_name("xseg-0000002a.hark"), None);
    }
}
