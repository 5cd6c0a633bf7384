//! Two shards of one host wired together by the harness: handoff to the owner.

use super::*;

/// A conversation name owned by shard `core` of the two-core test host.
fn owned_by(host: &Host, core: u16) -> String {
    (0..1000)
        .map(|i| format!("room-{i}"))
        .find(|name| host.shards[0].owner_of(conv(name).id()) == ShardId::new(1, core))
        .expect("some name hashes to each core")
}

#[test]
fn a_single_conversation_session_moves_to_the_owner_shard() {
    let mut host = Host::with_cores(ShardConfig::default(), 2);
    let room = owned_by(&host, 1);
    let listener = host.client_on(0);
    host.listen(listener, 1, &room, ListenFrom::Live);
    assert_eq!(
        host.location[&listener].0, 1,
        "the listener moved to the owner"
    );
    let talker = host.client_on(0);
    host.talk_start(talker, 1, &room);
    assert_eq!(host.location[&talker].0, 1);
    let msg = host.talk_started(talker, 1);
    for seq in 0..10 {
        host.frame(talker, 1, seq, &payload(0, seq));
    }
    host.request(
        talker,
        Request::TalkEnd {
            stream: 1,
            frame_count: 10,
        },
    );
    host.commit();
    let h = &heard(host.events(listener))[&msg];
    assert_eq!(seqs(h), (0..10).collect::<Vec<_>>());
    assert!(host.events(talker).contains(&Event::TalkEnded {
        stream: 1,
        frame_count: 10
    }));
    assert_eq!(host.shards[0].connection_count(), 0);
    assert_eq!(host.shards[1].connection_count(), 2);
    // The message was stored by its owner.
    assert_eq!(msg.shard(), ShardId::new(1, 1));
    assert_eq!(host.shards[1].store().frames(msg).map(<[_]>::len), Some(10));
}

#[test]
fn a_multi_conversation_session_hears_both_owners_exactly_once_in_order() {
    let mut host = Host::with_cores(ShardConfig::default(), 2);
    let here = owned_by(&host, 0);
    let there = owned_by(&host, 1);
    let c = host.client_on(0);
    host.listen(c, 1, &here, ListenFrom::Live);
    host.listen(c, 2, &there, ListenFrom::Live);
    assert_eq!(host.location[&c].0, 0, "a multi-conversation session stays");
    assert!(host.events(c).contains(&Event::Listening { sub: 2 }));
    let t0 = host.client_on(0);
    host.talk_start(t0, 1, &here);
    let t1 = host.client_on(0);
    host.talk_start(t1, 1, &there);
    assert_eq!((host.location[&t0].0, host.location[&t1].0), (0, 1));
    let (m0, m1) = (host.talk_started(t0, 1), host.talk_started(t1, 1));
    for seq in 0..15 {
        host.frame(t0, 1, seq, &payload(0, seq));
        host.frame(t1, 1, seq, &payload(1, seq));
        if seq % 4 == 0 {
            host.commit();
        }
    }
    host.request(
        t1,
        Request::TalkEnd {
            stream: 1,
            frame_count: 15,
        },
    );
    host.commit();
    let heard = heard(host.events(c));
    for (msg, t) in [(m0, 0), (m1, 1)] {
        let h = &heard[&msg];
        assert_eq!(seqs(h), (0..15).collect::<Vec<_>>());
        assert!(h.frames.iter().all(|f| f.2[..] == payload(t, f.0)[..]));
    }
    assert_eq!(
        heard[&m1].ended,
        Some((15, crate::protocol::MessageOutcome::Complete))
    );
    // The remote subscription ends on request; the owner forgets the proxy's listener.
    host.request(c, Request::Unlisten { sub: 2 });
    assert!(host.events(c).contains(&Event::Unlistened { sub: 2 }));
    host.talk_start(t1, 2, &there);
    host.frame(t1, 2, 0, b"unheard");
    let m2 = host.talk_started(t1, 2);
    assert!(!super::heard(host.events(c)).contains_key(&m2));
    assert!(host.errors(c).is_empty());
}

#[test]
fn a_multi_conversation_session_talks_through_the_owner() {
    let mut host = Host::with_cores(ShardConfig::default(), 2);
    let here = owned_by(&host, 0);
    let there = owned_by(&host, 1);
    let listener = host.client_on(0);
    host.listen(listener, 1, &there, ListenFrom::Live);
    let c = host.client_on(0);
    host.listen(c, 1, &here, ListenFrom::Live);
    host.talk_start(c, 5, &there);
    let msg = host.talk_started(c, 5);
    assert_eq!(msg.shard(), ShardId::new(1, 1), "the owner assigned the id");
    for seq in 0..6 {
        host.frame(c, 5, seq, &payload(2, seq));
    }
    host.request(
        c,
        Request::TalkEnd {
            stream: 5,
            frame_count: 6,
        },
    );
    host.commit();
    assert!(host.events(c).contains(&Event::Stored {
        stream: 5,
        frames_stored: 6
    }));
    assert!(host.events(c).contains(&Event::TalkEnded {
        stream: 5,
        frame_count: 6
    }));
    assert_eq!(
        seqs(&heard(host.events(listener))[&msg]),
        (0..6).collect::<Vec<_>>()
    );
    // The handle is free again: reused for a new message; after the connection closes, the
    // owner's proxy session is gone.
    host.talk_start(c, 5, &there);
    assert_ne!(host.talk_started(c, 5), msg);
    assert!(host.errors(c).is_empty());
    let before = host.shards[1].connection_count();
    let (shard, conn) = host.location[&c];
    host.shards[shard].connection_closed(host.now_us, conn);
    host.run();
    assert_eq!(host.shards[1].connection_count(), before - 1);
}

#[test]
fn a_slow_listener_across_shards_falls_back_to_replay_on_the_owner() {
    let config = ShardConfig {
        send_queue_bytes_max: 300,
        ..ShardConfig::default()
    };
    let mut host = Host::with_cores(config, 2);
    let here = owned_by(&host, 0);
    let there = owned_by(&host, 1);
    let c = host.client_on(0);
    host.listen(c, 1, &here, ListenFrom::Live);
    host.listen(c, 2, &there, ListenFrom::Live);
    let t = host.client_on(0);
    host.talk_start(t, 1, &there);
    let msg = host.talk_started(t, 1);
    host.stalled.push(c);
    for seq in 0..40 {
        host.now_us += 20_000;
        host.frame(t, 1, seq, &payload(3, seq));
        if seq % 10 == 9 {
            host.commit();
        }
    }
    assert!(heard(host.events(c))[&msg].frames.len() < 40);
    for _ in 0..20 {
        host.unstall(c);
    }
    let h = &heard(host.events(c))[&msg];
    assert_eq!(seqs(h), (0..40).collect::<Vec<_>>());
    let caught_up = host
        .events(c)
        .iter()
        .filter(|e| **e == Event::CaughtUp { sub: 2 })
        .count();
    assert_eq!(caught_up, 2);
}
