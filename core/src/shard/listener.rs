//! Subscriptions on the owner: listen from live, a message or a time; the catch-up from the
//! store through the owner's in-memory tail to live (exactly once, no gap); slow listeners
//! falling back to replay; history pages.
//!
//! Per (subscription, message) the shard keeps `next_seq`; a frame is delivered only when its
//! seq is `next_seq`. Replay reads durable frames from the store, then the accepted but not
//! yet durable frames from the message's tail, and when `next_seq` reaches the accepted count
//! the delivery joins the message's live listeners in the same step: every later frame is
//! accepted after that, so none is missed and none is sent twice.

use std::collections::VecDeque;

use bytes::Bytes;

use super::conversation::{ListenerRef, LiveListener, MessagePhase};
use super::session::{ConnId, Delivery, Subscription};
use super::store::{BodyStore, ReplayStatus, TimelineFrom};
use super::talk::outcome_of;
use super::{PUMP_STEPS_MAX, RouteReleased, Shard};
use crate::ids::{ConvName, MsgId};
use crate::protocol::{
    ErrorCode, ErrorSubject, Event, FrameKind, ListenFrom, MessageOutcome, Request,
    write_frame_event,
};
use crate::token::Right;

impl<S: BodyStore> Shard<S> {
    pub(super) fn listen(
        &mut self,
        conn: ConnId,
        sub: u32,
        conversation: ConvName,
        from: ListenFrom,
    ) {
        let Some(session) = self.session(conn) else {
            return;
        };
        if session.sub_slot(sub).is_some() || session.remote_subs.iter().any(|s| s.0 == sub) {
            let about = ErrorSubject::Sub(sub);
            self.send_error(
                conn,
                ErrorCode::DUPLICATE_SUB,
                about,
                "the subscription is open",
            );
            return;
        }
        if !self.open_subscription(conn, sub, conversation, from) {
            self.release_route(conn, RouteReleased::Sub(sub), false);
        }
    }

    /// Opens (or routes) a subscription; false when it was refused.
    fn open_subscription(
        &mut self,
        conn: ConnId,
        sub: u32,
        conversation: ConvName,
        from: ListenFrom,
    ) -> bool {
        let about = ErrorSubject::Sub(sub);
        if self.is_shutting_down() {
            self.send_error(
                conn,
                ErrorCode::SHUTTING_DOWN,
                about,
                "the relay is draining",
            );
            return false;
        }
        let rights: &[Right] = match from {
            ListenFrom::Live => &[Right::Listen],
            _ => &[Right::Listen, Right::History],
        };
        if !self.authorize(conn, rights, &conversation, about) {
            return false;
        }
        let owner = self.owner_of(conversation.id());
        // Another host's conversation is heard through this host's edge shard for it, which
        // mirrors it once for all of the host's listeners.
        let serving = if self.is_local(owner) {
            owner
        } else {
            self.edge_of(conversation.id())
        };
        if serving != self.shard {
            let request = Request::Listen {
                sub,
                conversation,
                from,
            };
            self.route_to_owner(conn, serving, request, about);
            return true;
        }
        // From a message or a time, another host's conversation is caught up through a
        // subscription of its own on the owner, then switched to the mirror.
        let through_owner = owner != self.shard && from != ListenFrom::Live;
        if through_owner && self.owner_catch_ups_full() {
            self.send_error(
                conn,
                ErrorCode::OWNER_UNAVAILABLE,
                about,
                "too many listeners of this host are catching up from other hosts; retry later",
            );
            return false;
        }
        if self.session(conn).map_or(0, |s| s.all_sub_count()) >= usize::from(self.config.subs_max)
        {
            self.send_error(
                conn,
                ErrorCode::TOO_MANY_CONVERSATIONS,
                about,
                "too many subscriptions open on this connection",
            );
            return false;
        }
        let Some(conv_slot) = self.conversation_slot(&conversation) else {
            self.send_error(
                conn,
                ErrorCode::TOO_MANY_CONVERSATIONS,
                about,
                "this core holds its maximum of conversations",
            );
            return false;
        };
        let conv_id = conversation.id();
        let (backlog, timeline, last_listed) = match from {
            ListenFrom::Live => {
                let open = VecDeque::from(self.open_messages(conv_slot));
                let newest = self.conversations.get(conv_slot).and_then(|c| c.newest_msg);
                (open, None, newest)
            }
            // The owner lists the messages (and refuses an unknown one).
            _ if through_owner => (VecDeque::new(), None, None),
            ListenFrom::Since(since_us) => {
                (VecDeque::new(), Some(TimelineFrom::Since(since_us)), None)
            }
            ListenFrom::Message(msg) => {
                if self
                    .store
                    .message_info(msg)
                    .is_none_or(|h| h.conv != conv_id)
                {
                    self.drop_conversation_if_idle(conv_slot);
                    let (code, text) = self.unavailable(msg, "is not stored in this conversation");
                    self.send_error(conn, code, about, &text);
                    return false;
                }
                let from = match msg.0.checked_sub(1) {
                    Some(before) => TimelineFrom::After(MsgId(before)),
                    None => TimelineFrom::Since(0),
                };
                (VecDeque::new(), Some(from), None)
            }
        };
        let subscription = Subscription {
            sub,
            conv_id,
            conv_name: conversation,
            live: false,
            backlog,
            timeline,
            last_listed,
            deliveries: Vec::new(),
            through_owner: None,
            heard_before: None,
        };
        let Some(session) = self.session_mut(conn) else {
            return false;
        };
        let slot = match session.subs.iter().position(Option::is_none) {
            Some(slot) => {
                session.subs[slot] = Some(subscription);
                slot
            }
            None => {
                session.subs.push(Some(subscription));
                session.subs.len() - 1
            }
        };
        if let Some(conv) = self.conversations.get_mut(conv_slot) {
            conv.listeners.push(ListenerRef {
                conn,
                // subs_max is a u16, so a slot index fits.
                slot: slot as u16,
            });
        }
        if owner != self.shard {
            let name = self
                .session(conn)
                .and_then(|s| s.subs.get(slot)?.as_ref())
                .map(|s| s.conv_name.clone());
            if let Some(name) = name {
                self.ensure_mirror(conv_slot, &name, owner);
            }
        }
        if through_owner {
            // `listening` (or the owner's refusal) comes back from the owner.
            return self.open_owner_catch_up(conn, slot, owner, from);
        }
        self.send_event(conn, &Event::Listening { sub });
        self.pump_queue.push(conn);
        true
    }

    pub(super) fn unlisten(&mut self, conn: ConnId, sub: u32) {
        let Some(slot) = self.session(conn).and_then(|s| s.sub_slot(sub)) else {
            self.send_error(
                conn,
                ErrorCode::UNKNOWN_SUB,
                ErrorSubject::Sub(sub),
                "no open subscription with this id",
            );
            self.release_route(conn, RouteReleased::Sub(sub), false);
            return;
        };
        self.drop_subscription(conn, slot);
        self.send_event(conn, &Event::Unlistened { sub });
        self.release_route(conn, RouteReleased::Sub(sub), false);
    }

    /// Ends a subscription: its deliveries leave their messages' live lists and release
    /// their handles; the conversation forgets the listener.
    pub(super) fn drop_subscription(&mut self, conn: ConnId, slot: usize) {
        let Some(sub) = self
            .session_mut(conn)
            .and_then(|s| s.subs.get_mut(slot)?.take())
        else {
            return;
        };
        let listener = ListenerRef {
            conn,
            slot: slot as u16,
        };
        if let Some(catch_up) = &sub.through_owner {
            self.close_owner_catch_up(catch_up);
        }
        for d in &sub.deliveries {
            if let Some(m) = self
                .msg_by_id
                .get(&d.msg)
                .and_then(|s| self.messages.get_mut(*s))
            {
                m.live.retain(|l| l.listener != listener);
            }
            self.release_handle(d.handle);
        }
        if let Some(&conv_slot) = self.conv_by_id.get(&sub.conv_id) {
            if let Some(conv) = self.conversations.get_mut(conv_slot) {
                conv.listeners.retain(|l| *l != listener);
            }
            for d in &sub.deliveries {
                if let Some(&slot) = self.msg_by_id.get(&d.msg) {
                    self.forget_mirrored_if_unread(slot);
                }
            }
            self.drop_mirror_if_unheard(conv_slot);
            self.drop_conversation_if_idle(conv_slot);
        }
    }

    /// A message started in a conversation: live subscriptions get it at once; those still
    /// catching up find it in the store's timeline after what they have listed.
    pub(super) fn announce_message(&mut self, msg_slot: u32) {
        let Some(m) = self.messages.get(msg_slot) else {
            return;
        };
        let (msg, conv_slot) = (m.msg, m.conv);
        let (listeners, mirror_sub) = match self.conversations.get(conv_slot) {
            Some(conv) => (conv.listeners.clone(), conv.mirror.as_ref().map(|m| m.sub)),
            None => return,
        };
        let backlog_max = self.config.replay_page_messages.max(1);
        for listener in listeners {
            let Some(sub) = self
                .session_mut(listener.conn)
                .and_then(|s| s.subs.get_mut(usize::from(listener.slot))?.as_mut())
            else {
                continue;
            };
            if sub.through_owner.is_some()
                || sub.heard_before.is_some_and(|h| h.covers(mirror_sub, msg))
            {
                // Heard through the owner: the catch-up lists it, or listed it already.
                continue;
            }
            if sub.live {
                self.begin_delivery(listener.conn, usize::from(listener.slot), msg);
            } else if mirror_sub.is_some() {
                // The store here does not hold a mirrored conversation: list the message
                // itself (the mirror keeps it while it is listed).
                if sub.backlog.len() >= backlog_max {
                    self.fall_too_far_behind(listener);
                    continue;
                }
                sub.backlog.push_back(msg);
                if sub.last_listed.is_none_or(|l| msg > l) {
                    sub.last_listed = Some(msg);
                }
                self.pump_queue.push(listener.conn);
            } else if sub.last_listed.is_some_and(|listed| msg < listed) {
                // Older than what the catch-up listed already (a message taken over here
                // from a host that left): the timeline will not come back to it.
                if sub.backlog.len() >= backlog_max {
                    self.fall_too_far_behind(listener);
                    continue;
                }
                sub.backlog.push_back(msg);
                self.pump_queue.push(listener.conn);
            } else if sub.timeline.is_none() {
                let after = sub.last_listed.unwrap_or(MsgId(msg.0.saturating_sub(1)));
                sub.timeline = Some(TimelineFrom::After(after));
                self.pump_queue.push(listener.conn);
            }
        }
    }

    /// Delivers replay to a connection while its send queue has room, round-robin over its
    /// subscriptions.
    pub(super) fn pump(&mut self, conn: ConnId) {
        let budget = self.config.send_queue_bytes_max;
        for _ in 0..PUMP_STEPS_MAX {
            let Some(session) = self.session_mut(conn) else {
                return;
            };
            if session.queued_bytes >= budget {
                return;
            }
            let slots = session.subs.len();
            if slots == 0 {
                return;
            }
            session.pump_next = (session.pump_next + 1) % slots;
            let start = session.pump_next;
            let mut progress = false;
            for k in 0..slots {
                progress |= self.step(conn, (start + k) % slots);
                if self.session(conn).is_none_or(|s| s.queued_bytes >= budget) {
                    return;
                }
            }
            if !progress {
                return;
            }
        }
        // More replay is ready than one pump runs; continue on the next wake-up.
        self.pump_queue.push(conn);
    }

    /// One step of a subscription's catch-up; false when it has nothing to do.
    fn step(&mut self, conn: ConnId, slot: usize) -> bool {
        let Some(sub) = self
            .session_mut(conn)
            .and_then(|s| s.subs.get_mut(slot)?.as_mut())
        else {
            return false;
        };
        if sub.through_owner.is_some() {
            // The owner replays for it; room in the queue lets the owner send more.
            self.credit_owner_catch_up(conn, slot);
            return false;
        }
        if let Some(d) = sub.deliveries.iter().position(|d| !d.live) {
            return self.replay_step(conn, slot, d);
        }
        if let Some(msg) = sub.backlog.pop_front() {
            self.begin_delivery(conn, slot, msg);
            return true;
        }
        if let Some(from) = sub.timeline {
            let conv_id = sub.conv_id;
            let page_len = self.config.replay_page_messages.max(1);
            let page = self.store.timeline(conv_id, from, page_len);
            let Some(sub) = self
                .session_mut(conn)
                .and_then(|s| s.subs.get_mut(slot)?.as_mut())
            else {
                return false;
            };
            sub.timeline = match page.last() {
                Some(last) if page.len() >= page_len => Some(TimelineFrom::After(last.msg)),
                _ => None,
            };
            for header in page {
                if sub.last_listed.is_none_or(|l| header.msg > l) {
                    sub.last_listed = Some(header.msg);
                    sub.backlog.push_back(header.msg);
                }
            }
            return true;
        }
        if !sub.live {
            // A mirrored conversation is live here once its subscription on the owner is.
            let conv_id = sub.conv_id;
            let mirror_waiting = self
                .conv_by_id
                .get(&conv_id)
                .and_then(|&c| self.conversations.get(c)?.mirror.as_ref())
                .is_some_and(|m| !m.live);
            if mirror_waiting {
                return false; // pumped again when the owner says `caught_up`
            }
            let Some(sub) = self
                .session_mut(conn)
                .and_then(|s| s.subs.get_mut(slot)?.as_mut())
            else {
                return false;
            };
            sub.live = true;
            let sub = sub.sub;
            self.send_event(conn, &Event::CaughtUp { sub });
            return true;
        }
        false
    }

    /// Opens a message stream for a subscription: `message_started`, then replay from frame 0
    /// (or live right away when the subscription is live and the message has just started).
    pub(super) fn begin_delivery(&mut self, conn: ConnId, slot: usize, msg: MsgId) {
        let live_slot = self.msg_by_id.get(&msg).copied();
        let (handle, sender, codec) = match live_slot.and_then(|s| self.messages.get(s)) {
            Some(m) => {
                let taken = self.session(conn).is_some_and(|s| {
                    s.subs
                        .iter()
                        .flatten()
                        .any(|sub| sub.deliveries.iter().any(|d| d.handle == m.handle))
                });
                let (handle, sender, codec) = (m.handle, m.sender.clone(), m.codec.clone());
                if taken {
                    (self.allocate_handle(), sender, codec)
                } else {
                    self.retain_handle(handle);
                    (handle, sender, codec)
                }
            }
            None => {
                let Some(header) = self.store.message_info(msg) else {
                    return; // removed by retention since it was listed
                };
                let sender = String::from_utf8_lossy(&header.sender).into_owned();
                (self.allocate_handle(), sender, Bytes::from(header.codec))
            }
        };
        let Some(sub) = self
            .session_mut(conn)
            .and_then(|s| s.subs.get_mut(slot)?.as_mut())
        else {
            return;
        };
        let live_now = sub.live && live_slot.is_some();
        sub.deliveries.push(Delivery {
            msg,
            handle,
            next_seq: 0,
            live: false,
        });
        if sub.last_listed.is_none_or(|l| msg > l) {
            sub.last_listed = Some(msg);
        }
        let event = Event::MessageStarted {
            sub: sub.sub,
            stream: handle,
            msg_id: msg,
            conversation: sub.conv_name.clone(),
            sender,
            codec,
        };
        self.send_event(conn, &event);
        if live_now {
            // A live subscription hears a new message from its first frame: catch up on any
            // frame accepted already (none when announced at start), then join live.
            let index = self.delivery_index(conn, slot, msg);
            if let Some(index) = index {
                self.replay_step(conn, slot, index);
            }
        }
    }

    fn delivery_index(&self, conn: ConnId, slot: usize, msg: MsgId) -> Option<usize> {
        self.session(conn)?
            .subs
            .get(slot)?
            .as_ref()?
            .deliveries
            .iter()
            .position(|d| d.msg == msg)
    }

    /// Replays the next batch of one delivery: durable frames from the store, then the tail of
    /// a message still held here; joins live or ends the stream at the edge.
    fn replay_step(&mut self, conn: ConnId, slot: usize, index: usize) -> bool {
        let Some(d) = self
            .session(conn)
            .and_then(|s| s.subs.get(slot)?.as_ref()?.deliveries.get(index).copied())
        else {
            return false;
        };
        let batch = self.config.replay_batch_frames.max(1);
        let mut next_seq = d.next_seq;
        let mut frames = std::mem::take(&mut self.replay_scratch);
        frames.clear();
        let live_slot = self.msg_by_id.get(&d.msg).copied();
        let mut ended: Option<(u32, MessageOutcome)> = None;
        let mut join_live = false;
        let live = live_slot
            .and_then(|s| self.messages.get(s))
            .map(|m| (m.tail_first_seq(), m.accepted, m.phase));
        match live {
            Some((tail_first, accepted, phase)) => {
                if next_seq < tail_first {
                    let read = self.read_store(d.msg, d.handle, next_seq, batch, &mut frames);
                    match read {
                        Some(_) if !frames.is_empty() => {}
                        // The store cannot give what it made durable: cut the stream.
                        _ => ended = Some((next_seq, MessageOutcome::Truncated)),
                    }
                } else if let Some(m) = live_slot.and_then(|s| self.messages.get(s)) {
                    let from = (next_seq - tail_first) as usize;
                    for (k, payload) in m.tail.iter().enumerate().skip(from).take(batch) {
                        let seq = tail_first + k as u32;
                        let _ = write_frame_event(
                            &mut self.encode_buf,
                            d.handle,
                            seq,
                            FrameKind::Replay,
                            payload,
                        );
                        frames.push((seq, self.encode_buf.split().freeze()));
                    }
                }
                let reached = next_seq + frames.len() as u32;
                if ended.is_none() && reached == accepted {
                    match phase {
                        MessagePhase::Open => join_live = true,
                        MessagePhase::Ending(state) => {
                            ended = Some((accepted, outcome_of(state)));
                        }
                    }
                }
            }
            None => match self.read_store(d.msg, d.handle, next_seq, batch, &mut frames) {
                Some(ReplayStatus::More) => {}
                Some(ReplayStatus::Ended { frame_count, state }) => {
                    ended = Some((frame_count, outcome_of(state)));
                }
                Some(ReplayStatus::CaughtUp { .. }) if !frames.is_empty() => {}
                // Open in the store but not held here (cut by a restart), or unreadable.
                _ => ended = Some((next_seq + frames.len() as u32, MessageOutcome::Truncated)),
            },
        }
        let read_any = !frames.is_empty();
        for (seq, bytes) in frames.drain(..) {
            if seq == next_seq {
                next_seq += 1;
                self.tally.frame_events_out += 1;
                self.send(conn, bytes);
            }
        }
        self.replay_scratch = frames;
        if read_any && next_seq == d.next_seq && ended.is_none() && !join_live {
            // The store answered with frames other than the next one: it is inconsistent;
            // end the stream rather than spin.
            ended = Some((next_seq, MessageOutcome::Truncated));
        }
        if let Some(d) = self
            .session_mut(conn)
            .and_then(|s| s.subs.get_mut(slot)?.as_mut()?.deliveries.get_mut(index))
        {
            d.next_seq = next_seq;
            d.live = join_live;
        }
        if join_live && let Some(m) = live_slot.and_then(|s| self.messages.get_mut(s)) {
            m.live.push(LiveListener {
                listener: ListenerRef {
                    conn,
                    slot: slot as u16,
                },
                handle: d.handle,
            });
        }
        if let Some((frame_count, outcome)) = ended {
            self.send_event(
                conn,
                &Event::MessageEnded {
                    stream: d.handle,
                    frame_count,
                    outcome,
                },
            );
            self.finish_delivery(conn, slot, d.msg);
        }
        true
    }

    /// Reads up to `batch` durable frames of `msg` from `from_seq`, encoded as replay frames.
    fn read_store(
        &mut self,
        msg: MsgId,
        handle: u32,
        from_seq: u32,
        batch: usize,
        frames: &mut Vec<(u32, Bytes)>,
    ) -> Option<ReplayStatus> {
        let mut cursor = self.store.replay_from(msg, from_seq).ok()?;
        let buf = &mut self.encode_buf;
        self.store
            .replay_next(&mut cursor, batch, &mut |seq, payload| {
                if write_frame_event(buf, handle, seq, FrameKind::Replay, payload).is_ok() {
                    frames.push((seq, buf.split().freeze()));
                }
            })
            .ok()
    }

    /// Forgets a finished delivery and releases its handle.
    pub(super) fn finish_delivery(&mut self, conn: ConnId, slot: usize, msg: MsgId) {
        let Some(sub) = self
            .session_mut(conn)
            .and_then(|s| s.subs.get_mut(slot)?.as_mut())
        else {
            return;
        };
        let Some(i) = sub.deliveries.iter().position(|d| d.msg == msg) else {
            return;
        };
        let d = sub.deliveries.remove(i);
        self.release_handle(d.handle);
        self.pump_queue.push(conn);
        if let Some(&slot) = self.msg_by_id.get(&msg) {
            self.forget_mirrored_if_unread(slot);
        }
    }
}
