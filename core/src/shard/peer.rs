//! What crosses from one shard to another of the same host.
//!
//! A session whose first conversation is owned by another shard moves there whole: the glue
//! hands the socket over and the owner continues the session from a [`SessionHandoff`], so the
//! hot path of a talker or a single-conversation listener stays on one core.

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
