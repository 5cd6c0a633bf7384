//! Fan-out: every listener hears every frame of every message, byte for byte, in order,
//! exactly once, whichever shard its connection and the talker's live on; and a listener that
//! stops reading delays nobody.

mod support;

use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::Instant;

use bytes::Bytes;
use hark_core::protocol::{Event, FrameKind, ListenFrom, MessageOutcome};
use hark_core::{ConvName, MsgId};
use hark_tools::client::{Client, ConnectOptions};

use support::heard::Heard;
use support::names::{conv_on_core, names_on_distinct_shards};
use support::process::{CLIENT_NAME, RelayProcess};
use support::talk::{
    OPUS_HEAD, TalkProgress, payloads, read_talk_until, sized_payload, start_message, talk_message,
};
use support::{FAST_TALK, QUICK_COMMITS, TWO_SHARD_CORES, TWO_SHARDS, WAIT, args};

/// Frames per message in the fan-out test.
const FAN_OUT_FRAMES: u32 = 200;

/// One talker of the fan-out test.
struct TalkerPlan {
    subject: String,
    seed: u64,
    /// Where it talks.
    conversation: ConvName,
    /// A quiet conversation it listens to first, so its connection stays on that
    /// conversation's shard and its talk crosses to the owner through the mesh.
    pinned_to: Option<ConvName>,
}

/// Opens `convs` as subscriptions 1, 2, … and waits until each is live.
fn listen_live(client: &mut Client, heard: &mut Heard, convs: &[&ConvName]) {
    for (index, conversation) in convs.iter().enumerate() {
        let sub = index as u32 + 1;
        client
            .listen(sub, conversation, ListenFrom::Live)
            .expect("listen sent");
        heard.read_until(client, WAIT, "listen live", |h| h.is_live(sub));
    }
}

#[test]
fn every_listener_hears_every_frame_once_in_order_across_shards() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS, FAST_TALK]));
    let (on_zero, on_one) = names_on_distinct_shards("fan-out");
    let quiet_zero = conv_on_core("fan-out-quiet", 0, TWO_SHARD_CORES);
    let quiet_one = conv_on_core("fan-out-quiet", 1, TWO_SHARD_CORES);

    // Listeners on the owner of one conversation, and on one owner hearing the other
    // conversation through the mesh.
    let listener_plans: Vec<Vec<&ConvName>> = vec![
        vec![&on_zero],
        vec![&on_one],
        vec![&on_zero, &on_one],
        vec![&on_one, &on_zero],
    ];
    let mut listeners = Vec::new();
    for (index, plan) in listener_plans.iter().enumerate() {
        let mut client = relay.session(&format!("listener-{index}"));
        let mut heard = Heard::new();
        listen_live(&mut client, &mut heard, plan);
        listeners.push((client, heard));
    }

    // Two talkers on each owner, and one per conversation whose connection lives on the other
    // shard.
    let mut talker_plans = Vec::new();
    for (index, (conversation, pinned_to)) in [
        (&on_zero, None),
        (&on_zero, None),
        (&on_zero, Some(&quiet_one)),
        (&on_one, None),
        (&on_one, None),
        (&on_one, Some(&quiet_zero)),
    ]
    .into_iter()
    .enumerate()
    {
        talker_plans.push(TalkerPlan {
            subject: format!("talker-{index}"),
            seed: index as u64 + 1,
            conversation: conversation.clone(),
            pinned_to: pinned_to.cloned(),
        });
    }
    let per_conversation = 3;

    let spoken: Vec<(MsgId, Vec<Bytes>)> = thread::scope(|scope| {
        let relay = &relay;
        let talkers: Vec<_> = talker_plans
            .iter()
            .map(|plan| {
                scope.spawn(move || {
                    let mut client = relay.session(&plan.subject);
                    if let Some(quiet) = &plan.pinned_to {
                        let mut heard = Heard::new();
                        listen_live(&mut client, &mut heard, &[quiet]);
                    }
                    let sent = payloads(plan.seed, FAN_OUT_FRAMES);
                    let msg_id = talk_message(&mut client, 9, &plan.conversation, &sent);
                    (msg_id, sent)
                })
            })
            .collect();
        for ((client, heard), plan) in listeners.iter_mut().zip(&listener_plans) {
            scope.spawn(move || {
                let subs = plan.len() as u32;
                heard.read_until(client, WAIT, "hear every message", |h| {
                    (1..=subs).all(|sub| {
                        let messages = h.messages_of(sub);
                        messages.len() == per_conversation
                            && messages.iter().all(|message| message.end.is_some())
                    })
                });
            });
        }
        talkers
            .into_iter()
            .map(|talker| talker.join().expect("talker thread"))
            .collect()
    });

    for ((_, heard), plan) in listeners.iter().zip(&listener_plans) {
        assert!(
            heard.others.is_empty(),
            "unexpected events: {:?}",
            heard.others
        );
        for (index, conversation) in plan.iter().enumerate() {
            let sub = index as u32 + 1;
            assert_eq!(heard.messages_of(sub).len(), per_conversation);
            assert_eq!(heard.sub(sub).fallbacks, 0, "no listener fell behind");
            for (talker, (msg_id, sent)) in talker_plans.iter().zip(&spoken) {
                if &&talker.conversation != conversation {
                    continue;
                }
                let message = heard.message(sub, *msg_id);
                assert_eq!(&message.conversation, *conversation);
                assert_eq!(message.sender, talker.subject);
                assert_eq!(message.codec.as_ref(), OPUS_HEAD);
                assert_eq!(
                    &message.payloads(),
                    sent,
                    "payloads of {msg_id} on sub {sub}"
                );
                assert_eq!(message.count_of(FrameKind::Live), sent.len());
                assert_eq!(
                    message.end,
                    Some((FAN_OUT_FRAMES, MessageOutcome::Complete))
                );
            }
        }
    }
}

/// Frames the talker sends in the slow-listener test, and their size: 7 MB in all, more than
/// the slow listener's socket buffers on both ends (the relay's send buffer grows to at most
/// 4 MiB by default) and its 64 KiB send queue can hold, so the relay must drop it to replay.
const SLOW_FRAMES: u32 = 5000;
const SLOW_PAYLOAD_BYTES: usize = 1400;

/// Frames a fast listener may lag behind the talker: 8 × 1413 bytes are a sixth of the 64 KiB
/// send queue, so a fast listener never falls back itself. The rest of the queue is margin for
/// the listener on the other shard, whose writes reach the owner's count one mesh hop later
/// (`PeerMessage::Written`), a delay a busy 2-core machine can stretch to milliseconds.
const FAST_LAG_FRAMES_MAX: u32 = 8;

/// How many frames each fast listener has heard, for pacing the talker.
struct Progress {
    heard: Mutex<Vec<u32>>,
    changed: Condvar,
}

impl Progress {
    fn update(&self, listener: usize, frames: u32) {
        let mut heard = self
            .heard
            .lock()
            .expect("no thread panics holding the lock");
        heard[listener] = frames;
        self.changed.notify_all();
    }

    /// Waits until every fast listener has heard at least `frames` frames.
    fn wait_for(&self, frames: u32) {
        let heard = self
            .heard
            .lock()
            .expect("no thread panics holding the lock");
        let (heard, timeout) = self
            .changed
            .wait_timeout_while(heard, WAIT, |heard| heard.iter().any(|n| *n < frames))
            .expect("no thread panics holding the lock");
        assert!(
            !timeout.timed_out(),
            "fast listeners stuck at {:?} frames, waiting for {frames}",
            *heard
        );
    }
}

#[test]
fn a_slow_listener_delays_nobody_and_hears_everything_once_it_reads_again() {
    let relay = RelayProcess::start(&args(&[
        TWO_SHARDS,
        FAST_TALK,
        QUICK_COMMITS,
        &["--send-queue-bytes-max", "65536"],
    ]));
    let conversation = conv_on_core("slow", 0, TWO_SHARD_CORES);
    let quiet_one = conv_on_core("slow-quiet", 1, TWO_SHARD_CORES);

    // The slow listener: a small receive window, live, then it stops reading.
    let mut slow = Client::connect_with(
        relay.addr(),
        WAIT,
        ConnectOptions {
            recv_buffer_bytes: Some(4096),
        },
    )
    .expect("connect");
    slow.hello(&relay.token_for_all("slow"), CLIENT_NAME)
        .expect("hello");
    let mut slow_heard = Heard::new();
    listen_live(&mut slow, &mut slow_heard, &[&conversation]);

    // Fast listeners: one on the owner, one on the other shard through the mesh.
    let mut fast = Vec::new();
    for (subject, plan) in [
        ("fast-owner", vec![&conversation]),
        ("fast-other-shard", vec![&quiet_one, &conversation]),
    ] {
        let mut client = relay.session(subject);
        let mut heard = Heard::new();
        listen_live(&mut client, &mut heard, &plan);
        let sub = plan.len() as u32;
        fast.push((client, heard, sub));
    }

    let sent: Vec<Bytes> = (0..SLOW_FRAMES)
        .map(|seq| sized_payload(77, seq, SLOW_PAYLOAD_BYTES))
        .collect();
    let progress = Progress {
        heard: Mutex::new(vec![0; fast.len()]),
        changed: Condvar::new(),
    };
    let mut talker = relay.session("talker");
    let msg_id = thread::scope(|scope| {
        for (index, (client, heard, sub)) in fast.iter_mut().enumerate() {
            let progress = &progress;
            let sub = *sub;
            scope.spawn(move || {
                let deadline = Instant::now() + WAIT;
                loop {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let event = client
                        .next_event(remaining)
                        .unwrap_or_else(|error| panic!("fast listener {index}: {error}"));
                    heard
                        .record(event)
                        .unwrap_or_else(|problem| panic!("fast listener {index}: {problem}"));
                    let Some(message) = heard.messages_of(sub).first().copied() else {
                        continue;
                    };
                    progress.update(index, message.frames.len() as u32);
                    if message.end.is_some() {
                        break;
                    }
                }
            });
        }
        let mut talk = start_message(&mut talker, 1, &conversation);
        for (seq, payload) in sent.iter().enumerate() {
            let seq = seq as u32;
            progress.wait_for(seq.saturating_sub(FAST_LAG_FRAMES_MAX));
            talker.talk_frame(1, seq, payload).expect("talk_frame sent");
        }
        talker.talk_end(1, SLOW_FRAMES).expect("talk_end sent");
        read_talk_until(
            &mut talker,
            1,
            &mut talk,
            "talk ended",
            |p: &TalkProgress| p.ended_with.is_some(),
        );
        assert_eq!(talk.ended_with, Some(SLOW_FRAMES));
        talk.msg_id()
    });

    for (_, heard, sub) in &fast {
        let message = heard.message(*sub, msg_id);
        assert_eq!(message.payloads(), sent, "a fast listener heard everything");
        assert_eq!(
            message.count_of(FrameKind::Live),
            sent.len(),
            "a fast listener stayed live"
        );
        assert_eq!(heard.sub(*sub).fallbacks, 0);
        assert_eq!(message.end, Some((SLOW_FRAMES, MessageOutcome::Complete)));
        assert!(heard.others.is_empty(), "{:?}", heard.others);
    }

    // The slow listener reads again and gets everything, from the store where it missed the
    // live frames, then is live again.
    slow_heard.read_until(&mut slow, WAIT, "the slow listener catches up", |h| {
        h.has_ended(1, msg_id) && h.is_live(1)
    });
    let message = slow_heard.message(1, msg_id);
    assert_eq!(
        message.payloads(),
        sent,
        "the slow listener heard everything"
    );
    assert_eq!(message.end, Some((SLOW_FRAMES, MessageOutcome::Complete)));
    let state = slow_heard.sub(1);
    assert!(
        state.fallbacks >= 1 && message.count_of(FrameKind::Replay) > 0,
        "the slow listener was moved to replay (else this test did not test it): {state:?}"
    );
    assert!(
        state.caught_up_count >= 2,
        "caught_up again after the replay"
    );
    assert!(slow_heard.others.is_empty(), "{:?}", slow_heard.others);
    // Nothing more is pending for the slow listener.
    slow.ping(5).expect("ping sent");
    assert_eq!(
        slow.next_event(WAIT).expect("pong"),
        Event::Pong { nonce: 5 }
    );
}
