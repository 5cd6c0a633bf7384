//! Talk streams on the owner: starting (or resuming) a message, accepting its frames once
//! (sequence, size and rate checks, one store append, one encoding shared by every live
//! listener), ending it, and the store's durability acks.

use bytes::Bytes;

use super::conversation::{LiveMessage, MessagePhase, Talker};
use super::session::{ConnId, TalkRoute, TalkStream};
use super::store::{Appended, BodyStore, EndState, StoreFault};
use super::{HANDLES_REMEMBERED_MAX, RouteReleased, Shard};
use crate::ids::{ConvName, MsgId};
use crate::protocol::{
    ErrorCode, ErrorSubject, Event, FrameKind, MessageOutcome, Request, write_frame_event,
};
use crate::token::Right;

use super::limits::FrameRate;

impl<S: BodyStore> Shard<S> {
    pub(super) fn talk_start(
        &mut self,
        conn: ConnId,
        stream: u32,
        conversation: ConvName,
        codec: Bytes,
        resume: Option<MsgId>,
    ) {
        let about = ErrorSubject::TalkStream(stream);
        let Some(session) = self.session(conn) else {
            return;
        };
        if session.talk(stream).is_some() {
            self.send_error(
                conn,
                ErrorCode::DUPLICATE_STREAM,
                about,
                "the stream is open",
            );
            return;
        }
        if self.is_shutting_down() {
            return self.refuse_talk(
                conn,
                stream,
                ErrorCode::SHUTTING_DOWN,
                "the relay is draining",
            );
        }
        if !self.authorize(conn, &[Right::Talk], &conversation, about) {
            self.remember_refused(conn, stream);
            return;
        }
        // A resume goes where its message is open: the shard that started it while that
        // shard is in the map (the map may have moved the conversation since); else the
        // conversation's owner, which takes the message over.
        let owner = match resume {
            Some(msg) if self.cluster.contains(msg.shard()) => msg.shard(),
            _ => self.owner_of(conversation.id()),
        };
        if owner != self.shard {
            let request = Request::TalkStart {
                stream,
                conversation,
                codec,
                resume,
            };
            return self.route_to_owner(conn, owner, request, about);
        }
        let talks = self.session(conn).map_or(0, |s| s.talk_count());
        if talks >= usize::from(self.config.talk_streams_max) {
            return self.refuse_talk(
                conn,
                stream,
                ErrorCode::TOO_MANY_OPEN_MESSAGES,
                "too many talk streams open on this connection",
            );
        }
        let Some(conv_slot) = self.conversation_slot(&conversation) else {
            return self.refuse_talk(
                conn,
                stream,
                ErrorCode::TOO_MANY_CONVERSATIONS,
                "this core holds its maximum of conversations",
            );
        };
        match resume {
            Some(msg) => self.resume_talk(conn, stream, conv_slot, msg, codec),
            None => self.start_message(conn, stream, conv_slot, codec, None),
        }
        self.drop_conversation_if_idle(conv_slot);
    }

    /// Starts a message on talk stream `stream`: a new one, or (`adopted`) one started on a
    /// shard that left, stored here anew under its id (the talker resends it from frame 0).
    pub(super) fn start_message(
        &mut self,
        conn: ConnId,
        stream: u32,
        conv_slot: u32,
        codec: Bytes,
        adopted: Option<MsgId>,
    ) {
        let Some(conv_id) = self.conversations.get(conv_slot).map(|c| c.id) else {
            return;
        };
        if self.open_message_count(conv_slot) >= self.config.open_messages_per_conversation_max {
            return self.refuse_talk(
                conn,
                stream,
                ErrorCode::TOO_MANY_OPEN_MESSAGES,
                "too many messages open in this conversation",
            );
        }
        let sender = self
            .session(conn)
            .map(|s| s.sender.clone())
            .unwrap_or_default();
        let msg = adopted.unwrap_or_else(|| self.ids.next(self.now_us));
        if let Err(fault) = self
            .store
            .start_message(msg, conv_id, sender.as_bytes(), &codec)
        {
            let (code, text) = fault_code(&fault);
            return self.refuse_talk(conn, stream, code, &text);
        }
        if adopted.is_some() {
            // Ids issued here later stay above the adopted one.
            self.ids.resume_after(msg);
            self.tally.messages_handed_over += 1;
        } else {
            self.tally.messages_started += 1;
        }
        let handle = self.allocate_handle();
        let talker = Talker::Local { conn, stream };
        let message = LiveMessage::open(msg, conv_slot, handle, sender, codec, talker, 0);
        let slot = self.insert_live_message(message);
        self.attach_talk(conn, stream, slot);
        self.send_event(
            conn,
            &Event::TalkStarted {
                stream,
                msg_id: msg,
                next_seq: 0,
            },
        );
        self.announce_message(slot);
    }

    fn resume_talk(&mut self, conn: ConnId, stream: u32, conv_slot: u32, msg: MsgId, codec: Bytes) {
        let slot = self.msg_by_id.get(&msg).copied();
        let resumable = slot.and_then(|slot| self.messages.get(slot).map(|m| (slot, m)));
        let Some((slot, m)) = resumable.filter(|(_, m)| {
            m.conv == conv_slot && m.phase == MessagePhase::Open && m.talker != Talker::Mirror
        }) else {
            // Not open here: a message whose owner died or drained is taken over.
            return self.adopt_message(conn, stream, conv_slot, msg, codec);
        };
        let next_seq = m.accepted;
        if let Talker::Local {
            conn: old_conn,
            stream: old_stream,
        } = m.talker
        {
            // The talker reconnected before its old connection was noticed dead: the new
            // connection takes the message over.
            if let Some(old) = self.session_mut(old_conn)
                && let Some(i) = old.talk(old_stream)
            {
                old.talks.swap_remove(i);
                self.release_route(old_conn, RouteReleased::TalkStream(old_stream), false);
            }
        }
        self.attach_talk(conn, stream, slot);
        if let Some(m) = self.messages.get_mut(slot) {
            m.talker = Talker::Local { conn, stream };
        }
        self.send_event(
            conn,
            &Event::TalkStarted {
                stream,
                msg_id: msg,
                next_seq,
            },
        );
    }

    pub(super) fn attach_talk(&mut self, conn: ConnId, stream: u32, slot: u32) {
        let rate = FrameRate::new(&self.config, self.now_us);
        if let Some(session) = self.session_mut(conn) {
            session.refused.retain(|h| *h != stream);
            session.reported_unknown.retain(|h| *h != stream);
            session.talks.push(TalkStream {
                handle: stream,
                route: TalkRoute::Local { slot },
                rate,
                ending: false,
            });
        }
    }

    pub(super) fn refuse_talk(&mut self, conn: ConnId, stream: u32, code: ErrorCode, text: &str) {
        self.send_error(conn, code, ErrorSubject::TalkStream(stream), text);
        self.remember_refused(conn, stream);
    }

    fn remember_refused(&mut self, conn: ConnId, stream: u32) {
        self.release_route(conn, RouteReleased::TalkStream(stream), true);
        self.remember_refused_here(conn, stream);
    }

    /// Drops the handle's next frames silently (its talk start was refused).
    pub(super) fn remember_refused_here(&mut self, conn: ConnId, stream: u32) {
        if let Some(session) = self.session_mut(conn) {
            session.reported_unknown.retain(|h| *h != stream);
            if !session.refused.contains(&stream) {
                if session.refused.len() >= HANDLES_REMEMBERED_MAX {
                    session.refused.pop_front();
                }
                session.refused.push_back(stream);
            }
        }
    }

    /// A frame or end on a handle with no open stream: dropped, reported once per handle
    /// (silently when the handle's start was refused).
    fn unknown_stream(&mut self, conn: ConnId, stream: u32) {
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        if session.refused.contains(&stream) || session.reported_unknown.contains(&stream) {
            return;
        }
        if session.reported_unknown.len() >= HANDLES_REMEMBERED_MAX {
            session.reported_unknown.pop_front();
        }
        session.reported_unknown.push_back(stream);
        self.send_error(
            conn,
            ErrorCode::UNKNOWN_STREAM,
            ErrorSubject::TalkStream(stream),
            "no open talk stream with this handle",
        );
    }

    pub(super) fn talk_frame(&mut self, conn: ConnId, stream: u32, seq: u32, payload: Bytes) {
        let now_us = self.now_us;
        let payload_max = self.config.audio_payload_len_max as usize;
        let config = &self.config;
        let Some(slot) = self.sessions.get_mut(conn.index as usize) else {
            return;
        };
        let Some(session) = slot
            .session
            .as_mut()
            .filter(|_| slot.generation == conn.generation)
        else {
            return;
        };
        let Some(i) = session.talk(stream).filter(|i| !session.talks[*i].ending) else {
            return self.unknown_stream(conn, stream);
        };
        let TalkRoute::Local { slot: msg_slot } = session.talks[i].route;
        let Some(m) = self.messages.get(msg_slot) else {
            return;
        };
        if seq < m.accepted {
            return; // a duplicate after a resume
        }
        let refusal = if seq > m.accepted {
            Some((
                ErrorCode::SEQ_GAP,
                "a frame was skipped; the message ends truncated",
            ))
        } else if payload.len() > payload_max {
            Some((
                ErrorCode::PAYLOAD_TOO_LARGE,
                "the audio payload is above audio_payload_len_max; the message ends truncated",
            ))
        } else if !session.talks[i].rate.admit(config, now_us) {
            Some((
                ErrorCode::RATE_LIMITED,
                "frames come faster than frames_per_second_max; the message ends truncated",
            ))
        } else {
            None
        };
        if let Some((code, text)) = refusal {
            return self.cut_talk(conn, stream, msg_slot, code, text);
        }
        match self.store.append(m.msg, seq, &payload) {
            Ok(Appended::Stored) => {}
            Ok(Appended::Duplicate) => return,
            Err(fault) => {
                let (code, text) = fault_code(&fault);
                return self.cut_talk(conn, stream, msg_slot, code, &text);
            }
        }
        self.accept_frame(msg_slot, seq, payload);
    }

    /// Fan-out of one accepted frame: encoded once, the same `Bytes` cloned into every live
    /// listener's queue; a listener whose queue is full falls back to replay.
    pub(super) fn accept_frame(&mut self, msg_slot: u32, seq: u32, payload: Bytes) {
        let queue_max = self.config.send_queue_bytes_max;
        let Some(m) = self.messages.get_mut(msg_slot) else {
            return;
        };
        m.accepted += 1;
        m.tail.push_back(payload.clone());
        if m.live.is_empty() {
            return;
        }
        if write_frame_event(
            &mut self.encode_buf,
            m.handle,
            seq,
            FrameKind::Live,
            &payload,
        )
        .is_err()
        {
            // The payload was checked against audio_payload_len_max, below the protocol's.
            self.encode_buf.clear();
            return;
        }
        let shared = self.encode_buf.split().freeze();
        let mut i = 0;
        while i < m.live.len() {
            let listener = m.live[i];
            let conn = listener.listener.conn;
            let Some(session) = self.sessions.get_mut(conn.index as usize).and_then(|s| {
                (s.generation == conn.generation)
                    .then_some(s.session.as_mut())
                    .flatten()
            }) else {
                m.live.swap_remove(i);
                continue;
            };
            let bytes = if listener.handle == m.handle {
                shared.clone()
            } else {
                let _ = write_frame_event(
                    &mut self.encode_buf,
                    listener.handle,
                    seq,
                    FrameKind::Live,
                    &payload,
                );
                self.encode_buf.split().freeze()
            };
            if session.queued_bytes + bytes.len() > queue_max {
                // Slow listener: stop live delivery at this frame; replay picks it up.
                self.tally.slow_listener_fallbacks += 1;
                if let Some(Some(sub)) = session.subs.get_mut(usize::from(listener.listener.slot)) {
                    sub.live = false;
                    if let Some(d) = sub.deliveries.iter_mut().find(|d| d.msg == m.msg) {
                        d.live = false;
                        d.next_seq = seq;
                    }
                }
                m.live.swap_remove(i);
                continue;
            }
            let action = session.output(conn, bytes);
            self.actions.push_back(action);
            self.tally.frame_events_out += 1;
            i += 1;
        }
    }

    pub(super) fn talk_end(&mut self, conn: ConnId, stream: u32, frame_count: u32) {
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        let Some(i) = session.talk(stream).filter(|i| !session.talks[*i].ending) else {
            return self.unknown_stream(conn, stream);
        };
        session.talks[i].ending = true;
        let TalkRoute::Local { slot } = session.talks[i].route;
        let accepted = self.messages.get(slot).map_or(0, |m| m.accepted);
        let state = if frame_count == accepted {
            EndState::Complete
        } else {
            EndState::Truncated
        };
        self.end_message(slot, state);
    }

    /// Ends the stream's message truncated after a broken rule, with the error to the talker.
    fn cut_talk(&mut self, conn: ConnId, stream: u32, slot: u32, code: ErrorCode, text: &str) {
        self.send_error(conn, code, ErrorSubject::TalkStream(stream), text);
        if let Some(session) = self.session_mut(conn)
            && let Some(i) = session.talk(stream)
        {
            session.talks.swap_remove(i);
        }
        // Frames the client sent before it heard the error are dropped without a word, here
        // and on the shard that holds its connection.
        self.remember_refused_here(conn, stream);
        self.release_route(conn, RouteReleased::TalkStream(stream), true);
        if let Some(m) = self.messages.get_mut(slot) {
            m.talker = Talker::Gone;
        }
        self.end_message(slot, EndState::Truncated);
    }

    /// Ends a message: the store records the end, live listeners get `message_ended`, and the
    /// message stays (ending) until its end is durable so late listeners can read its tail.
    pub(super) fn end_message(&mut self, slot: u32, state: EndState) {
        let Some(m) = self.messages.get_mut(slot) else {
            return;
        };
        if m.phase != MessagePhase::Open {
            return;
        }
        m.phase = MessagePhase::Ending(state);
        let (msg, accepted, handle) = (m.msg, m.accepted, m.handle);
        self.tally.messages_ended += 1;
        let live = std::mem::take(&mut m.live);
        let outcome = outcome_of(state);
        let ended = Event::MessageEnded {
            stream: handle,
            frame_count: accepted,
            outcome,
        };
        let mirrored = m.talker == Talker::Mirror;
        // A mirrored message is stored by its owner, not here.
        let stored = if mirrored {
            Ok(())
        } else {
            self.store.end_message(msg, self.now_us, state)
        };
        let mut shared = None;
        for listener in live {
            let conn = listener.listener.conn;
            if listener.handle == handle {
                let bytes = shared.get_or_insert_with(|| {
                    let _ = crate::protocol::write_event(&ended, &mut self.encode_buf);
                    self.encode_buf.split().freeze()
                });
                let bytes = bytes.clone();
                self.send(conn, bytes);
            } else {
                self.send_event(
                    conn,
                    &Event::MessageEnded {
                        stream: listener.handle,
                        frame_count: accepted,
                        outcome,
                    },
                );
            }
            self.finish_delivery(conn, usize::from(listener.listener.slot), msg);
        }
        if stored.is_err() {
            // The store could not record the end (it is failing); nothing will ack it, so
            // the message is forgotten here now. The store ends it truncated on recovery.
            self.forget_message(slot, None);
        }
    }

    /// A closing connection's talk streams: their messages wait for a resume.
    pub(super) fn detach_talkers(&mut self, conn: ConnId) {
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        let talks = std::mem::take(&mut session.talks);
        for talk in talks {
            let TalkRoute::Local { slot } = talk.route;
            if let Some(m) = self.messages.get_mut(slot)
                && m.talker
                    == (Talker::Local {
                        conn,
                        stream: talk.handle,
                    })
            {
                m.talker = match m.phase {
                    MessagePhase::Open => Talker::Vanished {
                        since_us: self.now_us,
                    },
                    MessagePhase::Ending(_) => Talker::Gone,
                };
            }
        }
    }

    /// Ends the messages whose talker vanished longer ago than the resume grace period.
    pub(super) fn expire_vanished_talkers(&mut self) {
        let grace_us = self.config.talk_resume_grace_ms.saturating_mul(1000);
        let expired: Vec<u32> = self
            .messages
            .iter()
            .filter(|(_, m)| {
                matches!(m.talker, Talker::Vanished { since_us }
                    if self.now_us.saturating_sub(since_us) >= grace_us)
            })
            .map(|(slot, _)| slot)
            .collect();
        for slot in expired {
            if let Some(m) = self.messages.get_mut(slot) {
                m.talker = Talker::Gone;
            }
            self.end_message(slot, EndState::Truncated);
        }
    }

    /// Shutdown: every open message ends truncated; talkers get `code`.
    pub(super) fn truncate_open_messages(&mut self, code: ErrorCode, text: &str) {
        let open: Vec<u32> = self
            .messages
            .iter()
            .filter(|(_, m)| m.phase == MessagePhase::Open)
            .map(|(slot, _)| slot)
            .collect();
        for slot in open {
            let talker = self.messages.get(slot).map(|m| m.talker);
            match talker {
                Some(Talker::Local { conn, stream }) => {
                    self.cut_talk(conn, stream, slot, code, text)
                }
                _ => {
                    if let Some(m) = self.messages.get_mut(slot) {
                        m.talker = Talker::Gone;
                    }
                    self.end_message(slot, EndState::Truncated);
                }
            }
        }
    }
}

pub(super) fn outcome_of(state: EndState) -> MessageOutcome {
    match state {
        EndState::Complete => MessageOutcome::Complete,
        EndState::Truncated => MessageOutcome::Truncated,
    }
}

/// The error code and text a client gets for a store refusal.
pub(super) fn fault_code(fault: &StoreFault) -> (ErrorCode, String) {
    let code = match fault {
        StoreFault::Unavailable(_) => ErrorCode::STORE_UNAVAILABLE,
        StoreFault::TooManyOpenMessages => ErrorCode::TOO_MANY_OPEN_MESSAGES,
        StoreFault::MessageUnknown(_) => ErrorCode::MESSAGE_UNAVAILABLE,
        _ => ErrorCode::INTERNAL,
    };
    (code, fault.to_string())
}
