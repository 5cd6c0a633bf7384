//! The errors of the cluster module: a bad identity card, a bad configuration, a bad seed
//! list, and the codec's refusals of bytes from the network.

use std::net::SocketAddr;

use thiserror::Error;

use crate::map::MEMBERSHIP_SHARDS_MAX;

/// Why a [`HostCard`](super::HostCard) is refused, whether built locally or decoded from a
/// peer. A card from the network is dropped (and counted); a local one fails start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CardError {
    /// A host must run between 1 and [`MEMBERSHIP_SHARDS_MAX`] shards; configure the cores to
    /// pin within that range.
    #[error("a host runs {cores} shards, allowed are 1..={MEMBERSHIP_SHARDS_MAX}")]
    CoresOutOfRange {
        /// The shard count the card names.
        cores: u16,
    },
    /// A weight of zero would list the host's shards while they own nothing; give a positive
    /// weight (e.g. 100) or leave the host out.
    #[error("weight per core is zero")]
    WeightZero,
    /// An address that nobody can send to (0.0.0.0 or ::); configure the address peers and
    /// clients reach this host at, not the bind address.
    #[error("address {0} is unspecified; give the address others reach this host at")]
    AddressUnspecified(SocketAddr),
    /// Port 0 is not reachable; configure the port that is bound.
    #[error("address {0} has port 0")]
    PortZero(SocketAddr),
}

/// Why bytes from a peer were not decoded. Nothing changes in the node; the datagram is
/// dropped and counted under [`DropReason::Malformed`](super::DropReason::Malformed) (or the
/// broadcast reasons). `BufferFull` is the one encode error: foca's datagram limit is
/// smaller than one header, which [`ClusterConfig::validate`](super::ClusterConfig::validate)
/// rules out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes end inside a field.
    #[error("truncated: {needed} more bytes needed")]
    Truncated {
        /// Bytes the field still needed.
        needed: usize,
    },
    /// An address family tag other than 4 or 6.
    #[error("address family tag {0} is neither 4 nor 6")]
    AddressFamilyUnknown(u8),
    /// A SWIM message tag this version does not define.
    #[error("message tag {0} is unknown")]
    MessageUnknown(u8),
    /// A member state tag other than alive, suspect, down.
    #[error("member state tag {0} is unknown")]
    StateUnknown(u8),
    /// A card that decodes but is not valid.
    #[error("invalid card: {0}")]
    Card(#[from] CardError),
    /// A map announcement whose version byte this build does not know.
    #[error("map announcement version {0} is unknown")]
    AnnouncementVersionUnknown(u8),
    /// A fixed-length body (map announcement, who-are-you) of another length.
    #[error("body is {len} bytes, expected {expected}")]
    LengthWrong {
        /// Its length.
        len: usize,
        /// The only valid length.
        expected: usize,
    },
    /// Bytes were left after the last field of a fixed-shape body.
    #[error("{0} bytes after the last field")]
    TrailingBytes(usize),
    /// Encoding only: the output buffer has no room for the item; nothing was written.
    #[error("no room in the datagram")]
    BufferFull,
}

/// Why a cluster node could not be built or joined. Nothing is started on error; fix the
/// input and retry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// This host's own card is invalid; fix the relay's cluster settings.
    #[error("this host's card: {0}")]
    Card(#[from] CardError),
    /// A timing or size in the configuration is zero, out of range, or contradicts another;
    /// the text names the field and the allowed range.
    #[error("cluster config: {field}: {reason}")]
    Config {
        /// The field's name as in [`ClusterConfig`](super::ClusterConfig).
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// More seed addresses than [`JOIN_SEEDS_MAX`](super::JOIN_SEEDS_MAX); list a few hosts
    /// per rack, not every host.
    #[error("{count} seeds given, the limit is {max}")]
    SeedsTooMany {
        /// Seeds given.
        count: usize,
        /// The limit.
        max: usize,
    },
}
