//! Handing a message over to a new owner: when the owner of a conversation dies or drains
//! while a message is being talked, the talker resumes the message (`talk_start` with
//! `resume`) and the conversation's new owner *adopts* it: it stores the message under its
//! original id from the first frame it can get, and the message goes on there.
//!
//! ```text
//!  talker ── resume m ──► new owner: m open here?  ── yes ─► ordinary resume (next_seq = accepted)
//!                                    │ no
//!                                    ├─ held as a mirror copy from frame 0 (this shard was the
//!                                    │  host's edge for the conversation) ─► store the copy,
//!                                    │  go on at next_seq = frames held: listeners here hear
//!                                    │  no break
//!                                    ├─ started by another shard, not stored here, not
//!                                    │  heard ending here, recent
//!                                    │  ─► store it anew, next_seq = 0 (the talker resends
//!                                    │  every frame; it keeps them for this)
//!                                    └─ else ─► message_unavailable / owner_unavailable
//! ```
//!
//! Listeners elsewhere do not hear the message cut: a mirror whose owner stopped sending an
//! open message (the owner died, or the map moved it) *holds* it for the resume grace period
//! (`talk_resume_grace_ms`) instead of cutting it at once. When the new owner announces the
//! adopted message the mirror continues it (frames it holds already are dropped by sequence
//! number); when the grace passes it is cut (`truncated`). The old owner's copy of the frames
//! it had stored stays in its store, truncated.

use bytes::Bytes;

use super::conversation::{MessagePhase, Talker};
use super::session::ConnId;
use super::store::BodyStore;
use super::talk::fault_code;
use super::{Event, Shard};
use crate::ids::MsgId;
use crate::protocol::ErrorCode;

/// How old a message may be for a new owner to adopt it (µs, by the start time in its id).
/// A talker resumes within seconds of losing its owner; the bound stops a client from
/// planting messages under made-up ids of long ago.
pub const ADOPT_AGE_MAX_US: u64 = 3_600_000_000;

/// How far in the future a message's start time may be for adoption (µs): clock skew
/// between hosts.
pub const ADOPT_CLOCK_SKEW_MAX_US: u64 = 60_000_000;

impl<S: BodyStore> Shard<S> {
    /// A resume of `msg` that is not open here: adopted when this shard may take it over,
    /// else refused. `codec` and the session's sender describe a message stored anew.
    pub(super) fn adopt_message(
        &mut self,
        conn: ConnId,
        stream: u32,
        conv_slot: u32,
        msg: MsgId,
        codec: Bytes,
    ) {
        let held = self.msg_by_id.get(&msg).copied();
        if let Some(slot) = held {
            let mirrored = self
                .conversations
                .get(conv_slot)
                .is_some_and(|c| c.mirror.is_some());
            let why = match self.messages.get(slot) {
                None => "is not open for a resume",
                Some(m) if m.conv != conv_slot => "belongs to another conversation",
                Some(m) if m.phase != MessagePhase::Open => "has ended",
                Some(m) if m.talker != Talker::Mirror => "is open here for another talker",
                Some(m) if m.tail_first_seq() != 0 => "is held here without its first frames",
                Some(_) if mirrored => "is owned by another host here",
                Some(_) => return self.adopt_mirrored(conn, stream, slot),
            };
            let (code, text) = self.unavailable(msg, why);
            return self.refuse_talk(conn, stream, code, &text);
        }
        if self
            .conversations
            .get(conv_slot)
            .is_some_and(|c| c.ended.contains(&msg))
        {
            // This shard's listeners heard it end (its owner ended it, or nobody resumed it
            // in time): it is not heard again.
            let text = format!("the message {msg} has ended");
            return self.refuse_talk(conn, stream, ErrorCode::MESSAGE_UNAVAILABLE, &text);
        }
        let now = self.now_us;
        let recent = msg.start_us() <= now.saturating_add(ADOPT_CLOCK_SKEW_MAX_US)
            && now.saturating_sub(msg.start_us()) <= ADOPT_AGE_MAX_US;
        if msg.shard() == self.shard || !recent || self.store.message_info(msg).is_some() {
            let (code, text) = self.unavailable(msg, "is not open for a resume");
            return self.refuse_talk(conn, stream, code, &text);
        }
        self.start_message(conn, stream, conv_slot, codec, Some(msg));
    }

    /// Takes over a message this shard holds as a mirror copy from its first frame: the
    /// copy is stored and the talker goes on after it.
    fn adopt_mirrored(&mut self, conn: ConnId, stream: u32, slot: u32) {
        let Some(m) = self.messages.get(slot) else {
            return;
        };
        let (msg, conv_slot) = (m.msg, m.conv);
        let Some(conv_id) = self.conversations.get(conv_slot).map(|c| c.id) else {
            return;
        };
        let frames: Vec<Bytes> = m.tail.iter().cloned().collect();
        let stored = self
            .store
            .start_message(msg, conv_id, m.sender.as_bytes(), &m.codec)
            .and_then(|()| {
                frames.iter().enumerate().try_for_each(|(seq, frame)| {
                    // The tail holds frames 0..accepted and accepted is a u32.
                    self.store.append(msg, seq as u32, frame).map(|_| ())
                })
            });
        if let Err(fault) = stored {
            let (code, text) = fault_code(&fault);
            return self.refuse_talk(conn, stream, code, &text);
        }
        self.mirrors.held.remove(&msg);
        self.mirrors.streams.retain(|_, s| *s != slot);
        let next_seq = frames.len() as u32;
        if let Some(m) = self.messages.get_mut(slot) {
            m.talker = Talker::Local { conn, stream };
            m.stored_acked = 0;
        }
        self.tally.messages_handed_over += 1;
        self.attach_talk(conn, stream, slot);
        self.send_event(
            conn,
            &Event::TalkStarted {
                stream,
                msg_id: msg,
                next_seq,
            },
        );
    }

    /// Holds the open mirrored message in `slot`, which its owner stopped sending, for a
    /// resume on the conversation's new owner.
    pub(super) fn hold_for_handover(&mut self, slot: u32) {
        let Some(m) = self.messages.get(slot) else {
            return;
        };
        if m.talker != Talker::Mirror || m.phase != MessagePhase::Open {
            return;
        }
        let until_us = self
            .now_us
            .saturating_add(self.config.talk_resume_grace_ms.saturating_mul(1000));
        self.mirrors.held.entry(m.msg).or_insert(until_us);
    }

    /// Cuts held messages whose grace passed without a new owner taking them on.
    pub(super) fn expire_held_for_handover(&mut self) {
        if self.mirrors.held.is_empty() {
            return;
        }
        let now = self.now_us;
        let expired: Vec<MsgId> = self
            .mirrors
            .held
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(msg, _)| *msg)
            .collect();
        for msg in expired {
            self.mirrors.held.remove(&msg);
            let Some(&slot) = self.msg_by_id.get(&msg) else {
                continue;
            };
            let still_held = self
                .messages
                .get(slot)
                .is_some_and(|m| m.talker == Talker::Mirror && m.phase == MessagePhase::Open);
            let fed = self.mirrors.streams.values().any(|s| *s == slot);
            if still_held && !fed {
                self.cut_mirrored(slot);
            }
        }
    }

    /// Messages of the conversation in `conv_slot` that still take frames.
    pub(super) fn open_message_count(&self, conv_slot: u32) -> usize {
        self.conversations.get(conv_slot).map_or(0, |conv| {
            conv.messages
                .iter()
                .filter(|m| {
                    self.messages
                        .get(**m)
                        .is_some_and(|m| m.phase == MessagePhase::Open)
                })
                .count()
        })
    }
}
