//! Preallocated segments: a store rolled into a zeroed spare segment writes in place, seals it
//! cut to its data, and reopens a partly written preallocated segment without losing or
//! dropping anything, continuing its appends in place.

mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{SHARD, frame, msg, open, replay_all};
use hark_core::ConvId;
use hark_storage::segment::segment_file_name;
use hark_storage::spare::spare_file_name;
use hark_storage::{EndState, ReplayStatus, SpareSegment, Store, StoreConfig};

const SEGMENT_BYTES: u64 = 256 * 1024;

fn config() -> StoreConfig {
    StoreConfig {
        segment_bytes_max: SEGMENT_BYTES,
        ..StoreConfig::default()
    }
}

/// Commits everything pending like an I/O layer that prepares spares: each batch's spare
/// request is prepared in place and handed back with its outcome.
fn commit_with_spares(store: &mut Store, now_us: u64) {
    for _ in 0..1000 {
        let Some(batch) = store.poll_commit(now_us).unwrap() else {
            return;
        };
        let spare = batch
            .spare_wanted()
            .map(|request| SpareSegment::prepare(request).unwrap());
        let mut done = batch.write_blocking();
        if let Some(spare) = spare {
            done = done.with_spare(spare);
        }
        store.commit_completed(done).unwrap();
    }
    panic!("commits never ran dry");
}

fn file_len(dir: &Path, segment: u32) -> u64 {
    std::fs::metadata(dir.join(segment_file_name(segment)))
        .unwrap()
        .len()
}

fn append_range(store: &mut Store, n: u64, seqs: std::ops::Range<u32>) {
    for seq in seqs {
        store.append(msg(n), seq, &frame(n, seq)).unwrap();
    }
}

/// Writes segment 1, seals it, and leaves segment 2 (rolled into a spare) partly written.
fn store_with_preallocated_open_segment(dir: &Path) -> Store {
    let mut store = open(dir, config());
    store
        .start_message(msg(1), ConvId(1), b"talker", b"OpusHead")
        .unwrap();
    append_range(&mut store, 1, 0..100);
    commit_with_spares(&mut store, 2_000_000);
    assert!(dir.join(spare_file_name(2)).exists(), "spare prepared");
    store.seal_on_next_commit();
    append_range(&mut store, 1, 100..150);
    commit_with_spares(&mut store, 3_000_000);
    assert_eq!(store.segment_ids(), vec![1, 2]);
    assert!(!dir.join(spare_file_name(2)).exists(), "spare renamed");
    store
}

#[test]
fn a_rolled_segment_is_preallocated_and_the_sealed_one_cut_to_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_preallocated_open_segment(dir.path());
    assert_eq!(file_len(dir.path(), 2), SEGMENT_BYTES, "preallocated");
    store.seal_on_next_commit();
    append_range(&mut store, 1, 150..160);
    commit_with_spares(&mut store, 4_000_000);
    assert_eq!(store.segment_ids(), vec![1, 2, 3]);
    assert_eq!(file_len(dir.path(), 3), SEGMENT_BYTES, "preallocated");
    let stored = store.stored_bytes();
    let sealed = file_len(dir.path(), 1) + file_len(dir.path(), 2);
    assert!(file_len(dir.path(), 2) < SEGMENT_BYTES, "cut when sealed");
    assert!(stored > sealed && stored - sealed < SEGMENT_BYTES);
    // The cut segment matches its hint on open.
    drop(store);
    let (store, report) = Store::open(dir.path(), SHARD, config(), 5_000_000).unwrap();
    assert_eq!(report.hints_used, 2);
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    assert_eq!(
        store.stored_bytes(),
        stored,
        "written bytes, not file sizes"
    );
}

#[test]
fn a_preallocated_partly_written_segment_reopens_and_appends_continue_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_preallocated_open_segment(dir.path());
    let stored = store.stored_bytes();
    drop(store);
    let (mut store, report) = Store::open(dir.path(), SHARD, config(), 4_000_000).unwrap();
    assert!(report.dropped.is_empty(), "zero tail is not damage");
    assert_eq!(report.truncated_messages, vec![msg(1)]);
    assert_eq!(store.stored_bytes(), stored);
    assert_eq!(file_len(dir.path(), 2), SEGMENT_BYTES, "kept preallocated");
    let (frames, _) = replay_all(&store, msg(1), 0);
    assert_eq!(frames.len(), 150);
    // New writes go right after the log, inside the preallocated file.
    store
        .start_message(msg(2), ConvId(1), b"talker", b"OpusHead")
        .unwrap();
    append_range(&mut store, 2, 0..40);
    store
        .end_message(msg(2), 5_000_000, EndState::Complete)
        .unwrap();
    let batch = store.poll_commit(5_000_000).unwrap().expect("records pend");
    assert_eq!(batch.segment(), 2);
    assert_eq!(batch.offset(), stored - file_len(dir.path(), 1));
    store.commit_completed(batch.write_blocking()).unwrap();
    common::commit_all(&mut store, 6_000_000);
    assert_eq!(file_len(dir.path(), 2), SEGMENT_BYTES);
    drop(store);
    let (store, report) = Store::open(dir.path(), SHARD, config(), 7_000_000).unwrap();
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    let (frames, status) = replay_all(&store, msg(2), 0);
    assert_eq!(frames.len(), 40);
    assert_eq!(frames[39].1, frame(2, 39));
    assert_eq!(
        status,
        ReplayStatus::Ended {
            frame_count: 40,
            state: EndState::Complete
        }
    );
}

#[test]
fn a_torn_commit_in_a_preallocated_segment_is_dropped_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_preallocated_open_segment(dir.path());
    let end = store.stored_bytes() - file_len(dir.path(), 1);
    drop(store);
    // Junk where the next commit would have gone: a torn write.
    let path = dir.path().join(segment_file_name(2));
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xa5; 700], end + 100).unwrap();
    drop(file);
    let (mut store, report) = Store::open(dir.path(), SHARD, config(), 4_000_000).unwrap();
    assert_eq!(report.dropped.len(), 1);
    assert_eq!(report.dropped[0].from_offset, end);
    assert_eq!(file_len(dir.path(), 2), end, "cut at the end of the log");
    let (frames, _) = replay_all(&store, msg(1), 0);
    assert_eq!(frames.len(), 150);
    store
        .start_message(msg(3), ConvId(1), b"talker", b"")
        .unwrap();
    append_range(&mut store, 3, 0..5);
    common::commit_all(&mut store, 5_000_000);
    drop(store);
    let (store, report) = Store::open(dir.path(), SHARD, config(), 6_000_000).unwrap();
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    assert_eq!(replay_all(&store, msg(3), 0).0.len(), 5);
}

#[test]
fn a_spare_left_by_a_crash_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), config()));
    let stale = dir.path().join(spare_file_name(2));
    std::fs::File::create(&stale)
        .unwrap()
        .write_all(b"half")
        .unwrap();
    let (store, report) = Store::open(dir.path(), SHARD, config(), 2_000_000).unwrap();
    assert!(!stale.exists());
    assert_eq!(report.segments, 1);
    assert_eq!(store.segment_ids(), vec![1]);
}

#[test]
fn the_open_segment_can_be_preallocated_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), config());
    store.preallocate_open_segment().unwrap();
    assert_eq!(file_len(dir.path(), 1), SEGMENT_BYTES);
    store
        .start_message(msg(4), ConvId(1), b"talker", b"")
        .unwrap();
    append_range(&mut store, 4, 0..30);
    common::commit_all(&mut store, 2_000_000);
    let stored = store.stored_bytes();
    // Again after some commits: already full length, nothing written over the log.
    store.preallocate_open_segment().unwrap();
    assert_eq!(file_len(dir.path(), 1), SEGMENT_BYTES);
    drop(store);
    let (store, report) = Store::open(dir.path(), SHARD, config(), 3_000_000).unwrap();
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    assert_eq!(store.stored_bytes(), stored);
    assert_eq!(replay_all(&store, msg(4), 0).0.len(), 30);
}

#[test]
fn a_spare_that_comes_late_serves_the_next_roll() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path(), config());
    store
        .start_message(msg(5), ConvId(1), b"talker", b"")
        .unwrap();
    append_range(&mut store, 5, 0..20);
    // The store asks for the spare of segment 2, but it is not ready when segment 1 seals:
    // the store creates segment 2 itself.
    let batch = store.poll_commit(2_000_000).unwrap().unwrap();
    let request = batch.spare_wanted().cloned().expect("spare asked for");
    assert_eq!(request.segment, 2);
    store.commit_completed(batch.write_blocking()).unwrap();
    store.seal_on_next_commit();
    append_range(&mut store, 5, 20..40);
    let batch = store.poll_commit(3_000_000).unwrap().unwrap();
    assert_eq!(batch.segment(), 2);
    assert_eq!(file_len(dir.path(), 2), 0, "created, not preallocated");
    // The spare for segment 2 arrives now, with this batch's outcome.
    let late = SpareSegment::prepare(&request).unwrap();
    let done = batch.write_blocking().with_spare(late);
    store.commit_completed(done).unwrap();
    assert!(
        dir.path().join(spare_file_name(2)).exists(),
        "kept, not deleted"
    );
    // It becomes segment 3.
    store.seal_on_next_commit();
    append_range(&mut store, 5, 40..60);
    let batch = store.poll_commit(4_000_000).unwrap().unwrap();
    assert_eq!(batch.segment(), 3);
    assert!(
        batch.spare_wanted().is_some(),
        "the next spare is asked for"
    );
    store.commit_completed(batch.write_blocking()).unwrap();
    assert!(!dir.path().join(spare_file_name(2)).exists(), "renamed");
    assert_eq!(file_len(dir.path(), 3), SEGMENT_BYTES, "preallocated");
    drop(store);
    let (store, report) = Store::open(dir.path(), SHARD, config(), 5_000_000).unwrap();
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    let (frames, _) = replay_all(&store, msg(5), 0);
    assert_eq!(
        frames,
        (0..60).map(|s| (s, frame(5, s))).collect::<Vec<_>>()
    );
}

#[test]
fn without_preallocation_the_spare_is_an_empty_file_that_grows_with_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        preallocate_segments: false,
        ..config()
    };
    let mut store = open(dir.path(), config.clone());
    store
        .start_message(msg(6), ConvId(1), b"talker", b"")
        .unwrap();
    append_range(&mut store, 6, 0..30);
    let batch = store.poll_commit(2_000_000).unwrap().unwrap();
    assert_eq!(batch.spare_wanted().map(|r| r.bytes), Some(0));
    let spare = SpareSegment::prepare(batch.spare_wanted().unwrap()).unwrap();
    store
        .commit_completed(batch.write_blocking().with_spare(spare))
        .unwrap();
    store.seal_on_next_commit();
    append_range(&mut store, 6, 30..50);
    commit_with_spares(&mut store, 3_000_000);
    assert_eq!(store.segment_ids(), vec![1, 2]);
    assert!(!dir.path().join(spare_file_name(2)).exists(), "renamed");
    let data = store.stored_bytes() - file_len(dir.path(), 1);
    assert_eq!(file_len(dir.path(), 2), data, "grew with its commits");
    drop(store);
    let (store, report) = Store::open(dir.path(), SHARD, config, 4_000_000).unwrap();
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    let (frames, _) = replay_all(&store, msg(6), 0);
    assert_eq!(
        frames,
        (0..50).map(|s| (s, frame(6, s))).collect::<Vec<_>>()
    );
}
