//! The on-disk byte layout: segment header, commit header, records. `docs/storage-format.md`
//! is the contract; this module is its only implementation.
//!
//! ```text
//! segment file  = segment header block (4 KiB) , commit*
//! commit        = commit header (40 B) , record* , zero padding to the next 4 KiB boundary
//! record        = record header (28 B) , payload (Start | Frames | End)
//! ```
//!
//! Every integer is little-endian. Every header and record carries a crc32c, so a reader never
//! has to trust a byte it has not checked.

use hark_core::{ConvId, MsgId};

/// The on-disk format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The unit of writing: a commit always starts on, and is padded to, a block boundary, so a
/// block that held acknowledged records is never written again.
pub const BLOCK_BYTES: usize = 4096;

/// Magic at the start of a segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"HARKSEG\0";
/// Bytes of the segment header that carry data (the rest of block 0 is zero).
pub const SEGMENT_HEADER_BYTES: usize = 32;

/// Magic at the start of each commit.
pub const COMMIT_MAGIC: u32 = u32::from_le_bytes(*b"HKCB");
/// Size of a commit header.
pub const COMMIT_HEADER_BYTES: usize = 40;
/// Longest commit the format allows, in blocks (1 GiB of records plus the header): a header
/// claiming more is not a commit header, so a corrupt length cannot push the log's end
/// (and the file's size on recovery) beyond reason.
pub const COMMIT_BLOCKS_LIMIT: u32 = ((1usize << 30) / BLOCK_BYTES + 1) as u32;

/// Size of a record header.
pub const RECORD_HEADER_BYTES: usize = 28;
/// Fixed part of a Frames payload: first_seq u32, count u16, reserved u16.
pub const FRAMES_PREFIX_BYTES: usize = 8;
/// Per-frame length prefix inside a Frames payload.
pub const FRAME_LEN_BYTES: usize = 2;
/// Fixed part of a Start payload: conv u64, sender_len u16, codec_len u16.
pub const START_PREFIX_BYTES: usize = 12;
/// Size of an End payload: frame_count u32, reserved u32, duration_us u64.
pub const END_PAYLOAD_BYTES: usize = 16;

/// The largest frame the format can hold (its length prefix is a u16).
pub const FRAME_BYTES_LIMIT: usize = u16::MAX as usize;

/// What a record says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// The message's header: conversation, sender, codec metadata.
    Start = 1,
    /// A chunk of consecutive frames.
    Frames = 2,
    /// The message is over: frame count, duration, complete or truncated.
    End = 3,
}

impl RecordKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Start),
            2 => Some(Self::Frames),
            3 => Some(Self::End),
            _ => None,
        }
    }
}

/// How a message ended: hark-core's vocabulary, shared with the shard logic.
pub use hark_core::shard::EndState;

/// The End record's flag byte for `state`.
pub(crate) fn end_state_flag(state: EndState) -> u8 {
    match state {
        EndState::Complete => 0,
        EndState::Truncated => 1,
    }
}

/// The end state an End record's flag byte names (any non-zero flag reads as truncated).
pub(crate) fn end_state_from_flag(flag: u8) -> EndState {
    if flag == 0 {
        EndState::Complete
    } else {
        EndState::Truncated
    }
}

/// The segment header (block 0 of every segment file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version that wrote the segment.
    pub version: u32,
    /// The segment's number; segment files of a shard are numbered 1, 2, 3, ...
    pub segment: u32,
    /// Host of the shard that wrote it.
    pub host: u16,
    /// Core of the shard that wrote it.
    pub core: u16,
    /// When the segment was created, µs since the Unix epoch.
    pub created_us: u64,
}

/// Why a segment header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentHeaderFault {
    /// Wrong magic or checksum: a torn or foreign file.
    Invalid,
    /// Written by a newer format version than this build reads.
    TooNew(u32),
}

impl SegmentHeader {
    /// Appends the full header block (4 KiB, zero padded) to `out`.
    pub fn encode_block(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&SEGMENT_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // crc, filled below
        out.extend_from_slice(&self.segment.to_le_bytes());
        out.extend_from_slice(&self.host.to_le_bytes());
        out.extend_from_slice(&self.core.to_le_bytes());
        out.extend_from_slice(&self.created_us.to_le_bytes());
        let crc = segment_header_crc(&out[start..start + SEGMENT_HEADER_BYTES]);
        out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
        out.resize(start + BLOCK_BYTES, 0);
    }

    /// Reads a header from the first bytes of a segment file.
    pub fn decode(bytes: &[u8]) -> Result<Self, SegmentHeaderFault> {
        let b = bytes
            .get(..SEGMENT_HEADER_BYTES)
            .ok_or(SegmentHeaderFault::Invalid)?;
        if b[..8] != SEGMENT_MAGIC || le_u32(b, 12) != segment_header_crc(b) {
            return Err(SegmentHeaderFault::Invalid);
        }
        let version = le_u32(b, 8);
        if version > FORMAT_VERSION {
            return Err(SegmentHeaderFault::TooNew(version));
        }
        Ok(Self {
            version,
            segment: le_u32(b, 16),
            host: le_u16(b, 20),
            core: le_u16(b, 22),
            created_us: le_u64(b, 24),
        })
    }
}

fn segment_header_crc(b: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&b[..12]);
    crc32c::crc32c_append(crc, &b[16..SEGMENT_HEADER_BYTES])
}

/// The header that opens every commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitHeader {
    /// Segment the commit belongs to (guards against a block copied from elsewhere).
    pub segment: u32,
    /// 1 for the first commit of a segment, then +1 each commit.
    pub commit_seq: u64,
    /// Bytes of records after the header.
    pub records_bytes: u32,
    /// Number of records after the header.
    pub record_count: u32,
    /// Length of the whole commit including header and padding, in blocks.
    pub blocks: u32,
}

impl CommitHeader {
    /// Writes the header into `out[..COMMIT_HEADER_BYTES]`.
    pub fn encode_into(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&COMMIT_MAGIC.to_le_bytes());
        out[8..12].copy_from_slice(&self.segment.to_le_bytes());
        out[12..16].copy_from_slice(&0u32.to_le_bytes());
        out[16..24].copy_from_slice(&self.commit_seq.to_le_bytes());
        out[24..28].copy_from_slice(&self.records_bytes.to_le_bytes());
        out[28..32].copy_from_slice(&self.record_count.to_le_bytes());
        out[32..36].copy_from_slice(&self.blocks.to_le_bytes());
        out[36..40].copy_from_slice(&0u32.to_le_bytes());
        let crc = crc32c::crc32c(&out[8..COMMIT_HEADER_BYTES]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Reads a header; `None` when the bytes are not a valid commit header.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b = b.get(..COMMIT_HEADER_BYTES)?;
        if le_u32(b, 0) != COMMIT_MAGIC || le_u32(b, 4) != crc32c::crc32c(&b[8..]) {
            return None;
        }
        let header = Self {
            segment: le_u32(b, 8),
            commit_seq: le_u64(b, 16),
            records_bytes: le_u32(b, 24),
            record_count: le_u32(b, 28),
            blocks: le_u32(b, 32),
        };
        // The records must fit in the blocks the header claims.
        let capacity = (header.blocks as u64) * BLOCK_BYTES as u64;
        if header.blocks == 0
            || header.blocks > COMMIT_BLOCKS_LIMIT
            || COMMIT_HEADER_BYTES as u64 + header.records_bytes as u64 > capacity
        {
            return None;
        }
        Some(header)
    }
}

/// Bytes a commit of `records_bytes` occupies on disk, padding included.
pub fn commit_blocks(records_bytes: usize) -> usize {
    (COMMIT_HEADER_BYTES + records_bytes).div_ceil(BLOCK_BYTES)
}

/// A record whose header and checksum have been verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// What the record says.
    pub kind: RecordKind,
    /// Kind-specific flags (End: the [`EndState`]).
    pub flags: u8,
    /// The message it belongs to.
    pub msg: MsgId,
    /// The payload, checksum verified.
    pub payload: &'a [u8],
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFault {
    /// Fewer bytes than the header or its payload length says.
    Short,
    /// Unknown kind or a payload whose inner lengths do not add up.
    Malformed,
    /// The checksum does not match.
    Checksum,
}

impl<'a> Record<'a> {
    /// Verifies and reads the record at the start of `b`; returns it and its total length.
    pub fn decode(b: &'a [u8]) -> Result<(Self, usize), RecordFault> {
        let header = b.get(..RECORD_HEADER_BYTES).ok_or(RecordFault::Short)?;
        let payload_len = le_u32(header, 8) as usize;
        let total = RECORD_HEADER_BYTES
            .checked_add(payload_len)
            .ok_or(RecordFault::Short)?;
        let whole = b.get(..total).ok_or(RecordFault::Short)?;
        if crc32c::crc32c(&whole[4..]) != le_u32(whole, 0) {
            return Err(RecordFault::Checksum);
        }
        let kind = RecordKind::from_u8(whole[4]).ok_or(RecordFault::Malformed)?;
        let msg = MsgId(u128::from_le_bytes(
            whole[12..28].try_into().map_err(|_| RecordFault::Short)?,
        ));
        let record = Self {
            kind,
            flags: whole[5],
            msg,
            payload: &whole[RECORD_HEADER_BYTES..],
        };
        record.validate_payload()?;
        Ok((record, total))
    }

    fn validate_payload(&self) -> Result<(), RecordFault> {
        match self.kind {
            RecordKind::Start => self.start().map(|_| ()),
            RecordKind::End => self.end().map(|_| ()),
            RecordKind::Frames => {
                let (_, count) = self.frames_prefix()?;
                let mut n = 0;
                for frame in self.frames()? {
                    frame?;
                    n += 1;
                }
                if n == count {
                    Ok(())
                } else {
                    Err(RecordFault::Malformed)
                }
            }
        }
    }

    /// Start payload: (conversation, sender, codec metadata).
    pub fn start(&self) -> Result<(ConvId, &'a [u8], &'a [u8]), RecordFault> {
        let p = self.payload;
        if self.kind != RecordKind::Start || p.len() < START_PREFIX_BYTES {
            return Err(RecordFault::Malformed);
        }
        let sender_len = le_u16(p, 8) as usize;
        let codec_len = le_u16(p, 10) as usize;
        if p.len() != START_PREFIX_BYTES + sender_len + codec_len {
            return Err(RecordFault::Malformed);
        }
        let sender = &p[START_PREFIX_BYTES..START_PREFIX_BYTES + sender_len];
        let codec = &p[START_PREFIX_BYTES + sender_len..];
        Ok((ConvId(le_u64(p, 0)), sender, codec))
    }

    /// End payload: (frame count, duration µs, how it ended).
    pub fn end(&self) -> Result<(u32, u64, EndState), RecordFault> {
        let p = self.payload;
        if self.kind != RecordKind::End || p.len() != END_PAYLOAD_BYTES {
            return Err(RecordFault::Malformed);
        }
        Ok((le_u32(p, 0), le_u64(p, 8), end_state_from_flag(self.flags)))
    }

    /// Frames payload prefix: (first sequence number, frame count).
    pub fn frames_prefix(&self) -> Result<(u32, u32), RecordFault> {
        let p = self.payload;
        if self.kind != RecordKind::Frames || p.len() < FRAMES_PREFIX_BYTES {
            return Err(RecordFault::Malformed);
        }
        Ok((le_u32(p, 0), le_u16(p, 4) as u32))
    }

    /// The frames of a Frames record, in order.
    pub fn frames(&self) -> Result<FrameIter<'a>, RecordFault> {
        let (first_seq, _) = self.frames_prefix()?;
        Ok(FrameIter {
            rest: &self.payload[FRAMES_PREFIX_BYTES..],
            seq: first_seq,
        })
    }
}

/// Iterates `(seq, frame bytes)` over a Frames payload.
#[derive(Debug)]
pub struct FrameIter<'a> {
    rest: &'a [u8],
    seq: u32,
}

impl<'a> Iterator for FrameIter<'a> {
    type Item = Result<(u32, &'a [u8]), RecordFault>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < FRAME_LEN_BYTES {
            self.rest = &[];
            return Some(Err(RecordFault::Malformed));
        }
        let len = le_u16(self.rest, 0) as usize;
        let Some(frame) = self.rest.get(FRAME_LEN_BYTES..FRAME_LEN_BYTES + len) else {
            self.rest = &[];
            return Some(Err(RecordFault::Malformed));
        };
        self.rest = &self.rest[FRAME_LEN_BYTES + len..];
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        Some(Ok((seq, frame)))
    }
}

/// Starts a record in `out`: writes a header with a zero checksum and length. Returns the
/// record's start offset; finish it with [`finish_record`].
pub fn begin_record(out: &mut Vec<u8>, kind: RecordKind, flags: u8, msg: MsgId) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(kind as u8);
    out.push(flags);
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&msg.0.to_le_bytes());
    start
}

/// Fills in the payload length and checksum of the record begun at `start`.
pub fn finish_record(out: &mut [u8], start: usize) {
    let payload_len = (out.len() - start - RECORD_HEADER_BYTES) as u32;
    out[start + 8..start + 12].copy_from_slice(&payload_len.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a complete Start record.
pub fn encode_start(out: &mut Vec<u8>, msg: MsgId, conv: ConvId, sender: &[u8], codec: &[u8]) {
    let start = begin_record(out, RecordKind::Start, 0, msg);
    out.extend_from_slice(&conv.0.to_le_bytes());
    out.extend_from_slice(&(sender.len() as u16).to_le_bytes());
    out.extend_from_slice(&(codec.len() as u16).to_le_bytes());
    out.extend_from_slice(sender);
    out.extend_from_slice(codec);
    finish_record(out, start);
}

/// Appends a complete End record.
pub fn encode_end(
    out: &mut Vec<u8>,
    msg: MsgId,
    frame_count: u32,
    duration_us: u64,
    state: EndState,
) {
    let start = begin_record(out, RecordKind::End, end_state_flag(state), msg);
    out.extend_from_slice(&frame_count.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&duration_us.to_le_bytes());
    finish_record(out, start);
}

/// Bytes a Start record takes.
pub fn start_record_bytes(sender: &[u8], codec: &[u8]) -> usize {
    RECORD_HEADER_BYTES + START_PREFIX_BYTES + sender.len() + codec.len()
}

/// Bytes an End record takes.
pub const END_RECORD_BYTES: usize = RECORD_HEADER_BYTES + END_PAYLOAD_BYTES;

pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_core::ShardId;

    fn msg() -> MsgId {
        MsgId::from_parts(1_000, ShardId::new(1, 2), 3)
    }

    #[test]
    fn records_round_trip_and_detect_every_single_byte_flip() {
        let mut out = Vec::new();
        encode_start(&mut out, msg(), ConvId(9), b"alice", b"OpusHead....");
        let start = begin_record(&mut out, RecordKind::Frames, 0, msg());
        out.extend_from_slice(&7u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        for frame in [&b"abc"[..], &b""[..]] {
            out.extend_from_slice(&(frame.len() as u16).to_le_bytes());
            out.extend_from_slice(frame);
        }
        finish_record(&mut out, start);
        encode_end(&mut out, msg(), 9, 180_000, EndState::Truncated);

        let (r, n1) = Record::decode(&out).unwrap();
        assert_eq!(
            r.start().unwrap(),
            (ConvId(9), &b"alice"[..], &b"OpusHead...."[..])
        );
        let (r, n2) = Record::decode(&out[n1..]).unwrap();
        let frames: Vec<_> = r.frames().unwrap().map(|f| f.unwrap()).collect();
        assert_eq!(frames, vec![(7, &b"abc"[..]), (8, &b""[..])]);
        let (r, n3) = Record::decode(&out[n1 + n2..]).unwrap();
        assert_eq!(r.end().unwrap(), (9, 180_000, EndState::Truncated));
        assert_eq!(n1 + n2 + n3, out.len());

        for i in 0..n1 {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(Record::decode(&bad).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn commit_header_round_trips_and_rejects_impossible_lengths() {
        let h = CommitHeader {
            segment: 4,
            commit_seq: 77,
            records_bytes: 5000,
            record_count: 3,
            blocks: 2,
        };
        let mut b = [0u8; COMMIT_HEADER_BYTES];
        h.encode_into(&mut b);
        assert_eq!(CommitHeader::decode(&b), Some(h));
        let mut lying = h;
        lying.blocks = 1;
        lying.encode_into(&mut b);
        assert_eq!(CommitHeader::decode(&b), None);
        lying.blocks = COMMIT_BLOCKS_LIMIT + 1;
        lying.encode_into(&mut b);
        assert_eq!(
            CommitHeader::decode(&b),
            None,
            "a huge claimed length is refused"
        );
        assert_eq!(commit_blocks(5000), 2);
        assert_eq!(commit_blocks(BLOCK_BYTES - COMMIT_HEADER_BYTES), 1);
    }

    #[test]
    fn segment_header_rejects_newer_versions_and_garbage() {
        let h = SegmentHeader {
            version: FORMAT_VERSION,
            segment: 3,
            host: 1,
            core: 2,
            created_us: 99,
        };
        let mut block = Vec::new();
        h.encode_block(&mut block);
        assert_eq!(block.len(), BLOCK_BYTES);
        assert_eq!(SegmentHeader::decode(&block), Ok(h));
        let newer = SegmentHeader {
            version: FORMAT_VERSION + 1,
            ..h
        };
        let mut block = Vec::new();
        newer.encode_block(&mut block);
        assert_eq!(
            SegmentHeader::decode(&block),
            Err(SegmentHeaderFault::TooNew(FORMAT_VERSION + 1))
        );
        block[30] ^= 1;
        assert_eq!(
            SegmentHeader::decode(&block),
            Err(SegmentHeaderFault::Invalid)
        );
    }
}
