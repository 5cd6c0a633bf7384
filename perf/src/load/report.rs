//! The run's report: the JSON document (`--json`), the human summary, and the per-second
//! progress line.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::stats::LoadStats;
use super::tracker::frames_lost;

/// Percentiles of one latency distribution, µs (all 0 when `count` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Percentiles {
    /// Reads the percentiles of `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles {
                count: 0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
            };
        }
        Percentiles {
            count: histogram.len(),
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// Quantiles at which the percentile curves of the HTML plot are sampled.
pub const CURVE_QUANTILES: [f64; 12] = [
    0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0,
];

/// One point of a latency percentile curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    /// The quantile, 0..=1.
    pub quantile: f64,
    /// The latency at it, µs.
    pub us: u64,
}

/// The percentile curve of `histogram` at [`CURVE_QUANTILES`] (empty without samples).
pub fn curve(histogram: &Histogram<u64>) -> Vec<CurvePoint> {
    if histogram.is_empty() {
        return Vec::new();
    }
    CURVE_QUANTILES
        .iter()
        .map(|&quantile| CurvePoint {
            quantile,
            us: histogram.value_at_quantile(quantile),
        })
        .collect()
}

/// The workload a report describes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parameters {
    /// `hark` or `redis`.
    pub target: String,
    /// The relay's (or Redis's) address.
    pub address: String,
    /// Conversations, one talker each.
    pub conversations: u64,
    /// Listeners per conversation.
    pub listeners: u64,
    /// Payload bytes per frame.
    pub frame_bytes: u64,
    /// Time between a talker's frames.
    pub interval_ms: u64,
    /// Length of the sending window.
    pub duration_s: f64,
    /// Time over which talkers join.
    pub ramp_s: f64,
    /// Frames per message before a talker starts the next one.
    pub message_frames: u64,
    /// Conversations one listener connection subscribes to.
    pub subs_per_connection: u64,
    /// Generator threads.
    pub threads: u64,
}

/// Everything `--json` writes. The keys are a contract with scripts comparing runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What was run.
    pub parameters: Parameters,
    /// Unix time the run started, s.
    pub started_unix_s: u64,
    /// Distinct frames delivered per second of the sending window.
    pub deliveries_per_sec: f64,
    /// Talk frames sent.
    pub frames_sent: u64,
    /// Frames the open-loop schedule owed that never left the generator (held back by the
    /// relay past the drain deadline, or a broken connection). Not part of `lost`.
    pub frames_not_sent: u64,
    /// Distinct frames delivered to listeners (one per listener and frame).
    pub frames_delivered: u64,
    /// Deliveries expected: frames sent × listeners per conversation.
    pub deliveries_expected: u64,
    /// Expected deliveries that never came.
    pub lost: u64,
    /// Frames a listener heard more than once.
    pub duplicated: u64,
    /// Frames heard after a higher seq of their message.
    pub reordered: u64,
    /// Frames that were not the run's (foreign payload, unknown stream, seq out of range).
    pub foreign_frames: u64,
    /// Frames delivered as replay instead of live (slow-listener fallback).
    pub replayed_frames: u64,
    /// Messages listeners saw end truncated.
    pub messages_truncated: u64,
    /// Frames the generator sent later than the bound because it fell behind.
    pub generator_late_frames: u64,
    /// Frames sent later than the bound because the socket held the talker back.
    pub socket_held_back_frames: u64,
    /// Whether generator lateness went over `--overload-max-percent` (exit code 3).
    pub generator_overloaded: bool,
    /// Connections that failed or broke.
    pub connection_errors: u64,
    /// `error` events received.
    pub error_events: u64,
    /// End-to-end latency from each frame's intended send time (open loop).
    pub latency_us: Percentiles,
    /// End-to-end latency from the actual send (the relay and network only).
    pub latency_from_send_us: Percentiles,
    /// From the intended send time to the durability ack covering the frame.
    pub stored_ack_us: Percentiles,
    /// How late the generator handed frames to the socket (its own timer and CPU).
    pub send_lag_us: Percentiles,
    /// Relay process CPU time (user + system) over the run, µs, when its pid was given.
    pub relay_cpu_us: Option<u64>,
    /// Relay CPU per delivered frame, µs, when its pid was given.
    pub relay_cpu_us_per_delivery: Option<f64>,
    /// Percentile curves for plotting: end-to-end from intended, from sent, stored ack.
    pub curves: Curves,
}

/// Percentile curves of the run's latencies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curves {
    pub latency_us: Vec<CurvePoint>,
    pub latency_from_send_us: Vec<CurvePoint>,
    pub stored_ack_us: Vec<CurvePoint>,
}

impl Report {
    /// Builds the report of a finished run.
    pub fn new(
        parameters: Parameters,
        started_unix_s: u64,
        stats: &LoadStats,
        overload_max_percent: f64,
        relay_cpu_us: Option<u64>,
    ) -> Report {
        let deliveries_expected = stats.frames_sent * parameters.listeners;
        let lost = frames_lost(
            stats.frames_sent,
            parameters.listeners,
            stats.unique_deliveries,
        );
        let deliveries_per_sec = if parameters.duration_s > 0.0 {
            stats.unique_deliveries as f64 / parameters.duration_s
        } else {
            0.0
        };
        let relay_cpu_us_per_delivery = relay_cpu_us
            .filter(|_| stats.unique_deliveries > 0)
            .map(|cpu| cpu as f64 / stats.unique_deliveries as f64);
        Report {
            parameters,
            started_unix_s,
            deliveries_per_sec,
            frames_sent: stats.frames_sent,
            frames_not_sent: stats.frames_not_sent,
            frames_delivered: stats.unique_deliveries,
            deliveries_expected,
            lost,
            duplicated: stats.duplicated,
            reordered: stats.reordered,
            foreign_frames: stats.foreign_frames,
            replayed_frames: stats.replayed_frames,
            messages_truncated: stats.messages_truncated,
            generator_late_frames: stats.generator_late_frames,
            socket_held_back_frames: stats.socket_held_back_frames,
            generator_overloaded: super::schedule::generator_overloaded(
                stats.generator_late_frames,
                stats.frames_sent,
                overload_max_percent,
            ),
            connection_errors: stats.connection_errors,
            error_events: stats.error_events,
            latency_us: Percentiles::of(&stats.latency_us),
            latency_from_send_us: Percentiles::of(&stats.latency_from_send_us),
            stored_ack_us: Percentiles::of(&stats.stored_ack_us),
            send_lag_us: Percentiles::of(&stats.send_lag_us),
            relay_cpu_us,
            relay_cpu_us_per_delivery,
            curves: Curves {
                latency_us: curve(&stats.latency_us),
                latency_from_send_us: curve(&stats.latency_from_send_us),
                stored_ack_us: curve(&stats.stored_ack_us),
            },
        }
    }

    /// The JSON document (pretty-printed).
    pub fn to_json(&self) -> String {
        // Every field is a number, a string, a bool or an option of those: serialising
        // cannot fail.
        serde_json::to_string_pretty(self).expect("the report serialises")
    }

    /// Whether nothing was lost, duplicated, reordered or broken.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.frames_not_sent == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.connection_errors == 0
            && self.error_events == 0
    }

    /// The human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let p = &self.parameters;
        let mut out = String::new();
        out.push_str(&format!(
            "{} {}: {} conversations × {} listeners, {} B every {} ms, {:.1} s (ramp {:.1} s), {} thread(s)\n",
            p.target,
            p.address,
            p.conversations,
            p.listeners,
            p.frame_bytes,
            p.interval_ms,
            p.duration_s,
            p.ramp_s,
            p.threads
        ));
        out.push_str(&format!(
            "  deliveries/s {:.0}  sent {} (not sent {})  delivered {}/{}  lost {}  duplicated {}  reordered {}  replayed {}  foreign {}\n",
            self.deliveries_per_sec,
            self.frames_sent,
            self.frames_not_sent,
            self.frames_delivered,
            self.deliveries_expected,
            self.lost,
            self.duplicated,
            self.reordered,
            self.replayed_frames,
            self.foreign_frames
        ));
        out.push_str(&format!(
            "  connection errors {}  error events {}  truncated messages {}  generator late {}  socket held back {}\n",
            self.connection_errors,
            self.error_events,
            self.messages_truncated,
            self.generator_late_frames,
            self.socket_held_back_frames
        ));
        out.push_str(
            "  µs                       count      p50      p90      p99    p99.9      max\n",
        );
        for (name, q) in [
            ("latency (intended)", &self.latency_us),
            ("latency (sent)", &self.latency_from_send_us),
            ("stored ack", &self.stored_ack_us),
            ("generator send lag", &self.send_lag_us),
        ] {
            out.push_str(&format!(
                "  {name:<20} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                q.count, q.p50, q.p90, q.p99, q.p999, q.max
            ));
        }
        if let (Some(cpu), Some(per)) = (self.relay_cpu_us, self.relay_cpu_us_per_delivery) {
            out.push_str(&format!(
                "  relay CPU {:.2} s, {per:.2} µs per delivery\n",
                cpu as f64 / 1e6
            ));
        }
        out
    }
}

/// The header of the per-second progress table.
pub const PROGRESS_HEADER: &str =
    "     s    sent/s  delivered/s   p50 µs   p99 µs   max µs   late  conn-err";

/// One line of the progress table: second `second`, counts over the last second, latency of
/// the frames delivered in it.
pub fn progress_line(
    second: u64,
    sent: u64,
    delivered: u64,
    latency: &Histogram<u64>,
    late: u64,
    connection_errors: u64,
) -> String {
    let q = Percentiles::of(latency);
    format!(
        "{second:>6} {sent:>9} {delivered:>12} {:>8} {:>8} {:>8} {late:>6} {connection_errors:>9}",
        q.p50, q.p99, q.max
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::record_latency;

    fn parameters() -> Parameters {
        Parameters {
            target: "hark".into(),
            address: "127.0.0.1:7400".into(),
            conversations: 2,
            listeners: 3,
            frame_bytes: 100,
            interval_ms: 20,
            duration_s: 2.0,
            ramp_s: 0.0,
            message_frames: 500,
            subs_per_connection: 1,
            threads: 1,
        }
    }

    #[test]
    fn json_has_the_contract_keys() {
        let mut stats = LoadStats {
            frames_sent: 10,
            unique_deliveries: 28,
            duplicated: 1,
            ..LoadStats::default()
        };
        for us in [100, 200, 300] {
            record_latency(&mut stats.latency_us, us);
            record_latency(&mut stats.stored_ack_us, us * 10);
        }
        let report = Report::new(parameters(), 0, &stats, 0.1, Some(2_800));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
        for key in [
            "deliveries_per_sec",
            "frames_sent",
            "frames_delivered",
            "lost",
            "duplicated",
            "relay_cpu_us_per_delivery",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        for histogram in ["latency_us", "stored_ack_us"] {
            for key in ["p50", "p90", "p99", "p999", "max"] {
                assert!(
                    json[histogram].get(key).is_some(),
                    "missing {histogram}.{key}"
                );
            }
        }
        assert_eq!(json["lost"], 2);
        assert_eq!(json["frames_delivered"], 28);
        assert_eq!(json["deliveries_per_sec"], 14.0);
        assert_eq!(json["relay_cpu_us_per_delivery"], 100.0);
        assert_eq!(json["latency_us"]["max"], 300);
        assert!(!report.clean());
    }

    #[test]
    fn an_empty_run_reports_zeros_not_garbage() {
        let report = Report::new(parameters(), 0, &LoadStats::default(), 0.1, None);
        assert_eq!(report.latency_us.count, 0);
        assert_eq!(report.latency_us.p99, 0);
        assert_eq!(report.relay_cpu_us_per_delivery, None);
        assert!(report.clean());
        assert!(report.summary().contains("lost 0"));
    }

    #[test]
    fn generator_lateness_over_the_bound_is_flagged() {
        let stats = LoadStats {
            frames_sent: 1_000,
            generator_late_frames: 2,
            ..LoadStats::default()
        };
        assert!(Report::new(parameters(), 0, &stats, 0.1, None).generator_overloaded);
        assert!(!Report::new(parameters(), 0, &stats, 1.0, None).generator_overloaded);
    }
}
