//! The ownership map: which shard owns a conversation, and who takes over when it goes.
//!
//! Every host must name the same owner for the same conversation without talking to anyone,
//! so the map is a pure function of the [`Membership`] (the shards and their weights) and the
//! key. It is weighted rendezvous hashing (HRW): each shard scores the key and the highest
//! score owns it. That gives exact weights, minimal movement (removing a shard moves only the
//! keys it owned, adding one moves keys only to it) and, by sorting the scores, an ordered
//! list of fallbacks per key: the handoff targets while the owner drains or dies.
//!
//! The hash is fixed and documented (never randomly keyed) so another language can match it;
//! `docs/ownership-map.md` has the byte layouts and reference vectors, which a test checks.
//!
//! ```text
//!   seed(s)  = XXH3-64(host u16 LE ‖ core u16 LE)                  (per shard, precomputed)
//!   h(k, s)  = XXH3-64-with-seed(ConvId u64 LE, seed(s)) >> 12      (52 bits)
//!   u        = (h + 0.5) / 2^52                                      (exact, 0 < u < 1)
//!   score    = weight(s) / -ln(u)                                    (highest wins)
//!   ties     : higher h, then smaller ShardId
//! ```
//!
//! When every weight is equal the score is a monotone function of `h`, so [`Membership::owner`]
//! skips the logarithm and takes the highest `h` (ties to the smaller ShardId): the same
//! answer as the weighted formula with its tie-breaks.

mod cache;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;

use thiserror::Error;

use crate::ids::{ConvId, HostId, ShardId};

pub use cache::{
    OWNER_CACHE_SLOTS_DEFAULT, OWNER_CACHE_SLOTS_MAX, OWNER_CACHE_WAYS, OwnerCache, OwnerChange,
};

/// Most shards one membership may hold. HRW costs one hash per shard per uncached lookup, so
/// the bound keeps a lookup in the microseconds; 4096 is e.g. 64 hosts of 64 cores.
pub const MEMBERSHIP_SHARDS_MAX: usize = 4096;

/// Domain tag that opens the checksum's byte layout; a new layout gets a new tag.
const CHECKSUM_TAG: &[u8; 16] = b"hark-membership1";

/// Bits of the shard hash that feed the score: 52, so `h + 0.5` is exact in an f64.
const SCORE_HASH_BITS: u32 = 52;

/// Why a membership could not be built. Nothing is built on error; fix the input and retry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MapError {
    /// The same shard (host, core) is listed twice; list each core of a host once.
    #[error("shard {0} is listed more than once")]
    ShardDuplicated(ShardId),
    /// The same host is listed twice; merge its cores into one entry.
    #[error("host {0} is listed more than once")]
    HostDuplicated(HostId),
    /// A shard has weight zero, which would make it own nothing while still being counted;
    /// leave the shard out instead.
    #[error("shard {0} has weight zero; leave it out of the membership instead")]
    WeightZero(ShardId),
    /// More than [`MEMBERSHIP_SHARDS_MAX`] host entries (a host without cores still counts);
    /// list only the hosts that run shards.
    #[error("membership lists {count} hosts, the limit is {MEMBERSHIP_SHARDS_MAX}")]
    HostsTooMany {
        /// How many host entries were given.
        count: usize,
    },
    /// More than [`MEMBERSHIP_SHARDS_MAX`] shards; use fewer cores per host or fewer hosts.
    #[error("membership has {count} shards, the limit is {MEMBERSHIP_SHARDS_MAX}")]
    ShardsTooMany {
        /// How many shards were given.
        count: usize,
    },
}

/// One host as an operator describes it: its cores and the weight each of them carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// The host.
    pub host: HostId,
    /// The cores that run a shard on this host.
    pub cores: Vec<u16>,
    /// The weight of each of those cores (relative capacity; e.g. 100 for a normal core).
    pub weight_per_core: u32,
}

/// A shard and its weight, as held in the canonical (sorted) membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardWeight {
    /// The shard.
    pub shard: ShardId,
    /// Its weight: its share of keys is `weight / total weight`.
    pub weight: u32,
}

/// The shards of the cluster with their weights, at one epoch.
///
/// Canonical whatever order it was built in (shards sorted by [`ShardId`]), so two hosts
/// holding the same shards compute the same owners and the same [`Membership::checksum`].
/// Hosts exchange `(epoch, checksum)` to refuse a forward computed from another membership.
///
/// ```
/// use hark_core::map::{HostSpec, Membership};
/// use hark_core::{ConvName, HostId};
///
/// let hosts = [1, 2].map(|host| HostSpec {
///     host: HostId(host),
///     cores: vec![0, 1, 2, 3],
///     weight_per_core: 100,
/// });
/// let map = Membership::from_hosts(1, hosts).unwrap();
/// let key = ConvName::new("general").unwrap().id();
/// let owner = map.owner(key).unwrap();
/// let handoff = map.fallbacks(key, 2);
/// assert_eq!(handoff[0], owner);
/// assert_eq!(map.share_of(owner), Some(0.125));
/// ```
#[derive(Debug, Clone)]
pub struct Membership {
    epoch: u64,
    /// Sorted by shard id, no duplicates, weights non-zero.
    shards: Box<[ShardWeight]>,
    /// `flips[i]` is the precomputed XXH3 state of `shards[i]`'s seed; see [`ShardHash`].
    flips: Box<[ShardHash]>,
    /// `weights[i]` is `shards[i].weight` as an f64 (exact: u32 fits the mantissa).
    weights: Box<[f64]>,
    weight_total: u64,
    /// All weights are equal: the owner is the highest hash, no logarithm needed.
    weights_uniform: bool,
    checksum: u64,
}

impl Membership {
    /// A membership of whole hosts: every listed core of a host is a shard with the host's
    /// per-core weight.
    pub fn from_hosts(
        epoch: u64,
        hosts: impl IntoIterator<Item = HostSpec>,
    ) -> Result<Self, MapError> {
        let mut shards = Vec::new();
        let mut host_ids = Vec::new();
        for spec in hosts {
            host_ids.push(spec.host);
            if host_ids.len() > MEMBERSHIP_SHARDS_MAX {
                return Err(MapError::HostsTooMany {
                    count: host_ids.len(),
                });
            }
            for core in spec.cores {
                shards.push(ShardWeight {
                    shard: ShardId {
                        host: spec.host,
                        core,
                    },
                    weight: spec.weight_per_core,
                });
                if shards.len() > MEMBERSHIP_SHARDS_MAX {
                    return Err(MapError::ShardsTooMany {
                        count: shards.len(),
                    });
                }
            }
        }
        host_ids.sort_unstable();
        if let Some(pair) = host_ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(MapError::HostDuplicated(pair[0]));
        }
        Self::from_shards(epoch, shards)
    }

    /// A membership from individual shards and weights, in any order.
    pub fn from_shards(
        epoch: u64,
        shards: impl IntoIterator<Item = ShardWeight>,
    ) -> Result<Self, MapError> {
        let mut list = Vec::new();
        for shard in shards {
            if shard.weight == 0 {
                return Err(MapError::WeightZero(shard.shard));
            }
            list.push(shard);
            if list.len() > MEMBERSHIP_SHARDS_MAX {
                return Err(MapError::ShardsTooMany { count: list.len() });
            }
        }
        list.sort_unstable();
        if let Some(pair) = list.windows(2).find(|pair| pair[0].shard == pair[1].shard) {
            return Err(MapError::ShardDuplicated(pair[0].shard));
        }
        let flips = list
            .iter()
            .map(|s| ShardHash::new(shard_seed(s.shard)))
            .collect();
        let weights = list.iter().map(|s| f64::from(s.weight)).collect();
        let weight_total = list.iter().map(|s| u64::from(s.weight)).sum();
        let weights_uniform = list.windows(2).all(|pair| pair[0].weight == pair[1].weight);
        let checksum = checksum_of(&list);
        Ok(Self {
            epoch,
            shards: list.into_boxed_slice(),
            flips,
            weights,
            weight_total,
            weights_uniform,
            checksum,
        })
    }

    /// The membership's epoch: raised by whoever changes the membership, so a host can tell
    /// an older map from a newer one.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A fingerprint of the shards and weights (not the epoch): equal checksums mean equal
    /// ownership. Layout in `docs/ownership-map.md`.
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// The shards sorted by [`ShardId`], with their weights.
    pub fn shards(&self) -> &[ShardWeight] {
        &self.shards
    }

    /// Whether the membership has no shard (then nothing has an owner).
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Sum of all weights.
    pub fn weight_total(&self) -> u64 {
        self.weight_total
    }

    /// The weight of `shard`, or `None` when it is not a member.
    pub fn weight_of(&self, shard: ShardId) -> Option<u32> {
        self.position(shard).map(|i| self.shards[i].weight)
    }

    /// The fraction of keys `shard` is expected to own (its weight over the total), for
    /// `hark ring`; `None` when it is not a member.
    pub fn share_of(&self, shard: ShardId) -> Option<f64> {
        // Precision: u64 -> f64 rounding is irrelevant for a displayed share.
        self.weight_of(shard)
            .map(|w| f64::from(w) / self.weight_total as f64)
    }

    /// Whether `shard` is a member.
    pub fn contains(&self, shard: ShardId) -> bool {
        self.position(shard).is_some()
    }

    /// The owner of `key`: the shard with the highest score. `None` only when empty.
    /// Allocation-free: one hash per shard, and when weights differ a logarithm for the few
    /// shards that could still win.
    pub fn owner(&self, key: ConvId) -> Option<ShardId> {
        let best = if self.weights_uniform {
            self.owner_index_uniform(key)
        } else {
            self.owner_index_weighted(key)
        };
        best.map(|i| self.shards[i].shard)
    }

    /// The first `n` shards in `key`'s preference order: the owner, then who takes over if
    /// the owner leaves, and so on (fewer when the membership is smaller than `n`).
    pub fn fallbacks(&self, key: ConvId, n: usize) -> Vec<ShardId> {
        let mut out = Vec::new();
        self.fallbacks_into(key, n, &mut out);
        out
    }

    /// [`Membership::fallbacks`] into a caller's buffer (cleared first), to reuse its
    /// allocation.
    pub fn fallbacks_into(&self, key: ConvId, n: usize, out: &mut Vec<ShardId>) {
        out.clear();
        let n = n.min(self.shards.len());
        if n == 0 {
            return;
        }
        let mut ranked: Vec<Rank> = (0..self.shards.len()).map(|i| self.rank(key, i)).collect();
        // Best first: `Rank`'s order is "better is greater".
        if n < ranked.len() {
            ranked.select_nth_unstable_by(n - 1, |a, b| b.cmp(a));
            ranked.truncate(n);
        }
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        out.extend(ranked.iter().map(|r| self.shards[r.index].shard));
    }

    fn position(&self, shard: ShardId) -> Option<usize> {
        self.shards.binary_search_by(|s| s.shard.cmp(&shard)).ok()
    }

    /// Highest hash wins; on equal hashes the earlier (smaller) ShardId stays.
    fn owner_index_uniform(&self, key: ConvId) -> Option<usize> {
        let key = KeyInput::new(key);
        let (first, rest) = self.flips.split_first()?;
        let mut best = (first.hash(key), 0);
        for (i, flip) in rest.iter().enumerate() {
            let h = flip.hash(key);
            if h > best.0 {
                best = (h, i + 1);
            }
        }
        Some(best.1)
    }

    /// Highest score wins; ties to the higher hash, then the smaller ShardId.
    ///
    /// Skips the logarithm of a shard that cannot win: with `x = 1 - u`,
    /// `-ln(u) = x + x²/2 + x³/3 + … >= x·(1 + x/2)`, so `weight / (x·(1 + x/2))` bounds the
    /// score from above. A shard is skipped only when that bound, widened by far more than
    /// the rounding of either computation, is still below the best score, so the result is the
    /// same as scoring every shard.
    fn owner_index_weighted(&self, key: ConvId) -> Option<usize> {
        const ROUNDING_MARGIN: f64 = 1.0 + 1e-9;
        let key = KeyInput::new(key);
        let mut best: Option<(f64, u64, usize)> = None;
        for (i, (flip, &weight)) in self.flips.iter().zip(self.weights.iter()).enumerate() {
            let h = flip.hash(key);
            if let Some((best_score, _, _)) = best {
                let x = 1.0 - unit_of(h);
                let score_max = weight / (x * (1.0 + 0.5 * x));
                if score_max * ROUNDING_MARGIN < best_score {
                    continue;
                }
            }
            let score = score_of(h, weight);
            let better = match best {
                None => true,
                Some((best_score, best_h, _)) => match score.total_cmp(&best_score) {
                    Ordering::Greater => true,
                    Ordering::Less => false,
                    Ordering::Equal => h > best_h,
                },
            };
            if better {
                best = Some((score, h, i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// The weighted formula for every shard, without the pruning of
    /// [`Membership::owner_index_weighted`]: the reference the fast paths are tested against.
    #[cfg(test)]
    fn owner_index_by_formula(&self, key: ConvId) -> Option<usize> {
        (0..self.shards.len())
            .map(|i| {
                let hash = score_hash(key, shard_seed(self.shards[i].shard));
                let score = score_of(hash, self.weights[i]);
                Rank {
                    score,
                    hash,
                    index: i,
                }
            })
            .max()
            .map(|rank| rank.index)
    }

    fn rank(&self, key: ConvId, index: usize) -> Rank {
        let hash = self.flips[index].hash(KeyInput::new(key));
        let score = if self.weights_uniform {
            // Monotone in `hash`, so ordering by hash alone gives the same ranking.
            0.0
        } else {
            score_of(hash, self.weights[index])
        };
        Rank { score, hash, index }
    }
}

/// A shard's standing for one key; greater is better.
#[derive(Debug, Clone, Copy)]
struct Rank {
    score: f64,
    hash: u64,
    /// Index into the sorted shards: smaller index = smaller ShardId = better on a tie.
    index: usize,
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(self.hash.cmp(&other.hash))
            .then(other.index.cmp(&self.index))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Rank {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Rank {}

/// The per-shard hash seed: XXH3-64 (seed 0) of `host u16 LE ‖ core u16 LE`.
pub fn shard_seed(shard: ShardId) -> u64 {
    let mut bytes = [0u8; 4];
    bytes[..2].copy_from_slice(&shard.host.0.to_le_bytes());
    bytes[2..].copy_from_slice(&shard.core.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// The 52-bit hash a shard gives a key: XXH3-64 of the key's 8 little-endian bytes with the
/// shard's seed, top 52 bits.
#[inline]
pub fn score_hash(key: ConvId, seed: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&key.0.to_le_bytes(), seed) >> (64 - SCORE_HASH_BITS)
}

/// `weight / -ln(u)` with `u = (hash + 0.5) / 2^52`. Both steps of `u` are exact in an f64
/// and `0 < u < 1`, so `-ln(u) > 0` and the score is finite and positive.
#[inline]
pub fn score_of(hash: u64, weight: f64) -> f64 {
    weight / -unit_of(hash).ln()
}

/// `u = (hash + 0.5) / 2^52`, exact: hash < 2^52, so hash + 0.5 needs 53 bits of mantissa.
#[inline]
fn unit_of(hash: u64) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << SCORE_HASH_BITS) as f64;
    (hash as f64 + 0.5) * SCALE
}

/// A key prepared once per lookup for [`ShardHash::hash`]: its 8 little-endian bytes read the
/// way XXH3 reads an 8-byte input (the two 32-bit halves swapped).
#[derive(Debug, Clone, Copy)]
struct KeyInput(u64);

impl KeyInput {
    #[inline]
    fn new(key: ConvId) -> Self {
        Self(key.0.rotate_left(32))
    }
}

/// XXH3-64-with-seed of an 8-byte input, specialised for one seed: the seed-dependent part
/// of XXH3's 4-to-8-byte path is computed once per shard, leaving an xor and XXH3's final
/// avalanche per lookup. Bit-identical to `xxh3_64_with_seed` (tested).
#[derive(Debug, Clone, Copy)]
struct ShardHash {
    flip: u64,
}

impl ShardHash {
    /// Bytes 8..16 and 16..24 of XXH3's default secret, little-endian.
    const SECRET_8: u64 = 0x1cad_21f7_2c81_017c;
    const SECRET_16: u64 = 0xdb97_9083_e96d_d4de;

    fn new(seed: u64) -> Self {
        let seed = seed ^ (u64::from((seed as u32).swap_bytes()) << 32);
        Self {
            flip: (Self::SECRET_8 ^ Self::SECRET_16).wrapping_sub(seed),
        }
    }

    /// [`score_hash`] of the key under this shard's seed.
    #[inline]
    fn hash(self, key: KeyInput) -> u64 {
        const PRIME: u64 = 0x9fb2_1c65_1e98_df25;
        const INPUT_LEN: u64 = 8;
        let mut h = key.0 ^ self.flip;
        h ^= h.rotate_left(49) ^ h.rotate_left(24);
        h = h.wrapping_mul(PRIME);
        h ^= (h >> 35).wrapping_add(INPUT_LEN);
        h = h.wrapping_mul(PRIME);
        h ^= h >> 28;
        h >> (64 - SCORE_HASH_BITS)
    }
}

/// XXH3-64 (seed 0) of `tag ‖ count u32 LE ‖ (host u16 LE ‖ core u16 LE ‖ weight u32 LE)*`
/// over the shards in ShardId order.
fn checksum_of(shards: &[ShardWeight]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(CHECKSUM_TAG);
    // Bounded by MEMBERSHIP_SHARDS_MAX, which fits a u32.
    hasher.update(&(shards.len() as u32).to_le_bytes());
    for s in shards {
        hasher.update(&s.shard.host.0.to_le_bytes());
        hasher.update(&s.shard.core.to_le_bytes());
        hasher.update(&s.weight.to_le_bytes());
    }
    hasher.digest()
}
