//! Listening from a message or a time to a conversation owned on another host: the catch-up
//! through the owner, the switch to the mirror, and what ends it.

use super::cluster::{
    assert_heard_whole, client_on_host, one_core_hosts, owned_by_host, talk_message,
};
use super::*;
use crate::protocol::{ErrorSubject, MessageOutcome};
use crate::shard::owner_catch_up::OWNER_CATCH_UPS_MAX;

/// Catch-ups still running through an owner, over every shard of the cluster.
fn catch_ups_running(cluster: &Host) -> usize {
    cluster
        .shards
        .iter()
        .map(|s| s.mirrors.catch_ups.len())
        .sum()
}

/// The messages a client heard started, in order.
fn started(cluster: &Host, client: Client) -> Vec<MsgId> {
    cluster
        .events(client)
        .iter()
        .filter_map(|e| match e {
            Event::MessageStarted { msg_id, .. } => Some(*msg_id),
            _ => None,
        })
        .collect()
}

fn frames(cluster: &mut Host, talker: Client, stream: u32, seqs: std::ops::Range<u32>) {
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

/// Three stored messages (10, 11, 12 frames) on host 1's conversation `name`, a second apart.
fn history(cluster: &mut Host, talker: Client, name: &str) -> Vec<MsgId> {
    (1..=3)
        .map(|stream| {
            cluster.now_us += 1_000_000;
            talk_message(cluster, talker, stream, name, 9 + stream);
            cluster.talk_started(talker, stream)
        })
        .collect()
}

#[test]
fn listening_from_a_message_on_another_host_hears_it_and_every_later_one_once_in_order() {
    let mut cluster = Host::cluster(ShardConfig::default(), 2, 2);
    let name = owned_by_host(&cluster, 1);
    let talker = client_on_host(&mut cluster, 1, 0);
    let stored = history(&mut cluster, talker, &name);
    // A message in progress, partly durable.
    cluster.now_us += 1_000_000;
    cluster.talk_start(talker, 4, &name);
    frames(&mut cluster, talker, 4, 0..6);
    cluster.commit();
    frames(&mut cluster, talker, 4, 6..8);
    let in_progress = cluster.talk_started(talker, 4);
    // On both shards of host 2: one is the edge, the other routes there.
    let listeners = [0, 1].map(|core| {
        let l = client_on_host(&mut cluster, 2, core);
        cluster.listen(l, 7, &name, ListenFrom::Message(stored[1]));
        l
    });
    frames(&mut cluster, talker, 4, 8..20);
    end(&mut cluster, talker, 4, 20);
    cluster.now_us += 1_000_000;
    talk_message(&mut cluster, talker, 5, &name, 9);
    let later = cluster.talk_started(talker, 5);
    for l in listeners {
        assert!(cluster.errors(l).is_empty(), "{:?}", cluster.errors(l));
        assert_eq!(cluster.events(l)[1], Event::Listening { sub: 7 });
        assert!(cluster.events(l).contains(&Event::CaughtUp { sub: 7 }));
        assert_eq!(
            started(&cluster, l),
            vec![stored[1], stored[2], in_progress, later]
        );
        assert_heard_whole(&cluster, l, stored[1], 11);
        assert_heard_whole(&cluster, l, stored[2], 12);
        assert_heard_whole(&cluster, l, in_progress, 20);
        assert_heard_whole(&cluster, l, later, 9);
    }
    assert_eq!(
        catch_ups_running(&cluster),
        0,
        "both switched to the mirror"
    );
}

#[test]
fn listening_since_a_time_on_another_host_hears_the_messages_started_since_then_live() {
    let mut cluster = Host::cluster(ShardConfig::default(), 2, 1);
    let name = owned_by_host(&cluster, 1);
    let talker = client_on_host(&mut cluster, 1, 0);
    let stored = history(&mut cluster, talker, &name);
    let listener = client_on_host(&mut cluster, 2, 0);
    let since_us = stored[1].start_us();
    cluster.listen(listener, 1, &name, ListenFrom::Since(since_us));
    cluster.now_us += 1_000_000;
    talk_message(&mut cluster, talker, 4, &name, 5);
    let later = cluster.talk_started(talker, 4);
    assert!(cluster.errors(listener).is_empty());
    assert_eq!(
        started(&cluster, listener),
        vec![stored[1], stored[2], later]
    );
    assert_heard_whole(&cluster, listener, stored[1], 11);
    assert_heard_whole(&cluster, listener, stored[2], 12);
    assert_heard_whole(&cluster, listener, later, 5);
    let kinds: Vec<FrameKind> = heard(cluster.events(listener))[&later]
        .frames
        .iter()
        .map(|f| f.1)
        .collect();
    assert_eq!(
        kinds,
        vec![FrameKind::Live; 5],
        "after the switch, from the mirror live"
    );
    assert_eq!(catch_ups_running(&cluster), 0);
}

/// Bytes crossing to host 2 for a message talked after a live listener (and, when
/// `with_catch_up`, a listener that caught up from a message) listen there.
fn peer_bytes_of_a_later_message(with_catch_up: bool) -> usize {
    let mut cluster = Host::cluster(ShardConfig::default(), 2, 2);
    let name = owned_by_host(&cluster, 1);
    let talker = client_on_host(&mut cluster, 1, 0);
    talk_message(&mut cluster, talker, 1, &name, 5);
    let first = cluster.talk_started(talker, 1);
    let live = client_on_host(&mut cluster, 2, 0);
    cluster.listen(live, 1, &name, ListenFrom::Live);
    let mut listeners = vec![live];
    if with_catch_up {
        let catching_up = client_on_host(&mut cluster, 2, 1);
        cluster.listen(catching_up, 1, &name, ListenFrom::Message(first));
        assert_heard_whole(&cluster, catching_up, first, 5);
        assert_eq!(catch_ups_running(&cluster), 0, "switched");
        listeners.push(catching_up);
    }
    let before = cluster.peer_deliver_bytes;
    cluster.now_us += 1_000_000;
    talk_message(&mut cluster, talker, 2, &name, 50);
    let later = cluster.talk_started(talker, 2);
    for l in listeners {
        assert_heard_whole(&cluster, l, later, 50);
    }
    cluster.peer_deliver_bytes - before
}

#[test]
fn after_the_switch_a_later_message_crosses_to_the_host_once_for_all_its_listeners() {
    let live_only = peer_bytes_of_a_later_message(false);
    let with_catch_up = peer_bytes_of_a_later_message(true);
    assert!(live_only > 50 * 40, "the frames crossed: {live_only} bytes");
    assert_eq!(with_catch_up, live_only);
}

#[test]
fn a_message_the_owner_host_does_not_store_is_unavailable_and_the_sub_stays_idle() {
    let mut cluster = Host::cluster(ShardConfig::default(), 2, 1);
    let name = owned_by_host(&cluster, 1);
    let talker = client_on_host(&mut cluster, 1, 0);
    let stored = history(&mut cluster, talker, &name);
    let listener = client_on_host(&mut cluster, 2, 0);
    let unknown = MsgId(stored[0].0 + 1_000);
    cluster.listen(listener, 3, &name, ListenFrom::Message(unknown));
    let after_hello = &cluster.events(listener)[1..];
    assert!(
        matches!(
            after_hello,
            [Event::Error {
                code: ErrorCode::MESSAGE_UNAVAILABLE,
                about: ErrorSubject::Sub(3),
                ..
            }]
        ),
        "{after_hello:?}"
    );
    assert_eq!(catch_ups_running(&cluster), 0);
    cluster.listen(listener, 3, &name, ListenFrom::Message(stored[2]));
    assert_eq!(
        cluster.errors(listener),
        vec![ErrorCode::MESSAGE_UNAVAILABLE]
    );
    assert_heard_whole(&cluster, listener, stored[2], 12);
    assert_eq!(started(&cluster, listener), vec![stored[2]]);
}

#[test]
fn a_stalled_catch_up_listener_is_paced_by_the_owner_and_still_hears_everything_exactly() {
    let budget = 300;
    let config = ShardConfig {
        send_queue_bytes_max: budget,
        ..ShardConfig::default()
    };
    let mut cluster = Host::cluster(config, 2, 1);
    let name = owned_by_host(&cluster, 1);
    let talker = client_on_host(&mut cluster, 1, 0);
    let stored = history(&mut cluster, talker, &name);
    let listener = client_on_host(&mut cluster, 2, 0);
    let before = cluster.wire_len(listener);
    cluster.stalled.push(listener);
    cluster.listen(listener, 1, &name, ListenFrom::Message(stored[0]));
    cluster.now_us += 1_000_000;
    cluster.talk_start(talker, 4, &name);
    frames(&mut cluster, talker, 4, 0..25);
    end(&mut cluster, talker, 4, 25);
    let in_stall = cluster.talk_started(talker, 4);
    // What a stalled listener is handed: its own queue's budget, what the owner sent within
    // its budget for the link, and the control events.
    let queued = cluster.wire_len(listener) - before;
    assert!(queued <= 3 * budget, "{queued} bytes queued while stalled");
    assert_eq!(catch_ups_running(&cluster), 1);
    for _ in 0..200 {
        cluster.unstall(listener);
        cluster.stalled.push(listener);
    }
    cluster.unstall(listener);
    cluster.now_us += 1_000_000;
    talk_message(&mut cluster, talker, 5, &name, 7);
    let later = cluster.talk_started(talker, 5);
    assert!(cluster.errors(listener).is_empty());
    assert_eq!(
        started(&cluster, listener),
        vec![stored[0], stored[1], stored[2], in_stall, later]
    );
    for (msg, n) in [
        (stored[0], 10),
        (stored[1], 11),
        (stored[2], 12),
        (in_stall, 25),
        (later, 7),
    ] {
        assert_heard_whole(&cluster, listener, msg, n);
    }
    assert_eq!(catch_ups_running(&cluster), 0);
}

#[test]
fn a_catch_up_in_progress_when_the_owner_host_is_lost_or_moves_ends_so_the_client_listens_again() {
    for lost in [true, false] {
        let config = ShardConfig {
            send_queue_bytes_max: 300,
            ..ShardConfig::default()
        };
        let mut cluster = Host::cluster(config, 3, 1);
        let name = owned_by_host(&cluster, 1);
        let talker = client_on_host(&mut cluster, 1, 0);
        let stored = history(&mut cluster, talker, &name);
        let listener = client_on_host(&mut cluster, 2, 0);
        cluster.stalled.push(listener);
        cluster.listen(listener, 1, &name, ListenFrom::Message(stored[0]));
        assert_eq!(catch_ups_running(&cluster), 1);
        cluster.dead_hosts.push(HostId(1));
        let edge = cluster.index_of(ShardId::new(2, 0));
        let now = cluster.now_us;
        if lost {
            cluster.shards[edge].peer_lost(now, ShardId::new(1, 0));
        } else {
            let survivors = one_core_hosts(3, &[2, 3]);
            cluster.shards[edge].set_cluster_map(now, survivors);
        }
        cluster.run();
        let expected = if lost {
            ErrorCode::OWNER_UNAVAILABLE
        } else {
            ErrorCode::MAP_CHANGED
        };
        assert_eq!(cluster.errors(listener), vec![expected]);
        assert_eq!(catch_ups_running(&cluster), 0);
        assert!(!cluster.is_closed(listener));
    }
}

#[test]
fn catch_ups_through_owners_are_bounded_per_shard() {
    let config = ShardConfig {
        send_queue_bytes_max: 200,
        ..ShardConfig::default()
    };
    let mut cluster = Host::cluster(config, 2, 1);
    let name = owned_by_host(&cluster, 1);
    let talker = client_on_host(&mut cluster, 1, 0);
    let stored = history(&mut cluster, talker, &name);
    // Stalled listeners stay in their catch-up (more history than their queues take).
    let per_conn = usize::from(ShardConfig::default().subs_max);
    let mut clients = Vec::new();
    let mut opened = 0;
    while opened < OWNER_CATCH_UPS_MAX {
        let c = client_on_host(&mut cluster, 2, 0);
        cluster.stalled.push(c);
        for sub in 0..per_conn.min(OWNER_CATCH_UPS_MAX - opened) {
            cluster.listen(c, sub as u32, &name, ListenFrom::Message(stored[0]));
            opened += 1;
        }
        clients.push(c);
    }
    assert_eq!(catch_ups_running(&cluster), OWNER_CATCH_UPS_MAX);
    let one_more = client_on_host(&mut cluster, 2, 0);
    cluster.listen(one_more, 1, &name, ListenFrom::Message(stored[0]));
    assert_eq!(cluster.errors(one_more), vec![ErrorCode::OWNER_UNAVAILABLE]);
    // From live needs no catch-up.
    cluster.listen(one_more, 2, &name, ListenFrom::Live);
    assert_eq!(cluster.errors(one_more), vec![ErrorCode::OWNER_UNAVAILABLE]);
    for c in clients {
        let (shard, conn) = cluster.location[&c];
        let now = cluster.now_us;
        cluster.shards[shard].connection_closed(now, conn);
        cluster.location.remove(&c);
        cluster.run();
    }
    assert_eq!(catch_ups_running(&cluster), 0);
    cluster.listen(one_more, 3, &name, ListenFrom::Message(stored[0]));
    assert_heard_whole(&cluster, one_more, stored[0], 10);
    assert_eq!(catch_ups_running(&cluster), 0);
}

#[test]
fn a_stalled_live_listener_on_another_host_hears_every_message_that_started_while_behind() {
    let config = ShardConfig {
        send_queue_bytes_max: 300,
        ..ShardConfig::default()
    };
    let mut cluster = Host::cluster(config, 2, 1);
    let name = owned_by_host(&cluster, 1);
    let listener = client_on_host(&mut cluster, 2, 0);
    cluster.listen(listener, 1, &name, ListenFrom::Live);
    cluster.stalled.push(listener);
    let talker = client_on_host(&mut cluster, 1, 0);
    let stored = history(&mut cluster, talker, &name);
    for _ in 0..100 {
        cluster.unstall(listener);
        cluster.stalled.push(listener);
    }
    cluster.unstall(listener);
    assert!(cluster.errors(listener).is_empty());
    assert_eq!(started(&cluster, listener), stored);
    for (msg, n) in stored.iter().zip(10..) {
        assert_heard_whole(&cluster, listener, *msg, n);
    }
}

#[test]
fn a_live_listener_on_another_host_too_far_behind_is_told_to_listen_again() {
    let config = ShardConfig {
        send_queue_bytes_max: 300,
        replay_page_messages: 2,
        ..ShardConfig::default()
    };
    let mut cluster = Host::cluster(config, 2, 1);
    let name = owned_by_host(&cluster, 1);
    let listener = client_on_host(&mut cluster, 2, 0);
    cluster.listen(listener, 1, &name, ListenFrom::Live);
    cluster.stalled.push(listener);
    let talker = client_on_host(&mut cluster, 1, 0);
    let mut stored = history(&mut cluster, talker, &name);
    assert!(
        cluster.errors(listener).is_empty(),
        "two listed while behind"
    );
    cluster.now_us += 1_000_000;
    talk_message(&mut cluster, talker, 4, &name, 13);
    stored.push(cluster.talk_started(talker, 4));
    assert_eq!(cluster.errors(listener), vec![ErrorCode::MAP_CHANGED]);
    // The client listens again from the first message it did not complete.
    cluster.unstall(listener);
    let done: Vec<MsgId> = heard(cluster.events(listener))
        .into_iter()
        .filter(|(_, h)| h.ended.is_some())
        .map(|(m, _)| m)
        .collect();
    let from = *stored.iter().find(|m| !done.contains(m)).unwrap();
    let mark = cluster.events(listener).len();
    cluster.listen(listener, 2, &name, ListenFrom::Message(from));
    let again = heard(&cluster.events(listener)[mark..]);
    let mut expected = Vec::new();
    for (msg, n) in stored.iter().zip(10..).filter(|(m, _)| **m >= from) {
        let h = &again[msg];
        assert_eq!(seqs(h), (0..n).collect::<Vec<_>>());
        assert_eq!(h.ended, Some((n, MessageOutcome::Complete)));
        expected.push(*msg);
    }
    assert_eq!(again.len(), expected.len());
}

#[derive(Debug, Clone)]
enum Op {
    Frame(usize),
    End(usize),
    /// A listener joins from live, from the n-th message so far, or since its start.
    Join(usize, u8, usize),
    Stall(usize),
    Unstall(usize),
    Commit,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        8 => (0usize..2).prop_map(Op::Frame),
        1 => (0usize..2).prop_map(Op::End),
        2 => (0usize..4, 0u8..3, 0usize..8).prop_map(|(l, k, n)| Op::Join(l, k, n)),
        2 => (0usize..4).prop_map(Op::Stall),
        2 => (0usize..4).prop_map(Op::Unstall),
        2 => Just(Op::Commit),
    ]
}

/// A message talked in the simulation: its id, talker, frames, and whether its end was sent.
struct Talked {
    msg: MsgId,
    talker: usize,
    frames: u32,
    ended: bool,
}

/// Which talked messages a listener's listen covers.
type Covers = Box<dyn Fn(&Talked) -> bool>;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    /// Two talkers on the owner host, four listeners on another host joining from live, a
    /// message or a time at random points, stalls and commits in between: once everything
    /// drains, each listener heard exactly the messages its listen covers, each whole, once,
    /// in order, and every catch-up switched to the mirror.
    #[test]
    fn random_catch_ups_across_hosts_hear_exactly_what_they_asked_for(
        ops in proptest::collection::vec(op(), 1..160),
    ) {
        let config = ShardConfig {
            send_queue_bytes_max: 200,
            send_queue_bytes_hard_max: 1 << 24,
            frames_per_second_max: 1000,
            rate_burst_frames: 1000,
            replay_batch_frames: 3,
            replay_page_messages: 64,
            talk_streams_max: 256,
            ..ShardConfig::default()
        };
        let mut cluster = Host::cluster(config, 2, 2);
        let name = owned_by_host(&cluster, 1);
        let talkers = [0, 1].map(|core| client_on_host(&mut cluster, 1, core));
        let listeners = [0, 1, 2, 3].map(|l| client_on_host(&mut cluster, 2, l % 2));
        // Per listener: the messages its listen covers (decided at the join).
        let mut covers: [Option<Covers>; 4] = [None, None, None, None];
        let mut talked: Vec<Talked> = Vec::new();
        let mut open: [Option<(u32, u32)>; 2] = [None, None]; // (stream, next seq)
        let mut streams = [0u32; 2];
        for op in ops {
            match op {
                Op::Frame(t) => {
                    let (stream, seq) = match open[t] {
                        Some(o) => o,
                        None => {
                            streams[t] += 1;
                            cluster.now_us += 1_000;
                            cluster.talk_start(talkers[t], streams[t], &name);
                            let msg = cluster.talk_started(talkers[t], streams[t]);
                            talked.push(Talked { msg, talker: t, frames: 0, ended: false });
                            (streams[t], 0)
                        }
                    };
                    cluster.now_us += 5_000;
                    cluster.frame(talkers[t], stream, seq, &payload(t as u32, seq));
                    open[t] = Some((stream, seq + 1));
                    if let Some(m) = talked.iter_mut().rev().find(|m| m.talker == t) {
                        m.frames = seq + 1;
                    }
                }
                Op::End(t) => {
                    if let Some((stream, frame_count)) = open[t].take() {
                        cluster.request(talkers[t], Request::TalkEnd { stream, frame_count });
                        if let Some(m) = talked.iter_mut().rev().find(|m| m.talker == t) {
                            m.ended = true;
                        }
                    }
                }
                Op::Join(l, kind, n) => {
                    if covers[l].is_some() {
                        continue;
                    }
                    let from = match (kind, talked.get(n % talked.len().max(1))) {
                        (1, Some(m)) => ListenFrom::Message(m.msg),
                        (2, Some(m)) => ListenFrom::Since(m.msg.start_us()),
                        _ => ListenFrom::Live,
                    };
                    cluster.listen(listeners[l], 1, &name, from);
                    // Live hears the messages not ended at the join, then every later one.
                    let ended_before: Vec<MsgId> =
                        talked.iter().filter(|m| m.ended).map(|m| m.msg).collect();
                    covers[l] = Some(match from {
                        ListenFrom::Message(first) => Box::new(move |m: &Talked| m.msg >= first),
                        ListenFrom::Since(t) => Box::new(move |m: &Talked| m.msg.start_us() >= t),
                        ListenFrom::Live => Box::new(move |m: &Talked| !ended_before.contains(&m.msg)),
                    });
                }
                Op::Stall(l) => {
                    if !cluster.stalled.contains(&listeners[l]) {
                        cluster.stalled.push(listeners[l]);
                    }
                }
                Op::Unstall(l) => cluster.unstall(listeners[l]),
                Op::Commit => cluster.commit(),
            }
        }
        for (t, o) in open.iter().enumerate() {
            if let Some((stream, frame_count)) = *o {
                cluster.request(talkers[t], Request::TalkEnd { stream, frame_count });
            }
        }
        for _ in 0..100 {
            cluster.commit();
            for l in &listeners {
                cluster.unstall(*l);
            }
        }
        proptest::prop_assert_eq!(catch_ups_running(&cluster), 0, "every catch-up switched");
        for (l, listener) in listeners.iter().enumerate() {
            proptest::prop_assert!(cluster.errors(*listener).is_empty(), "{:?}", cluster.errors(*listener));
            let Some(covers) = &covers[l] else { continue };
            let heard = heard(cluster.events(*listener));
            let expected: Vec<&Talked> = talked.iter().filter(|m| covers(m)).collect();
            proptest::prop_assert_eq!(heard.len(), expected.len(), "listener {}", l);
            for m in expected {
                let h = heard.get(&m.msg);
                proptest::prop_assert!(h.is_some(), "listener {} missed {}", l, m.msg);
                let h = h.unwrap();
                let frame_count = m.frames;
                proptest::prop_assert_eq!(seqs(h), (0..frame_count).collect::<Vec<_>>());
                for (seq, _, bytes) in &h.frames {
                    proptest::prop_assert_eq!(&bytes[..], &payload(m.talker as u32, *seq)[..]);
                }
                proptest::prop_assert_eq!(h.ended, Some((frame_count, MessageOutcome::Complete)));
            }
        }
    }
}
