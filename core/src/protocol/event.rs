//! Events: what the relay sends to a client.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError, ErrorCode};
use super::wire::{BodyReader, put_blob, put_conv_name, type_code};
use super::{
    ADDRESS_LEN_MAX, CODEC_LEN_MAX, ERROR_TEXT_LEN_MAX, HISTORY_ENTRIES_MAX, SENDER_LEN_MAX,
};
use crate::ids::{ConvName, HostId, MsgId};

/// A message from the relay to a client. docs/protocol.md gives each one's byte layout and
/// when the relay sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The hello was accepted: the session is open and these are its terms.
    HelloAccepted {
        /// The protocol version the session uses (at most the client's).
        version: u16,
        /// The host that accepted the connection.
        host: HostId,
        /// This session's id, for logs on both sides.
        session: u64,
        /// The relay's clock when it accepted (µs since the Unix epoch), so a client can
        /// estimate its clock offset for `since_us` arguments.
        server_time_us: u64,
        /// Limits the client must respect.
        limits: SessionLimits,
    },
    /// A talk stream was accepted and its message has an id.
    TalkStarted {
        /// The client's talk stream handle.
        stream: u32,
        /// The message's id (the resumed one when resuming).
        msg_id: MsgId,
        /// The first seq the relay has not stored: 0 for a new message; when resuming, frames
        /// below it are already stored and the relay drops them if sent again.
        next_seq: u32,
    },
    /// Frames of a talk stream are durable.
    Stored {
        /// The talk stream.
        stream: u32,
        /// Frames 0 .. `frames_stored` survive a crash of the relay.
        frames_stored: u32,
    },
    /// A talk stream's message is ended and durable; the handle is free again.
    TalkEnded {
        /// The talk stream.
        stream: u32,
        /// How many frames the stored message has.
        frame_count: u32,
    },
    /// A subscription is open; its messages follow.
    Listening {
        /// The client's subscription id.
        sub: u32,
    },
    /// A subscription is closed: no event for it follows, and the stream handles of its
    /// unfinished messages are released without a `MessageEnded`.
    Unlistened {
        /// The subscription.
        sub: u32,
    },
    /// A message of a subscription begins; its frames follow on `stream`.
    MessageStarted {
        /// The subscription it belongs to.
        sub: u32,
        /// The relay's handle for the message on this connection, unique among the
        /// connection's open message streams, until its `MessageEnded`.
        stream: u32,
        /// The message; its start time is `msg_id.start_us()`.
        msg_id: MsgId,
        /// The conversation.
        conversation: ConvName,
        /// Who is talking, as the talker's token names them.
        sender: String,
        /// The talker's codec metadata, unchanged.
        codec: Bytes,
    },
    /// One codec packet of a message.
    Frame {
        /// The relay's message stream handle.
        stream: u32,
        /// The frame's sequence number in its message.
        seq: u32,
        /// Live (as it is spoken) or replayed (from the store).
        kind: FrameKind,
        /// The codec packet.
        payload: Bytes,
    },
    /// A message ended; its stream handle is free again.
    MessageEnded {
        /// The relay's message stream handle.
        stream: u32,
        /// How many frames the message has.
        frame_count: u32,
        /// Whether the talker ended it or it was cut short.
        outcome: MessageOutcome,
    },
    /// A subscription has replayed everything stored; what follows is live.
    CaughtUp {
        /// The subscription.
        sub: u32,
    },
    /// Answer to a history request: message headers, oldest first.
    HistoryPage {
        /// The client's request id.
        request: u32,
        /// The messages.
        entries: Vec<HistoryEntry>,
        /// More messages follow: ask again from the last entry's start time + 1 µs.
        more: bool,
    },
    /// Asks the client to answer [`Request::Pong`](super::Request::Pong) with the same nonce.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// The answer to a client's [`Request::Ping`](super::Request::Ping).
    Pong {
        /// The nonce of the ping.
        nonce: u64,
    },
    /// The relay is going away (drain, rebalance): finish open messages, then reconnect.
    GoAway {
        /// Why.
        reason: GoAwayReason,
        /// `host:port` to reconnect to; empty means any host of the cluster.
        reconnect_to: String,
    },
    /// A request failed, or the connection is about to close.
    Error {
        /// What went wrong; [`ErrorCode::closes_connection`] says whether a close follows.
        code: ErrorCode,
        /// Which stream, subscription or request it concerns.
        about: ErrorSubject,
        /// Human-readable detail for logs; not meant to be parsed.
        text: String,
    },
}

/// Whether a frame is delivered as it is spoken or replayed from the store. Two type bytes,
/// so the frame header stays 13 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Relayed as the talker sent it.
    Live,
    /// Read back from the store (late join, catch-up, slow listener).
    Replay,
}

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageOutcome {
    /// The talker sent TalkEnd and every frame is stored.
    Complete,
    /// Cut short: the talker disconnected, broke a limit or the relay failed; the frames up
    /// to the count are all there is (a resume may still complete it later).
    Truncated,
}

/// The terms of a session, announced in [`Event::HelloAccepted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionLimits {
    /// Largest frame (value of the length prefix) the relay accepts.
    pub frame_len_max: u32,
    /// Largest audio payload of a TalkFrame.
    pub audio_payload_len_max: u32,
    /// Most frames per second per talk stream (averaged over a second).
    pub frames_per_second_max: u16,
    /// Most talk streams open at once.
    pub talk_streams_max: u16,
    /// Most subscriptions open at once.
    pub subs_max: u16,
    /// Largest `limit` a history request is served with.
    pub history_limit_max: u16,
    /// The relay closes a connection it has heard nothing from for this long; ping sooner.
    pub idle_timeout_ms: u32,
}

/// One message in a [`Event::HistoryPage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The message; its start time is `msg_id.start_us()`.
    pub msg_id: MsgId,
    /// Who talked.
    pub sender: String,
    /// From the first to the last frame, in milliseconds.
    pub duration_ms: u32,
    /// How many frames are stored.
    pub frame_count: u32,
    /// Whether it ended normally; a message still in progress reads `Truncated` with the
    /// count stored so far.
    pub outcome: MessageOutcome,
}

/// Why the relay sends [`Event::GoAway`]. A newtype so later reasons still decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayReason(pub u16);

impl GoAwayReason {
    /// The host is leaving the cluster (rolling restart, maintenance).
    pub const DRAINING: GoAwayReason = GoAwayReason(1);
    /// The ownership map changed; the connection's conversations are served elsewhere.
    pub const REBALANCED: GoAwayReason = GoAwayReason(2);
    /// The host is overloaded and sheds connections.
    pub const OVERLOADED: GoAwayReason = GoAwayReason(3);
}

/// What an [`Event::Error`] concerns. On the wire: a kind byte and a u32 id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorSubject {
    /// The whole connection (id 0 on the wire).
    Connection,
    /// A client talk stream handle.
    TalkStream(u32),
    /// A subscription id.
    Sub(u32),
    /// A history request id.
    HistoryRequest(u32),
}

const SUBJECT_CONNECTION: u8 = 0;
const SUBJECT_TALK_STREAM: u8 = 1;
const SUBJECT_SUB: u8 = 2;
const SUBJECT_HISTORY_REQUEST: u8 = 3;

/// Smallest encoded history entry: id, empty sender, duration, count, outcome.
const HISTORY_ENTRY_LEN_MIN: usize = 16 + 2 + 4 + 4 + 1;

fn outcome_from(field: &'static str, value: u8) -> Result<MessageOutcome, DecodeError> {
    match value {
        0 => Ok(MessageOutcome::Complete),
        1 => Ok(MessageOutcome::Truncated),
        value => Err(DecodeError::InvalidTag { field, value }),
    }
}

fn outcome_byte(outcome: MessageOutcome) -> u8 {
    match outcome {
        MessageOutcome::Complete => 0,
        MessageOutcome::Truncated => 1,
    }
}

impl Event {
    /// Decodes the body of a non-audio event whose type byte is `type_code`.
    pub(super) fn decode_body(type_code: u8, body: Bytes) -> Result<Event, DecodeError> {
        let mut r = BodyReader::new(body, event_name(type_code));
        let event = match type_code {
            type_code::HELLO_ACCEPTED => Event::HelloAccepted {
                version: r.u16("version")?,
                host: HostId(r.u16("host")?),
                session: r.u64("session")?,
                server_time_us: r.u64("server time")?,
                limits: SessionLimits {
                    frame_len_max: r.u32("frame len max")?,
                    audio_payload_len_max: r.u32("audio payload len max")?,
                    frames_per_second_max: r.u16("frames per second max")?,
                    talk_streams_max: r.u16("talk streams max")?,
                    subs_max: r.u16("subs max")?,
                    history_limit_max: r.u16("history limit max")?,
                    idle_timeout_ms: r.u32("idle timeout")?,
                },
            },
            type_code::TALK_STARTED => Event::TalkStarted {
                stream: r.u32("stream")?,
                msg_id: r.msg_id("msg id")?,
                next_seq: r.u32("next seq")?,
            },
            type_code::STORED => Event::Stored {
                stream: r.u32("stream")?,
                frames_stored: r.u32("frames stored")?,
            },
            type_code::TALK_ENDED => Event::TalkEnded {
                stream: r.u32("stream")?,
                frame_count: r.u32("frame count")?,
            },
            type_code::LISTENING => Event::Listening { sub: r.u32("sub")? },
            type_code::UNLISTENED => Event::Unlistened { sub: r.u32("sub")? },
            type_code::CAUGHT_UP => Event::CaughtUp { sub: r.u32("sub")? },
            type_code::MESSAGE_STARTED => Event::MessageStarted {
                sub: r.u32("sub")?,
                stream: r.u32("stream")?,
                msg_id: r.msg_id("msg id")?,
                conversation: r.conv_name()?,
                sender: r.text("sender", SENDER_LEN_MAX)?,
                codec: r.blob("codec", CODEC_LEN_MAX)?,
            },
            type_code::MESSAGE_ENDED => Event::MessageEnded {
                stream: r.u32("stream")?,
                frame_count: r.u32("frame count")?,
                outcome: outcome_from("outcome", r.u8("outcome")?)?,
            },
            type_code::HISTORY_PAGE => {
                let request = r.u32("request")?;
                let count = usize::from(r.u16("entry count")?);
                if count > HISTORY_ENTRIES_MAX {
                    return Err(DecodeError::FieldTooLong {
                        field: "entries",
                        len: count,
                        max: HISTORY_ENTRIES_MAX,
                    });
                }
                // Never reserve more entries than the body could hold.
                let mut entries =
                    Vec::with_capacity(count.min(r.remaining() / HISTORY_ENTRY_LEN_MIN));
                for _ in 0..count {
                    entries.push(HistoryEntry {
                        msg_id: r.msg_id("msg id")?,
                        sender: r.text("sender", SENDER_LEN_MAX)?,
                        duration_ms: r.u32("duration")?,
                        frame_count: r.u32("frame count")?,
                        outcome: outcome_from("outcome", r.u8("outcome")?)?,
                    });
                }
                Event::HistoryPage {
                    request,
                    entries,
                    more: r.flag("more")?,
                }
            }
            type_code::EVENT_PING => Event::Ping {
                nonce: r.u64("nonce")?,
            },
            type_code::EVENT_PONG => Event::Pong {
                nonce: r.u64("nonce")?,
            },
            type_code::GO_AWAY => Event::GoAway {
                reason: GoAwayReason(r.u16("reason")?),
                reconnect_to: r.text("reconnect address", ADDRESS_LEN_MAX)?,
            },
            type_code::ERROR => {
                let code = ErrorCode(r.u16("code")?);
                let kind = r.u8("subject kind")?;
                let id = r.u32("subject id")?;
                let about = match kind {
                    SUBJECT_CONNECTION if id == 0 => ErrorSubject::Connection,
                    SUBJECT_TALK_STREAM => ErrorSubject::TalkStream(id),
                    SUBJECT_SUB => ErrorSubject::Sub(id),
                    SUBJECT_HISTORY_REQUEST => ErrorSubject::HistoryRequest(id),
                    value => {
                        return Err(DecodeError::InvalidTag {
                            field: "subject kind",
                            value,
                        });
                    }
                };
                Event::Error {
                    code,
                    about,
                    text: r.text("error text", ERROR_TEXT_LEN_MAX)?,
                }
            }
            type_code => return Err(DecodeError::UnknownType { type_code }),
        };
        r.finish()?;
        Ok(event)
    }

    /// The type byte of this event.
    pub(super) fn type_code(&self) -> u8 {
        match self {
            Event::HelloAccepted { .. } => type_code::HELLO_ACCEPTED,
            Event::TalkStarted { .. } => type_code::TALK_STARTED,
            Event::Stored { .. } => type_code::STORED,
            Event::TalkEnded { .. } => type_code::TALK_ENDED,
            Event::Listening { .. } => type_code::LISTENING,
            Event::Unlistened { .. } => type_code::UNLISTENED,
            Event::MessageStarted { .. } => type_code::MESSAGE_STARTED,
            Event::Frame { kind, .. } => frame_type_code(*kind),
            Event::MessageEnded { .. } => type_code::MESSAGE_ENDED,
            Event::CaughtUp { .. } => type_code::CAUGHT_UP,
            Event::HistoryPage { .. } => type_code::HISTORY_PAGE,
            Event::Ping { .. } => type_code::EVENT_PING,
            Event::Pong { .. } => type_code::EVENT_PONG,
            Event::GoAway { .. } => type_code::GO_AWAY,
            Event::Error { .. } => type_code::ERROR,
        }
    }

    /// Writes the body (everything after the type byte).
    pub(super) fn write_body(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Event::HelloAccepted {
                version,
                host,
                session,
                server_time_us,
                limits,
            } => {
                buf.put_u16_le(*version);
                buf.put_u16_le(host.0);
                buf.put_u64_le(*session);
                buf.put_u64_le(*server_time_us);
                buf.put_u32_le(limits.frame_len_max);
                buf.put_u32_le(limits.audio_payload_len_max);
                buf.put_u16_le(limits.frames_per_second_max);
                buf.put_u16_le(limits.talk_streams_max);
                buf.put_u16_le(limits.subs_max);
                buf.put_u16_le(limits.history_limit_max);
                buf.put_u32_le(limits.idle_timeout_ms);
            }
            Event::TalkStarted {
                stream,
                msg_id,
                next_seq,
            } => {
                buf.put_u32_le(*stream);
                buf.put_slice(&msg_id.to_le_bytes());
                buf.put_u32_le(*next_seq);
            }
            Event::Stored {
                stream,
                frames_stored: count,
            }
            | Event::TalkEnded {
                stream,
                frame_count: count,
            } => {
                buf.put_u32_le(*stream);
                buf.put_u32_le(*count);
            }
            Event::Listening { sub } | Event::Unlistened { sub } | Event::CaughtUp { sub } => {
                buf.put_u32_le(*sub)
            }
            Event::MessageStarted {
                sub,
                stream,
                msg_id,
                conversation,
                sender,
                codec,
            } => {
                buf.put_u32_le(*sub);
                buf.put_u32_le(*stream);
                buf.put_slice(&msg_id.to_le_bytes());
                put_conv_name(buf, conversation)?;
                put_blob(buf, "sender", sender.as_bytes(), SENDER_LEN_MAX)?;
                put_blob(buf, "codec", codec, CODEC_LEN_MAX)?;
            }
            Event::Frame {
                stream,
                seq,
                payload,
                ..
            } => {
                buf.put_u32_le(*stream);
                buf.put_u32_le(*seq);
                buf.put_slice(payload);
            }
            Event::MessageEnded {
                stream,
                frame_count,
                outcome,
            } => {
                buf.put_u32_le(*stream);
                buf.put_u32_le(*frame_count);
                buf.put_u8(outcome_byte(*outcome));
            }
            Event::HistoryPage {
                request,
                entries,
                more,
            } => {
                let count = match u16::try_from(entries.len()) {
                    Ok(count) if entries.len() <= HISTORY_ENTRIES_MAX => count,
                    _ => {
                        return Err(EncodeError::FieldTooLong {
                            field: "entries",
                            len: entries.len(),
                            max: HISTORY_ENTRIES_MAX,
                        });
                    }
                };
                buf.put_u32_le(*request);
                buf.put_u16_le(count);
                for entry in entries {
                    buf.put_slice(&entry.msg_id.to_le_bytes());
                    put_blob(buf, "sender", entry.sender.as_bytes(), SENDER_LEN_MAX)?;
                    buf.put_u32_le(entry.duration_ms);
                    buf.put_u32_le(entry.frame_count);
                    buf.put_u8(outcome_byte(entry.outcome));
                }
                buf.put_u8(u8::from(*more));
            }
            Event::Ping { nonce } | Event::Pong { nonce } => buf.put_u64_le(*nonce),
            Event::GoAway {
                reason,
                reconnect_to,
            } => {
                buf.put_u16_le(reason.0);
                put_blob(
                    buf,
                    "reconnect address",
                    reconnect_to.as_bytes(),
                    ADDRESS_LEN_MAX,
                )?;
            }
            Event::Error { code, about, text } => {
                let (kind, id) = match *about {
                    ErrorSubject::Connection => (SUBJECT_CONNECTION, 0),
                    ErrorSubject::TalkStream(id) => (SUBJECT_TALK_STREAM, id),
                    ErrorSubject::Sub(id) => (SUBJECT_SUB, id),
                    ErrorSubject::HistoryRequest(id) => (SUBJECT_HISTORY_REQUEST, id),
                };
                buf.put_u16_le(code.0);
                buf.put_u8(kind);
                buf.put_u32_le(id);
                put_blob(buf, "error text", text.as_bytes(), ERROR_TEXT_LEN_MAX)?;
            }
        }
        Ok(())
    }
}

/// The type byte of an audio frame event.
pub(super) fn frame_type_code(kind: FrameKind) -> u8 {
    match kind {
        FrameKind::Live => type_code::FRAME_LIVE,
        FrameKind::Replay => type_code::FRAME_REPLAY,
    }
}

/// A name for error messages.
fn event_name(type_code: u8) -> &'static str {
    match type_code {
        type_code::HELLO_ACCEPTED => "hello accepted",
        type_code::TALK_STARTED => "talk started",
        type_code::STORED => "stored",
        type_code::TALK_ENDED => "talk ended",
        type_code::LISTENING => "listening",
        type_code::UNLISTENED => "unlistened",
        type_code::MESSAGE_STARTED => "message started",
        type_code::MESSAGE_ENDED => "message ended",
        type_code::CAUGHT_UP => "caught up",
        type_code::HISTORY_PAGE => "history page",
        type_code::EVENT_PING => "ping",
        type_code::EVENT_PONG => "pong",
        type_code::GO_AWAY => "go away",
        type_code::ERROR => "error",
        _ => "unknown",
    }
}
