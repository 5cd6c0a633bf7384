//! Behaviour of one store: the write path, acks, replay, timelines, limits, failures, reopen.

mod common;

use common::{SHARD, commit_all, frame, msg, open, replay_all};
use hark_core::{ConvId, MsgId};
use hark_storage::{
    Appended, EndState, FrameBatch, MessageState, ReplayStatus, Store, StoreConfig, StoreError,
    TimelineFrom,
};

fn small() -> StoreConfig {
    StoreConfig {
        segment_bytes_max: 64 * 1024,
        ..StoreConfig::default()
    }
}

#[test]
fn acks_follow_commits_and_replay_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    let m = msg(1);
    store
        .start_message(m, ConvId(5), b"alice", b"OpusHead")
        .unwrap();
    for seq in 0..10 {
        assert_eq!(
            store.append(m, seq, &frame(1, seq)).unwrap(),
            Appended::Stored
        );
    }
    // Nothing due yet: the record is younger than record_flush_ms, but the Start pends.
    let batch = store.poll_commit(1_000_000).unwrap().unwrap();
    let acks = store.commit_completed(batch.write_blocking()).unwrap();
    assert!(acks.durable.is_empty());
    let (frames, status) = replay_all(&store, m, 0);
    assert!(frames.is_empty());
    assert_eq!(status, ReplayStatus::CaughtUp { live_from_seq: 0 });

    // 100 ms later the record is due and the interval has passed.
    let acks = commit_all(&mut store, 1_100_000);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].durable.len(), 1);
    assert_eq!(acks[0].durable[0].msg, m);
    assert_eq!(acks[0].durable[0].durable_through_seq, 9);
    let (frames, status) = replay_all(&store, m, 3);
    assert_eq!(status, ReplayStatus::CaughtUp { live_from_seq: 10 });
    let expected: Vec<_> = (3..10).map(|s| (s, frame(1, s))).collect();
    assert_eq!(frames, expected);

    store.append(m, 10, &frame(1, 10)).unwrap();
    store.end_message(m, 1_300_000, EndState::Complete).unwrap();
    let acks = commit_all(&mut store, 1_300_000);
    assert_eq!(acks[0].durable[0].durable_through_seq, 10);
    assert_eq!(acks[0].ended, vec![(m, EndState::Complete)]);
    let (frames, status) = replay_all(&store, m, 0);
    assert_eq!(frames.len(), 11);
    assert_eq!(
        status,
        ReplayStatus::Ended {
            frame_count: 11,
            state: EndState::Complete
        }
    );
    let info = store.message_info(m).unwrap();
    assert_eq!(info.sender, b"alice");
    assert_eq!(info.codec, b"OpusHead");
    assert_eq!(info.duration_us, Some(1_300_000 - m.start_us()));
    assert_eq!(info.state, MessageState::Ended(EndState::Complete));
}

#[test]
fn records_are_shared_by_several_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    let m = msg(1);
    store.start_message(m, ConvId(5), b"a", b"").unwrap();
    for seq in 0..5 {
        store.append(m, seq, &[seq as u8; 60]).unwrap();
    }
    store.end_message(m, 1_100_000, EndState::Complete).unwrap();
    commit_all(&mut store, 1_100_000);
    // One Frames record of 28 + 8 + 5 * 62 bytes, plus the Start and End records.
    let start = 28 + 12 + 1;
    let frames = 28 + 8 + 5 * 62;
    let end = 28 + 16;
    assert_eq!(store.stored_bytes(), 4096 + 4096);
    assert!(40 + start + frames + end <= 4096);
    let info = store.message_info(m).unwrap();
    assert_eq!(info.frames_durable, 5);
}

#[test]
fn duplicates_are_ignored_and_gaps_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    let m = msg(1);
    store.start_message(m, ConvId(1), b"", b"").unwrap();
    store.append(m, 0, b"a").unwrap();
    store.append(m, 1, b"b").unwrap();
    assert_eq!(store.append(m, 1, b"b").unwrap(), Appended::Duplicate);
    assert!(matches!(
        store.append(m, 5, b"x"),
        Err(StoreError::SequenceGap {
            expected: 2,
            got: 5,
            ..
        })
    ));
    store.append(m, 2, b"c").unwrap();
    store.end_message(m, 1_100_000, EndState::Complete).unwrap();
    commit_all(&mut store, 1_200_000);
    let (frames, _) = replay_all(&store, m, 0);
    assert_eq!(
        frames,
        vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())]
    );
    assert!(matches!(
        store.append(m, 3, b"d"),
        Err(StoreError::MessageNotOpen(_))
    ));
    assert!(matches!(
        store.start_message(m, ConvId(1), b"", b""),
        Err(StoreError::MessageExists(_))
    ));
}

#[test]
fn every_limit_gives_its_error_and_loses_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        frame_bytes_max: 100,
        record_bytes_max: 400,
        open_messages_max: 2,
        sender_bytes_max: 4,
        codec_bytes_max: 8,
        pending_bytes_max: 1000,
        commit_bytes: 1000,
        ..StoreConfig::default()
    };
    let mut store = open(dir.path(), config);
    let (a, b, c) = (msg(1), msg(2), msg(3));
    assert!(matches!(
        store.start_message(a, ConvId(1), b"12345", b""),
        Err(StoreError::HeaderTooLarge {
            field: "sender",
            ..
        })
    ));
    assert!(matches!(
        store.start_message(a, ConvId(1), b"", &[0; 9]),
        Err(StoreError::HeaderTooLarge { field: "codec", .. })
    ));
    store.start_message(a, ConvId(1), b"x", b"").unwrap();
    store.start_message(b, ConvId(1), b"y", b"").unwrap();
    assert!(matches!(
        store.start_message(c, ConvId(1), b"z", b""),
        Err(StoreError::TooManyOpenMessages { max: 2 })
    ));
    assert!(matches!(
        store.append(a, 0, &[0; 101]),
        Err(StoreError::FrameTooLarge { len: 101, max: 100 })
    ));
    // Fill the backlog without committing: full records move to pending until it is full.
    let mut seq = 0;
    let backlog = loop {
        match store.append(a, seq, &[seq as u8; 100]) {
            Ok(_) => seq += 1,
            Err(e) => break e,
        }
        assert!(seq < 100, "the backlog limit was never hit");
    };
    assert!(matches!(
        backlog,
        StoreError::CommitBacklogFull { max: 1000, .. }
    ));
    // b is unaffected in memory; after a commit a continues where it stopped.
    commit_all(&mut store, 1_000_000);
    store.append(a, seq, &[seq as u8; 100]).unwrap();
    store.end_message(a, 2_000_000, EndState::Complete).unwrap();
    store.end_message(b, 2_000_000, EndState::Complete).unwrap();
    commit_all(&mut store, 2_000_000);
    let (frames, status) = replay_all(&store, a, 0);
    assert_eq!(frames.len() as u32, seq + 1);
    for (s, f) in frames {
        assert_eq!(f, vec![s as u8; 100]);
    }
    assert!(matches!(
        status,
        ReplayStatus::Ended {
            state: EndState::Complete,
            ..
        }
    ));
    store.start_message(c, ConvId(1), b"z", b"").unwrap();
}

#[test]
fn a_failed_commit_acks_nothing_and_the_retry_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    let m = msg(1);
    store.start_message(m, ConvId(1), b"s", b"").unwrap();
    for seq in 0..20 {
        store.append(m, seq, &frame(1, seq)).unwrap();
    }
    let batch = store.poll_commit(1_200_000).unwrap().unwrap();
    let offset = batch.offset();
    let enospc = std::io::Error::from_raw_os_error(libc_enospc());
    let err = store.commit_completed(batch.fail(enospc)).unwrap_err();
    assert!(matches!(err, StoreError::DiskFull(_)), "{err}");
    let (frames, _) = replay_all(&store, m, 0);
    assert!(frames.is_empty());
    // Appends keep flowing meanwhile.
    for seq in 20..30 {
        store.append(m, seq, &frame(1, seq)).unwrap();
    }
    store.end_message(m, 1_300_000, EndState::Complete).unwrap();
    let batch = store.poll_commit(1_300_000).unwrap().unwrap();
    assert_eq!(batch.offset(), offset, "the retry starts at the same block");
    let acks = store.commit_completed(batch.write_blocking()).unwrap();
    assert_eq!(acks.durable[0].durable_through_seq, 29);
    drop(store);
    let store = open(dir.path(), StoreConfig::default());
    let (frames, status) = replay_all(&store, m, 0);
    assert_eq!(
        frames,
        (0..30).map(|s| (s, frame(1, s))).collect::<Vec<_>>()
    );
    assert!(matches!(
        status,
        ReplayStatus::Ended {
            frame_count: 30,
            ..
        }
    ));
}

fn libc_enospc() -> i32 {
    28
}

#[test]
fn a_batch_not_in_flight_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = open(other_dir.path(), StoreConfig::default());
    store.start_message(msg(1), ConvId(1), b"", b"").unwrap();
    other.start_message(msg(2), ConvId(1), b"", b"").unwrap();
    let batch = store.poll_commit(2_000_000).unwrap().unwrap();
    assert!(store.commit_in_flight());
    store.start_message(msg(3), ConvId(1), b"", b"").unwrap();
    assert!(
        store.poll_commit(3_000_000).unwrap().is_none(),
        "one in flight"
    );
    let foreign = other.poll_commit(2_000_000).unwrap().unwrap();
    let refused = store.commit_completed(foreign.write_blocking());
    assert!(matches!(refused, Err(StoreError::BatchUnknown)));
    // The store's own batch is still in flight and completes normally.
    store.commit_completed(batch.write_blocking()).unwrap();
    assert!(store.poll_commit(9_000_000).unwrap().is_some());
}

#[test]
fn timelines_answer_since_and_after_with_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    let conv = ConvId(42);
    let ids: Vec<MsgId> = (0..5).map(msg).collect();
    for (i, m) in ids.iter().enumerate() {
        let c = if i == 2 { ConvId(7) } else { conv };
        store.start_message(*m, c, b"s", b"h").unwrap();
        store
            .end_message(*m, m.start_us() + 20_000, EndState::Complete)
            .unwrap();
    }
    commit_all(&mut store, 2_000_000);
    let since = store.timeline(conv, TimelineFrom::Since(ids[1].start_us()), 10);
    let got: Vec<MsgId> = since.iter().map(|i| i.msg).collect();
    assert_eq!(got, vec![ids[1], ids[3], ids[4]]);
    let after = store.timeline(conv, TimelineFrom::After(ids[1]), 1);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].msg, ids[3]);
    assert_eq!(after[0].duration_us, Some(20_000));
    assert!(
        store
            .timeline(ConvId(999), TimelineFrom::Since(0), 10)
            .is_empty()
    );
    let capped = store.timeline(conv, TimelineFrom::Since(0), usize::MAX);
    assert_eq!(capped.len(), 4);
}

#[test]
fn timeline_limit_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    for n in 0..(hark_storage::TIMELINE_LIMIT_MAX as u64 + 5) {
        store.start_message(msg(n), ConvId(1), b"", b"").unwrap();
        store.end_message(msg(n), 0, EndState::Complete).unwrap();
    }
    let all = store.timeline(ConvId(1), TimelineFrom::Since(0), usize::MAX);
    assert_eq!(all.len(), hark_storage::TIMELINE_LIMIT_MAX);
}

#[test]
fn reopen_uses_hints_for_sealed_segments_and_rebuilds_damaged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), small());
    let mut now = 1_000_000;
    for n in 0..40u64 {
        store
            .start_message(msg(n), ConvId(n % 3), b"talker", b"codec")
            .unwrap();
        for seq in 0..50 {
            store.append(msg(n), seq, &frame(n, seq)).unwrap();
        }
        store.end_message(msg(n), now, EndState::Complete).unwrap();
        now += 10_000;
        commit_all(&mut store, now);
    }
    let segments = store.segment_ids();
    assert!(segments.len() >= 3, "segments {segments:?}");
    let newest = store.newest_msg();
    drop(store);

    let (store, report) = Store::open(dir.path(), SHARD, small(), now).unwrap();
    assert_eq!(report.hints_used, segments.len() - 1);
    assert_eq!(report.segments_scanned, 1);
    assert!(report.truncated_messages.is_empty());
    assert_eq!(store.newest_msg(), newest);
    for n in 0..40u64 {
        let (frames, status) = replay_all(&store, msg(n), 0);
        assert_eq!(
            frames,
            (0..50).map(|s| (s, frame(n, s))).collect::<Vec<_>>()
        );
        assert!(matches!(
            status,
            ReplayStatus::Ended {
                frame_count: 50,
                state: EndState::Complete
            }
        ));
    }
    drop(store);

    // Damage one hint, delete another: both are rebuilt from their segments.
    let hint = |id: u32| dir.path().join(format!("seg-{id:08x}.hint"));
    let mut bytes = std::fs::read(hint(segments[0])).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(hint(segments[0]), bytes).unwrap();
    std::fs::remove_file(hint(segments[1])).unwrap();
    let (store, report) = Store::open(dir.path(), SHARD, small(), now).unwrap();
    assert_eq!(report.hints_rebuilt, 2);
    assert_eq!(report.segments_scanned, 3);
    for n in 0..40u64 {
        assert_eq!(replay_all(&store, msg(n), 0).0.len(), 50);
    }
}

#[test]
fn messages_cut_by_a_restart_are_truncated_and_that_is_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    let m = msg(1);
    store.start_message(m, ConvId(1), b"", b"").unwrap();
    for seq in 0..8 {
        store.append(m, seq, &frame(1, seq)).unwrap();
    }
    commit_all(&mut store, 1_200_000);
    store.append(m, 8, &frame(1, 8)).unwrap(); // never committed
    drop(store);
    let (mut store, report) =
        Store::open(dir.path(), SHARD, StoreConfig::default(), 2_000_000).unwrap();
    assert_eq!(report.truncated_messages, vec![m]);
    assert!(matches!(
        store.append(m, 9, b"x"),
        Err(StoreError::MessageNotOpen(_))
    ));
    let (frames, status) = replay_all(&store, m, 0);
    assert_eq!(frames.len(), 8);
    assert_eq!(
        status,
        ReplayStatus::Ended {
            frame_count: 8,
            state: EndState::Truncated
        }
    );
    let acks = commit_all(&mut store, 2_000_000);
    assert_eq!(acks[0].ended, vec![(m, EndState::Truncated)]);
    drop(store);
    let (_, report) = Store::open(dir.path(), SHARD, StoreConfig::default(), 3_000_000).unwrap();
    assert!(report.truncated_messages.is_empty());
}

#[test]
fn a_store_from_a_newer_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), StoreConfig::default()));
    std::fs::write(dir.path().join("format"), "hark-store 99\n").unwrap();
    let err = Store::open(dir.path(), SHARD, StoreConfig::default(), 0).unwrap_err();
    assert!(matches!(
        err,
        StoreError::FormatTooNew {
            found: 99,
            supported: 1,
            ..
        }
    ));
    assert!(err.to_string().contains("format version 99"), "{err}");
    std::fs::write(dir.path().join("format"), "something else").unwrap();
    let err = Store::open(dir.path(), SHARD, StoreConfig::default(), 0).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }));
}

#[test]
fn a_segment_from_a_newer_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    store.start_message(msg(1), ConvId(1), b"", b"").unwrap();
    commit_all(&mut store, 2_000_000);
    drop(store);
    let path = dir.path().join("seg-00000001.hark");
    let mut bytes = std::fs::read(&path).unwrap();
    let mut header = Vec::new();
    hark_storage::format::SegmentHeader {
        version: 2,
        segment: 1,
        host: 1,
        core: 0,
        created_us: 0,
    }
    .encode_block(&mut header);
    bytes[..4096].copy_from_slice(&header);
    std::fs::write(&path, bytes).unwrap();
    let err = Store::open(dir.path(), SHARD, StoreConfig::default(), 0).unwrap_err();
    assert!(
        matches!(err, StoreError::FormatTooNew { found: 2, .. }),
        "{err}"
    );
}

#[test]
fn read_only_open_serves_history_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    store.start_message(msg(1), ConvId(1), b"", b"").unwrap();
    store.append(msg(1), 0, b"hello").unwrap();
    store
        .end_message(msg(1), 1_050_000, EndState::Complete)
        .unwrap();
    commit_all(&mut store, 1_100_000);
    drop(store);
    let before = std::fs::read(dir.path().join("seg-00000001.hark")).unwrap();
    let (mut ro, _) = Store::open_read_only(dir.path(), SHARD, StoreConfig::default()).unwrap();
    assert_eq!(replay_all(&ro, msg(1), 0).0, vec![(0, b"hello".to_vec())]);
    assert!(matches!(
        ro.start_message(msg(2), ConvId(1), b"", b""),
        Err(StoreError::ReadOnly)
    ));
    assert!(ro.poll_commit(9_000_000).unwrap().is_none());
    let after = std::fs::read(dir.path().join("seg-00000001.hark")).unwrap();
    assert_eq!(before, after);
}

#[test]
fn replay_batches_are_bounded_and_resume_where_they_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    let m = msg(1);
    store.start_message(m, ConvId(1), b"", b"").unwrap();
    for seq in 0..10_000 {
        store.append(m, seq, &frame(1, seq)).unwrap();
    }
    store.end_message(m, 1_000_000, EndState::Complete).unwrap();
    commit_all(&mut store, 2_000_000);
    let mut cursor = store.replay_from(m, 0).unwrap();
    let mut batch = FrameBatch::new();
    let status = store
        .replay_next(&mut cursor, usize::MAX, &mut batch)
        .unwrap();
    assert_eq!(batch.len(), hark_storage::replay::REPLAY_FRAMES_MAX);
    assert_eq!(status, ReplayStatus::More);
    assert_eq!(cursor.next_seq(), 4096);
    let status = store.replay_next(&mut cursor, 3, &mut batch).unwrap();
    let seqs: Vec<u32> = batch.iter().map(|(s, _)| s).collect();
    assert_eq!(seqs, vec![4096, 4097, 4098]);
    assert_eq!(status, ReplayStatus::More);
    assert!(matches!(
        store.replay_from(msg(99), 0),
        Err(StoreError::MessageUnknown(_))
    ));
}

#[test]
fn retention_drops_old_segments_but_not_under_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        retention_bytes_max: Some(150 * 1024),
        ..small()
    };
    let mut store = open(dir.path(), config.clone());
    let mut now = 1_000_000;
    for n in 0..60u64 {
        store.start_message(msg(n), ConvId(1), b"", b"").unwrap();
        for seq in 0..50 {
            store.append(msg(n), seq, &frame(n, seq)).unwrap();
        }
        store.end_message(msg(n), now, EndState::Complete).unwrap();
        now += 10_000;
        commit_all(&mut store, now);
    }
    let before = store.stored_bytes();
    assert!(before > 150 * 1024);
    let reader = store.replay_from(msg(0), 0).unwrap();
    let plan = store.apply_retention(now);
    assert!(plan.held_by_reader);
    assert!(plan.segments.is_empty());
    drop(reader);
    let plan = store.apply_retention(now);
    assert!(!plan.segments.is_empty());
    assert!(!plan.held_by_reader);
    plan.remove_files().unwrap();
    assert!(store.stored_bytes() <= 150 * 1024);
    assert_eq!(store.stored_bytes(), before - plan.bytes_freed);
    assert!(matches!(
        store.replay_from(msg(0), 0),
        Err(StoreError::MessageUnknown(_))
    ));
    let oldest = store.timeline(ConvId(1), TimelineFrom::Since(0), 1)[0].msg;
    // Reopen: the deleted messages stay gone, the rest is intact.
    drop(store);
    let store = open(dir.path(), config);
    assert_eq!(
        store.timeline(ConvId(1), TimelineFrom::Since(0), 1)[0].msg,
        oldest
    );
    assert_eq!(replay_all(&store, msg(59), 0).0.len(), 50);
}

#[test]
fn retention_by_age_and_index_size() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        retention_age_ms: Some(1000),
        ..small()
    };
    let mut store = open(dir.path(), config);
    let mut now = 1_000_000;
    for n in 0..30u64 {
        store.start_message(msg(n), ConvId(1), b"", b"").unwrap();
        for seq in 0..50 {
            store.append(msg(n), seq, &frame(n, seq)).unwrap();
        }
        store.end_message(msg(n), now, EndState::Complete).unwrap();
        now += 10_000;
        commit_all(&mut store, now);
    }
    let sealed = store.segment_ids().len() - 1;
    assert!(
        store.apply_retention(now).segments.is_empty(),
        "nothing is a second old"
    );
    let plan = store.apply_retention(now + 2_000_000);
    assert_eq!(plan.segments.len(), sealed);
    assert_eq!(store.segment_ids().len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        index_messages_max: 10,
        ..small()
    };
    let mut store = open(dir.path(), config);
    for n in 0..30u64 {
        store.start_message(msg(n), ConvId(1), b"", b"").unwrap();
        for seq in 0..50 {
            store.append(msg(n), seq, &frame(n, seq)).unwrap();
        }
        store.end_message(msg(n), now, EndState::Complete).unwrap();
        now += 10_000;
        commit_all(&mut store, now);
    }
    let plan = store.apply_retention(now);
    assert!(plan.messages_dropped > 0);
    assert!(store.message_count() <= 10 || store.segment_ids().len() == 1);
}

#[test]
fn next_wakeup_names_the_next_record_flush_or_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    assert_eq!(store.next_wakeup_us(), None, "nothing to do");
    let m = msg(1);
    store.start_message(m, ConvId(1), b"", b"").unwrap();
    // The Start record pends and no commit ever ran: due at once.
    assert_eq!(store.next_wakeup_us(), Some(5_000));
    let batch = store.poll_commit(1_000_000).unwrap().unwrap();
    assert_eq!(store.next_wakeup_us(), None, "a commit is in flight");
    store.commit_completed(batch.write_blocking()).unwrap();
    store.append(m, 0, b"x").unwrap();
    // The frame waits in its record until record_flush_ms (100 ms) after the last poll.
    assert_eq!(store.next_wakeup_us(), Some(1_100_000));
    assert!(store.poll_commit(1_099_999).unwrap().is_none());
    let batch = store.poll_commit(1_100_000).unwrap().unwrap();
    let acks = store.commit_completed(batch.write_blocking()).unwrap();
    assert_eq!(acks.durable[0].durable_through_seq, 0);
}
