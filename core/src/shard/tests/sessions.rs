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
fn an_attached_session_cannot_reach_another_owner_yet() {
    let mut host = Host::with_cores(ShardConfig::default(), 2);
    let here = owned_by(&host, 0);
    let there = owned_by(&host, 1);
    let c = host.client_on(0);
    host.listen(c, 1, &here, ListenFrom::Live);
    host.listen(c, 2, &there, ListenFrom::Live);
    assert_eq!(host.location[&c].0, 0);
    assert_eq!(host.errors(c), vec![ErrorCode::INTERNAL]);
}
