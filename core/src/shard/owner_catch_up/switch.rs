//! When a catch-up through the owner hands its listener over to the mirror, and the credit
//! that paces it meanwhile (see the parent module for why the switch is exact).

use super::{HeardBefore, ListenerRef, PeerMessage, Talker};
use crate::ids::{MsgId, ShardId};
use crate::shard::session::ConnId;
use crate::shard::store::BodyStore;
use crate::shard::{Action, Shard};

impl<S: BodyStore> Shard<S> {
    /// Credits the owner with the link's bytes once the listener's queue has room.
    pub(in crate::shard) fn credit_owner_catch_up(&mut self, conn: ConnId, slot: usize) {
        let budget = self.config.send_queue_bytes_max;
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        if session.queued_bytes >= budget {
            return; // credited when the listener has written
        }
        let Some(c) = session
            .subs
            .get_mut(slot)
            .and_then(|s| s.as_mut()?.through_owner.as_mut())
        else {
            return;
        };
        if c.owed_bytes == 0 {
            return;
        }
        let n = std::mem::take(&mut c.owed_bytes);
        let (owner, link) = (c.owner, c.link);
        self.actions.push_back(Action::ToShard {
            shard: owner,
            msg: PeerMessage::Written { conn: link, n },
        });
    }

    /// After the mirror of `owner`'s conversations changed: catch-ups through it that can
    /// switch do.
    pub(in crate::shard) fn switch_ready_catch_ups(&mut self, owner: ShardId) {
        if self.mirrors.catch_ups.is_empty() {
            return;
        }
        let ready: Vec<ListenerRef> = self
            .mirrors
            .catch_ups
            .values()
            .filter(|r| r.owner == owner)
            .map(|r| r.listener)
            .collect();
        for l in ready {
            self.switch_to_mirror_if_ready(l.conn, usize::from(l.slot));
        }
    }

    /// The mirror forgot `msg` of the conversation in `conv_slot`: catch-ups that have not
    /// listed it yet must not switch before they have.
    pub(in crate::shard) fn note_mirrored_forgotten(&mut self, conv_slot: u32, msg: MsgId) {
        if self.mirrors.catch_ups.is_empty() {
            return;
        }
        let Some(conv) = self.conversations.get(conv_slot) else {
            return;
        };
        let conv_id = conv.id;
        let listeners: Vec<ListenerRef> = self
            .mirrors
            .catch_ups
            .values()
            .filter(|r| r.conv == conv_id)
            .map(|r| r.listener)
            .collect();
        for l in listeners {
            if let Some(c) = self
                .sub_at_mut(l.conn, usize::from(l.slot))
                .and_then(|s| s.through_owner.as_mut())
                && msg >= c.first_unheard
                && c.forgotten_max.is_none_or(|f| msg > f)
            {
                c.forgotten_max = Some(msg);
            }
        }
    }

    /// Switches a catch-up to the mirror when the mirror can continue it exactly: the owner
    /// said `caught_up`, the mirror's subscription is the one in force at the start, the
    /// mirror forgot no message not yet listed, and it holds every message still being
    /// delivered at least up to the delivery's next frame.
    pub(super) fn switch_to_mirror_if_ready(&mut self, conn: ConnId, slot: usize) {
        let Some(sub) = self.sub_at(conn, slot) else {
            return;
        };
        let Some(c) = sub.through_owner.as_deref() else {
            return;
        };
        if !c.caught_up || c.forgotten_max.is_some_and(|f| f >= c.first_unheard) {
            return;
        }
        let Some(mirror_sub) = c.mirror_sub else {
            return;
        };
        let first_unheard = c.first_unheard;
        let Some(&conv_slot) = self.conv_by_id.get(&sub.conv_id) else {
            return;
        };
        let Some(conv) = self.conversations.get(conv_slot) else {
            return;
        };
        if conv.mirror.as_ref().and_then(|m| m.sub) != Some(mirror_sub) {
            return;
        }
        let held = sub.deliveries.iter().all(|d| {
            self.msg_by_id
                .get(&d.msg)
                .and_then(|s| self.messages.get(*s))
                .is_some_and(|m| {
                    m.talker == Talker::Mirror && m.conv == conv_slot && m.accepted >= d.next_seq
                })
        });
        if !held {
            return;
        }
        let mut later: Vec<MsgId> = conv
            .messages
            .iter()
            .filter_map(|s| self.messages.get(*s))
            .map(|m| m.msg)
            .filter(|msg| *msg >= first_unheard)
            .collect();
        later.sort_unstable();
        let Some(sub) = self.sub_at_mut(conn, slot) else {
            return;
        };
        let Some(catch_up) = sub.through_owner.take() else {
            return;
        };
        // Open deliveries replay from the mirror's tail at their next frame and join live.
        for d in &mut sub.deliveries {
            d.live = false;
        }
        sub.live = true;
        sub.heard_before = Some(HeardBefore {
            mirror_sub,
            first_unheard,
        });
        self.close_owner_catch_up(&catch_up);
        for msg in later {
            self.begin_delivery(conn, slot, msg);
        }
        self.pump_queue.push(conn);
    }
}
