//! Listening from a message or a time to a conversation owned on another host.
//!
//! The edge shard holds only a *mirror* of such a conversation (`mirror/`): the messages in
//! progress and those started since it subscribed, never its stored history. A listener that
//! asks for history therefore catches up through a subscription of its own on the owner, over
//! a *catch-up link* of its own (a virtual connection like the uplink, so the owner's flow
//! control paces this listener alone), and switches to the mirror once the mirror can take
//! over without a gap or a duplicate:
//!
//! ```text
//!  listener ─► edge ── Attach, Listen{from} (catch-up link) ──► owner: the store, then live
//!            ◄─ events, re-encoded with edge handles ◄── Deliver ──
//!                     ── Written (only as the listener writes), Detach at the switch ──►
//!  switch:   caught_up seen, every open message held by the mirror at least as far
//!            ──► deliveries continue from the mirror's tail; later messages come from the mirror
//! ```
//!
//! Why the switch is exact: the owner lists a subscription's messages in id order, each once,
//! and before its `caught_up` it has listed every message in range that started before. The
//! mirror's subscription went out on the same ordered lane before the catch-up's, so it hears
//! (from the first frame) every message that starts later. So once `caught_up` arrived,
//! every message not yet listed through the owner (id at or above `first_unheard`) is, or will
//! be, held by the mirror, unless the mirror forgot it (ended, nobody reading) before the
//! switch: then the switch waits until the owner has listed it. Messages listed through the
//! owner are never announced again (`HeardBefore`), messages it delivered in part continue at
//! their next frame from the mirror's tail (which holds every frame of a mirrored message).
//! docs/shard.md "Listening from a message or a time across hosts" has the full argument.

use bytes::{Bytes, BytesMut};

mod switch;

use super::conversation::{ListenerRef, Talker};
use super::peer::PeerMessage;
use super::session::{ConnId, Delivery, Subscription};
use super::store::BodyStore;
use super::{Action, RouteReleased, Shard};
use crate::ids::{ConvId, MsgId, ShardId};
use crate::protocol::{
    Decoder, ErrorCode, ErrorSubject, Event, ListenFrom, Request, write_frame_event,
};

/// Listeners of one shard catching up through owners on other hosts at once (each holds a
/// catch-up link, a proxy session on its owner). Above it a listen from a message or a time to
/// another host's conversation is refused with `owner_unavailable` (retry later).
pub const OWNER_CATCH_UPS_MAX: usize = 256;

/// The subscription id a catch-up uses on its own link (the link carries nothing else).
const LINK_SUB: u32 = 0;

/// Where a catch-up link's events go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CatchUpRoute {
    /// The owner shard the link goes to.
    pub owner: ShardId,
    /// The conversation.
    pub conv: ConvId,
    /// The listener's subscription.
    pub listener: ListenerRef,
}

/// A subscription's catch-up through the owner (`Subscription::through_owner`).
#[derive(Debug)]
pub(crate) struct OwnerCatchUp {
    pub owner: ShardId,
    /// The virtual connection to the owner that carries this catch-up alone.
    pub link: ConnId,
    /// The mirror's subscription when the catch-up opened: only that one is known to hear
    /// every message the catch-up has not listed. If it changes, the catch-up never switches
    /// (it keeps serving the listener from the owner, exactly, at the cost of a second copy).
    pub mirror_sub: Option<u32>,
    /// The owner answered `listening`.
    pub listening: bool,
    /// The owner sent `caught_up`: every message in range that started before is listed.
    pub caught_up: bool,
    /// Messages below this id are listed through the owner or out of the listen's range.
    pub first_unheard: MsgId,
    /// The greatest message at or above `first_unheard` the mirror forgot meanwhile.
    pub forgotten_max: Option<MsgId>,
    /// The owner's stream handles on the link and their messages (open ones only: at most
    /// the deliveries of the subscription).
    pub streams: Vec<(u32, MsgId)>,
    /// Bytes of the link not yet credited to the owner: held back while the listener's own
    /// send queue is full, so the owner's flow control paces the catch-up.
    pub owed_bytes: usize,
    /// Bytes of an event not complete yet.
    pub input: BytesMut,
}

/// What a subscription heard through the owner before switching to the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeardBefore {
    /// The mirror subscription it switched onto.
    pub mirror_sub: u32,
    /// Messages below it were listed through the owner (or fall before the listen's start).
    pub first_unheard: MsgId,
}

impl HeardBefore {
    /// Whether a message the mirror announces (on `mirror_sub`) was heard already.
    pub(crate) fn covers(&self, mirror_sub: Option<Option<u32>>, msg: MsgId) -> bool {
        mirror_sub == Some(Some(self.mirror_sub)) && msg < self.first_unheard
    }
}

/// The first message id a listen from `from` includes.
fn first_in_range(from: ListenFrom) -> MsgId {
    match from {
        ListenFrom::Live => MsgId(0),
        ListenFrom::Message(msg) => msg,
        // Ids start with their start time: every message started at or after `t` is above.
        ListenFrom::Since(t) => MsgId(u128::from(t) << 64),
    }
}

impl<S: BodyStore> Shard<S> {
    /// Whether a new catch-up through an owner would break `OWNER_CATCH_UPS_MAX`.
    pub(super) fn owner_catch_ups_full(&self) -> bool {
        self.mirrors.catch_ups.len() >= OWNER_CATCH_UPS_MAX
    }

    /// Opens the catch-up of the subscription in `slot` (just created, its mirror ensured) on
    /// `owner`; false (the subscription dropped, the client told) when there is no link.
    pub(super) fn open_owner_catch_up(
        &mut self,
        conn: ConnId,
        slot: usize,
        owner: ShardId,
        from: ListenFrom,
    ) -> bool {
        let Some(sub) = self.sub_at(conn, slot) else {
            return false;
        };
        let (sub_id, conv_id, conversation) = (sub.sub, sub.conv_id, sub.conv_name.clone());
        let mirror_sub = self
            .conv_by_id
            .get(&conv_id)
            .and_then(|s| self.conversations.get(*s)?.mirror.as_ref()?.sub);
        let Some(link) = self.new_link_id(owner) else {
            self.drop_subscription(conn, slot);
            self.send_error(
                conn,
                ErrorCode::OWNER_UNAVAILABLE,
                ErrorSubject::Sub(sub_id),
                "the owner host is not in the map",
            );
            return false;
        };
        let grant = self.edge_grant();
        let session_id = self.new_session_id();
        self.actions.push_back(Action::ToShard {
            shard: owner,
            msg: PeerMessage::Attach {
                conn: link,
                session_id,
                grant,
            },
        });
        self.forward(
            link,
            owner,
            Request::Listen {
                sub: LINK_SUB,
                conversation,
                from,
            },
        );
        let listener = ListenerRef {
            conn,
            slot: slot as u16,
        };
        self.mirrors.catch_ups.insert(
            link,
            CatchUpRoute {
                owner,
                conv: conv_id,
                listener,
            },
        );
        if let Some(sub) = self.sub_at_mut(conn, slot) {
            sub.through_owner = Some(Box::new(OwnerCatchUp {
                owner,
                link,
                mirror_sub,
                listening: false,
                caught_up: false,
                first_unheard: first_in_range(from),
                forgotten_max: None,
                streams: Vec::new(),
                owed_bytes: 0,
                input: BytesMut::new(),
            }));
        }
        true
    }

    /// Forgets a catch-up's link (the subscription is ending or switching): the owner drops
    /// its proxy session and subscription; later events on the link are dropped here.
    pub(super) fn close_owner_catch_up(&mut self, catch_up: &OwnerCatchUp) {
        if self.mirrors.catch_ups.remove(&catch_up.link).is_some() {
            self.actions.push_back(Action::ToShard {
                shard: catch_up.owner,
                msg: PeerMessage::Detach {
                    conn: catch_up.link,
                },
            });
        }
    }

    /// Ends the subscription catching up over `link` with an error about it.
    pub(super) fn fail_owner_catch_up_on(&mut self, link: ConnId, code: ErrorCode, text: &str) {
        let Some(route) = self.mirrors.catch_ups.get(&link).copied() else {
            return;
        };
        let (conn, slot) = (route.listener.conn, usize::from(route.listener.slot));
        let Some(sub) = self.sub_at(conn, slot).map(|s| s.sub) else {
            self.mirrors.catch_ups.remove(&link);
            return;
        };
        self.drop_subscription(conn, slot);
        self.send_error(conn, code, ErrorSubject::Sub(sub), text);
        self.release_route(conn, RouteReleased::Sub(sub), false);
    }

    /// Ends every catch-up whose route matches.
    pub(super) fn fail_owner_catch_ups(
        &mut self,
        matches: impl Fn(&CatchUpRoute) -> bool,
        code: ErrorCode,
        text: &str,
    ) {
        let links: Vec<ConnId> = self
            .mirrors
            .catch_ups
            .iter()
            .filter(|(_, route)| matches(route))
            .map(|(link, _)| *link)
            .collect();
        for link in links {
            self.fail_owner_catch_up_on(link, code, text);
        }
    }

    /// The owner closed a catch-up link (its proxy refused or hit its send cap).
    pub(super) fn owner_catch_up_closed(&mut self, link: ConnId) {
        self.fail_owner_catch_up_on(
            link,
            ErrorCode::OWNER_UNAVAILABLE,
            "the owner host closed the catch-up; listen again from the last message completed",
        );
    }

    /// Events the owner delivered on a catch-up link.
    pub(super) fn owner_catch_up_deliver(&mut self, owner: ShardId, link: ConnId, bytes: Bytes) {
        let Some(route) = self.mirrors.catch_ups.get(&link).copied() else {
            return; // closed since (switched, unlistened): later events are dropped
        };
        if route.owner != owner {
            return;
        }
        let (conn, slot) = (route.listener.conn, usize::from(route.listener.slot));
        let Some(catch_up) = self.catch_up_mut(conn, slot, link) else {
            return;
        };
        catch_up.owed_bytes += bytes.len();
        let mut input = std::mem::take(&mut catch_up.input);
        input.extend_from_slice(&bytes);
        let mut decoder = Decoder::new();
        loop {
            match decoder.decode_event(&mut input) {
                Ok(Some(event)) => {
                    if !self.owner_catch_up_event(conn, slot, link, event) {
                        return; // the subscription ended
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // The owner's shard encoded these events: garbage means a broken link.
                    return self.fail_owner_catch_up_on(
                        link,
                        ErrorCode::OWNER_UNAVAILABLE,
                        "the link to the owner host broke; listen again from the last message \
                         completed",
                    );
                }
            }
        }
        if let Some(catch_up) = self.catch_up_mut(conn, slot, link) {
            catch_up.input = input;
        }
        self.credit_owner_catch_up(conn, slot);
        self.switch_to_mirror_if_ready(conn, slot);
    }

    /// One event of a catch-up link, translated for the listener; false when the
    /// subscription ended.
    fn owner_catch_up_event(
        &mut self,
        conn: ConnId,
        slot: usize,
        link: ConnId,
        event: Event,
    ) -> bool {
        let Some(sub) = self.sub_at(conn, slot) else {
            return false;
        };
        let sub_id = sub.sub;
        match event {
            Event::Listening { .. } => {
                if let Some(c) = self.catch_up_mut(conn, slot, link) {
                    c.listening = true;
                }
                self.send_event(conn, &Event::Listening { sub: sub_id });
            }
            Event::MessageStarted {
                stream,
                msg_id,
                sender,
                codec,
                ..
            } => self.catch_up_message_started(conn, slot, link, stream, msg_id, sender, codec),
            Event::Frame {
                stream,
                seq,
                kind,
                payload,
            } => {
                let Some(msg) = self.catch_up_stream(conn, slot, link, stream) else {
                    return true;
                };
                let Some(sub) = self.sub_at_mut(conn, slot) else {
                    return false;
                };
                let Some(d) = sub.deliveries.iter_mut().find(|d| d.msg == msg) else {
                    return true;
                };
                if seq != d.next_seq {
                    return true; // the owner sends each frame once, in order
                }
                d.next_seq += 1;
                let handle = d.handle;
                if write_frame_event(&mut self.encode_buf, handle, seq, kind, &payload).is_err() {
                    // The owner encoded the same payload under the same limits.
                    self.encode_buf.clear();
                    return true;
                }
                let bytes = self.encode_buf.split().freeze();
                self.tally.frame_events_out += 1;
                self.send(conn, bytes);
            }
            Event::MessageEnded {
                stream,
                frame_count,
                outcome,
            } => {
                let Some(msg) = self.catch_up_stream(conn, slot, link, stream) else {
                    return true;
                };
                if let Some(c) = self.catch_up_mut(conn, slot, link) {
                    c.streams.retain(|s| s.0 != stream);
                }
                let handle = self
                    .sub_at(conn, slot)
                    .and_then(|s| s.deliveries.iter().find(|d| d.msg == msg))
                    .map(|d| d.handle);
                if let Some(handle) = handle {
                    self.send_event(
                        conn,
                        &Event::MessageEnded {
                            stream: handle,
                            frame_count,
                            outcome,
                        },
                    );
                    self.finish_delivery(conn, slot, msg);
                }
            }
            Event::CaughtUp { .. } => {
                if let Some(c) = self.catch_up_mut(conn, slot, link) {
                    c.caught_up = true;
                }
                self.send_event(conn, &Event::CaughtUp { sub: sub_id });
            }
            Event::Error {
                code,
                about: ErrorSubject::Sub(_),
                text,
            } => {
                // Refused (message_unavailable, map_changed, shutting_down, …) or ended by
                // the owner: the listener hears why, as from a local subscription.
                self.fail_owner_catch_up_on(link, code, &text);
                return false;
            }
            Event::Error {
                about: ErrorSubject::Connection,
                ..
            } => {
                // The owner refused or is closing the proxy session (full, send cap).
                self.owner_catch_up_closed(link);
                return false;
            }
            Event::Unlistened { .. } => {
                self.fail_owner_catch_up_on(
                    link,
                    ErrorCode::MAP_CHANGED,
                    "the owner ended the catch-up; listen again from the last message completed",
                );
                return false;
            }
            _ => {}
        }
        self.sub_at(conn, slot).is_some()
    }

    #[allow(clippy::too_many_arguments)]
    fn catch_up_message_started(
        &mut self,
        conn: ConnId,
        slot: usize,
        link: ConnId,
        stream: u32,
        msg: MsgId,
        sender: String,
        codec: Bytes,
    ) {
        let Some(sub) = self.sub_at(conn, slot) else {
            return;
        };
        if sub.deliveries.iter().any(|d| d.msg == msg) {
            return; // the owner lists each message once
        }
        let conversation = sub.conv_name.clone();
        let sub_id = sub.sub;
        // The mirror's shared handle when the mirror holds the message and the connection
        // does not use that handle already: the delivery then joins the shared encoding
        // when it switches.
        let shared = self
            .msg_by_id
            .get(&msg)
            .and_then(|s| self.messages.get(*s))
            .filter(|m| m.talker == Talker::Mirror)
            .map(|m| m.handle)
            .filter(|h| !self.handle_used_on(conn, *h));
        let handle = match shared {
            Some(handle) => {
                self.retain_handle(handle);
                handle
            }
            None => self.allocate_handle(),
        };
        let Some(sub) = self.sub_at_mut(conn, slot) else {
            self.release_handle(handle);
            return;
        };
        sub.deliveries.push(Delivery {
            msg,
            handle,
            next_seq: 0,
            live: false,
        });
        if sub.last_listed.is_none_or(|l| msg > l) {
            sub.last_listed = Some(msg);
        }
        if let Some(c) = sub.through_owner.as_mut().filter(|c| c.link == link) {
            c.streams.push((stream, msg));
            let next = MsgId(msg.0.saturating_add(1));
            if next > c.first_unheard {
                c.first_unheard = next;
            }
        }
        self.send_event(
            conn,
            &Event::MessageStarted {
                sub: sub_id,
                stream: handle,
                msg_id: msg,
                conversation,
                sender,
                codec,
            },
        );
    }

    /// The message a catch-up link's stream handle names.
    fn catch_up_stream(
        &self,
        conn: ConnId,
        slot: usize,
        link: ConnId,
        stream: u32,
    ) -> Option<MsgId> {
        let c = self.sub_at(conn, slot)?.through_owner.as_deref()?;
        if c.link != link {
            return None;
        }
        c.streams.iter().find(|s| s.0 == stream).map(|s| s.1)
    }

    /// Whether a delivery of any subscription of `conn` uses `handle`.
    fn handle_used_on(&self, conn: ConnId, handle: u32) -> bool {
        self.session(conn).is_some_and(|s| {
            s.subs
                .iter()
                .flatten()
                .any(|sub| sub.deliveries.iter().any(|d| d.handle == handle))
        })
    }

    pub(super) fn sub_at(&self, conn: ConnId, slot: usize) -> Option<&Subscription> {
        self.session(conn)?.subs.get(slot)?.as_ref()
    }

    pub(super) fn sub_at_mut(&mut self, conn: ConnId, slot: usize) -> Option<&mut Subscription> {
        self.session_mut(conn)?.subs.get_mut(slot)?.as_mut()
    }

    fn catch_up_mut(
        &mut self,
        conn: ConnId,
        slot: usize,
        link: ConnId,
    ) -> Option<&mut OwnerCatchUp> {
        self.sub_at_mut(conn, slot)?
            .through_owner
            .as_deref_mut()
            .filter(|c| c.link == link)
    }
}
