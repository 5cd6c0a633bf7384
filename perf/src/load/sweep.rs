//! `hark-perf sweep`: raises the load step by step (more conversations, same listeners per
//! conversation) and reports the knee: the highest deliveries/s whose p99 latency stayed under
//! `--p99-ms` with nothing lost.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::cli::run_target;
use super::report::Report;
use super::run::{CONVERSATIONS_MAX, RunArgs, RunError};

/// Flags of `hark-perf sweep`: a run's flags (`--conversations` is the first step) and the
/// sweep's own.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Latency bound of a good step: p99 end-to-end latency (from intended send), ms.
    #[arg(long, default_value_t = 10.0)]
    pub p99_ms: f64,
    /// Each step multiplies the conversations by this factor.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    /// Most steps; the sweep also stops at the first bad step.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub steps_max: u32,
    /// Write every step's report and the knee as JSON to this file.
    #[arg(long = "sweep-json")]
    pub sweep_json: Option<PathBuf>,
}

/// One step's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub conversations: u64,
    /// Within the bound, nothing lost, generator kept up.
    pub good: bool,
    pub report: Report,
}

/// The sweep's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    pub p99_bound_us: u64,
    pub steps: Vec<Step>,
    /// The good step with the most deliveries/s, if any.
    pub knee_deliveries_per_sec: Option<f64>,
    pub knee_conversations: Option<u64>,
    /// Why the sweep stopped.
    pub stopped_because: String,
}

/// Whether a step's report is within the bound: p99 ≤ bound, nothing lost or duplicated,
/// no broken connection, the generator kept up.
pub fn step_is_good(report: &Report, p99_bound_us: u64) -> bool {
    report.latency_us.p99 <= p99_bound_us
        && report.lost == 0
        && report.frames_not_sent == 0
        && report.duplicated == 0
        && report.connection_errors == 0
        && !report.generator_overloaded
}

/// The knee: the good step with the highest deliveries/s.
pub fn knee(steps: &[Step]) -> Option<&Step> {
    steps.iter().filter(|step| step.good).max_by(|a, b| {
        a.report
            .deliveries_per_sec
            .total_cmp(&b.report.deliveries_per_sec)
    })
}

/// The conversations of the step after one with `conversations`.
pub fn next_conversations(conversations: u64, factor: f64) -> u64 {
    let next = (conversations as f64 * factor).ceil() as u64;
    next.max(conversations + 1).min(CONVERSATIONS_MAX)
}

/// `hark-perf sweep`.
pub fn run(args: &SweepArgs) -> Result<ExitCode, RunError> {
    if !(args.factor.is_finite() && args.factor > 1.0 && args.factor <= 100.0) {
        return Err(RunError::Usage(
            "--factor must be above 1 and at most 100".into(),
        ));
    }
    if !(args.p99_ms.is_finite() && args.p99_ms > 0.0) {
        return Err(RunError::Usage("--p99-ms must be positive".into()));
    }
    let p99_bound_us = (args.p99_ms * 1_000.0) as u64;
    let mut steps = Vec::new();
    let mut conversations = args.run.conversations;
    let mut stopped_because = format!("reached --steps-max {}", args.steps_max);
    for _ in 0..args.steps_max {
        let mut step_args = args.run.clone();
        step_args.conversations = conversations;
        step_args.json = None;
        step_args.html = None;
        step_args.quiet = true;
        println!(
            "step: {conversations} conversations × {} listeners",
            step_args.listeners
        );
        let report = match run_target(&step_args) {
            Ok(report) => report,
            Err(error) => {
                stopped_because =
                    format!("step with {conversations} conversations failed: {error}");
                break;
            }
        };
        print!("{}", report.summary());
        let good = step_is_good(&report, p99_bound_us);
        let overloaded = report.generator_overloaded;
        let p99 = report.latency_us.p99;
        let lost = report.lost;
        steps.push(Step {
            conversations,
            good,
            report,
        });
        if !good {
            stopped_because = if overloaded {
                "the generator could not keep up (more --cores, or another machine)".into()
            } else {
                format!(
                    "{conversations} conversations: p99 {p99} µs (bound {p99_bound_us}), lost {lost}"
                )
            };
            break;
        }
        if conversations == CONVERSATIONS_MAX {
            stopped_because = "reached the conversation limit".into();
            break;
        }
        conversations = next_conversations(conversations, args.factor);
    }
    let best = knee(&steps);
    let report = SweepReport {
        p99_bound_us,
        knee_deliveries_per_sec: best.map(|s| s.report.deliveries_per_sec),
        knee_conversations: best.map(|s| s.conversations),
        steps: steps.clone(),
        stopped_because,
    };
    println!("\n conversations  deliveries/s   p99 µs   lost  good");
    for step in &report.steps {
        println!(
            "{:>14} {:>13.0} {:>8} {:>6}  {}",
            step.conversations,
            step.report.deliveries_per_sec,
            step.report.latency_us.p99,
            step.report.lost,
            if step.good { "yes" } else { "no" }
        );
    }
    match (report.knee_conversations, report.knee_deliveries_per_sec) {
        (Some(c), Some(d)) => println!(
            "knee: {d:.0} deliveries/s at {c} conversations (p99 ≤ {} ms, no loss); stopped: {}",
            args.p99_ms, report.stopped_because
        ),
        _ => println!("no step met the bound; stopped: {}", report.stopped_because),
    }
    if let Some(path) = &args.sweep_json {
        let text = serde_json::to_string_pretty(&report).expect("the sweep report serialises");
        std::fs::write(path, text + "\n").map_err(|source| RunError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::Parameters;
    use crate::load::stats::{LoadStats, record_latency};

    fn report(conversations: u64, p99_us: u64, lost: u64) -> Report {
        let mut stats = LoadStats {
            frames_sent: 100 * conversations,
            unique_deliveries: 100 * conversations - lost,
            ..LoadStats::default()
        };
        for _ in 0..100 {
            record_latency(&mut stats.latency_us, p99_us);
        }
        let parameters = Parameters {
            target: "hark".into(),
            address: "a".into(),
            conversations,
            listeners: 1,
            frame_bytes: 100,
            interval_ms: 20,
            duration_s: 1.0,
            ramp_s: 0.0,
            message_frames: 500,
            subs_per_connection: 1,
            threads: 1,
        };
        Report::new(parameters, 0, &stats, 0.1, None)
    }

    #[test]
    fn the_knee_is_the_best_good_step() {
        let steps: Vec<Step> = [(10, 500, 0), (20, 900, 0), (40, 20_000, 0), (80, 500, 3)]
            .into_iter()
            .map(|(conversations, p99, lost)| {
                let report = report(conversations, p99, lost);
                Step {
                    conversations,
                    good: step_is_good(&report, 10_000),
                    report,
                }
            })
            .collect();
        assert_eq!(
            steps.iter().map(|s| s.good).collect::<Vec<_>>(),
            vec![true, true, false, false]
        );
        assert_eq!(knee(&steps).map(|s| s.conversations), Some(20));
        assert_eq!(knee(&steps[2..]).map(|s| s.conversations), None);
    }

    #[test]
    fn steps_grow_and_stop_at_the_limit() {
        assert_eq!(next_conversations(100, 2.0), 200);
        assert_eq!(next_conversations(1, 1.1), 2);
        assert_eq!(
            next_conversations(CONVERSATIONS_MAX - 1, 2.0),
            CONVERSATIONS_MAX
        );
    }
}
