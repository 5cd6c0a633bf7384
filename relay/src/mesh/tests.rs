use super::*;

use std::future::Future;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Safety net only: a lost wake-up shows up as a hang, turned into a failure here.
const HANG_LIMIT: Duration = Duration::from_secs(120);

fn runtime() -> monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
> {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("the test machine can build a monoio runtime")
}

/// xorshift64*: a seeded batch-size source, so every run exercises the same interleaving sizes.
fn batch_sizes(seed: u64) -> impl FnMut() -> usize {
    let mut x = seed | 1;
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % 97) as usize + 1
    }
}

#[test]
fn rejects_bad_shapes() {
    assert!(matches!(mesh::<u8>(0, 8), Err(MeshError::ShardCount(0))));
    assert!(matches!(
        mesh::<u8>(MESH_SHARDS_MAX + 1, 8),
        Err(MeshError::ShardCount(_))
    ));
    assert!(matches!(mesh::<u8>(2, 0), Err(MeshError::LaneCapacity(0))));
    assert!(matches!(
        mesh::<u8>(2, LANE_CAPACITY_MAX + 1),
        Err(MeshError::LaneCapacity(_))
    ));
}

#[test]
fn a_lane_holds_exactly_its_capacity_and_hands_back_the_rest() {
    let mut links = mesh::<u32>(2, 4).unwrap();
    let outbox = &mut links[0].outbox;
    for i in 0..4 {
        assert_eq!(outbox.push(1, i), Ok(()));
    }
    assert_eq!(outbox.free_slots(1), 0);
    assert_eq!(outbox.push(1, 99), Err(PushError::Full(99)));
    assert_eq!(outbox.push(0, 7), Err(PushError::NoSuchLane(7)));
    assert_eq!(outbox.push(2, 8), Err(PushError::NoSuchLane(8)));
    let ShardLinks { inbox, .. } = links.remove(1);
    runtime().block_on(async move {
        let mut inbox = inbox.open().unwrap();
        let mut got = Vec::new();
        assert_eq!(inbox.drain(usize::MAX, |from, v| got.push((from, v))), 4);
        assert_eq!(got, vec![(0, 0), (0, 1), (0, 2), (0, 3)]);
        assert!(inbox.is_empty());
    });
}

#[test]
fn drain_respects_its_batch_limit_and_takes_lanes_in_turn() {
    let mut links = mesh::<u32>(3, 16).unwrap();
    for i in 0..5 {
        links[0].outbox.push(2, i).unwrap();
        links[1].outbox.push(2, 100 + i).unwrap();
    }
    let ShardLinks { inbox, .. } = links.remove(2);
    runtime().block_on(async move {
        let mut inbox = inbox.open().unwrap();
        let mut got = Vec::new();
        assert_eq!(inbox.drain(3, |from, v| got.push((from, v))), 3);
        assert_eq!(got, vec![(0, 0), (0, 1), (0, 2)]);
        got.clear();
        // The next drain starts with the next lane, so shard 1 is not starved by shard 0.
        assert_eq!(inbox.drain(3, |from, v| got.push((from, v))), 3);
        assert_eq!(got, vec![(1, 100), (1, 101), (1, 102)]);
        got.clear();
        assert_eq!(inbox.drain(usize::MAX, |from, v| got.push((from, v))), 4);
        assert_eq!(got, vec![(0, 3), (0, 4), (1, 103), (1, 104)]);
    });
}

#[test]
fn flush_rings_only_a_parked_receiver() {
    let mut links = mesh::<u32>(2, 8).unwrap();
    let ShardLinks {
        outbox: mut out0, ..
    } = links.remove(0);
    let ShardLinks { inbox: in1, .. } = links.remove(0);
    runtime().block_on(async move {
        monoio::spawn(async move {
            let mut in1 = in1.open().unwrap();
            // Receiver busy (not waiting): items are queued, nobody is rung.
            out0.push(1, 1).unwrap();
            assert_eq!(out0.flush(), 0);
            // Receiver with items already queued does not park.
            in1.wait().await.unwrap();
            assert_eq!(in1.drain(8, |_, _| ()), 1);
            // Receiver parked on an empty inbox: the next flush rings exactly once.
            {
                let mut parked = std::pin::pin!(in1.wait());
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                assert!(parked.as_mut().poll(&mut cx).is_pending());
                out0.push(1, 2).unwrap();
                assert_eq!(out0.flush(), 1);
                assert_eq!(out0.flush(), 0, "nothing new since the last flush");
                parked.await.unwrap();
            }
            let mut got = Vec::new();
            in1.drain(8, |_, v| got.push(v));
            assert_eq!(got, vec![2]);
        })
        .await
    });
}

/// Every shard streams a numbered sequence to every other shard through small lanes, in seeded
/// batch sizes, parking whenever it runs dry. Each receiver must see each sender's sequence
/// complete, in order, exactly once; a lost wake-up would hang and trip the limit.
fn all_to_all(shards: usize, per_pair: u64, lane_capacity: usize) {
    let links = mesh::<(usize, u64)>(shards, lane_capacity).unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let finish = Arc::new(std::sync::Barrier::new(shards));
    let mut threads = Vec::new();
    for (me, ShardLinks { mut outbox, inbox }) in links.into_iter().enumerate() {
        let done_tx = done_tx.clone();
        let finish = Arc::clone(&finish);
        threads.push(thread::spawn(move || {
            runtime().block_on(async move {
                let mut inbox = inbox.open().unwrap();
                let mut next_to_send = vec![0u64; shards];
                let mut next_expected = vec![0u64; shards];
                let mut sizes = batch_sizes(0x9e37_79b9 ^ me as u64);
                let others: Vec<usize> = (0..shards).filter(|&s| s != me).collect();
                let mut received = 0u64;
                let want = per_pair * others.len() as u64;
                loop {
                    let mut progressed = false;
                    for &to in &others {
                        for _ in 0..sizes() {
                            if next_to_send[to] == per_pair {
                                break;
                            }
                            match outbox.push(to, (me, next_to_send[to])) {
                                Ok(()) => {
                                    next_to_send[to] += 1;
                                    progressed = true;
                                }
                                Err(PushError::Full(_)) => break,
                                Err(PushError::NoSuchLane(_)) => panic!("lane {me}->{to} missing"),
                            }
                        }
                    }
                    outbox.flush();
                    let got = inbox.drain(sizes(), |from, (sender, seq)| {
                        assert_eq!(from, sender);
                        assert_eq!(seq, next_expected[from], "shard {me} from {from}");
                        next_expected[from] += 1;
                    });
                    received += got as u64;
                    progressed |= got > 0;
                    let sent_all = others.iter().all(|&to| next_to_send[to] == per_pair);
                    if sent_all && received == want {
                        break;
                    }
                    if !progressed {
                        if sent_all {
                            inbox.wait().await.unwrap();
                        } else {
                            // Our lanes are full: let the receivers run.
                            monoio::time::sleep(Duration::from_micros(50)).await;
                        }
                    }
                }
                done_tx.send(me).unwrap();
                // Stay reachable until every shard is done so late flushes hit a live doorbell.
                finish.wait();
                drop((outbox, inbox));
            })
        }));
    }
    for _ in 0..shards {
        done_rx
            .recv_timeout(HANG_LIMIT)
            .expect("a shard hung: lost wake-up");
    }
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn two_shards_exchange_everything_in_order() {
    all_to_all(2, 200_000, 64);
}

#[test]
fn four_shards_all_to_all_in_order() {
    all_to_all(4, 50_000, 16);
}
