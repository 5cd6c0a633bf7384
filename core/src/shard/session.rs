//! Sessions: one per client connection, kept in a slab addressed by generation-checked
//! [`ConnId`]s, with the connection's talk streams and subscriptions.

use std::collections::VecDeque;

use crate::ids::{ConvId, ConvName, MsgId};
use crate::token::Grant;

use super::limits::FrameRate;
use super::store::TimelineFrom;

/// A connection as the shard names it: a slab index and the generation of that slot, so a
/// stale id (of a closed connection whose slot was reused) is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// Slot in the shard's session slab.
    pub index: u32,
    /// Generation of the slot when the connection was opened.
    pub generation: u32,
}

/// Where a session is in its life (docs/protocol.md 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionPhase {
    /// Waiting for the hello.
    AwaitingHello,
    /// Hello accepted.
    Open,
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Session {
    pub phase: SessionPhase,
    pub loopback: bool,
    pub session_id: u64,
    pub grant: Option<Grant>,
    /// The grant's subject: the sender name of this session's messages.
    pub sender: String,
    pub last_heard_us: u64,
    pub ping_sent: bool,
    /// Bytes handed to the glue and not yet reported written.
    pub queued_bytes: usize,
    pub talks: Vec<TalkStream>,
    /// Handles refused at `talk_start`: their frames are dropped silently.
    pub refused: VecDeque<u32>,
    /// Handles reported `unknown_stream` once already.
    pub reported_unknown: VecDeque<u32>,
    /// Subscription slots; at most `subs_max`.
    pub subs: Vec<Option<Subscription>>,
    /// Round-robin start for replay pumping.
    pub pump_next: usize,
}

impl Session {
    pub(crate) fn new(loopback: bool, session_id: u64, now_us: u64) -> Self {
        Self {
            phase: SessionPhase::AwaitingHello,
            loopback,
            session_id,
            grant: None,
            sender: String::new(),
            last_heard_us: now_us,
            ping_sent: false,
            queued_bytes: 0,
            talks: Vec::new(),
            refused: VecDeque::new(),
            reported_unknown: VecDeque::new(),
            subs: Vec::new(),
            pump_next: 0,
        }
    }

    pub(crate) fn talk(&self, handle: u32) -> Option<usize> {
        self.talks.iter().position(|t| t.handle == handle)
    }

    pub(crate) fn sub_slot(&self, sub: u32) -> Option<usize> {
        self.subs
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.sub == sub))
    }

    pub(crate) fn sub_count(&self) -> usize {
        self.subs.iter().filter(|s| s.is_some()).count()
    }

    /// Whether the session uses no conversation yet (it may be handed off to an owner).
    pub(crate) fn is_unattached(&self) -> bool {
        self.talks.is_empty() && self.sub_count() == 0
    }
}

/// Where a talk stream's frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TalkRoute {
    /// The message is owned here: its slot in the shard's message slab.
    Local { slot: u32 },
}

/// A client talk stream (docs/protocol.md 5.2).
#[derive(Debug)]
pub(crate) struct TalkStream {
    pub handle: u32,
    pub route: TalkRoute,
    pub rate: FrameRate,
    /// `talk_end` was accepted; the stream waits for its end to be durable.
    pub ending: bool,
}

/// A client subscription (docs/protocol.md 5.3).
#[derive(Debug)]
pub(crate) struct Subscription {
    pub sub: u32,
    pub conv_id: ConvId,
    pub conv_name: ConvName,
    /// Everything stored has been delivered and `caught_up` sent; new messages go live.
    pub live: bool,
    /// Messages to replay next, in id order (at most `replay_page_messages`).
    pub backlog: VecDeque<MsgId>,
    /// Where the next timeline page starts, while the store may hold more to replay.
    pub timeline: Option<TimelineFrom>,
    /// Newest message this subscription has listed or delivered.
    pub last_listed: Option<MsgId>,
    /// Messages being delivered (started, not ended).
    pub deliveries: Vec<Delivery>,
}

/// One message being delivered to one subscription.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivery {
    pub msg: MsgId,
    /// The message stream handle the client knows it by.
    pub handle: u32,
    /// Next frame to deliver; meaningful in replay mode (live deliveries follow the message).
    pub next_seq: u32,
    /// Receiving live frames from the message (listed in its live listeners).
    pub live: bool,
}
