//! Prometheus text exposition (format 0.0.4) of the registry's snapshots.
//!
//! Every family gets `# HELP` and `# TYPE` lines, then one sample (or one histogram) per shard,
//! labelled `shard="<host>-<core>"`. Latencies are recorded in µs and rendered in seconds as
//! exact decimals (no floating point rounding: 50 µs is `0.00005`).

use std::fmt::{self, Write};

use hark_core::ShardId;

use super::latency::{LATENCY_BUCKET_BOUNDS_US, LatencyHistogram};
use super::{ClusterGauges, ShardCounters, ShardStats};

/// One shard's published statistics, copied out of its slot for rendering.
pub(super) struct ShardSnapshot {
    pub shard: ShardId,
    pub stats: ShardStats,
    /// Time since the shard last published (since the registry was built if it never did).
    pub stats_age_us: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A per-shard counter or gauge and where its value lives in [`ShardCounters`].
struct CounterFamily {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&ShardCounters) -> u64,
}

/// Per-shard counters and gauges, in rendering order.
const COUNTER_FAMILIES: &[CounterFamily] = &[
    CounterFamily {
        name: "hark_connections_open",
        kind: Kind::Gauge,
        help: "Client connections open on the shard.",
        value: |c| c.connections_open,
    },
    CounterFamily {
        name: "hark_connections_accepted_total",
        kind: Kind::Counter,
        help: "Client connections accepted from the shard's listening socket.",
        value: |c| c.connections_accepted,
    },
    CounterFamily {
        name: "hark_connections_refused_total",
        kind: Kind::Counter,
        help: "Client connections refused because the shard was at its connection limit.",
        value: |c| c.connections_refused,
    },
    CounterFamily {
        name: "hark_shard_map_epoch",
        kind: Kind::Gauge,
        help: "Epoch of the ownership map the shard routes by (a single host: 1).",
        value: |c| c.map_epoch,
    },
    CounterFamily {
        name: "hark_peer_link_sent_bytes_total",
        kind: Kind::Counter,
        help: "Bytes written to peer links to other hosts' shards.",
        value: |c| c.peer_link_bytes_out,
    },
    CounterFamily {
        name: "hark_peer_link_received_bytes_total",
        kind: Kind::Counter,
        help: "Bytes read from peer links.",
        value: |c| c.peer_link_bytes_in,
    },
    CounterFamily {
        name: "hark_peer_link_failures_total",
        kind: Kind::Counter,
        help: "Peer links the shard dialed that failed.",
        value: |c| c.peer_link_failures,
    },
    CounterFamily {
        name: "hark_handoffs_out_total",
        kind: Kind::Counter,
        help: "Connections handed to the shard owning their conversation.",
        value: |c| c.handoffs_out,
    },
    CounterFamily {
        name: "hark_handoffs_in_total",
        kind: Kind::Counter,
        help: "Connections adopted from another shard.",
        value: |c| c.handoffs_in,
    },
    CounterFamily {
        name: "hark_frames_received_total",
        kind: Kind::Counter,
        help: "Talk frames received from clients.",
        value: |c| c.frames_in,
    },
    CounterFamily {
        name: "hark_frames_sent_total",
        kind: Kind::Counter,
        help: "Frame events sent to listeners, live and replayed.",
        value: |c| c.frames_out,
    },
    CounterFamily {
        name: "hark_received_bytes_total",
        kind: Kind::Counter,
        help: "Bytes read from client sockets.",
        value: |c| c.bytes_in,
    },
    CounterFamily {
        name: "hark_sent_bytes_total",
        kind: Kind::Counter,
        help: "Bytes written to client sockets.",
        value: |c| c.bytes_out,
    },
    CounterFamily {
        name: "hark_send_queue_bytes",
        kind: Kind::Gauge,
        help: "Bytes queued for client sockets, over all connections of the shard.",
        value: |c| c.send_queue_bytes,
    },
    CounterFamily {
        name: "hark_mesh_queue_entries",
        kind: Kind::Gauge,
        help: "Entries waiting in the shard's outbound queues to other shards, overflow included.",
        value: |c| c.mesh_queue_depth,
    },
    CounterFamily {
        name: "hark_slow_listener_fallbacks_total",
        kind: Kind::Counter,
        help: "Listeners that overflowed their send queue and fell back to replay from the store.",
        value: |c| c.slow_listener_fallbacks,
    },
    CounterFamily {
        name: "hark_messages_started_total",
        kind: Kind::Counter,
        help: "Messages started on the shard.",
        value: |c| c.messages_started,
    },
    CounterFamily {
        name: "hark_messages_handed_over_total",
        kind: Kind::Counter,
        help: "Messages taken over on the shard after their owner died or drained.",
        value: |c| c.messages_handed_over,
    },
    CounterFamily {
        name: "hark_messages_ended_total",
        kind: Kind::Counter,
        help: "Messages ended on the shard.",
        value: |c| c.messages_ended,
    },
    CounterFamily {
        name: "hark_store_commits_total",
        kind: Kind::Counter,
        help: "Group commits of the body store that became durable.",
        value: |c| c.commits,
    },
    CounterFamily {
        name: "hark_store_commit_errors_total",
        kind: Kind::Counter,
        help: "Group commits of the body store that failed.",
        value: |c| c.commit_errors,
    },
    CounterFamily {
        name: "hark_store_committed_bytes_total",
        kind: Kind::Counter,
        help: "Bytes made durable by group commits.",
        value: |c| c.commit_bytes,
    },
    CounterFamily {
        name: "hark_store_pending_bytes",
        kind: Kind::Gauge,
        help: "Bytes appended to the body store and not yet durable.",
        value: |c| c.store_pending_bytes,
    },
    CounterFamily {
        name: "hark_decode_errors_total",
        kind: Kind::Counter,
        help: "Client frames that could not be decoded.",
        value: |c| c.decode_errors,
    },
];

/// A per-shard latency histogram and its host-wide summary.
struct LatencyFamily {
    name: &'static str,
    help: &'static str,
    summary_name: &'static str,
    summary_help: &'static str,
    histogram: fn(&ShardStats) -> &LatencyHistogram,
}

const LATENCY_FAMILIES: &[LatencyFamily] = &[
    LatencyFamily {
        name: "hark_store_commit_latency_seconds",
        help: "Store group commit latency, from the first append of a commit to durable.",
        summary_name: "hark_host_store_commit_latency_seconds",
        summary_help: "Store group commit latency over all shards of the host (quantiles within 1%).",
        histogram: ShardStats::commit_latency,
    },
    LatencyFamily {
        name: "hark_relay_latency_seconds",
        help: "Relay latency, from a talk frame's arrival on the shard to its event queued for a listener.",
        summary_name: "hark_host_relay_latency_seconds",
        summary_help: "Relay latency over all shards of the host (quantiles within 1%).",
        histogram: ShardStats::relay_latency,
    },
];

/// Quantiles of the host-wide summaries.
const SUMMARY_QUANTILES: [(&str, f64); 4] =
    [("0.5", 0.5), ("0.9", 0.9), ("0.99", 0.99), ("0.999", 0.999)];

/// Every family name rendered, for the documentation check in the tests.
#[cfg(test)]
pub(super) fn family_names() -> Vec<&'static str> {
    let mut names = vec![
        "hark_ready",
        "hark_draining",
        "hark_shard_stats_age_seconds",
        "hark_cluster_epoch",
        "hark_cluster_hosts",
        "hark_cluster_map_info",
    ];
    names.extend(COUNTER_FAMILIES.iter().map(|f| f.name));
    for family in LATENCY_FAMILIES {
        names.push(family.name);
        names.push(family.summary_name);
    }
    names
}

/// Appends the exposition to `out`.
pub(super) fn render(
    out: &mut String,
    shards: &[ShardSnapshot],
    ready: bool,
    draining: bool,
    cluster: Option<ClusterGauges>,
) {
    // Writing to a String cannot fail; the `fmt::Result`s only come from the `Write` trait.
    let _ = render_into(out, shards, ready, draining);
    if let Some(cluster) = cluster {
        let _ = render_cluster(out, cluster);
    }
}

fn render_cluster(out: &mut String, cluster: ClusterGauges) -> fmt::Result {
    header(
        out,
        "hark_cluster_epoch",
        "gauge",
        "Epoch of the host's ownership map (grows with every membership change).",
    )?;
    writeln!(out, "hark_cluster_epoch {}", cluster.epoch)?;
    header(
        out,
        "hark_cluster_hosts",
        "gauge",
        "Live hosts in the host's ownership map.",
    )?;
    writeln!(out, "hark_cluster_hosts {}", cluster.hosts)?;
    header(
        out,
        "hark_cluster_map_info",
        "gauge",
        "Always 1; the label is the map's checksum, equal on hosts that agree on the live hosts.",
    )?;
    writeln!(
        out,
        "hark_cluster_map_info{{checksum=\"{:016x}\"}} 1",
        cluster.checksum
    )
}

fn render_into(
    out: &mut String,
    shards: &[ShardSnapshot],
    ready: bool,
    draining: bool,
) -> fmt::Result {
    header(
        out,
        "hark_ready",
        "gauge",
        "1 when every shard accepts connections and the host is not draining (what /ready answers 200 to).",
    )?;
    writeln!(out, "hark_ready {}", u8::from(ready && !draining))?;
    header(
        out,
        "hark_draining",
        "gauge",
        "1 once shutdown has begun: the host finishes its messages and takes no new clients.",
    )?;
    writeln!(out, "hark_draining {}", u8::from(draining))?;
    header(
        out,
        "hark_shard_stats_age_seconds",
        "gauge",
        "Seconds since the shard last published its statistics; growing means the shard is stuck.",
    )?;
    for snapshot in shards {
        write!(out, "hark_shard_stats_age_seconds")?;
        shard_label(out, snapshot.shard)?;
        write_seconds(out, snapshot.stats_age_us)?;
        out.push('\n');
    }

    for family in COUNTER_FAMILIES {
        header(out, family.name, family.kind.as_str(), family.help)?;
        for snapshot in shards {
            out.push_str(family.name);
            shard_label(out, snapshot.shard)?;
            writeln!(out, "{}", (family.value)(&snapshot.stats.counters))?;
        }
    }

    for family in LATENCY_FAMILIES {
        header(out, family.name, "histogram", family.help)?;
        for snapshot in shards {
            histogram(
                out,
                family.name,
                snapshot.shard,
                (family.histogram)(&snapshot.stats),
            )?;
        }
        let mut merged = LatencyHistogram::new();
        for snapshot in shards {
            merged.merge((family.histogram)(&snapshot.stats));
        }
        header(out, family.summary_name, "summary", family.summary_help)?;
        summary(out, family.summary_name, &merged)?;
    }
    Ok(())
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// ` {shard="<host>-<core>"} ` (with the separating spaces' trailing one).
fn shard_label(out: &mut String, shard: ShardId) -> fmt::Result {
    write!(out, "{{shard=\"{}-{}\"}} ", shard.host.0, shard.core)
}

fn histogram(
    out: &mut String,
    name: &str,
    shard: ShardId,
    latency: &LatencyHistogram,
) -> fmt::Result {
    let cumulative = latency.cumulative_bucket_counts();
    for (i, count) in cumulative.iter().enumerate() {
        write!(
            out,
            "{name}_bucket{{shard=\"{}-{}\",le=\"",
            shard.host.0, shard.core
        )?;
        match LATENCY_BUCKET_BOUNDS_US.get(i) {
            Some(&bound_us) => write_seconds(out, bound_us)?,
            None => out.push_str("+Inf"),
        }
        writeln!(out, "\"}} {count}")?;
    }
    write!(out, "{name}_sum")?;
    shard_label(out, shard)?;
    write_seconds(out, latency.sum_us())?;
    out.push('\n');
    write!(out, "{name}_count")?;
    shard_label(out, shard)?;
    writeln!(out, "{}", latency.count())
}

fn summary(out: &mut String, name: &str, latency: &LatencyHistogram) -> fmt::Result {
    for (label, quantile) in SUMMARY_QUANTILES {
        write!(out, "{name}{{quantile=\"{label}\"}} ")?;
        match latency.value_at_quantile_us(quantile) {
            Some(us) => write_seconds(out, us)?,
            // Prometheus's convention for a quantile of no observations.
            None => out.push_str("NaN"),
        }
        out.push('\n');
    }
    write!(out, "{name}_sum ")?;
    write_seconds(out, latency.sum_us())?;
    out.push('\n');
    writeln!(out, "{name}_count {}", latency.count())
}

/// Writes `us` microseconds as seconds in the shortest exact decimal: 50 -> `0.00005`,
/// 1_000_000 -> `1`, 2_500_000 -> `2.5`.
pub(super) fn write_seconds(out: &mut String, us: u64) -> fmt::Result {
    let whole = us / 1_000_000;
    let fraction = us % 1_000_000;
    write!(out, "{whole}")?;
    if fraction != 0 {
        let (mut digits, mut width) = (fraction, 6);
        while digits % 10 == 0 {
            digits /= 10;
            width -= 1;
        }
        write!(out, ".{digits:0width$}")?;
    }
    Ok(())
}
