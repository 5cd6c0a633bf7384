//! hark-core: the parts of hark that are pure logic.
//!
//! What it is: the identifiers every host agrees on ([`ids`]), the wire protocol codec
//! ([`protocol`]), the consistent-hash ownership map that names the owner shard of a
//! conversation ([`map`]), capability tokens ([`token`]), the sans-IO shard state machine
//! that makes every decision of the relay's live path ([`shard`]), and the SWIM membership
//! node that decides which hosts are live and builds the map over them ([`cluster`]).
//!
//! What it is not: there are no sockets, threads, files or clock reads in this crate. Every
//! function that depends on time takes `now` as an argument, so the same code runs under the
//! relay's runtime, inside a seeded simulation and in a client written for another runtime.
//!
//! ```text
//!   bytes from a socket ──► protocol::Decoder ──► Request / Event
//!                                                      │
//!   conversation name ──► ids::ConvId ──► map::Membership::owner ──► ShardId (host, core)
//!                                                      │
//!   hello token ──► token::Keyring::verify ──► Grant (rights, scope, expiry)
//!
//!   Request + now ──► shard::Shard ──► Action (Send bytes, Close, ToShard, HandOff, WakeAt)
//!
//!   gossip datagram + now ──► cluster::ClusterNode ──► Send datagram | MapChanged(ClusterMap)
//! ```

pub mod client;
pub mod cluster;
pub mod ids;
pub mod map;
pub mod protocol;
pub mod shard;
pub mod token;

pub use ids::{ConvId, ConvName, HostId, MsgId, MsgIdGenerator, ShardId};
