//! Hint files: the index of a sealed segment, so opening a store does not rescan it.
//!
//! ```text
//! hint file = "HARKHINT" , version u32 , crc32c(body) u32 , body_len u64 , body (rkyv)
//! body      = SegmentHint { segment, segment_bytes, created_us, records: [RecordSummary] }
//! ```
//!
//! A hint is trusted only if its checksum holds, its version is known, and the segment file
//! still has exactly `segment_bytes` bytes; otherwise the segment is scanned and the hint
//! rewritten. Hints are written to a temporary name and renamed, and are never synced: losing
//! one costs a rescan, never data.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::format::{FORMAT_VERSION, le_u32, le_u64};
use crate::segment::{ArchivedRecordSummary, RecordSummary};

const HINT_MAGIC: [u8; 8] = *b"HARKHINT";
const HINT_HEADER_BYTES: usize = 24;

/// The index of one sealed segment.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct SegmentHint {
    /// Segment number.
    pub segment: u32,
    /// Size of the segment file the hint describes.
    pub segment_bytes: u64,
    /// When the segment was created, µs.
    pub created_us: u64,
    /// Every valid record of the segment, in file order.
    pub records: Vec<RecordSummary>,
}

/// Why a hint file was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintFault {
    /// Torn, corrupt, or not a hint file.
    Invalid,
    /// Written by a newer format version.
    TooNew(u32),
}

impl SegmentHint {
    /// The file bytes of this hint. Fails only if rkyv cannot serialise (out of memory).
    pub fn encode(&self) -> Result<Vec<u8>, rancor::Error> {
        let body = rkyv::to_bytes::<rancor::Error>(self)?;
        let mut out = Vec::with_capacity(HINT_HEADER_BYTES + body.len());
        out.extend_from_slice(&HINT_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Checks and reads hint file bytes, calling `each` on every record without building an
    /// owned copy of the list.
    pub fn visit(
        bytes: &[u8],
        mut each: impl FnMut(&ArchivedRecordSummaryRef<'_>),
    ) -> Result<(u32, u64, u64), HintFault> {
        let header = bytes.get(..HINT_HEADER_BYTES).ok_or(HintFault::Invalid)?;
        if header[..8] != HINT_MAGIC {
            return Err(HintFault::Invalid);
        }
        let version = le_u32(header, 8);
        if version > FORMAT_VERSION {
            return Err(HintFault::TooNew(version));
        }
        let body_len = usize::try_from(le_u64(header, 16)).map_err(|_| HintFault::Invalid)?;
        let body = bytes
            .get(HINT_HEADER_BYTES..)
            .filter(|b| b.len() == body_len)
            .ok_or(HintFault::Invalid)?;
        if crc32c::crc32c(body) != le_u32(header, 12) {
            return Err(HintFault::Invalid);
        }
        // rkyv needs the body aligned; the file bytes after a 24-byte header are not.
        let mut aligned = AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        let hint = rkyv::access::<ArchivedSegmentHint, rancor::Error>(&aligned)
            .map_err(|_| HintFault::Invalid)?;
        for record in hint.records.iter() {
            each(&ArchivedRecordSummaryRef(record));
        }
        Ok((
            hint.segment.to_native(),
            hint.segment_bytes.to_native(),
            hint.created_us.to_native(),
        ))
    }
}

/// A borrowed, validated record summary inside a hint file.
#[derive(Debug)]
pub struct ArchivedRecordSummaryRef<'a>(&'a ArchivedRecordSummary);

impl ArchivedRecordSummaryRef<'_> {
    /// An owned copy (used when the summary must outlive the file buffer).
    pub fn to_owned_summary(&self) -> RecordSummary {
        match self.0 {
            ArchivedRecordSummary::Start {
                msg,
                offset,
                conv,
                sender,
                codec,
            } => RecordSummary::Start {
                msg: msg.to_native(),
                offset: offset.to_native(),
                conv: conv.to_native(),
                sender: sender.as_slice().to_vec(),
                codec: codec.as_slice().to_vec(),
            },
            ArchivedRecordSummary::Frames {
                msg,
                offset,
                len,
                first_seq,
                count,
            } => RecordSummary::Frames {
                msg: msg.to_native(),
                offset: offset.to_native(),
                len: len.to_native(),
                first_seq: first_seq.to_native(),
                count: count.to_native(),
            },
            ArchivedRecordSummary::End {
                msg,
                frame_count,
                duration_us,
                truncated,
            } => RecordSummary::End {
                msg: msg.to_native(),
                frame_count: frame_count.to_native(),
                duration_us: duration_us.to_native(),
                truncated: *truncated,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentHint {
        SegmentHint {
            segment: 7,
            segment_bytes: 8192,
            created_us: 123,
            records: vec![
                RecordSummary::Start {
                    msg: 1 << 70,
                    offset: 4136,
                    conv: 5,
                    sender: b"bob".to_vec(),
                    codec: b"OpusHead".to_vec(),
                },
                RecordSummary::Frames {
                    msg: 1 << 70,
                    offset: 4200,
                    len: 300,
                    first_seq: 0,
                    count: 3,
                },
                RecordSummary::End {
                    msg: 1 << 70,
                    frame_count: 3,
                    duration_us: 60_000,
                    truncated: false,
                },
            ],
        }
    }

    #[test]
    fn hint_round_trips_and_rejects_any_damage() {
        let hint = sample();
        let bytes = hint.encode().unwrap();
        let mut seen = Vec::new();
        let head = SegmentHint::visit(&bytes, |r| seen.push(r.to_owned_summary())).unwrap();
        assert_eq!(head, (7, 8192, 123));
        assert_eq!(seen, hint.records);
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(SegmentHint::visit(&bad, |_| {}).is_err(), "flip at {i}");
        }
        assert_eq!(
            SegmentHint::visit(&bytes[..bytes.len() - 1], |_| {}),
            Err(HintFault::Invalid)
        );
    }
}
