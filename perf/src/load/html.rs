//! `--html`: one self-contained page (inline SVG, no scripts, no external resources) with the
//! latency percentile plot and the run's parameters and results.

use std::fmt::Write;

use super::report::{CurvePoint, Report};

/// Plot size in SVG units.
const PLOT_WIDTH: f64 = 720.0;
const PLOT_HEIGHT: f64 = 360.0;
/// Margin left of and below the plot for the axis labels.
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_BOTTOM: f64 = 40.0;
/// The x axis ends at this many nines (99.999%): x = log10(1 / (1 - q)).
const NINES_MAX: f64 = 5.0;

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// x of quantile `q` in nines: 0.9 → 1, 0.99 → 2; 1.0 is drawn at the axis end.
fn nines(q: f64) -> f64 {
    if q >= 1.0 {
        NINES_MAX
    } else {
        (1.0 / (1.0 - q)).log10().min(NINES_MAX)
    }
}

/// The SVG polyline points of `curve` on a log-µs y axis from 1 µs to `y_max_us`.
fn polyline(curve: &[CurvePoint], y_max_us: f64) -> String {
    let y_span = y_max_us.log10().max(1.0);
    curve
        .iter()
        .map(|p| {
            let x = MARGIN_LEFT + nines(p.quantile) / NINES_MAX * PLOT_WIDTH;
            let y = PLOT_HEIGHT - (p.us.max(1) as f64).log10() / y_span * PLOT_HEIGHT;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The latency percentile plot as inline SVG.
pub fn svg(report: &Report) -> String {
    let curves = [
        (
            "end-to-end from intended send",
            "#c0392b",
            &report.curves.latency_us,
        ),
        (
            "end-to-end from actual send",
            "#2980b9",
            &report.curves.latency_from_send_us,
        ),
        (
            "stored ack from intended send",
            "#27ae60",
            &report.curves.stored_ack_us,
        ),
    ];
    let max_us = curves
        .iter()
        .flat_map(|(_, _, c)| c.iter().map(|p| p.us))
        .max()
        .unwrap_or(1)
        .max(10);
    let decades = (max_us as f64).log10().ceil().max(1.0);
    let y_max_us = 10f64.powf(decades);
    let mut svg = String::new();
    let width = MARGIN_LEFT + PLOT_WIDTH + 20.0;
    let height = PLOT_HEIGHT + MARGIN_BOTTOM + 10.0;
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    for decade in 0..=decades as u32 {
        let y = PLOT_HEIGHT - f64::from(decade) / decades * PLOT_HEIGHT;
        let label = match decade {
            0..=2 => format!("{} µs", 10u64.pow(decade)),
            3..=5 => format!("{} ms", 10u64.pow(decade - 3)),
            _ => format!("{} s", 10u64.pow(decade - 6)),
        };
        let _ = write!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            MARGIN_LEFT + PLOT_WIDTH,
            MARGIN_LEFT - 6.0,
            y + 4.0
        );
    }
    for (nine, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = MARGIN_LEFT + nine as f64 / NINES_MAX * PLOT_WIDTH;
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="0" x2="{x:.1}" y2="{PLOT_HEIGHT}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            PLOT_HEIGHT + 16.0
        );
    }
    for (index, (name, colour, curve)) in curves.iter().enumerate() {
        if curve.is_empty() {
            continue;
        }
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><text x="{:.1}" y="{:.1}" fill="{colour}">{}</text>"#,
            polyline(curve, y_max_us),
            MARGIN_LEFT + 10.0,
            16.0 + 16.0 * index as f64,
            escape(name)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text></svg>"#,
        MARGIN_LEFT + PLOT_WIDTH / 2.0,
        PLOT_HEIGHT + MARGIN_BOTTOM
    );
    svg
}

/// The whole page.
pub fn page(report: &Report) -> String {
    let p = &report.parameters;
    let mut rows = String::new();
    let mut row = |name: &str, value: String| {
        let _ = write!(
            rows,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    };
    row("target", format!("{} {}", p.target, p.address));
    row(
        "conversations × listeners",
        format!("{} × {}", p.conversations, p.listeners),
    );
    row(
        "frame",
        format!("{} B every {} ms", p.frame_bytes, p.interval_ms),
    );
    row(
        "duration (ramp)",
        format!("{} s ({} s)", p.duration_s, p.ramp_s),
    );
    row("message frames", p.message_frames.to_string());
    row("subs per connection", p.subs_per_connection.to_string());
    row("generator threads", p.threads.to_string());
    row("started (unix s)", report.started_unix_s.to_string());
    row("deliveries/s", format!("{:.0}", report.deliveries_per_sec));
    row(
        "frames sent / delivered / expected",
        format!(
            "{} / {} / {}",
            report.frames_sent, report.frames_delivered, report.deliveries_expected
        ),
    );
    row(
        "lost / duplicated / reordered",
        format!(
            "{} / {} / {}",
            report.lost, report.duplicated, report.reordered
        ),
    );
    row(
        "connection errors / error events",
        format!("{} / {}", report.connection_errors, report.error_events),
    );
    row(
        "generator late frames",
        report.generator_late_frames.to_string(),
    );
    for (name, q) in [
        ("latency µs (intended)", &report.latency_us),
        ("latency µs (sent)", &report.latency_from_send_us),
        ("stored ack µs", &report.stored_ack_us),
    ] {
        row(
            name,
            format!(
                "p50 {} · p90 {} · p99 {} · p99.9 {} · max {}",
                q.p50, q.p90, q.p99, q.p999, q.max
            ),
        );
    }
    if let Some(per) = report.relay_cpu_us_per_delivery {
        row("relay CPU per delivery", format!("{per:.2} µs"));
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>hark-perf {target}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}th{{text-align:left;padding-right:1em}}</style>\
         </head><body><h1>hark-perf: {target} load test</h1>{svg}<table>{rows}</table></body></html>\n",
        target = escape(&p.target),
        svg = svg(report),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::{Parameters, Report};
    use crate::load::stats::{LoadStats, record_latency};

    #[test]
    fn the_page_is_self_contained_and_plots_every_curve() {
        let mut stats = LoadStats {
            frames_sent: 100,
            unique_deliveries: 100,
            ..LoadStats::default()
        };
        for us in 1..=1_000 {
            record_latency(&mut stats.latency_us, us);
            record_latency(&mut stats.latency_from_send_us, us / 2);
            record_latency(&mut stats.stored_ack_us, us * 5);
        }
        let parameters = Parameters {
            target: "<hark>".into(),
            address: "a".into(),
            conversations: 1,
            listeners: 1,
            frame_bytes: 100,
            interval_ms: 20,
            duration_s: 1.0,
            ramp_s: 0.0,
            message_frames: 500,
            subs_per_connection: 1,
            threads: 1,
        };
        let page = page(&Report::new(parameters, 0, &stats, 0.1, None));
        assert_eq!(page.matches("<polyline").count(), 3);
        assert!(page.contains("&lt;hark&gt;"));
        assert!(!page.contains("<script"));
        assert!(!page.contains("http://") || page.matches("http://").count() == 1);
    }

    #[test]
    fn nines_map_quantiles_to_the_axis() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(1.0), NINES_MAX);
        assert_eq!(nines(0.0), 0.0);
    }
}
