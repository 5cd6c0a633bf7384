//! The subcommands' front ends: run the workload, print, write the reports, choose the exit
//! code.

use std::process::ExitCode;

use super::report::Report;
use super::run::{RunArgs, RunError, run_hark};

/// Exit code when the generator could not keep up (its numbers describe itself).
pub const EXIT_GENERATOR_OVERLOADED: u8 = 3;

/// Runs the workload `args` describe against its target.
pub fn run_target(args: &RunArgs) -> Result<Report, RunError> {
    match args.target.as_deref() {
        None | Some("hark") => run_hark(args),
        Some(url) if url.starts_with("redis://") => super::redis_target::run(args, url),
        Some(other) => Err(RunError::Usage(format!(
            "--target {other}: expected `hark` or redis://HOST:PORT"
        ))),
    }
}

/// Writes the JSON and HTML reports `args` ask for.
pub fn write_reports(args: &RunArgs, report: &Report) -> Result<(), RunError> {
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json() + "\n").map_err(|source| RunError::Write {
            path: path.clone(),
            source,
        })?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, super::html::page(report)).map_err(|source| RunError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `hark-perf run`.
pub fn run(args: &RunArgs) -> Result<ExitCode, RunError> {
    let report = run_target(args)?;
    print!("{}", report.summary());
    write_reports(args, &report)?;
    if report.generator_overloaded {
        eprintln!(
            "hark-perf: the generator fell behind its schedule on {} of {} frames (more than {}%): \
             these numbers measure the generator, not the relay. Use more --cores or less load.",
            report.generator_late_frames, report.frames_sent, args.overload_max_percent
        );
        return Ok(ExitCode::from(EXIT_GENERATOR_OVERLOADED));
    }
    if !report.clean() {
        eprintln!(
            "hark-perf: lost {}, not sent {}, duplicated {}, reordered {}, connection errors {}, error events {}",
            report.lost,
            report.frames_not_sent,
            report.duplicated,
            report.reordered,
            report.connection_errors,
            report.error_events
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `hark-perf idle`.
pub fn idle(args: &super::idle::IdleArgs) -> Result<ExitCode, RunError> {
    let report = super::idle::run(args)?;
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json() + "\n").map_err(|source| RunError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(ExitCode::SUCCESS)
}
