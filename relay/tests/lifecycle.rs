//! The relay as an operator runs it: SIGTERM ends live messages truncated and exits 0, a
//! restart with another core count serves all history, the admin endpoint answers, dev mode
//! works on loopback, and the epoll fallback serves like io_uring.

mod support;

use std::ffi::OsString;

use bytes::Bytes;
use hark_core::protocol::{Event, FrameKind, HistoryEntry, ListenFrom, MessageOutcome};
use hark_core::{ConvName, MsgId};
use hark_tools::client::Client;

use hark_tools::cli::status::parse_metrics;
use support::admin::get;
use support::heard::Heard;
use support::names::{conv_on_core, names_on_distinct_shards};
use support::process::{CLIENT_NAME, RelayOptions, RelayProcess, exited_cleanly};
use support::talk::{payloads, read_talk_until, send_frames, start_message, talk_message};
use support::{FAST_TALK, QUICK_COMMITS, TWO_SHARD_CORES, TWO_SHARDS, WAIT, args};

/// Reads one history page of `conversation` (from the start, up to 100 entries).
fn history(client: &mut Client, request: u32, conversation: &ConvName) -> Vec<HistoryEntry> {
    client
        .history(request, conversation, 0, 100)
        .expect("history sent");
    match client.next_event(WAIT) {
        Ok(Event::HistoryPage {
            request: answered,
            entries,
            more: false,
        }) if answered == request => entries,
        other => panic!("expected history page {request} of {conversation}, got {other:?}"),
    }
}

/// Asserts `entry` is `msg_id` with `frame_count` frames and `outcome`, by `sender`.
fn assert_entry(
    entry: &HistoryEntry,
    msg_id: MsgId,
    sender: &str,
    frame_count: u32,
    outcome: MessageOutcome,
) {
    assert_eq!(
        (
            entry.msg_id,
            entry.sender.as_str(),
            entry.frame_count,
            entry.outcome
        ),
        (msg_id, sender, frame_count, outcome),
        "{entry:?}"
    );
}

/// Replays `msg_id` of `conversation` from the store and returns its payloads and end.
fn replay(
    relay: &RelayProcess,
    conversation: &ConvName,
    msg_id: MsgId,
) -> (Vec<Bytes>, Option<(u32, MessageOutcome)>) {
    let mut client = relay.session("replayer");
    let mut heard = Heard::new();
    client
        .listen(1, conversation, ListenFrom::Message(msg_id))
        .expect("listen sent");
    heard.read_until(&mut client, WAIT, "replay a stored message", |h| {
        h.is_live(1)
    });
    let message = heard.message(1, msg_id);
    assert_eq!(message.count_of(FrameKind::Replay), message.frames.len());
    (message.payloads(), message.end)
}

#[test]
fn sigterm_exits_zero_and_live_messages_end_truncated_visible_after_restart() {
    let mut relay = RelayProcess::start(&args(&[TWO_SHARDS, FAST_TALK, QUICK_COMMITS]));
    let (on_zero, on_one) = names_on_distinct_shards("sigterm");

    let mut talker = relay.session("talker");
    let complete_sent = payloads(1, 10);
    let complete = talk_message(&mut talker, 1, &on_zero, &complete_sent);

    // One talker stays connected through the shutdown; the other vanished before it.
    let mut live_talks = Vec::new();
    for (conversation, seed) in [(&on_zero, 2), (&on_one, 3)] {
        let mut client = relay.session("talker");
        let mut talk = start_message(&mut client, 2, conversation);
        let sent = payloads(seed, 30);
        send_frames(&mut client, 2, 0, &sent);
        read_talk_until(&mut client, 2, &mut talk, "stored", |p| {
            p.frames_stored == 30
        });
        live_talks.push((client, conversation.clone(), talk.msg_id(), sent));
    }
    let vanished = live_talks.pop().expect("two talks above");
    let connected = live_talks.pop().expect("two talks above");
    vanished.0.abort().expect("abort");

    let status = relay.sigterm_and_wait();
    assert!(exited_cleanly(status), "SIGTERM exits 0, got {status:?}");
    drop(connected.0);

    relay.restart();
    let mut reader = relay.session("reader");
    let on_zero_history = history(&mut reader, 1, &on_zero);
    assert_eq!(on_zero_history.len(), 2, "{on_zero_history:?}");
    assert_entry(
        &on_zero_history[0],
        complete,
        "talker",
        10,
        MessageOutcome::Complete,
    );
    assert_entry(
        &on_zero_history[1],
        connected.2,
        "talker",
        30,
        MessageOutcome::Truncated,
    );
    let on_one_history = history(&mut reader, 2, &on_one);
    assert_eq!(on_one_history.len(), 1, "{on_one_history:?}");
    assert_entry(
        &on_one_history[0],
        vanished.2,
        "talker",
        30,
        MessageOutcome::Truncated,
    );

    assert_eq!(
        replay(&relay, &on_zero, connected.2),
        (connected.3, Some((30, MessageOutcome::Truncated)))
    );
    assert_eq!(
        replay(&relay, &on_one, vanished.2),
        (vanished.3, Some((30, MessageOutcome::Truncated)))
    );
    assert_eq!(
        replay(&relay, &on_zero, complete),
        (complete_sent, Some((10, MessageOutcome::Complete)))
    );
}

/// Talks one 12-frame message on each conversation and records it in `talked`.
fn talk_round(
    relay: &RelayProcess,
    round: u64,
    conversations: &[ConvName],
    talked: &mut [Vec<(MsgId, Vec<Bytes>)>],
) {
    let mut talker = relay.session("talker");
    for (index, conversation) in conversations.iter().enumerate() {
        let sent = payloads(round * 100 + index as u64, 12);
        let msg_id = talk_message(&mut talker, 1, conversation, &sent);
        talked[index].push((msg_id, sent));
    }
}

#[test]
fn restarting_with_another_core_count_keeps_all_history_reachable() {
    let mut relay = RelayProcess::start(&args(&[TWO_SHARDS, FAST_TALK]));
    let conversations: Vec<ConvName> = [0, 0, 1, 1]
        .iter()
        .enumerate()
        .map(|(index, core)| conv_on_core(&format!("cores-{index}"), *core, TWO_SHARD_CORES))
        .collect();
    let mut talked: Vec<Vec<(MsgId, Vec<Bytes>)>> = vec![Vec::new(); conversations.len()];
    talk_round(&relay, 1, &conversations, &mut talked);
    assert!(exited_cleanly(relay.sigterm_and_wait()));

    // Two shards' history on one shard, then one shard's history on two.
    for (round, cores) in [(2, "0"), (3, "0,1")] {
        relay.restart_with(&args(&[&["--cores", cores], FAST_TALK]));
        let mut reader = relay.session("reader");
        for (index, conversation) in conversations.iter().enumerate() {
            let entries = history(&mut reader, index as u32, conversation);
            assert_eq!(
                entries.len(),
                talked[index].len(),
                "{conversation}: {entries:?}"
            );
            for (entry, (msg_id, sent)) in entries.iter().zip(&talked[index]) {
                assert_entry(entry, *msg_id, "talker", 12, MessageOutcome::Complete);
                assert_eq!(
                    replay(&relay, conversation, *msg_id),
                    (sent.clone(), Some((12, MessageOutcome::Complete)))
                );
            }
        }
        drop(reader);
        talk_round(&relay, round, &conversations, &mut talked);
        assert!(exited_cleanly(relay.sigterm_and_wait()));
    }
}

#[test]
fn the_admin_endpoint_answers_health_readiness_and_metrics() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS, FAST_TALK]));
    // Some traffic, so the counters have something to count.
    let (conversation, _) = names_on_distinct_shards("admin");
    let mut talker = relay.session("talker");
    talk_message(&mut talker, 1, &conversation, &payloads(1, 10));

    for path in ["/health", "/ready"] {
        let response = get(relay.admin_addr(), path);
        assert_eq!(response.status, 200, "{path}: {response:?}");
    }
    let metrics = get(relay.admin_addr(), "/metrics");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    let content_type = metrics.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "Prometheus text, got {content_type:?}"
    );
    let samples = parse_metrics(&metrics.body)
        .unwrap_or_else(|problem| panic!("{problem}\n{}", metrics.body));
    assert!(!samples.is_empty(), "no samples in {:?}", metrics.body);
}

#[test]
fn dev_mode_accepts_an_empty_token_on_loopback() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS, &["--dev-mode"]]));
    let mut talker = relay.connect();
    talker.hello("", CLIENT_NAME).expect("dev mode accepts");
    let mut listener = relay.connect();
    listener.hello("", CLIENT_NAME).expect("dev mode accepts");
    let (conversation, _) = names_on_distinct_shards("dev");
    let mut heard = Heard::new();
    listener
        .listen(1, &conversation, ListenFrom::Live)
        .expect("listen sent");
    heard.read_until(&mut listener, WAIT, "listen", |h| h.is_live(1));
    let sent = payloads(1, 10);
    let msg_id = talk_message(&mut talker, 1, &conversation, &sent);
    heard.read_until(&mut listener, WAIT, "hear", |h| h.has_ended(1, msg_id));
    let message = heard.message(1, msg_id);
    assert_eq!(message.payloads(), sent);
    assert_eq!(message.sender, "dev", "dev mode's subject");
}

#[test]
fn the_epoll_fallback_relays_like_io_uring() {
    let relay = RelayProcess::start_with(
        &args(&[TWO_SHARDS, FAST_TALK]),
        RelayOptions {
            env: vec![(
                OsString::from("MONOIO_FORCE_LEGACY_DRIVER"),
                OsString::from("1"),
            )],
            data_dir: None,
            ip: None,
        },
    );
    let (on_zero, on_one) = names_on_distinct_shards("epoll");
    let mut listener = relay.session("listener");
    let mut heard = Heard::new();
    for (sub, conversation) in [(1, &on_zero), (2, &on_one)] {
        listener
            .listen(sub, conversation, ListenFrom::Live)
            .expect("listen sent");
        heard.read_until(&mut listener, WAIT, "listen", |h| h.is_live(sub));
    }
    let mut talker = relay.session("talker");
    for (sub, conversation) in [(1, &on_zero), (2, &on_one)] {
        let sent = payloads(u64::from(sub), 50);
        let msg_id = talk_message(&mut talker, 1, conversation, &sent);
        heard.read_until(&mut listener, WAIT, "hear", |h| h.has_ended(sub, msg_id));
        assert_eq!(heard.message(sub, msg_id).payloads(), sent);
    }
}
