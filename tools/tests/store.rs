//! `hark store verify` and `hark store dump` on stores written here with hark-storage.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hark_core::{ConvName, MsgId, ShardId};
use hark_storage::segment::{RecordSummary, scan_segment, segment_path};
use hark_storage::{EndState, Store, StoreConfig, shard_dir};

fn hark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hark"))
        .args(args)
        .output()
        .expect("the hark binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes two complete messages of `frames` frames each into shard 1/0 of `data_dir`.
fn write_store(data_dir: &Path, frames: u32) -> (PathBuf, Vec<MsgId>) {
    let shard = ShardId::new(1, 0);
    let dir = shard_dir(data_dir, shard);
    let (mut store, _) = Store::open(&dir, shard, StoreConfig::default(), 0).unwrap();
    let conv = ConvName::new("general").unwrap().id();
    let mut msgs = Vec::new();
    for n in 0..2u32 {
        let msg = MsgId::from_parts(1_767_225_600_000_000 + u64::from(n), shard, n);
        store
            .start_message(msg, conv, b"alice", b"OpusHead")
            .unwrap();
        for seq in 0..frames {
            let frame = vec![seq as u8; 10 + seq as usize];
            store.append(msg, seq, &frame).unwrap();
        }
        store
            .end_message(msg, u64::from(frames) * 20_000, EndState::Complete)
            .unwrap();
        msgs.push(msg);
    }
    let batch = store.poll_commit(1_000_000).unwrap().expect("records pend");
    store.commit_completed(batch.write_blocking()).unwrap();
    (dir, msgs)
}

#[test]
fn verify_passes_a_healthy_data_dir_and_a_single_shard_store() {
    let data = tempfile::tempdir().unwrap();
    let (shard_dir, _) = write_store(data.path(), 5);
    for dir in [data.path(), shard_dir.as_path()] {
        let output = hark(&["store", "verify", dir.to_str().unwrap()]);
        let stdout = text(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{stdout}{}",
            text(&output.stderr)
        );
        assert!(
            stdout.contains("ok: 1 store(s), 1 segment(s), 2 message(s), 10 frame(s)"),
            "{stdout}"
        );
    }
}

#[test]
fn verify_fails_naming_a_flipped_byte_in_a_frame_record() {
    let data = tempfile::tempdir().unwrap();
    let (shard_dir, msgs) = write_store(data.path(), 5);
    let path = segment_path(&shard_dir, 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let scan = scan_segment(1, &bytes).unwrap();
    let (offset, len) = scan
        .records
        .iter()
        .find_map(|r| match r {
            RecordSummary::Frames {
                msg, offset, len, ..
            } if MsgId(*msg) == msgs[1] => Some((*offset, *len)),
            _ => None,
        })
        .expect("the second message has a frame record");
    // The record's last byte is frame payload.
    bytes[(offset + len - 1) as usize] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let output = hark(&["store", "verify", data.path().to_str().unwrap()]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let named = format!("segment 1 offset {offset}");
    assert!(stdout.contains(&named), "names {named}: {stdout}");
    assert!(
        stdout.contains(&msgs[1].to_string()),
        "names the message: {stdout}"
    );
    assert!(stdout.contains("DAMAGED"), "{stdout}");
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("hark: store verification failed"),
        "{stderr}"
    );
}

#[test]
fn verify_refuses_a_directory_that_is_no_store() {
    let empty = tempfile::tempdir().unwrap();
    let output = hark(&["store", "verify", empty.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("neither a shard store"), "{stderr}");
}

#[test]
fn dump_lists_messages_and_one_message_s_frames() {
    let data = tempfile::tempdir().unwrap();
    let (_, msgs) = write_store(data.path(), 3);
    let dir = data.path().to_str().unwrap();
    let output = hark(&["store", "dump", dir, "--conv", "general"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    for msg in &msgs {
        assert!(stdout.contains(&msg.to_string()), "{stdout}");
    }
    assert!(stdout.contains("2026-01-01T00:00:00.000Z"), "{stdout}");
    assert!(stdout.contains("complete"), "{stdout}");
    assert_eq!(stdout.lines().count(), 3, "header and two rows: {stdout}");

    let other = hark(&["store", "dump", dir, "--conv", "elsewhere"]);
    assert_eq!(text(&other.stdout).lines().count(), 1, "header only");

    let one = hark(&["store", "dump", dir, "--msg", &msgs[0].to_string()]);
    let stdout = text(&one.stdout);
    assert_eq!(one.status.code(), Some(0), "{}", text(&one.stderr));
    // Frames of 10, 11, 12 bytes.
    for (seq, size) in [(0, 10), (1, 11), (2, 12)] {
        let row = format!("{seq:>8}  {size:>6}");
        assert!(stdout.lines().any(|l| l == row), "{row:?} in {stdout}");
    }
    let missing = hark(&["store", "dump", dir, "--msg", &"0".repeat(32)]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("is not in"));
}

#[test]
fn an_unused_zeroed_newest_segment_is_not_damage_but_a_zeroed_older_one_is() {
    let data = tempfile::tempdir().unwrap();
    let (written, _) = write_store(data.path(), 2);
    // A shard that never committed: its preallocated first segment is all zeros.
    let idle = shard_dir(data.path(), ShardId::new(1, 1));
    std::fs::create_dir_all(&idle).unwrap();
    std::fs::copy(written.join("format"), idle.join("format")).unwrap();
    std::fs::write(segment_path(&idle, 1), vec![0u8; 1 << 20]).unwrap();
    let output = hark(&["store", "verify", data.path().to_str().unwrap()]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("ok: 2 store(s)"), "{stdout}");

    // Zeros where an older segment should be, before a valid one, are damage.
    std::fs::write(segment_path(&written, 0), vec![0u8; 4096]).unwrap();
    let output = hark(&["store", "verify", written.to_str().unwrap()]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("segment 0: segment header torn"),
        "{stdout}"
    );
}
