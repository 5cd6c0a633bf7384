//! The shard: a sans-IO state machine that serves the connections of one core and owns the
//! conversations the ownership map gives it.
//!
//! What it is: every decision of the relay's live path: hello and tokens, talk streams (ids,
//! sequence checks, limits), fan-out of each frame encoded once, catch-up from the store to
//! live, slow listeners, resume, history, idle timeouts, shutdown. What it is not: sockets,
//! timers, disk I/O or threads; the relay's glue does those and calls in with `now_us`.
//!
//! ```text
//!  glue ── connection_opened / handle_request / decode_failed / bytes_written ──► Shard
//!       ── store_acks (after a group commit) / handle_timeout / handle_peer ─────►   │
//!                                                         BodyStore (in memory) ◄──┤
//!  glue ◄── poll_action: Send{conn, Bytes} | Close | ToShard | HandOff | WakeAt ────┘
//! ```
//!
//! `docs/shard.md` describes the state, the catch-up and slow-listener algorithms and the
//! limits.

mod acks;
mod auth;
mod cluster_map;
mod conversation;
pub(crate) mod handover;
mod history;
mod limits;
mod listener;
mod memory_store;
mod mirror;
mod owner_catch_up;
mod peer;
pub mod peer_wire;
mod recovered;
mod routing;
mod session;
mod shutdown;
mod store;
mod talk;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};

use crate::ids::{ConvId, MsgId, MsgIdGenerator, ShardId};
use crate::map::Membership;
use crate::protocol::{DecodeError, ErrorCode, ErrorSubject, Event, Request, write_event};
use crate::token::{ConvPrefix, Grant, Keyring, Right, Rights, Scope, Subject};

use cluster_map::Parked;
use conversation::{Conversation, Handles, LiveMessage, Slab};
use session::{Session, SessionPhase};

pub use cluster_map::{PARKED_REQUESTS_MAX, PARKED_WAIT_US};
pub use limits::ShardConfig;
pub use memory_store::{MEMORY_STORE_OPEN_MESSAGES_MAX, MemoryCursor, MemoryStore};
pub use peer::{MapVersion, PeerMessage, RouteReleased, SessionHandoff};
pub use session::ConnId;
pub use store::{
    Appended, BodyStore, DurableAck, EndState, MessageHeader, MessageState, ReplayStatus,
    StoreAcks, StoreFault, TimelineFrom,
};

/// Bits of a message stream handle below the shard's own prefix: a shard hands out at most
/// 2^24 handles at once, and handles of different shards of a host never collide.
pub const HANDLE_BITS: u32 = 24;

/// Handles remembered per connection for "dropped silently" and "reported once" rules.
pub const HANDLES_REMEMBERED_MAX: usize = 64;

/// Steps of replay one pump of a connection runs before yielding to other work.
pub const PUMP_STEPS_MAX: usize = 1024;

/// What the glue must do. Drain them with [`Shard::poll_action`] after every input.
#[derive(Debug, Clone)]
pub enum Action {
    /// Write these bytes to the connection (a shared `Bytes`: fan-out clones a refcount).
    Send {
        /// The connection.
        conn: ConnId,
        /// One or more whole encoded events.
        bytes: Bytes,
    },
    /// Close the connection after writing what was queued before (the shard has forgotten it).
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Deliver a message to another shard of this host.
    ToShard {
        /// The receiving shard.
        shard: ShardId,
        /// What to deliver.
        msg: PeerMessage,
    },
    /// Move the connection's socket (and its unread input bytes) to the owner shard, which
    /// continues the session with [`Shard::connection_adopted`]. This shard has forgotten it.
    HandOff {
        /// The connection.
        conn: ConnId,
        /// The shard that owns the session's conversation.
        to: ShardId,
        /// The session, for the new shard.
        state: SessionHandoff,
    },
    /// Call [`Shard::handle_timeout`] at this time (µs since the Unix epoch).
    WakeAt(u64),
}

/// Running totals of what the shard did, for the relay's metrics (plain counters: the shard
/// is single-threaded and the glue publishes copies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardTally {
    /// Frame events queued for connections (live and replay).
    pub frame_events_out: u64,
    /// Live listeners that fell back to replay because their send queue was full.
    pub slow_listener_fallbacks: u64,
    /// Messages started on this shard.
    pub messages_started: u64,
    /// Messages a talker resumed here after their owner died or drained (adopted under
    /// their original id).
    pub messages_handed_over: u64,
    /// Messages ended on this shard (complete or truncated).
    pub messages_ended: u64,
}

/// The answer to [`Shard::connection_opened`].
#[derive(Debug, Clone)]
pub enum Opened {
    /// The connection is served under this id.
    Accepted(ConnId),
    /// The shard is full: write these bytes (an `error too_many_connections`) and close.
    Refused {
        /// The encoded error event.
        goodbye: Bytes,
    },
}

#[derive(Debug)]
struct SessionSlot {
    generation: u32,
    session: Option<Session>,
}

/// One shard's state machine; see the module docs. `S` is its body store.
#[derive(Debug)]
pub struct Shard<S: BodyStore> {
    config: ShardConfig,
    shard: ShardId,
    local_shards: Membership,
    keyring: Keyring,
    store: S,
    ids: MsgIdGenerator,
    sessions: Vec<SessionSlot>,
    free_sessions: Vec<u32>,
    session_count: usize,
    next_session_id: u64,
    conversations: Slab<Conversation>,
    conv_by_id: HashMap<ConvId, u32>,
    messages: Slab<LiveMessage>,
    msg_by_id: HashMap<MsgId, u32>,
    /// Proxy sessions of connections served by other shards: (shard, its conn) -> ours.
    proxies: HashMap<(ShardId, ConnId), ConnId>,
    /// The whole cluster's map (this host's shards and every other live host's); equal to
    /// `local_shards` on a single host.
    cluster: Membership,
    /// Conversations owned on other hosts that this shard mirrors for its host's listeners.
    mirrors: mirror::Mirrors,
    /// Requests routed under a newer map than this shard's, oldest first.
    parked: VecDeque<Parked>,
    handles: Handles,
    handle_base: u32,
    actions: VecDeque<Action>,
    encode_buf: BytesMut,
    replay_scratch: Vec<(u32, Bytes)>,
    pump_queue: Vec<ConnId>,
    wake_at: Option<u64>,
    shutdown_close_at_us: Option<u64>,
    /// Client addresses of live hosts a draining shard sends its clients to, dealt in turn.
    shutdown_reconnect_to: Vec<String>,
    shutdown_reconnect_next: usize,
    now_us: u64,
    tally: ShardTally,
}

impl<S: BodyStore> Shard<S> {
    /// A shard `shard` of the host whose shards are `local_shards`, verifying tokens with
    /// `keyring`, storing into `store`. Seed the id generator with [`Shard::resume_ids_after`]
    /// when the store already holds messages.
    pub fn new(
        config: ShardConfig,
        shard: ShardId,
        local_shards: Membership,
        keyring: Keyring,
        store: S,
        now_us: u64,
    ) -> Self {
        let position = local_shards
            .shards()
            .iter()
            .position(|s| s.shard == shard)
            .unwrap_or(0);
        Self {
            config,
            shard,
            cluster: local_shards.clone(),
            local_shards,
            keyring,
            store,
            ids: MsgIdGenerator::new(shard),
            sessions: Vec::new(),
            free_sessions: Vec::new(),
            session_count: 0,
            next_session_id: 0,
            conversations: Slab::default(),
            conv_by_id: HashMap::new(),
            messages: Slab::default(),
            msg_by_id: HashMap::new(),
            proxies: HashMap::new(),
            mirrors: mirror::Mirrors::default(),
            parked: VecDeque::new(),
            handles: Handles::default(),
            // A host has at most 256 shards with distinct prefixes; more share prefixes and
            // must not serve one connection from two of them (they never do: see docs).
            handle_base: ((position as u32) & 0xff) << HANDLE_BITS,
            actions: VecDeque::new(),
            encode_buf: BytesMut::with_capacity(64 * 1024),
            replay_scratch: Vec::new(),
            pump_queue: Vec::new(),
            wake_at: None,
            shutdown_close_at_us: None,
            shutdown_reconnect_to: Vec::new(),
            shutdown_reconnect_next: 0,
            now_us,
            tally: ShardTally::default(),
        }
    }

    /// Makes every later message id greater than `newest` (the store's newest message), so a
    /// clock that stepped back across a restart cannot reissue an id.
    pub fn resume_ids_after(&mut self, newest: MsgId) {
        self.ids.resume_after(newest);
    }

    /// The store, for the glue's commit work (`poll_commit`, `commit_completed`).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The store, read-only.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The configuration in force.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.shard
    }

    /// Connections served now.
    pub fn connection_count(&self) -> usize {
        self.session_count
    }

    /// What the shard did so far.
    pub fn tally(&self) -> ShardTally {
        self.tally
    }

    /// Messages open or ending on this shard.
    pub fn live_message_count(&self) -> usize {
        self.messages.len()
    }

    /// The next thing to do, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A new connection; `loopback` says whether the peer address is a loopback one (dev mode
    /// tokens are accepted only there).
    pub fn connection_opened(&mut self, now_us: u64, loopback: bool) -> Opened {
        self.now_us = now_us;
        if self.session_count >= self.config.connections_max {
            return self.connection_refusal();
        }
        let session_id = self.new_session_id();
        let conn = self.insert_session(Session::new(loopback, session_id, now_us));
        self.schedule_wake();
        Opened::Accepted(conn)
    }

    /// The answer to a connection the shard has no room for.
    fn connection_refusal(&self) -> Opened {
        let goodbye = encode_standalone(&Event::Error {
            code: ErrorCode::TOO_MANY_CONNECTIONS,
            about: ErrorSubject::Connection,
            text: "this shard serves its maximum of connections".into(),
        });
        Opened::Refused { goodbye }
    }

    /// A session handed off by another shard of this host; its request is processed here.
    pub fn connection_adopted(&mut self, now_us: u64, state: SessionHandoff) -> Opened {
        self.now_us = now_us;
        if self.session_count >= self.config.connections_max {
            let goodbye = encode_standalone(&Event::Error {
                code: ErrorCode::TOO_MANY_CONNECTIONS,
                about: ErrorSubject::Connection,
                text: "the owner shard serves its maximum of connections".into(),
            });
            return Opened::Refused { goodbye };
        }
        let mut session = Session::new(state.loopback, state.session_id, now_us);
        session.phase = SessionPhase::Open;
        session.sender = state.grant.subject.as_str().to_owned();
        session.grant = Some(state.grant);
        session.queued_bytes = state.queued_bytes;
        let conn = self.insert_session(session);
        self.dispatch(conn, state.request);
        self.finish_input();
        Opened::Accepted(conn)
    }

    /// One decoded request from a connection.
    pub fn handle_request(&mut self, now_us: u64, conn: ConnId, request: Request) {
        self.now_us = now_us;
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        session.last_heard_us = now_us;
        session.ping_sent = false;
        if session.phase == SessionPhase::AwaitingHello {
            match request {
                Request::Hello { version, token, .. } => self.hello(conn, version, &token),
                _ => self.fail_connection(
                    conn,
                    ErrorCode::HELLO_REQUIRED,
                    "the first request must be hello",
                ),
            }
        } else {
            self.dispatch(conn, request);
        }
        self.finish_input();
    }

    /// The connection's input did not decode: the client is told why and the connection closes.
    pub fn decode_failed(&mut self, now_us: u64, conn: ConnId, error: &DecodeError) {
        self.now_us = now_us;
        let text = error.to_string();
        self.fail_connection(conn, error.error_code(), &text);
        self.finish_input();
    }

    /// The glue wrote `n` bytes of what it was handed for the connection.
    pub fn bytes_written(&mut self, now_us: u64, conn: ConnId, n: usize) {
        self.now_us = now_us;
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        session.queued_bytes = session.queued_bytes.saturating_sub(n);
        // Room in the queue only matters to a session with catch-up work (a live one has
        // none): no pump, no allocation for the common write.
        let catching_up = session.has_catch_up_work();
        self.attribute_written(conn, n);
        if catching_up {
            self.pump_queue.push(conn);
        }
        self.finish_input();
    }

    /// The peer hung up or the socket failed.
    pub fn connection_closed(&mut self, now_us: u64, conn: ConnId) {
        self.now_us = now_us;
        self.remove_session(conn);
        self.finish_input();
    }

    /// Timers: idle connections (ping, then close), resume grace periods, shutdown.
    pub fn handle_timeout(&mut self, now_us: u64) {
        self.now_us = now_us;
        if self.wake_at.is_some_and(|t| t <= now_us) {
            self.wake_at = None;
        }
        let idle_us = u64::from(self.config.idle_timeout_ms) * 1000;
        let mut idle = Vec::new();
        let mut ping = Vec::new();
        for (index, slot) in self.sessions.iter().enumerate() {
            let Some(session) = slot.session.as_ref().filter(|s| s.remote.is_none()) else {
                continue;
            };
            let conn = ConnId {
                index: index as u32,
                generation: slot.generation,
            };
            let silent_us = now_us.saturating_sub(session.last_heard_us);
            if silent_us >= idle_us {
                idle.push(conn);
            } else if silent_us >= idle_us / 2 && !session.ping_sent {
                ping.push(conn);
            }
        }
        for conn in idle {
            self.fail_connection(conn, ErrorCode::IDLE_TIMEOUT, "nothing received in time");
        }
        for conn in ping {
            if let Some(session) = self.session_mut(conn) {
                session.ping_sent = true;
            }
            self.send_event(conn, &Event::Ping { nonce: now_us });
        }
        self.expire_vanished_talkers();
        self.expire_held_for_handover();
        if !self.parked.is_empty() {
            self.release_parked();
        }
        if self.mirrors.retry {
            self.retarget_mirrors();
        }
        if self.shutdown_close_at_us.is_some_and(|t| t <= now_us) {
            let conns: Vec<ConnId> = self.conn_ids().collect();
            for conn in conns {
                self.close(conn);
            }
        }
        self.finish_input();
    }

    fn dispatch(&mut self, conn: ConnId, request: Request) {
        if let Some(owner) = self.remote_route_of(conn, &request) {
            return self.forward(conn, owner, request);
        }
        match request {
            Request::Hello { .. } => self.fail_connection(
                conn,
                ErrorCode::UNEXPECTED_REQUEST,
                "the session is open already",
            ),
            Request::TalkStart {
                stream,
                conversation,
                codec,
                resume,
            } => self.talk_start(conn, stream, conversation, codec, resume),
            Request::TalkFrame {
                stream,
                seq,
                payload,
            } => self.talk_frame(conn, stream, seq, payload),
            Request::TalkEnd {
                stream,
                frame_count,
            } => self.talk_end(conn, stream, frame_count),
            Request::Listen {
                sub,
                conversation,
                from,
            } => self.listen(conn, sub, conversation, from),
            Request::Unlisten { sub } => self.unlisten(conn, sub),
            Request::History {
                request,
                conversation,
                since_us,
                limit,
            } => self.history(conn, request, conversation, since_us, limit),
            Request::Ping { nonce } => self.send_event(conn, &Event::Pong { nonce }),
            Request::Pong { .. } => {}
        }
    }

    /// Work left over by an input: replay pumps, the next timer.
    fn finish_input(&mut self) {
        if !self.pump_queue.is_empty() {
            let mut queue = std::mem::take(&mut self.pump_queue);
            queue.sort_unstable();
            queue.dedup();
            for conn in queue.drain(..) {
                self.pump(conn);
            }
            // Keep the allocation unless pumps queued themselves again meanwhile.
            if self.pump_queue.is_empty() {
                self.pump_queue = queue;
            }
        }
        // Pumps that ran out of steps queued themselves again: they continue on a wake-up.
        self.schedule_wake();
    }

    fn schedule_wake(&mut self) {
        let at = if self.pump_queue.is_empty() {
            if self.session_count == 0 && self.messages.len() == 0 {
                return;
            }
            self.now_us.saturating_add(self.config.timer_tick_ms * 1000)
        } else {
            self.now_us
        };
        if self.wake_at.is_some_and(|t| t <= at) {
            return;
        }
        self.wake_at = Some(at);
        self.actions.push_back(Action::WakeAt(at));
    }

    /// Holds `message` in memory: in the message slab, by id, and in its conversation (whose
    /// newest message it may become). Returns its slot.
    pub(super) fn insert_live_message(&mut self, message: LiveMessage) -> u32 {
        let (msg, conv_slot) = (message.msg, message.conv);
        let slot = self.messages.insert(message);
        self.msg_by_id.insert(msg, slot);
        if let Some(conv) = self.conversations.get_mut(conv_slot) {
            conv.messages.push(slot);
            if conv.newest_msg.is_none_or(|n| msg > n) {
                conv.newest_msg = Some(msg);
            }
        }
        slot
    }

    /// The messages of conversation slot `conv_slot` that still take frames, oldest first.
    fn open_messages(&self, conv_slot: u32) -> Vec<MsgId> {
        self.conversations
            .get(conv_slot)
            .map(|c| {
                c.messages
                    .iter()
                    .filter_map(|s| self.messages.get(*s))
                    .filter(|m| m.phase == conversation::MessagePhase::Open)
                    .map(|m| m.msg)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn conversation_slot(&mut self, name: &crate::ids::ConvName) -> Option<u32> {
        self.conversation_slot_of(name.id())
    }

    fn drop_conversation_if_idle(&mut self, slot: u32) {
        if self
            .conversations
            .get(slot)
            .is_some_and(Conversation::is_idle)
            && let Some(conv) = self.conversations.remove(slot)
        {
            self.conv_by_id.remove(&conv.id);
        }
    }

    pub(super) fn allocate_handle(&mut self) -> u32 {
        self.handle_base | (self.handles.allocate() & ((1 << HANDLE_BITS) - 1))
    }

    fn retain_handle(&mut self, handle: u32) {
        self.handles.retain(handle & ((1 << HANDLE_BITS) - 1));
    }

    fn release_handle(&mut self, handle: u32) {
        self.handles.release(handle & ((1 << HANDLE_BITS) - 1));
    }
}

/// The grant of a dev-mode session: every right on every conversation, never expiring.
fn dev_grant(keyring: &Keyring) -> Grant {
    Grant {
        // Invariant: "dev" is 1..=64 printable bytes, a valid subject.
        subject: Subject::new("dev").expect("\"dev\" is a valid subject"),
        rights: Rights::of(&[Right::Talk, Right::Listen, Right::History]),
        // Invariant: the empty prefix is valid (no bytes, no control characters).
        scope: Scope::Prefix(ConvPrefix::new("").expect("the empty prefix is valid")),
        expires_at_s: u64::MAX,
        key_id: keyring.minting_key_id(),
    }
}

fn encode_standalone(event: &Event) -> Bytes {
    let mut buf = BytesMut::new();
    // A connection-level error with a short fixed text always encodes.
    let _ = write_event(event, &mut buf);
    buf.freeze()
}
