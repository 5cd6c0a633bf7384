//! Conversations owned on another host, mirrored for this host's listeners.
//!
//! Listeners of a conversation owned elsewhere in the cluster all meet on one shard of their
//! host, its *edge* (the conversation's owner among this host's shards alone). The edge opens
//! one subscription on the owner, from live, over its *uplink* to that owner shard (a virtual
//! connection carried by the peer link, served on the owner by an ordinary proxy session), and
//! turns what arrives into messages of its own: frames are appended to the message's tail and
//! fanned out exactly as a local talker's would be, encoded once with this shard's handle. So
//! a conversation's frames cross to each host once, not once per listener, and every listener
//! code path (catch-up of a message in progress from its first frame, slow-listener fallback)
//! is the owner's own code running on the tail.
//!
//! A mirrored message is never stored here and its tail is never trimmed by store acks; it is
//! forgotten when it has ended and no listener of this shard still reads it, or when the last
//! listener leaves. The owner sends a live subscription's messages in progress from their first
//! frame, so after a new subscription (the map changed, the uplink was lost) frames this shard
//! already holds arrive again and are dropped by sequence number; messages the new
//! subscription does not announce before it is caught up are cut here (`truncated`).
//!
//! ```text
//!  listeners ─► edge shard ── Attach, Listen{live} (uplink) ───► owner shard (other host)
//!             ◄─ frames, encoded once ◄── Deliver{events}, once per host ──
//!                           ── Written{n}, Unlisten, Detach ──►
//! ```

mod retarget;

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use super::conversation::{ConvMirror, ENDED_REMEMBERED_MAX, LiveMessage, MessagePhase, Talker};
use super::owner_catch_up::CatchUpRoute;
use super::peer::PeerMessage;
use super::session::ConnId;
use super::store::{BodyStore, EndState};
use super::{Action, Shard};
use crate::ids::{ConvName, MsgId, ShardId};
use crate::map::MEMBERSHIP_SHARDS_MAX;
use crate::protocol::{
    Decoder, ErrorCode, ErrorSubject, Event, ListenFrom, MessageOutcome, Request,
};
use crate::token::{ConvPrefix, Grant, Right, Rights, Scope, Subject};

/// Uplink connection ids live at the top of the `u32` index space, above every session slot
/// (`connections_max` is bounded below this), one per owner shard of the cluster.
pub const UPLINK_INDEX_MIN: u32 = u32::MAX - MEMBERSHIP_SHARDS_MAX as u32;

/// The sender name of an edge's subscriptions on the owner (for the owner's logs).
const EDGE_SUBJECT: &str = "hark-edge";

/// What a shard keeps for its mirrors and uplinks.
#[derive(Debug, Default)]
pub(crate) struct Mirrors {
    /// Uplink connection per owner shard with at least one mirror.
    uplinks: HashMap<ShardId, ConnId>,
    /// Bumped per new uplink, so deliveries of an old one are recognised.
    uplink_generation: u32,
    /// (owner, subscription id) -> conversation slot.
    subs: HashMap<(ShardId, u32), u32>,
    /// (owner, the owner's message stream handle) -> message slot.
    pub(crate) streams: HashMap<(ShardId, u32), u32>,
    next_sub: u32,
    /// Events delivered by an uplink, being decoded.
    input: BytesMut,
    decoder: Decoder,
    /// Open mirrored messages their owner stopped sending (it died, or the map moved the
    /// conversation), held until a new owner takes them on, by id -> until when (µs); see
    /// `handover.rs`.
    pub(crate) held: HashMap<MsgId, u64>,
    /// A mirror lost its subscription: subscribe again on the next tick.
    pub(crate) retry: bool,
    /// Catch-ups of this shard's listeners through their own links to owners, by link
    /// (`owner_catch_up.rs`); at most `OWNER_CATCH_UPS_MAX`.
    pub(crate) catch_ups: HashMap<ConnId, CatchUpRoute>,
}

impl<S: BodyStore> Shard<S> {
    /// Makes sure the conversation in `conv_slot` (owned by `owner`, on another host) is fed
    /// by a subscription on the owner.
    pub(super) fn ensure_mirror(&mut self, conv_slot: u32, name: &ConvName, owner: ShardId) {
        let current = self
            .conversations
            .get(conv_slot)
            .and_then(|c| c.mirror.as_ref())
            .map(|m| (m.owner, m.sub));
        match current {
            Some((o, Some(_))) if o == owner => {}
            Some(_) => self.subscribe_mirror(conv_slot, owner),
            None => {
                if let Some(conv) = self.conversations.get_mut(conv_slot) {
                    conv.mirror = Some(ConvMirror {
                        owner,
                        name: name.clone(),
                        sub: None,
                        live: false,
                        orphans: Vec::new(),
                    });
                }
                self.subscribe_mirror(conv_slot, owner);
            }
        }
    }

    /// Opens the mirror's subscription on `owner`. One on another owner is dropped first,
    /// unless that owner is alive and still feeds messages in progress: it then stays until
    /// they end (make before break), so a map that moves the conversation while its owner
    /// lives (a host joins or comes back) cuts nothing.
    fn subscribe_mirror(&mut self, conv_slot: u32, owner: ShardId) {
        if !self.retire_mirror_sub(conv_slot, owner) {
            self.unsubscribe_mirror(conv_slot);
        }
        let Some(uplink) = self.uplink(owner) else {
            return;
        };
        let sub = self.mirrors.next_sub;
        self.mirrors.next_sub = self.mirrors.next_sub.wrapping_add(1);
        let held = self.mirrored_messages(conv_slot, true);
        let Some(mirror) = self
            .conversations
            .get_mut(conv_slot)
            .and_then(|c| c.mirror.as_mut())
        else {
            return;
        };
        mirror.owner = owner;
        mirror.sub = Some(sub);
        mirror.live = false;
        mirror.orphans = held;
        let conversation = mirror.name.clone();
        self.mirrors.subs.insert((owner, sub), conv_slot);
        self.forward(
            uplink,
            owner,
            Request::Listen {
                sub,
                conversation,
                from: ListenFrom::Live,
            },
        );
    }

    /// Forgets a mirror subscription and tells its owner (the uplink stays; see
    /// `drop_idle_uplink`).
    fn close_mirror_sub(&mut self, owner: ShardId, sub: u32) {
        self.mirrors.subs.remove(&(owner, sub));
        if let Some(&uplink) = self.mirrors.uplinks.get(&owner) {
            self.forward(uplink, owner, Request::Unlisten { sub });
        }
    }

    /// Closes the mirror's subscription (if open) and any retired one; its messages stay
    /// until a new one says which continue.
    fn unsubscribe_mirror(&mut self, conv_slot: u32) {
        let retired: Vec<(ShardId, u32)> = self
            .mirrors
            .subs
            .iter()
            .filter(|(_, slot)| **slot == conv_slot)
            .map(|(key, _)| *key)
            .filter(|&(owner, sub)| self.is_retired(owner, sub, conv_slot))
            .collect();
        for (owner, sub) in retired {
            self.close_mirror_sub(owner, sub);
            self.drop_idle_uplink(owner);
        }
        let Some(mirror) = self
            .conversations
            .get_mut(conv_slot)
            .and_then(|c| c.mirror.as_mut())
        else {
            return;
        };
        let owner = mirror.owner;
        mirror.live = false;
        let Some(sub) = mirror.sub.take() else {
            return;
        };
        let held: Vec<u32> = self
            .conversations
            .get(conv_slot)
            .map(|c| c.messages.clone())
            .unwrap_or_default();
        self.mirrors
            .streams
            .retain(|(o, _), slot| *o != owner || !held.contains(slot));
        self.close_mirror_sub(owner, sub);
        self.drop_idle_uplink(owner);
    }

    /// The uplink to `owner`, opened (attached) when there is none.
    fn uplink(&mut self, owner: ShardId) -> Option<ConnId> {
        if let Some(&conn) = self.mirrors.uplinks.get(&owner) {
            return Some(conn);
        }
        let conn = self.new_link_id(owner)?;
        self.mirrors.uplinks.insert(owner, conn);
        let grant = self.edge_grant();
        let session_id = self.new_session_id();
        self.actions.push_back(Action::ToShard {
            shard: owner,
            msg: PeerMessage::Attach {
                conn,
                session_id,
                grant,
            },
        });
        Some(conn)
    }

    /// A virtual connection id towards `owner` that no other link of this shard uses: the
    /// owner's position in the cluster map above `UPLINK_INDEX_MIN`, and a new generation.
    pub(super) fn new_link_id(&mut self, owner: ShardId) -> Option<ConnId> {
        let index = self
            .cluster
            .shards()
            .iter()
            .position(|s| s.shard == owner)?;
        self.mirrors.uplink_generation = self.mirrors.uplink_generation.wrapping_add(1);
        Some(ConnId {
            // The membership holds at most MEMBERSHIP_SHARDS_MAX shards: the index fits.
            index: UPLINK_INDEX_MIN + index as u32,
            generation: self.mirrors.uplink_generation,
        })
    }

    /// Detaches the uplink to `owner` when no mirror uses it any more.
    fn drop_idle_uplink(&mut self, owner: ShardId) {
        if self.mirrors.subs.keys().any(|(o, _)| *o == owner) {
            return;
        }
        if let Some(conn) = self.mirrors.uplinks.remove(&owner) {
            self.actions.push_back(Action::ToShard {
                shard: owner,
                msg: PeerMessage::Detach { conn },
            });
        }
    }

    /// The owner closed a link of this shard's (the uplink, or a listener's catch-up link).
    pub(super) fn uplink_closed(&mut self, owner: ShardId, conn: ConnId) {
        if self.mirrors.uplinks.get(&owner) == Some(&conn) {
            self.uplink_lost(owner);
        } else {
            self.owner_catch_up_closed(conn);
        }
    }

    /// Whether `conn` names an uplink (not a client connection).
    pub(super) fn is_uplink(conn: ConnId) -> bool {
        conn.index >= UPLINK_INDEX_MIN
    }

    /// The rights an edge holds on its owners: listening to any conversation, from live or
    /// from the store (a listener's catch-up). The peer link that carries it is
    /// authenticated, and each client was authorised on its own host.
    pub(super) fn edge_grant(&self) -> Grant {
        Grant {
            // Invariant: a short printable constant is a valid subject.
            subject: Subject::new(EDGE_SUBJECT).expect("the edge subject is valid"),
            rights: Rights::of(&[Right::Listen, Right::History]),
            // Invariant: the empty prefix is valid.
            scope: Scope::Prefix(ConvPrefix::new("").expect("the empty prefix is valid")),
            expires_at_s: u64::MAX,
            key_id: self.keyring.minting_key_id(),
        }
    }

    /// Events the owner delivered on an uplink.
    pub(super) fn uplink_deliver(&mut self, owner: ShardId, conn: ConnId, bytes: Bytes) {
        if self.mirrors.uplinks.get(&owner) != Some(&conn) {
            // A listener's catch-up link, or a link closed since.
            return self.owner_catch_up_deliver(owner, conn, bytes);
        }
        // The bytes are consumed at once: credit them so the owner's queue stays short.
        self.actions.push_back(Action::ToShard {
            shard: owner,
            msg: PeerMessage::Written {
                conn,
                n: bytes.len(),
            },
        });
        let mut input = std::mem::take(&mut self.mirrors.input);
        input.extend_from_slice(&bytes);
        loop {
            match self.mirrors.decoder.decode_event(&mut input) {
                Ok(Some(event)) => self.mirror_event(owner, event),
                Ok(None) => break,
                Err(_) => {
                    // The owner's shard encoded these events; garbage means the link is
                    // broken. Start over with a new uplink.
                    input.clear();
                    self.mirrors.decoder = Decoder::new();
                    self.uplink_lost(owner);
                    break;
                }
            }
        }
        self.mirrors.input = input;
        // What the mirror now holds may let listeners catching up through this owner switch.
        self.switch_ready_catch_ups(owner);
    }

    /// The owner closed the uplink (or it broke): every mirror on it subscribes again on the
    /// next tick, wherever the map then says.
    pub(super) fn uplink_lost(&mut self, owner: ShardId) {
        // Listeners catching up through this owner cannot be sure to switch to the mirror's
        // next subscription without a gap: they listen again.
        self.fail_owner_catch_ups(
            |route| route.owner == owner,
            ErrorCode::OWNER_UNAVAILABLE,
            "the link to the host that owns the conversation was lost; listen again from the \
             last message completed",
        );
        let Some(conn) = self.mirrors.uplinks.remove(&owner) else {
            return;
        };
        let lost: Vec<u32> = self
            .mirrors
            .subs
            .iter()
            .filter(|((o, _), _)| *o == owner)
            .map(|(_, slot)| *slot)
            .collect();
        self.mirrors.subs.retain(|(o, _), _| *o != owner);
        self.mirrors.streams.retain(|(o, _), _| *o != owner);
        for slot in lost {
            if let Some(mirror) = self
                .conversations
                .get_mut(slot)
                .and_then(|c| c.mirror.as_mut())
                .filter(|m| m.owner == owner)
            {
                mirror.sub = None;
                mirror.live = false;
                self.mirrors.retry = true;
            }
        }
        self.actions.push_back(Action::ToShard {
            shard: owner,
            msg: PeerMessage::Detach { conn },
        });
    }

    fn mirror_event(&mut self, owner: ShardId, event: Event) {
        match event {
            Event::MessageStarted {
                sub,
                stream,
                msg_id,
                sender,
                codec,
                ..
            } => {
                let Some(&conv_slot) = self.mirrors.subs.get(&(owner, sub)) else {
                    return;
                };
                self.mirror_message_started(owner, conv_slot, stream, msg_id, sender, codec);
            }
            Event::Frame {
                stream,
                seq,
                payload,
                ..
            } => {
                let Some(&slot) = self.mirrors.streams.get(&(owner, stream)) else {
                    return;
                };
                let Some(m) = self.messages.get(slot) else {
                    return;
                };
                if m.phase != MessagePhase::Open || seq < m.accepted {
                    return; // held already (a new subscription replays from frame 0)
                }
                if seq > m.accepted {
                    // A gap cannot come from the owner's in-order delivery; cut rather
                    // than hand listeners a hole.
                    self.mirrors.streams.remove(&(owner, stream));
                    return self.cut_mirrored(slot);
                }
                self.accept_frame(slot, seq, payload);
            }
            Event::MessageEnded {
                stream,
                frame_count,
                outcome,
            } => {
                let Some(slot) = self.mirrors.streams.remove(&(owner, stream)) else {
                    return;
                };
                let accepted = self.messages.get(slot).map_or(0, |m| m.accepted);
                let state = if outcome == MessageOutcome::Complete && frame_count == accepted {
                    EndState::Complete
                } else {
                    EndState::Truncated
                };
                self.end_mirrored(slot, state);
                self.release_retired_subs(owner);
            }
            Event::CaughtUp { sub } => {
                let Some(&conv_slot) = self.mirrors.subs.get(&(owner, sub)) else {
                    return;
                };
                let Some(conv) = self.conversations.get_mut(conv_slot) else {
                    return;
                };
                let Some(mirror) = conv.mirror.as_mut().filter(|m| m.sub == Some(sub)) else {
                    return;
                };
                mirror.live = true;
                let orphans = std::mem::take(&mut mirror.orphans);
                // Listeners waiting for the mirror to be live are told `caught_up` now.
                self.pump_queue
                    .extend(conv.listeners.iter().map(|l| l.conn));
                // Not announced by the new subscription: held for a resume on the new owner
                // (cut when the grace passes).
                for msg in orphans {
                    if let Some(&slot) = self.msg_by_id.get(&msg) {
                        self.hold_for_handover(slot);
                    }
                }
            }
            Event::Unlistened { sub }
            | Event::Error {
                about: ErrorSubject::Sub(sub),
                ..
            } => {
                // The owner ended the subscription (it is draining, or its map differs):
                // subscribe again on the next tick.
                if let Some(conv_slot) = self.mirrors.subs.remove(&(owner, sub))
                    && let Some(mirror) = self
                        .conversations
                        .get_mut(conv_slot)
                        .and_then(|c| c.mirror.as_mut())
                    && mirror.sub == Some(sub)
                {
                    mirror.sub = None;
                    mirror.live = false;
                    self.mirrors.retry = true;
                }
            }
            _ => {}
        }
    }

    fn mirror_message_started(
        &mut self,
        owner: ShardId,
        conv_slot: u32,
        stream: u32,
        msg: MsgId,
        sender: String,
        codec: Bytes,
    ) {
        if self
            .conversations
            .get(conv_slot)
            .is_some_and(|c| c.ended.contains(&msg))
            || self.store.message_info(msg).is_some()
        {
            // Cut or ended here before (its listeners heard it end), or this shard stores
            // its own copy (it took the message over): another owner's copy is not heard.
            return;
        }
        if let Some(&slot) = self.msg_by_id.get(&msg) {
            // Held from an earlier subscription (or by a new owner that adopted it):
            // continue it.
            self.mirrors.held.remove(&msg);
            if let Some(mirror) = self
                .conversations
                .get_mut(conv_slot)
                .and_then(|c| c.mirror.as_mut())
            {
                mirror.orphans.retain(|m| *m != msg);
            }
            self.mirrors.streams.insert((owner, stream), slot);
            return;
        }
        let handle = self.allocate_handle();
        let message = LiveMessage::open(msg, conv_slot, handle, sender, codec, Talker::Mirror, 0);
        let slot = self.insert_live_message(message);
        self.mirrors.streams.insert((owner, stream), slot);
        self.announce_message(slot);
    }

    /// Ends a mirrored message for this shard's listeners (remembering it ended, so it is
    /// not heard again) and forgets it once none reads it.
    fn end_mirrored(&mut self, slot: u32, state: EndState) {
        if let Some(m) = self.messages.get(slot)
            && m.phase == MessagePhase::Open
        {
            let (msg, conv_slot) = (m.msg, m.conv);
            if let Some(conv) = self.conversations.get_mut(conv_slot) {
                if conv.ended.len() >= ENDED_REMEMBERED_MAX {
                    conv.ended.pop_front();
                }
                conv.ended.push_back(msg);
            }
        }
        self.end_message(slot, state);
        self.forget_mirrored_if_unread(slot);
    }

    /// Forgets an ended mirrored message that no delivery of this shard still reads.
    pub(super) fn forget_mirrored_if_unread(&mut self, slot: u32) {
        let Some(m) = self.messages.get(slot) else {
            return;
        };
        if m.talker != Talker::Mirror || m.phase == MessagePhase::Open {
            return;
        }
        let (msg, conv_slot) = (m.msg, m.conv);
        // Read by a delivery, or listed for one (a slow listener's backlog: the store here
        // does not hold the message, so it is replayed from this copy).
        let read = self.conversations.get(conv_slot).is_some_and(|conv| {
            conv.listeners.iter().any(|l| {
                self.session(l.conn)
                    .and_then(|s| s.subs.get(usize::from(l.slot))?.as_ref())
                    .is_some_and(|sub| {
                        sub.deliveries.iter().any(|d| d.msg == msg) || sub.backlog.contains(&msg)
                    })
            })
        });
        if !read {
            self.note_mirrored_forgotten(conv_slot, msg);
            self.mirrors.streams.retain(|_, s| *s != slot);
            self.forget_message(slot, None);
        }
    }

    /// The last listener of a mirrored conversation left: close its subscription on the
    /// owner and forget its messages.
    pub(super) fn drop_mirror_if_unheard(&mut self, conv_slot: u32) {
        let Some(conv) = self.conversations.get(conv_slot) else {
            return;
        };
        if conv.mirror.is_none() || !conv.listeners.is_empty() {
            return;
        }
        self.unsubscribe_mirror(conv_slot);
        // Only the owner's messages go; one talked here (before the conversation moved away)
        // goes on to its end.
        let held: Vec<u32> = self
            .conversations
            .get(conv_slot)
            .map(|c| c.messages.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|s| {
                self.messages
                    .get(*s)
                    .is_some_and(|m| m.talker == Talker::Mirror)
            })
            .collect();
        for slot in held {
            if let Some(m) = self.messages.get(slot) {
                self.mirrors.held.remove(&m.msg);
            }
            self.mirrors.streams.retain(|_, s| *s != slot);
            self.forget_message(slot, None);
        }
        if let Some(conv) = self.conversations.get_mut(conv_slot) {
            conv.mirror = None;
        }
        self.drop_conversation_if_idle(conv_slot);
    }
}
