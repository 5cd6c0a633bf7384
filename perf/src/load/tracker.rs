//! Loss, duplicate and reorder detection for one message as one subscription hears it.
//!
//! The relay promises every frame of a message exactly once and in `seq` order per
//! subscription (docs/protocol.md 5.3). A [`MessageTracker`] keeps a bitmap of the seqs heard,
//! so each arrival is classified exactly: a new highest seq (possibly after a gap), a seq below
//! the highest that was missing until now (reordered), or one heard before (duplicated). Loss
//! is what is missing at the end: frames sent × listeners − unique frames heard.

/// How one frame's arrival relates to what the subscription heard of its message before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Above every seq heard so far: in order (frames skipped in between may still come).
    InOrder,
    /// Below the highest seq heard and not heard before: out of order.
    Reordered,
    /// Heard before.
    Duplicate,
    /// At or above the tracker's bound (`--message-frames`): the relay or the payload is wrong.
    OutOfRange,
}

/// The seqs of one message heard by one subscription.
#[derive(Debug, Clone)]
pub struct MessageTracker {
    /// Bit `seq` is set once seq was heard; `frames_max` bits.
    seen: Vec<u64>,
    frames_max: u32,
    /// One above the highest seq heard (0 before the first frame).
    next_seq: u32,
    unique_frames: u32,
}

impl MessageTracker {
    /// A tracker for a message of at most `frames_max` frames (the talker rolls to a new
    /// message after `--message-frames`, so that is the bound).
    pub fn new(frames_max: u32) -> MessageTracker {
        MessageTracker {
            seen: vec![0; (frames_max as usize).div_ceil(64)],
            frames_max,
            next_seq: 0,
            unique_frames: 0,
        }
    }

    /// Classifies the arrival of `seq` and remembers it.
    pub fn record(&mut self, seq: u32) -> Arrival {
        if seq >= self.frames_max {
            return Arrival::OutOfRange;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen[word] & bit != 0 {
            return Arrival::Duplicate;
        }
        self.seen[word] |= bit;
        self.unique_frames += 1;
        if seq >= self.next_seq {
            self.next_seq = seq + 1;
            Arrival::InOrder
        } else {
            Arrival::Reordered
        }
    }

    /// Distinct seqs heard.
    #[cfg(test)]
    pub fn unique_frames(&self) -> u32 {
        self.unique_frames
    }
}

/// Frames lost over the whole run: every listener should hear every frame sent, so what is
/// expected is `frames_sent × listeners_per_conversation`; whatever was not heard at least
/// once is lost. (Frames heard twice do not make up for lost ones: the count is of distinct
/// frames.)
pub fn frames_lost(
    frames_sent: u64,
    listeners_per_conversation: u64,
    unique_deliveries: u64,
) -> u64 {
    (frames_sent * listeners_per_conversation).saturating_sub(unique_deliveries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_frames_are_in_order() {
        let mut tracker = MessageTracker::new(10);
        for seq in 0..10 {
            assert_eq!(tracker.record(seq), Arrival::InOrder);
        }
        assert_eq!(tracker.unique_frames(), 10);
    }

    #[test]
    fn a_gap_then_the_late_frame_is_a_reorder() {
        let mut tracker = MessageTracker::new(10);
        assert_eq!(tracker.record(0), Arrival::InOrder);
        assert_eq!(tracker.record(2), Arrival::InOrder);
        assert_eq!(tracker.record(1), Arrival::Reordered);
        assert_eq!(tracker.record(1), Arrival::Duplicate);
        assert_eq!(tracker.record(2), Arrival::Duplicate);
        assert_eq!(tracker.unique_frames(), 3);
    }

    #[test]
    fn the_bound_is_enforced() {
        let mut tracker = MessageTracker::new(64);
        assert_eq!(tracker.record(63), Arrival::InOrder);
        assert_eq!(tracker.record(64), Arrival::OutOfRange);
        assert_eq!(tracker.record(u32::MAX), Arrival::OutOfRange);
        assert_eq!(tracker.unique_frames(), 1);
    }

    #[test]
    fn loss_counts_distinct_frames_against_every_listener() {
        assert_eq!(frames_lost(100, 4, 400), 0);
        assert_eq!(frames_lost(100, 4, 397), 3);
        assert_eq!(frames_lost(0, 4, 0), 0);
    }

    proptest! {
        /// Whatever the order and repetition, the classification adds up: unique = distinct
        /// seqs, duplicates = arrivals − distinct, and a permutation of 0..n has exactly one
        /// in-order arrival per new maximum.
        #[test]
        fn classification_adds_up(seqs in proptest::collection::vec(0u32..200, 0..400)) {
            let mut tracker = MessageTracker::new(200);
            let mut distinct = std::collections::BTreeSet::new();
            let (mut in_order, mut reordered, mut duplicates) = (0u32, 0u32, 0u32);
            let mut highest: Option<u32> = None;
            for &seq in &seqs {
                let arrival = tracker.record(seq);
                let fresh = distinct.insert(seq);
                match arrival {
                    Arrival::InOrder => {
                        prop_assert!(fresh && highest.is_none_or(|h| seq > h));
                        in_order += 1;
                    }
                    Arrival::Reordered => {
                        prop_assert!(fresh && highest.is_some_and(|h| seq < h));
                        reordered += 1;
                    }
                    Arrival::Duplicate => {
                        prop_assert!(!fresh);
                        duplicates += 1;
                    }
                    Arrival::OutOfRange => prop_assert!(false, "seq {} is in range", seq),
                }
                highest = highest.max(Some(seq));
            }
            prop_assert_eq!(tracker.unique_frames() as usize, distinct.len());
            prop_assert_eq!((in_order + reordered) as usize, distinct.len());
            prop_assert_eq!(duplicates as usize, seqs.len() - distinct.len());
        }
    }
}
