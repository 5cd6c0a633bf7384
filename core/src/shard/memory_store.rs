//! [`MemoryStore`]: a [`BodyStore`] in memory that models durability, for tests and the
//! cluster simulation. Appends become durable only when the test calls [`MemoryStore::commit`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::store::{
    Appended, BodyStore, DurableAck, EndState, MessageHeader, MessageState, ReplayStatus,
    StoreAcks, StoreFault, TimelineFrom,
};
use crate::ids::{ConvId, MsgId};

/// Most messages a [`MemoryStore`] keeps open at once unless configured otherwise.
pub const MEMORY_STORE_OPEN_MESSAGES_MAX: usize = 4096;

#[derive(Debug)]
struct StoredMessage {
    conv: ConvId,
    sender: Vec<u8>,
    codec: Vec<u8>,
    frames: Vec<Bytes>,
    frames_durable: u32,
    /// Set by `end_message`; durable once `end_durable`.
    end: Option<(EndState, u64)>,
    end_durable: bool,
    /// Frames durable as last reported in an ack (to report only news).
    acked_through: Option<u32>,
}

/// A body store held in memory. Durability is explicit: [`MemoryStore::commit`] makes every
/// accepted record durable and returns the acks the glue would feed to the shard.
#[derive(Debug)]
pub struct MemoryStore {
    messages: BTreeMap<MsgId, StoredMessage>,
    timelines: HashMap<ConvId, BTreeSet<MsgId>>,
    open: usize,
    open_max: usize,
    /// When set, every write fails with [`StoreFault::Unavailable`] (a full disk).
    pub fail_writes: bool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(MEMORY_STORE_OPEN_MESSAGES_MAX)
    }
}

/// A [`MemoryStore`] cursor.
#[derive(Debug, Clone, Copy)]
pub struct MemoryCursor {
    msg: MsgId,
    next_seq: u32,
}

impl MemoryStore {
    /// An empty store with at most `open_max` open messages.
    pub fn new(open_max: usize) -> Self {
        Self {
            messages: BTreeMap::new(),
            timelines: HashMap::new(),
            open: 0,
            open_max,
            fail_writes: false,
        }
    }

    /// Makes everything accepted so far durable (a group commit) and returns what it made
    /// durable, in message order.
    pub fn commit(&mut self) -> StoreAcks {
        let mut acks = StoreAcks::default();
        for (msg, m) in &mut self.messages {
            let count = m.frames.len() as u32;
            m.frames_durable = count;
            if count > 0 && m.acked_through != Some(count - 1) {
                m.acked_through = Some(count - 1);
                acks.durable.push(DurableAck {
                    msg: *msg,
                    durable_through_seq: count - 1,
                });
            }
            if let Some((state, _)) = m.end
                && !m.end_durable
            {
                m.end_durable = true;
                acks.ended.push((*msg, state));
            }
        }
        acks
    }

    /// Frames accepted for `msg` (durable or not), for test assertions.
    pub fn frames(&self, msg: MsgId) -> Option<&[Bytes]> {
        self.messages.get(&msg).map(|m| &m.frames[..])
    }

    fn header(msg: MsgId, m: &StoredMessage) -> MessageHeader {
        MessageHeader {
            msg,
            conv: m.conv,
            sender: m.sender.clone(),
            codec: m.codec.clone(),
            frame_count: m.frames.len() as u32,
            frames_durable: m.frames_durable,
            duration_us: m.end.map(|(_, d)| d),
            state: m
                .end
                .map_or(MessageState::Open, |(s, _)| MessageState::Ended(s)),
        }
    }

    fn writable(&self) -> Result<(), StoreFault> {
        if self.fail_writes {
            return Err(StoreFault::Unavailable("disk full (simulated)".into()));
        }
        Ok(())
    }
}

impl BodyStore for MemoryStore {
    type Cursor = MemoryCursor;

    fn start_message(
        &mut self,
        msg: MsgId,
        conv: ConvId,
        sender: &[u8],
        codec: &[u8],
    ) -> Result<(), StoreFault> {
        self.writable()?;
        if self.messages.contains_key(&msg) {
            return Err(StoreFault::MessageExists(msg));
        }
        if self.open >= self.open_max {
            return Err(StoreFault::TooManyOpenMessages);
        }
        self.open += 1;
        self.messages.insert(
            msg,
            StoredMessage {
                conv,
                sender: sender.to_vec(),
                codec: codec.to_vec(),
                frames: Vec::new(),
                frames_durable: 0,
                end: None,
                end_durable: false,
                acked_through: None,
            },
        );
        self.timelines.entry(conv).or_default().insert(msg);
        Ok(())
    }

    fn append(&mut self, msg: MsgId, seq: u32, frame: &[u8]) -> Result<Appended, StoreFault> {
        self.writable()?;
        let m = self
            .messages
            .get_mut(&msg)
            .filter(|m| m.end.is_none())
            .ok_or(StoreFault::MessageNotOpen(msg))?;
        let expected = m.frames.len() as u32;
        if seq < expected {
            return Ok(Appended::Duplicate);
        }
        if seq > expected {
            return Err(StoreFault::SequenceGap {
                msg,
                expected,
                got: seq,
            });
        }
        m.frames.push(Bytes::copy_from_slice(frame));
        Ok(Appended::Stored)
    }

    fn end_message(&mut self, msg: MsgId, now_us: u64, state: EndState) -> Result<(), StoreFault> {
        self.writable()?;
        let m = self
            .messages
            .get_mut(&msg)
            .filter(|m| m.end.is_none())
            .ok_or(StoreFault::MessageNotOpen(msg))?;
        m.end = Some((state, now_us.saturating_sub(msg.start_us())));
        self.open -= 1;
        Ok(())
    }

    fn replay_from(&self, msg: MsgId, from_seq: u32) -> Result<MemoryCursor, StoreFault> {
        if !self.messages.contains_key(&msg) {
            return Err(StoreFault::MessageUnknown(msg));
        }
        Ok(MemoryCursor {
            msg,
            next_seq: from_seq,
        })
    }

    fn replay_next(
        &self,
        cursor: &mut MemoryCursor,
        frames_max: usize,
        out: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<ReplayStatus, StoreFault> {
        let m = self
            .messages
            .get(&cursor.msg)
            .ok_or(StoreFault::MessageUnknown(cursor.msg))?;
        let mut given = 0;
        while given < frames_max.max(1) && cursor.next_seq < m.frames_durable {
            out(cursor.next_seq, &m.frames[cursor.next_seq as usize]);
            cursor.next_seq += 1;
            given += 1;
        }
        if cursor.next_seq < m.frames_durable {
            return Ok(ReplayStatus::More);
        }
        Ok(match m.end {
            Some((state, _)) if m.end_durable => ReplayStatus::Ended {
                frame_count: m.frames_durable,
                state,
            },
            _ => ReplayStatus::CaughtUp {
                live_from_seq: m.frames_durable,
            },
        })
    }

    fn timeline(&self, conv: ConvId, from: TimelineFrom, limit: usize) -> Vec<MessageHeader> {
        let Some(ids) = self.timelines.get(&conv) else {
            return Vec::new();
        };
        ids.iter()
            .filter(|id| match from {
                TimelineFrom::Since(t) => id.start_us() >= t,
                TimelineFrom::After(after) => **id > after,
            })
            .take(limit)
            .filter_map(|id| self.messages.get(id).map(|m| Self::header(*id, m)))
            .collect()
    }

    fn message_info(&self, msg: MsgId) -> Option<MessageHeader> {
        self.messages.get(&msg).map(|m| Self::header(msg, m))
    }
}
