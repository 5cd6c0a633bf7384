//! A shard's cache of key -> owner, so the hot path does not score every shard per frame.

use crate::ids::{ConvId, ShardId};

use super::Membership;

/// Slots of an [`OwnerCache`] when the caller has no better number: 4096 conversations per
/// shard is far more than one core holds live, and costs 64 KiB.
pub const OWNER_CACHE_SLOTS_DEFAULT: usize = 4096;

/// Most slots an [`OwnerCache`] will allocate (16 MiB); larger requests are clamped.
pub const OWNER_CACHE_SLOTS_MAX: usize = 1 << 20;

/// A key whose owner changed when the cache was re-scored for a new membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerChange {
    /// The conversation.
    pub key: ConvId,
    /// The owner under the old membership.
    pub before: ShardId,
    /// The owner under the new membership, `None` when the new membership is empty.
    pub after: Option<ShardId>,
}

/// Ways per set of an [`OwnerCache`].
pub const OWNER_CACHE_WAYS: usize = 4;

/// A bounded, 4-way set-associative cache of owners for one shard, tied to one membership.
///
/// A key may live in one of the four slots of its set (the set is its id modulo the set count;
/// ids are already hashes), so a lookup is at most four compares in one or two cache lines,
/// nothing allocates after construction and the memory is fixed. Four ways keep a working set
/// of up to a quarter of the capacity nearly free of conflict misses (a direct-mapped table
/// thrashes on every pair of colliding live keys). When a set is full, the newcomer replaces
/// the way picked by its own top bits. The cache remembers the `(epoch, checksum)` it
/// was filled under: [`OwnerCache::owner`] with any other membership empties it first, and
/// [`OwnerCache::rescore`] re-scores the cached keys instead and reports the ones that moved.
#[derive(Debug, Clone)]
pub struct OwnerCache {
    slots: Box<[Option<(ConvId, ShardId)>]>,
    /// `(epoch, checksum)` of the membership the slots were computed from.
    filled_under: Option<(u64, u64)>,
}

impl OwnerCache {
    /// A cache with `slots` slots, rounded up to a power of two and clamped to
    /// `OWNER_CACHE_WAYS..=OWNER_CACHE_SLOTS_MAX`.
    pub fn new(slots: usize) -> Self {
        let slots = slots
            .clamp(OWNER_CACHE_WAYS, OWNER_CACHE_SLOTS_MAX)
            .next_power_of_two();
        Self {
            slots: vec![None; slots].into_boxed_slice(),
            filled_under: None,
        }
    }

    /// The number of slots: the most keys the cache holds at once.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many keys are cached now.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|slot| slot.is_some()).count()
    }

    /// Whether no key is cached.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// The owner of `key` under `membership`, from the cache when it was computed under the
    /// same membership, else scored and remembered. `None` only when the membership is empty.
    pub fn owner(&mut self, membership: &Membership, key: ConvId) -> Option<ShardId> {
        let identity = (membership.epoch(), membership.checksum());
        if self.filled_under != Some(identity) {
            self.clear();
            self.filled_under = Some(identity);
        }
        let set = self.set_of(key);
        let ways = &mut self.slots[set..set + OWNER_CACHE_WAYS];
        if let Some(&Some((_, owner))) = ways
            .iter()
            .find(|way| matches!(way, Some((k, _)) if *k == key))
        {
            return Some(owner);
        }
        let owner = membership.owner(key)?;
        let victim = ways
            .iter()
            .position(Option::is_none)
            .unwrap_or((key.0 >> 62) as usize % OWNER_CACHE_WAYS);
        ways[victim] = Some((key, owner));
        Some(owner)
    }

    /// Re-scores every cached key under `membership` (a new epoch) and appends to `moved`
    /// the keys whose owner changed. The shard calls this on an epoch change to learn which
    /// of its live conversations to hand off; at most [`OwnerCache::capacity`] entries are
    /// appended.
    pub fn rescore(&mut self, membership: &Membership, moved: &mut Vec<OwnerChange>) {
        for slot in self.slots.iter_mut() {
            let Some((key, before)) = *slot else {
                continue;
            };
            let after = membership.owner(key);
            if after != Some(before) {
                moved.push(OwnerChange { key, before, after });
            }
            *slot = after.map(|owner| (key, owner));
        }
        self.filled_under = Some((membership.epoch(), membership.checksum()));
    }

    /// Forgets every cached owner.
    pub fn clear(&mut self) {
        self.slots.fill(None);
        self.filled_under = None;
    }

    /// Index of the first slot of `key`'s set.
    fn set_of(&self, key: ConvId) -> usize {
        // The slot count is a power of two of at least OWNER_CACHE_WAYS; ConvIds are uniform
        // hashes, so their low bits pick the set.
        let sets = self.slots.len() / OWNER_CACHE_WAYS;
        ((key.0 as usize) & (sets - 1)) * OWNER_CACHE_WAYS
    }
}

impl Default for OwnerCache {
    fn default() -> Self {
        Self::new(OWNER_CACHE_SLOTS_DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::HostId;
    use crate::map::HostSpec;

    /// `hosts` hosts of `cores` cores, all of weight `weight`.
    fn cluster(hosts: u16, cores: u16, weight: u32) -> Membership {
        Membership::from_hosts(
            1,
            (0..hosts).map(|host| HostSpec {
                host: HostId(host),
                cores: (0..cores).collect(),
                weight_per_core: weight,
            }),
        )
        .expect("a valid membership")
    }

    /// Conversation ids of `count` names starting at `first`.
    fn keys(first: usize, count: usize) -> impl Iterator<Item = ConvId> {
        (first..first + count).map(|i| ConvId::of_name(&format!("conversation-{i}")))
    }

    #[test]
    fn cache_serves_the_membership_it_was_filled_under() {
        let before = cluster(4, 4, 100);
        let mut cache = OwnerCache::new(1024);
        for key in keys(0, 500) {
            assert_eq!(cache.owner(&before, key), before.owner(key));
            assert_eq!(cache.owner(&before, key), before.owner(key));
        }
        assert!(!cache.is_empty());
        // A new epoch with different shards: the cache must not answer from the old map.
        let lost = ShardId::new(2, 2);
        let after = Membership::from_shards(
            2,
            before.shards().iter().copied().filter(|s| s.shard != lost),
        )
        .unwrap();
        for key in keys(0, 500) {
            assert_eq!(cache.owner(&after, key), after.owner(key));
        }
    }

    #[test]
    fn cache_rescore_reports_exactly_the_keys_that_moved() {
        let before = cluster(4, 4, 100);
        let lost = ShardId::new(1, 1);
        let after = Membership::from_shards(
            2,
            before.shards().iter().copied().filter(|s| s.shard != lost),
        )
        .unwrap();
        // Keys spread over a large cache so none collide and all 300 stay cached.
        let mut cache = OwnerCache::new(1 << 16);
        let live: Vec<ConvId> = (0..300u64).map(ConvId).collect();
        for &key in &live {
            cache.owner(&before, key);
        }
        assert_eq!(cache.len(), live.len());
        let mut moved = Vec::new();
        cache.rescore(&after, &mut moved);
        let expected: Vec<OwnerChange> = live
            .iter()
            .filter(|&&key| before.owner(key) == Some(lost))
            .map(|&key| OwnerChange {
                key,
                before: lost,
                after: after.owner(key),
            })
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(moved, expected);
        for &key in &live {
            assert_eq!(cache.owner(&after, key), after.owner(key));
        }
        assert_eq!(
            cache.len(),
            live.len(),
            "rescore kept the cache under the new epoch"
        );
    }

    #[test]
    fn a_working_set_of_a_quarter_of_the_capacity_stays_cached() {
        let map = cluster(2, 2, 1);
        let mut cache = OwnerCache::new(4096);
        let live: Vec<ConvId> = keys(0, 1024).collect();
        for &key in &live {
            cache.owner(&map, key);
        }
        // Four ways at one key per set on average: only the fifth key of the rare set that
        // draws five or more is evicted (about 4 of 1024 expected).
        let cached = cache.len();
        assert!(cached >= 1010, "only {cached} of 1024 live keys cached");
    }

    #[test]
    fn cache_holds_at_most_its_capacity() {
        let map = cluster(2, 2, 1);
        let mut cache = OwnerCache::new(100);
        assert_eq!(cache.capacity(), 128);
        for key in keys(0, 10_000) {
            assert_eq!(cache.owner(&map, key), map.owner(key));
        }
        assert!(cache.len() <= 128);
        assert_eq!(OwnerCache::new(0).capacity(), OWNER_CACHE_WAYS);
        assert_eq!(
            OwnerCache::new(usize::MAX).capacity(),
            OWNER_CACHE_SLOTS_MAX
        );
        assert_eq!(OwnerCache::default().capacity(), OWNER_CACHE_SLOTS_DEFAULT);
        cache.clear();
        assert!(cache.is_empty());
    }
}
