//! The body store as the shard sees it: a trait over hark-storage's in-memory API, so the
//! relay implements it for `hark_storage::Store` with a thin adapter (hark-storage depends on
//! hark-core, not the other way round). The vocabulary types here (`EndState`,
//! `MessageState`, `TimelineFrom`, `ReplayStatus`, `Appended`, `DurableAck`) are the ones
//! hark-storage itself uses. [`super::MemoryStore`] implements it for tests and
//! simulations.
//!
//! Every call is in-memory work on the shard thread. Durability happens outside: the glue
//! commits (group commit) and feeds what became durable back to the shard as [`StoreAcks`].

use thiserror::Error;

use crate::ids::{ConvId, MsgId};

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndState {
    /// The talker ended it with every frame it announced.
    Complete,
    /// Cut short: the talker vanished, broke a limit, or the relay stopped.
    Truncated,
}

/// Whether a stored message is still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Not ended yet.
    Open,
    /// Ended.
    Ended(EndState),
}

/// A message's header, as `message_info` and `timeline` return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// The message.
    pub msg: MsgId,
    /// Its conversation.
    pub conv: ConvId,
    /// Who talked (the talker's token subject).
    pub sender: Vec<u8>,
    /// Codec metadata given at start.
    pub codec: Vec<u8>,
    /// Frames accepted (all of them once ended).
    pub frame_count: u32,
    /// Frames durable: `0..frames_durable` can be replayed.
    pub frames_durable: u32,
    /// First to last frame, once ended.
    pub duration_us: Option<u64>,
    /// Open, or how it ended.
    pub state: MessageState,
}

/// Where a timeline query starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineFrom {
    /// Messages that started at or after this time (µs since the Unix epoch).
    Since(u64),
    /// Messages with a greater id than this one.
    After(MsgId),
}

/// Where a replay stands after a `replay_next` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStatus {
    /// More durable frames are ready: call again.
    More,
    /// Every durable frame has been returned; the message is still open or its last frames
    /// are not durable yet. Frames from `live_from_seq` on come from the owner's memory.
    CaughtUp {
        /// First sequence number not yet durable.
        live_from_seq: u32,
    },
    /// Every frame has been returned and the message is over.
    Ended {
        /// Frames in the message.
        frame_count: u32,
        /// How it ended.
        state: EndState,
    },
}

/// What `append` did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored in memory; durable after a commit.
    Stored,
    /// That sequence number was stored before; nothing changed.
    Duplicate,
}

/// The highest frame of a message made durable by a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableAck {
    /// The message.
    pub msg: MsgId,
    /// Every frame up to and including this sequence number is durable.
    pub durable_through_seq: u32,
}

/// What a completed group commit made durable (hark-storage's `CommitAcks`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreAcks {
    /// Messages with newly durable frames.
    pub durable: Vec<DurableAck>,
    /// Messages whose end is now durable, and how they ended.
    pub ended: Vec<(MsgId, EndState)>,
}

/// Why the store refused a call. The shard turns each into an error code for the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StoreFault {
    /// The store cannot take or serve data now (commit backlog full, disk full, I/O error,
    /// corrupt record). Clients get `store_unavailable`; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store's limit of open messages is reached; clients get `too_many_open_messages`.
    #[error("too many open messages in the store")]
    TooManyOpenMessages,
    /// No such message (never stored, or removed by retention): `message_unavailable`.
    #[error("message {0} is not in the store")]
    MessageUnknown(MsgId),
    /// The message is not open for appends (ended, or cut by a restart).
    #[error("message {0} is not open")]
    MessageNotOpen(MsgId),
    /// A message with this id exists already (the id generator was not seeded after a
    /// restart; see `MsgIdGenerator::resume_after`).
    #[error("message {0} exists already")]
    MessageExists(MsgId),
    /// A frame skipped sequence numbers (the shard checks this first; a bug if seen).
    #[error("message {msg}: frame {got} arrived, {expected} was expected")]
    SequenceGap {
        /// The message.
        msg: MsgId,
        /// What the store expected.
        expected: u32,
        /// What arrived.
        got: u32,
    },
}

/// The shard's view of its body store (hark-storage's `Store`, in memory only).
pub trait BodyStore {
    /// A reader's position in one message.
    type Cursor;

    /// Records the start of `msg` in `conv`.
    fn start_message(
        &mut self,
        msg: MsgId,
        conv: ConvId,
        sender: &[u8],
        codec: &[u8],
    ) -> Result<(), StoreFault>;

    /// Appends frame `seq` (the next one, or a duplicate) of an open message.
    fn append(&mut self, msg: MsgId, seq: u32, frame: &[u8]) -> Result<Appended, StoreFault>;

    /// Ends an open message at `now_us`; the end is reported durable in [`StoreAcks::ended`].
    fn end_message(&mut self, msg: MsgId, now_us: u64, state: EndState) -> Result<(), StoreFault>;

    /// A cursor on `msg` at frame `from_seq`.
    fn replay_from(&self, msg: MsgId, from_seq: u32) -> Result<Self::Cursor, StoreFault>;

    /// Hands up to `frames_max` durable frames from the cursor on to `out`, in order, and
    /// advances the cursor.
    fn replay_next(
        &self,
        cursor: &mut Self::Cursor,
        frames_max: usize,
        out: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<ReplayStatus, StoreFault>;

    /// Messages of `conv` from `from` on, oldest first, at most `limit`.
    fn timeline(&self, conv: ConvId, from: TimelineFrom, limit: usize) -> Vec<MessageHeader>;

    /// One message's header.
    fn message_info(&self, msg: MsgId) -> Option<MessageHeader>;
}
