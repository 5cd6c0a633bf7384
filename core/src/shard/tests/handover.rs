//! Handing a message over: the owner of a conversation dies or drains mid-message, the talker
//! resumes, and the new owner adopts the message under its id; listeners elsewhere hear it
//! once, whole.

use super::cluster::{assert_heard_whole, client_on_host, one_core_hosts};
use super::*;
use crate::map::{HostSpec, Membership};
use crate::protocol::MessageOutcome;
use crate::shard::{BodyStore, EndState, MessageHeader, MessageState};

/// A conversation owned by host `first` while hosts 1..=3 live and by host `then` once host
/// `first` is gone.
fn moving_name(cluster: &Host, first: u16, then: u16) -> String {
    let survivors: Vec<u16> = (1..=3).filter(|h| *h != first).collect();
    let after = one_core_hosts(3, &survivors);
    (0..10_000)
        .map(|i| format!("handover-{i}"))
        .find(|name| {
            let id = conv(name).id();
            cluster.shards[0].owner_of(id).host == HostId(first)
                && after.owner(id).is_some_and(|s| s.host == HostId(then))
        })
        .expect("some name moves so")
}

/// A conversation owned by host 1 while host 3 is away and by host 3 once it is back.
fn comeback_name(prefix: &str) -> String {
    let back = one_core_hosts(3, &[1, 2, 3]);
    let without = one_core_hosts(3, &[1, 2]);
    (0..10_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|n| {
            let id = conv(n).id();
            without.owner(id).is_some_and(|s| s.host == HostId(1))
                && back.owner(id).is_some_and(|s| s.host == HostId(3))
        })
        .expect("some name moves so")
}

/// Host `dead` dies: the others lose their links to it, then apply the map without it.
fn kill_host(cluster: &mut Host, dead: u16) {
    cluster.dead_hosts.push(HostId(dead));
    let survivors: Vec<u16> = (1..=3).filter(|h| *h != dead).collect();
    for &host in &survivors {
        let i = cluster.index_of(ShardId::new(host, 0));
        let now = cluster.now_us;
        cluster.shards[i].peer_lost(now, ShardId::new(dead, 0));
    }
    cluster.run();
    move_map(cluster, &survivors, &survivors);
}

/// The hosts in `apply` take the map of `live`.
fn move_map(cluster: &mut Host, live: &[u16], apply: &[u16]) {
    let map = one_core_hosts(3, live);
    for &host in apply {
        let i = cluster.index_of(ShardId::new(host, 0));
        let now = cluster.now_us;
        cluster.shards[i].set_cluster_map(now, map.clone());
    }
    cluster.run();
}

fn resume(cluster: &mut Host, talker: Client, stream: u32, name: &str, msg: MsgId) {
    cluster.request(
        talker,
        Request::TalkStart {
            stream,
            conversation: conv(name),
            codec: Bytes::from_static(b"OpusHead"),
            resume: Some(msg),
        },
    );
}

/// The `next_seq` of the talker's last `talk_started` on `stream`.
fn next_seq(cluster: &Host, talker: Client, stream: u32) -> u32 {
    cluster
        .events(talker)
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::TalkStarted {
                stream: s,
                next_seq,
                ..
            } if *s == stream => Some(*next_seq),
            _ => None,
        })
        .expect("talk_started")
}

fn send(cluster: &mut Host, talker: Client, stream: u32, seqs: std::ops::Range<u32>) {
    for seq in seqs {
        cluster.frame(talker, stream, seq, &[seq as u8; 40]);
    }
}

fn end(cluster: &mut Host, talker: Client, stream: u32, frame_count: u32) {
    cluster.request(
        talker,
        Request::TalkEnd {
            stream,
            frame_count,
        },
    );
    cluster.commit();
}

fn stored(cluster: &Host, host: u16, msg: MsgId) -> Option<MessageHeader> {
    let i = cluster.index_of(ShardId::new(host, 0));
    cluster.shards[i].store.message_info(msg)
}

#[test]
fn after_the_owner_dies_the_talker_resumes_on_the_new_owner_and_listeners_hear_the_message_once_whole()
 {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    let name = moving_name(&cluster, 1, 2);
    // Host 2 becomes the owner and holds a copy (its listener's mirror); host 3 does not.
    let listeners = [2, 3].map(|h| {
        let l = client_on_host(&mut cluster, h, 0);
        cluster.listen(l, 1, &name, ListenFrom::Live);
        l
    });
    let talker = client_on_host(&mut cluster, 3, 0);
    cluster.talk_start(talker, 1, &name);
    send(&mut cluster, talker, 1, 0..5);
    cluster.commit();
    let msg = cluster.talk_started(talker, 1);
    assert_eq!(msg.shard().host, HostId(1));

    kill_host(&mut cluster, 1);
    assert_eq!(cluster.errors(talker), vec![ErrorCode::OWNER_UNAVAILABLE]);
    resume(&mut cluster, talker, 1, &name, msg);
    assert_eq!(
        cluster.talk_started(talker, 1),
        msg,
        "the same message goes on"
    );
    assert_eq!(
        next_seq(&cluster, talker, 1),
        5,
        "the new owner stored the copy it held and asks for what follows"
    );
    send(&mut cluster, talker, 1, 5..10);
    end(&mut cluster, talker, 1, 10);
    for l in listeners {
        assert_heard_whole(&cluster, l, msg, 10);
    }
    let header = stored(&cluster, 2, msg).expect("stored by the new owner");
    assert_eq!(header.frame_count, 10);
    assert_eq!(header.state, MessageState::Ended(EndState::Complete));
    assert_eq!(
        cluster.shards[cluster.index_of(ShardId::new(2, 0))]
            .tally()
            .messages_handed_over,
        1
    );
}

#[test]
fn a_new_owner_without_a_copy_adopts_the_message_from_its_first_frame() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    let name = moving_name(&cluster, 1, 2);
    let listener = client_on_host(&mut cluster, 3, 0);
    cluster.listen(listener, 1, &name, ListenFrom::Live);
    let talker = client_on_host(&mut cluster, 3, 0);
    cluster.talk_start(talker, 1, &name);
    send(&mut cluster, talker, 1, 0..6);
    cluster.commit();
    let msg = cluster.talk_started(talker, 1);

    kill_host(&mut cluster, 1);
    resume(&mut cluster, talker, 1, &name, msg);
    assert_eq!(
        next_seq(&cluster, talker, 1),
        0,
        "resend from the first frame"
    );
    send(&mut cluster, talker, 1, 0..9);
    end(&mut cluster, talker, 1, 9);
    // The listener's mirror held frames 0..6: it drops them again and goes on at 6.
    assert_heard_whole(&cluster, listener, msg, 9);
    let header = stored(&cluster, 2, msg).expect("stored by the new owner");
    assert_eq!(header.frame_count, 9);
    // Ids the new owner issues later sort after the adopted one.
    let talker2 = client_on_host(&mut cluster, 2, 0);
    cluster.talk_start(talker2, 1, &name);
    assert!(cluster.talk_started(talker2, 1) > msg);
}

#[test]
fn a_draining_owner_hands_its_open_message_to_the_new_owner() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    let name = moving_name(&cluster, 1, 2);
    let listener = client_on_host(&mut cluster, 3, 0);
    cluster.listen(listener, 1, &name, ListenFrom::Live);
    let talker = client_on_host(&mut cluster, 1, 0);
    cluster.talk_start(talker, 1, &name);
    send(&mut cluster, talker, 1, 0..4);
    cluster.commit();
    let msg = cluster.talk_started(talker, 1);

    // Host 1 leaves the map and shuts down before the others have heard it left: their
    // mirrors must not hear the message end there.
    move_map(&mut cluster, &[2, 3], &[1]);
    let i = cluster.index_of(ShardId::new(1, 0));
    let now = cluster.now_us;
    cluster.shards[i].begin_shutdown_with(now, &["127.0.0.2:7000".into()]);
    cluster.run();
    move_map(&mut cluster, &[2, 3], &[2, 3]);
    cluster.advance_ms(100);
    assert!(
        cluster.errors(talker).contains(&ErrorCode::SHUTTING_DOWN),
        "{:?}",
        cluster.events(talker)
    );
    cluster.commit();
    let old = stored(&cluster, 1, msg).expect("the old owner keeps what it stored");
    assert_eq!(old.state, MessageState::Ended(EndState::Truncated));

    // The talker follows go_away to host 2 and resumes there.
    let moved = client_on_host(&mut cluster, 2, 0);
    resume(&mut cluster, moved, 1, &name, msg);
    let from = next_seq(&cluster, moved, 1);
    assert_eq!(from, 0);
    send(&mut cluster, moved, 1, from..7);
    end(&mut cluster, moved, 1, 7);
    assert_heard_whole(&cluster, listener, msg, 7);
    assert_eq!(stored(&cluster, 2, msg).map(|h| h.frame_count), Some(7));
}

#[test]
fn a_held_message_nobody_resumes_ends_truncated_after_the_grace() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    let name = moving_name(&cluster, 1, 2);
    let listener = client_on_host(&mut cluster, 3, 0);
    cluster.listen(listener, 1, &name, ListenFrom::Live);
    let talker = client_on_host(&mut cluster, 1, 0);
    cluster.talk_start(talker, 1, &name);
    send(&mut cluster, talker, 1, 0..3);
    let msg = cluster.talk_started(talker, 1);
    kill_host(&mut cluster, 1);
    let grace_ms = ShardConfig::default().talk_resume_grace_ms;
    cluster.advance_ms(grace_ms / 2);
    assert_eq!(heard(cluster.events(listener))[&msg].ended, None, "held");
    cluster.advance_ms(grace_ms);
    assert_eq!(
        heard(cluster.events(listener))[&msg].ended,
        Some((3, MessageOutcome::Truncated))
    );
    // Too late now: the listener heard it end, so it is not adopted again.
    let talker2 = client_on_host(&mut cluster, 3, 0);
    resume(&mut cluster, talker2, 1, &name, msg);
    cluster.commit();
    assert_eq!(heard(cluster.events(listener)).len(), 1);
}

#[test]
fn a_resume_is_refused_for_a_message_stored_here_or_made_up() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    let name = moving_name(&cluster, 1, 2);
    let talker = client_on_host(&mut cluster, 1, 0);
    talk_message_on(&mut cluster, talker, &name);
    let msg = cluster.talk_started(talker, 1);
    // Ended on its own shard: not open for a resume.
    resume(&mut cluster, talker, 2, &name, msg);
    assert_eq!(cluster.errors(talker), vec![ErrorCode::MESSAGE_UNAVAILABLE]);
    // An id of another shard from long ago is not taken over.
    let old = MsgId::from_parts(
        cluster.now_us - crate::shard::handover::ADOPT_AGE_MAX_US - 1,
        ShardId::new(3, 0),
        0,
    );
    resume(&mut cluster, talker, 3, &name, old);
    // Nor one from the future.
    let ahead = MsgId::from_parts(
        cluster.now_us + crate::shard::handover::ADOPT_CLOCK_SKEW_MAX_US + 1,
        ShardId::new(3, 0),
        0,
    );
    resume(&mut cluster, talker, 4, &name, ahead);
    assert_eq!(cluster.errors(talker).len(), 3);
    let i = cluster.index_of(ShardId::new(1, 0));
    assert_eq!(cluster.shards[i].tally().messages_handed_over, 0);
}

fn talk_message_on(cluster: &mut Host, talker: Client, name: &str) {
    cluster.talk_start(talker, 1, name);
    send(cluster, talker, 1, 0..2);
    end(cluster, talker, 1, 2);
}

#[test]
fn a_map_that_moves_a_conversation_while_its_owner_lives_cuts_no_message_in_progress() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    // Host 3 is away: the conversation is host 1's; when host 3 is back it is host 3's.
    move_map(&mut cluster, &[1, 2], &[1, 2, 3]);
    let name = comeback_name("comeback");
    let listener = client_on_host(&mut cluster, 2, 0);
    cluster.listen(listener, 1, &name, ListenFrom::Live);
    let talker = client_on_host(&mut cluster, 2, 0);
    cluster.talk_start(talker, 1, &name);
    send(&mut cluster, talker, 1, 0..5);
    let msg = cluster.talk_started(talker, 1);
    assert_eq!(msg.shard().host, HostId(1));

    // Host 3 comes back: the map moves the conversation while host 1 still talks it.
    let map = one_core_hosts(4, &[1, 2, 3]);
    for host in [2, 1, 3] {
        let i = cluster.index_of(ShardId::new(host, 0));
        let now = cluster.now_us;
        cluster.shards[i].set_cluster_map(now, map.clone());
        cluster.run();
    }
    send(&mut cluster, talker, 1, 5..10);
    end(&mut cluster, talker, 1, 10);
    cluster.advance_ms(ShardConfig::default().talk_resume_grace_ms * 2);
    assert_heard_whole(&cluster, listener, msg, 10);
    // The next message is the new owner's, and heard too.
    cluster.talk_start(talker, 2, &name);
    send(&mut cluster, talker, 2, 0..4);
    end(&mut cluster, talker, 2, 4);
    let next = cluster.talk_started(talker, 2);
    assert_eq!(next.shard().host, HostId(3));
    assert_heard_whole(&cluster, listener, next, 4);
}

#[test]
fn a_resume_goes_to_the_shard_the_message_is_open_on_after_the_map_moved_the_conversation() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    move_map(&mut cluster, &[1, 2], &[1, 2, 3]);
    let name = comeback_name("resume-home");
    let talker = client_on_host(&mut cluster, 2, 0);
    cluster.talk_start(talker, 1, &name);
    send(&mut cluster, talker, 1, 0..5);
    let msg = cluster.talk_started(talker, 1);
    // Host 3 is back and owns the conversation; the message is still open on host 1.
    move_map(&mut cluster, &[1, 2, 3], &[1, 2, 3]);
    cluster.hang_up(talker);
    let again = client_on_host(&mut cluster, 3, 0);
    resume(&mut cluster, again, 1, &name, msg);
    assert_eq!(next_seq(&cluster, again, 1), 5, "resumed where it is open");
    send(&mut cluster, again, 1, 5..8);
    end(&mut cluster, again, 1, 8);
    assert_eq!(stored(&cluster, 1, msg).map(|h| h.frame_count), Some(8));
    assert_eq!(stored(&cluster, 3, msg), None, "not taken over");
}

#[test]
fn frames_in_flight_after_the_owner_cut_the_stream_are_dropped_without_another_error() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    let name = moving_name(&cluster, 1, 2);
    let talker = client_on_host(&mut cluster, 3, 0);
    cluster.talk_start(talker, 1, &name);
    send(&mut cluster, talker, 1, 0..3);
    let i = cluster.index_of(ShardId::new(1, 0));
    let now = cluster.now_us;
    cluster.shards[i].begin_shutdown_with(now, &["127.0.0.2:7000".into()]);
    cluster.run();
    assert_eq!(cluster.errors(talker), vec![ErrorCode::SHUTTING_DOWN]);
    // Sent before the talker heard it.
    send(&mut cluster, talker, 1, 3..5);
    assert_eq!(cluster.errors(talker), vec![ErrorCode::SHUTTING_DOWN]);
}

#[test]
fn a_talker_whose_own_host_drains_resumes_its_message_through_another_host() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 1);
    let name = moving_name(&cluster, 3, 1);
    let talker = client_on_host(&mut cluster, 2, 0);
    cluster.talk_start(talker, 1, &name);
    send(&mut cluster, talker, 1, 0..4);
    cluster.commit();
    let msg = cluster.talk_started(talker, 1);
    assert_eq!(msg.shard().host, HostId(3));
    // Host 2 leaves the map and drains; its connections close after the linger.
    move_map(&mut cluster, &[1, 3], &[2]);
    let i = cluster.index_of(ShardId::new(2, 0));
    let now = cluster.now_us;
    cluster.shards[i].begin_shutdown_with(now, &["127.0.0.1:7000".into()]);
    cluster.run();
    move_map(&mut cluster, &[1, 3], &[1, 3]);
    cluster.advance_ms(ShardConfig::default().shutdown_linger_ms + 100);
    let again = client_on_host(&mut cluster, 1, 0);
    resume(&mut cluster, again, 1, &name, msg);
    assert_eq!(cluster.errors(again), vec![], "{:?}", cluster.events(again));
    assert_eq!(next_seq(&cluster, again, 1), 4);
}

#[test]
fn a_talker_whose_own_host_drains_resumes_through_another_host_with_two_cores_each() {
    let mut cluster = Host::cluster(ShardConfig::default(), 3, 2);
    let map_of = |hosts: &[u16]| {
        Membership::from_hosts(
            5,
            hosts.iter().map(|&host| HostSpec {
                host: HostId(host),
                cores: vec![0, 1],
                weight_per_core: 1,
            }),
        )
        .unwrap()
    };
    let name = (0..10_000)
        .map(|i| format!("two-core-{i}"))
        .find(|n| cluster.shards[0].owner_of(conv(n).id()).host == HostId(3))
        .expect("a name host 3 owns");
    for core in 0..2 {
        let talker = client_on_host(&mut cluster, 2, core);
        cluster.talk_start(talker, 1, &name);
        send(&mut cluster, talker, 1, 0..4);
        cluster.commit();
        let msg = cluster.talk_started(talker, 1);
        // Host 2 leaves and drains on both cores; the others hear it later.
        for c in 0..2 {
            let i = cluster.index_of(ShardId::new(2, c));
            let now = cluster.now_us;
            cluster.shards[i].set_cluster_map(now, map_of(&[1, 3]));
            cluster.shards[i].begin_shutdown_with(now, &["127.0.0.1:7000".into()]);
        }
        cluster.run();
        send(&mut cluster, talker, 1, 4..6);
        for (host, c) in [(1, 0), (1, 1), (3, 0), (3, 1)] {
            let i = cluster.index_of(ShardId::new(host, c));
            let now = cluster.now_us;
            cluster.shards[i].set_cluster_map(now, map_of(&[1, 3]));
        }
        cluster.run();
        cluster.advance_ms(ShardConfig::default().shutdown_linger_ms + 100);
        let again = client_on_host(&mut cluster, 1, 1 - core);
        resume(&mut cluster, again, 1, &name, msg);
        assert_eq!(cluster.errors(again), vec![], "{:?}", cluster.events(again));
        let from = next_seq(&cluster, again, 1);
        assert!(from <= 6, "{from}");
        send(&mut cluster, again, 1, from..9);
        end(&mut cluster, again, 1, 9);
        assert_eq!(cluster.errors(again), vec![]);
        // The next round starts from a cluster with host 2 back.
        cluster = Host::cluster(ShardConfig::default(), 3, 2);
    }
}

#[test]
fn a_listener_catching_up_on_the_new_owner_hears_a_message_taken_over_after_it_listed_later_ones() {
    let config = ShardConfig {
        send_queue_bytes_max: 300,
        ..ShardConfig::default()
    };
    let mut cluster = Host::cluster(config, 3, 1);
    let name = moving_name(&cluster, 1, 2);
    let talker = client_on_host(&mut cluster, 3, 0);
    cluster.talk_start(talker, 1, &name);
    send(&mut cluster, talker, 1, 0..3);
    cluster.commit();
    let taken = cluster.talk_started(talker, 1);
    kill_host(&mut cluster, 1);
    cluster.advance_ms(10);
    // Two later messages on the new owner.
    let other = client_on_host(&mut cluster, 2, 0);
    let mut later = Vec::new();
    for stream in 1..=2 {
        cluster.talk_start(other, stream, &name);
        send(&mut cluster, other, stream, 0..4);
        end(&mut cluster, other, stream, 4);
        later.push(cluster.talk_started(other, stream));
    }
    // A listener catching up from the start, too slow to be live yet.
    let listener = client_on_host(&mut cluster, 2, 0);
    cluster.stalled.push(listener);
    cluster.listen(listener, 1, &name, ListenFrom::Since(0));
    // The talker resumes the older message now: the new owner takes it over.
    resume(&mut cluster, talker, 1, &name, taken);
    assert_eq!(next_seq(&cluster, talker, 1), 0);
    send(&mut cluster, talker, 1, 0..6);
    end(&mut cluster, talker, 1, 6);
    for _ in 0..50 {
        cluster.unstall(listener);
        cluster.stalled.push(listener);
    }
    cluster.unstall(listener);
    for msg in later {
        assert_heard_whole(&cluster, listener, msg, 4);
    }
    assert_heard_whole(&cluster, listener, taken, 6);
}
