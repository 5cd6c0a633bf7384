//! Every bound of the shard is hit by a test.

use super::*;
use crate::protocol::HISTORY_ENTRIES_MAX;

#[test]
fn conversations_per_shard_are_bounded() {
    let mut host = Host::new(ShardConfig {
        conversations_max: 2,
        ..ShardConfig::default()
    });
    let c = host.client();
    host.listen(c, 1, "a", ListenFrom::Live);
    host.listen(c, 2, "b", ListenFrom::Live);
    host.listen(c, 3, "c", ListenFrom::Live);
    host.talk_start(c, 1, "d");
    assert_eq!(
        host.errors(c),
        vec![
            ErrorCode::TOO_MANY_CONVERSATIONS,
            ErrorCode::TOO_MANY_CONVERSATIONS
        ]
    );
    // Idle conversations are forgotten, making room.
    host.request(c, Request::Unlisten { sub: 1 });
    host.talk_start(c, 1, "d");
    assert_eq!(host.errors(c).len(), 2);
}

#[test]
fn open_messages_per_conversation_are_bounded() {
    let config = ShardConfig {
        open_messages_per_conversation_max: 2,
        ..ShardConfig::default()
    };
    let mut host = Host::new(config);
    let talkers: Vec<Client> = (0..3).map(|_| host.client()).collect();
    for t in &talkers {
        host.talk_start(*t, 1, "general");
    }
    assert!(host.errors(talkers[0]).is_empty() && host.errors(talkers[1]).is_empty());
    assert_eq!(
        host.errors(talkers[2]),
        vec![ErrorCode::TOO_MANY_OPEN_MESSAGES]
    );
}

#[test]
fn the_stores_open_message_limit_is_too_many_open_messages() {
    let mut host = Host::new(ShardConfig::default());
    *host.shard().store_mut() = MemoryStore::new(1);
    let a = host.client();
    let b = host.client();
    host.talk_start(a, 1, "x");
    host.talk_start(b, 1, "y");
    assert_eq!(host.errors(b), vec![ErrorCode::TOO_MANY_OPEN_MESSAGES]);
}

#[test]
fn unknown_stream_memory_is_bounded() {
    let mut host = Host::new(ShardConfig::default());
    let c = host.client();
    host.frame(c, 0, 0, b"x");
    host.frame(c, 0, 1, b"x");
    assert_eq!(host.errors(c).len(), 1, "reported once");
    for handle in 1..=super::super::HANDLES_REMEMBERED_MAX as u32 {
        host.frame(c, handle, 0, b"x");
    }
    // Handle 0 was forgotten to make room: it is reported again.
    host.frame(c, 0, 2, b"x");
    assert_eq!(
        host.errors(c).len(),
        super::super::HANDLES_REMEMBERED_MAX + 2
    );
}

#[test]
fn replay_pages_and_pump_steps_are_bounded_yet_deliver_everything() {
    let config = ShardConfig {
        replay_page_messages: 2,
        replay_batch_frames: 1,
        send_queue_bytes_max: 1 << 20,
        send_queue_bytes_hard_max: 1 << 21,
        ..ShardConfig::default()
    };
    let mut host = Host::new(config);
    let t = host.client();
    let frames = super::super::PUMP_STEPS_MAX as u32 + 100;
    let mut ids = Vec::new();
    for stream in 0..5 {
        host.talk_start(t, stream, "general");
        ids.push(host.talk_started(t, stream));
        let count = if stream == 0 { frames } else { 1 };
        for seq in 0..count {
            host.frame(t, stream, seq, b"f");
            host.now_us += 20_000;
        }
        host.request(
            t,
            Request::TalkEnd {
                stream,
                frame_count: count,
            },
        );
        host.commit();
    }
    let l = host.client();
    host.stalled.push(l);
    host.listen(l, 1, "general", ListenFrom::Since(0));
    // One pump stops after PUMP_STEPS_MAX steps and asks to be woken at once.
    assert!(seqs(&heard(host.events(l))[&ids[0]]).len() < frames as usize);
    assert!(
        host.wakes.last().is_some_and(|at| *at <= host.now_us),
        "a wake-up is due"
    );
    host.advance_ms(0);
    let heard = heard(host.events(l));
    assert_eq!(seqs(&heard[&ids[0]]), (0..frames).collect::<Vec<_>>());
    for msg in &ids[1..] {
        assert_eq!(seqs(&heard[msg]), vec![0]);
    }
    assert_eq!(host.events(l).last(), Some(&Event::CaughtUp { sub: 1 }));
}

#[test]
fn a_history_page_is_cut_to_fit_one_frame() {
    let config = ShardConfig {
        history_limit_max: HISTORY_ENTRIES_MAX as u16,
        ..ShardConfig::default()
    };
    let mut host = Host::new(config);
    let c = host.connect_on(0);
    let subject = "s".repeat(64);
    let keyring = keyring();
    let grant = Grant {
        subject: Subject::new(subject).unwrap(),
        rights: Rights::of(&[Right::Talk, Right::History]),
        scope: Scope::Prefix(ConvPrefix::new("").unwrap()),
        expires_at_s: 1_900_000_000,
        key_id: keyring.minting_key_id(),
    };
    host.hello(c, Bytes::from(keyring.mint(&grant).unwrap()));
    for stream in 0..HISTORY_ENTRIES_MAX as u32 {
        host.talk_start(c, stream, "general");
        host.request(
            c,
            Request::TalkEnd {
                stream,
                frame_count: 0,
            },
        );
        host.commit();
        host.now_us += 1;
    }
    host.commit();
    host.request(
        c,
        Request::History {
            request: 1,
            conversation: conv("general"),
            since_us: 0,
            limit: u16::MAX,
        },
    );
    let Some(Event::HistoryPage { entries, more, .. }) = host.events(c).last().cloned() else {
        panic!("a history page");
    };
    // 64-byte senders make an entry 91 bytes: 720 fit in 64 KiB, the rest is `more`.
    assert_eq!(
        entries.len(),
        (crate::protocol::FRAME_LEN_MAX as usize + 4 - 12) / 91
    );
    assert!(more);
}
