use super::*;

use std::thread;

use proptest::prelude::*;

use super::render::{family_names, write_seconds};
use super::text_check;

fn render_text(registry: &Registry) -> String {
    let mut out = String::new();
    registry.render_prometheus(&mut out);
    out
}

fn seconds(us: u64) -> String {
    let mut out = String::new();
    write_seconds(&mut out, us).unwrap();
    out
}

#[test]
fn a_latency_histogram_builds() {
    let latency = LatencyHistogram::new();
    assert_eq!(latency.count(), 0);
    assert_eq!(latency.sum_us(), 0);
    assert_eq!(latency.value_at_quantile_us(0.5), None);
    assert_eq!(latency.cumulative_bucket_counts(), [0; LATENCY_BUCKETS]);
}

#[test]
fn buckets_follow_le_to_the_microsecond() {
    let mut latency = LatencyHistogram::new();
    for us in [0, 50, 51, 500, 501, 2_500_000, 2_500_001] {
        latency.record_us(us);
    }
    let cumulative = latency.cumulative_bucket_counts();
    // Bounds: 50 100 250 500 1ms 2.5ms 5ms 10ms 25ms 50ms 100ms 250ms 500ms 1s 2.5s +Inf.
    assert_eq!(cumulative, [2, 3, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6, 7]);
    assert_eq!(latency.count(), 7);
    assert_eq!(
        latency.sum_us(),
        50 + 51 + 500 + 501 + 2_500_000 + 2_500_001
    );
}

#[test]
fn latencies_beyond_the_maximum_saturate() {
    let mut stats = ShardStats::new();
    stats.record_commit_latency_us(u64::MAX);
    stats.record_commit_latency_us(LATENCY_US_MAX + 1);
    stats.record_relay_latency_us(u64::MAX);
    let commit = stats.commit_latency();
    assert_eq!(commit.count(), 2);
    assert_eq!(commit.sum_us(), 2 * LATENCY_US_MAX);
    assert_eq!(commit.cumulative_bucket_counts()[LATENCY_BUCKETS - 2], 0);
    let top = commit.value_at_quantile_us(1.0).unwrap();
    assert!(
        top.abs_diff(LATENCY_US_MAX) <= LATENCY_US_MAX / 100,
        "p100 {top} µs"
    );
    assert_eq!(stats.relay_latency().count(), 1);
}

#[test]
fn quantiles_are_within_one_percent() {
    let mut latency = LatencyHistogram::new();
    for us in 1..=10_000 {
        latency.record_us(us);
    }
    for (quantile, exact) in [(0.5, 5_000u64), (0.99, 9_900), (0.999, 9_990)] {
        let got = latency.value_at_quantile_us(quantile).unwrap();
        assert!(
            got.abs_diff(exact) <= exact / 100,
            "q{quantile}: {got} vs {exact}"
        );
    }
}

#[test]
fn seconds_are_exact_decimals() {
    assert_eq!(seconds(0), "0");
    assert_eq!(seconds(50), "0.00005");
    assert_eq!(seconds(250), "0.00025");
    assert_eq!(seconds(1_000_000), "1");
    assert_eq!(seconds(2_500_000), "2.5");
    assert_eq!(seconds(60_000_123), "60.000123");
    assert_eq!(seconds(u64::MAX), "18446744073709.551615");
}

#[test]
fn clone_from_copies_counters_and_histograms() {
    let mut source = ShardStats::new();
    source.counters.frames_in = 9;
    source.record_relay_latency_us(120);
    let mut target = ShardStats::new();
    target.counters.frames_out = 4;
    target.record_relay_latency_us(7);
    target.record_commit_latency_us(7);
    target.clone_from(&source);
    assert_eq!(target.counters, source.counters);
    assert_eq!(target.relay_latency().count(), 1);
    assert_eq!(target.relay_latency().sum_us(), 120);
    assert_eq!(target.commit_latency().count(), 0);
    assert_eq!(target.relay_latency().value_at_quantile_us(1.0), Some(120));
}

#[test]
fn published_values_render_under_their_names() {
    let registry = Registry::new(&[ShardId::new(7, 3), ShardId::new(7, 4)]);
    let mut stats = ShardStats::new();
    // Each field a distinct value, so a field wired to the wrong name shows.
    stats.counters = ShardCounters {
        connections_open: 1,
        connections_accepted: 2,
        connections_refused: 3,
        handoffs_out: 4,
        handoffs_in: 5,
        frames_in: 6,
        frames_out: 7,
        bytes_in: 8,
        bytes_out: 9,
        send_queue_bytes: 10,
        mesh_queue_depth: 11,
        slow_listener_fallbacks: 12,
        messages_started: 13,
        messages_ended: 14,
        commits: 15,
        commit_errors: 16,
        commit_bytes: 17,
        store_pending_bytes: 18,
        decode_errors: 19,
        peer_link_bytes_out: 20,
        peer_link_bytes_in: 21,
        peer_link_failures: 22,
        map_epoch: 23,
        messages_handed_over: 27,
    };
    stats.record_relay_latency_us(40);
    stats.record_relay_latency_us(60);
    stats.record_commit_latency_us(3_000);
    registry.publish(1, &stats);
    registry.set_cluster(ClusterGauges {
        epoch: 24,
        checksum: 0xfeed_f00d_0000_0025,
        hosts: 26,
    });

    let text = render_text(&registry);
    for line in [
        "\nhark_cluster_epoch 24\n",
        "\nhark_cluster_hosts 26\n",
        "\nhark_cluster_map_info{checksum=\"feedf00d00000025\"} 1\n",
    ] {
        assert!(text.contains(line), "{line}");
    }
    let exposition = text_check::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let expected = [
        ("hark_connections_open", 1),
        ("hark_connections_accepted_total", 2),
        ("hark_connections_refused_total", 3),
        ("hark_handoffs_out_total", 4),
        ("hark_handoffs_in_total", 5),
        ("hark_frames_received_total", 6),
        ("hark_frames_sent_total", 7),
        ("hark_received_bytes_total", 8),
        ("hark_sent_bytes_total", 9),
        ("hark_send_queue_bytes", 10),
        ("hark_mesh_queue_entries", 11),
        ("hark_slow_listener_fallbacks_total", 12),
        ("hark_messages_started_total", 13),
        ("hark_messages_ended_total", 14),
        ("hark_store_commits_total", 15),
        ("hark_store_commit_errors_total", 16),
        ("hark_store_committed_bytes_total", 17),
        ("hark_store_pending_bytes", 18),
        ("hark_decode_errors_total", 19),
        ("hark_peer_link_sent_bytes_total", 20),
        ("hark_peer_link_received_bytes_total", 21),
        ("hark_peer_link_failures_total", 22),
        ("hark_shard_map_epoch", 23),
        ("hark_messages_handed_over_total", 27),
    ];
    for (name, value) in expected {
        assert!(
            text.contains(&format!("\n{name}{{shard=\"7-4\"}} {value}\n")),
            "{name} {value}"
        );
        assert!(
            text.contains(&format!("\n{name}{{shard=\"7-3\"}} 0\n")),
            "{name}"
        );
    }
    for line in [
        "hark_relay_latency_seconds_bucket{shard=\"7-4\",le=\"0.00005\"} 1",
        "hark_relay_latency_seconds_bucket{shard=\"7-4\",le=\"0.0001\"} 2",
        "hark_relay_latency_seconds_bucket{shard=\"7-4\",le=\"+Inf\"} 2",
        "hark_relay_latency_seconds_sum{shard=\"7-4\"} 0.0001",
        "hark_relay_latency_seconds_count{shard=\"7-4\"} 2",
        "hark_store_commit_latency_seconds_bucket{shard=\"7-4\",le=\"0.0025\"} 0",
        "hark_store_commit_latency_seconds_bucket{shard=\"7-4\",le=\"0.005\"} 1",
        "hark_store_commit_latency_seconds_sum{shard=\"7-4\"} 0.003",
        "hark_store_commit_latency_seconds_count{shard=\"7-3\"} 0",
        "hark_host_relay_latency_seconds_count 2",
        "hark_ready 0",
        "hark_draining 0",
    ] {
        assert!(text.contains(&format!("\n{line}\n")), "missing {line}");
    }
    // hdr quantiles are within 1% of the recorded value.
    let median = exposition
        .value(
            "hark_host_store_commit_latency_seconds",
            &[("quantile", "0.5")],
        )
        .unwrap();
    assert!((median - 0.003).abs() <= 0.003 / 100.0, "{median}");
    let types = &exposition.types;
    assert_eq!(types["hark_relay_latency_seconds"], "histogram");
    assert_eq!(types["hark_host_relay_latency_seconds"], "summary");
    assert_eq!(types["hark_connections_open"], "gauge");
    assert_eq!(types.len(), family_names().len());
}

#[test]
fn the_host_summary_merges_every_shard() {
    let registry = Registry::new(&[ShardId::new(1, 0), ShardId::new(1, 1)]);
    for (index, base_us) in [(0, 100u64), (1, 10_000)] {
        let mut stats = ShardStats::new();
        for i in 0..100 {
            stats.record_relay_latency_us(base_us + i);
        }
        registry.publish(index, &stats);
    }
    let text = render_text(&registry);
    let exposition = text_check::parse(&text).unwrap();
    let name = "hark_host_relay_latency_seconds";
    assert_eq!(exposition.value(&format!("{name}_count"), &[]), Some(200.0));
    // Half the samples are 100..200 µs and half 10..10.1 ms: the median is the top of the low half.
    let median = exposition.value(name, &[("quantile", "0.5")]).unwrap();
    assert!((median - 0.000199).abs() <= 0.000199 / 100.0, "{median}");
    let p99 = exposition.value(name, &[("quantile", "0.99")]).unwrap();
    assert!((p99 - 0.010098).abs() <= 0.010098 / 100.0, "{p99}");
    // An empty distribution's quantiles are NaN, as Prometheus expects.
    let commit = exposition
        .value(
            "hark_host_store_commit_latency_seconds",
            &[("quantile", "0.99")],
        )
        .unwrap();
    assert!(commit.is_nan());
}

#[test]
fn readiness_renders_and_draining_overrides_it() {
    let registry = Registry::new(&[ShardId::new(1, 0)]);
    assert!(!registry.is_ready());
    registry.set_ready(true);
    assert!(registry.is_ready());
    let text = render_text(&registry);
    assert!(text.contains("\nhark_ready 1\n"));
    registry.set_draining(true);
    assert!(!registry.is_ready());
    assert!(registry.is_draining());
    let text = render_text(&registry);
    assert!(text.contains("\nhark_ready 0\n") && text.contains("\nhark_draining 1\n"));
}

#[test]
fn a_publish_to_a_slot_that_does_not_exist_changes_nothing() {
    let registry = Registry::new(&[ShardId::new(1, 0)]);
    let before = render_text(&registry);
    let mut stats = ShardStats::new();
    stats.counters.frames_in = 5;
    registry.publish(1, &stats);
    registry.publish(usize::MAX, &stats);
    let after = render_text(&registry);
    let strip_age = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with("hark_shard_stats_age_seconds{"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip_age(&before), strip_age(&after));
}

#[test]
fn every_shard_reports_the_age_of_its_statistics() {
    let registry = Registry::new(&[ShardId::new(2, 0), ShardId::new(2, 1)]);
    registry.publish(0, &ShardStats::new());
    let exposition = text_check::parse(&render_text(&registry)).unwrap();
    for shard in ["2-0", "2-1"] {
        let age = exposition
            .value("hark_shard_stats_age_seconds", &[("shard", shard)])
            .unwrap();
        assert!(age >= 0.0 && age.is_finite(), "{shard}: {age}");
    }
}

#[test]
fn a_registry_without_shards_still_renders_valid_text() {
    let registry = Registry::new(&[]);
    let text = render_text(&registry);
    let exposition = text_check::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(exposition.value("hark_ready", &[]), Some(0.0));
    assert_eq!(
        exposition.value("hark_host_relay_latency_seconds_count", &[]),
        Some(0.0)
    );
}

#[test]
fn docs_list_every_metric() {
    let docs = include_str!("../../../docs/metrics.md");
    for name in family_names() {
        assert!(
            docs.contains(&format!("`{name}`")),
            "docs/metrics.md lacks `{name}`"
        );
    }
}

#[test]
fn the_registry_is_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Registry>();
    fn movable<T: Send>() {}
    movable::<ShardStats>();
}

/// A scrape racing with publishes sees whole, monotonic snapshots: every counter of one shard
/// comes from the same publish.
#[test]
fn renders_racing_publishes_see_whole_snapshots() {
    const PUBLISHES: u64 = 2_000;
    let registry = Registry::new(&[ShardId::new(1, 0)]);
    let publisher = {
        let registry = Arc::clone(&registry);
        thread::spawn(move || {
            let mut stats = ShardStats::new();
            for i in 1..=PUBLISHES {
                stats.counters.frames_in = i;
                stats.counters.frames_out = 2 * i;
                stats.record_relay_latency_us(i);
                registry.publish(0, &stats);
            }
        })
    };
    let mut last = 0.0;
    let mut out = String::new();
    loop {
        // Checked before rendering: a render after the publisher finished must see its last
        // publish, which bounds the loop.
        let publisher_done = publisher.is_finished();
        out.clear();
        registry.render_prometheus(&mut out);
        let exposition = text_check::parse(&out).unwrap();
        let shard = [("shard", "1-0")];
        let frames_in = exposition
            .value("hark_frames_received_total", &shard)
            .unwrap();
        let frames_out = exposition.value("hark_frames_sent_total", &shard).unwrap();
        let count = exposition
            .value("hark_relay_latency_seconds_count", &shard)
            .unwrap();
        assert_eq!(frames_out, 2.0 * frames_in);
        assert_eq!(count, frames_in);
        assert!(frames_in >= last);
        last = frames_in;
        if publisher_done {
            assert_eq!(last, PUBLISHES as f64);
            break;
        }
    }
    publisher.join().unwrap();
}

proptest! {
    #[test]
    fn bucket_counts_match_a_direct_count(
        latencies in proptest::collection::vec(
            prop_oneof![0u64..3_000_000, any::<u64>()], 0..200)
    ) {
        let mut latency = LatencyHistogram::new();
        for &us in &latencies {
            latency.record_us(us);
        }
        let capped: Vec<u64> = latencies.iter().map(|&us| us.min(LATENCY_US_MAX)).collect();
        let cumulative = latency.cumulative_bucket_counts();
        for (i, bound) in LATENCY_BUCKET_BOUNDS_US.iter().enumerate() {
            let direct = capped.iter().filter(|&&us| us <= *bound).count() as u64;
            prop_assert_eq!(cumulative[i], direct);
        }
        prop_assert_eq!(cumulative[LATENCY_BUCKETS - 1], latencies.len() as u64);
        prop_assert_eq!(latency.count(), latencies.len() as u64);
        prop_assert_eq!(latency.sum_us(), capped.iter().sum::<u64>());
    }

    #[test]
    fn any_published_counters_render_as_valid_text(
        values in proptest::array::uniform23(any::<u64>()),
        latencies in proptest::collection::vec(any::<u64>(), 0..50),
        host in any::<u16>(),
        core in any::<u16>(),
    ) {
        let registry = Registry::new(&[ShardId::new(host, core)]);
        let mut stats = ShardStats::new();
        let c = &mut stats.counters;
        let fields = [
            &mut c.connections_open, &mut c.connections_accepted, &mut c.connections_refused,
            &mut c.handoffs_out, &mut c.handoffs_in, &mut c.frames_in, &mut c.frames_out,
            &mut c.bytes_in, &mut c.bytes_out, &mut c.send_queue_bytes, &mut c.mesh_queue_depth,
            &mut c.slow_listener_fallbacks, &mut c.messages_started, &mut c.messages_ended,
            &mut c.commits, &mut c.commit_errors, &mut c.commit_bytes,
            &mut c.store_pending_bytes, &mut c.decode_errors, &mut c.peer_link_bytes_out,
            &mut c.peer_link_bytes_in, &mut c.peer_link_failures, &mut c.map_epoch,
            &mut c.messages_handed_over,
        ];
        for (field, value) in fields.into_iter().zip(values) {
            *field = value;
        }
        for us in latencies {
            stats.record_relay_latency_us(us);
            stats.record_commit_latency_us(us / 3);
        }
        registry.publish(0, &stats);
        let text = render_text(&registry);
        let parsed = text_check::parse(&text);
        prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed.err(), text);
        let label = format!("{{shard=\"{host}-{core}\"}} ");
        let decode_errors = format!("hark_decode_errors_total{label}{}\n", values[18]);
        let connections_open = format!("hark_connections_open{label}{}\n", values[0]);
        prop_assert!(text.contains(&decode_errors));
        prop_assert!(text.contains(&connections_open));
    }
}
