//! `keep_cut_messages_open`: a message a crash left open can be continued after the restart
//! from its first frame not on disk, and ends like any other.

use hark_core::shard::MessageState;
use hark_core::{ConvId, MsgId, ShardId};
use hark_storage::{EndState, FrameBatch, ReplayStatus, Store, StoreConfig};

fn config(keep_open: bool) -> StoreConfig {
    StoreConfig {
        preallocate_segments: false,
        keep_cut_messages_open: keep_open,
        ..StoreConfig::default()
    }
}

fn commit_all(store: &mut Store, now_us: u64) {
    while let Some(batch) = store.poll_commit(now_us).unwrap() {
        let done = batch.write_blocking();
        store.commit_completed(done).unwrap();
    }
}

fn frame(seq: u32) -> Vec<u8> {
    format!("frame {seq}").into_bytes()
}

/// Writes frames 0..5 of an open message, commits them, and drops the store without an end
/// (what a crash leaves: the store is never closed).
fn crashed_store(dir: &std::path::Path, shard: ShardId, msg: MsgId) {
    let (mut store, _) = Store::open(dir, shard, config(false), 1_000_000).unwrap();
    store
        .start_message(msg, ConvId(7), b"alice", b"OpusHead")
        .unwrap();
    for seq in 0..5 {
        store.append(msg, seq, &frame(seq)).unwrap();
    }
    commit_all(&mut store, 60_000_000);
    assert_eq!(store.message_info(msg).unwrap().frames_durable, 5);
}

fn replay_all(store: &Store, msg: MsgId) -> (Vec<Vec<u8>>, ReplayStatus) {
    let mut cursor = store.replay_from(msg, 0).unwrap();
    let mut batch = FrameBatch::new();
    let mut frames = Vec::new();
    loop {
        let status = store.replay_next(&mut cursor, 100, &mut batch).unwrap();
        frames.extend(batch.iter().map(|(_, f)| f.to_vec()));
        if status != ReplayStatus::More {
            return (frames, status);
        }
    }
}

#[test]
fn a_cut_message_kept_open_continues_where_the_disk_ends() {
    let dir = tempfile::tempdir().unwrap();
    let shard = ShardId::new(0, 0);
    let msg = MsgId::from_parts(1_000_000, shard, 0);
    crashed_store(dir.path(), shard, msg);

    let (mut store, report) = Store::open(dir.path(), shard, config(true), 2_000_000).unwrap();
    assert_eq!(report.open_messages, vec![msg]);
    assert!(report.truncated_messages.is_empty());
    let info = store.message_info(msg).unwrap();
    assert_eq!(info.state, MessageState::Open);
    assert_eq!(info.frame_count, 5);
    // A frame on disk already is a duplicate; the next one continues the message.
    assert_eq!(
        store.append(msg, 4, &frame(4)).unwrap(),
        hark_core::shard::Appended::Duplicate
    );
    for seq in 5..9 {
        store.append(msg, seq, &frame(seq)).unwrap();
    }
    store
        .end_message(msg, 3_000_000, EndState::Complete)
        .unwrap();
    commit_all(&mut store, 60_000_000);
    let (frames, status) = replay_all(&store, msg);
    assert_eq!(frames, (0..9).map(frame).collect::<Vec<_>>());
    assert_eq!(
        status,
        ReplayStatus::Ended {
            frame_count: 9,
            state: EndState::Complete
        }
    );

    // And it stays that way across another restart.
    drop(store);
    let (store, report) = Store::open(dir.path(), shard, config(true), 4_000_000).unwrap();
    assert!(report.open_messages.is_empty());
    assert_eq!(replay_all(&store, msg).0.len(), 9);
}

#[test]
fn without_the_option_a_cut_message_ends_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let shard = ShardId::new(0, 0);
    let msg = MsgId::from_parts(1_000_000, shard, 0);
    crashed_store(dir.path(), shard, msg);
    let (mut store, report) = Store::open(dir.path(), shard, config(false), 2_000_000).unwrap();
    assert_eq!(report.truncated_messages, vec![msg]);
    assert!(report.open_messages.is_empty());
    assert!(store.append(msg, 5, &frame(5)).is_err());
    commit_all(&mut store, 60_000_000);
    assert_eq!(
        replay_all(&store, msg).1,
        ReplayStatus::Ended {
            frame_count: 5,
            state: EndState::Truncated
        }
    );
}
