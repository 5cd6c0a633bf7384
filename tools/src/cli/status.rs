//! `hark status`: a running relay's shards, read from its admin endpoint's `/metrics`.
//!
//! One plain HTTP/1.1 GET over a std `TcpStream` (connect and I/O timeouts, a bounded read),
//! the Prometheus text parsed into samples, and a table per shard plus the host's summaries.
//! Metric names are those of docs/metrics.md.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::CliError;

/// Largest `/metrics` response read (a relay of 64 shards renders well under 1 MiB).
pub const STATUS_RESPONSE_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Samples parsed at most from one response.
pub const STATUS_SAMPLES_MAX: usize = 200_000;
/// Connect, write and read timeout of the admin request.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// One Prometheus sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (with `_bucket`/`_sum`/`_count` suffixes as written).
    pub name: String,
    /// Label names and values, in order.
    pub labels: Vec<(String, String)>,
    /// The value (`NaN`, `+Inf` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What `hark status` shows of one shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStatus {
    /// Every per-shard metric of docs/metrics.md by name (histograms as `_count`/`_sum`).
    pub values: BTreeMap<String, f64>,
}

impl ShardStatus {
    /// The value of `name`, 0 when the relay did not render it.
    pub fn get(&self, name: &str) -> f64 {
        self.values.get(name).copied().unwrap_or(0.0)
    }
}

/// A relay's status as `/metrics` tells it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelayStatus {
    /// Per shard, by its label `host-core`.
    pub shards: BTreeMap<String, ShardStatus>,
    /// `hark_ready` is 1.
    pub ready: bool,
    /// `hark_draining` is 1.
    pub draining: bool,
    /// Host summaries' quantiles: (metric, quantile) → seconds.
    pub quantiles: BTreeMap<(String, String), f64>,
    /// On a cluster host: the ownership map it routes by.
    pub cluster: Option<ClusterStatus>,
}

/// A cluster host's map as its metrics tell it (`hark_cluster_*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterStatus {
    /// The map's epoch.
    pub epoch: u64,
    /// Live hosts in the map.
    pub hosts: u64,
    /// The map's checksum, 16 hex digits (equal on hosts that agree).
    pub checksum: String,
}

/// One answer of the admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminReply {
    /// The status code.
    pub code: u16,
    /// The whole status line, for messages.
    pub status_line: String,
    /// The body (cut to its Content-Length when one was sent).
    pub body: String,
}

/// Why an admin request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequestError {
    /// Nothing listens at the address (connection refused): no relay runs there, or it has
    /// exited. The text is the OS's.
    Refused(String),
    /// Anything else: a bad address, a timeout, a broken or oversized answer.
    Failed(String),
}

impl AdminRequestError {
    /// As the one-line [`CliError::Admin`] for `addr`.
    pub fn at(self, addr: &str) -> CliError {
        let detail = match self {
            AdminRequestError::Refused(text) => format!("cannot connect: {text}"),
            AdminRequestError::Failed(text) => text,
        };
        CliError::Admin {
            addr: addr.to_owned(),
            detail,
        }
    }
}

/// Sends `METHOD path` (no body) to the admin endpoint at `addr` and reads the answer: at
/// most [`STATUS_RESPONSE_BYTES_MAX`] bytes, each step within [`STATUS_TIMEOUT`].
pub fn admin_request(
    addr: &str,
    method: &str,
    path: &str,
) -> Result<AdminReply, AdminRequestError> {
    let fail = AdminRequestError::Failed;
    let target = addr
        .to_socket_addrs()
        .map_err(|e| fail(format!("bad address: {e}")))?
        .next()
        .ok_or_else(|| fail("address resolves to nothing".into()))?;
    let mut stream = TcpStream::connect_timeout(&target, STATUS_TIMEOUT).map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            AdminRequestError::Refused(e.to_string())
        } else {
            fail(format!("cannot connect: {e}"))
        }
    })?;
    let io = |e: std::io::Error| fail(e.to_string());
    stream.set_read_timeout(Some(STATUS_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(STATUS_TIMEOUT)).map_err(io)?;
    let length = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{length}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(STATUS_RESPONSE_BYTES_MAX + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    if raw.len() as u64 > STATUS_RESPONSE_BYTES_MAX {
        return Err(fail(format!(
            "response larger than {STATUS_RESPONSE_BYTES_MAX} bytes"
        )));
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| fail("not an HTTP response (no end of head)".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status_line = head.lines().next().unwrap_or("").to_owned();
    let mut parts = status_line.split_whitespace();
    let code = match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(code))) if version.starts_with("HTTP/1.") => code,
        _ => return Err(fail(format!("bad status line {status_line:?}"))),
    };
    let mut body = &raw[split + 4..];
    let length = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    if let Some(length) = length {
        body = body
            .get(..length)
            .ok_or_else(|| fail(format!("body shorter than its Content-Length {length}")))?;
    }
    let body = String::from_utf8(body.to_vec()).map_err(|_| fail("body is not UTF-8".into()))?;
    Ok(AdminReply {
        code,
        status_line,
        body,
    })
}

/// `GET /metrics` from `addr`; the body.
pub fn fetch_metrics(addr: &str) -> Result<String, CliError> {
    let reply = admin_request(addr, "GET", "/metrics").map_err(|e| e.at(addr))?;
    if reply.code != 200 {
        return Err(CliError::Admin {
            addr: addr.to_owned(),
            detail: format!("answered {:?}", reply.status_line),
        });
    }
    Ok(reply.body)
}

/// Parses Prometheus text format 0.0.4 (comments skipped; escapes in label values kept as
/// written except `\"`). At most [`STATUS_SAMPLES_MAX`] samples.
pub fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if samples.len() == STATUS_SAMPLES_MAX {
            return Err(format!("more than {STATUS_SAMPLES_MAX} samples"));
        }
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| bad("no value"))?;
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let close = find_label_end(inner).ok_or_else(|| bad("unclosed labels"))?;
            for pair in split_labels(&inner[..close]) {
                let (key, value) = pair.split_once('=').ok_or_else(|| bad("label without ="))?;
                let value = value
                    .trim()
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .ok_or_else(|| bad("label value not quoted"))?;
                labels.push((key.trim().to_owned(), value.replace("\\\"", "\"")));
            }
            rest = &inner[close + 1..];
        }
        let value_text = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?;
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            other => other.parse().map_err(|_| bad("value is not a number"))?,
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// The index of the `}` closing a label set, skipping quoted values.
fn find_label_end(inner: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut escaped, mut start) = (false, false, 0);
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner[start..].trim().is_empty() {
        parts.push(&inner[start..]);
    }
    parts
}

/// Groups samples into per-shard values, readiness and the host quantiles.
pub fn relay_status(samples: &[Sample]) -> RelayStatus {
    let mut status = RelayStatus::default();
    for sample in samples {
        if let Some(shard) = sample.label("shard") {
            if sample.name.ends_with("_bucket") {
                continue;
            }
            status
                .shards
                .entry(shard.to_owned())
                .or_default()
                .values
                .insert(sample.name.clone(), sample.value);
            continue;
        }
        match (sample.name.as_str(), sample.label("quantile")) {
            ("hark_ready", _) => status.ready = sample.value == 1.0,
            ("hark_draining", _) => status.draining = sample.value == 1.0,
            // Gauges of whole numbers far below 2^53: exact as f64.
            ("hark_cluster_epoch", _) => {
                status.cluster.get_or_insert_default().epoch = sample.value as u64;
            }
            ("hark_cluster_hosts", _) => {
                status.cluster.get_or_insert_default().hosts = sample.value as u64;
            }
            ("hark_cluster_map_info", _) => {
                status.cluster.get_or_insert_default().checksum =
                    sample.label("checksum").unwrap_or_default().to_owned();
            }
            (name, Some(q)) if name.starts_with("hark_host_") => {
                status
                    .quantiles
                    .insert((name.to_owned(), q.to_owned()), sample.value);
            }
            _ => {}
        }
    }
    status
}

/// Runs `hark status --admin ADDR`.
pub fn run(admin: &str, json: bool, out: &mut dyn Write) -> Result<RelayStatus, CliError> {
    let text = fetch_metrics(admin)?;
    let samples = parse_metrics(&text).map_err(|detail| CliError::Admin {
        addr: admin.to_owned(),
        detail: format!("/metrics is not Prometheus text: {detail}"),
    })?;
    let status = relay_status(&samples);
    if json {
        let shards: serde_json::Map<_, _> = status
            .shards
            .iter()
            .map(|(shard, s)| (shard.clone(), serde_json::json!(s.values)))
            .collect();
        let quantiles: serde_json::Map<_, _> = status
            .quantiles
            .iter()
            .map(|((name, q), v)| (format!("{name}{{quantile={q}}}"), serde_json::json!(v)))
            .collect();
        let cluster = status.cluster.as_ref().map(
            |c| serde_json::json!({"epoch": c.epoch, "hosts": c.hosts, "checksum": c.checksum}),
        );
        let value = serde_json::json!({
            "ready": status.ready,
            "draining": status.draining,
            "cluster": cluster,
            "shards": shards,
            "host_quantiles_seconds": quantiles,
        });
        writeln!(out, "{value}")?;
        return Ok(status);
    }
    write_table(&status, out)?;
    Ok(status)
}

fn write_table(status: &RelayStatus, out: &mut dyn Write) -> Result<(), CliError> {
    let state = match (status.ready, status.draining) {
        (_, true) => "draining",
        (true, false) => "ready",
        (false, false) => "not ready",
    };
    writeln!(out, "relay: {state}, {} shard(s)", status.shards.len())?;
    if let Some(cluster) = &status.cluster {
        writeln!(
            out,
            "cluster: map epoch {}, {} live host(s), checksum {}",
            cluster.epoch, cluster.hosts, cluster.checksum
        )?;
    }
    writeln!(
        out,
        "{:<8} {:>6} {:>10} {:>10} {:>12} {:>12} {:>10} {:>8} {:>9} {:>10} {:>8} {:>8}",
        "SHARD",
        "CONNS",
        "FRAMES_IN",
        "FRAMES_OUT",
        "BYTES_IN",
        "BYTES_OUT",
        "SEND_Q_B",
        "MESH_Q",
        "FALLBACKS",
        "PENDING_B",
        "MSGS",
        "AGE_S"
    )?;
    for (shard, s) in &status.shards {
        writeln!(
            out,
            "{:<8} {:>6} {:>10} {:>10} {:>12} {:>12} {:>10} {:>8} {:>9} {:>10} {:>8} {:>8.2}",
            shard,
            s.get("hark_connections_open"),
            s.get("hark_frames_received_total"),
            s.get("hark_frames_sent_total"),
            s.get("hark_received_bytes_total"),
            s.get("hark_sent_bytes_total"),
            s.get("hark_send_queue_bytes"),
            s.get("hark_mesh_queue_entries"),
            s.get("hark_slow_listener_fallbacks_total"),
            s.get("hark_store_pending_bytes"),
            s.get("hark_messages_started_total"),
            s.get("hark_shard_stats_age_seconds"),
        )?;
    }
    for (metric, label) in [
        ("hark_host_store_commit_latency_seconds", "commit latency"),
        ("hark_host_relay_latency_seconds", "relay latency"),
    ] {
        let mut parts = Vec::new();
        for (q, name) in [
            ("0.5", "p50"),
            ("0.9", "p90"),
            ("0.99", "p99"),
            ("0.999", "p99.9"),
        ] {
            let value = status.quantiles.get(&(metric.to_owned(), q.to_owned()));
            parts.push(match value {
                Some(v) if v.is_finite() => format!("{name} {:.0}µs", v * 1e6),
                _ => format!("{name} -"),
            });
        }
        writeln!(out, "{label}: {}", parts.join(", "))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_parses_labels_values_and_refuses_garbage() {
        let text = "# HELP x y\n# TYPE hark_ready gauge\nhark_ready 1\n\
            hark_connections_open{shard=\"0-1\"} 3\n\
            hark_relay_latency_seconds_bucket{shard=\"0-1\",le=\"+Inf\"} 7\n\
            hark_host_relay_latency_seconds{quantile=\"0.99\"} NaN\n\
            odd{a=\"x,}y\",b=\"q\\\"\"} +Inf\n";
        let samples = parse_metrics(text).unwrap();
        assert_eq!(samples.len(), 5);
        assert_eq!(samples[4].label("a"), Some("x,}y"));
        assert_eq!(samples[4].label("b"), Some("q\""));
        let status = relay_status(&samples);
        assert!(status.ready);
        assert_eq!(status.shards["0-1"].get("hark_connections_open"), 3.0);
        assert!(
            !status.shards["0-1"]
                .values
                .keys()
                .any(|k| k.ends_with("_bucket"))
        );
        assert!(
            status.quantiles[&("hark_host_relay_latency_seconds".into(), "0.99".into())].is_nan()
        );
        for bad in ["x{a=\"1\" 2", "x", "x{a=1} 2", "x notanumber"] {
            assert!(parse_metrics(bad).is_err(), "{bad:?}");
        }
        assert_eq!(status.cluster, None, "a single host");
        let cluster = "hark_cluster_epoch 7\nhark_cluster_hosts 3\n\
            hark_cluster_map_info{checksum=\"00ff00ff00ff00ff\"} 1\n";
        let status = relay_status(&parse_metrics(cluster).unwrap());
        assert_eq!(
            status.cluster,
            Some(ClusterStatus {
                epoch: 7,
                hosts: 3,
                checksum: "00ff00ff00ff00ff".into()
            })
        );
        let flood = "x 1\n".repeat(STATUS_SAMPLES_MAX + 1);
        assert!(parse_metrics(&flood).is_err(), "above the sample bound");
    }
}
