//! Fan-out and history.

use super::*;
use crate::protocol::MessageOutcome;

#[test]
fn every_listener_gets_every_frame_once_in_order_byte_identical_and_shared() {
    let mut host = Host::new(ShardConfig::default());
    let listeners: Vec<Client> = (0..3).map(|_| host.client()).collect();
    for (i, l) in listeners.iter().enumerate() {
        host.listen(*l, i as u32 + 10, "general", ListenFrom::Live);
    }
    let talkers: Vec<Client> = (0..2).map(|_| host.client()).collect();
    for t in &talkers {
        host.talk_start(*t, 1, "general");
    }
    for seq in 0..20 {
        for (t, talker) in talkers.iter().enumerate() {
            host.now_us += 10_000;
            host.frame(*talker, 1, seq, &payload(t as u32, seq));
        }
    }
    for (t, talker) in talkers.iter().enumerate() {
        host.request(
            *talker,
            Request::TalkEnd {
                stream: 1,
                frame_count: 20,
            },
        );
        let msg = host.talk_started(*talker, 1);
        for l in &listeners {
            let heard = heard(host.events(*l));
            let h = &heard[&msg];
            assert_eq!(seqs(h), (0..20).collect::<Vec<_>>());
            for (seq, kind, bytes) in &h.frames {
                assert_eq!(*kind, FrameKind::Live);
                assert_eq!(&bytes[..], &payload(t as u32, *seq)[..]);
            }
            assert_eq!(h.ended, Some((20, MessageOutcome::Complete)));
        }
    }
    // The same encoded frame is shared by the three listeners (one encoding per frame).
    let firsts: Vec<*const u8> = listeners
        .iter()
        .map(|l| {
            host.wire[l]
                .iter()
                .find(|b| b.len() > 4 && b[4] == 0x47)
                .unwrap()
                .as_ptr()
        })
        .collect();
    assert!(firsts.windows(2).all(|w| w[0] == w[1]));
    // Talkers: stored acks and talk_ended after the commit.
    host.commit();
    for talker in &talkers {
        let events = host.events(*talker);
        assert!(events.contains(&Event::Stored {
            stream: 1,
            frames_stored: 20
        }));
        assert!(events.contains(&Event::TalkEnded {
            stream: 1,
            frame_count: 20
        }));
    }
    assert_eq!(host.shard().live_message_count(), 0);
    assert_eq!(
        host.shard().handles.in_use(),
        0,
        "every message stream handle is released"
    );
}

#[test]
fn history_lists_messages_since_a_time_with_more_and_the_limit() {
    let config = ShardConfig {
        history_limit_max: 2,
        ..ShardConfig::default()
    };
    let mut host = Host::new(config);
    let talker = host.client();
    for stream in 0..3 {
        host.now_us += 1_000_000;
        host.talk_start(talker, stream, "general");
        host.frame(talker, stream, 0, b"x");
        host.now_us += 40_000;
        host.request(
            talker,
            Request::TalkEnd {
                stream,
                frame_count: 1,
            },
        );
    }
    host.commit();
    let reader = host.client();
    host.request(
        reader,
        Request::History {
            request: 5,
            conversation: conv("general"),
            since_us: 0,
            limit: 100,
        },
    );
    let page = host.events(reader).last().cloned().unwrap();
    let Event::HistoryPage {
        request,
        entries,
        more,
    } = page
    else {
        panic!("history page expected, got {page:?}");
    };
    assert_eq!((request, entries.len(), more), (5, 2, true));
    assert_eq!(entries[0].sender, "alice");
    assert_eq!(entries[0].duration_ms, 40);
    assert_eq!(entries[0].frame_count, 1);
    assert_eq!(entries[0].outcome, MessageOutcome::Complete);
    let since = entries[1].msg_id.start_us() + 1;
    host.request(
        reader,
        Request::History {
            request: 6,
            conversation: conv("general"),
            since_us: since,
            limit: 100,
        },
    );
    let Some(Event::HistoryPage { entries, more, .. }) = host.events(reader).last().cloned() else {
        panic!("history page expected");
    };
    assert_eq!((entries.len(), more), (1, false));
}
