//! Requests: what a client sends to the relay.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::wire::{BodyReader, put_blob, put_conv_name, type_code};
use super::{CLIENT_NAME_LEN_MAX, CODEC_LEN_MAX, TOKEN_LEN_MAX};
use crate::ids::{ConvName, MsgId};

/// A message from a client to the relay. docs/protocol.md gives each one's byte layout and
/// what the relay answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Opens the session; must be the first request. The relay answers
    /// [`Event::HelloAccepted`](super::Event::HelloAccepted) or an error and a close.
    Hello {
        /// The highest protocol version the client speaks.
        version: u16,
        /// The capability token (opaque here; verified by the relay). Empty in dev mode.
        token: Bytes,
        /// A name for logs and metrics ("hark-cli/0.1", "ios-app/3.2").
        client_name: String,
    },
    /// Starts a message (one press of the talk button) on a stream handle the client picks.
    /// The client may send its frames right away, without waiting for `TalkStarted`.
    TalkStart {
        /// The client's handle for this message, unique among its open talk streams.
        stream: u32,
        /// Where to talk.
        conversation: ConvName,
        /// Codec metadata the relay stores and hands to listeners unchanged (e.g. an
        /// OpusHead). May be empty.
        codec: Bytes,
        /// Continue this message after a broken connection instead of starting a new one.
        resume: Option<MsgId>,
    },
    /// One codec packet of an open talk stream.
    TalkFrame {
        /// The talk stream.
        stream: u32,
        /// Sequence number: 0 for the message's first frame, then +1 per frame, no gaps.
        seq: u32,
        /// The codec packet, opaque to the relay.
        payload: Bytes,
    },
    /// Ends a talk stream (the talk button was released).
    TalkEnd {
        /// The talk stream.
        stream: u32,
        /// How many frames the message has (the last seq + 1).
        frame_count: u32,
    },
    /// Subscribes to a conversation under a subscription id the client picks.
    Listen {
        /// The client's id for this subscription, unique among its open subscriptions.
        sub: u32,
        /// The conversation to listen to.
        conversation: ConvName,
        /// Where to start.
        from: ListenFrom,
    },
    /// Ends a subscription.
    Unlisten {
        /// The subscription.
        sub: u32,
    },
    /// Asks for a page of a conversation's message headers.
    History {
        /// The client's id for this request, echoed in the answer.
        request: u32,
        /// The conversation.
        conversation: ConvName,
        /// Messages that started at or after this time (µs since the Unix epoch).
        since_us: u64,
        /// At most this many entries (the relay may send fewer).
        limit: u16,
    },
    /// Asks the relay to answer [`Event::Pong`](super::Event::Pong) with the same nonce;
    /// keeps an idle connection open and measures round trips.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// The answer to the relay's [`Event::Ping`](super::Event::Ping).
    Pong {
        /// The nonce of the ping.
        nonce: u64,
    },
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenFrom {
    /// Messages in progress (each from its first frame) and every later one.
    Live,
    /// This message (from its first frame) and every later one, then live.
    Message(MsgId),
    /// Messages that started at or after this time (µs since the Unix epoch), then live.
    Since(u64),
}

const LISTEN_FROM_LIVE: u8 = 0;
const LISTEN_FROM_MESSAGE: u8 = 1;
const LISTEN_FROM_SINCE: u8 = 2;

impl Request {
    /// Decodes the body of a non-audio request whose type byte is `type_code`.
    pub(super) fn decode_body(type_code: u8, body: Bytes) -> Result<Request, DecodeError> {
        let mut r = BodyReader::new(body, request_name(type_code));
        let request = match type_code {
            type_code::HELLO => Request::Hello {
                version: r.u16("version")?,
                token: r.blob("token", TOKEN_LEN_MAX)?,
                client_name: r.text("client name", CLIENT_NAME_LEN_MAX)?,
            },
            type_code::TALK_START => Request::TalkStart {
                stream: r.u32("stream")?,
                conversation: r.conv_name()?,
                codec: r.blob("codec", CODEC_LEN_MAX)?,
                resume: if r.flag("resume flag")? {
                    Some(r.msg_id("resume")?)
                } else {
                    None
                },
            },
            type_code::TALK_END => Request::TalkEnd {
                stream: r.u32("stream")?,
                frame_count: r.u32("frame count")?,
            },
            type_code::LISTEN => Request::Listen {
                sub: r.u32("sub")?,
                conversation: r.conv_name()?,
                from: match r.u8("from")? {
                    LISTEN_FROM_LIVE => ListenFrom::Live,
                    LISTEN_FROM_MESSAGE => ListenFrom::Message(r.msg_id("from message")?),
                    LISTEN_FROM_SINCE => ListenFrom::Since(r.u64("from time")?),
                    value => {
                        return Err(DecodeError::InvalidTag {
                            field: "from",
                            value,
                        });
                    }
                },
            },
            type_code::UNLISTEN => Request::Unlisten { sub: r.u32("sub")? },
            type_code::HISTORY => Request::History {
                request: r.u32("request")?,
                conversation: r.conv_name()?,
                since_us: r.u64("since")?,
                limit: r.u16("limit")?,
            },
            type_code::PING => Request::Ping {
                nonce: r.u64("nonce")?,
            },
            type_code::PONG => Request::Pong {
                nonce: r.u64("nonce")?,
            },
            // Talk frames take the decoder's fast path and never come here.
            type_code => return Err(DecodeError::UnknownType { type_code }),
        };
        r.finish()?;
        Ok(request)
    }

    /// The type byte of this request.
    pub(super) fn type_code(&self) -> u8 {
        match self {
            Request::Hello { .. } => type_code::HELLO,
            Request::TalkStart { .. } => type_code::TALK_START,
            Request::TalkFrame { .. } => type_code::TALK_FRAME,
            Request::TalkEnd { .. } => type_code::TALK_END,
            Request::Listen { .. } => type_code::LISTEN,
            Request::Unlisten { .. } => type_code::UNLISTEN,
            Request::History { .. } => type_code::HISTORY,
            Request::Ping { .. } => type_code::PING,
            Request::Pong { .. } => type_code::PONG,
        }
    }

    /// Writes the body (everything after the type byte).
    pub(super) fn write_body(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Request::Hello {
                version,
                token,
                client_name,
            } => {
                buf.put_u16_le(*version);
                put_blob(buf, "token", token, TOKEN_LEN_MAX)?;
                put_blob(
                    buf,
                    "client name",
                    client_name.as_bytes(),
                    CLIENT_NAME_LEN_MAX,
                )?;
            }
            Request::TalkStart {
                stream,
                conversation,
                codec,
                resume,
            } => {
                buf.put_u32_le(*stream);
                put_conv_name(buf, conversation)?;
                put_blob(buf, "codec", codec, CODEC_LEN_MAX)?;
                match resume {
                    None => buf.put_u8(0),
                    Some(msg_id) => {
                        buf.put_u8(1);
                        buf.put_slice(&msg_id.to_le_bytes());
                    }
                }
            }
            Request::TalkFrame {
                stream,
                seq,
                payload,
            } => {
                buf.put_u32_le(*stream);
                buf.put_u32_le(*seq);
                buf.put_slice(payload);
            }
            Request::TalkEnd {
                stream,
                frame_count,
            } => {
                buf.put_u32_le(*stream);
                buf.put_u32_le(*frame_count);
            }
            Request::Listen {
                sub,
                conversation,
                from,
            } => {
                buf.put_u32_le(*sub);
                put_conv_name(buf, conversation)?;
                match from {
                    ListenFrom::Live => buf.put_u8(LISTEN_FROM_LIVE),
                    ListenFrom::Message(msg_id) => {
                        buf.put_u8(LISTEN_FROM_MESSAGE);
                        buf.put_slice(&msg_id.to_le_bytes());
                    }
                    ListenFrom::Since(since_us) => {
                        buf.put_u8(LISTEN_FROM_SINCE);
                        buf.put_u64_le(*since_us);
                    }
                }
            }
            Request::Unlisten { sub } => buf.put_u32_le(*sub),
            Request::History {
                request,
                conversation,
                since_us,
                limit,
            } => {
                buf.put_u32_le(*request);
                put_conv_name(buf, conversation)?;
                buf.put_u64_le(*since_us);
                buf.put_u16_le(*limit);
            }
            Request::Ping { nonce } | Request::Pong { nonce } => buf.put_u64_le(*nonce),
        }
        Ok(())
    }
}

/// A name for error messages.
fn request_name(type_code: u8) -> &'static str {
    match type_code {
        type_code::HELLO => "hello",
        type_code::TALK_START => "talk start",
        type_code::TALK_END => "talk end",
        type_code::LISTEN => "listen",
        type_code::UNLISTEN => "unlisten",
        type_code::HISTORY => "history",
        type_code::PING => "ping",
        type_code::PONG => "pong",
        _ => "unknown",
    }
}
