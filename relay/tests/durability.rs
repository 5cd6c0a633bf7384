//! Durability: what the relay acknowledged as stored survives a kill -9, byte for byte; a
//! message whose talker's connection broke is resumed on a new connection without a gap or a
//! duplicate.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use bytes::Bytes;
use hark_core::ConvName;
use hark_core::protocol::{Event, FrameKind, HistoryEntry, ListenFrom, MessageOutcome};
use hark_tools::client::ClientError;

use support::heard::Heard;
use support::names::names_on_distinct_shards;
use support::process::RelayProcess;
use support::talk::{
    OPUS_HEAD, TalkProgress, payload, payloads, read_talk_until, send_frames, start_message,
};
use support::{FAST_TALK, QUICK_COMMITS, TWO_SHARDS, WAIT, args};

/// Frames each talker has had acknowledged as stored before the kill.
const ACKED_BEFORE_KILL: u32 = 200;

/// Frames a talker sends ahead of its stored acks: it keeps talking while commits run.
const UNACKED_FRAMES_MAX: u32 = 64;

/// Most frames a talker sends; the kill comes long before.
const TALK_FRAMES_MAX: u32 = 50_000;

/// What a talker knew when the relay died.
#[derive(Debug)]
struct Killed {
    conversation: ConvName,
    subject: String,
    seed: u64,
    progress: TalkProgress,
    sent: u32,
}

#[test]
fn kill9_while_talking_loses_no_frame_that_was_acknowledged_as_stored() {
    let mut relay = RelayProcess::start(&args(&[TWO_SHARDS, FAST_TALK, QUICK_COMMITS]));
    let (on_zero, on_one) = names_on_distinct_shards("kill9");
    let killed_flag = AtomicBool::new(false);
    let (acked_tx, acked_rx) = mpsc::channel::<()>();

    let talkers: Vec<Killed> = thread::scope(|scope| {
        let handles: Vec<_> = [(&on_zero, 1u64), (&on_one, 2u64)]
            .into_iter()
            .map(|(conversation, seed)| {
                let killed = &killed_flag;
                let acked_tx = acked_tx.clone();
                let subject = format!("talker-{seed}");
                let mut client = relay.session(&subject);
                scope.spawn(move || {
                    let mut progress = start_message(&mut client, 1, conversation);
                    let mut sent = 0u32;
                    let mut reported = false;
                    let deadline = Instant::now() + WAIT;
                    loop {
                        while sent < TALK_FRAMES_MAX
                            && sent < progress.frames_stored + UNACKED_FRAMES_MAX
                        {
                            match client.talk_frame(1, sent, &payload(seed, sent)) {
                                Ok(()) => sent += 1,
                                Err(error) => {
                                    assert!(killed.load(Ordering::SeqCst), "talk failed: {error}");
                                    break;
                                }
                            }
                        }
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        match client.next_event(remaining) {
                            Ok(event) => progress
                                .record(1, event)
                                .unwrap_or_else(|problem| panic!("talker {seed}: {problem}")),
                            Err(ClientError::Closed { .. } | ClientError::Io { .. })
                                if killed.load(Ordering::SeqCst) =>
                            {
                                break;
                            }
                            Err(error) => panic!("talker {seed}: {error}"),
                        }
                        if !reported && progress.frames_stored >= ACKED_BEFORE_KILL {
                            reported = true;
                            acked_tx.send(()).expect("the test waits");
                        }
                    }
                    Killed {
                        conversation: conversation.clone(),
                        subject,
                        seed,
                        progress,
                        sent,
                    }
                })
            })
            .collect();
        for _ in 0..handles.len() {
            acked_rx
                .recv_timeout(WAIT)
                .expect("both talkers got their first acks");
        }
        killed_flag.store(true, Ordering::SeqCst);
        let status = relay.kill9();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        handles
            .into_iter()
            .map(|handle| handle.join().expect("talker thread"))
            .collect()
    });

    relay.restart();
    for talker in &talkers {
        let acked = talker.progress.frames_stored;
        let msg_id = talker.progress.msg_id();
        assert!(acked >= ACKED_BEFORE_KILL);

        // Replay: every acknowledged frame, and nothing that was not sent.
        let mut listener = relay.session("after-restart");
        let mut heard = Heard::new();
        listener
            .listen(1, &talker.conversation, ListenFrom::Since(0))
            .expect("listen sent");
        heard.read_until(&mut listener, WAIT, "replay after the crash", |h| {
            h.is_live(1)
        });
        let messages = heard.messages_of(1);
        assert_eq!(messages.len(), 1, "one message in {}", talker.conversation);
        let message = heard.message(1, msg_id);
        let count = message.frames.len() as u32;
        assert!(
            (acked..=talker.sent).contains(&count),
            "{count} frames replayed; {acked} were acked, {} sent",
            talker.sent
        );
        let expected: Vec<Bytes> = (0..count).map(|seq| payload(talker.seed, seq)).collect();
        assert_eq!(message.payloads(), expected, "byte-identical replay");
        assert_eq!(message.count_of(FrameKind::Replay), count as usize);
        assert_eq!(message.sender, talker.subject);
        assert_eq!(message.codec.as_ref(), OPUS_HEAD);
        if let Some(end) = message.end {
            assert_eq!(end, (count, MessageOutcome::Truncated));
        }

        // History agrees.
        listener
            .history(2, &talker.conversation, 0, 10)
            .expect("history sent");
        match listener.next_event(WAIT) {
            Ok(Event::HistoryPage {
                request: 2,
                entries,
                more: false,
            }) => {
                assert_eq!(entries.len(), 1, "{entries:?}");
                let HistoryEntry {
                    msg_id: listed,
                    ref sender,
                    frame_count,
                    outcome,
                    ..
                } = entries[0];
                assert_eq!(listed, msg_id);
                assert_eq!(sender, &talker.subject);
                assert!(frame_count >= acked, "history lists {frame_count} frames");
                assert_eq!(outcome, MessageOutcome::Truncated);
            }
            other => panic!("expected the history page, got {other:?}"),
        }
    }
}

#[test]
fn a_broken_talker_resumes_its_message_from_next_seq_without_gap_or_duplicate() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS, FAST_TALK, QUICK_COMMITS]));
    let (conversation, _) = names_on_distinct_shards("resume");
    let sent = payloads(5, 100);

    let mut listener = relay.session("listener");
    let mut heard = Heard::new();
    listener
        .listen(1, &conversation, ListenFrom::Live)
        .expect("listen sent");
    heard.read_until(&mut listener, WAIT, "listen live", |h| h.is_live(1));

    // The first connection talks 50 frames, sees them stored, and dies with a reset.
    let mut first = relay.session("talker");
    let mut talk = start_message(&mut first, 1, &conversation);
    let msg_id = talk.msg_id();
    send_frames(&mut first, 1, 0, &sent[..50]);
    read_talk_until(&mut first, 1, &mut talk, "stored", |p| {
        p.frames_stored >= 50
    });
    first.abort().expect("abort");

    // A new connection resumes the message on another stream handle.
    let mut second = relay.session("talker");
    second
        .talk_start(7, &conversation, OPUS_HEAD, Some(msg_id))
        .expect("talk_start sent");
    let mut resumed = TalkProgress::default();
    read_talk_until(&mut second, 7, &mut resumed, "resumed", |p| {
        p.msg_id.is_some()
    });
    assert_eq!(resumed.msg_id, Some(msg_id), "the same message");
    assert_eq!(
        resumed.next_seq,
        Some(50),
        "continue after the stored frames"
    );
    // Frames it cannot know were stored are sent again: the relay drops the duplicates.
    send_frames(&mut second, 7, 40, &sent[40..]);
    second.talk_end(7, 100).expect("talk_end sent");
    read_talk_until(&mut second, 7, &mut resumed, "ended", |p| {
        p.ended_with.is_some()
    });
    assert_eq!(resumed.ended_with, Some(100));

    heard.read_until(&mut listener, WAIT, "the whole message", |h| {
        h.has_ended(1, msg_id)
    });
    let message = heard.message(1, msg_id);
    assert_eq!(message.payloads(), sent, "every frame once, in order");
    assert_eq!(message.count_of(FrameKind::Live), sent.len());
    assert_eq!(message.end, Some((100, MessageOutcome::Complete)));
    assert_eq!(heard.messages_of(1).len(), 1);
    assert!(heard.others.is_empty(), "{:?}", heard.others);

    // And the store has it whole.
    let mut late = relay.session("late");
    let mut late_heard = Heard::new();
    late.listen(1, &conversation, ListenFrom::Message(msg_id))
        .expect("listen sent");
    late_heard.read_until(&mut late, WAIT, "replay", |h| h.is_live(1));
    let replayed = late_heard.message(1, msg_id);
    assert_eq!(replayed.payloads(), sent);
    assert_eq!(replayed.end, Some((100, MessageOutcome::Complete)));
}
