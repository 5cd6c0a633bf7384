//! Mirrors following the map: a mirror moves with its conversation's owner, becomes an
//! ordinary conversation when this shard is the owner again, and a conversation this shard
//! owned that moved to another host becomes a mirror; what is cut on the way is remembered so
//! it is not heard twice. A mirror whose owner moves while alive keeps its old subscription
//! (retired) until the messages it feeds end: make before break.

use super::super::Shard;
use super::super::conversation::{MessagePhase, Talker};
use super::super::session::ConnId;
use super::super::store::{BodyStore, EndState};
use crate::ids::{MsgId, ShardId};
use crate::protocol::{ErrorCode, ErrorSubject};

impl<S: BodyStore> Shard<S> {
    /// After a map change or on a tick: every mirror follows its conversation's owner. A
    /// mirror whose conversation this shard now owns becomes an ordinary conversation (its
    /// messages in progress end here, cut: their frames are on the old owner).
    pub(in crate::shard) fn retarget_mirrors(&mut self) {
        self.mirrors.retry = false;
        // A listener catching up through an owner that no longer owns the conversation
        // listens again (and reaches the new owner).
        let cluster = &self.cluster;
        let shard = self.shard;
        let moved: Vec<ConnId> = self
            .mirrors
            .catch_ups
            .iter()
            .filter(|(_, route)| cluster.owner(route.conv).unwrap_or(shard) != route.owner)
            .map(|(link, _)| *link)
            .collect();
        for link in moved {
            self.fail_owner_catch_up_on(
                link,
                ErrorCode::MAP_CHANGED,
                "the conversation moved to another host; listen again from the last message \
                 completed",
            );
        }
        let mirrored: Vec<(u32, ShardId, Option<u32>, crate::ids::ConvId)> = self
            .conversations
            .iter()
            .filter_map(|(slot, c)| c.mirror.as_ref().map(|m| (slot, m.owner, m.sub, c.id)))
            .collect();
        for (slot, owner, sub, conv) in mirrored {
            let now_owner = self.owner_of(conv);
            if now_owner == self.shard || self.is_local(now_owner) {
                self.unsubscribe_mirror(slot);
                for msg in self.mirrored_messages(slot, false) {
                    if let Some(&m) = self.msg_by_id.get(&msg) {
                        if now_owner == self.shard {
                            // Its talker resumes here and this shard adopts the copy.
                            self.hold_for_handover(m);
                        } else {
                            self.cut_mirrored(m);
                        }
                    }
                }
                if let Some(c) = self.conversations.get_mut(slot) {
                    c.mirror = None;
                    // Listeners waiting for the mirror to be live are live here now.
                    self.pump_queue.extend(c.listeners.iter().map(|l| l.conn));
                }
                if now_owner != self.shard {
                    self.end_listeners_moved(slot);
                }
                self.drop_conversation_if_idle(slot);
            } else if now_owner != owner || sub.is_none() {
                self.subscribe_mirror(slot, now_owner);
            }
        }
        // A conversation this shard owned and still has listeners for, now owned elsewhere:
        // on another host it becomes a mirror of the new owner (the listeners stay and hear
        // on); on another shard of this host its listeners are told to listen again.
        let moved: Vec<(u32, crate::ids::ConvId)> = self
            .conversations
            .iter()
            .filter(|(_, c)| c.mirror.is_none() && !c.listeners.is_empty())
            .map(|(slot, c)| (slot, c.id))
            .filter(|(_, conv)| self.owner_of(*conv) != self.shard)
            .collect();
        for (slot, conv) in moved {
            let now_owner = self.owner_of(conv);
            if self.is_local(now_owner) {
                self.end_listeners_moved(slot);
                self.drop_conversation_if_idle(slot);
                continue;
            }
            let name = self.conversations.get(slot).and_then(|c| {
                let l = c.listeners.first()?;
                let sub = self
                    .session(l.conn)?
                    .subs
                    .get(usize::from(l.slot))?
                    .as_ref()?;
                Some(sub.conv_name.clone())
            });
            if let Some(name) = name {
                self.ensure_mirror(slot, &name, now_owner);
            }
        }
    }

    /// The messages of a conversation that came from its owner (not talked here); with
    /// `open_only`, those still taking frames.
    pub(super) fn mirrored_messages(&self, conv_slot: u32, open_only: bool) -> Vec<MsgId> {
        self.conversations
            .get(conv_slot)
            .map(|c| {
                c.messages
                    .iter()
                    .filter_map(|s| self.messages.get(*s))
                    .filter(|m| m.talker == Talker::Mirror)
                    .filter(|m| !open_only || m.phase == MessagePhase::Open)
                    .map(|m| m.msg)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Cuts a mirrored message here (its owner did not end it): listeners hear it end
    /// truncated, and the conversation remembers not to hear it again.
    pub(in crate::shard) fn cut_mirrored(&mut self, slot: u32) {
        self.end_mirrored(slot, EndState::Truncated);
    }

    /// The conversation's owner is now another shard of this host: its subscriptions here end
    /// with an error that tells the client to listen again (it then reaches the owner).
    fn end_listeners_moved(&mut self, conv_slot: u32) {
        let listeners = self
            .conversations
            .get(conv_slot)
            .map(|c| c.listeners.clone())
            .unwrap_or_default();
        for l in listeners {
            let Some(sub) = self
                .session(l.conn)
                .and_then(|s| s.subs.get(usize::from(l.slot))?.as_ref())
                .map(|s| s.sub)
            else {
                continue;
            };
            self.drop_subscription(l.conn, usize::from(l.slot));
            self.send_error(
                l.conn,
                ErrorCode::MAP_CHANGED,
                ErrorSubject::Sub(sub),
                "the conversation moved to another shard; listen again",
            );
            self.release_route(l.conn, super::super::RouteReleased::Sub(sub), false);
        }
    }

    /// A listener of a mirrored conversation fell so far behind that more messages started
    /// than its backlog holds (`replay_page_messages`); the store here does not hold them, so
    /// its subscription ends and the client listens again from the last message it completed
    /// (which catches up through the owner).
    pub(in crate::shard) fn fall_too_far_behind(
        &mut self,
        listener: super::super::conversation::ListenerRef,
    ) {
        let (conn, slot) = (listener.conn, usize::from(listener.slot));
        let Some(sub) = self
            .session(conn)
            .and_then(|s| s.subs.get(slot)?.as_ref())
            .map(|s| s.sub)
        else {
            return;
        };
        self.drop_subscription(conn, slot);
        self.send_error(
            conn,
            ErrorCode::MAP_CHANGED,
            ErrorSubject::Sub(sub),
            "this listener fell too far behind another host's conversation; listen again from \
             the last message completed",
        );
        self.release_route(conn, super::super::RouteReleased::Sub(sub), false);
    }

    /// Keeps the mirror's subscription on its current owner as a *retired* one when the
    /// conversation moves to `new_owner` while that owner is in the map and feeds messages
    /// in progress; true when it did.
    pub(super) fn retire_mirror_sub(&mut self, conv_slot: u32, new_owner: ShardId) -> bool {
        let Some((old, Some(_))) = self
            .conversations
            .get(conv_slot)
            .and_then(|c| c.mirror.as_ref())
            .map(|m| (m.owner, m.sub))
        else {
            return false;
        };
        if old == new_owner || !self.cluster.contains(old) || !self.feeds_open(old, conv_slot) {
            return false;
        }
        if let Some(mirror) = self
            .conversations
            .get_mut(conv_slot)
            .and_then(|c| c.mirror.as_mut())
        {
            // The (owner, sub) entry stays in `subs`: its events are still heard.
            mirror.sub = None;
            mirror.live = false;
        }
        true
    }

    /// Whether `owner` feeds an open message of the conversation in `conv_slot`.
    fn feeds_open(&self, owner: ShardId, conv_slot: u32) -> bool {
        self.mirrors.streams.iter().any(|((o, _), slot)| {
            *o == owner
                && self
                    .messages
                    .get(*slot)
                    .is_some_and(|m| m.conv == conv_slot && m.phase == MessagePhase::Open)
        })
    }

    /// Closes retired subscriptions on `owner` that feed no open message any more.
    pub(super) fn release_retired_subs(&mut self, owner: ShardId) {
        let retired: Vec<(u32, u32)> = self
            .mirrors
            .subs
            .iter()
            .filter(|((o, _), _)| *o == owner)
            .map(|((_, sub), conv_slot)| (*sub, *conv_slot))
            .filter(|(sub, conv_slot)| self.is_retired(owner, *sub, *conv_slot))
            .collect();
        for (sub, conv_slot) in retired {
            if !self.feeds_open(owner, conv_slot) {
                self.close_mirror_sub(owner, sub);
            }
        }
        self.drop_idle_uplink(owner);
    }

    /// Whether subscription `sub` on `owner` is one the mirror in `conv_slot` moved on from.
    pub(super) fn is_retired(&self, owner: ShardId, sub: u32, conv_slot: u32) -> bool {
        self.conversations
            .get(conv_slot)
            .and_then(|c| c.mirror.as_ref())
            .is_none_or(|m| (m.owner, m.sub) != (owner, Some(sub)))
    }
}
