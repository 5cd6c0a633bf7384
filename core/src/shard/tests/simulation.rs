//! A seeded random workload on two shards: talkers, listeners joining late, stalls and
//! commits at random points. Invariant: once everything drains, every listener has heard every
//! frame of every message since it listened, once and in order, and each ended message's end.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Frame(usize),
    End(usize),
    Join(usize),
    Stall(usize),
    Unstall(usize),
    Commit,
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..3).prop_map(Op::Frame),
        1 => (0usize..3).prop_map(Op::End),
        1 => (0usize..4).prop_map(Op::Join),
        1 => (0usize..4).prop_map(Op::Stall),
        1 => (0usize..4).prop_map(Op::Unstall),
        2 => Just(Op::Commit),
        1 => Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_workloads_deliver_everything_exactly_once_in_order(
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let config = ShardConfig {
            send_queue_bytes_max: 200,
            send_queue_bytes_hard_max: 1 << 24,
            frames_per_second_max: 1000,
            rate_burst_frames: 1000,
            replay_batch_frames: 3,
            replay_page_messages: 2,
            // Ended streams stay open until their end is durable; commits may be rare here.
            talk_streams_max: 256,
            ..ShardConfig::default()
        };
        let mut host = Host::with_cores(config, 2);
        let rooms = ["general", "team/ops", "walkie-7"];
        let owners: Vec<ShardId> = rooms.iter().map(|r| host.shards[0].owner_of(conv(r).id())).collect();
        prop_assert!(owners.iter().any(|o| *o != owners[0]), "the rooms span both shards");
        // Listeners on shard 0; the first listens to two rooms (routed when owned elsewhere).
        let listeners: Vec<Client> = (0..4).map(|_| host.client_on(0)).collect();
        let mut joined = [false; 4];
        let talkers: Vec<Client> = (0..3).map(|_| host.client_on(0)).collect();
        let mut next_seq = [0u32; 3];
        let mut stream = [0u32; 3];
        let mut open = [false; 3];
        for op in ops {
            match op {
                Op::Frame(t) => {
                    if !open[t] {
                        stream[t] += 1;
                        next_seq[t] = 0;
                        host.talk_start(talkers[t], stream[t], rooms[t]);
                        open[t] = true;
                    }
                    host.now_us += 5_000;
                    host.frame(talkers[t], stream[t], next_seq[t], &payload(t as u32, next_seq[t]));
                    next_seq[t] += 1;
                }
                Op::End(t) => {
                    if open[t] {
                        let frame_count = next_seq[t];
                        host.request(talkers[t], Request::TalkEnd { stream: stream[t], frame_count });
                        open[t] = false;
                    }
                }
                Op::Join(l) => {
                    if !joined[l] {
                        joined[l] = true;
                        host.listen(listeners[l], 1, rooms[l % 3], ListenFrom::Since(0));
                        if l == 0 {
                            host.listen(listeners[l], 2, rooms[1], ListenFrom::Since(0));
                        }
                    }
                }
                Op::Stall(l) => host.stalled.push(listeners[l]),
                Op::Unstall(l) => host.unstall(listeners[l]),
                Op::Commit => host.commit(),
                Op::Tick => host.advance_ms(0),
            }
        }
        for l in 0..4 {
            if !joined[l] {
                host.listen(listeners[l], 1, rooms[l % 3], ListenFrom::Since(0));
                if l == 0 {
                    host.listen(listeners[l], 2, rooms[1], ListenFrom::Since(0));
                }
            }
        }
        for t in 0..3 {
            if open[t] {
                host.request(talkers[t], Request::TalkEnd { stream: stream[t], frame_count: next_seq[t] });
            }
        }
        for _ in 0..50 {
            host.commit();
            for l in &listeners {
                host.unstall(*l);
            }
            host.advance_ms(0);
        }
        for (t, talker) in talkers.iter().enumerate() {
            prop_assert!(host.errors(*talker).is_empty(), "{:?}", host.errors(*talker));
            for s in 1..=stream[t] {
                let msg = host.talk_started(*talker, s);
                let frame_count = host.events(*talker).iter().find_map(|e| match e {
                    Event::TalkEnded { stream, frame_count } if *stream == s => Some(*frame_count),
                    _ => None,
                });
                let frame_count = frame_count.expect("every message ended durably");
                for (l, listener) in listeners.iter().enumerate() {
                    let hears = l % 3 == t || (l == 0 && t == 1);
                    let heard = heard(host.events(*listener));
                    if !hears {
                        prop_assert!(!heard.contains_key(&msg));
                        continue;
                    }
                    let h = &heard[&msg];
                    prop_assert_eq!(seqs(h), (0..frame_count).collect::<Vec<_>>());
                    for (seq, _, bytes) in &h.frames {
                        prop_assert_eq!(&bytes[..], &payload(t as u32, *seq)[..]);
                    }
                    prop_assert_eq!(h.ended.map(|e| e.0), Some(frame_count));
                }
            }
        }
        for listener in &listeners {
            prop_assert!(host.errors(*listener).is_empty(), "{:?}", host.errors(*listener));
        }
    }
}
