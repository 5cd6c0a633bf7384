//! Framing: the incremental [`Decoder`] and the encoders, with fast paths for audio frames.

use bytes::{Buf, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::event::{Event, FrameKind, frame_type_code};
use super::request::Request;
use super::wire::{begin_frame, end_frame, type_code};
use super::{AUDIO_FRAME_HEADER_LEN, AUDIO_PAYLOAD_LEN_MAX, FRAME_LEN_MAX, FRAME_LEN_MAX_MIN};

/// Bytes of the length prefix.
const LEN_PREFIX_LEN: usize = 4;

/// Bytes of an audio frame's body before the payload: stream handle and seq.
const AUDIO_BODY_HEADER_LEN: usize = AUDIO_FRAME_HEADER_LEN - LEN_PREFIX_LEN - 1;

/// Splits messages off a growing input buffer.
///
/// Feed it whatever the socket produced, in any split (byte by byte included): it returns
/// `Ok(None)` until a whole frame is buffered. A length prefix above the limit is refused
/// before any memory is reserved for it; once a prefix is accepted the decoder reserves room
/// for the rest of that frame, so the next read can land in place. Audio payloads come out as
/// zero-copy slices of the input buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    frame_len_max: u32,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with the protocol's limit, [`FRAME_LEN_MAX`].
    pub const fn new() -> Self {
        Self {
            frame_len_max: FRAME_LEN_MAX,
        }
    }

    /// A decoder that refuses frames longer than `frame_len_max`, clamped into
    /// [`FRAME_LEN_MAX_MIN`]..=[`FRAME_LEN_MAX`] (a relay may lower its limit and announce it in
    /// the hello answer; it cannot go below what a Hello needs or above what peers send).
    pub const fn with_frame_len_max(frame_len_max: u32) -> Self {
        let frame_len_max = if frame_len_max < FRAME_LEN_MAX_MIN {
            FRAME_LEN_MAX_MIN
        } else if frame_len_max > FRAME_LEN_MAX {
            FRAME_LEN_MAX
        } else {
            frame_len_max
        };
        Self { frame_len_max }
    }

    /// The limit on the length prefix this decoder enforces.
    pub const fn frame_len_max(&self) -> u32 {
        self.frame_len_max
    }

    /// Decodes the next request in `buf`, consuming its bytes; `Ok(None)` when more input is
    /// needed. After an error, close the connection (see [`DecodeError`]).
    pub fn decode_request(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, DecodeError> {
        let Some((type_code, body_len)) = self.next_frame(buf)? else {
            return Ok(None);
        };
        if type_code == type_code::TALK_FRAME {
            let (stream, seq, payload) = split_audio(buf, body_len, "talk frame")?;
            return Ok(Some(Request::TalkFrame {
                stream,
                seq,
                payload,
            }));
        }
        buf.advance(LEN_PREFIX_LEN + 1);
        let body = buf.split_to(body_len).freeze();
        Request::decode_body(type_code, body).map(Some)
    }

    /// Decodes the next event in `buf`, consuming its bytes; `Ok(None)` when more input is
    /// needed. After an error, close the connection (see [`DecodeError`]).
    pub fn decode_event(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, DecodeError> {
        let Some((type_code, body_len)) = self.next_frame(buf)? else {
            return Ok(None);
        };
        let kind = match type_code {
            type_code::FRAME_LIVE => Some(FrameKind::Live),
            type_code::FRAME_REPLAY => Some(FrameKind::Replay),
            _ => None,
        };
        if let Some(kind) = kind {
            let (stream, seq, payload) = split_audio(buf, body_len, "frame")?;
            return Ok(Some(Event::Frame {
                stream,
                seq,
                kind,
                payload,
            }));
        }
        buf.advance(LEN_PREFIX_LEN + 1);
        let body = buf.split_to(body_len).freeze();
        Event::decode_body(type_code, body).map(Some)
    }

    /// Checks the length prefix and, when the whole frame is buffered, returns its type byte
    /// and body length without consuming anything.
    fn next_frame(&self, buf: &mut BytesMut) -> Result<Option<(u8, usize)>, DecodeError> {
        let Some(prefix) = buf.first_chunk::<LEN_PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*prefix);
        if len == 0 {
            return Err(DecodeError::FrameEmpty);
        }
        if len > self.frame_len_max {
            return Err(DecodeError::FrameTooLong {
                len,
                max: self.frame_len_max,
            });
        }
        // len <= frame_len_max <= FRAME_LEN_MAX, so the sum cannot overflow.
        let frame_len = LEN_PREFIX_LEN + len as usize;
        if buf.len() < frame_len {
            buf.reserve(frame_len - buf.len());
            return Ok(None);
        }
        Ok(Some((buf[LEN_PREFIX_LEN], len as usize - 1)))
    }
}

/// Consumes a whole audio frame (already known to be buffered) and returns its stream, seq and
/// payload; the payload shares the input's memory.
fn split_audio(
    buf: &mut BytesMut,
    body_len: usize,
    message: &'static str,
) -> Result<(u32, u32, Bytes), DecodeError> {
    if body_len < AUDIO_BODY_HEADER_LEN {
        buf.advance(LEN_PREFIX_LEN + 1 + body_len);
        let field = if body_len < 4 { "stream" } else { "seq" };
        return Err(DecodeError::Truncated { message, field });
    }
    let stream = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
    let seq = u32::from_le_bytes([buf[9], buf[10], buf[11], buf[12]]);
    buf.advance(AUDIO_FRAME_HEADER_LEN);
    let payload = buf.split_to(body_len - AUDIO_BODY_HEADER_LEN).freeze();
    Ok((stream, seq, payload))
}

/// Appends one encoded request to `buf` (a connection's outgoing buffer). On error `buf` is
/// unchanged.
pub fn encode_request(request: &Request, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if let Request::TalkFrame {
        stream,
        seq,
        payload,
    } = request
    {
        return write_talk_frame(buf, *stream, *seq, payload);
    }
    let start = begin_frame(buf, request.type_code());
    if let Err(error) = request.write_body(buf) {
        buf.truncate(start);
        return Err(error);
    }
    end_frame(buf, start)
}

/// Appends one encoded event to `buf`. On error `buf` is unchanged. Use this with a reused
/// buffer and `buf.split().freeze()` to avoid an allocation per event.
pub fn write_event(event: &Event, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if let Event::Frame {
        stream,
        seq,
        kind,
        payload,
    } = event
    {
        return write_frame_event(buf, *stream, *seq, *kind, payload);
    }
    let start = begin_frame(buf, event.type_code());
    if let Err(error) = event.write_body(buf) {
        buf.truncate(start);
        return Err(error);
    }
    end_frame(buf, start)
}

/// Encodes one event into its own buffer, to be cloned (a refcount) into every recipient's
/// send queue.
pub fn encode_event(event: &Event) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    write_event(event, &mut buf)?;
    Ok(buf.freeze())
}

/// The hot path: encodes a frame event from its parts, without building an [`Event`], into one
/// exactly sized buffer. The result is the same for every listener the encoding shard serves
/// under this stream handle, so one `Bytes` is shared by all of their send queues.
pub fn encode_frame_event(
    stream: u32,
    seq: u32,
    kind: FrameKind,
    payload: &[u8],
) -> Result<Bytes, EncodeError> {
    let header = audio_header(frame_type_code(kind), stream, seq, payload.len())?;
    // An exactly sized Vec turns into Bytes without reallocating or copying.
    let mut frame = Vec::with_capacity(AUDIO_FRAME_HEADER_LEN + payload.len());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(payload);
    Ok(Bytes::from(frame))
}

/// Appends a frame event to `buf` (for a reused buffer: `buf.split().freeze()` afterwards).
pub fn write_frame_event(
    buf: &mut BytesMut,
    stream: u32,
    seq: u32,
    kind: FrameKind,
    payload: &[u8],
) -> Result<(), EncodeError> {
    write_audio(buf, frame_type_code(kind), stream, seq, payload)
}

/// Appends a talk frame request to `buf`: the client's hot path.
pub fn write_talk_frame(
    buf: &mut BytesMut,
    stream: u32,
    seq: u32,
    payload: &[u8],
) -> Result<(), EncodeError> {
    write_audio(buf, type_code::TALK_FRAME, stream, seq, payload)
}

fn write_audio(
    buf: &mut BytesMut,
    type_code: u8,
    stream: u32,
    seq: u32,
    payload: &[u8],
) -> Result<(), EncodeError> {
    let header = audio_header(type_code, stream, seq, payload.len())?;
    buf.reserve(AUDIO_FRAME_HEADER_LEN + payload.len());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(payload);
    Ok(())
}

/// The 13 bytes in front of an audio payload of `payload_len` bytes.
fn audio_header(
    type_code: u8,
    stream: u32,
    seq: u32,
    payload_len: usize,
) -> Result<[u8; AUDIO_FRAME_HEADER_LEN], EncodeError> {
    if payload_len > AUDIO_PAYLOAD_LEN_MAX {
        return Err(EncodeError::FrameTooLong {
            len: 1 + AUDIO_BODY_HEADER_LEN + payload_len,
            max: FRAME_LEN_MAX,
        });
    }
    // Bounded by AUDIO_PAYLOAD_LEN_MAX above, so the length fits a u32.
    let len = (1 + AUDIO_BODY_HEADER_LEN + payload_len) as u32;
    let mut header = [0u8; AUDIO_FRAME_HEADER_LEN];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4] = type_code;
    header[5..9].copy_from_slice(&stream.to_le_bytes());
    header[9..13].copy_from_slice(&seq.to_le_bytes());
    Ok(header)
}
