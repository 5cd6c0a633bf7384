//! The store's durability acks: talkers hear `stored` and `talk_ended`, tails shrink, and
//! messages whose end is durable leave memory (their frames are all in the store).

use super::conversation::{MessagePhase, Talker};
use super::store::{BodyStore, StoreAcks};
use super::{RouteReleased, Shard};
use crate::protocol::Event;

impl<S: BodyStore> Shard<S> {
    /// The store made records durable: talkers get `stored` and `talk_ended`, tails shrink,
    /// messages whose end is durable are forgotten (their frames are all in the store).
    pub fn store_acks(&mut self, now_us: u64, acks: &StoreAcks) {
        self.now_us = now_us;
        for ack in &acks.durable {
            let Some(&slot) = self.msg_by_id.get(&ack.msg) else {
                continue;
            };
            let Some(m) = self.messages.get_mut(slot) else {
                continue;
            };
            let durable = ack.durable_through_seq.saturating_add(1).min(m.accepted);
            while m.tail_first_seq() < durable {
                m.tail.pop_front();
            }
            if durable <= m.stored_acked {
                continue;
            }
            m.stored_acked = durable;
            if let Talker::Local { conn, stream } = m.talker {
                self.send_event(
                    conn,
                    &Event::Stored {
                        stream,
                        frames_stored: durable,
                    },
                );
            }
        }
        for (msg, _state) in &acks.ended {
            let Some(&slot) = self.msg_by_id.get(msg) else {
                continue;
            };
            if matches!(
                self.messages.get(slot).map(|m| m.phase),
                Some(MessagePhase::Ending(_))
            ) {
                let talker = self.messages.get(slot).map(|m| (m.talker, m.accepted));
                self.forget_message(slot, talker);
            }
        }
        self.finish_input();
    }

    /// Removes an ended message from memory, telling its talker `talk_ended`.
    pub(super) fn forget_message(&mut self, slot: u32, talker: Option<(Talker, u32)>) {
        if let Some((Talker::Local { conn, stream }, frame_count)) = talker {
            if let Some(session) = self.session_mut(conn)
                && let Some(i) = session.talk(stream)
            {
                session.talks.swap_remove(i);
            }
            self.send_event(
                conn,
                &Event::TalkEnded {
                    stream,
                    frame_count,
                },
            );
            self.release_route(conn, RouteReleased::TalkStream(stream), false);
        }
        let Some(m) = self.messages.remove(slot) else {
            return;
        };
        self.msg_by_id.remove(&m.msg);
        self.release_handle(m.handle);
        if let Some(conv) = self.conversations.get_mut(m.conv) {
            conv.messages.retain(|s| *s != slot);
        }
        self.drop_conversation_if_idle(m.conv);
    }
}
