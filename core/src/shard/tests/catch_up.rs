//! Late join, catch-up to live, slow listeners, resume.

use proptest::prelude::*;

use super::*;
use crate::protocol::MessageOutcome;
use crate::shard::{BodyStore, EndState, MessageState};

/// A talker sends `total` frames; commits happen after the frames listed in `commits`; a
/// listener joins (since the start) after `join` frames. It must hear every frame once, in
/// order, replayed before its one `caught_up` and live after.
fn late_join(total: u32, join: u32, commits: &[u32]) {
    let mut host = Host::new(ShardConfig::default());
    let talker = host.client();
    host.talk_start(talker, 1, "general");
    let msg = host.talk_started(talker, 1);
    let listener = host.client();
    for seq in 0..total {
        if seq == join {
            host.listen(listener, 3, "general", ListenFrom::Since(0));
        }
        host.now_us += 20_000;
        host.frame(talker, 1, seq, &payload(0, seq));
        if commits.contains(&seq) {
            host.commit();
        }
    }
    if join >= total {
        host.listen(listener, 3, "general", ListenFrom::Since(0));
    }
    let events = host.events(listener).to_vec();
    let caught_up: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| **e == Event::CaughtUp { sub: 3 })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(caught_up.len(), 1, "caught_up exactly once: {events:?}");
    let heard = heard(&events);
    let h = &heard[&msg];
    assert_eq!(seqs(h), (0..total).collect::<Vec<_>>());
    for (seq, _, bytes) in &h.frames {
        assert_eq!(&bytes[..], &payload(0, *seq)[..]);
    }
    // Replay frames come before caught_up and live frames after it.
    let mut seen_caught_up = false;
    for event in &events {
        match event {
            Event::CaughtUp { .. } => seen_caught_up = true,
            Event::Frame { kind, .. } => {
                assert_eq!(*kind == FrameKind::Live, seen_caught_up, "{events:?}");
            }
            _ => {}
        }
    }
}

#[test]
fn late_join_mid_message_replays_then_goes_live() {
    late_join(30, 12, &[3, 9, 20]);
    late_join(10, 0, &[]);
    late_join(10, 10, &[9]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn late_join_with_commits_anywhere_has_no_gap_and_no_duplicate(
        total in 1u32..80,
        join in 0u32..90,
        commits in proptest::collection::vec(0u32..80, 0..10),
    ) {
        late_join(total, join, &commits);
    }
}

#[test]
fn listen_from_a_message_replays_it_and_later_ones_then_live() {
    let mut host = Host::new(ShardConfig::default());
    let talker = host.client();
    let mut ids = Vec::new();
    for stream in 0..3 {
        host.now_us += 1_000;
        host.talk_start(talker, stream, "general");
        ids.push(host.talk_started(talker, stream));
        host.frame(talker, stream, 0, b"a");
        host.frame(talker, stream, 1, b"b");
        host.request(
            talker,
            Request::TalkEnd {
                stream,
                frame_count: 2,
            },
        );
    }
    host.commit();
    let listener = host.client();
    host.listen(listener, 1, "general", ListenFrom::Message(ids[1]));
    let heard = heard(host.events(listener));
    assert!(!heard.contains_key(&ids[0]));
    for msg in &ids[1..] {
        assert_eq!(seqs(&heard[msg]), vec![0, 1]);
        assert_eq!(heard[msg].ended, Some((2, MessageOutcome::Complete)));
        assert!(heard[msg].frames.iter().all(|f| f.1 == FrameKind::Replay));
    }
    assert_eq!(
        host.events(listener).last(),
        Some(&Event::CaughtUp { sub: 1 })
    );
    // A new message after caught_up arrives live.
    host.talk_start(talker, 9, "general");
    host.frame(talker, 9, 0, b"z");
    let msg = host.talk_started(talker, 9);
    assert_eq!(heard_of(&host, listener, msg), vec![(0, FrameKind::Live)]);
}

fn heard_of(host: &Host, client: Client, msg: MsgId) -> Vec<(u32, FrameKind)> {
    heard(host.events(client))[&msg]
        .frames
        .iter()
        .map(|f| (f.0, f.1))
        .collect()
}

#[test]
fn slow_listener_falls_back_to_replay_and_catches_up_without_slowing_others() {
    let config = ShardConfig {
        send_queue_bytes_max: 400,
        send_queue_bytes_hard_max: 1 << 20,
        ..ShardConfig::default()
    };
    let mut host = Host::new(config);
    let slow = host.client();
    let fast = host.client();
    host.listen(slow, 1, "general", ListenFrom::Live);
    host.listen(fast, 1, "general", ListenFrom::Live);
    let talker = host.client();
    host.talk_start(talker, 1, "general");
    let msg = host.talk_started(talker, 1);
    host.stalled.push(slow);
    for seq in 0..60 {
        host.now_us += 20_000;
        host.frame(talker, 1, seq, &payload(0, seq));
        if seq % 16 == 15 {
            host.commit();
        }
    }
    // The fast listener heard everything live; the slow one stopped at its queue bound.
    assert_eq!(heard_of(&host, fast, msg).len(), 60);
    assert!(
        heard_of(&host, fast, msg)
            .iter()
            .all(|f| f.1 == FrameKind::Live)
    );
    let before = heard_of(&host, slow, msg).len();
    assert!(before < 60, "the slow listener's queue is bounded");
    // It drains: replay from the first missed frame, then caught_up, then live again.
    let caught_ups = |host: &Host| {
        host.events(slow)
            .iter()
            .filter(|e| **e == Event::CaughtUp { sub: 1 })
            .count()
    };
    assert_eq!(caught_ups(&host), 1);
    for _ in 0..20 {
        host.unstall(slow);
    }
    let frames = heard_of(&host, slow, msg);
    assert_eq!(
        frames.iter().map(|f| f.0).collect::<Vec<_>>(),
        (0..60).collect::<Vec<_>>()
    );
    assert!(frames[before..].iter().all(|f| f.1 == FrameKind::Replay));
    assert_eq!(caught_ups(&host), 2);
    host.frame(talker, 1, 60, b"live again");
    assert_eq!(
        heard_of(&host, slow, msg).last(),
        Some(&(60, FrameKind::Live))
    );
}

#[test]
fn a_talker_resumes_its_message_after_a_broken_connection() {
    let mut host = Host::new(ShardConfig::default());
    let listener = host.client();
    host.listen(listener, 1, "general", ListenFrom::Live);
    let talker = host.client();
    host.talk_start(talker, 1, "general");
    let msg = host.talk_started(talker, 1);
    for seq in 0..5 {
        host.frame(talker, 1, seq, &payload(0, seq));
    }
    host.commit();
    host.frame(talker, 1, 5, &payload(0, 5));
    let (shard, conn) = host.location[&talker];
    host.shards[shard].connection_closed(host.now_us, conn);
    host.run();
    let again = host.client();
    host.request(
        again,
        Request::TalkStart {
            stream: 7,
            conversation: conv("general"),
            codec: Bytes::new(),
            resume: Some(msg),
        },
    );
    assert!(host.events(again).contains(&Event::TalkStarted {
        stream: 7,
        msg_id: msg,
        next_seq: 6
    }));
    // Resent frames below next_seq are dropped; the rest continue the message.
    for seq in 4..8 {
        host.frame(again, 7, seq, &payload(0, seq));
    }
    host.request(
        again,
        Request::TalkEnd {
            stream: 7,
            frame_count: 8,
        },
    );
    host.commit();
    assert!(host.events(again).contains(&Event::TalkEnded {
        stream: 7,
        frame_count: 8
    }));
    let h = &heard(host.events(listener))[&msg];
    assert_eq!(seqs(h), (0..8).collect::<Vec<_>>());
    assert_eq!(h.ended, Some((8, MessageOutcome::Complete)));
}

#[test]
fn a_vanished_talkers_message_ends_truncated_after_the_grace_period() {
    let config = ShardConfig {
        talk_resume_grace_ms: 1_000,
        idle_timeout_ms: 60_000,
        ..ShardConfig::default()
    };
    let mut host = Host::new(config);
    let listener = host.client();
    host.listen(listener, 1, "general", ListenFrom::Live);
    let talker = host.client();
    host.talk_start(talker, 1, "general");
    let msg = host.talk_started(talker, 1);
    host.frame(talker, 1, 0, b"a");
    host.frame(talker, 1, 1, b"b");
    let (shard, conn) = host.location[&talker];
    host.shards[shard].connection_closed(host.now_us, conn);
    host.advance_ms(500);
    assert_eq!(heard(host.events(listener))[&msg].ended, None);
    host.advance_ms(600);
    assert_eq!(
        heard(host.events(listener))[&msg].ended,
        Some((2, MessageOutcome::Truncated))
    );
    // Too late to resume.
    host.commit();
    let again = host.client();
    host.request(
        again,
        Request::TalkStart {
            stream: 1,
            conversation: conv("general"),
            codec: Bytes::new(),
            resume: Some(msg),
        },
    );
    assert_eq!(host.errors(again), vec![ErrorCode::MESSAGE_UNAVAILABLE]);
}

#[test]
fn a_message_left_open_by_a_crash_is_resumable_after_the_restart() {
    let mut host = Host::new(ShardConfig::default());
    let talker = host.client();
    host.talk_start(talker, 1, "general");
    let msg = host.talk_started(talker, 1);
    for seq in 0..5 {
        host.frame(talker, 1, seq, &payload(0, seq));
    }
    host.commit();
    // The restart: a new shard over what the store kept, the message still open in it.
    assert_eq!(
        restart_over_store(&mut host, ShardConfig::default(), msg),
        1
    );
    let listener = host.client();
    host.listen(listener, 2, "general", ListenFrom::Live);
    let again = host.client();
    host.request(
        again,
        Request::TalkStart {
            stream: 3,
            conversation: conv("general"),
            codec: Bytes::new(),
            resume: Some(msg),
        },
    );
    assert!(host.events(again).contains(&Event::TalkStarted {
        stream: 3,
        msg_id: msg,
        next_seq: 5
    }));
    for seq in 5..8 {
        host.frame(again, 3, seq, &payload(0, seq));
    }
    host.request(
        again,
        Request::TalkEnd {
            stream: 3,
            frame_count: 8,
        },
    );
    host.commit();
    assert!(host.events(again).contains(&Event::TalkEnded {
        stream: 3,
        frame_count: 8
    }));
    // The live listener of the recovered message hears all of it: replayed, then live.
    let h = &heard(host.events(listener))[&msg];
    assert_eq!(seqs(h), (0..8).collect::<Vec<_>>());
    assert_eq!(h.ended, Some((8, MessageOutcome::Complete)));
}

#[test]
fn a_recovered_message_nobody_resumes_ends_truncated_after_the_grace() {
    let config = ShardConfig {
        talk_resume_grace_ms: 1_000,
        idle_timeout_ms: 60_000,
        ..ShardConfig::default()
    };
    let mut host = Host::new(config.clone());
    let talker = host.client();
    host.talk_start(talker, 1, "general");
    let msg = host.talk_started(talker, 1);
    host.frame(talker, 1, 0, b"a");
    host.commit();
    assert_eq!(restart_over_store(&mut host, config, msg), 1);
    host.advance_ms(1_100);
    host.commit();
    let info = host.shard().store().message_info(msg).unwrap();
    assert_eq!(info.state, MessageState::Ended(EndState::Truncated));
    assert_eq!(host.shard().live_message_count(), 0);
}

/// A restart of the host's one shard after a crash: a new shard over the old shard's store,
/// which still holds `msg` open, recovering it. Returns how many messages are resumable.
fn restart_over_store(host: &mut Host, config: ShardConfig, msg: MsgId) -> usize {
    let store = std::mem::take(host.shard().store_mut());
    let membership = Membership::from_hosts(
        1,
        [HostSpec {
            host: HostId(1),
            cores: vec![0],
            weight_per_core: 1,
        }],
    )
    .unwrap();
    host.shards[0] = Shard::new(
        config,
        ShardId::new(1, 0),
        membership,
        keyring(),
        store,
        host.now_us,
    );
    host.location.clear();
    let now = host.now_us;
    let resumable = host.shard().recover_open_messages(now, &[msg]);
    host.run();
    resumable
}
