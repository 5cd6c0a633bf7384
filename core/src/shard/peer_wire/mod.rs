//! The peer link between hark hosts: the byte format of [`PeerMessage`]s between shards of
//! different hosts, and the handshake that authenticates a link. Sans-IO: the relay owns the
//! sockets, the dialing, the timers and the randomness; this module only turns bytes into
//! typed frames and back.
//!
//! A link is a persistent TCP connection that joins one shard of one host to one shard of
//! another (the dialer names both in its hello), so a frame carries no shard ids: `from` and
//! `to` are implied by the link. `docs/peer-links.md` is the contract (byte layouts,
//! strictness, the handshake's MACs); its hex examples are checked against this code.
//!
//! ```text
//!  dialer  ── DialerHandshake::start ── link_hello ──────────────► AcceptorHandshake
//!          ◄──────────────────────────── link_welcome ─────────────
//!          ── DialerHandshake::handle_input ── link_proof ───────►   (both: Established)
//!
//!  shard ── Action::ToShard(peer on another host) ── encode_link_frame ──► socket
//!  socket ── BytesMut ── LinkDecoder::decode ── LinkFrame::Peer(msg) ──► Shard::handle_peer
//! ```
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use hark_core::shard::peer_wire::{LinkDecoder, LinkFrame, encode_link_frame};
//! use hark_core::shard::{ConnId, PeerMessage};
//!
//! // An owner shard delivers one encoded client event (a live frame: message stream 9, seq 0,
//! // a 3-byte payload) to a subscriber shard.
//! let event = Bytes::from_static(&[12, 0, 0, 0, 0x47, 9, 0, 0, 0, 0, 0, 0, 0, 0xfc, 0xff, 0xfe]);
//! let conn = ConnId { index: 3, generation: 1 };
//! let mut wire = BytesMut::new();
//! encode_link_frame(&LinkFrame::Peer(PeerMessage::Deliver { conn, bytes: event.clone() }), &mut wire)?;
//!
//! let mut decoder = LinkDecoder::new();
//! let Some(LinkFrame::Peer(PeerMessage::Deliver { bytes, .. })) = decoder.decode(&mut wire)? else {
//!     panic!("a deliver was sent");
//! };
//! assert_eq!(bytes, event);
//! # Ok::<(), hark_core::shard::peer_wire::PeerWireError>(())
//! ```

mod body;
mod codec;
mod error;
mod handshake;

#[cfg(test)]
mod tests;

pub use codec::{LinkDecoder, encode_link_frame, split_deliver};
pub use error::PeerWireError;
pub use handshake::{
    AcceptorHandshake, DialerHandshake, Established, HostState, LINK_KEY_CONTEXT, LINK_NONCE_LEN,
    LinkKeys,
};

use super::{MapVersion, PeerMessage};

/// The link version this build speaks, sent in the hello. An acceptor refuses any other.
pub const PEER_LINK_VERSION: u16 = 1;

/// Largest Deliver payload in one frame: 1 MiB. A Deliver carries whole client events, each
/// at most the client protocol's `FRAME_LEN_MAX` + 4 (64 KiB + 4), so one frame holds at
/// least 15 of the largest events and hundreds of audio frames; a subscriber shard's hard
/// send-queue limit is 1 MiB by default, so more in one frame would be refused there anyway.
/// Larger deliveries are cut at event boundaries by [`split_deliver`].
pub const PEER_DELIVER_LEN_MAX: usize = 1024 * 1024;

/// Largest frame either side of a link sends or accepts: the value of the length prefix (type
/// byte plus body). The largest frame is a Deliver: the type byte, the connection id (8) and
/// [`PEER_DELIVER_LEN_MAX`] bytes. Every other frame is smaller (a forwarded request is at
/// most the client protocol's limit plus 29 bytes).
pub const PEER_FRAME_LEN_MAX: u32 = 1 + 8 + PEER_DELIVER_LEN_MAX as u32;

/// Largest handshake frame accepted, as a length prefix. A version 1 hello is 55, a welcome
/// 73, a proof 33; the rest is room for a later version's hello, which must still reach the
/// version check (and be refused with [`PeerWireError::VersionUnsupported`]).
pub const HANDSHAKE_FRAME_LEN_MAX: u32 = 256;

/// Why a link is closed on purpose. A newtype rather than an enum so that reasons added by a
/// later build still decode; a receiver logs an unknown reason's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoodbyeReason(pub u16);

impl GoodbyeReason {
    /// The sending host is draining (rolling restart): do not redial it until it is back in
    /// the map.
    pub const DRAINING: GoodbyeReason = GoodbyeReason(1);
    /// The ownership map changed and the link is no longer needed (no conversation of one
    /// side is owned by the other); redial when a new map needs it.
    pub const MAP_CHANGED: GoodbyeReason = GoodbyeReason(2);
    /// The sending host is shutting down now.
    pub const SHUTTING_DOWN: GoodbyeReason = GoodbyeReason(3);
}

/// Everything that crosses a link after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkFrame {
    /// A message between the link's two shards.
    Peer(PeerMessage),
    /// Keepalive and map-version exchange: the receiver answers with a [`LinkFrame::Pong`]
    /// echoing `sent_us`, and compares `map` with its own.
    Ping {
        /// The map the sender runs.
        map: MapVersion,
        /// The sender's clock when it sent the ping (µs since the Unix epoch).
        sent_us: u64,
    },
    /// The answer to a [`LinkFrame::Ping`].
    Pong {
        /// The map the sender of the pong runs.
        map: MapVersion,
        /// The ping's `sent_us`, so its sender measures the round trip on its own clock.
        echo_us: u64,
    },
    /// The sender closes the link on purpose after this frame; the receiver does not redial
    /// at once (see [`GoodbyeReason`]).
    Goodbye {
        /// Why.
        reason: GoodbyeReason,
    },
}
