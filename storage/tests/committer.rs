//! The I/O executor inside a monoio runtime. CI runs this file with and without
//! MONOIO_FORCE_LEGACY_DRIVER=1, so the runtime below is io_uring in one run and epoll in the
//! other; both committer modes are exercised in each.

mod common;

use std::cell::RefCell;

use common::{frame, msg, open, replay_all};
use hark_core::ConvId;
use hark_storage::{Committer, EndState, IoMode, ReplayStatus, StoreConfig};

fn run<F: std::future::Future>(future: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .build()
        .expect("a monoio runtime")
        .block_on(future)
}

fn commits_and_appends_interleave(mode: IoMode) {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        segment_bytes_max: 32 * 1024,
        ..StoreConfig::default()
    };
    let store = RefCell::new(open(dir.path(), config.clone()));
    let m = msg(1);
    store
        .borrow_mut()
        .start_message(m, ConvId(3), b"talker", b"OpusHead")
        .unwrap();
    run(async {
        let mut committer = Committer::new(mode).unwrap();
        assert_eq!(committer.mode(), mode);
        let mut seq = 0u32;
        let mut now = 1_000_000u64;
        let mut durable_through = None;
        // Several segments' worth, so rolls, directory syncs and hint writes go through too.
        while seq < 3000 {
            let batch = loop {
                for _ in 0..25 {
                    store.borrow_mut().append(m, seq, &frame(1, seq)).unwrap();
                    seq += 1;
                }
                now += 20_000;
                if let Some(batch) = store.borrow_mut().poll_commit(now).unwrap() {
                    break batch;
                }
            };
            // Appends go on while the batch is with the I/O layer.
            let appends = async {
                for _ in 0..5 {
                    store.borrow_mut().append(m, seq, &frame(1, seq)).unwrap();
                    seq += 1;
                }
            };
            let (done, ()) = monoio::join!(committer.commit(batch), appends);
            assert!(done.is_ok());
            let acks = store.borrow_mut().commit_completed(done).unwrap();
            assert!(acks.hint_error.is_none());
            for ack in acks.durable {
                assert!(Some(ack.durable_through_seq) > durable_through);
                durable_through = Some(ack.durable_through_seq);
            }
        }
        store
            .borrow_mut()
            .end_message(m, now, EndState::Complete)
            .unwrap();
        now += 200_000;
        loop {
            let batch = store.borrow_mut().poll_commit(now).unwrap();
            let Some(batch) = batch else { break };
            let done = committer.commit(batch).await;
            store.borrow_mut().commit_completed(done).unwrap();
        }
    });
    let store = store.into_inner();
    let segments = store.segment_ids().len();
    assert!(segments >= 3, "{segments} segments");
    drop(store);
    let (store, report) =
        hark_storage::Store::open(dir.path(), common::SHARD, config, 9_000_000).unwrap();
    assert_eq!(
        report.hints_used,
        segments - 1,
        "hints were written by the committer"
    );
    let (frames, status) = replay_all(&store, m, 0);
    let n = frames.len() as u32;
    assert!(n >= 3000);
    assert_eq!(frames, (0..n).map(|s| (s, frame(1, s))).collect::<Vec<_>>());
    assert_eq!(
        status,
        ReplayStatus::Ended {
            frame_count: n,
            state: EndState::Complete
        }
    );
}

#[test]
fn ring_mode_commits() {
    commits_and_appends_interleave(IoMode::Ring);
}

#[test]
fn sync_thread_mode_commits() {
    commits_and_appends_interleave(IoMode::SyncThread);
}

#[test]
fn detect_follows_the_legacy_override() {
    let forced = std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    if forced {
        assert_eq!(IoMode::detect(), IoMode::SyncThread);
    } else {
        assert_eq!(
            IoMode::detect() == IoMode::Ring,
            monoio::utils::detect_uring()
        );
    }
}

#[test]
fn a_write_error_comes_back_as_a_failed_batch_and_the_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    let m = msg(1);
    store.start_message(m, ConvId(1), b"", b"").unwrap();
    for seq in 0..10 {
        store.append(m, seq, &frame(1, seq)).unwrap();
    }
    let batch = store.poll_commit(2_000_000).unwrap().unwrap();
    // Point the batch at a read-only handle of its file: the write fails with EBADF.
    let done = run(async {
        let mut committer = Committer::new(IoMode::SyncThread).unwrap();
        committer.commit(batch.with_read_only_file_for_test()).await
    });
    assert!(!done.is_ok());
    let err = store.commit_completed(done).unwrap_err();
    assert!(
        matches!(err, hark_storage::StoreError::CommitFailed(_)),
        "{err}"
    );
    let batch = store.poll_commit(2_000_000).unwrap().unwrap();
    let done = run(async {
        let mut committer = Committer::new(IoMode::detect()).unwrap();
        committer.commit(batch).await
    });
    let acks = store.commit_completed(done).unwrap();
    assert_eq!(acks.durable[0].durable_through_seq, 9);
}

#[test]
fn a_ring_commit_whose_segment_cannot_be_opened_fails_and_the_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), StoreConfig::default());
    let m = msg(2);
    store.start_message(m, ConvId(1), b"", b"").unwrap();
    for seq in 0..10 {
        store.append(m, seq, &frame(2, seq)).unwrap();
    }
    let batch = store.poll_commit(2_000_000).unwrap().unwrap();
    // Ring mode opens the segment by its path (O_DSYNC): move the file away for a moment.
    let path = batch.path().to_path_buf();
    let aside = dir.path().join("aside");
    std::fs::rename(&path, &aside).unwrap();
    run(async {
        let mut committer = Committer::new(IoMode::Ring).unwrap();
        let done = committer.commit(batch).await;
        assert!(!done.is_ok());
        let err = store.commit_completed(done).unwrap_err();
        assert!(
            matches!(err, hark_storage::StoreError::CommitFailed(_)),
            "{err}"
        );
        std::fs::rename(&aside, &path).unwrap();
        let batch = store.poll_commit(2_000_000).unwrap().unwrap();
        let done = committer.commit(batch).await;
        let acks = store.commit_completed(done).unwrap();
        assert_eq!(acks.durable[0].durable_through_seq, 9);
    });
    drop(store);
    let (store, report) =
        hark_storage::Store::open(dir.path(), common::SHARD, StoreConfig::default(), 3_000_000)
            .unwrap();
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    let (frames, _) = replay_all(&store, m, 0);
    assert_eq!(
        frames,
        (0..10).map(|s| (s, frame(2, s))).collect::<Vec<_>>()
    );
}
