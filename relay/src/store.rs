//! The shard's body store: its own writable `hark_storage::Store`, plus the read-only
//! [`Archive`] of history other shards' directories hold for conversations this shard owns
//! now (after a restart with another number of shards).
//!
//! A `MsgId` names the shard that stored it, so a message is read from exactly one store:
//! this shard's own for its own ids, else the archive's store of that id's shard. A
//! conversation's timeline merges this shard's timeline with the archive's, in id order.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use hark_core::map::Membership;
use hark_core::shard::{
    Appended, BodyStore, EndState, MessageHeader, ReplayStatus, StoreAcks, StoreFault, TimelineFrom,
};
use hark_core::{ConvId, MsgId, ShardId};
use hark_storage::{
    CommitAcks, FrameBatch, OpenReport, ReplayCursor, Store, StoreConfig, StoreError,
    find_shard_dirs,
};

/// Read-only stores of shard directories that hold history of conversations owned now by
/// another shard than the one that wrote them. Shared by every shard of the process.
#[derive(Debug, Default)]
pub struct Archive {
    /// Sorted by shard, one store per directory.
    stores: Vec<(ShardId, Store)>,
}

/// What opening the archive found, for the start-up log.
#[derive(Debug)]
pub struct ArchiveEntry {
    /// The directory's shard.
    pub shard: ShardId,
    /// Whether it was kept (it holds conversations another shard owns now).
    pub kept: bool,
    /// Messages in it.
    pub messages: usize,
    /// What the open found.
    pub report: OpenReport,
}

impl Archive {
    /// Opens every shard directory under `data_dir` read-only and keeps those holding a
    /// conversation whose owner under `map` is not the directory's shard (a directory of a
    /// shard that no longer runs is kept whenever it has messages). Call it after the
    /// running shards opened their own stores (their recovery cuts torn tails first).
    ///
    /// In the steady state (the same shards as the run that wrote the data) nothing is kept
    /// and the archive costs nothing.
    pub fn open(
        data_dir: &Path,
        map: &Membership,
        config: &StoreConfig,
    ) -> Result<(Self, Vec<ArchiveEntry>), StoreError> {
        let mut stores = Vec::new();
        let mut entries = Vec::new();
        for (shard, path) in find_shard_dirs(data_dir)? {
            let (store, report) = Store::open_read_only(&path, shard, config.clone())?;
            let kept = store
                .conversations()
                .any(|conv| map.owner(conv) != Some(shard));
            entries.push(ArchiveEntry {
                shard,
                kept,
                messages: store.message_count(),
                report,
            });
            if kept {
                stores.push((shard, store));
            }
        }
        Ok((Self { stores }, entries))
    }

    /// Whether no directory was kept.
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    fn store_of(&self, shard: ShardId) -> Option<&Store> {
        self.stores
            .binary_search_by_key(&shard, |(s, _)| *s)
            .ok()
            .map(|i| &self.stores[i].1)
    }
}

/// A shard's [`BodyStore`]: its own store for writes and its own messages, the shared
/// [`Archive`] for messages other shards stored.
#[derive(Debug)]
pub struct ShardStore {
    own: Store,
    archive: Arc<Archive>,
    /// Reused by every `replay_next` (the shard calls the store from one thread).
    batch: RefCell<FrameBatch>,
}

impl ShardStore {
    /// This shard's `own` store and the process's archive.
    pub fn new(own: Store, archive: Arc<Archive>) -> Self {
        Self {
            own,
            archive,
            batch: RefCell::new(FrameBatch::new()),
        }
    }

    /// The writable store, for the commit loop (`poll_commit`, `commit_completed`).
    pub fn own_mut(&mut self) -> &mut Store {
        &mut self.own
    }

    /// The writable store, read-only.
    pub fn own(&self) -> &Store {
        &self.own
    }

    /// The store that holds `msg`, if any does.
    fn holder(&self, msg: MsgId) -> Option<&Store> {
        if msg.shard() == self.own.shard() {
            Some(&self.own)
        } else {
            self.archive.store_of(msg.shard())
        }
    }
}

/// hark-storage's commit outcome as the shard's [`StoreAcks`].
pub fn store_acks(acks: CommitAcks) -> StoreAcks {
    StoreAcks {
        durable: acks.durable,
        ended: acks.ended,
    }
}

/// A store error as the shard's fault: the few the shard acts on by name, everything else
/// (backlog full, disk full, I/O, corrupt record, read-only, size limits) is unavailable.
pub fn fault(error: StoreError) -> StoreFault {
    match error {
        StoreError::TooManyOpenMessages { .. } => StoreFault::TooManyOpenMessages,
        StoreError::MessageUnknown(msg) => StoreFault::MessageUnknown(msg),
        StoreError::MessageNotOpen(msg) => StoreFault::MessageNotOpen(msg),
        StoreError::MessageExists(msg) => StoreFault::MessageExists(msg),
        StoreError::SequenceGap { msg, expected, got } => {
            StoreFault::SequenceGap { msg, expected, got }
        }
        other => StoreFault::Unavailable(other.to_string()),
    }
}

impl BodyStore for ShardStore {
    type Cursor = ReplayCursor;

    fn start_message(
        &mut self,
        msg: MsgId,
        conv: ConvId,
        sender: &[u8],
        codec: &[u8],
    ) -> Result<(), StoreFault> {
        self.own
            .start_message(msg, conv, sender, codec)
            .map_err(fault)
    }

    fn append(&mut self, msg: MsgId, seq: u32, frame: &[u8]) -> Result<Appended, StoreFault> {
        self.own.append(msg, seq, frame).map_err(fault)
    }

    fn end_message(&mut self, msg: MsgId, now_us: u64, state: EndState) -> Result<(), StoreFault> {
        self.own.end_message(msg, now_us, state).map_err(fault)
    }

    fn replay_from(&self, msg: MsgId, from_seq: u32) -> Result<ReplayCursor, StoreFault> {
        self.holder(msg)
            .ok_or(StoreFault::MessageUnknown(msg))?
            .replay_from(msg, from_seq)
            .map_err(fault)
    }

    fn replay_next(
        &self,
        cursor: &mut ReplayCursor,
        frames_max: usize,
        out: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<ReplayStatus, StoreFault> {
        let store = self
            .holder(cursor.msg())
            .ok_or(StoreFault::MessageUnknown(cursor.msg()))?;
        // Invariant: `out` is the shard's own sink and never calls back into the store, so the
        // batch is never borrowed twice.
        let mut batch = self.batch.borrow_mut();
        let status = store
            .replay_next(cursor, frames_max, &mut batch)
            .map_err(fault)?;
        for (seq, frame) in batch.iter() {
            out(seq, frame);
        }
        Ok(status)
    }

    fn timeline(&self, conv: ConvId, from: TimelineFrom, limit: usize) -> Vec<MessageHeader> {
        let mut merged = self.own.timeline(conv, from, limit);
        if self.archive.is_empty() {
            return merged;
        }
        let own_shard = self.own.shard();
        for (shard, store) in &self.archive.stores {
            if *shard == own_shard {
                continue;
            }
            merged.extend(store.timeline(conv, from, limit));
        }
        merged.sort_unstable_by_key(|h| h.msg);
        merged.truncate(limit);
        merged
    }

    fn message_info(&self, msg: MsgId) -> Option<MessageHeader> {
        self.holder(msg)?.message_info(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_core::map::{HostSpec, Membership};
    use hark_core::{ConvName, HostId};

    fn config() -> StoreConfig {
        StoreConfig {
            preallocate_segments: false,
            ..StoreConfig::default()
        }
    }

    fn map(cores: u16) -> Membership {
        Membership::from_hosts(
            1,
            [HostSpec {
                host: HostId(0),
                cores: (0..cores).collect(),
                weight_per_core: 100,
            }],
        )
        .expect("a valid membership")
    }

    /// Writes `frames` frames of one ended message and commits them synchronously.
    fn write_message(store: &mut Store, msg: MsgId, conv: ConvId, frames: u32) {
        store.start_message(msg, conv, b"alice", b"opus").unwrap();
        for seq in 0..frames {
            store.append(msg, seq, &seq.to_le_bytes()).unwrap();
        }
        store
            .end_message(msg, msg.start_us() + 1, EndState::Complete)
            .unwrap();
        let far = msg.start_us() + 10_000_000;
        while let Some(batch) = store.poll_commit(far).unwrap() {
            let done = batch.write_blocking();
            store.commit_completed(done).unwrap();
        }
    }

    #[test]
    fn history_written_by_one_shard_is_reachable_from_the_new_owner_after_a_reshard() {
        let data = tempfile::tempdir().unwrap();
        let shard0 = ShardId::new(0, 0);
        let shard1 = ShardId::new(0, 1);
        // A conversation that shard 1 owns in a two-shard map: all of it lived on shard 0
        // while the host ran one shard.
        let two = map(2);
        let conv = (0..1000)
            .map(|i| ConvName::new(format!("c{i}")).unwrap().id())
            .find(|c| two.owner(*c) == Some(shard1))
            .expect("some conversation lands on shard 1");
        let old = MsgId::from_parts(1_000_000, shard0, 0);
        {
            let dir = hark_storage::shard_dir(data.path(), shard0);
            let (mut store, _) = Store::open(&dir, shard0, config(), 1_000_000).unwrap();
            write_message(&mut store, old, conv, 5);
        }

        // The restart with two shards: shard 1's own store is empty.
        let dir1 = hark_storage::shard_dir(data.path(), shard1);
        let (own, _) = Store::open(&dir1, shard1, config(), 2_000_000).unwrap();
        let (archive, entries) = Archive::open(data.path(), &two, &config()).unwrap();
        assert!(entries.iter().any(|e| e.shard == shard0 && e.kept));
        let store = ShardStore::new(own, Arc::new(archive));

        let timeline = store.timeline(conv, TimelineFrom::Since(0), 10);
        assert_eq!(timeline.len(), 1);
        assert_eq!(timeline[0].msg, old);
        assert_eq!(store.message_info(old).unwrap().frame_count, 5);
        let mut cursor = store.replay_from(old, 0).unwrap();
        let mut frames = Vec::new();
        let status = store
            .replay_next(&mut cursor, 100, &mut |seq, f| {
                frames.push((seq, f.to_vec()))
            })
            .unwrap();
        assert_eq!(
            status,
            ReplayStatus::Ended {
                frame_count: 5,
                state: EndState::Complete
            }
        );
        let expected: Vec<(u32, Vec<u8>)> =
            (0..5u32).map(|s| (s, s.to_le_bytes().to_vec())).collect();
        assert_eq!(frames, expected);
    }

    #[test]
    fn the_archive_is_empty_when_every_conversation_stayed_with_its_shard() {
        let data = tempfile::tempdir().unwrap();
        let shard0 = ShardId::new(0, 0);
        let one = map(1);
        let conv = ConvName::new("general").unwrap().id();
        {
            let dir = hark_storage::shard_dir(data.path(), shard0);
            let (mut store, _) = Store::open(&dir, shard0, config(), 1_000_000).unwrap();
            write_message(&mut store, MsgId::from_parts(1_000_000, shard0, 0), conv, 3);
        }
        let (archive, entries) = Archive::open(data.path(), &one, &config()).unwrap();
        assert!(archive.is_empty());
        assert_eq!(entries.len(), 1);
        assert!(!entries[0].kept);
        assert_eq!(entries[0].messages, 1);
    }

    #[test]
    fn timelines_merge_in_id_order_and_respect_the_limit() {
        let data = tempfile::tempdir().unwrap();
        let shard0 = ShardId::new(0, 0);
        let shard1 = ShardId::new(0, 1);
        let one = map(1);
        // Owned by shard 0 with one shard; messages of it were written by a former shard 1.
        let conv = ConvName::new("general").unwrap().id();
        {
            let dir = hark_storage::shard_dir(data.path(), shard1);
            let (mut store, _) = Store::open(&dir, shard1, config(), 1_000_000).unwrap();
            write_message(&mut store, MsgId::from_parts(1_000_000, shard1, 0), conv, 1);
            write_message(&mut store, MsgId::from_parts(3_000_000, shard1, 1), conv, 1);
        }
        let dir0 = hark_storage::shard_dir(data.path(), shard0);
        let (mut own, _) = Store::open(&dir0, shard0, config(), 2_000_000).unwrap();
        write_message(&mut own, MsgId::from_parts(2_000_000, shard0, 0), conv, 1);
        let (archive, _) = Archive::open(data.path(), &one, &config()).unwrap();
        let store = ShardStore::new(own, Arc::new(archive));
        let starts: Vec<u64> = store
            .timeline(conv, TimelineFrom::Since(0), 10)
            .iter()
            .map(|h| h.msg.start_us())
            .collect();
        assert_eq!(starts, vec![1_000_000, 2_000_000, 3_000_000]);
        assert_eq!(store.timeline(conv, TimelineFrom::Since(0), 2).len(), 2);
        let after = MsgId::from_parts(2_000_000, shard0, 0);
        let rest: Vec<u64> = store
            .timeline(conv, TimelineFrom::After(after), 10)
            .iter()
            .map(|h| h.msg.start_us())
            .collect();
        assert_eq!(rest, vec![3_000_000]);
    }
}
