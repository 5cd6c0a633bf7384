//! A shard thread's shared state: the sans-IO shard, its connections, its mesh outbox and its
//! statistics, and the one place its actions are carried out ([`Ctx::dispatch`]).
//!
//! Every task of the thread borrows the context for one step of work and never across an
//! `await`, so the shard sees its inputs one at a time, in the order they happened.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::rc::Rc;

use bytes::BytesMut;
use hark_core::ShardId;
use hark_core::shard::{Action, ConnId, PeerMessage, SessionHandoff, Shard};

use super::conn::{Conn, Queued};
use super::wake::{WaitList, Wakeup};
use crate::mesh::{Outbox, PushError};
use crate::metrics::ShardStats;
use crate::store::ShardStore;

/// The context as the thread's tasks share it.
pub(crate) type SharedCtx = Rc<RefCell<Ctx>>;

/// Mesh items waiting for room in a full lane (all lanes together) beyond which readers stop
/// reading their sockets until the other shards catch up: TCP flow control then slows the
/// clients instead of this shard's memory growing.
pub(crate) const MESH_OVERFLOW_PAUSE: usize = 16 * 1024;

/// Wake-up times kept at most (the shard asks for a few: its tick, a grace period, the
/// shutdown linger).
pub(crate) const WAKE_TIMES_MAX: usize = 64;

/// What travels between the shard threads of one host.
#[derive(Debug)]
pub(crate) enum MeshItem {
    /// A message of the shard logic.
    Peer(PeerMessage),
    /// A connection moving to the shard that owns its conversation.
    HandOff(Box<HandOffSocket>),
    /// A peer link accepted by another shard for this one.
    Link(Box<super::link::AcceptedLink>),
}

/// A connection on its way to another shard: the socket, the input read and not decoded, the
/// output queued and not written, and the session.
#[derive(Debug)]
pub(crate) struct HandOffSocket {
    pub(crate) socket: std::net::TcpStream,
    pub(crate) input: BytesMut,
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) state: SessionHandoff,
}

/// The connections a shard serves, indexed like the shard's own session slab (`ConnId::index`),
/// so finding a fan-out's connection is an array index and a generation check.
#[derive(Debug, Default)]
pub(crate) struct ConnTable {
    slots: Vec<Option<Rc<Conn>>>,
    len: usize,
}

impl ConnTable {
    pub(crate) fn insert(&mut self, id: ConnId, conn: Rc<Conn>) {
        let index = id.index as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        if self.slots[index].replace(conn).is_none() {
            self.len += 1;
        }
    }

    pub(crate) fn get(&self, id: &ConnId) -> Option<&Rc<Conn>> {
        self.slots
            .get(id.index as usize)?
            .as_ref()
            .filter(|c| c.id == *id)
    }

    pub(crate) fn remove(&mut self, id: &ConnId) -> Option<Rc<Conn>> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.as_ref().is_some_and(|c| c.id == *id) {
            self.len -= 1;
            return slot.take();
        }
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One shard thread's state; see the module docs.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) shard: Shard<ShardStore>,
    /// This shard's position on the host (its mesh index).
    pub(crate) me: usize,
    /// Every shard of the host by mesh index.
    pub(crate) shard_ids: Rc<[ShardId]>,
    pub(crate) conns: ConnTable,
    pub(crate) outbox: Outbox<MeshItem>,
    lane_capacity: usize,
    /// Items for a full lane, per target, sent before anything newer to that target.
    overflow: Vec<VecDeque<MeshItem>>,
    overflow_len: usize,
    pub(crate) mesh_room: Rc<WaitList>,
    pub(crate) stats: ShardStats,
    /// Every `WakeAt` not yet served (the shard may ask for a later time than one it asked
    /// for before, e.g. when draining starts, and each must be honoured). Bounded by
    /// [`WAKE_TIMES_MAX`]: beyond it the latest are merged into the last kept one.
    pub(crate) wake_times: BTreeSet<u64>,
    pub(crate) timer_wake: Rc<Wakeup>,
    /// When the commit task sleeps until; `None` while it commits.
    pub(crate) commit_at: Option<u64>,
    pub(crate) commit_wake: Rc<Wakeup>,
    /// The time of the input being handled (stamped on what it queues).
    pub(crate) input_us: u64,
    pub(crate) frame_len_max: u32,
    pub(crate) draining: bool,
    pub(crate) writers_running: usize,
    /// Notified when the shard may have finished draining.
    pub(crate) finished: Rc<Wakeup>,
    /// Peer links to other hosts' shards; `None` on a single host.
    pub(crate) links: Option<super::link::Links>,
}

impl Ctx {
    /// A context for shard `me` of `shard_ids`.
    pub(crate) fn new(
        shard: Shard<ShardStore>,
        me: usize,
        shard_ids: Rc<[ShardId]>,
        outbox: Outbox<MeshItem>,
        lane_capacity: usize,
    ) -> Self {
        let frame_len_max = shard.config().frame_len_max;
        let lanes = shard_ids.len();
        Self {
            shard,
            me,
            shard_ids,
            conns: ConnTable::default(),
            outbox,
            lane_capacity,
            overflow: (0..lanes).map(|_| VecDeque::new()).collect(),
            overflow_len: 0,
            mesh_room: Rc::new(WaitList::default()),
            stats: ShardStats::new(),
            wake_times: BTreeSet::new(),
            timer_wake: Rc::new(Wakeup::default()),
            commit_at: None,
            commit_wake: Rc::new(Wakeup::default()),
            input_us: 0,
            frame_len_max,
            draining: false,
            writers_running: 0,
            finished: Rc::new(Wakeup::default()),
            links: None,
        }
    }

    /// Carries out every action the shard has queued, in order; then tells the shard of peer
    /// links that failed meanwhile (which may queue more actions).
    pub(crate) fn dispatch(&mut self) {
        loop {
            self.dispatch_actions();
            let lost = self
                .links
                .as_mut()
                .map(super::link::Links::take_lost)
                .unwrap_or_default();
            if lost.is_empty() {
                return;
            }
            let now = super::wake::now_us();
            for peer in lost {
                self.shard.peer_lost(now, peer);
            }
        }
    }

    fn dispatch_actions(&mut self) {
        while let Some(action) = self.shard.poll_action() {
            match action {
                Action::Send { conn, bytes } => {
                    if let Some(c) = self.conns.get(&conn) {
                        let queued = c.push(bytes, self.input_us);
                        self.stats.counters.send_queue_bytes += queued as u64;
                    }
                }
                Action::Close { conn } => {
                    if let Some(c) = self.conns.remove(&conn) {
                        c.close_after_flush();
                    }
                }
                Action::ToShard { shard, msg } => match self.index_of(shard) {
                    Some(to) => self.send_mesh(to, MeshItem::Peer(msg)),
                    None => match self.links.as_mut() {
                        Some(links) => {
                            links.send(shard, msg);
                        }
                        None => {
                            tracing::error!(?shard, "the shard logic addressed an unknown shard");
                        }
                    },
                },
                Action::HandOff { conn, to, state } => {
                    let Some(c) = self.conns.remove(&conn) else {
                        continue;
                    };
                    match self.index_of(to) {
                        Some(to) if c.begin_handoff(to, state) => {}
                        _ => {
                            // Cannot carry the socket (unknown shard, or the reader is parked
                            // in a read): the session is gone from this shard, so close it;
                            // the client reconnects.
                            tracing::error!(?to, "a handoff could not move its socket");
                            c.close_after_flush();
                        }
                    }
                }
                Action::WakeAt(at) => {
                    let earliest = self.wake_times.first().copied();
                    if self.wake_times.len() < WAKE_TIMES_MAX {
                        self.wake_times.insert(at);
                    } else if let Some(last) = self.wake_times.pop_last() {
                        // Waking too early is harmless (the shard asks again); never too late.
                        self.wake_times.insert(last.min(at));
                    }
                    if earliest.is_none_or(|current| at < current) {
                        self.timer_wake.notify();
                    }
                }
            }
        }
    }

    /// After an input: the actions left are carried out, the commit task's deadline may have
    /// moved earlier (new records), the mesh is flushed (rings the doorbells of parked shards
    /// once per batch), and a drain may have finished.
    pub(crate) fn after_input(&mut self) {
        self.dispatch();
        if let Some(at) = self.shard.store().own().next_wakeup_us()
            && self.commit_at.is_none_or(|current| at < current)
        {
            self.commit_at = Some(at);
            self.commit_wake.notify();
        }
        self.retry_overflow();
        self.outbox.flush();
        if self.draining {
            self.finished.notify();
        }
    }

    /// Sends an item to shard `to`, behind anything already waiting for that lane.
    pub(crate) fn send_mesh(&mut self, to: usize, item: MeshItem) {
        if !self.overflow[to].is_empty() {
            self.overflow[to].push_back(item);
            self.overflow_len += 1;
            return;
        }
        match self.outbox.push(to, item) {
            Ok(()) => {}
            Err(PushError::Full(item)) => {
                self.overflow[to].push_back(item);
                self.overflow_len += 1;
                // Retry soon even if nothing else happens on this shard.
                self.timer_wake.notify();
            }
            Err(PushError::NoSuchLane(_)) => {
                tracing::error!(to, "no mesh lane to that shard; item dropped");
            }
        }
    }

    /// Moves waiting items into lanes that have room again.
    pub(crate) fn retry_overflow(&mut self) {
        if self.overflow_len == 0 {
            return;
        }
        for to in 0..self.overflow.len() {
            while let Some(item) = self.overflow[to].pop_front() {
                match self.outbox.push(to, item) {
                    Ok(()) => self.overflow_len -= 1,
                    Err(PushError::Full(item) | PushError::NoSuchLane(item)) => {
                        self.overflow[to].push_front(item);
                        break;
                    }
                }
            }
        }
        if self.overflow_len < MESH_OVERFLOW_PAUSE {
            self.mesh_room.notify_all();
        }
    }

    /// Items waiting for room in full lanes.
    pub(crate) fn mesh_overflow(&self) -> usize {
        self.overflow_len
    }

    /// Waits while too many mesh items wait for room (see [`MESH_OVERFLOW_PAUSE`]).
    pub(crate) async fn wait_for_mesh_room(ctx: &SharedCtx) {
        loop {
            let room = {
                let c = ctx.borrow();
                if c.overflow_len < MESH_OVERFLOW_PAUSE {
                    return;
                }
                Rc::clone(&c.mesh_room)
            };
            room.wait().await;
        }
    }

    /// The peer of connection `conn` hung up (or its socket failed).
    pub(crate) fn peer_closed(&mut self, conn: &Rc<Conn>) {
        let now = super::wake::now_us();
        self.input_us = now;
        self.conns.remove(&conn.id);
        let dropped = conn.abandon();
        self.unqueued(dropped);
        self.shard.connection_closed(now, conn.id);
        self.dispatch();
    }

    /// Bytes read from a socket.
    pub(crate) fn read_bytes(&mut self, n: usize) {
        self.stats.counters.bytes_in += n as u64;
    }

    /// Bytes written to a socket, and the relay latency of the oldest event finished by it.
    pub(crate) fn wrote(&mut self, n: usize, latency_us: Option<u64>) {
        self.stats.counters.bytes_out += n as u64;
        self.unqueued(n);
        if let Some(latency) = latency_us {
            self.stats.record_relay_latency_us(latency);
        }
    }

    /// Queued bytes that left the queue without being written (closed connection).
    pub(crate) fn unqueued(&mut self, n: usize) {
        let counters = &mut self.stats.counters;
        counters.send_queue_bytes = counters.send_queue_bytes.saturating_sub(n as u64);
    }

    /// Queued bytes that arrived with a handed-off connection.
    pub(crate) fn requeued(&mut self, n: usize) {
        self.stats.counters.send_queue_bytes += n as u64;
    }

    /// Whether a drain is complete: nothing connected, nothing open, nothing left to commit
    /// or to send.
    pub(crate) fn drained(&self) -> bool {
        let store = self.shard.store().own();
        self.draining
            && self.conns.is_empty()
            && self.writers_running == 0
            && self.shard.connection_count() == 0
            && self.shard.live_message_count() == 0
            && store.pending_bytes() == 0
            && !store.commit_in_flight()
            && self.overflow_len == 0
    }

    /// Items in this shard's outbound lanes, not yet taken by their receivers.
    pub(crate) fn outbox_depth(&self) -> usize {
        (0..self.shard_ids.len())
            .filter(|&to| to != self.me)
            .map(|to| {
                self.lane_capacity
                    .saturating_sub(self.outbox.free_slots(to))
            })
            .sum()
    }

    fn index_of(&self, shard: ShardId) -> Option<usize> {
        self.shard_ids.iter().position(|s| *s == shard)
    }
}
