//! Model-based property test: random sequences of start / append / end / commit (ok or
//! failed) / seal / retention / reopen run against the store and a plain in-memory model;
//! after every step replay, message state and timelines equal the model.

mod common;

use std::collections::BTreeMap;

use common::{SHARD, replay_all};
use hark_core::{ConvId, MsgId, MsgIdGenerator};
use hark_storage::{EndState, MessageState, ReplayStatus, Store, StoreConfig, TimelineFrom};
use proptest::prelude::*;

const CONVS: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    Start { conv: u64 },
    Append { pick: usize, frames: u32 },
    End { pick: usize, complete: bool },
    Commit { fail: bool },
    Seal,
    Retention,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..CONVS).prop_map(|conv| Op::Start { conv }),
        8 => (any::<usize>(), 1u32..40).prop_map(|(pick, frames)| Op::Append { pick, frames }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, complete)| Op::End { pick, complete }),
        4 => prop::bool::weighted(0.2).prop_map(|fail| Op::Commit { fail }),
        1 => Just(Op::Seal),
        1 => Just(Op::Retention),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, Default)]
struct Modelled {
    conv: u64,
    appended: u32,
    durable: u32,
    ended: Option<EndState>,
    end_durable: bool,
    start_durable: bool,
}

fn frame(msg: MsgId, seq: u32) -> Vec<u8> {
    let len = ((msg.0 as u32).wrapping_mul(31) ^ seq.wrapping_mul(17)) % 300;
    (0..len)
        .map(|i| (i as u8) ^ (seq as u8) ^ (msg.0 as u8))
        .collect()
}

fn config() -> StoreConfig {
    StoreConfig {
        // Every poll flushes every record, so a successful commit makes everything durable.
        record_flush_ms: 0,
        segment_bytes_max: 16 * 1024,
        retention_bytes_max: Some(48 * 1024),
        ..StoreConfig::default()
    }
}

struct Harness {
    dir: tempfile::TempDir,
    store: Option<Store>,
    model: BTreeMap<MsgId, Modelled>,
    ids: MsgIdGenerator,
    now_us: u64,
}

impl Harness {
    fn store(&mut self) -> &mut Store {
        self.store
            .as_mut()
            .expect("the store is open between steps")
    }

    fn open_msgs(&self) -> Vec<MsgId> {
        self.model
            .iter()
            .filter(|(_, m)| m.ended.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    fn step(&mut self, op: &Op) {
        self.now_us += 1_000;
        match *op {
            Op::Start { conv } => {
                let msg = self.ids.next(self.now_us);
                self.store()
                    .start_message(msg, ConvId(conv), b"who", b"codec")
                    .unwrap();
                self.model.insert(
                    msg,
                    Modelled {
                        conv,
                        ..Modelled::default()
                    },
                );
            }
            Op::Append { pick, frames } => {
                let open = self.open_msgs();
                if open.is_empty() {
                    return;
                }
                let msg = open[pick % open.len()];
                let first = self.model[&msg].appended;
                for seq in first..first + frames {
                    self.store().append(msg, seq, &frame(msg, seq)).unwrap();
                }
                self.model.get_mut(&msg).unwrap().appended += frames;
            }
            Op::End { pick, complete } => {
                let open = self.open_msgs();
                if open.is_empty() {
                    return;
                }
                let msg = open[pick % open.len()];
                let state = if complete {
                    EndState::Complete
                } else {
                    EndState::Truncated
                };
                let now = self.now_us;
                self.store().end_message(msg, now, state).unwrap();
                self.model.get_mut(&msg).unwrap().ended = Some(state);
            }
            Op::Commit { fail } => {
                self.now_us += 10_000;
                let now = self.now_us;
                let Some(batch) = self.store().poll_commit(now).unwrap() else {
                    return;
                };
                if fail {
                    let err = std::io::Error::from_raw_os_error(28);
                    assert!(self.store().commit_completed(batch.fail(err)).is_err());
                    return;
                }
                let acks = self
                    .store()
                    .commit_completed(batch.write_blocking())
                    .unwrap();
                for ack in &acks.durable {
                    self.model.get_mut(&ack.msg).unwrap().durable = ack.durable_through_seq + 1;
                }
                for (msg, state) in &acks.ended {
                    let m = self.model.get_mut(msg).unwrap();
                    assert_eq!(m.ended, Some(*state));
                    m.end_durable = true;
                }
                // With record_flush_ms = 0 a successful commit covers everything appended.
                for m in self.model.values_mut() {
                    m.start_durable = true;
                }
                for (msg, m) in &self.model {
                    assert_eq!(m.durable, m.appended, "{msg} after a commit");
                    assert_eq!(m.end_durable, m.ended.is_some(), "{msg} end after a commit");
                }
            }
            Op::Seal => self.store().seal_on_next_commit(),
            Op::Retention => {
                let now = self.now_us;
                let plan = self.store().apply_retention(now);
                plan.remove_files().unwrap();
                let store = self.store.as_ref().unwrap();
                let gone: Vec<MsgId> = self
                    .model
                    .keys()
                    .filter(|m| store.message_info(**m).is_none())
                    .copied()
                    .collect();
                assert_eq!(gone.len(), plan.messages_dropped);
                for msg in &gone {
                    let m = &self.model[msg];
                    assert!(m.end_durable, "{msg} was dropped before it ended durably");
                }
                // Retention takes the oldest segments, so the oldest messages.
                if let Some(newest_gone) = gone.last() {
                    let older_kept = self
                        .model
                        .keys()
                        .any(|m| m < newest_gone && !gone.contains(m));
                    assert!(
                        !older_kept
                            || self
                                .model
                                .keys()
                                .filter(|m| *m < newest_gone)
                                .any(|m| !self.model[m].end_durable)
                    );
                }
                for msg in gone {
                    self.model.remove(&msg);
                }
            }
            Op::Reopen => {
                drop(self.store.take());
                let (store, report) =
                    Store::open(self.dir.path(), SHARD, config(), self.now_us).unwrap();
                self.store = Some(store);
                // A message whose Start never became durable is not in the store.
                self.model.retain(|_, m| m.start_durable);
                let mut cut = Vec::new();
                for (msg, m) in self.model.iter_mut() {
                    m.appended = m.durable;
                    if !m.end_durable {
                        m.ended = Some(EndState::Truncated);
                        cut.push(*msg);
                    }
                }
                assert_eq!(report.truncated_messages, cut);
                assert!(report.dropped.is_empty(), "{:?}", report.dropped);
            }
        }
    }

    fn check(&self) {
        let store = self.store.as_ref().unwrap();
        for (msg, m) in &self.model {
            let (frames, status) = replay_all(store, *msg, 0);
            let expected: Vec<(u32, Vec<u8>)> =
                (0..m.durable).map(|s| (s, frame(*msg, s))).collect();
            assert_eq!(frames, expected, "{msg}");
            let info = store.message_info(*msg).unwrap();
            assert_eq!(info.frame_count, m.appended);
            assert_eq!(info.frames_durable, m.durable);
            let state = m.ended.map_or(MessageState::Open, MessageState::Ended);
            assert_eq!(info.state, state, "{msg}");
            let want = match m.ended {
                Some(state) if m.durable == m.appended => ReplayStatus::Ended {
                    frame_count: m.durable,
                    state,
                },
                _ => ReplayStatus::CaughtUp {
                    live_from_seq: m.durable,
                },
            };
            assert_eq!(status, want, "{msg}");
        }
        for conv in 0..CONVS {
            let got: Vec<MsgId> = store
                .timeline(ConvId(conv), TimelineFrom::Since(0), usize::MAX)
                .iter()
                .map(|i| i.msg)
                .collect();
            let want: Vec<MsgId> = self
                .model
                .iter()
                .filter(|(_, m)| m.conv == conv)
                .map(|(id, _)| *id)
                .take(hark_storage::TIMELINE_LIMIT_MAX)
                .collect();
            assert_eq!(got, want, "timeline of {conv}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replay_always_equals_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), SHARD, config(), 1_000_000).unwrap();
        let mut h = Harness {
            dir,
            store: Some(store),
            model: BTreeMap::new(),
            ids: MsgIdGenerator::new(SHARD),
            now_us: 1_000_000,
        };
        for op in &ops {
            h.step(op);
            h.check();
        }
        // Finally: commit everything, reopen, and the model still holds.
        h.step(&Op::Commit { fail: false });
        h.step(&Op::Reopen);
        h.check();
    }
}
