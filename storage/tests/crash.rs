//! Crash test with a real child process: the child appends many concurrent messages through
//! the real committer and prints each durable ack; the parent SIGKILLs it at a seeded random
//! point, reopens the store and checks that every acknowledged frame is there,
//! byte-identical and in order, and that every frame the store returns is exactly a frame the
//! child appended (nothing torn, nothing invented, no gaps). Frames written but not yet
//! acknowledged when the kill landed may or may not be there; that is the contract.
//!
//! The test binary re-executes itself: with `HARK_CRASH_CHILD_DIR` set, the test body runs
//! the child instead.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use hark_core::{ConvId, MsgId, MsgIdGenerator, ShardId};
use hark_storage::{Committer, EndState, IoMode, MessageState, Store, StoreConfig};

const CHILD_ENV: &str = "HARK_CRASH_CHILD_DIR";
const SEED_ENV: &str = "HARK_CRASH_CHILD_SEED";
const ITERATIONS: u64 = 24;
const SHARD: ShardId = ShardId::new(3, 1);
/// The child stops by itself after this many loop steps if it is not killed first.
const CHILD_STEPS_MAX: u64 = 200_000;
const CONCURRENT_MESSAGES: usize = 64;

/// splitmix64: a small seeded generator, enough for test decisions.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The one true content of frame `seq` of `msg`.
fn frame(msg: MsgId, seq: u32) -> Vec<u8> {
    let mut rng = Rng((msg.0 as u64) ^ ((msg.0 >> 64) as u64) ^ (u64::from(seq) << 40));
    let len = 20 + rng.below(180) as usize;
    (0..len).map(|_| rng.next() as u8).collect()
}

fn config() -> StoreConfig {
    StoreConfig {
        record_flush_ms: 10,
        commit_interval_ms: 2,
        segment_bytes_max: 256 * 1024,
        ..StoreConfig::default()
    }
}

#[test]
fn acknowledged_frames_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        run_child(std::path::Path::new(&dir), seed);
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x5eed);
    let mut acked: BTreeMap<MsgId, u32> = BTreeMap::new();
    let mut ended: BTreeMap<MsgId, EndState> = BTreeMap::new();
    for iteration in 0..ITERATIONS {
        let kill_after_acks = 1 + rng.below(400);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "acknowledged_frames_survive_sigkill",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(SEED_ENV, (iteration * 7919 + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        let mut killed = false;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if record_line(&line, &mut acked, &mut ended) {
                seen += 1;
                if seen == kill_after_acks {
                    child.kill().unwrap(); // SIGKILL
                    killed = true;
                    break;
                }
            }
        }
        // Lines printed before the kill landed are acks too.
        for line in lines {
            record_line(&line.unwrap(), &mut acked, &mut ended);
        }
        let status = child.wait().unwrap();
        assert!(
            killed || status.success(),
            "iteration {iteration}: child failed: {status}"
        );
        verify(dir.path(), &acked, &ended, iteration);
    }
    assert!(
        acked.len() > 100,
        "only {} messages were acknowledged",
        acked.len()
    );
}

fn record_line(
    line: &str,
    acked: &mut BTreeMap<MsgId, u32>,
    ended: &mut BTreeMap<MsgId, EndState>,
) -> bool {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("ack"), Some(msg), Some(seq)) => {
            let msg: MsgId = msg.parse().unwrap();
            let seq: u32 = seq.parse().unwrap();
            let through = acked.entry(msg).or_insert(seq);
            assert!(seq >= *through, "acks go forward");
            *through = seq;
            true
        }
        (Some("end"), Some(msg), Some(state)) => {
            let state = match state {
                "complete" => EndState::Complete,
                _ => EndState::Truncated,
            };
            ended.insert(msg.parse().unwrap(), state);
            true
        }
        _ => false,
    }
}

fn verify(
    dir: &std::path::Path,
    acked: &BTreeMap<MsgId, u32>,
    ended: &BTreeMap<MsgId, EndState>,
    iteration: u64,
) {
    let (store, _report) = Store::open(dir, SHARD, config(), 0)
        .unwrap_or_else(|e| panic!("iteration {iteration}: reopen failed: {e}"));
    for (msg, through) in acked {
        let (frames, _) = common::replay_all(&store, *msg, 0);
        assert!(
            frames.len() as u32 > *through,
            "iteration {iteration}: {msg} acked through {through}, {} frames stored",
            frames.len()
        );
    }
    for (msg, state) in ended {
        let info = store
            .message_info(*msg)
            .expect("an ended message is stored");
        assert_eq!(
            info.state,
            MessageState::Ended(*state),
            "iteration {iteration}: {msg} {info:?} {_report:?} {:?}",
            store.segment_ids()
        );
    }
    // Every stored frame of every message is exactly what the child appended, in order.
    for conv in 0..4 {
        let mut from = hark_storage::TimelineFrom::Since(0);
        loop {
            let page = store.timeline(ConvId(conv), from, 100);
            let Some(last) = page.last() else { break };
            from = hark_storage::TimelineFrom::After(last.msg);
            for info in &page {
                let (frames, _) = common::replay_all(&store, info.msg, 0);
                for (i, (seq, bytes)) in frames.iter().enumerate() {
                    assert_eq!(
                        *seq as usize, i,
                        "iteration {iteration}: gap in {}",
                        info.msg
                    );
                    assert_eq!(
                        bytes,
                        &frame(info.msg, *seq),
                        "iteration {iteration}: {} frame {seq}",
                        info.msg
                    );
                }
            }
        }
    }
}

fn run_child(dir: &std::path::Path, seed: u64) {
    let (mut store, _) = Store::open(dir, SHARD, config(), 0).expect("child opens the store");
    let mut ids = MsgIdGenerator::new(SHARD);
    let mut now = 1_000_000_000u64;
    if let Some(newest) = store.newest_msg() {
        ids.resume_after(newest);
        now = newest.start_us() + 1_000_000;
    }
    let mut rng = Rng(seed);
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .build()
        .expect("a monoio runtime")
        .block_on(async {
            let mut committer = Committer::new(IoMode::detect()).expect("a committer");
            let mut open: Vec<(MsgId, u32)> = Vec::new();
            for _ in 0..CHILD_STEPS_MAX {
                now += 1000;
                while open.len() < CONCURRENT_MESSAGES {
                    let msg = ids.next(now);
                    let conv = ConvId(rng.below(4));
                    store
                        .start_message(msg, conv, b"child", b"OpusHead")
                        .expect("start");
                    open.push((msg, 0));
                }
                for (msg, seq) in open.iter_mut() {
                    if rng.below(4) == 0 {
                        store
                            .append(*msg, *seq, &frame(*msg, *seq))
                            .expect("append");
                        *seq += 1;
                    }
                }
                if rng.below(8) == 0 {
                    let i = rng.below(open.len() as u64) as usize;
                    let (msg, _) = open.swap_remove(i);
                    store
                        .end_message(msg, now, EndState::Complete)
                        .expect("end");
                }
                if let Some(batch) = store.poll_commit(now).expect("poll") {
                    let done = committer.commit(batch).await;
                    let acks = store.commit_completed(done).expect("commit");
                    for ack in &acks.durable {
                        println!("ack {} {}", ack.msg, ack.durable_through_seq);
                    }
                    for (msg, state) in &acks.ended {
                        let state = match state {
                            EndState::Complete => "complete",
                            EndState::Truncated => "truncated",
                        };
                        println!("end {msg} {state}");
                    }
                }
            }
        });
}
