//! `hark status` against a real relay: every shard listed with what it has done, the host's
//! readiness and latency summaries; and the one-line errors of a relay that refuses a token
//! or an admin port that is closed.

#[path = "support/cli.rs"]
// The helpers other cli_* tests use are unused here.
#[allow(dead_code)]
mod cli_support;
mod support;

use std::path::Path;
use std::time::Instant;

use cli_support::{FIXTURE, talk_args};
use hark_core::token::Keyring;
use hark_tools::cli::{CliError, status, talk, token};
use support::process::RelayProcess;
use support::{FAST_TALK, QUICK_COMMITS, TWO_SHARDS, WAIT, args};

#[test]
fn status_lists_every_shard_with_the_frames_a_talk_sent() {
    let relay = RelayProcess::start(&args(&[FAST_TALK, QUICK_COMMITS, TWO_SHARDS]));
    let mut talk_out = Vec::new();
    let report = talk::run(
        &talk_args(&relay, "cli-status", Path::new(FIXTURE), true),
        &mut talk_out,
    )
    .unwrap_or_else(|error| relay.fail(&format!("talk failed: {error}")));
    let admin = relay.admin_addr().to_string();

    // Shards publish their statistics every 250 ms: scrape until the talk shows, bounded.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let mut out = Vec::new();
        let status = status::run(&admin, false, &mut out)
            .unwrap_or_else(|error| relay.fail(&format!("status failed: {error}")));
        let received: f64 = status
            .shards
            .values()
            .map(|s| s.get("hark_frames_received_total"))
            .sum();
        if received >= f64::from(report.frame_count) {
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with("relay: ready, 2 shard(s)"), "{text}");
            for shard in status.shards.keys() {
                assert!(
                    text.lines().any(|line| line.starts_with(shard.as_str())),
                    "{shard} in {text}"
                );
            }
            assert!(text.contains("relay latency: p50 "), "{text}");
            assert!(text.contains("commit latency: p50 "), "{text}");
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the talk's {} frames never showed: {status:?}",
            report.frame_count
        );
    };
    assert_eq!(status.shards.len(), 2);
    assert!(status.ready && !status.draining);
    let started: f64 = status
        .shards
        .values()
        .map(|s| s.get("hark_messages_started_total"))
        .sum();
    assert_eq!(started, 1.0);
    assert!(
        status
            .quantiles
            .contains_key(&("hark_host_relay_latency_seconds".into(), "0.99".into()))
    );

    let mut out = Vec::new();
    status::run(&admin, true, &mut out).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(value["ready"], true);
    assert_eq!(value["shards"].as_object().unwrap().len(), 2);
}

#[test]
fn a_refused_token_and_a_closed_admin_port_are_one_line_errors() {
    let relay = RelayProcess::start(&args(&[FAST_TALK]));
    let foreign = Keyring::parse(&format!("key 1 {}\n", "cd".repeat(32))).unwrap();
    let conversation = hark_core::ConvName::new("cli-status").unwrap();
    let token = token::mint(
        &foreign,
        "intruder",
        "talk",
        hark_core::token::Scope::Conversation(conversation),
        600,
    )
    .unwrap();
    let mut args = talk_args(&relay, "cli-status", Path::new(FIXTURE), true);
    args.token = Some(token);
    let error = talk::run(&args, &mut Vec::new()).expect_err("a foreign token is refused");
    assert!(matches!(error, CliError::TokenRefused { .. }), "{error:?}");
    assert_eq!(error.exit_code(), 1);
    assert_eq!(error.to_string().lines().count(), 1, "{error}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let error = status::run(&addr, false, &mut Vec::new()).expect_err("nothing listens");
    assert!(matches!(error, CliError::Admin { .. }), "{error:?}");
    assert!(error.to_string().contains("cannot connect"), "{error}");
}
