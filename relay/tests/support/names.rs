//! Conversation names chosen by the owner the ownership map gives them.
//!
//! The relay's shards are the cores of host 0 (`--cores 0,1`: shards (0, 0) and (0, 1)) with
//! equal weights, and a conversation's owner is `Membership::owner` over them, exactly as the
//! relay computes it. With equal weights the owner does not depend on the weight value or the
//! epoch, so this map agrees with the relay's whatever it picks for those.

use hark_core::map::{HostSpec, Membership};
use hark_core::{ConvName, HostId};

/// The host id of a single relay.
pub const HOST: HostId = HostId(0);

/// Names tried before giving up on finding one owned by a given core: with `n` equal shards a
/// name misses with probability `1 - 1/n`, so 10 000 tries fail only for a map that never
/// picks that core.
pub const NAME_TRIES_MAX: u32 = 10_000;

/// A conversation name; panics on an invalid one (test names are literals).
pub fn conv(name: &str) -> ConvName {
    ConvName::new(name).unwrap_or_else(|error| panic!("{name:?} is not a valid name: {error}"))
}

/// The membership of a relay running shards on `cores` of host 0.
pub fn membership(cores: &[u16]) -> Membership {
    Membership::from_hosts(
        1,
        [HostSpec {
            host: HOST,
            cores: cores.to_vec(),
            weight_per_core: 100,
        }],
    )
    .unwrap_or_else(|error| panic!("cores {cores:?} make no membership: {error}"))
}

/// The core whose shard owns `conversation` on a relay running on `cores`.
pub fn owner_core(cores: &[u16], conversation: &ConvName) -> u16 {
    let owner = membership(cores)
        .owner(conversation.id())
        .expect("a membership built from at least one core has an owner for every key");
    owner.core
}

/// The first of `prefix-0`, `prefix-1`, … owned by `core` on a relay running on `cores`.
pub fn conv_on_core(prefix: &str, core: u16, cores: &[u16]) -> ConvName {
    let map = membership(cores);
    for n in 0..NAME_TRIES_MAX {
        let name = conv(&format!("{prefix}-{n}"));
        if map.owner(name.id()).map(|owner| owner.core) == Some(core) {
            return name;
        }
    }
    panic!("no name {prefix}-N below {NAME_TRIES_MAX} is owned by core {core} of {cores:?}");
}

/// Two names, the first owned by shard 0 and the second by shard 1 of a `--cores 0,1` relay.
pub fn names_on_distinct_shards(prefix: &str) -> (ConvName, ConvName) {
    let cores = [0, 1];
    (
        conv_on_core(&format!("{prefix}-a"), 0, &cores),
        conv_on_core(&format!("{prefix}-b"), 1, &cores),
    )
}
