//! What one generator thread counts and times, merged over threads at the end.

use hdrhistogram::Histogram;

use super::tracker::{Arrival, MessageTracker};

/// Largest latency recorded, in µs (60 s); larger samples are recorded as this. A stalled
/// relay is still a latency, but not one worth a bigger histogram.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// Significant figures the latency histograms keep (0.1% resolution).
const LATENCY_SIGNIFICANT_FIGURES: u8 = 3;

/// A latency histogram in µs over 1 µs ..= [`LATENCY_US_MAX`].
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_FIGURES)
        .expect("constant histogram bounds are valid")
}

/// Records `value_us` into `histogram`, clamped into its range so recording never fails.
pub fn record_latency(histogram: &mut Histogram<u64>, value_us: u64) {
    let value_us = value_us.clamp(1, LATENCY_US_MAX);
    // In range by the clamp above, so `record` cannot fail.
    let _ = histogram.record(value_us);
}

/// One thread's counts and histograms for one run.
#[derive(Debug, Clone)]
pub struct LoadStats {
    /// Talk frames handed to the socket.
    pub frames_sent: u64,
    /// Frames the schedule owed that were never sent (the socket held the talker back past
    /// the drain deadline, or the connection broke).
    pub frames_not_sent: u64,
    /// Frames sent later than the bound because the generator fell behind.
    pub generator_late_frames: u64,
    /// Frames sent later than the bound because the socket held the talker back.
    pub socket_held_back_frames: u64,
    /// Frame events received by listeners, duplicates included.
    pub frames_received: u64,
    /// Distinct (listener, message, seq) frames received.
    pub unique_deliveries: u64,
    /// Frames a listener heard again.
    pub duplicated: u64,
    /// Frames that came after a higher seq of their message.
    pub reordered: u64,
    /// Frames whose seq is beyond `--message-frames`, whose payload is not ours, or that
    /// name a message stream or conversation the listener does not expect.
    pub foreign_frames: u64,
    /// Frames delivered as replay (0x48) rather than live: the listener had fallen behind.
    pub replayed_frames: u64,
    /// Messages a listener saw end truncated.
    pub messages_truncated: u64,
    /// Connections that failed to connect, to say hello, or closed before the run was over.
    pub connection_errors: u64,
    /// `error` events received.
    pub error_events: u64,
    /// Frames whose durability the relay confirmed (`stored` or `talk_ended`).
    pub stored_acked_frames: u64,
    /// End-to-end latency from the intended send time, µs.
    pub latency_us: Histogram<u64>,
    /// End-to-end latency from the actual send time, µs.
    pub latency_from_send_us: Histogram<u64>,
    /// From a frame's intended send time to the `stored` ack that covered it, µs.
    pub stored_ack_us: Histogram<u64>,
    /// How late the generator handed frames to the socket, µs (0 when released early).
    pub send_lag_us: Histogram<u64>,
}

impl Default for LoadStats {
    fn default() -> Self {
        LoadStats {
            frames_sent: 0,
            frames_not_sent: 0,
            generator_late_frames: 0,
            socket_held_back_frames: 0,
            frames_received: 0,
            unique_deliveries: 0,
            duplicated: 0,
            reordered: 0,
            foreign_frames: 0,
            replayed_frames: 0,
            messages_truncated: 0,
            connection_errors: 0,
            error_events: 0,
            stored_acked_frames: 0,
            latency_us: latency_histogram(),
            latency_from_send_us: latency_histogram(),
            stored_ack_us: latency_histogram(),
            send_lag_us: latency_histogram(),
        }
    }
}

impl LoadStats {
    /// Counts one frame's arrival as `tracker` classifies it; returns whether it is a new
    /// delivery (heard for the first time), whose latency the caller then records.
    pub fn count_arrival(&mut self, tracker: &mut MessageTracker, seq: u32) -> bool {
        match tracker.record(seq) {
            Arrival::InOrder => {}
            Arrival::Reordered => self.reordered += 1,
            Arrival::Duplicate => {
                self.duplicated += 1;
                return false;
            }
            Arrival::OutOfRange => {
                self.foreign_frames += 1;
                return false;
            }
        }
        self.unique_deliveries += 1;
        true
    }

    /// Adds another thread's numbers to these.
    pub fn merge(&mut self, other: &LoadStats) {
        self.frames_sent += other.frames_sent;
        self.frames_not_sent += other.frames_not_sent;
        self.generator_late_frames += other.generator_late_frames;
        self.socket_held_back_frames += other.socket_held_back_frames;
        self.frames_received += other.frames_received;
        self.unique_deliveries += other.unique_deliveries;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.foreign_frames += other.foreign_frames;
        self.replayed_frames += other.replayed_frames;
        self.messages_truncated += other.messages_truncated;
        self.connection_errors += other.connection_errors;
        self.error_events += other.error_events;
        self.stored_acked_frames += other.stored_acked_frames;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.latency_from_send_us.add(&other.latency_from_send_us);
        let _ = self.stored_ack_us.add(&other.stored_ack_us);
        let _ = self.send_lag_us.add(&other.send_lag_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_outside_the_range_are_clamped() {
        let mut histogram = latency_histogram();
        record_latency(&mut histogram, 0);
        record_latency(&mut histogram, u64::MAX);
        assert_eq!(histogram.len(), 2);
        assert_eq!(histogram.min(), 1);
        assert!(histogram.max() >= LATENCY_US_MAX);
    }

    #[test]
    fn merging_adds_counts_and_samples() {
        let mut a = LoadStats {
            frames_sent: 3,
            duplicated: 1,
            ..LoadStats::default()
        };
        record_latency(&mut a.latency_us, 100);
        let mut b = LoadStats {
            frames_sent: 4,
            ..LoadStats::default()
        };
        record_latency(&mut b.latency_us, 300);
        a.merge(&b);
        assert_eq!(a.frames_sent, 7);
        assert_eq!(a.duplicated, 1);
        assert_eq!(a.latency_us.len(), 2);
        assert_eq!(a.latency_us.max(), 300);
    }

    #[test]
    fn arrivals_are_counted_by_kind_and_only_new_ones_are_deliveries() {
        let mut stats = LoadStats::default();
        let mut tracker = MessageTracker::new(8);
        let new: Vec<bool> = [0, 2, 1, 2, 9]
            .into_iter()
            .map(|seq| stats.count_arrival(&mut tracker, seq))
            .collect();
        assert_eq!(new, vec![true, true, true, false, false]);
        assert_eq!(stats.unique_deliveries, 3);
        assert_eq!(stats.reordered, 1);
        assert_eq!(stats.duplicated, 1);
        assert_eq!(stats.foreign_frames, 1);
    }
}
