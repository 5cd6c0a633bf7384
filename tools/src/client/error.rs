//! What can go wrong on a client connection.

use std::io;
use std::time::Duration;

use hark_core::protocol::{DecodeError, EncodeError, ErrorCode, Event};

/// Why a [`Client`](super::Client) call did not give its result.
///
/// After [`ClientError::Io`], [`ClientError::Closed`], [`ClientError::Decode`] or a
/// [`ClientError::Timeout`] of a *write* the connection is of no further use: drop the client
/// and connect again. After a read timeout, [`ClientError::Encode`],
/// [`ClientError::Refused`] (whose connection the relay closes) or
/// [`ClientError::UnexpectedEvent`] the stream is still in step and may be used on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket operation failed for another reason than a close or a timeout (address not
    /// reachable, connection refused, out of file descriptors). Check the address and the
    /// relay; reconnect.
    #[error("{op}: {source}")]
    Io {
        /// What the client was doing: "connect", "read", "write", "socket option".
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Nothing arrived (a read), or the relay did not take the bytes (a write), within the
    /// time given. A read can be retried; after a write the framing may be broken.
    #[error("{op}: nothing within {waited:?}")]
    Timeout {
        /// What the client was waiting for: "connect", "read", "write", "close".
        op: &'static str,
        /// How long it waited.
        waited: Duration,
    },
    /// The relay closed the connection (end of stream, or a reset). Events sent before the
    /// close were all returned first; reconnect if more is wanted.
    #[error(
        "the relay closed the connection{}{}",
        if *reset { " (reset)" } else { "" },
        if *partial_frame_bytes > 0 { " inside a frame" } else { "" }
    )]
    Closed {
        /// The close was a TCP reset rather than an orderly end of stream.
        reset: bool,
        /// Bytes of an unfinished frame that were buffered when the stream ended (0 when it
        /// ended on a frame boundary, as a relay always should).
        partial_frame_bytes: usize,
    },
    /// The relay sent bytes that are not a valid event: a relay bug or not a hark relay.
    /// The connection cannot be resynchronised; reconnect.
    #[error("the relay sent an invalid event: {0}")]
    Decode(#[from] DecodeError),
    /// The request cannot be encoded (a field above its protocol limit); nothing was sent.
    /// Shorten the field.
    #[error("request cannot be encoded: {0}")]
    Encode(#[from] EncodeError),
    /// The relay answered the hello with an error (bad token, unsupported version, no room);
    /// it closes the connection after it. Fix the cause the code names and reconnect.
    #[error("the relay refused the session: {code} ({text})")]
    Refused {
        /// The error code of the relay's answer.
        code: ErrorCode,
        /// The relay's explanation, for logs.
        text: String,
    },
    /// An event arrived that the call did not expect (e.g. anything but `hello_accepted` or
    /// an error after a hello). The event is handed back so nothing is lost silently.
    #[error("expected {expected}, got {event:?}")]
    UnexpectedEvent {
        /// What the call waited for.
        expected: &'static str,
        /// What came instead.
        event: Box<Event>,
    },
    /// [`Client::expect_closed`](super::Client::expect_closed) saw events instead of (or
    /// before) the close; they are all here, in order.
    #[error("expected the connection to close, got {} events first (closed after: {closed})", events.len())]
    EventsBeforeClose {
        /// The events, in arrival order.
        events: Vec<Event>,
        /// Whether the close came after them within the time given.
        closed: bool,
    },
}

impl ClientError {
    /// Whether this is a [`ClientError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Timeout { .. })
    }

    /// Whether this is a [`ClientError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, ClientError::Closed { .. })
    }

    /// Maps an I/O error of `op` to the client's vocabulary: timeouts and closes get their own
    /// variants so callers can match on them.
    pub(super) fn from_io(op: &'static str, waited: Duration, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ClientError::Timeout { op, waited }
            }
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ClientError::Closed {
                reset: true,
                partial_frame_bytes: 0,
            },
            _ => ClientError::Io { op, source },
        }
    }
}
