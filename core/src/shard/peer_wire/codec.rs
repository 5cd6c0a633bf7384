//! Link frames after the handshake: the encoder, the streaming [`LinkDecoder`], and the helper
//! that cuts a large Deliver at event boundaries.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::body::{CONN_LEN, MAP_LEN, Reader, put_conn, put_grant, put_map};
use super::{GoodbyeReason, LinkFrame, PEER_DELIVER_LEN_MAX, PEER_FRAME_LEN_MAX, PeerWireError};
use crate::protocol::{Decoder, FRAME_LEN_MAX, Request, encode_request};
use crate::shard::{ConnId, PeerMessage, RouteReleased};

/// Bytes of the length prefix.
pub(super) const LEN_PREFIX_LEN: usize = 4;

/// Type bytes of link frames and handshake messages. The client protocol uses 0x01–0x7f; the
/// peer link uses 0x80–0xbf, so a dump of either stream says which one it is.
pub(super) mod type_code {
    pub const PING: u8 = 0x80;
    pub const PONG: u8 = 0x81;
    pub const GOODBYE: u8 = 0x82;

    pub const LINK_HELLO: u8 = 0x90;
    pub const LINK_WELCOME: u8 = 0x91;
    pub const LINK_PROOF: u8 = 0x92;

    pub const ATTACH: u8 = 0xa0;
    pub const REQUEST: u8 = 0xa1;
    pub const WRITTEN: u8 = 0xa2;
    pub const DETACH: u8 = 0xa3;
    pub const DELIVER: u8 = 0xa4;
    pub const RELEASED: u8 = 0xa5;
    pub const CLOSE: u8 = 0xa6;
}

/// Route kind byte of a Released frame.
const ROUTE_TALK_STREAM: u8 = 0;
const ROUTE_SUB: u8 = 1;

/// Checks the length prefix against `max` and, when the whole frame is buffered, returns its
/// type byte and body length without consuming anything. Once a prefix is accepted, room for
/// the rest of the frame is reserved so the next read can land in place; nothing is reserved
/// for a refused prefix.
pub(super) fn next_frame(
    buf: &mut BytesMut,
    max: u32,
) -> Result<Option<(u8, usize)>, PeerWireError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*prefix);
    if len == 0 {
        return Err(PeerWireError::FrameEmpty);
    }
    if len > max {
        return Err(PeerWireError::FrameTooLong { len, max });
    }
    // len <= max <= PEER_FRAME_LEN_MAX, far below usize::MAX.
    let frame_len = LEN_PREFIX_LEN + len as usize;
    if buf.len() < frame_len {
        buf.reserve(frame_len - buf.len());
        return Ok(None);
    }
    Ok(Some((buf[LEN_PREFIX_LEN], len as usize - 1)))
}

/// Starts a frame: a length placeholder and the type byte. Returns where the frame starts.
pub(super) fn begin_frame(buf: &mut BytesMut, type_code: u8) -> usize {
    let start = buf.len();
    buf.put_u32_le(0);
    buf.put_u8(type_code);
    start
}

/// Patches the length of the frame that starts at `start`. Every frame's size is checked
/// before it is written, so the length is within [`PEER_FRAME_LEN_MAX`].
pub(super) fn end_frame(buf: &mut BytesMut, start: usize) {
    let len = buf.len() - start - LEN_PREFIX_LEN;
    debug_assert!(len <= PEER_FRAME_LEN_MAX as usize);
    // Bounded by PEER_FRAME_LEN_MAX (the Deliver and request limits are checked first).
    buf[start..start + LEN_PREFIX_LEN].copy_from_slice(&(len as u32).to_le_bytes());
}

/// Appends one encoded link frame to `buf` (a link's outgoing buffer). On error `buf` is
/// unchanged and nothing is sent.
pub fn encode_link_frame(frame: &LinkFrame, buf: &mut BytesMut) -> Result<(), PeerWireError> {
    let start = buf.len();
    let result = write_link_frame(frame, buf);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

fn write_link_frame(frame: &LinkFrame, buf: &mut BytesMut) -> Result<(), PeerWireError> {
    let start = match frame {
        LinkFrame::Ping { map, sent_us } => {
            let start = begin_frame(buf, type_code::PING);
            put_map(buf, *map);
            buf.put_u64_le(*sent_us);
            start
        }
        LinkFrame::Pong { map, echo_us } => {
            let start = begin_frame(buf, type_code::PONG);
            put_map(buf, *map);
            buf.put_u64_le(*echo_us);
            start
        }
        LinkFrame::Goodbye { reason } => {
            let start = begin_frame(buf, type_code::GOODBYE);
            buf.put_u16_le(reason.0);
            start
        }
        LinkFrame::Peer(message) => write_peer_message(message, buf)?,
    };
    end_frame(buf, start);
    Ok(())
}

fn write_peer_message(message: &PeerMessage, buf: &mut BytesMut) -> Result<usize, PeerWireError> {
    let start = match message {
        PeerMessage::Attach {
            conn,
            session_id,
            grant,
        } => {
            let start = conn_frame(buf, type_code::ATTACH, *conn);
            buf.put_u64_le(*session_id);
            put_grant(buf, grant);
            start
        }
        PeerMessage::Request { conn, map, request } => {
            let start = conn_frame(buf, type_code::REQUEST, *conn);
            put_map(buf, *map);
            // The client encoder bounds the request to the client FRAME_LEN_MAX, far below
            // PEER_FRAME_LEN_MAX; on error the caller truncates the whole frame.
            encode_request(request, buf)?;
            start
        }
        PeerMessage::Written { conn, n } => {
            let start = conn_frame(buf, type_code::WRITTEN, *conn);
            buf.put_u64_le(*n as u64);
            start
        }
        PeerMessage::Detach { conn } => conn_frame(buf, type_code::DETACH, *conn),
        PeerMessage::Deliver { conn, bytes } => {
            if bytes.len() > PEER_DELIVER_LEN_MAX {
                return Err(PeerWireError::DeliverTooLong {
                    len: bytes.len(),
                    max: PEER_DELIVER_LEN_MAX,
                });
            }
            check_whole_events(bytes)?;
            buf.reserve(LEN_PREFIX_LEN + 1 + CONN_LEN + bytes.len());
            let start = conn_frame(buf, type_code::DELIVER, *conn);
            buf.put_slice(bytes);
            start
        }
        PeerMessage::Released {
            conn,
            route,
            refused,
        } => {
            let start = conn_frame(buf, type_code::RELEASED, *conn);
            let (kind, handle) = match route {
                RouteReleased::TalkStream(stream) => (ROUTE_TALK_STREAM, *stream),
                RouteReleased::Sub(sub) => (ROUTE_SUB, *sub),
            };
            buf.put_u8(kind);
            buf.put_u32_le(handle);
            buf.put_u8(u8::from(*refused));
            start
        }
        PeerMessage::Close { conn } => conn_frame(buf, type_code::CLOSE, *conn),
    };
    Ok(start)
}

fn conn_frame(buf: &mut BytesMut, type_code: u8, conn: ConnId) -> usize {
    let start = begin_frame(buf, type_code);
    put_conn(buf, conn);
    start
}

/// Checks that `bytes` is a sequence of whole client event frames, each with a length prefix
/// from 1 to the client protocol's [`FRAME_LEN_MAX`]. Walks the prefixes only (no body is
/// read), so it costs one step per event.
fn check_whole_events(bytes: &[u8]) -> Result<(), PeerWireError> {
    let mut at = 0;
    // Each step advances by at least 5 bytes, so the loop ends within bytes.len() / 5 steps.
    while at < bytes.len() {
        let event_len =
            event_len_at(bytes, at).ok_or(PeerWireError::DeliverNotWholeEvents { at })?;
        at += event_len;
    }
    Ok(())
}

/// The whole length (prefix included) of the client event frame at `at`, if it is valid and
/// complete within `bytes`.
fn event_len_at(bytes: &[u8], at: usize) -> Option<usize> {
    let prefix = bytes.get(at..)?.first_chunk::<LEN_PREFIX_LEN>()?;
    let len = u32::from_le_bytes(*prefix);
    if len == 0 || len > FRAME_LEN_MAX {
        return None;
    }
    let event_len = LEN_PREFIX_LEN + len as usize;
    (bytes.len() - at >= event_len).then_some(event_len)
}

/// Cuts a Deliver's bytes into pieces of at most [`PEER_DELIVER_LEN_MAX`] bytes at event
/// boundaries, without copying (each piece is a slice of `bytes`). A shard may hand its glue a
/// Deliver of any size; the link sends it as several Deliver frames, which the receiving shard
/// handles exactly as one. Refuses bytes that are not whole client events.
pub fn split_deliver(bytes: Bytes) -> Result<Vec<Bytes>, PeerWireError> {
    check_whole_events(&bytes)?;
    let mut pieces = Vec::with_capacity(bytes.len() / PEER_DELIVER_LEN_MAX + 1);
    let mut rest = bytes;
    // Each turn removes at least one event (every event fits a piece: FRAME_LEN_MAX + 4 is
    // below PEER_DELIVER_LEN_MAX), so the loop ends.
    while rest.len() > PEER_DELIVER_LEN_MAX {
        let mut cut = 0;
        while let Some(event_len) = event_len_at(&rest, cut) {
            if cut + event_len > PEER_DELIVER_LEN_MAX {
                break;
            }
            cut += event_len;
        }
        pieces.push(rest.split_to(cut));
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest);
    }
    Ok(pieces)
}

/// Splits link frames off a growing input buffer (what the link's socket produced, in any
/// split).
///
/// Returns `Ok(None)` until a whole frame is buffered. A length prefix above
/// [`PEER_FRAME_LEN_MAX`] is refused as soon as its 4 bytes are there, before any memory is
/// reserved for it. A Deliver's bytes and a forwarded talk frame's payload come out as
/// zero-copy slices of the input buffer. After an error, close the link (see
/// [`PeerWireError`]).
#[derive(Debug, Clone, Default)]
pub struct LinkDecoder {
    requests: Decoder,
}

impl LinkDecoder {
    /// A decoder with the link's limit, [`PEER_FRAME_LEN_MAX`].
    pub const fn new() -> Self {
        Self {
            requests: Decoder::new(),
        }
    }

    /// Decodes the next frame in `buf`, consuming its bytes; `Ok(None)` when more input is
    /// needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<LinkFrame>, PeerWireError> {
        let Some((type_code, body_len)) = next_frame(buf, PEER_FRAME_LEN_MAX)? else {
            return Ok(None);
        };
        // The whole frame, sharing the input's memory; the input keeps what follows.
        let mut frame = buf.split_to(LEN_PREFIX_LEN + 1 + body_len);
        frame.advance(LEN_PREFIX_LEN + 1);
        self.decode_body(type_code, frame).map(Some)
    }

    fn decode_body(
        &mut self,
        type_code: u8,
        mut body: BytesMut,
    ) -> Result<LinkFrame, PeerWireError> {
        let frame = match type_code {
            type_code::PING => {
                let mut r = Reader::new(&body, "ping");
                let frame = LinkFrame::Ping {
                    map: r.map()?,
                    sent_us: r.u64("sent_us")?,
                };
                r.finish()?;
                frame
            }
            type_code::PONG => {
                let mut r = Reader::new(&body, "pong");
                let frame = LinkFrame::Pong {
                    map: r.map()?,
                    echo_us: r.u64("echo_us")?,
                };
                r.finish()?;
                frame
            }
            type_code::GOODBYE => {
                let mut r = Reader::new(&body, "goodbye");
                let frame = LinkFrame::Goodbye {
                    reason: GoodbyeReason(r.u16("reason")?),
                };
                r.finish()?;
                frame
            }
            type_code::ATTACH => {
                let mut r = Reader::new(&body, "attach");
                let message = PeerMessage::Attach {
                    conn: r.conn()?,
                    session_id: r.u64("session_id")?,
                    grant: r.grant()?,
                };
                r.finish()?;
                LinkFrame::Peer(message)
            }
            type_code::REQUEST => {
                let mut r = Reader::new(&body, "request");
                let conn = r.conn()?;
                let map = r.map()?;
                let request = self.embedded_request(&mut body, CONN_LEN + MAP_LEN)?;
                LinkFrame::Peer(PeerMessage::Request { conn, map, request })
            }
            type_code::WRITTEN => {
                let mut r = Reader::new(&body, "written");
                let conn = r.conn()?;
                // A count above usize::MAX (only possible on a 32-bit host) saturates: it
                // only lowers a queue size, which stops at 0 anyway.
                let n = usize::try_from(r.u64("n")?).unwrap_or(usize::MAX);
                r.finish()?;
                LinkFrame::Peer(PeerMessage::Written { conn, n })
            }
            type_code::DETACH => LinkFrame::Peer(PeerMessage::Detach {
                conn: conn_only(&body, "detach")?,
            }),
            type_code::CLOSE => LinkFrame::Peer(PeerMessage::Close {
                conn: conn_only(&body, "close")?,
            }),
            type_code::DELIVER => {
                let conn = Reader::new(&body, "deliver").conn()?;
                body.advance(CONN_LEN);
                check_whole_events(&body)?;
                LinkFrame::Peer(PeerMessage::Deliver {
                    conn,
                    bytes: body.freeze(),
                })
            }
            type_code::RELEASED => {
                let mut r = Reader::new(&body, "released");
                let conn = r.conn()?;
                let route = match r.u8("route")? {
                    ROUTE_TALK_STREAM => RouteReleased::TalkStream(r.u32("handle")?),
                    ROUTE_SUB => RouteReleased::Sub(r.u32("handle")?),
                    value => {
                        return Err(PeerWireError::InvalidTag {
                            field: "route",
                            value,
                        });
                    }
                };
                let refused = r.flag("refused")?;
                r.finish()?;
                LinkFrame::Peer(PeerMessage::Released {
                    conn,
                    route,
                    refused,
                })
            }
            type_code => return Err(PeerWireError::UnknownType { type_code }),
        };
        Ok(frame)
    }

    /// The client request that fills the rest of `body` after `header_len` bytes: exactly one
    /// client frame, decoded by the client protocol's own decoder (so a talk frame's payload
    /// stays a slice of the link's input).
    fn embedded_request(
        &mut self,
        body: &mut BytesMut,
        header_len: usize,
    ) -> Result<Request, PeerWireError> {
        body.advance(header_len);
        // Check the inner prefix here, so the client decoder always sees one whole frame and
        // never reserves memory for a frame that is not there.
        let truncated = PeerWireError::Truncated {
            message: "request",
            field: "client_request",
        };
        let Some(prefix) = body.first_chunk::<LEN_PREFIX_LEN>() else {
            return Err(truncated);
        };
        // A length above the client limit is left to the client decoder, which refuses it.
        let inner_len = u32::from_le_bytes(*prefix);
        if inner_len <= FRAME_LEN_MAX && LEN_PREFIX_LEN + inner_len as usize > body.len() {
            return Err(truncated);
        }
        let request = self
            .requests
            .decode_request(body)?
            // The decoder refused lengths above its limit, and the frame is whole (checked
            // above), so it returns a request or an error.
            .ok_or(truncated)?;
        if !body.is_empty() {
            return Err(PeerWireError::TrailingBytes {
                message: "request",
                extra: body.len(),
            });
        }
        Ok(request)
    }
}

fn conn_only(body: &[u8], message: &'static str) -> Result<ConnId, PeerWireError> {
    let mut r = Reader::new(body, message);
    let conn = r.conn()?;
    r.finish()?;
    Ok(conn)
}
