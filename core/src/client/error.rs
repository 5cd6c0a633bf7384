//! Why a client session call failed.

use thiserror::Error;

use crate::ids::MsgId;
use crate::protocol::{DecodeError, EncodeError};

/// Why a session call failed. Each says what the caller can do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientSessionError {
    /// The stream handle is open already: pick another or wait for its `talk_ended`.
    #[error("talk stream {0} is open already")]
    TalkStreamOpen(u32),
    /// No open talk stream has this handle: start one first.
    #[error("talk stream {0} is not open")]
    TalkStreamUnknown(u32),
    /// The stream was ended already; no frame may follow.
    #[error("talk stream {0} is ending; no frame may follow")]
    TalkStreamEnding(u32),
    /// The subscription id is open already.
    #[error("subscription {0} is open already")]
    SubOpen(u32),
    /// No such subscription.
    #[error("subscription {0} is not open")]
    SubUnknown(u32),
    /// The history request id is in flight already.
    #[error("history request {0} is in flight already")]
    HistoryInFlight(u32),
    /// A session bound was reached ([`TALK_STREAMS_MAX`](super::TALK_STREAMS_MAX),
    /// [`SUBS_MAX`](super::SUBS_MAX), [`HISTORY_IN_FLIGHT_MAX`](super::HISTORY_IN_FLIGHT_MAX),
    /// [`MESSAGE_STREAMS_MAX`](super::MESSAGE_STREAMS_MAX)): finish something first.
    #[error("too many {what} (at most {max})")]
    TooMany {
        /// What is bounded.
        what: &'static str,
        /// The bound.
        max: usize,
    },
    /// The frames kept for a resume are at [`KEPT_FRAMES_MAX`](super::KEPT_FRAMES_MAX) /
    /// [`KEPT_BYTES_MAX`](super::KEPT_BYTES_MAX) and none of them may be dropped (none is
    /// acknowledged as stored yet, or a resume is pending): read events until `stored` acks
    /// or `talk_started` make room, then send again. Nothing was sent or kept.
    #[error(
        "talk stream {0} keeps as many frames as it may and none is stored yet; wait for stored acks"
    )]
    KeptFull(u32),
    /// A resumed message's owner asks for frames this client no longer keeps (the message
    /// was longer than [`KEPT_FRAMES_MAX`](super::KEPT_FRAMES_MAX) and a new owner adopted
    /// it from an earlier frame, or the relay lost acknowledged data): the message cannot be
    /// completed. The session dropped the stream; what was stored stays as a truncated
    /// message. Talk again as a new message, on a new connection or another handle (the relay
    /// still holds this handle's message until its resume grace ends).
    #[error(
        "resume of {msg_id} asks from frame {next_seq}, but frames from {kept_from} only are kept"
    )]
    ResumeGap {
        /// The message.
        msg_id: MsgId,
        /// What the relay asked for.
        next_seq: u32,
        /// The oldest frame still kept.
        kept_from: u32,
    },
    /// No new owner took over the message within the session's handover patience
    /// ([`set_handover_patience_us`](super::ClientSession::set_handover_patience_us)),
    /// returned by [`ClientSession::poll`](super::ClientSession::poll). The session dropped
    /// the stream (its handle is idle at the relay); what was stored stays as a truncated
    /// message. Talk again as a new message if it still matters; call `poll` again for the
    /// session's other work.
    #[error("no new owner took over {msg_id} (talk stream {stream}) in time")]
    HandoverFailed {
        /// The stream handle, free again.
        stream: u32,
        /// The message given up.
        msg_id: MsgId,
    },
    /// The relay sent something the protocol does not allow here: reconnect or give up.
    #[error("protocol violation by the relay: {0}")]
    Protocol(String),
    /// A request could not be encoded (a field over its limit): fix the argument.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The relay's bytes do not decode: the connection is unusable.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}
