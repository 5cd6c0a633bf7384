//! Every limit and protocol violation of docs/protocol.md section 5 gives its code, closes
//! where the doc says so, and leaves other sessions alone.

use super::*;
use crate::protocol::{DecodeError, ErrorSubject};

/// A bystander talking and listening while a misbehaving client is refused: it must be
/// unaffected.
fn bystander(host: &mut Host) -> (Client, Client) {
    let listener = host.client();
    host.listen(listener, 1, "bystander", ListenFrom::Live);
    let talker = host.client();
    host.talk_start(talker, 1, "bystander");
    (talker, listener)
}

fn bystander_still_works(host: &mut Host, (talker, listener): (Client, Client), seq: u32) {
    host.frame(talker, 1, seq, b"still here");
    let msg = host.talk_started(talker, 1);
    assert_eq!(
        heard(host.events(listener))[&msg].frames.len() as u32,
        seq + 1
    );
    assert!(host.errors(talker).is_empty() && host.errors(listener).is_empty());
}

fn error_and_close(host: &mut Host, client: Client, code: ErrorCode) {
    assert_eq!(host.errors(client), vec![code]);
    assert!(host.is_closed(client), "{code:?} closes");
}

#[test]
fn session_violations_close_with_their_code() {
    let mut host = Host::new(ShardConfig::default());
    let b = bystander(&mut host);
    let c = host.connect_on(0);
    host.request(c, Request::Ping { nonce: 1 });
    error_and_close(&mut host, c, ErrorCode::HELLO_REQUIRED);

    let c = host.connect_on(0);
    host.request(
        c,
        Request::Hello {
            version: 0,
            token: full_token(),
            client_name: "x".into(),
        },
    );
    error_and_close(&mut host, c, ErrorCode::UNSUPPORTED_VERSION);

    let c = host.connect_on(0);
    host.hello(c, Bytes::new());
    error_and_close(&mut host, c, ErrorCode::TOKEN_MISSING);

    let c = host.connect_on(0);
    host.hello(c, Bytes::from_static(b"hk1.AAAA"));
    error_and_close(&mut host, c, ErrorCode::TOKEN_INVALID);

    let c = host.connect_on(0);
    host.hello(c, token(&[Right::Talk], "", 1_700_000_000));
    error_and_close(&mut host, c, ErrorCode::TOKEN_EXPIRED);

    let c = host.client();
    host.hello(c, full_token());
    error_and_close(&mut host, c, ErrorCode::UNEXPECTED_REQUEST);

    let c = host.client();
    let (shard, conn) = host.location[&c];
    let error = DecodeError::UnknownType { type_code: 0x3f };
    host.shards[shard].decode_failed(host.now_us, conn, &error);
    host.run();
    error_and_close(&mut host, c, ErrorCode::UNKNOWN_TYPE);

    bystander_still_works(&mut host, b, 0);
}

#[test]
fn dev_mode_accepts_an_empty_token_on_loopback_only() {
    let mut host = Host::new(ShardConfig {
        dev_mode: true,
        ..ShardConfig::default()
    });
    let c = host.connect_on(0);
    host.hello(c, Bytes::new());
    assert!(matches!(host.events(c)[0], Event::HelloAccepted { .. }));
    let (shard, conn) = match host.shards[0].connection_opened(host.now_us, false) {
        Opened::Accepted(conn) => (0, conn),
        Opened::Refused { .. } => panic!("room for a connection"),
    };
    let remote = Client(999);
    host.location.insert(remote, (shard, conn));
    host.hello(remote, Bytes::new());
    error_and_close(&mut host, remote, ErrorCode::TOKEN_MISSING);
}

#[test]
fn authorisation_refusals_do_not_close() {
    let mut host = Host::new(ShardConfig::default());
    let c = host.connect_on(0);
    host.hello(c, token(&[Right::Listen], "team/", 1_900_000_000));
    host.talk_start(c, 1, "team/a");
    host.listen(c, 2, "other", ListenFrom::Live);
    host.listen(c, 3, "team/a", ListenFrom::Since(0));
    host.listen(c, 4, "team/a", ListenFrom::Live);
    assert_eq!(
        host.errors(c),
        vec![
            ErrorCode::RIGHT_MISSING,
            ErrorCode::OUT_OF_SCOPE,
            ErrorCode::RIGHT_MISSING
        ]
    );
    assert!(host.events(c).contains(&Event::Listening { sub: 4 }));
    assert!(!host.is_closed(c));
    // Frames of the refused talk start are dropped silently.
    host.frame(c, 1, 0, b"x");
    assert_eq!(host.errors(c).len(), 3);
}

#[test]
fn talk_stream_violations_give_their_codes_and_truncate() {
    let config = ShardConfig {
        audio_payload_len_max: 10,
        frames_per_second_max: 50,
        rate_burst_frames: 5,
        talk_streams_max: 2,
        ..ShardConfig::default()
    };
    let mut host = Host::new(config);
    let b = bystander(&mut host);
    let listener = host.client();
    host.listen(listener, 1, "general", ListenFrom::Live);
    let c = host.client();
    // unknown_stream, reported once per handle.
    host.frame(c, 9, 0, b"x");
    host.frame(c, 9, 1, b"x");
    host.request(
        c,
        Request::TalkEnd {
            stream: 9,
            frame_count: 2,
        },
    );
    assert_eq!(host.errors(c), vec![ErrorCode::UNKNOWN_STREAM]);
    // duplicate_stream leaves the open stream alone.
    host.talk_start(c, 1, "general");
    host.talk_start(c, 1, "general");
    host.frame(c, 1, 0, b"ok");
    // too_many_open_messages (talk_streams_max = 2).
    host.talk_start(c, 2, "general");
    host.talk_start(c, 3, "general");
    // seq_gap on stream 1, payload_too_large on stream 2.
    host.frame(c, 1, 5, b"x");
    host.frame(c, 2, 0, &[0; 11]);
    assert_eq!(
        host.errors(c)[1..],
        [
            ErrorCode::DUPLICATE_STREAM,
            ErrorCode::TOO_MANY_OPEN_MESSAGES,
            ErrorCode::SEQ_GAP,
            ErrorCode::PAYLOAD_TOO_LARGE
        ]
    );
    // rate_limited: a burst of 5 is allowed, sustained faster than real time is not.
    host.talk_start(c, 4, "general");
    for seq in 0..5 {
        host.frame(c, 4, seq, b"r");
    }
    assert_eq!(host.errors(c).len(), 5);
    host.now_us += 20_000;
    host.frame(c, 4, 5, b"r");
    assert_eq!(
        host.errors(c).len(),
        5,
        "one frame interval later one more frame fits"
    );
    host.frame(c, 4, 6, b"r");
    assert_eq!(host.errors(c).last(), Some(&ErrorCode::RATE_LIMITED));
    // Each cut message ended truncated at the frames received.
    let ended: Vec<_> = heard(host.events(listener))
        .values()
        .filter_map(|h| h.ended)
        .collect();
    assert_eq!(ended.len(), 3);
    assert!(
        ended
            .iter()
            .all(|e| e.1 == crate::protocol::MessageOutcome::Truncated)
    );
    assert!(!host.is_closed(c));
    bystander_still_works(&mut host, b, 0);
}

#[test]
fn subscription_violations_and_limits() {
    let config = ShardConfig {
        subs_max: 2,
        ..ShardConfig::default()
    };
    let mut host = Host::new(config);
    let c = host.client();
    host.listen(c, 1, "a", ListenFrom::Live);
    host.listen(c, 1, "b", ListenFrom::Live);
    host.listen(c, 2, "b", ListenFrom::Live);
    host.listen(c, 3, "c", ListenFrom::Live);
    host.request(c, Request::Unlisten { sub: 9 });
    host.listen(c, 4, "c", ListenFrom::Message(MsgId((1 << 48) | 12345)));
    host.request(c, Request::Unlisten { sub: 1 });
    host.listen(c, 4, "c", ListenFrom::Message(MsgId((1 << 48) | 12345)));
    assert_eq!(
        host.errors(c),
        vec![
            ErrorCode::DUPLICATE_SUB,
            ErrorCode::TOO_MANY_CONVERSATIONS,
            ErrorCode::UNKNOWN_SUB,
            ErrorCode::TOO_MANY_CONVERSATIONS,
            ErrorCode::MESSAGE_UNAVAILABLE
        ]
    );
    assert!(host.events(c).contains(&Event::Unlistened { sub: 1 }));
}

#[test]
fn connections_per_shard_are_bounded() {
    let mut host = Host::new(ShardConfig {
        connections_max: 2,
        ..ShardConfig::default()
    });
    let a = host.client();
    let _b = host.client();
    let c = host.connect_on(0);
    error_and_close(&mut host, c, ErrorCode::TOO_MANY_CONNECTIONS);
    assert!(!host.is_closed(a));
}

#[test]
fn idle_connections_are_pinged_then_closed() {
    let mut host = Host::new(ShardConfig {
        idle_timeout_ms: 1_000,
        ..ShardConfig::default()
    });
    let quiet = host.client();
    let chatty = host.client();
    host.advance_ms(600);
    assert!(matches!(
        host.events(quiet).last(),
        Some(Event::Ping { .. })
    ));
    host.request(chatty, Request::Pong { nonce: 1 });
    host.advance_ms(500);
    error_and_close(&mut host, quiet, ErrorCode::IDLE_TIMEOUT);
    assert!(!host.is_closed(chatty));
}

#[test]
fn a_client_that_stops_reading_is_closed_at_the_hard_cap() {
    let config = ShardConfig {
        send_queue_bytes_hard_max: 200,
        ..ShardConfig::default()
    };
    let mut host = Host::new(config);
    let c = host.client();
    host.stalled.push(c);
    for nonce in 0..20 {
        host.request(c, Request::Ping { nonce });
    }
    assert!(host.is_closed(c));
}

#[test]
fn store_failures_are_store_unavailable() {
    let mut host = Host::new(ShardConfig::default());
    let c = host.client();
    host.shard().store_mut().fail_writes = true;
    host.talk_start(c, 1, "general");
    assert_eq!(host.errors(c), vec![ErrorCode::STORE_UNAVAILABLE]);
    host.shard().store_mut().fail_writes = false;
    host.talk_start(c, 2, "general");
    host.shard().store_mut().fail_writes = true;
    host.frame(c, 2, 0, b"x");
    assert_eq!(host.errors(c).last(), Some(&ErrorCode::STORE_UNAVAILABLE));
}

#[test]
fn shutdown_sends_go_away_truncates_and_refuses_new_work() {
    let mut host = Host::new(ShardConfig {
        shutdown_linger_ms: 1_000,
        ..ShardConfig::default()
    });
    let listener = host.client();
    host.listen(listener, 1, "general", ListenFrom::Live);
    let talker = host.client();
    host.talk_start(talker, 1, "general");
    let msg = host.talk_started(talker, 1);
    host.frame(talker, 1, 0, b"x");
    host.shards[0].begin_shutdown(host.now_us);
    host.run();
    assert!(
        host.events(listener)
            .iter()
            .any(|e| matches!(e, Event::GoAway { .. }))
    );
    assert_eq!(
        heard(host.events(listener))[&msg].ended,
        Some((1, crate::protocol::MessageOutcome::Truncated))
    );
    assert!(host.events(talker).iter().any(|e| matches!(
        e,
        Event::Error {
            code: ErrorCode::SHUTTING_DOWN,
            about: ErrorSubject::TalkStream(1),
            ..
        }
    )));
    host.talk_start(talker, 2, "general");
    host.listen(listener, 2, "general", ListenFrom::Live);
    assert_eq!(host.errors(talker).last(), Some(&ErrorCode::SHUTTING_DOWN));
    assert_eq!(
        host.errors(listener).last(),
        Some(&ErrorCode::SHUTTING_DOWN)
    );
    host.advance_ms(1_000);
    assert!(host.is_closed(listener) && host.is_closed(talker));
}

#[test]
fn a_cluster_drain_deals_the_live_hosts_round_robin_in_go_aways() {
    let mut host = Host::new(ShardConfig::default());
    let clients: Vec<_> = (0..3).map(|_| host.client()).collect();
    let too_long = format!("{}:1", "h".repeat(crate::protocol::ADDRESS_LEN_MAX));
    let live = [
        "10.0.0.1:7400".to_owned(),
        too_long,
        "10.0.0.2:7400".to_owned(),
    ];
    host.shards[0].begin_shutdown_with(host.now_us, &live);
    // A second call changes nothing: the first one's go_aways stand.
    host.shards[0].begin_shutdown_with(host.now_us, &["10.9.9.9:1".to_owned()]);
    host.run();
    let told: Vec<Vec<String>> = clients
        .iter()
        .map(|&c| {
            host.events(c)
                .iter()
                .filter_map(|e| match e {
                    Event::GoAway { reconnect_to, .. } => Some(reconnect_to.clone()),
                    _ => None,
                })
                .collect()
        })
        .collect();
    assert_eq!(
        told,
        vec![
            vec!["10.0.0.1:7400".to_owned()],
            vec!["10.0.0.2:7400".to_owned()],
            vec!["10.0.0.1:7400".to_owned()],
        ]
    );
}

#[test]
fn a_client_that_says_hello_to_a_draining_relay_is_sent_on_at_once() {
    let mut host = Host::new(ShardConfig::default());
    let live = ["10.0.0.1:7400".to_owned(), "10.0.0.2:7400".to_owned()];
    host.shards[0].begin_shutdown_with(host.now_us, &live);
    host.run();
    let late = host.client();
    let events = host.events(late);
    assert!(
        matches!(events.first(), Some(Event::HelloAccepted { .. })),
        "{events:?}"
    );
    assert!(
        matches!(
            events.get(1),
            Some(Event::GoAway { reconnect_to, .. }) if reconnect_to == "10.0.0.1:7400"
        ),
        "{events:?}"
    );
}

#[test]
fn a_single_host_drain_names_no_address() {
    let mut host = Host::new(ShardConfig::default());
    let c = host.client();
    host.shards[0].begin_shutdown(host.now_us);
    host.run();
    let told: Vec<&Event> = host
        .events(c)
        .iter()
        .filter(|e| matches!(e, Event::GoAway { .. }))
        .collect();
    assert_eq!(
        told,
        vec![&Event::GoAway {
            reason: crate::protocol::GoAwayReason::DRAINING,
            reconnect_to: String::new(),
        }]
    );
}
