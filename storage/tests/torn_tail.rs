//! Torn tail: for every offset of the last blocks of the open segment, truncate the file
//! there or corrupt the byte there, reopen, and check that the store opens, keeps every record
//! before the damage, returns nothing that was not appended, and reports what it dropped.

mod common;

use std::collections::BTreeMap;

use common::{SHARD, commit_all, msg, replay_all};
use hark_core::ConvId;
use hark_storage::format::{BLOCK_BYTES, COMMIT_HEADER_BYTES, CommitHeader};
use hark_storage::segment::{RecordSummary, scan_segment};
use hark_storage::{EndState, Store, StoreConfig};

const MESSAGES: u64 = 4;
const BLOCKS_TESTED: usize = 2;

fn payload(n: u64, seq: u32) -> Vec<u8> {
    // Some frames are large so records and commits cross block boundaries.
    let len = if seq % 5 == 4 {
        1400
    } else {
        40 + (seq as usize * 11) % 90
    };
    (0..len)
        .map(|i| (n as u8) ^ (seq as u8).wrapping_mul(3) ^ i as u8)
        .collect()
}

fn config() -> StoreConfig {
    StoreConfig {
        record_flush_ms: 30,
        ..StoreConfig::default()
    }
}

/// Writes the pristine store; returns the segment bytes.
fn write_pristine(dir: &std::path::Path) -> Vec<u8> {
    let (mut store, _) = Store::open(dir, SHARD, config(), 1_000_000).unwrap();
    let mut now = 1_000_000;
    let mut next_seq = [0u32; MESSAGES as usize];
    for n in 0..MESSAGES {
        store
            .start_message(msg(n), ConvId(1), b"talker", b"OpusHead")
            .unwrap();
    }
    for round in 0..10 {
        for n in 0..MESSAGES {
            for _ in 0..(1 + (round + n as usize) % 3) {
                let seq = next_seq[n as usize];
                store.append(msg(n), seq, &payload(n, seq)).unwrap();
                next_seq[n as usize] += 1;
            }
        }
        now += 40_000;
        commit_all(&mut store, now);
    }
    for n in 0..MESSAGES {
        store.end_message(msg(n), now, EndState::Complete).unwrap();
    }
    commit_all(&mut store, now + 1_000_000);
    drop(store);
    std::fs::read(dir.join("seg-00000001.hark")).unwrap()
}

/// (start, records end) of every commit.
fn commits(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = BLOCK_BYTES;
    while let Some(h) = bytes.get(pos..).and_then(CommitHeader::decode) {
        out.push((pos, pos + COMMIT_HEADER_BYTES + h.records_bytes as usize));
        pos += h.blocks as usize * BLOCK_BYTES;
    }
    assert_eq!(pos, bytes.len());
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    Truncate,
    Corrupt,
}

#[test]
fn every_offset_of_the_last_blocks() {
    let pristine_dir = tempfile::tempdir().unwrap();
    let pristine = write_pristine(pristine_dir.path());
    let commit_spans = commits(&pristine);
    assert!(commit_spans.len() >= 8, "{} commits", commit_spans.len());
    let records = scan_segment(1, &pristine).unwrap().records;
    let len = pristine.len();
    assert!(len >= (BLOCKS_TESTED + 2) * BLOCK_BYTES);
    // Reopening syncs the repaired file, so cases run on a few threads (each its own
    // directory) to overlap the sync waits; each thread takes every WORKERS-th offset.
    const WORKERS: usize = 8;
    let offsets: Vec<usize> = (len - BLOCKS_TESTED * BLOCK_BYTES..len).collect();
    let checked: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (pristine, records, commit_spans, offsets) =
                    (&pristine, &records, &commit_spans, &offsets);
                scope.spawn(move || {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("seg-00000001.hark");
                    let mut checked = 0;
                    for &at in offsets.iter().skip(w).step_by(WORKERS) {
                        for damage in [Damage::Truncate, Damage::Corrupt] {
                            let mut bytes = pristine.clone();
                            match damage {
                                Damage::Truncate => bytes.truncate(at),
                                Damage::Corrupt => bytes[at] ^= 0x5a,
                            }
                            // Only one segment: later ones written by also_write go away.
                            let _ = std::fs::remove_file(dir.path().join("seg-00000002.hark"));
                            std::fs::write(&path, &bytes).unwrap();
                            let also_write = at % 97 == 0;
                            check_reopen(dir.path(), records, commit_spans, at, damage, also_write);
                            checked += 1;
                        }
                    }
                    checked
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(checked, 2 * BLOCKS_TESTED * BLOCK_BYTES);
}

fn check_reopen(
    dir: &std::path::Path,
    records: &[RecordSummary],
    commit_spans: &[(usize, usize)],
    at: usize,
    damage: Damage,
    also_write: bool,
) {
    let ctx = format!("{damage:?} at {at}");
    let (mut store, report) = Store::open(dir, SHARD, config(), 9_000_000)
        .unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));

    // Frames that must survive: every Frames record that ends before the damage.
    let mut must_keep: BTreeMap<u64, u32> = BTreeMap::new();
    for r in records {
        if let RecordSummary::Frames {
            msg: m,
            offset,
            len,
            first_seq,
            count,
        } = r
        {
            let n = (0..MESSAGES).find(|n| msg(*n).0 == *m).unwrap();
            if (*offset + *len) as usize <= at {
                must_keep.insert(n, first_seq + count);
            }
        }
    }
    for n in 0..MESSAGES {
        let kept = match store.message_info(msg(n)) {
            Some(_) => replay_all(&store, msg(n), 0).0,
            None => Vec::new(),
        };
        let need = must_keep.get(&n).copied().unwrap_or(0) as usize;
        assert!(
            kept.len() >= need,
            "{ctx}: message {n} kept {} of {need}",
            kept.len()
        );
        for (i, (seq, bytes)) in kept.iter().enumerate() {
            assert_eq!(*seq as usize, i, "{ctx}: gap");
            assert_eq!(bytes, &payload(n, *seq), "{ctx}: frame {seq} differs");
        }
    }

    // Damage inside a commit header or its records is reported; damage in padding is harmless.
    // (A truncation exactly at a commit's start leaves a clean, shorter log: nothing to report.)
    let in_data = commit_spans
        .iter()
        .any(|(s, e)| (*s..*e).contains(&at) && !(damage == Damage::Truncate && at == *s));
    if in_data {
        let covered = report.dropped.iter().any(|d| {
            d.from_offset as usize <= at
                && (at < d.to_offset as usize || damage == Damage::Truncate)
        });
        assert!(covered, "{ctx}: dropped {:?}", report.dropped);
    }

    if also_write {
        let m = msg(100);
        store.start_message(m, ConvId(2), b"after", b"").unwrap();
        store.append(m, 0, b"written after recovery").unwrap();
        store.end_message(m, 9_000_000, EndState::Complete).unwrap();
        commit_all(&mut store, 9_500_000);
        drop(store);
        let (store, _) = Store::open(dir, SHARD, config(), 10_000_000).unwrap();
        let (frames, _) = replay_all(&store, m, 0);
        assert_eq!(
            frames,
            vec![(0, b"written after recovery".to_vec())],
            "{ctx}"
        );
    }
}
