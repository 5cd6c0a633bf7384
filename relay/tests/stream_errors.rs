//! Misused talk streams and subscriptions: each misuse gets its error code about the right
//! stream or subscription, the connection stays open, and what the protocol says about the
//! message (ended truncated, or untouched) holds for its listeners.

mod support;

use hark_core::protocol::{ErrorCode, ErrorSubject, ListenFrom, MessageOutcome};
use hark_core::{MsgId, ShardId};

use support::heard::Heard;
use support::names::names_on_distinct_shards;
use support::process::RelayProcess;
use support::talk::{
    OPUS_HEAD, expect_error, expect_pong, payloads, read_talk_until, read_talk_until_error,
    send_frames, start_message,
};
use support::{TWO_SHARDS, WAIT, args};

#[test]
fn a_seq_gap_ends_the_message_truncated_at_the_frames_before_it() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS]));
    let (conversation, _) = names_on_distinct_shards("gap");
    let mut listener = relay.session("listener");
    let mut heard = Heard::new();
    listener
        .listen(1, &conversation, ListenFrom::Live)
        .expect("listen sent");
    heard.read_until(&mut listener, WAIT, "listen", |h| h.is_live(1));

    let mut talker = relay.session("talker");
    let mut talk = start_message(&mut talker, 1, &conversation);
    let msg_id = talk.msg_id();
    let sent = payloads(1, 6);
    send_frames(&mut talker, 1, 0, &sent[..3]);
    talker.talk_frame(1, 5, &sent[5]).expect("talk_frame sent");
    read_talk_until_error(&mut talker, 1, &mut talk, ErrorCode::SEQ_GAP);
    heard.read_until(&mut listener, WAIT, "truncated", |h| h.has_ended(1, msg_id));
    let message = heard.message(1, msg_id);
    assert_eq!(message.payloads(), sent[..3].to_vec());
    assert_eq!(message.end, Some((3, MessageOutcome::Truncated)));
}

#[test]
fn stream_handle_misuse_is_reported_about_the_handle_and_the_session_goes_on() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS]));
    let (conversation, _) = names_on_distinct_shards("handles");
    let mut talker = relay.session("talker");
    let mut talk = start_message(&mut talker, 1, &conversation);

    // A second start on an open handle; the open stream is unaffected.
    talker
        .talk_start(1, &conversation, OPUS_HEAD, None)
        .expect("talk_start sent");
    expect_error(
        &mut talker,
        ErrorCode::DUPLICATE_STREAM,
        ErrorSubject::TalkStream(1),
    );
    // Frames and ends on a handle that was never opened: reported once per handle.
    send_frames(&mut talker, 2, 0, &payloads(2, 3));
    talker.talk_end(2, 3).expect("talk_end sent");
    expect_error(
        &mut talker,
        ErrorCode::UNKNOWN_STREAM,
        ErrorSubject::TalkStream(2),
    );
    expect_pong(&mut talker, 1);

    // The open stream still works.
    let sent = payloads(1, 4);
    send_frames(&mut talker, 1, 0, &sent);
    talker.talk_end(1, 4).expect("talk_end sent");
    read_talk_until(&mut talker, 1, &mut talk, "ended", |p| {
        p.ended_with.is_some()
    });
    assert_eq!(talk.ended_with, Some(4));

    // A resume of a message that was never stored.
    let never = MsgId::from_parts(talk.msg_id().start_us() + 1, ShardId::new(0, 0), 4_000_000);
    talker
        .talk_start(3, &conversation, OPUS_HEAD, Some(never))
        .expect("talk_start sent");
    expect_error(
        &mut talker,
        ErrorCode::MESSAGE_UNAVAILABLE,
        ErrorSubject::TalkStream(3),
    );
    expect_pong(&mut talker, 2);
}

#[test]
fn subscription_misuse_is_reported_about_the_subscription_and_the_session_goes_on() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS]));
    let (conversation, other) = names_on_distinct_shards("subs");
    let mut client = relay.session("listener");
    let mut heard = Heard::new();
    client
        .listen(1, &conversation, ListenFrom::Live)
        .expect("listen sent");
    heard.read_until(&mut client, WAIT, "listen", |h| h.is_live(1));

    client
        .listen(1, &other, ListenFrom::Live)
        .expect("listen sent");
    expect_error(&mut client, ErrorCode::DUPLICATE_SUB, ErrorSubject::Sub(1));
    client.unlisten(2).expect("unlisten sent");
    expect_error(&mut client, ErrorCode::UNKNOWN_SUB, ErrorSubject::Sub(2));

    // Sub 1 still hears its conversation.
    let mut talker = relay.session("talker");
    let sent = payloads(1, 5);
    let msg_id = support::talk::talk_message(&mut talker, 1, &conversation, &sent);
    heard.read_until(&mut client, WAIT, "hear", |h| h.has_ended(1, msg_id));
    assert_eq!(heard.message(1, msg_id).payloads(), sent);

    // Unlisten closes it; the id can be opened again.
    client.unlisten(1).expect("unlisten sent");
    heard.read_until(&mut client, WAIT, "unlistened", |h| !h.is_listening(1));
    client.unlisten(1).expect("unlisten sent");
    expect_error(&mut client, ErrorCode::UNKNOWN_SUB, ErrorSubject::Sub(1));
    client
        .listen(1, &other, ListenFrom::Live)
        .expect("listen sent");
    heard.read_until(&mut client, WAIT, "listen again", |h| h.is_live(1));
    assert!(heard.others.is_empty(), "{:?}", heard.others);
}
