//! What crosses from one shard to another of the same host (and, later, between hosts).
//!
//! A session whose first conversation is owned by another shard moves there whole: the glue
//! hands the socket over and the owner continues the session from a [`SessionHandoff`], so the
//! hot path of a talker or a single-conversation listener stays on one core.
//!
//! A session that already uses a conversation here and asks for one owned elsewhere stays, and
//! its requests for that conversation travel as [`PeerMessage::Request`]s. The owner serves
//! them on a *proxy session* (one per subscriber connection): the same code as for a local
//! connection, except that what it would write to the socket travels back as
//! [`PeerMessage::Deliver`], already encoded. Frames are encoded once on the owner and the same
//! `Bytes` go to local listeners and to every subscriber shard; message stream handles carry the
//! owner's prefix ([`super::HANDLE_BITS`]), so handles of different owners never collide on one
//! connection. Flow control crosses too: the subscriber shard reports how much of each owner's
//! bytes its connection wrote ([`PeerMessage::Written`]), so a slow listener falls back to
//! replay on the owner exactly as a local one.
//!
//! ```text
//!  client ─► subscriber shard ── Attach, Request{map version} ──────────► owner shard
//!            (routes by talk handle / sub id)                              proxy session
//!  client ◄─ subscriber shard ◄── Deliver{bytes}, Released, Close ───────── (talk, listen, …)
//!                             ── Written{n}, Detach ──────────────────────►
//! ```

use bytes::Bytes;

use super::session::ConnId;
use crate::protocol::Request;
use crate::token::Grant;

/// A session moving to the shard that owns its conversation: everything the new shard needs to
/// continue it, plus the request that named the conversation (processed there). The glue moves
/// the socket and the input bytes not yet decoded along with it.
#[derive(Debug, Clone)]
pub struct SessionHandoff {
    /// The session id announced in `hello_accepted`.
    pub session_id: u64,
    /// Whether the peer is on loopback.
    pub loopback: bool,
    /// The verified grant of the hello.
    pub grant: Grant,
    /// Bytes handed to the old shard's glue and not yet written; the new shard counts them
    /// until the glue reports them written there.
    pub queued_bytes: usize,
    /// The request that named the conversation.
    pub request: Request,
}

/// The ownership map a routed request was computed under. A receiver whose map differs
/// refuses the request (the sender retries once its map is updated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapVersion {
    /// The membership's epoch.
    pub epoch: u64,
    /// The membership's checksum.
    pub checksum: u64,
}

/// A route the owner no longer serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReleased {
    /// A talk stream handle.
    TalkStream(u32),
    /// A subscription id.
    Sub(u32),
}

/// A message between shards. Plain data and `Bytes` payloads (never copied), so a peer link
/// between hosts can carry the same messages. `conn` is always the subscriber shard's id of
/// the client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    /// Subscriber → owner: open a proxy session for this connection, with its verified grant.
    Attach {
        /// The client connection on the subscriber shard.
        conn: ConnId,
        /// Its session id.
        session_id: u64,
        /// Its grant (the owner authorises each request again).
        grant: Grant,
    },
    /// Subscriber → owner: a request for a conversation the owner owns.
    Request {
        /// The client connection.
        conn: ConnId,
        /// The map the subscriber routed by.
        map: MapVersion,
        /// The request, unchanged (a talk frame's payload is the socket buffer's slice).
        request: Request,
    },
    /// Subscriber → owner: the connection wrote `n` bytes of what the owner delivered.
    Written {
        /// The client connection.
        conn: ConnId,
        /// Bytes written.
        n: usize,
    },
    /// Subscriber → owner: the connection is gone; drop its proxy session.
    Detach {
        /// The client connection.
        conn: ConnId,
    },
    /// Owner → subscriber: encoded events to write to the connection.
    Deliver {
        /// The client connection.
        conn: ConnId,
        /// Whole encoded events.
        bytes: Bytes,
    },
    /// Owner → subscriber: a talk stream or subscription is over (or was refused); stop
    /// routing it.
    Released {
        /// The client connection.
        conn: ConnId,
        /// What is released.
        route: RouteReleased,
        /// The talk start was refused: the client's next frames on it are dropped silently.
        refused: bool,
    },
    /// Owner → subscriber: the owner closed the proxy (an error that closes the connection was
    /// delivered, or the connection stopped reading): close the connection.
    Close {
        /// The client connection.
        conn: ConnId,
    },
}
