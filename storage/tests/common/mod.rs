//! Helpers shared by the integration tests.
#![allow(dead_code)]

use hark_core::{MsgId, ShardId};
use hark_storage::{CommitAcks, FrameBatch, ReplayStatus, Store, StoreConfig};

pub const SHARD: ShardId = ShardId::new(1, 0);

/// The bytes of frame `seq` of message number `n`: deterministic, varied lengths.
pub fn frame(n: u64, seq: u32) -> Vec<u8> {
    let len = 20 + ((n as usize * 7 + seq as usize * 13) % 180);
    (0..len)
        .map(|i| (n as u8).wrapping_mul(31) ^ (seq as u8).wrapping_add(i as u8))
        .collect()
}

pub fn msg(n: u64) -> MsgId {
    MsgId::from_parts(1_000_000 + n * 10, SHARD, n as u32)
}

pub fn open(dir: &std::path::Path, config: StoreConfig) -> Store {
    Store::open(dir, SHARD, config, 1_000_000).unwrap().0
}

/// Flushes everything due at `now_us` and commits it synchronously, as many batches as needed.
pub fn commit_all(store: &mut Store, now_us: u64) -> Vec<CommitAcks> {
    let mut all = Vec::new();
    for _ in 0..1000 {
        match store.poll_commit(now_us).unwrap() {
            Some(batch) => all.push(store.commit_completed(batch.write_blocking()).unwrap()),
            None => return all,
        }
    }
    panic!("commits never ran dry");
}

/// Every durable frame of `msg` from `from_seq`, and the final status.
pub fn replay_all(store: &Store, msg: MsgId, from_seq: u32) -> (Vec<(u32, Vec<u8>)>, ReplayStatus) {
    let mut cursor = store.replay_from(msg, from_seq).unwrap();
    let mut batch = FrameBatch::new();
    let mut frames = Vec::new();
    for _ in 0..1_000_000 {
        let status = store.replay_next(&mut cursor, 7, &mut batch).unwrap();
        frames.extend(batch.iter().map(|(s, f)| (s, f.to_vec())));
        if status != ReplayStatus::More {
            return (frames, status);
        }
    }
    panic!("replay never finished");
}
