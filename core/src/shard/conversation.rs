//! What a shard keeps for the conversations it owns: their open messages (with the frames
//! not yet durable), who listens, and the message stream handles shared by all listeners.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::ids::{ConvId, ConvName, MsgId, ShardId};

use super::session::ConnId;
use super::store::EndState;

/// A conversation this shard owns and has state for (messages open or listeners).
#[derive(Debug)]
pub(crate) struct Conversation {
    pub id: ConvId,
    /// Slots of its messages in the message slab, oldest first (open or ending).
    pub messages: Vec<u32>,
    /// Subscriptions listening here.
    pub listeners: Vec<ListenerRef>,
    /// Newest message started here (for subscriptions that ask the store for later ones).
    pub newest_msg: Option<MsgId>,
    /// Set when another host owns the conversation and this shard mirrors it for its host's
    /// listeners (see `mirror/`).
    pub mirror: Option<ConvMirror>,
    /// Mirrored messages that ended here (their owner ended them, or this shard cut them
    /// short: a lost owner nobody took the message over from), newest last, at most
    /// [`ENDED_REMEMBERED_MAX`]: an owner announcing one again later (a host that comes back
    /// with a copy of a message another host took over) is not heard twice; its listeners
    /// heard it end and listen from it to hear it again.
    pub ended: VecDeque<MsgId>,
}

/// Mirrored messages ended here that a conversation remembers.
pub(crate) const ENDED_REMEMBERED_MAX: usize = 64;

/// The mirror of a conversation owned on another host: one subscription on the owner (over
/// this shard's uplink to it) feeds every listener of this host.
#[derive(Debug, Clone)]
pub(crate) struct ConvMirror {
    /// The owner shard the subscription was opened on.
    pub owner: ShardId,
    /// The conversation's name (to subscribe again after a map change).
    pub name: ConvName,
    /// The subscription id on the uplink; `None` while detached (retried on the next tick).
    pub sub: Option<u32>,
    /// The owner said `caught_up` on the current subscription: every message starting from
    /// now reaches this mirror. Until then this shard's listeners are not told `caught_up`
    /// either, so "live" means the same on every host.
    pub live: bool,
    /// Messages held from an earlier subscription that the current one has not announced
    /// again yet; those still missing when it catches up are cut here.
    pub orphans: Vec<MsgId>,
}

impl Conversation {
    pub(crate) fn new(id: ConvId) -> Self {
        Self {
            id,
            messages: Vec::new(),
            listeners: Vec::new(),
            newest_msg: None,
            mirror: None,
            ended: VecDeque::new(),
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.messages.is_empty() && self.listeners.is_empty()
    }
}

/// A subscription of a session: its connection and slot in the session's subscription list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenerRef {
    pub conn: ConnId,
    pub slot: u16,
}

/// A live listener of a message: the subscription and the handle it knows the message by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveListener {
    pub listener: ListenerRef,
    /// The message's shared handle (its frames are encoded once for all such listeners), or
    /// the listener's own (a second subscription of one connection to the conversation).
    pub handle: u32,
}

/// Who sends a message's frames (and hears its acks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Talker {
    /// A talk stream of a local session.
    Local { conn: ConnId, stream: u32 },
    /// Nobody since `since_us`: the talker's connection broke; resumable until the grace ends.
    Vanished { since_us: u64 },
    /// Nobody, for good: the message was cut (a limit, shutdown) and only waits for its end
    /// to be durable.
    Gone,
    /// A talker on another host: the frames come from the owner's subscription and are never
    /// stored here (the owner stores them).
    Mirror,
}

/// Whether a message still takes frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessagePhase {
    /// Frames are coming.
    Open,
    /// Ended; kept until its end is durable so late listeners can still read its tail.
    Ending(EndState),
}

/// A message owned here that is open, or ended but not yet durable.
#[derive(Debug)]
pub(crate) struct LiveMessage {
    pub msg: MsgId,
    /// Slot of its conversation in the conversation slab.
    pub conv: u32,
    /// The message stream handle shared by this shard's listeners.
    pub handle: u32,
    pub sender: String,
    pub codec: Bytes,
    /// Frames accepted: `0..accepted`.
    pub accepted: u32,
    /// Payloads of frames `accepted - tail.len() .. accepted`: accepted, not yet durable.
    pub tail: VecDeque<Bytes>,
    pub phase: MessagePhase,
    pub talker: Talker,
    /// Subscriptions receiving its frames as they come.
    pub live: Vec<LiveListener>,
    /// Frames durable as last told to the talker.
    pub stored_acked: u32,
}

impl LiveMessage {
    /// An open message of conversation slot `conv` whose first `durable` frames are in a store
    /// already (0 for a new message), heard through stream `handle`.
    pub(crate) fn open(
        msg: MsgId,
        conv: u32,
        handle: u32,
        sender: String,
        codec: Bytes,
        talker: Talker,
        durable: u32,
    ) -> Self {
        Self {
            msg,
            conv,
            handle,
            sender,
            codec,
            accepted: durable,
            tail: VecDeque::new(),
            phase: MessagePhase::Open,
            talker,
            live: Vec::new(),
            stored_acked: durable,
        }
    }

    /// First sequence number held in the tail (every lower one is durable in the store).
    pub(crate) fn tail_first_seq(&self) -> u32 {
        self.accepted - self.tail.len() as u32
    }
}

/// A slab with a free list: stable `u32` indexes, no lookup by key on the hot path.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub(crate) fn insert(&mut self, item: T) -> u32 {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            self.items[i as usize] = Some(item);
            return i;
        }
        self.items.push(Some(item));
        (self.items.len() - 1) as u32
    }

    pub(crate) fn remove(&mut self, i: u32) -> Option<T> {
        let item = self.items.get_mut(i as usize)?.take()?;
        self.free.push(i);
        self.len -= 1;
        Some(item)
    }

    pub(crate) fn get(&self, i: u32) -> Option<&T> {
        self.items.get(i as usize)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.items.get_mut(i as usize)?.as_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| (i as u32, t)))
    }
}

/// Message stream handles of this shard. A handle is reserved while the live message holds it
/// or any delivery uses it, so no connection ever sees one handle for two open messages.
#[derive(Debug, Default)]
pub(crate) struct Handles {
    refs: Vec<u32>,
    free: Vec<u32>,
}

impl Handles {
    pub(crate) fn allocate(&mut self) -> u32 {
        if let Some(h) = self.free.pop() {
            self.refs[h as usize] = 1;
            return h;
        }
        self.refs.push(1);
        (self.refs.len() - 1) as u32
    }

    pub(crate) fn retain(&mut self, handle: u32) {
        if let Some(r) = self.refs.get_mut(handle as usize) {
            *r += 1;
        }
    }

    pub(crate) fn release(&mut self, handle: u32) {
        if let Some(r) = self.refs.get_mut(handle as usize)
            && *r > 0
        {
            *r -= 1;
            if *r == 0 {
                self.free.push(handle);
            }
        }
    }

    /// Handles reserved now (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.refs.iter().filter(|r| **r > 0).count()
    }
}
