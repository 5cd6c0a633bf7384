//! Several hosts in one thread: talk through one host, listen through others; a conversation's
//! frames cross to each host once; mirrors follow a map change.

use super::*;
use crate::protocol::MessageOutcome;

/// The map of `hosts`, one shard each, at `epoch`.
pub(super) fn one_core_hosts(epoch: u64, hosts: &[u16]) -> Membership {
    Membership::from_hosts(
        epoch,
        hosts.iter().map(|&host| HostSpec {
            host: HostId(host),
            cores: vec![0],
            weight_per_core: 1,
        }),
    )
    .unwrap()
}

/// A conversation name whose owner is on `host`.
pub(super) fn owned_by_host(cluster: &Host, host: u16) -> String {
    (0..10_000)
        .map(|i| format!("room-{i}"))
        .find(|name| cluster.shards[0].owner_of(conv(name).id()).host == HostId(host))
        .expect("some name hashes to each host")
}

pub(super) fn client_on_host(cluster: &mut Host, host: u16, core: u16) -> Client {
    let index = cluster.index_of(ShardId::new(host, core));
    cluster.client_on(index)
}

/// Talks `frames` frames of one message on `stream` and ends it.
pub(super) fn talk_message(
    cluster: &mut Host,
    talker: Client,
    stream: u32,
    name: &str,
    frames: u32,
) {
    cluster.talk_start(talker, stream, name);
    for seq in 0..frames {
        cluster.frame(talker, stream, seq, &[seq as u8; 40]);
    }
    cluster.request(
        talker,
        Request::TalkEnd {
            stream,
            frame_count: frames,
        },
    );
    cluster.commit();
}

pub(super) fn assert_heard_whole(cluster: &Host, listener: Client, msg: MsgId, frames: u32) {
    let heard = heard(cluster.events(listener));
    let got = heard.get(&msg).expect("the listener heard the message");
    let seqs: Vec<u32> = got.frames.iter().map(|f| f.0).collect();
    assert_eq!(seqs, (0..frames).collect::<Vec<_>>(), "{listener:?}");
    for (seq, _, payload) in &got.frames {
        assert_eq!(&payload[..], &[*seq as u8; 40][..]);
    }
    assert_eq!(got.ended, Some((frames, MessageOutcome::Complete)));
}

#[test]
fn talk_through_one_host_and_listen_through_the_others_for_each_owner_host() {
    for owner_host in 1..=3u16 {
        let mut cluster = Host::cluster(ShardConfig::default(), 3, 2);
        let name = owned_by_host(&cluster, owner_host);
        let talk_host = owner_host % 3 + 1;
        let listeners: Vec<Client> = (1..=3u16)
            .filter(|h| *h != talk_host)
            .flat_map(|h| [(h, 0), (h, 1)])
            .map(|(h, core)| client_on_host(&mut cluster, h, core))
            .collect();
        for (i, l) in listeners.iter().enumerate() {
            cluster.listen(*l, i as u32, &name, ListenFrom::Live);
        }
        let talker = client_on_host(&mut cluster, talk_host, 1);
        talk_message(&mut cluster, talker, 5, &name, 30);
        let msg = cluster.talk_started(talker, 5);
        assert_eq!(msg.shard().host, HostId(owner_host), "stored on the owner");
        for l in &listeners {
            assert!(cluster.errors(*l).is_empty(), "{:?}", cluster.errors(*l));
            assert_heard_whole(&cluster, *l, msg, 30);
        }
        assert!(
            cluster.events(talker).iter().any(|e| matches!(
                e,
                Event::TalkEnded {
                    stream: 5,
                    frame_count: 30
                }
            )),
            "the talker on another host hears its message end: {:?}",
            cluster.events(talker)
        );
    }
}

/// Bytes crossing between hosts for one message heard by `per_host` live listeners on each
/// of two hosts that do not own the conversation (the talker on the owner host).
fn peer_bytes_with_listeners_per_host(per_host: u16) -> usize {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 2);
    let name = owned_by_host(&cluster, 1);
    let mut listeners = Vec::new();
    for host in [2, 3] {
        for i in 0..per_host {
            let l = client_on_host(&mut cluster, host, i % 2);
            cluster.listen(l, 1, &name, ListenFrom::Live);
            listeners.push(l);
        }
    }
    let talker = client_on_host(&mut cluster, 1, 0);
    let before = cluster.peer_deliver_bytes;
    talk_message(&mut cluster, talker, 1, &name, 50);
    let msg = cluster.talk_started(talker, 1);
    for l in &listeners {
        assert_heard_whole(&cluster, *l, msg, 50);
    }
    cluster.peer_deliver_bytes - before
}

#[test]
fn a_conversations_frames_cross_to_each_host_once_not_once_per_listener() {
    let one = peer_bytes_with_listeners_per_host(1);
    let five = peer_bytes_with_listeners_per_host(5);
    assert!(one > 50 * 40 * 2, "the frames crossed: {one} bytes");
    assert_eq!(one, five, "five listeners per host cost what one does");
}

#[test]
fn a_listener_on_another_host_is_told_caught_up_only_once_the_owner_has_its_subscription() {
    let mut cluster = Host::cluster(ShardConfig::default(), 2, 1);
    let name = owned_by_host(&cluster, 1);
    let listener = client_on_host(&mut cluster, 2, 0);
    let talker = client_on_host(&mut cluster, 1, 0);
    // The link to the owner is slow: the mirror's subscription has not reached it yet.
    cluster.hold_cross_host = true;
    cluster.listen(listener, 1, &name, ListenFrom::Live);
    let caught_up = |cluster: &Host| {
        cluster
            .events(listener)
            .iter()
            .any(|e| matches!(e, Event::CaughtUp { sub: 1 }))
    };
    assert!(
        cluster
            .events(listener)
            .iter()
            .any(|e| matches!(e, Event::Listening { sub: 1 })),
        "{:?}",
        cluster.events(listener)
    );
    assert!(!caught_up(&cluster), "not live before the owner is");
    // A message talked and ended before the subscription arrives is not the listener's.
    talk_message(&mut cluster, talker, 1, &name, 3);
    assert!(!caught_up(&cluster));
    cluster.release_held();
    assert!(caught_up(&cluster), "live once the owner said so");
    assert!(heard(cluster.events(listener)).is_empty());
    // From then on, every message that starts is heard whole.
    talk_message(&mut cluster, talker, 2, &name, 5);
    let msg = cluster.talk_started(talker, 2);
    assert_heard_whole(&cluster, listener, msg, 5);
}

#[test]
fn a_late_listener_on_another_host_hears_the_message_in_progress_from_its_first_frame() {
    let mut cluster = Host::cluster(ShardConfig::default(), 2, 2);
    let name = owned_by_host(&cluster, 1);
    let early = client_on_host(&mut cluster, 2, 0);
    cluster.listen(early, 1, &name, ListenFrom::Live);
    let talker = client_on_host(&mut cluster, 1, 1);
    cluster.talk_start(talker, 1, &name);
    for seq in 0..10 {
        cluster.frame(talker, 1, seq, &[seq as u8; 40]);
    }
    cluster.commit();
    // Joins through the other shard of host 2: it meets the early one on the edge shard.
    let late = client_on_host(&mut cluster, 2, 1);
    cluster.listen(late, 1, &name, ListenFrom::Live);
    for seq in 10..20 {
        cluster.frame(talker, 1, seq, &[seq as u8; 40]);
    }
    cluster.request(
        talker,
        Request::TalkEnd {
            stream: 1,
            frame_count: 20,
        },
    );
    cluster.commit();
    let msg = cluster.talk_started(talker, 1);
    assert_heard_whole(&cluster, early, msg, 20);
    assert_heard_whole(&cluster, late, msg, 20);
}

#[test]
fn a_slow_listener_on_another_host_falls_back_to_the_mirrors_tail_and_misses_nothing() {
    let config = ShardConfig {
        send_queue_bytes_max: 300,
        ..ShardConfig::default()
    };
    let mut cluster = Host::cluster(config, 2, 1);
    let name = owned_by_host(&cluster, 1);
    let slow = client_on_host(&mut cluster, 2, 0);
    let brisk = client_on_host(&mut cluster, 2, 0);
    cluster.listen(slow, 1, &name, ListenFrom::Live);
    cluster.listen(brisk, 1, &name, ListenFrom::Live);
    cluster.stalled.push(slow);
    let talker = client_on_host(&mut cluster, 1, 0);
    talk_message(&mut cluster, talker, 1, &name, 40);
    cluster.unstall(slow);
    for _ in 0..50 {
        cluster.unstall(slow);
    }
    let msg = cluster.talk_started(talker, 1);
    assert_heard_whole(&cluster, brisk, msg, 40);
    assert_heard_whole(&cluster, slow, msg, 40);
    assert!(
        heard(cluster.events(slow))[&msg]
            .frames
            .iter()
            .any(|f| f.1 == FrameKind::Replay),
        "the slow listener was served replay from the tail"
    );
}

#[test]
fn when_the_owner_host_leaves_the_map_listeners_elsewhere_hear_the_new_owner() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    let name = owned_by_host(&cluster, 1);
    let listeners: Vec<Client> = [2, 3]
        .map(|h| {
            let l = client_on_host(&mut cluster, h, 0);
            cluster.listen(l, 1, &name, ListenFrom::Live);
            l
        })
        .to_vec();
    let talker = client_on_host(&mut cluster, 1, 0);
    cluster.talk_start(talker, 1, &name);
    for seq in 0..5 {
        cluster.frame(talker, 1, seq, &[seq as u8; 40]);
    }
    let cut = cluster.talk_started(talker, 1);
    // Host 1 dies: the others' maps drop it.
    let survivors = one_core_hosts(3, &[2, 3]);
    cluster.dead_hosts.push(HostId(1));
    for host in [2, 3] {
        let i = cluster.index_of(ShardId::new(host, 0));
        let now = cluster.now_us;
        cluster.shards[i].set_cluster_map(now, survivors.clone());
    }
    cluster.run();
    // Nobody resumes the cut message: the mirrors hold it for the resume grace, then cut it.
    cluster.advance_ms(ShardConfig::default().talk_resume_grace_ms + 1000);
    let new_owner = cluster.shards[cluster.index_of(ShardId::new(2, 0))].owner_of(conv(&name).id());
    assert_ne!(new_owner.host, HostId(1));
    let talker2 = client_on_host(&mut cluster, 2, 0);
    talk_message(&mut cluster, talker2, 1, &name, 12);
    let msg = cluster.talk_started(talker2, 1);
    assert_eq!(msg.shard(), new_owner);
    for l in &listeners {
        assert_heard_whole(&cluster, *l, msg, 12);
        let heard = heard(cluster.events(*l));
        assert_eq!(
            heard[&cut].ended,
            Some((5, MessageOutcome::Truncated)),
            "the message cut by the dead owner ends for every listener"
        );
    }
}

#[test]
fn a_talker_on_another_host_hears_owner_unavailable_when_the_owner_dies_and_talks_on_after_the_map_moves()
 {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    let name = owned_by_host(&cluster, 1);
    let talker = client_on_host(&mut cluster, 2, 0);
    cluster.talk_start(talker, 1, &name);
    for seq in 0..4 {
        cluster.frame(talker, 1, seq, &[seq as u8; 40]);
    }
    cluster.commit();
    cluster.dead_hosts.push(HostId(1));
    let dead = ShardId::new(1, 0);
    for host in [2, 3] {
        let i = cluster.index_of(ShardId::new(host, 0));
        let now = cluster.now_us;
        cluster.shards[i].peer_lost(now, dead);
    }
    cluster.run();
    assert_eq!(cluster.errors(talker), vec![ErrorCode::OWNER_UNAVAILABLE]);
    // Frames the talker sent before it heard so are dropped without another error.
    cluster.frame(talker, 1, 4, &[4; 40]);
    assert_eq!(cluster.errors(talker), vec![ErrorCode::OWNER_UNAVAILABLE]);
    let survivors = one_core_hosts(3, &[2, 3]);
    for host in [2, 3] {
        let i = cluster.index_of(ShardId::new(host, 0));
        let now = cluster.now_us;
        cluster.shards[i].set_cluster_map(now, survivors.clone());
    }
    cluster.run();
    let listener = client_on_host(&mut cluster, 3, 0);
    cluster.listen(listener, 1, &name, ListenFrom::Live);
    talk_message(&mut cluster, talker, 2, &name, 8);
    let msg = cluster.talk_started(talker, 2);
    assert_ne!(msg.shard().host, HostId(1));
    assert_heard_whole(&cluster, listener, msg, 8);
}

#[test]
fn a_request_under_a_newer_map_waits_for_the_owner_to_apply_it_instead_of_failing() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    let newer = one_core_hosts(5, &[1, 2]);
    // A conversation that host 3 owns now and host 2 owns once host 3 has left.
    let name = (0..10_000)
        .map(|i| format!("moving-{i}"))
        .find(|n| {
            cluster.shards[0].owner_of(conv(n).id()).host == HostId(3)
                && newer.owner(conv(n).id()).unwrap().host == HostId(2)
        })
        .expect("some conversation moves from host 3 to host 2");
    // Host 1 applies the newer map first; host 2 has not yet.
    let now = cluster.now_us;
    cluster.shards[0].set_cluster_map(now, newer.clone());
    cluster.run();
    let talker = client_on_host(&mut cluster, 1, 0);
    cluster.talk_start(talker, 1, &name);
    cluster.frame(talker, 1, 0, &[0; 40]);
    assert!(
        cluster.errors(talker).is_empty(),
        "{:?}",
        cluster.errors(talker)
    );
    assert!(
        !cluster
            .events(talker)
            .iter()
            .any(|e| matches!(e, Event::TalkStarted { .. })),
        "held until the owner has the map"
    );
    let host2 = cluster.index_of(ShardId::new(2, 0));
    cluster.shards[host2].set_cluster_map(now, newer);
    cluster.run();
    let msg = cluster.talk_started(talker, 1);
    assert_eq!(msg.shard().host, HostId(2));
    cluster.frame(talker, 1, 1, &[1; 40]);
    cluster.request(
        talker,
        Request::TalkEnd {
            stream: 1,
            frame_count: 2,
        },
    );
    cluster.commit();
    assert!(
        cluster.errors(talker).is_empty(),
        "{:?}",
        cluster.errors(talker)
    );
    assert!(cluster.events(talker).iter().any(|e| matches!(
        e,
        Event::TalkEnded {
            stream: 1,
            frame_count: 2
        }
    )));
}

#[test]
fn a_request_under_an_older_map_is_refused_with_map_changed() {
    let mut cluster = Host::cluster(ShardConfig::default(), 2, 1);
    let name = owned_by_host(&cluster, 2);
    // Host 2 moved on (a third host joined, say) and host 1 still routes by the old map.
    let newer = one_core_hosts(9, &[1, 2, 4]);
    let host2 = cluster.index_of(ShardId::new(2, 0));
    let now = cluster.now_us;
    cluster.shards[host2].set_cluster_map(now, newer);
    cluster.run();
    let talker = client_on_host(&mut cluster, 1, 0);
    cluster.talk_start(talker, 1, &name);
    assert_eq!(cluster.errors(talker), vec![ErrorCode::MAP_CHANGED]);
}

#[test]
fn a_message_in_progress_goes_on_when_its_owner_applies_a_newer_map_first() {
    let mut cluster = Host::cluster(ShardConfig::default(), 2, 1);
    let name = owned_by_host(&cluster, 2);
    let talker = client_on_host(&mut cluster, 1, 0);
    cluster.talk_start(talker, 1, &name);
    for seq in 0..3 {
        cluster.frame(talker, 1, seq, &[seq as u8; 40]);
    }
    // The owner moves on to a newer map; the talker's host still routes by the old one.
    let host2 = cluster.index_of(ShardId::new(2, 0));
    let now = cluster.now_us;
    cluster.shards[host2].set_cluster_map(now, one_core_hosts(9, &[1, 2, 4]));
    cluster.run();
    for seq in 3..6 {
        cluster.frame(talker, 1, seq, &[seq as u8; 40]);
    }
    cluster.request(
        talker,
        Request::TalkEnd {
            stream: 1,
            frame_count: 6,
        },
    );
    cluster.commit();
    assert_eq!(cluster.errors(talker), vec![], "frames are not map-checked");
    assert!(
        cluster
            .events(talker)
            .iter()
            .any(|e| matches!(e, Event::TalkEnded { frame_count: 6, .. }))
    );
}

#[test]
fn a_message_stored_on_a_host_that_left_is_reported_owner_unavailable_by_name() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    let name = owned_by_host(&cluster, 1);
    let talker = client_on_host(&mut cluster, 1, 0);
    talk_message(&mut cluster, talker, 1, &name, 5);
    let msg = cluster.talk_started(talker, 1);
    cluster.dead_hosts.push(HostId(1));
    let survivors = one_core_hosts(3, &[2, 3]);
    for host in [2, 3] {
        let i = cluster.index_of(ShardId::new(host, 0));
        let now = cluster.now_us;
        cluster.shards[i].peer_lost(now, ShardId::new(1, 0));
        cluster.shards[i].set_cluster_map(now, survivors.clone());
    }
    cluster.run();
    let listener = client_on_host(&mut cluster, 2, 0);
    cluster.listen(listener, 1, &name, ListenFrom::Message(msg));
    let text = cluster.events(listener).iter().find_map(|e| match e {
        Event::Error { code, text, .. } if *code == ErrorCode::OWNER_UNAVAILABLE => {
            Some(text.clone())
        }
        _ => None,
    });
    let text = text.unwrap_or_else(|| panic!("{:?}", cluster.events(listener)));
    assert!(text.contains("host 1"), "{text}");
}
