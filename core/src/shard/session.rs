//! Sessions: one per client connection, kept in a slab addressed by generation-checked
//! [`ConnId`]s, with the connection's talk streams and subscriptions.

use std::collections::VecDeque;

use crate::ids::{ConvId, ConvName, MsgId};
use crate::token::Grant;

use bytes::Bytes;

use super::limits::FrameRate;
use super::owner_catch_up::{HeardBefore, OwnerCatchUp};
use super::store::{BodyStore, TimelineFrom};
use super::{Action, PeerMessage, SessionSlot, Shard};
use crate::ids::ShardId;
use crate::protocol::{ErrorCode, ErrorSubject, Event, write_event};

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
    /// For a proxy session: the shard serving the client and its id of the connection.
    pub remote: Option<(ShardId, ConnId)>,
    /// Owner shards holding a proxy session of this connection.
    pub owners: Vec<ShardId>,
    /// Talk streams served by another shard.
    pub remote_talks: Vec<(u32, ShardId)>,
    /// Subscriptions served by another shard.
    pub remote_subs: Vec<(u32, ShardId)>,
    /// While `owners` is not empty: who produced the bytes queued for the socket, in order
    /// (`None` for this shard), so writes are credited to the right owner.
    pub sent_log: VecDeque<(Option<ShardId>, usize)>,
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
            remote: None,
            owners: Vec::new(),
            remote_talks: Vec::new(),
            remote_subs: Vec::new(),
            sent_log: VecDeque::new(),
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
        self.talks.is_empty() && self.sub_count() == 0 && self.owners.is_empty()
    }

    /// Talk streams open here or at owners.
    pub(crate) fn talk_count(&self) -> usize {
        self.talks.len() + self.remote_talks.len()
    }

    /// Subscriptions open here or at owners.
    pub(crate) fn all_sub_count(&self) -> usize {
        self.sub_count() + self.remote_subs.len()
    }

    /// Counts `bytes` as queued and says how to hand them out: a socket write, or for a proxy
    /// session a delivery to the shard serving the client.
    pub(crate) fn output(&mut self, conn: ConnId, bytes: Bytes) -> Action {
        self.queued_bytes += bytes.len();
        match self.remote {
            Some((shard, conn)) => Action::ToShard {
                shard,
                msg: PeerMessage::Deliver { conn, bytes },
            },
            None => {
                self.log_sent(None, bytes.len());
                Action::Send { conn, bytes }
            }
        }
    }

    /// Whether a pump could have work: a subscription still catching up, or a delivery
    /// replaying (a listener that fell behind).
    pub(crate) fn has_catch_up_work(&self) -> bool {
        self.subs
            .iter()
            .flatten()
            .any(|sub| !sub.live || sub.deliveries.iter().any(|d| !d.live))
    }

    /// Remembers who produced `len` queued bytes (only while owners elsewhere deliver too).
    pub(crate) fn log_sent(&mut self, source: Option<ShardId>, len: usize) {
        if self.owners.is_empty() {
            return;
        }
        match self.sent_log.back_mut() {
            Some((last, n)) if *last == source => *n += len,
            _ => self.sent_log.push_back((source, len)),
        }
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
    /// Set while the subscription catches up through its own subscription on the owner host
    /// (listening from a message or a time to a mirrored conversation, `owner_catch_up.rs`):
    /// the local pump then runs no store timeline for it.
    pub through_owner: Option<Box<OwnerCatchUp>>,
    /// Set when such a catch-up switched to the mirror: the messages it delivered (or that
    /// fall before the listen's start) are not announced to it again by the mirror.
    pub heard_before: Option<HeardBefore>,
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

/// The session slab and what is sent to connections.
impl<S: BodyStore> Shard<S> {
    pub(super) fn new_session_id(&mut self) -> u64 {
        self.next_session_id += 1;
        (u64::from(self.shard.core) << 48) | (self.next_session_id & 0xffff_ffff_ffff)
    }

    pub(super) fn insert_session(&mut self, session: Session) -> ConnId {
        self.session_count += 1;
        if let Some(index) = self.free_sessions.pop() {
            let slot = &mut self.sessions[index as usize];
            slot.session = Some(session);
            return ConnId {
                index,
                generation: slot.generation,
            };
        }
        self.sessions.push(SessionSlot {
            generation: 0,
            session: Some(session),
        });
        ConnId {
            index: (self.sessions.len() - 1) as u32,
            generation: 0,
        }
    }

    pub(super) fn session(&self, conn: ConnId) -> Option<&Session> {
        let slot = self.sessions.get(conn.index as usize)?;
        if slot.generation != conn.generation {
            return None;
        }
        slot.session.as_ref()
    }

    pub(super) fn session_mut(&mut self, conn: ConnId) -> Option<&mut Session> {
        let slot = self.sessions.get_mut(conn.index as usize)?;
        if slot.generation != conn.generation {
            return None;
        }
        slot.session.as_mut()
    }

    pub(super) fn conn_ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.sessions.iter().enumerate().filter_map(|(i, slot)| {
            slot.session.as_ref().map(|_| ConnId {
                index: i as u32,
                generation: slot.generation,
            })
        })
    }

    /// Removes the session from the slab without releasing what it uses (handoff of an
    /// unattached session).
    pub(super) fn take_session(&mut self, conn: ConnId) -> Option<Session> {
        let slot = self.sessions.get_mut(conn.index as usize)?;
        if slot.generation != conn.generation {
            return None;
        }
        let session = slot.session.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free_sessions.push(conn.index);
        self.session_count -= 1;
        Some(session)
    }

    /// Forgets a session: its talk streams' messages wait for a resume, its subscriptions end.
    pub(super) fn remove_session(&mut self, conn: ConnId) {
        let Some(session) = self.session(conn) else {
            return;
        };
        let slots: Vec<usize> = (0..session.subs.len()).collect();
        for slot in slots {
            self.drop_subscription(conn, slot);
        }
        self.detach_talkers(conn);
        if let Some(session) = self.take_session(conn) {
            for shard in session.owners {
                self.actions.push_back(Action::ToShard {
                    shard,
                    msg: PeerMessage::Detach { conn },
                });
            }
            if let Some(origin) = session.remote {
                self.proxies.remove(&origin);
            }
        }
    }

    /// Sends `error` with a closing code and closes the connection.
    pub(super) fn fail_connection(&mut self, conn: ConnId, code: ErrorCode, text: &str) {
        if self.session(conn).is_none() {
            return;
        }
        self.send_error(conn, code, ErrorSubject::Connection, text);
        self.close(conn);
    }

    pub(super) fn close(&mut self, conn: ConnId) {
        if self.session(conn).is_none() {
            return;
        }
        let remote = self.session(conn).and_then(|s| s.remote);
        self.remove_session(conn);
        match remote {
            Some((shard, their)) => self.actions.push_back(Action::ToShard {
                shard,
                msg: PeerMessage::Close { conn: their },
            }),
            None => self.actions.push_back(Action::Close { conn }),
        }
    }

    pub(super) fn send_error(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        about: ErrorSubject,
        text: &str,
    ) {
        let mut text = text.to_owned();
        if text.len() > crate::protocol::ERROR_TEXT_LEN_MAX {
            let mut cut = crate::protocol::ERROR_TEXT_LEN_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        self.send_event(conn, &Event::Error { code, about, text });
    }

    pub(super) fn send_event(&mut self, conn: ConnId, event: &Event) {
        if write_event(event, &mut self.encode_buf).is_err() {
            // Every event the shard builds respects the protocol's limits (texts are cut,
            // history pages are sized); an encoding failure would be a bug, not input.
            self.encode_buf.clear();
            return;
        }
        let bytes = self.encode_buf.split().freeze();
        self.send(conn, bytes);
    }

    /// Hands bytes to the glue and counts them against the connection's send queue; a
    /// connection above the hard cap (a client that stopped reading) is closed.
    pub(super) fn send(&mut self, conn: ConnId, bytes: Bytes) {
        let hard_max = self.config.send_queue_bytes_hard_max;
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        let action = session.output(conn, bytes);
        let over = session.queued_bytes > hard_max;
        self.actions.push_back(action);
        if over {
            self.close(conn);
        }
    }
}
