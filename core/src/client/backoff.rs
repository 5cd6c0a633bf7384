//! Exponential backoff with full jitter, and the seeded generator its jitter comes from.
//!
//! After the n-th failure in a row a host is retried after a delay drawn uniformly from
//! `[min, min(max, min·2ⁿ)]`: the ceiling doubles with each failure up to `max`, and the
//! whole range below it is used ("full jitter"), so clients that lost the same host at the
//! same moment spread their retries instead of arriving together.
//!
//! ```text
//!  failures  1          2            3              …  7 and more
//!  delay     [50,100]   [50,200]     [50,400]  ms   …  [50,5000] ms   (the defaults)
//! ```

/// Shortest delay before retrying a host that failed (the default of [`Backoff::new`]
/// callers use, 50 ms): long enough not to spin on a refused connection, short enough that
/// a relay restarting on the same port is found quickly.
pub const BACKOFF_MIN_US: u64 = 50_000;

/// Longest delay before retrying a host that keeps failing (5 s): a dead host is still
/// looked at now and then, in case it comes back.
pub const BACKOFF_MAX_US: u64 = 5_000_000;

/// A small seeded generator (SplitMix64) for jitter. Not for secrets: it only spreads retry
/// times. The caller seeds it, so tests repeat exactly and clients differ by their seed.
#[derive(Debug, Clone)]
pub struct JitterRng {
    state: u64,
}

impl JitterRng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `[low, high]` (both included; `high` below `low` gives `low`).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        let Some(span) = high.checked_sub(low) else {
            return low;
        };
        let Some(count) = span.checked_add(1) else {
            // The whole u64 range.
            return self.next_u64();
        };
        // Multiply-shift maps 64 random bits onto [0, count) without a division.
        let offset = ((u128::from(self.next_u64()) * u128::from(count)) >> 64) as u64;
        low + offset
    }
}

/// One host's backoff: how many times in a row it failed, and the delays that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min_us: u64,
    max_us: u64,
    failures: u32,
}

impl Default for Backoff {
    /// [`BACKOFF_MIN_US`] .. [`BACKOFF_MAX_US`].
    fn default() -> Self {
        Self::new(BACKOFF_MIN_US, BACKOFF_MAX_US)
    }
}

impl Backoff {
    /// A backoff whose delays lie in `[min_us, max_us]`. A `min_us` of 0 is raised to 1 µs
    /// (a zero delay would retry a failing host in a loop) and a `max_us` below `min_us` is
    /// raised to `min_us`.
    pub fn new(min_us: u64, max_us: u64) -> Self {
        let min_us = min_us.max(1);
        Self {
            min_us,
            max_us: max_us.max(min_us),
            failures: 0,
        }
    }

    /// The shortest delay.
    pub fn min_us(&self) -> u64 {
        self.min_us
    }

    /// The longest delay.
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// Failures in a row since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The longest delay after the current number of failures: `min(max, min·2ⁿ)` (`min`
    /// before any failure).
    pub fn ceiling_us(&self) -> u64 {
        let factor = 1u64.checked_shl(self.failures).unwrap_or(u64::MAX);
        self.min_us.saturating_mul(factor).min(self.max_us)
    }

    /// Counts one more failure and draws the delay before the next try, uniformly in
    /// `[min, ceiling]` (see [`Backoff::ceiling_us`]).
    pub fn fail(&mut self, rng: &mut JitterRng) -> u64 {
        self.failures = self.failures.saturating_add(1);
        rng.between(self.min_us, self.ceiling_us())
    }

    /// The host answered: the next failure starts from the shortest delays again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_ceiling_doubles_from_min_to_max() {
        let mut backoff = Backoff::new(50_000, 5_000_000);
        let mut rng = JitterRng::new(7);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            backoff.fail(&mut rng);
            ceilings.push(backoff.ceiling_us());
        }
        assert_eq!(
            ceilings,
            [
                100_000, 200_000, 400_000, 800_000, 1_600_000, 3_200_000, 5_000_000, 5_000_000,
                5_000_000
            ]
        );
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.ceiling_us(), 50_000);
    }

    #[test]
    fn many_failures_stay_at_max_without_overflow() {
        let mut backoff = Backoff::new(u64::MAX / 2, u64::MAX);
        let mut rng = JitterRng::new(1);
        for _ in 0..200 {
            let delay = backoff.fail(&mut rng);
            assert!(delay >= u64::MAX / 2);
        }
        assert_eq!(backoff.failures(), 200);
        assert_eq!(backoff.ceiling_us(), u64::MAX);
    }

    #[test]
    fn a_bad_range_is_raised_not_inverted() {
        let backoff = Backoff::new(0, 0);
        assert_eq!((backoff.min_us(), backoff.max_us()), (1, 1));
        let backoff = Backoff::new(10, 3);
        assert_eq!((backoff.min_us(), backoff.max_us()), (10, 10));
        let mut backoff = backoff;
        assert_eq!(backoff.fail(&mut JitterRng::new(3)), 10);
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let draw = |seed| {
            let mut backoff = Backoff::default();
            let mut rng = JitterRng::new(seed);
            (0..10).map(|_| backoff.fail(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn the_jitter_uses_the_whole_range() {
        // Full jitter: with a wide ceiling the delays spread over it, low and high halves.
        let mut rng = JitterRng::new(5);
        let (low, high) = (50_000, 5_000_000);
        let draws: Vec<u64> = (0..1000).map(|_| rng.between(low, high)).collect();
        let middle = (low + high) / 2;
        let below = draws.iter().filter(|&&d| d < middle).count();
        assert!(
            (400..=600).contains(&below),
            "{below} of 1000 below the middle"
        );
        assert!(draws.iter().all(|&d| (low..=high).contains(&d)));
    }

    #[test]
    fn between_covers_the_extremes() {
        let mut rng = JitterRng::new(9);
        assert_eq!(rng.between(4, 4), 4);
        assert_eq!(rng.between(9, 2), 9);
        // The whole u64 range is the generator's raw output.
        let mut twin = rng.clone();
        assert_eq!(rng.between(0, u64::MAX), twin.next_u64());
    }

    proptest! {
        #[test]
        fn delays_lie_within_min_and_max(
            min_us in 1u64..10_000_000,
            extra_us in 0u64..100_000_000,
            seed in any::<u64>(),
            failures in 1usize..100,
        ) {
            let max_us = min_us + extra_us;
            let mut backoff = Backoff::new(min_us, max_us);
            let mut rng = JitterRng::new(seed);
            for _ in 0..failures {
                let delay = backoff.fail(&mut rng);
                prop_assert!(delay >= min_us && delay <= max_us);
                prop_assert!(delay <= backoff.ceiling_us());
            }
        }
    }
}
