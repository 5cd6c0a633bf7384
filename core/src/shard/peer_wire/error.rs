//! What can go wrong on a peer link: framing, bodies, the embedded client request, the grant,
//! and the handshake.

use thiserror::Error;

use crate::ids::{HostId, ShardId};
use crate::protocol::{DecodeError, EncodeError};
use crate::token::KeyId;

/// Why bytes from a peer host, or a frame to send to it, were refused.
///
/// Every decode and handshake variant is fatal for the link: the caller closes the socket,
/// logs the error (it names no secret) and redials with backoff; the peer does the same. The
/// shard logic is told that the link is gone, exactly as for a peer that vanished, so no
/// variant needs its own recovery. [`PeerWireError::FrameTooLong`] and
/// [`PeerWireError::FrameEmpty`] leave the input buffer as it was; every other decode variant
/// has consumed the offending frame. Encode variants leave the output buffer as it was and the
/// link usable: the frame was not sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PeerWireError {
    /// The length prefix is above the limit ([`super::PEER_FRAME_LEN_MAX`] after the
    /// handshake, [`super::HANDSHAKE_FRAME_LEN_MAX`] during it); nothing was allocated for it.
    /// The peer is broken or does not speak the hark peer link: close, redial with backoff.
    #[error("frame length {len} is above the limit of {max} bytes")]
    FrameTooLong {
        /// The length prefix as received.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// The length prefix is 0, so there is not even a type byte. Close and redial.
    #[error("frame length is 0")]
    FrameEmpty,
    /// The type byte is not a frame this side expects now (an unknown type, or a handshake
    /// message out of order). Close and redial; a peer of a newer version must be upgraded to
    /// negotiate through the hello's version.
    #[error("unexpected frame type 0x{type_code:02x}")]
    UnknownType {
        /// The type byte.
        type_code: u8,
    },
    /// The body ended before a field. Close and redial.
    #[error("{message}: body ends inside {field}")]
    Truncated {
        /// The frame being decoded.
        message: &'static str,
        /// The field that did not fit.
        field: &'static str,
    },
    /// The body is longer than its fields. Close and redial.
    #[error("{message}: {extra} bytes after the last field")]
    TrailingBytes {
        /// The frame being decoded.
        message: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A length-prefixed field is longer than its limit (decoding), or a value is too long to
    /// encode. When decoding: close and redial. When encoding: the frame was not sent.
    #[error("{field} is {len} long, the limit is {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tag or flag byte has a value this version does not define. Close and redial.
    #[error("{field} has undefined value {value}")]
    InvalidTag {
        /// The field.
        field: &'static str,
        /// The value received.
        value: u8,
    },
    /// A field of an attached grant does not make a valid grant (bad subject, unknown rights
    /// bits, invalid conversation name or prefix). The peer's shard sent something no verified
    /// token can produce: close and redial, and report the peer's build as broken.
    #[error("grant {field}: {why}")]
    GrantInvalid {
        /// The grant field.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A forwarded client request did not decode with the client protocol's decoder (the
    /// inner error says which field). Close and redial.
    #[error("forwarded request: {0}")]
    Request(#[from] DecodeError),
    /// A forwarded client request cannot be encoded (a field above the client protocol's
    /// limits). The frame was not sent; the request is one no decoder could have produced.
    #[error("forwarded request cannot be encoded: {0}")]
    RequestEncode(#[from] EncodeError),
    /// A Deliver's bytes are not a sequence of whole client event frames (each a length prefix
    /// from 1 to the client protocol's `FRAME_LEN_MAX` and that many bytes). Decoding: close
    /// and redial (the bytes would have garbled a client's stream). Encoding: the frame was
    /// not sent; the shard produced bytes that are not events, which is a bug.
    #[error("deliver bytes are not whole client events (at byte {at})")]
    DeliverNotWholeEvents {
        /// Offset in the Deliver's bytes where the first bad or cut event starts.
        at: usize,
    },
    /// A Deliver to encode is above [`super::PEER_DELIVER_LEN_MAX`]; the frame was not sent.
    /// Split it at event boundaries first with [`super::split_deliver`].
    #[error("deliver is {len} bytes, the limit is {max}")]
    DeliverTooLong {
        /// The Deliver's byte count.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The dialer speaks a link version the acceptor does not. Close; the operator upgrades
    /// the older host (rolling upgrades keep a version for one release).
    #[error("peer link version {version} is not supported (this host speaks {supported})")]
    VersionUnsupported {
        /// The version in the hello.
        version: u16,
        /// The version this build speaks.
        supported: u16,
    },
    /// The handshake names a key id this host's keyring does not hold. On the acceptor it is
    /// reported only after the proof arrived, exactly when a bad MAC would be (see
    /// docs/peer-links.md). Close; the hosts' secret files differ: the operator aligns them.
    #[error("peer link key id {key_id} is not in this host's keyring")]
    KeyUnknown {
        /// The key id of the hello.
        key_id: KeyId,
    },
    /// The welcome's or the proof's MAC does not match: the peer holds different key bytes
    /// under the same key id, or the handshake was altered in flight. Close and redial with
    /// backoff; persistent failures mean the secret files differ.
    #[error("peer link handshake MAC does not match")]
    MacInvalid,
    /// The hello names a shard of another host: the dialer's map or address book is wrong.
    /// Close; the dialer redials once its map is current.
    #[error("hello is for shard {to}, but this is host {host}")]
    TargetWrong {
        /// The shard the hello named.
        to: ShardId,
        /// This host.
        host: HostId,
    },
    /// The handshake was fed input after it had ended (established or failed): the caller
    /// must switch to [`super::LinkDecoder`] or close. A bug in the caller.
    #[error("the handshake is over")]
    HandshakeOver,
}
