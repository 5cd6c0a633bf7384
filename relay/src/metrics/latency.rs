//! A latency distribution recorded on a shard thread.
//!
//! Two views of the same samples, both updated by one [`LatencyHistogram::record_us`]:
//! - exact counts per fixed Prometheus bucket and an exact sum, so the rendered histogram obeys
//!   Prometheus's `le` ("less than or equal") rule to the microsecond. An hdr histogram cannot
//!   give that: at two significant figures its bins straddle most bucket bounds (500 µs shares a
//!   bin with 501 µs).
//! - an hdr histogram, which merges across shards without losing resolution and answers
//!   quantiles (p99.9) within 1%, for the host-wide summaries.
//!
//! Recording is a few compares and three additions: no allocation, no lock.

use hdrhistogram::Histogram;

/// Smallest latency the hdr histogram tells apart from its neighbours, in µs.
pub const LATENCY_US_MIN: u64 = 1;
/// Largest latency recorded, in µs (60 s). Anything slower is an outage, not a latency; it is
/// recorded as this value, so sums and counts stay meaningful and nothing panics.
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant figures the hdr histogram keeps: quantiles are within 1% of the true value.
pub const LATENCY_SIGNIFICANT_FIGURES: u8 = 2;
/// Upper bounds (`le`) of the rendered Prometheus buckets, in µs; a `+Inf` bucket follows.
/// From 50 µs (a relay hop on one core) to 2.5 s (a stalled disk).
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];
/// Buckets including `+Inf`.
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

/// Latencies observed since the shard started (cumulative, never reset).
#[derive(Debug)]
pub struct LatencyHistogram {
    hdr: Histogram<u64>,
    /// Samples per bucket (not cumulative); the last is `+Inf`.
    bucket_counts: [u64; LATENCY_BUCKETS],
    sum_us: u64,
}

impl LatencyHistogram {
    /// An empty histogram. Allocates the hdr counts (about 20 KiB) once; recording never does.
    pub fn new() -> Self {
        // The bounds are constants inside hdrhistogram's accepted range (low >= 1,
        // high >= 2 * low, sigfig <= 5); `a_latency_histogram_builds` checks them.
        let hdr =
            Histogram::new_with_bounds(LATENCY_US_MIN, LATENCY_US_MAX, LATENCY_SIGNIFICANT_FIGURES)
                .expect("constant hdr bounds are valid");
        Self {
            hdr,
            bucket_counts: [0; LATENCY_BUCKETS],
            sum_us: 0,
        }
    }

    /// Records one latency; values above [`LATENCY_US_MAX`] count as that maximum.
    pub fn record_us(&mut self, us: u64) {
        let us = us.min(LATENCY_US_MAX);
        self.hdr.saturating_record(us);
        let bucket = LATENCY_BUCKET_BOUNDS_US.partition_point(|&bound| bound < us);
        self.bucket_counts[bucket] = self.bucket_counts[bucket].saturating_add(1);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.bucket_counts
            .iter()
            .fold(0u64, |sum, &n| sum.saturating_add(n))
    }

    /// Sum of the recorded latencies (each capped at [`LATENCY_US_MAX`]), in µs.
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// Samples at or below each bound of [`LATENCY_BUCKET_BOUNDS_US`], then the total
    /// (`+Inf`): the Prometheus bucket values.
    pub fn cumulative_bucket_counts(&self) -> [u64; LATENCY_BUCKETS] {
        let mut cumulative = self.bucket_counts;
        let mut running = 0u64;
        for count in &mut cumulative {
            running = running.saturating_add(*count);
            *count = running;
        }
        cumulative
    }

    /// The latency at `quantile` (0.0..=1.0) within 1%, in µs; `None` if nothing was recorded.
    pub fn value_at_quantile_us(&self, quantile: f64) -> Option<u64> {
        if self.hdr.is_empty() {
            return None;
        }
        Some(self.hdr.value_at_quantile(quantile.clamp(0.0, 1.0)))
    }

    /// Adds `other`'s samples to these (merging shards).
    pub fn merge(&mut self, other: &Self) {
        // Both histograms come from `new` with the same bounds and every recorded value is
        // capped at the shared maximum, so hdr's only failure (a value out of range) cannot occur.
        self.hdr
            .add(&other.hdr)
            .expect("histograms with equal bounds merge");
        for (mine, theirs) in self.bucket_counts.iter_mut().zip(other.bucket_counts) {
            *mine = mine.saturating_add(theirs);
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for LatencyHistogram {
    fn clone(&self) -> Self {
        Self {
            hdr: self.hdr.clone(),
            bucket_counts: self.bucket_counts,
            sum_us: self.sum_us,
        }
    }

    /// Copies into the existing counts array (a reset and a memcpy), without allocating: this is
    /// what a shard's periodic publish does.
    fn clone_from(&mut self, source: &Self) {
        if self.hdr.set_to(&source.hdr).is_err() {
            // Unreachable with equal bounds (see `merge`); a fresh copy is still correct.
            self.hdr = source.hdr.clone();
        }
        self.bucket_counts = source.bucket_counts;
        self.sum_us = source.sum_us;
    }
}
