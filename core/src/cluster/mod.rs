//! Cluster membership: which hosts are live, decided by SWIM gossip (the `foca` crate), and
//! turned into the ownership map every host computes alike.
//!
//! What it is: a sans-IO [`ClusterNode`] per host. The relay feeds it UDP datagrams and the
//! time, sends what it asks, and hands each [`ClusterMap`] it reports to the shards. Each
//! host gossips an identity card ([`HostCard`]: id, boot generation, addresses, shard count,
//! weight); foca's failure detector (probes, indirect probes, suspicion) decides which cards
//! are live; the node builds a [`Membership`](crate::map::Membership) over their shards and
//! orders successive maps with an epoch (the rule is on [`ClusterNode`]).
//!
//! What it is not: no sockets, threads or clock reads; no forwarding of work (that uses the
//! map's `(epoch, checksum)`); no authentication of datagrams (run the cluster port on a
//! private network). `docs/cluster.md` has the timings, the wire layout and what is refused.

mod card;
mod codec;
mod config;
mod error;
mod gossip;
mod map;
mod node;
mod stats;
mod timers;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use card::HostCard;
pub use codec::{CARD_LEN_MAX, DATAGRAM_MAGIC, DATAGRAM_VERSION, WHO_ARE_YOU_LEN};
pub use config::{ClusterConfig, DATAGRAM_BYTES_MAX, DATAGRAM_BYTES_MIN};
pub use error::{CardError, ClusterError, CodecError};
pub use map::ClusterMap;
pub use node::{ClusterNode, ClusterOutput, JOIN_SEEDS_MAX, OUTPUT_QUEUE_MAX};
pub use stats::{ClusterStats, DropReason};
pub use timers::TIMER_SLOTS_MAX;
