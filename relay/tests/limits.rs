//! Limits, each hit with its error code: subscriptions per connection, open talk streams per
//! connection, connections per shard, the idle timeout (with the relay's ping), and the audio
//! payload size.

mod support;

use std::thread;

use hark_core::protocol::{ErrorCode, ErrorSubject, Event, ListenFrom, MessageOutcome};
use hark_tools::client::{Client, ClientError};

use support::heard::Heard;
use support::names::{conv, names_on_distinct_shards};
use support::process::{CLIENT_NAME, RelayProcess};
use support::talk::{
    OPUS_HEAD, expect_closed, expect_error, expect_pong, payloads, read_talk_until,
    read_talk_until_error, send_frames, sized_payload, start_message,
};
use support::{TWO_SHARDS, WAIT, args};

/// Most subscriptions this test opens to reach the announced limit; a relay announcing more
/// fails the test rather than making it slow.
const SUBS_TESTED_MAX: u16 = 1024;

/// Connection attempts after a slot frees up before the test gives up: the relay learns of
/// the close asynchronously, so the first attempts may still be refused (each with the right
/// code).
const RECONNECT_ATTEMPTS_MAX: u32 = 200;

/// Pings a silent connection may get before its idle timeout closes it.
const PINGS_BEFORE_CLOSE_MAX: u32 = 100;

#[test]
fn subscriptions_above_the_announced_limit_are_refused_with_too_many_conversations() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS]));
    let (mut client, info) = relay.session_with(&relay.token_for_all("many"));
    let subs_max = info.limits.subs_max;
    assert!(
        (1..=SUBS_TESTED_MAX).contains(&subs_max),
        "subs_max {subs_max}"
    );
    let mut heard = Heard::new();
    for sub in 1..=u32::from(subs_max) {
        client
            .listen(sub, &conv(&format!("limit-{sub}")), ListenFrom::Live)
            .expect("listen sent");
        heard.read_until(&mut client, WAIT, "listen", |h| h.is_live(sub));
    }
    let over = u32::from(subs_max) + 1;
    client
        .listen(over, &conv("limit-over"), ListenFrom::Live)
        .expect("listen sent");
    expect_error(
        &mut client,
        ErrorCode::TOO_MANY_CONVERSATIONS,
        ErrorSubject::Sub(over),
    );
    // A freed slot can be used again.
    client.unlisten(1).expect("unlisten sent");
    heard.read_until(&mut client, WAIT, "unlisten", |h| !h.is_listening(1));
    client
        .listen(over, &conv("limit-over"), ListenFrom::Live)
        .expect("listen sent");
    heard.read_until(&mut client, WAIT, "listen again", |h| h.is_live(over));
    assert!(heard.others.is_empty(), "{:?}", heard.others);
}

#[test]
fn talk_streams_above_the_announced_limit_are_refused_with_too_many_open_messages() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS]));
    let (conversation, _) = names_on_distinct_shards("streams");
    let (mut client, info) = relay.session_with(&relay.token_for_all("talker"));
    let streams_max = u32::from(info.limits.talk_streams_max);
    assert!(
        (1..=64).contains(&streams_max),
        "talk_streams_max {streams_max}"
    );
    let mut first = start_message(&mut client, 1, &conversation);
    for stream in 2..=streams_max {
        start_message(&mut client, stream, &conversation);
    }
    let over = streams_max + 1;
    client
        .talk_start(over, &conversation, OPUS_HEAD, None)
        .expect("talk_start sent");
    expect_error(
        &mut client,
        ErrorCode::TOO_MANY_OPEN_MESSAGES,
        ErrorSubject::TalkStream(over),
    );
    // The refused handle's frames are dropped silently.
    send_frames(&mut client, over, 0, &payloads(1, 2));
    expect_pong(&mut client, 1);

    // Ending one stream frees its slot.
    client.talk_end(1, 0).expect("talk_end sent");
    read_talk_until(&mut client, 1, &mut first, "talk ended", |p| {
        p.ended_with.is_some()
    });
    assert_eq!(first.ended_with, Some(0));
    start_message(&mut client, over, &conversation);
}

#[test]
fn connections_above_the_shards_limit_are_refused_and_closed() {
    let relay = RelayProcess::start(&["--cores", "0", "--connections-per-shard-max", "3"]);
    let mut sessions: Vec<Client> = (0..3)
        .map(|index| relay.session(&format!("user-{index}")))
        .collect();

    let mut refused = relay.connect();
    expect_error(
        &mut refused,
        ErrorCode::TOO_MANY_CONNECTIONS,
        ErrorSubject::Connection,
    );
    expect_closed(&mut refused);
    for (index, session) in sessions.iter_mut().enumerate() {
        expect_pong(session, index as u64);
    }

    // A closed connection frees its slot.
    drop(sessions.pop());
    let token = relay.token_for_all("late");
    let mut attempts = 0;
    let mut late = loop {
        attempts += 1;
        let mut client = relay.connect();
        match client.hello(&token, CLIENT_NAME) {
            Ok(_) => break client,
            Err(ClientError::Refused { code, text }) => {
                assert_eq!(code, ErrorCode::TOO_MANY_CONNECTIONS, "{text}");
                assert!(
                    attempts < RECONNECT_ATTEMPTS_MAX,
                    "the freed slot was never given out"
                );
            }
            Err(error) => panic!("attempt {attempts}: {error}"),
        }
    };
    expect_pong(&mut late, 7);
}

#[test]
fn a_silent_connection_is_pinged_then_closed_and_one_that_answers_stays() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS, &["--idle-timeout-ms", "1000"]]));
    let (mut silent, info) = relay.session_with(&relay.token_for_all("silent"));
    assert_eq!(info.limits.idle_timeout_ms, 1000);
    let mut answering = relay.session("answering");

    thread::scope(|scope| {
        scope.spawn(|| {
            let mut pings = 0;
            loop {
                match silent.next_event(WAIT) {
                    Ok(Event::Ping { .. }) if pings < PINGS_BEFORE_CLOSE_MAX => pings += 1,
                    Ok(Event::Error {
                        code: ErrorCode::IDLE_TIMEOUT,
                        about: ErrorSubject::Connection,
                        ..
                    }) => break,
                    other => panic!("expected pings, then idle_timeout, got {other:?}"),
                }
            }
            assert!(pings >= 1, "the relay pings before it gives up");
            expect_closed(&mut silent);
        });
        // Four pings answered: at least two idle timeouts of silence otherwise.
        for _ in 0..4 {
            match answering.next_event(WAIT) {
                Ok(Event::Ping { nonce }) => answering.pong(nonce).expect("pong sent"),
                other => panic!("expected the relay's ping, got {other:?}"),
            }
        }
        expect_pong(&mut answering, 3);
    });
}

#[test]
fn an_audio_payload_above_the_limit_ends_the_message_truncated() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS]));
    let (conversation, _) = names_on_distinct_shards("payload");
    let mut listener = relay.session("listener");
    let mut heard = Heard::new();
    listener
        .listen(1, &conversation, ListenFrom::Live)
        .expect("listen sent");
    heard.read_until(&mut listener, WAIT, "listen", |h| h.is_live(1));

    let (mut talker, info) = relay.session_with(&relay.token_for_all("talker"));
    let limit = info.limits.audio_payload_len_max as usize;
    let mut talk = start_message(&mut talker, 1, &conversation);
    let msg_id = talk.msg_id();
    let sent = vec![
        sized_payload(1, 0, 100),
        sized_payload(1, 1, limit),
        sized_payload(1, 2, limit + 1),
    ];
    send_frames(&mut talker, 1, 0, &sent);
    read_talk_until_error(&mut talker, 1, &mut talk, ErrorCode::PAYLOAD_TOO_LARGE);
    heard.read_until(&mut listener, WAIT, "truncated", |h| h.has_ended(1, msg_id));
    let message = heard.message(1, msg_id);
    assert_eq!(
        message.payloads(),
        sent[..2].to_vec(),
        "a payload at the limit passes"
    );
    assert_eq!(message.end, Some((2, MessageOutcome::Truncated)));
}
