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
