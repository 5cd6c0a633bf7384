//! Error codes on the wire, and the errors of decoding and encoding.

use std::fmt;

use thiserror::Error;

use crate::ids::IdError;

/// An error code carried by [`Event::Error`](super::Event::Error).
///
/// A newtype rather than an enum so that codes added by a later relay still decode: a client
/// that does not know a code shows its number and text. Ranges (see docs/protocol.md):
/// 1–99 framing and session, 100–199 authorisation, 200–299 streams and subscriptions,
/// 300–399 limits, 400–499 relay side, 500–999 reserved for hark, 1000–65535 for deployments.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

/// Declares the error code table once: constants, names and whether the relay closes.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal, closes = $closes:literal;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($value);)*

            /// Every code this version defines, in numeric order.
            pub const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The code's name as docs/protocol.md spells it, or `None` for a code this
            /// version does not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }

            /// Whether the relay closes the connection after sending this error. Unknown codes
            /// answer `false`: a client learns of a close from the end of the stream anyway.
            pub fn closes_connection(self) -> bool {
                match self.0 {
                    $($value => $closes,)*
                    _ => false,
                }
            }
        }
    };
}

error_codes! {
    /// A message body did not parse (short, trailing bytes, bad UTF-8, bad tag, bad name).
    MALFORMED = 1, "malformed", closes = true;
    /// A length prefix was above the relay's limit (or zero-length frame).
    FRAME_TOO_LONG = 2, "frame_too_long", closes = true;
    /// A type byte that is not a request of this version.
    UNKNOWN_TYPE = 3, "unknown_type", closes = true;
    /// The Hello's version is not one the relay speaks.
    UNSUPPORTED_VERSION = 4, "unsupported_version", closes = true;
    /// The first request was not a Hello.
    HELLO_REQUIRED = 5, "hello_required", closes = true;
    /// A request that is not allowed in the session's state (a second Hello).
    UNEXPECTED_REQUEST = 6, "unexpected_request", closes = true;
    /// Nothing was received for the announced idle timeout.
    IDLE_TIMEOUT = 7, "idle_timeout", closes = true;
    /// The Hello carried no token and the relay is not in dev mode.
    TOKEN_MISSING = 100, "token_missing", closes = true;
    /// The token's signature, key id or encoding is wrong.
    TOKEN_INVALID = 101, "token_invalid", closes = true;
    /// The token has expired; get a new one and reconnect.
    TOKEN_EXPIRED = 102, "token_expired", closes = true;
    /// The conversation is outside the token's scope.
    OUT_OF_SCOPE = 103, "out_of_scope", closes = false;
    /// The token lacks the right (talk, listen, history) the request needs.
    RIGHT_MISSING = 104, "right_missing", closes = false;
    /// A TalkFrame or TalkEnd for a stream handle with no open stream.
    UNKNOWN_STREAM = 200, "unknown_stream", closes = false;
    /// A TalkStart for a stream handle that is already open.
    DUPLICATE_STREAM = 201, "duplicate_stream", closes = false;
    /// A TalkFrame skipped a sequence number; the message ends truncated.
    SEQ_GAP = 202, "seq_gap", closes = false;
    /// An audio payload above the announced limit; the message ends truncated.
    PAYLOAD_TOO_LARGE = 203, "payload_too_large", closes = false;
    /// An Unlisten for a subscription id that is not open.
    UNKNOWN_SUB = 204, "unknown_sub", closes = false;
    /// A Listen for a subscription id that is already open.
    DUPLICATE_SUB = 205, "duplicate_sub", closes = false;
    /// The message to listen from or resume is not stored (never was, or retention dropped it).
    MESSAGE_UNAVAILABLE = 206, "message_unavailable", closes = false;
    /// A talk stream sent frames faster than the announced rate; the message ends truncated.
    RATE_LIMITED = 300, "rate_limited", closes = false;
    /// More subscriptions than the announced limit.
    TOO_MANY_CONVERSATIONS = 301, "too_many_conversations", closes = false;
    /// More open talk streams than the announced limit.
    TOO_MANY_OPEN_MESSAGES = 302, "too_many_open_messages", closes = false;
    /// The host has no room for another connection.
    TOO_MANY_CONNECTIONS = 303, "too_many_connections", closes = true;
    /// Too many history requests in flight on this connection.
    TOO_MANY_REQUESTS = 304, "too_many_requests", closes = false;
    /// A bug or unexpected failure in the relay for this request.
    INTERNAL = 400, "internal", closes = false;
    /// The relay is draining: no new talk streams or subscriptions.
    SHUTTING_DOWN = 401, "shutting_down", closes = false;
    /// The store cannot take or serve data right now (disk full, I/O error).
    STORE_UNAVAILABLE = 402, "store_unavailable", closes = false;
    /// The cluster's ownership map changed while the request was on its way, or the
    /// conversation moved: send the request again (it reaches the new owner).
    MAP_CHANGED = 403, "map_changed", closes = false;
    /// The host that owns the conversation, or stores the message, cannot be reached now; the
    /// request may succeed once it is back or the map has moved the conversation.
    OWNER_UNAVAILABLE = 404, "owner_unavailable", closes = false;
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ErrorCode({} {name})", self.0),
            None => write!(f, "ErrorCode({})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "error {}", self.0),
        }
    }
}

/// Why bytes from the peer are not a valid message.
///
/// Every variant is fatal for the connection: the relay answers with
/// [`DecodeError::error_code`] and closes. [`DecodeError::FrameTooLong`] and
/// [`DecodeError::FrameEmpty`] leave the input buffer as it was; every other variant has
/// consumed exactly the offending frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix is above the decoder's limit; nothing was allocated for it. Maps to
    /// [`ErrorCode::FRAME_TOO_LONG`]; the peer is broken or not speaking hark.
    #[error("frame length {len} is above the limit of {max} bytes")]
    FrameTooLong {
        /// The length prefix as received.
        len: u32,
        /// The decoder's limit.
        max: u32,
    },
    /// The length prefix is 0, so there is not even a type byte. Maps to
    /// [`ErrorCode::FRAME_TOO_LONG`] (a length outside the allowed range).
    #[error("frame length is 0")]
    FrameEmpty,
    /// The type byte is not a message of this direction and version. Maps to
    /// [`ErrorCode::UNKNOWN_TYPE`]; a peer of a newer version must negotiate it in the hello.
    #[error("unknown message type 0x{type_code:02x}")]
    UnknownType {
        /// The type byte.
        type_code: u8,
    },
    /// The body ended before a field. Maps to [`ErrorCode::MALFORMED`].
    #[error("{message}: body ends inside {field}")]
    Truncated {
        /// The message being decoded.
        message: &'static str,
        /// The field that did not fit.
        field: &'static str,
    },
    /// The body is longer than its fields. Maps to [`ErrorCode::MALFORMED`].
    #[error("{message}: {extra} bytes after the last field")]
    TrailingBytes {
        /// The message being decoded.
        message: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A length-prefixed field (or list) is longer than its limit. Maps to
    /// [`ErrorCode::MALFORMED`].
    #[error("{field} is {len} long, the limit is {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its announced length.
        len: usize,
        /// The limit from this module's constants.
        max: usize,
    },
    /// A text field is not UTF-8. Maps to [`ErrorCode::MALFORMED`].
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A conversation name is not valid (empty, control characters, not UTF-8). Maps to
    /// [`ErrorCode::MALFORMED`].
    #[error("invalid conversation name: {0}")]
    InvalidConvName(IdError),
    /// A tag or flag byte has a value this version does not define. Maps to
    /// [`ErrorCode::MALFORMED`].
    #[error("{field} has undefined value {value}")]
    InvalidTag {
        /// The field.
        field: &'static str,
        /// The value received.
        value: u8,
    },
}

impl DecodeError {
    /// The code the relay sends in its error event before closing the connection.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::FrameTooLong { .. } | DecodeError::FrameEmpty => ErrorCode::FRAME_TOO_LONG,
            DecodeError::UnknownType { .. } => ErrorCode::UNKNOWN_TYPE,
            DecodeError::Truncated { .. }
            | DecodeError::TrailingBytes { .. }
            | DecodeError::FieldTooLong { .. }
            | DecodeError::InvalidUtf8 { .. }
            | DecodeError::InvalidConvName(_)
            | DecodeError::InvalidTag { .. } => ErrorCode::MALFORMED,
        }
    }
}

/// Why a message cannot be encoded. The output buffer is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field is longer than its limit in this module's constants; shorten it (or, for a
    /// history page, send fewer entries and set `more`).
    #[error("{field} is {len} long, the limit is {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The whole frame would exceed [`FRAME_LEN_MAX`](super::FRAME_LEN_MAX); send less (a
    /// smaller audio payload, fewer history entries).
    #[error("frame would be {len} bytes, the limit is {max}")]
    FrameTooLong {
        /// The frame's length (type byte and body).
        len: usize,
        /// The limit.
        max: u32,
    },
}
