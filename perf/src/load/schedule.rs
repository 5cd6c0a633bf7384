//! The open-loop schedule: when every frame of a talker is due, and how late sends are
//! accounted for.
//!
//! Every frame has an intended send time fixed before the run starts, whatever happens to
//! earlier frames. A talker that wakes late still sends every frame (late, never skipped), and
//! the listener measures latency from the intended time, so a stall of the relay or of the
//! generator shows up as latency instead of as fewer samples (no coordinated omission). A send
//! that is late by more than the bound is attributed to:
//! - the **relay** when the previous write to the socket only completed after this frame's
//!   bound had already passed (the socket held the talker back: TCP back-pressure), or
//! - the **generator** otherwise (its thread did not get to the frame in time). Generator
//!   lateness above `--overload-max-percent` of the frames makes the run fail (exit code 3):
//!   its numbers would describe the generator, not the relay.

/// One talker's frame times, µs on the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Intended send time of the talker's first frame.
    pub first_us: u64,
    /// Time between two frames.
    pub interval_us: u64,
    /// No frame is intended at or after this time.
    pub end_us: u64,
}

impl Schedule {
    /// The schedule of talker `index` of `talkers`: the run starts at `start_us`, talkers join
    /// evenly over `ramp_us`, and their phases are spread evenly over one interval so the
    /// frames of all talkers do not leave in one burst per interval.
    pub fn for_talker(
        index: u64,
        talkers: u64,
        start_us: u64,
        ramp_us: u64,
        interval_us: u64,
        duration_us: u64,
    ) -> Schedule {
        let talkers = talkers.max(1);
        let joins_us = ramp_us * index / talkers;
        let phase_us = interval_us * index / talkers;
        Schedule {
            first_us: start_us + joins_us + phase_us,
            interval_us,
            end_us: start_us + duration_us,
        }
    }

    /// Intended send time of frame `k` (0-based) of the talker, or `None` once it would be at
    /// or after the end of the run.
    pub fn intended_us(&self, k: u64) -> Option<u64> {
        let at = self
            .first_us
            .checked_add(k.checked_mul(self.interval_us)?)?;
        (at < self.end_us).then_some(at)
    }
}

/// How a frame's actual send time relates to its intended one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendTiming {
    /// Within the lateness bound.
    OnTime,
    /// Later than the bound because the previous write to the socket was held back.
    HeldBackBySocket,
    /// Later than the bound although the socket took the previous write in time: the
    /// generator is overloaded.
    GeneratorLate,
}

/// Classifies a send at `now_us` of a frame intended at `intended_us`, given when the
/// talker's previous write completed (`previous_write_done_us`, 0 for none) and the lateness
/// bound.
pub fn classify_send(
    intended_us: u64,
    now_us: u64,
    previous_write_done_us: u64,
    late_bound_us: u64,
) -> SendTiming {
    let deadline_us = intended_us.saturating_add(late_bound_us);
    if now_us <= deadline_us {
        SendTiming::OnTime
    } else if previous_write_done_us > deadline_us {
        SendTiming::HeldBackBySocket
    } else {
        SendTiming::GeneratorLate
    }
}

/// Whether the generator fell behind on more than `overload_max_percent` % of the frames it
/// sent (the run's numbers are then the generator's, and it exits with code 3).
pub fn generator_overloaded(late_frames: u64, frames_sent: u64, overload_max_percent: f64) -> bool {
    if late_frames == 0 {
        return false;
    }
    late_frames as f64 > frames_sent as f64 * overload_max_percent / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talkers_are_spread_over_the_interval_and_the_ramp() {
        let first = Schedule::for_talker(0, 4, 1_000, 0, 20_000, 1_000_000);
        let third = Schedule::for_talker(2, 4, 1_000, 0, 20_000, 1_000_000);
        assert_eq!(first.first_us, 1_000);
        assert_eq!(third.first_us, 11_000);
        let ramped = Schedule::for_talker(2, 4, 1_000, 400_000, 20_000, 1_000_000);
        assert_eq!(ramped.first_us, 1_000 + 200_000 + 10_000);
    }

    #[test]
    fn intended_times_are_fixed_in_advance_and_end_with_the_run() {
        let schedule = Schedule::for_talker(0, 1, 0, 0, 20_000, 100_000);
        let times: Vec<u64> = (0..).map_while(|k| schedule.intended_us(k)).collect();
        assert_eq!(times, vec![0, 20_000, 40_000, 60_000, 80_000]);
        let late_start = Schedule::for_talker(0, 1, 0, 0, 20_000, 0);
        assert_eq!(late_start.intended_us(0), None);
    }

    /// Coordinated omission: a talker stalled for 100 ms still owes every frame of the stall,
    /// each one's lateness counted from its own intended time.
    #[test]
    fn a_stall_leaves_every_frame_owed_and_late() {
        let schedule = Schedule::for_talker(0, 1, 0, 0, 20_000, 1_000_000);
        let resume_us = 100_000 + 500;
        let owed: Vec<u64> = (0..)
            .map_while(|k| schedule.intended_us(k))
            .take_while(|intended| *intended <= resume_us)
            .collect();
        assert_eq!(owed.len(), 6);
        let lateness: Vec<u64> = owed.iter().map(|t| resume_us - t).collect();
        assert_eq!(lateness, vec![100_500, 80_500, 60_500, 40_500, 20_500, 500]);
    }

    #[test]
    fn lateness_is_attributed() {
        let bound = 5_000;
        assert_eq!(
            classify_send(100_000, 104_999, 0, bound),
            SendTiming::OnTime
        );
        assert_eq!(
            classify_send(100_000, 105_000, 0, bound),
            SendTiming::OnTime
        );
        assert_eq!(
            classify_send(100_000, 105_001, 99_000, bound),
            SendTiming::GeneratorLate
        );
        assert_eq!(
            classify_send(100_000, 200_000, 150_000, bound),
            SendTiming::HeldBackBySocket
        );
    }

    #[test]
    fn overload_verdict_uses_the_percentage() {
        assert!(!generator_overloaded(0, 0, 0.1));
        assert!(!generator_overloaded(1, 1_000, 0.1));
        assert!(generator_overloaded(2, 1_000, 0.1));
        assert!(generator_overloaded(1, 0, 0.1));
    }
}
