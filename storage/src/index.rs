//! The header index: every message of the store, where its chunks are, and one timeline per
//! conversation ordered by start time. It lives in memory and is rebuilt on open from hint
//! files and segment scans; it never holds anything that is not in a segment.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use hark_core::{ConvId, MsgId};

use crate::format::EndState;

/// A cheap hasher for MsgId/ConvId keys (they are already well mixed: time, shard, counter;
/// xxh3 for ConvId). Not for attacker-chosen keys: MsgIds are assigned by the shard.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= self.0 >> 29;
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
}

/// HashMap keyed by an id.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Where one durable Frames record of a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLoc {
    /// Segment number.
    pub segment: u32,
    /// File offset of the record.
    pub offset: u32,
    /// Record length, header included.
    pub len: u32,
    /// Sequence number of its first frame.
    pub first_seq: u32,
}

pub use hark_core::shard::MessageState;

/// Everything the index knows about one message.
#[derive(Debug)]
pub(crate) struct MessageEntry {
    pub conv: ConvId,
    pub sender: Box<[u8]>,
    pub codec: Box<[u8]>,
    /// Segment holding the durable Start record (None until it is durable).
    pub start_segment: Option<u32>,
    /// Durable Frames records, in sequence order without gaps.
    pub chunks: Vec<ChunkLoc>,
    /// Frames durable: sequence numbers 0..frames_durable can be replayed.
    pub frames_durable: u32,
    /// Frames accepted by `append` once the message is no longer open (>= frames_durable);
    /// while it is open the writer's count is the truth (kept there to spare a lookup per frame).
    pub frames_appended: u32,
    pub state: MessageState,
    /// Duration once ended.
    pub duration_us: Option<u64>,
    /// The End record is durable (or the message was cut by a crash and its End is pending).
    pub end_durable: bool,
    /// A chunk went missing on recovery: later chunks are ignored, the message is truncated.
    pub gap: bool,
    /// Replay cursors hold a clone; retention skips a message with outstanding clones.
    pub readers: Arc<()>,
    /// Last commit that reported this message's durable ack (dedupes acks per commit).
    pub ack_mark: u64,
}

impl MessageEntry {
    pub fn new(conv: ConvId, sender: &[u8], codec: &[u8]) -> Self {
        Self {
            conv,
            sender: sender.into(),
            codec: codec.into(),
            start_segment: None,
            chunks: Vec::new(),
            frames_durable: 0,
            frames_appended: 0,
            state: MessageState::Open,
            duration_us: None,
            end_durable: false,
            gap: false,
            readers: Arc::new(()),
            ack_mark: 0,
        }
    }

    /// Frames in chunk `i` of the chunk list.
    pub fn chunk_frames(&self, i: usize) -> u32 {
        let next = self
            .chunks
            .get(i + 1)
            .map_or(self.frames_durable, |c| c.first_seq);
        next - self.chunks[i].first_seq
    }
}

/// Messages and per-conversation timelines.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub messages: IdMap<MsgId, MessageEntry>,
    /// Per conversation, its messages in MsgId (= start time) order.
    pub timelines: IdMap<ConvId, VecDeque<MsgId>>,
}

impl Index {
    /// Adds a message (not yet durable). Returns false if it exists.
    pub fn insert(&mut self, msg: MsgId, entry: MessageEntry) -> bool {
        if self.messages.contains_key(&msg) {
            return false;
        }
        let timeline = self.timelines.entry(entry.conv).or_default();
        // Ids come from a monotonic generator, so this is almost always a push.
        if timeline.back().is_none_or(|last| *last < msg) {
            timeline.push_back(msg);
        } else {
            let at = timeline.partition_point(|m| *m < msg);
            timeline.insert(at, msg);
        }
        self.messages.insert(msg, entry);
        true
    }

    /// Removes a message and its timeline entry.
    pub fn remove(&mut self, msg: MsgId) -> Option<MessageEntry> {
        let entry = self.messages.remove(&msg)?;
        if let Some(timeline) = self.timelines.get_mut(&entry.conv) {
            if let Ok(at) = timeline.binary_search(&msg) {
                timeline.remove(at);
            }
            if timeline.is_empty() {
                self.timelines.remove(&entry.conv);
            }
        }
        Some(entry)
    }

    /// Applies a durable Start found by recovery.
    pub fn recover_start(
        &mut self,
        msg: MsgId,
        segment: u32,
        conv: ConvId,
        sender: &[u8],
        codec: &[u8],
    ) -> bool {
        let mut entry = MessageEntry::new(conv, sender, codec);
        entry.start_segment = Some(segment);
        self.insert(msg, entry)
    }

    /// Applies a durable Frames record found by recovery. Returns false if it was ignored
    /// (orphan of a deleted message, or after a gap).
    pub fn recover_frames(&mut self, msg: MsgId, loc: ChunkLoc, count: u32) -> bool {
        let Some(entry) = self.messages.get_mut(&msg) else {
            return false;
        };
        if entry.gap || entry.end_durable {
            return false;
        }
        if loc.first_seq != entry.frames_durable {
            entry.gap = true;
            return false;
        }
        entry.chunks.push(loc);
        entry.frames_durable += count;
        entry.frames_appended = entry.frames_durable;
        true
    }

    /// Applies a durable End record found by recovery.
    pub fn recover_end(&mut self, msg: MsgId, frame_count: u32, duration_us: u64, state: EndState) {
        let Some(entry) = self.messages.get_mut(&msg) else {
            return;
        };
        if entry.end_durable {
            return;
        }
        let complete =
            state == EndState::Complete && !entry.gap && frame_count == entry.frames_durable;
        entry.state = MessageState::Ended(if complete {
            EndState::Complete
        } else {
            EndState::Truncated
        });
        entry.duration_us = Some(duration_us);
        entry.end_durable = true;
    }
}
