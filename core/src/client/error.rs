//! Why a client session call failed.

use thiserror::Error;

use crate::ids::MsgId;
use crate::protocol::{DecodeError, EncodeError};

/// Why a session call failed. Each says what the caller can do.
#[derive(Debug, Error)]
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
    /// A session bound was reached ([`TALK_STREAMS_MAX`], [`SUBS_MAX`],
    /// [`HISTORY_IN_FLIGHT_MAX`], [`MESSAGE_STREAMS_MAX`]): finish something first.
    #[error("too many {what} (at most {max})")]
    TooMany {
        /// What is bounded.
        what: &'static str,
        /// The bound.
        max: usize,
    },
    /// The frames kept for a resume are at [`UNACKED_FRAMES_MAX`] / [`UNACKED_BYTES_MAX`]:
    /// read events until `stored` acks free room, then send again.
    #[error("talk stream {0} has too many frames not yet stored; wait for stored acks")]
    UnackedFull(u32),
    /// A resumed message's relay no longer has frames this client dropped as stored (the
    /// relay lost acknowledged data): the message cannot be completed.
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
