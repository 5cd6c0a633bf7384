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

/// A bounded, direct-mapped cache of owners for one shard, tied to one membership.
///
/// Each key has exactly one slot (its id modulo the slot count; ids are already hashes), so a
/// lookup is one probe, nothing allocates after construction and the memory is fixed. A
/// colliding key simply replaces the older one. The cache remembers the `(epoch, checksum)` it
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
    /// `1..=OWNER_CACHE_SLOTS_MAX`.
    pub fn new(slots: usize) -> Self {
        let slots = slots.clamp(1, OWNER_CACHE_SLOTS_MAX).next_power_of_two();
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
        let slot = self.slot_of(key);
        if let Some((cached_key, owner)) = self.slots[slot]
            && cached_key == key
        {
            return Some(owner);
        }
        let owner = membership.owner(key)?;
        self.slots[slot] = Some((key, owner));
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

    fn slot_of(&self, key: ConvId) -> usize {
        // The slot count is a power of two; ConvIds are uniform hashes, so the low bits do.
        (key.0 as usize) & (self.slots.len() - 1)
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
    fn cache_holds_at_most_its_capacity() {
        let map = cluster(2, 2, 1);
        let mut cache = OwnerCache::new(100);
        assert_eq!(cache.capacity(), 128);
        for key in keys(0, 10_000) {
            assert_eq!(cache.owner(&map, key), map.owner(key));
        }
        assert!(cache.len() <= 128);
        assert_eq!(OwnerCache::new(0).capacity(), 1);
        assert_eq!(
            OwnerCache::new(usize::MAX).capacity(),
            OWNER_CACHE_SLOTS_MAX
        );
        assert_eq!(OwnerCache::default().capacity(), OWNER_CACHE_SLOTS_DEFAULT);
        cache.clear();
        assert!(cache.is_empty());
    }
}
