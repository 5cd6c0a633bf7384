//! The simulation's clients: talkers and listeners, what each heard, and the listener-side
//! checks (invariant 2) applied to every event as it arrives.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::ids::MsgId;
use crate::protocol::{ErrorCode, ErrorSubject, Event, MessageOutcome};
use crate::shard::ConnId;
use crate::shard::tests::payload;

/// Where a client's connection is: (host index, shard index, connection).
pub(super) type Location = (usize, usize, ConnId);

/// A talker: one message at a time on a fresh stream handle.
pub(super) struct Talker {
    /// Whose voice: names the codec and the payloads (the first client's id; a talker that
    /// reconnects keeps it).
    pub voice: Option<u32>,
    pub conv: usize,
    pub stream: u32,
    pub started: bool,
    pub msg: Option<MsgId>,
    pub next_seq: u32,
    pub frames: u32,
    pub end_sent: bool,
    pub ended: bool,
    /// The owner died or drained or the map moved: resume the message at this time (the
    /// client library's handover, with its backoff).
    pub resume_at: Option<u64>,
    /// A resume `talk_start` was sent; frames wait for its `talk_started`.
    pub resuming: bool,
    /// Handover attempts of the current message (bounded: the client library's patience).
    pub handovers: u32,
}

/// Resumes a talker tries for one message before it gives up (the client library's patience).
pub(super) const HANDOVER_ATTEMPTS_MAX: u32 = 50;

/// Whether an event asks the talker to resume its message elsewhere (a handover).
pub(super) fn asks_handover(event: &Event, stream: u32) -> bool {
    matches!(
        event,
        Event::Error { about: ErrorSubject::TalkStream(s), code, .. }
            if *s == stream
                && [
                    ErrorCode::OWNER_UNAVAILABLE,
                    ErrorCode::MAP_CHANGED,
                    ErrorCode::SHUTTING_DOWN,
                ]
                .contains(code)
    )
}

/// A listener of one conversation.
pub(super) struct Listener {
    pub conv: usize,
    pub sub: u32,
    pub listening: bool,
    pub ear: Ear,
}

pub(super) enum Role {
    Talker(Talker),
    Listener(Listener),
}

/// One client connection.
pub(super) struct SimClient {
    pub id: u32,
    pub at: Option<Location>,
    pub role: Role,
    /// A ping to answer.
    pub pong: Option<u64>,
    /// The relay ended its stream or subscription, or closed it: the client gives up this
    /// connection and another takes its place.
    pub broken: bool,
    /// Retired (closed by the client or gone with its host); never used again.
    pub retired: bool,
}

/// The codec metadata a talker sends: names the talker, so a listener knows each frame's
/// expected payload from the `message_started` event alone.
pub(super) fn codec_of(talker: u32) -> Bytes {
    Bytes::from(format!("OpusHead/{talker}"))
}

fn talker_of(codec: &[u8]) -> Option<u32> {
    std::str::from_utf8(codec)
        .ok()?
        .strip_prefix("OpusHead/")?
        .parse()
        .ok()
}

/// What a listener heard of one message.
#[derive(Debug, Default)]
pub(super) struct EarMessage {
    pub talker: u32,
    pub seqs: Vec<u32>,
    pub ended: Option<(u32, MessageOutcome)>,
}

/// A listener's incremental view of its events: the same handle rules as `heard()`, plus
/// order, no duplicates and the right payloads, checked per event.
#[derive(Debug, Default)]
pub(super) struct Ear {
    open: BTreeMap<u32, MsgId>,
    pub messages: BTreeMap<MsgId, EarMessage>,
}

impl Ear {
    /// Takes one event; `Err` names the broken rule.
    pub fn hear(&mut self, event: &Event) -> Result<(), String> {
        match event {
            Event::MessageStarted {
                stream,
                msg_id,
                codec,
                ..
            } => {
                if self.open.insert(*stream, *msg_id).is_some() {
                    return Err(format!("handle {stream} reused while open"));
                }
                if self.messages.contains_key(msg_id) {
                    return Err(format!("message {msg_id} started twice"));
                }
                let talker = talker_of(codec).ok_or("codec names no talker")?;
                self.messages.insert(
                    *msg_id,
                    EarMessage {
                        talker,
                        ..EarMessage::default()
                    },
                );
            }
            Event::Frame {
                stream,
                seq,
                payload: bytes,
                ..
            } => {
                let msg = self
                    .open
                    .get(stream)
                    .ok_or(format!("frame on handle {stream}, not open"))?;
                let heard = self
                    .messages
                    .get_mut(msg)
                    .ok_or("open handle, no message")?;
                if heard.seqs.last().is_some_and(|last| last >= seq) {
                    return Err(format!(
                        "message {msg}: frame {seq} after frame {:?} (out of order or twice)",
                        heard.seqs.last()
                    ));
                }
                if bytes[..] != payload(heard.talker, *seq)[..] {
                    return Err(format!("message {msg}: frame {seq} has the wrong payload"));
                }
                heard.seqs.push(*seq);
            }
            Event::MessageEnded {
                stream,
                frame_count,
                outcome,
            } => {
                let msg = self
                    .open
                    .remove(stream)
                    .ok_or(format!("end on handle {stream}, not open"))?;
                let heard = self
                    .messages
                    .get_mut(&msg)
                    .ok_or("open handle, no message")?;
                heard.ended = Some((*frame_count, *outcome));
            }
            // The handles of the subscription's unfinished messages are released.
            Event::Unlistened { .. } => self.open.clear(),
            _ => {}
        }
        Ok(())
    }
}

/// Whether an event ends a talker's stream or connection.
pub(super) fn breaks_talk(event: &Event, stream: u32) -> bool {
    matches!(
        event,
        Event::Error {
            about: ErrorSubject::Connection,
            ..
        }
    ) || matches!(
        event,
        Event::Error { about: ErrorSubject::TalkStream(s), .. } if *s == stream
    ) || matches!(event, Event::GoAway { .. })
}

/// Whether an event ends a listener's subscription or connection.
pub(super) fn breaks_listen(event: &Event, sub: u32) -> bool {
    matches!(
        event,
        Event::Error {
            about: ErrorSubject::Connection,
            ..
        } | Event::GoAway { .. }
    ) || matches!(
        event,
        Event::Error { about: ErrorSubject::Sub(s), .. } if *s == sub
    ) || matches!(event, Event::Unlistened { sub: s } if *s == sub)
}
