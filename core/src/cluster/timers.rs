//! foca's timer events, kept by absolute due time.
//!
//! foca asks for "this event after that long"; the node turns that into a due time and hands
//! events back in due order from `handle_timeout`. Each event has a slot and a different
//! event replaces the pending one in its slot: foca keeps at most one live event per slot (a
//! replaced one carries a stale token, a stale incarnation or a replaced identity, and foca
//! would ignore it). An equal event leaves the pending one, which is due earlier: foca
//! re-schedules the same suspect-to-down each time a probe of a suspect fails, and the first
//! deadline is the one that counts. So the queue holds at most [`TIMER_SLOTS_MAX`] events: five periodic
//! kinds plus two per host id.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use foca::{Identity, Timer};

use super::card::HostCard;
use crate::ids::HostId;

/// Most events the queue can hold: the periodic kinds plus a suspect-to-down and a
/// remove-down per possible [`HostId`].
pub const TIMER_SLOTS_MAX: usize = 5 + 2 * (u16::MAX as usize + 1);

/// Which pending event a new one replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Probe,
    IndirectProbe,
    SuspectToDown(HostId),
    RemoveDown(HostId),
    Announce,
    AnnounceDown,
    Gossip,
}

fn slot_of(timer: &Timer<HostCard>) -> Slot {
    match timer {
        Timer::ProbeRandomMember(_) => Slot::Probe,
        Timer::SendIndirectProbe { .. } => Slot::IndirectProbe,
        Timer::ChangeSuspectToDown { member_id, .. } => Slot::SuspectToDown(member_id.addr()),
        Timer::RemoveDown(card) => Slot::RemoveDown(card.addr()),
        Timer::PeriodicAnnounce(_) => Slot::Announce,
        Timer::PeriodicAnnounceDown(_) => Slot::AnnounceDown,
        Timer::PeriodicGossip(_) => Slot::Gossip,
    }
}

/// Pending foca timer events by `(due_us, arrival)`.
#[derive(Debug, Default)]
pub struct TimerQueue {
    by_due: BTreeMap<(u64, u64), (Slot, Timer<HostCard>)>,
    by_slot: HashMap<Slot, (u64, u64)>,
    arrivals: u64,
}

impl TimerQueue {
    /// Schedules `timer` at `now_us + after`, replacing the pending event of its slot.
    pub fn schedule(&mut self, now_us: u64, after: Duration, timer: Timer<HostCard>) {
        let after_us = u64::try_from(after.as_micros()).unwrap_or(u64::MAX);
        let key = (now_us.saturating_add(after_us), self.arrivals);
        self.arrivals += 1;
        let slot = slot_of(&timer);
        if let Some(pending) = self.by_slot.get(&slot).copied() {
            if self.by_due.get(&pending).is_some_and(|(_, t)| *t == timer) {
                // The same event again (foca re-suspects a member each time a probe of it
                // fails): the earlier one is the deadline, keep it.
                return;
            }
            self.by_due.remove(&pending);
        }
        self.by_slot.insert(slot, key);
        self.by_due.insert(key, (slot, timer));
    }

    /// The earliest due time.
    pub fn next_due_us(&self) -> Option<u64> {
        self.by_due.keys().next().map(|(due, _)| *due)
    }

    /// Takes the earliest event due at or before `now_us`.
    pub fn pop_due(&mut self, now_us: u64) -> Option<Timer<HostCard>> {
        let entry = self.by_due.first_entry()?;
        if entry.key().0 > now_us {
            return None;
        }
        let (slot, timer) = entry.remove();
        self.by_slot.remove(&slot);
        Some(timer)
    }

    /// Pending events.
    pub fn len(&self) -> usize {
        self.by_due.len()
    }

    /// Drops every pending event.
    pub fn clear(&mut self) {
        self.by_due.clear();
        self.by_slot.clear();
    }
}
