//! hark's wire protocol: length-prefixed binary messages over a byte stream (TCP).
//!
//! What it is: the [`Request`]s a client sends, the [`Event`]s the relay sends back, an
//! incremental [`Decoder`] over [`BytesMut`](bytes::BytesMut) that accepts any split of its
//! input, and encoders that write each message once into one buffer. `docs/protocol.md` is the
//! contract (byte layouts, limits, error codes, session state machine); this module implements
//! it and its tests check the doc's hex examples.
//!
//! What it is not: no sockets and no session logic. Which message may follow which is the
//! relay's and the client's business (the doc says what they do); this module only turns bytes
//! into typed messages and back.
//!
//! ```text
//!            ┌──────── 4 bytes ────────┬─ 1 byte ─┬──── len - 1 bytes ────┐
//!  frame:    │ len (u32 LE) = 1 + body │   type   │         body          │
//!            └─────────────────────────┴──────────┴───────────────────────┘
//!
//!  socket ─► BytesMut ─► Decoder::decode_request ─► Request ─► relay session
//!  relay ─► encode_frame_event(stream, seq, kind, payload) ─► Bytes ─► many send queues
//! ```
//!
//! The hot path is audio: a [`Request::TalkFrame`] or [`Event::Frame`] has a 13-byte header
//! (length, type, stream handle, sequence number). Decoding one splits its payload off the input
//! buffer without copying; [`encode_frame_event`] writes one straight into a single buffer whose
//! [`Bytes`](bytes::Bytes) every listener's send queue can share.
//!
//! ```
//! use bytes::BytesMut;
//! use hark_core::protocol::{Decoder, FrameKind, Request, encode_frame_event, write_talk_frame};
//!
//! // A client writes a talk frame; the relay's socket delivers it in two reads.
//! let mut wire = BytesMut::new();
//! write_talk_frame(&mut wire, 1, 0, &[0xfc, 0xff, 0xfe])?;
//! let mut decoder = Decoder::new();
//! let mut input = BytesMut::from(&wire[..5]);
//! assert_eq!(decoder.decode_request(&mut input)?, None);
//! input.extend_from_slice(&wire[5..]);
//! let Some(Request::TalkFrame { stream, seq, payload }) = decoder.decode_request(&mut input)?
//! else {
//!     panic!("a talk frame was sent");
//! };
//! // The relay encodes the listeners' frame event once and clones it per send queue.
//! let event = encode_frame_event(9, seq, FrameKind::Live, &payload)?;
//! assert_eq!((stream, event.len()), (1, 13 + 3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codec;
mod error;
mod event;
mod request;
mod wire;

#[cfg(test)]
mod doc_examples;
#[cfg(test)]
pub(crate) mod tests;

pub use codec::{
    Decoder, encode_event, encode_frame_event, encode_request, write_event, write_frame_event,
    write_talk_frame,
};
pub use error::{DecodeError, EncodeError, ErrorCode};
pub use event::{
    ErrorSubject, Event, FrameKind, GoAwayReason, HistoryEntry, MessageOutcome, SessionLimits,
};
pub use request::{ListenFrom, Request};

/// The protocol version this crate speaks; a client sends it in [`Request::Hello`] and the
/// relay answers with the version it will use in [`Event::HelloAccepted`].
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest frame any hark peer sends or accepts: the value of the length prefix (type byte plus
/// body). A decoder may be configured lower ([`Decoder::with_frame_len_max`]), never higher, so
/// an encoder that stays under this limit is understood by every peer with the default limit.
pub const FRAME_LEN_MAX: u32 = 64 * 1024;

/// Smallest limit a [`Decoder`] can be configured with: a Hello with the longest token and
/// client name must always fit.
pub const FRAME_LEN_MAX_MIN: u32 = 4 * 1024;

/// Bytes in front of an audio payload in [`Request::TalkFrame`] and [`Event::Frame`]: length
/// (4), type (1), stream handle (4), sequence number (4).
pub const AUDIO_FRAME_HEADER_LEN: usize = 13;

/// Largest audio payload that fits in a frame of [`FRAME_LEN_MAX`].
pub const AUDIO_PAYLOAD_LEN_MAX: usize = FRAME_LEN_MAX as usize - (AUDIO_FRAME_HEADER_LEN - 4);

/// Longest capability token in a Hello, in bytes.
pub const TOKEN_LEN_MAX: usize = 2048;

/// Longest client name in a Hello, in UTF-8 bytes.
pub const CLIENT_NAME_LEN_MAX: usize = 255;

/// Longest sender name in a message start or history entry, in UTF-8 bytes.
pub const SENDER_LEN_MAX: usize = 255;

/// Longest codec metadata blob (e.g. an OpusHead), in bytes.
pub const CODEC_LEN_MAX: usize = 1024;

/// Longest error text, in UTF-8 bytes.
pub const ERROR_TEXT_LEN_MAX: usize = 1024;

/// Longest reconnect address in a GoAway, in UTF-8 bytes.
pub const ADDRESS_LEN_MAX: usize = 255;

/// Most entries in one history page. The relay also keeps every page under [`FRAME_LEN_MAX`]
/// and says `more` when it had to stop early.
pub const HISTORY_ENTRIES_MAX: usize = 1024;
