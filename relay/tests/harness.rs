//! The harness's own checks: the checkers the relay tests rely on must catch what they claim
//! to catch, or a relay test could pass for the wrong reason. No relay process runs here.

mod support;

use bytes::Bytes;
use hark_core::protocol::{Event, FrameKind, MessageOutcome};
use hark_core::{MsgId, ShardId};

use support::admin::parse_response;
use support::heard::{Heard, OTHER_EVENTS_MAX};
use support::names::{conv, conv_on_core, membership, names_on_distinct_shards, owner_core};
use support::process::{keep_tail, parse_listening_line};
use support::talk::{PAYLOAD_LEN_MAX, PAYLOAD_LEN_MIN, payload, sized_payload};

fn msg(counter: u32) -> MsgId {
    MsgId::from_parts(1_767_225_600_000_000, ShardId::new(0, 0), counter)
}

fn started(sub: u32, stream: u32, counter: u32) -> Event {
    Event::MessageStarted {
        sub,
        stream,
        msg_id: msg(counter),
        conversation: conv("general"),
        sender: "alice".to_owned(),
        codec: Bytes::new(),
    }
}

fn frame(stream: u32, seq: u32, kind: FrameKind) -> Event {
    Event::Frame {
        stream,
        seq,
        kind,
        payload: payload(1, seq),
    }
}

/// A transcript that has heard `listening` and `caught_up` on sub 1 and a message start on
/// stream 9.
fn live_transcript() -> Heard {
    let mut heard = Heard::new();
    for event in [
        Event::Listening { sub: 1 },
        Event::CaughtUp { sub: 1 },
        started(1, 9, 0),
    ] {
        heard.record(event).expect("a valid opening");
    }
    heard
}

#[test]
fn the_listening_line_gives_both_addresses_and_the_shard_count() {
    let parsed = parse_listening_line(
        "hark-relay listening client=127.0.0.1:4100 admin=127.0.0.1:4101 shards=2",
    );
    assert_eq!(
        parsed,
        Ok((
            "127.0.0.1:4100".parse().expect("address"),
            "127.0.0.1:4101".parse().expect("address"),
            2
        ))
    );
    assert!(
        parse_listening_line("hark-relay listening client=x admin=127.0.0.1:1 shards=2").is_err()
    );
    assert!(parse_listening_line("hark-relay listening admin=127.0.0.1:1 shards=1").is_err());
    assert!(parse_listening_line("hark-relay started").is_err());
}

#[test]
fn names_land_on_the_shard_they_are_chosen_for() {
    let (on_zero, on_one) = names_on_distinct_shards("fanout");
    assert_eq!(owner_core(&[0, 1], &on_zero), 0);
    assert_eq!(owner_core(&[0, 1], &on_one), 1);
    for core in [0, 1] {
        let name = conv_on_core("x", core, &[0, 1]);
        assert_eq!(owner_core(&[0, 1], &name), core);
    }
    // One core owns everything.
    assert_eq!(owner_core(&[0], &on_one), 0);
    // The map is the one hark-core documents: host 0's shards, equal weights.
    let map = membership(&[0, 1]);
    assert_eq!(map.shards().len(), 2);
    assert!(map.contains(ShardId::new(0, 1)));
}

#[test]
fn a_whole_message_in_order_is_accepted() {
    let mut heard = live_transcript();
    for seq in 0..3 {
        heard
            .record(frame(9, seq, FrameKind::Live))
            .expect("in order");
    }
    heard
        .record(Event::MessageEnded {
            stream: 9,
            frame_count: 3,
            outcome: MessageOutcome::Complete,
        })
        .expect("counts agree");
    let message = heard.message(1, msg(0));
    assert_eq!(
        message.payloads(),
        (0..3).map(|seq| payload(1, seq)).collect::<Vec<_>>()
    );
    assert_eq!(message.end, Some((3, MessageOutcome::Complete)));
    assert_eq!(heard.sub(1).fallbacks, 0);
}

#[test]
fn duplicates_gaps_and_reorders_are_caught() {
    let mut heard = live_transcript();
    heard.record(frame(9, 0, FrameKind::Live)).expect("first");
    assert!(
        heard.record(frame(9, 0, FrameKind::Live)).is_err(),
        "duplicate"
    );
    let mut heard = live_transcript();
    assert!(heard.record(frame(9, 1, FrameKind::Live)).is_err(), "gap");
    let mut heard = live_transcript();
    assert!(
        heard.record(frame(8, 0, FrameKind::Live)).is_err(),
        "unknown stream"
    );
    assert!(
        heard.record(started(1, 10, 0)).is_err(),
        "message started twice"
    );
    assert!(
        heard.record(started(1, 9, 1)).is_err(),
        "stream reused while open"
    );
}

#[test]
fn an_end_that_miscounts_the_delivered_frames_is_caught() {
    let mut heard = live_transcript();
    heard.record(frame(9, 0, FrameKind::Live)).expect("first");
    let end = Event::MessageEnded {
        stream: 9,
        frame_count: 2,
        outcome: MessageOutcome::Complete,
    };
    assert!(heard.record(end).is_err());
}

#[test]
fn live_before_caught_up_is_caught_and_replay_after_it_counts_as_a_fallback() {
    let mut heard = Heard::new();
    heard.record(Event::Listening { sub: 1 }).expect("open");
    heard.record(started(1, 9, 0)).expect("start");
    heard
        .record(frame(9, 0, FrameKind::Replay))
        .expect("replay first");
    assert!(heard.record(frame(9, 1, FrameKind::Live)).is_err());

    let mut heard = live_transcript();
    heard.record(frame(9, 0, FrameKind::Live)).expect("live");
    heard
        .record(frame(9, 1, FrameKind::Replay))
        .expect("fallback");
    assert_eq!(heard.sub(1).fallbacks, 1);
    assert!(
        heard.record(frame(9, 2, FrameKind::Live)).is_err(),
        "live before caught_up again"
    );
    heard
        .record(Event::CaughtUp { sub: 1 })
        .expect("caught up again");
    heard
        .record(frame(9, 2, FrameKind::Live))
        .expect("live again");
    assert_eq!(heard.sub(1).caught_up_count, 2);
    assert!(
        heard.record(Event::CaughtUp { sub: 1 }).is_err(),
        "caught_up while live"
    );
}

#[test]
fn events_for_closed_subs_are_caught_and_others_are_kept_in_order() {
    let mut heard = live_transcript();
    heard.record(Event::Unlistened { sub: 1 }).expect("close");
    assert!(
        heard.record(frame(9, 0, FrameKind::Live)).is_err(),
        "stream released"
    );
    assert!(heard.record(Event::CaughtUp { sub: 1 }).is_err());
    heard.record(Event::Pong { nonce: 1 }).expect("kept");
    heard.record(Event::Pong { nonce: 2 }).expect("kept");
    assert_eq!(
        heard.others,
        vec![Event::Pong { nonce: 1 }, Event::Pong { nonce: 2 }]
    );
}

#[test]
fn payloads_are_reproducible_distinct_and_voice_sized() {
    assert_eq!(payload(7, 3), payload(7, 3));
    assert_ne!(payload(7, 3), payload(7, 4));
    assert_ne!(payload(7, 3), payload(8, 3));
    for seq in 0..1000 {
        let len = payload(5, seq).len();
        assert!((PAYLOAD_LEN_MIN..=PAYLOAD_LEN_MAX).contains(&len), "{len}");
    }
    assert_eq!(sized_payload(1, 2, 1000).len(), 1000);
}

#[test]
fn http_responses_with_length_or_chunks_are_parsed() {
    let plain = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").expect("valid");
    assert_eq!((plain.status, plain.body.as_str()), (200, "ok"));
    let chunked = parse_response(
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n6\r\n ready\r\n0\r\n\r\n",
    )
    .expect("valid");
    assert_eq!((chunked.status, chunked.body.as_str()), (503, "not ready"));
    assert!(parse_response(b"garbage").is_err());
}

#[test]
fn a_relay_that_floods_a_listener_with_unexpected_events_is_caught_at_the_bound() {
    let mut heard = Heard::new();
    for nonce in 0..OTHER_EVENTS_MAX as u64 {
        heard
            .record(Event::Pong { nonce })
            .expect("under the bound");
    }
    assert!(heard.record(Event::Pong { nonce: 0 }).is_err());
    assert_eq!(heard.others.len(), OTHER_EVENTS_MAX);
}

#[test]
fn kept_output_is_the_newest_tail() {
    let mut buffer = Vec::new();
    keep_tail(&mut buffer, b"abcdef", 4);
    assert_eq!(buffer, b"cdef");
    keep_tail(&mut buffer, b"gh", 4);
    assert_eq!(buffer, b"efgh");
}

#[test]
#[should_panic(expected = "is owned by core 5")]
fn a_name_search_for_a_core_the_relay_does_not_run_gives_up() {
    conv_on_core("nowhere", 5, &[0, 1]);
}
