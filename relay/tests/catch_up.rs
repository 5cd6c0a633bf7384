//! Late join: a listener that arrives mid-message hears it from its first frame, replayed,
//! then live, with no gap and no duplicate at the switch; on the owner shard and on another
//! shard (through the mesh). Listening from a message or a time replays what is stored first.

mod support;

use std::sync::mpsc;
use std::thread;

use hark_core::protocol::{ErrorCode, ErrorSubject, FrameKind, ListenFrom, MessageOutcome};
use hark_core::{MsgId, ShardId};

use support::heard::Heard;
use support::names::names_on_distinct_shards;
use support::process::RelayProcess;
use support::talk::{
    OPUS_HEAD, expect_error, expect_pong, payloads, read_talk_until, send_frames, start_message,
    talk_message,
};
use support::{FAST_TALK, QUICK_COMMITS, TWO_SHARDS, WAIT, args};

/// Frames stored before the listener joins, sent while it joins, and sent after it is live.
const BEFORE: u32 = 100;
const DURING: u32 = 100;
const AFTER: u32 = 100;

/// A talker is mid-message; a listener joins; the talker goes on during the join and after
/// the listener is live. `elsewhere`: the listener's connection first listens to a
/// conversation owned by the other shard, so it stays there and hears this one through the
/// mesh.
fn late_join(elsewhere: bool) {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS, FAST_TALK, QUICK_COMMITS]));
    let (conversation, other) = names_on_distinct_shards("late-join");
    let sent = payloads(11, BEFORE + DURING + AFTER);

    let mut talker = relay.session("talker");
    let mut talk = start_message(&mut talker, 1, &conversation);
    let msg_id = talk.msg_id();
    send_frames(&mut talker, 1, 0, &sent[..BEFORE as usize]);
    // Stored means accepted: these frames are in the relay before the listener arrives.
    read_talk_until(&mut talker, 1, &mut talk, "first frames stored", |p| {
        p.frames_stored >= BEFORE
    });

    let mut listener = relay.session("listener");
    let mut heard = Heard::new();
    let sub = if elsewhere {
        listener
            .listen(1, &other, ListenFrom::Live)
            .expect("listen sent");
        heard.read_until(&mut listener, WAIT, "pin to the other shard", |h| {
            h.is_live(1)
        });
        2
    } else {
        1
    };
    listener
        .listen(sub, &conversation, ListenFrom::Live)
        .expect("listen sent");

    let (live_tx, live_rx) = mpsc::channel::<()>();
    thread::scope(|scope| {
        let sent = &sent;
        let talking = scope.spawn(move || {
            let during = BEFORE as usize..(BEFORE + DURING) as usize;
            send_frames(&mut talker, 1, BEFORE, &sent[during]);
            live_rx.recv_timeout(WAIT).expect("the listener goes live");
            send_frames(
                &mut talker,
                1,
                BEFORE + DURING,
                &sent[(BEFORE + DURING) as usize..],
            );
            talker
                .talk_end(1, BEFORE + DURING + AFTER)
                .expect("talk_end sent");
            read_talk_until(&mut talker, 1, &mut talk, "talk ended", |p| {
                p.ended_with.is_some()
            });
            talk
        });
        heard.read_until(&mut listener, WAIT, "caught up", |h| h.is_live(sub));
        live_tx.send(()).expect("the talker waits");
        heard.read_until(&mut listener, WAIT, "message ended", |h| {
            h.has_ended(sub, msg_id)
        });
        let talk = talking.join().expect("talker thread");
        assert_eq!(talk.ended_with, Some(BEFORE + DURING + AFTER));
    });

    let message = heard.message(sub, msg_id);
    assert_eq!(
        message.payloads(),
        sent,
        "every frame once, in order, byte for byte"
    );
    assert_eq!(
        message.end,
        Some((BEFORE + DURING + AFTER, MessageOutcome::Complete))
    );
    assert_eq!(message.sender, "talker");
    assert_eq!(message.codec.as_ref(), OPUS_HEAD);
    assert_eq!(message.conversation, conversation);
    assert!(
        message.frames[..BEFORE as usize]
            .iter()
            .all(|frame| frame.kind == FrameKind::Replay),
        "frames stored before the join are replayed"
    );
    assert!(
        message.frames[(BEFORE + DURING) as usize..]
            .iter()
            .all(|frame| frame.kind == FrameKind::Live),
        "frames sent after caught_up are live"
    );
    let state = heard.sub(sub);
    assert_eq!((state.caught_up_count, state.fallbacks), (1, 0));
    assert_eq!(heard.messages_of(sub).len(), 1);
    if elsewhere {
        assert!(
            heard.messages_of(1).is_empty(),
            "nobody talked on the other one"
        );
    }
    assert!(heard.others.is_empty(), "{:?}", heard.others);
}

#[test]
fn a_late_listener_on_the_owner_shard_hears_replay_then_live_without_gap_or_duplicate() {
    late_join(false);
}

#[test]
fn a_late_listener_on_another_shard_hears_replay_then_live_without_gap_or_duplicate() {
    late_join(true);
}

#[test]
fn listening_from_a_message_or_a_time_replays_the_stored_messages_then_goes_live() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS, FAST_TALK, QUICK_COMMITS]));
    let (conversation, _) = names_on_distinct_shards("from");
    let mut talker = relay.session("talker");
    let stored: Vec<(MsgId, _)> = (0..3)
        .map(|index| {
            let sent = payloads(20 + index, 20);
            (talk_message(&mut talker, 1, &conversation, &sent), sent)
        })
        .collect();
    let second = stored[1].0;

    let mut from_message = relay.session("from-message");
    from_message
        .listen(1, &conversation, ListenFrom::Message(second))
        .expect("listen sent");
    let mut from_time = relay.session("from-time");
    from_time
        .listen(1, &conversation, ListenFrom::Since(second.start_us()))
        .expect("listen sent");
    let mut listeners = [(from_message, Heard::new()), (from_time, Heard::new())];
    for (client, heard) in &mut listeners {
        heard.read_until(client, WAIT, "replay the stored messages", |h| h.is_live(1));
    }

    let live_sent = payloads(30, 20);
    let live = talk_message(&mut talker, 1, &conversation, &live_sent);
    for (client, heard) in &mut listeners {
        heard.read_until(client, WAIT, "the live message", |h| h.has_ended(1, live));
        let order: Vec<MsgId> = heard.messages_of(1).iter().map(|m| m.msg_id).collect();
        assert_eq!(
            order,
            vec![stored[1].0, stored[2].0, live],
            "from the second on"
        );
        for (msg_id, sent) in &stored[1..] {
            let message = heard.message(1, *msg_id);
            assert_eq!(&message.payloads(), sent);
            assert_eq!(message.count_of(FrameKind::Replay), sent.len());
            assert_eq!(message.end, Some((20, MessageOutcome::Complete)));
        }
        let message = heard.message(1, live);
        assert_eq!(message.payloads(), live_sent);
        assert_eq!(message.count_of(FrameKind::Live), live_sent.len());
        assert_eq!(heard.sub(1).caught_up_count, 1);
        assert!(heard.others.is_empty(), "{:?}", heard.others);
    }

    // A message that was never stored cannot be listened from; the session goes on.
    let mut unknown = relay.session("unknown");
    let never = MsgId::from_parts(second.start_us() + 1, ShardId::new(0, 0), 999_999);
    unknown
        .listen(1, &conversation, ListenFrom::Message(never))
        .expect("listen sent");
    expect_error(
        &mut unknown,
        ErrorCode::MESSAGE_UNAVAILABLE,
        ErrorSubject::Sub(1),
    );
    expect_pong(&mut unknown, 1);
}
