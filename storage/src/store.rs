//! The store of one shard: opening (recovery), and the header queries (message info,
//! conversation timelines). The write path is in `writer.rs`, replay in `replay.rs`,
//! retention in `retention.rs`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hark_core::{ConvId, MsgId, ShardId};

use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::format::{EndState, FORMAT_VERSION};
use crate::hint::{HintFault, SegmentHint};
use crate::index::{ChunkLoc, Index, MessageState};
use crate::segment::{
    DroppedRange, RecordSummary, ScanFault, SegmentScan, hint_file_name, parse_segment_file_name,
    scan_segment, segment_path,
};
use crate::spare::{SpareSegment, remove_stale_spares};
use crate::writer::Writer;

/// Name of the file that carries the store format version.
pub const FORMAT_FILE_NAME: &str = "format";
const FORMAT_FILE_PREFIX: &str = "hark-store ";
/// Most messages a timeline query returns, whatever limit is asked.
pub const TIMELINE_LIMIT_MAX: usize = 1000;

/// One segment file the store knows.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub file: Arc<File>,
    pub created_us: u64,
    /// Bytes of valid commits (the end of the last one).
    pub bytes: u64,
    pub sealed: bool,
    /// Messages whose Start record is in this segment.
    pub started: Vec<MsgId>,
    /// The active segment's records, for its hint file when it is sealed.
    pub summaries: Vec<RecordSummary>,
}

impl SegmentFile {
    pub fn new(file: File, created_us: u64, bytes: u64, sealed: bool) -> Self {
        Self {
            file: Arc::new(file),
            created_us,
            bytes,
            sealed,
            started: Vec::new(),
            summaries: Vec::new(),
        }
    }
}

/// What opening a store found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Segment files found.
    pub segments: usize,
    /// Segments whose hint file was used.
    pub hints_used: usize,
    /// Segments read in full (no usable hint, or the open segment).
    pub segments_scanned: usize,
    /// Bytes read by scans.
    pub bytes_scanned: u64,
    /// Hint files written (missing or damaged before).
    pub hints_rebuilt: usize,
    /// Byte ranges not used: torn or corrupt commits and tails.
    pub dropped: Vec<DroppedRange>,
    /// Segments with a torn or foreign header, ignored entirely.
    pub segments_ignored: Vec<u32>,
    /// Messages that were open when the store was last closed (cut by a crash), now ended
    /// as truncated.
    pub truncated_messages: Vec<MsgId>,
    /// Records of messages the index does not have (their Start was deleted by retention).
    pub orphan_records: u64,
    /// With `StoreConfig::keep_cut_messages_open`: messages a crash left open, still open for
    /// appends from their first frame not on disk (`message_info(msg).frame_count`).
    pub open_messages: Vec<MsgId>,
}

/// A message's header, as `message_info` and timeline queries return it (hark-core's type:
/// its start time is `msg.start_us()`).
pub use hark_core::shard::MessageHeader;

/// Where a timeline query starts.
pub use hark_core::shard::TimelineFrom;

/// The body store and header index of one shard. See the crate docs.
#[derive(Debug)]
pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) shard: ShardId,
    pub(crate) config: StoreConfig,
    pub(crate) read_only: bool,
    pub(crate) segments: BTreeMap<u32, SegmentFile>,
    pub(crate) index: Index,
    pub(crate) writer: Writer,
    pub(crate) newest_msg: Option<MsgId>,
    /// A zeroed segment file ready for the next roll (see `spare.rs`).
    pub(crate) spare: Option<SpareSegment>,
    /// The latest time seen in `poll_commit`; appends stamp record deadlines with it.
    pub(crate) now_us: u64,
}

impl Store {
    /// Opens (creating if needed) the store of `shard` in `dir` for writing, recovering from
    /// whatever a crash left: the open segment is scanned and cut at the first torn commit,
    /// missing or damaged hint files are rebuilt, messages cut by the crash are ended as
    /// truncated. Runs blocking file I/O: call it before the shard starts serving.
    pub fn open(
        dir: &Path,
        shard: ShardId,
        config: StoreConfig,
        now_us: u64,
    ) -> Result<(Self, OpenReport), StoreError> {
        Self::open_mode(dir, shard, config, now_us, false)
    }

    /// Opens another shard's store to read its history (a host restarted with fewer
    /// cores). Nothing is written, truncated or repaired on disk; every segment is treated
    /// as sealed and writes fail with [`StoreError::ReadOnly`].
    pub fn open_read_only(
        dir: &Path,
        shard: ShardId,
        config: StoreConfig,
    ) -> Result<(Self, OpenReport), StoreError> {
        Self::open_mode(dir, shard, config, 0, true)
    }

    fn open_mode(
        dir: &Path,
        shard: ShardId,
        config: StoreConfig,
        now_us: u64,
        read_only: bool,
    ) -> Result<(Self, OpenReport), StoreError> {
        config.validate()?;
        if !read_only {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create dir", dir, e))?;
        }
        check_format_file(dir, !read_only)?;
        if !read_only {
            remove_stale_spares(dir).map_err(|e| StoreError::io("remove stale spares", dir, e))?;
        }
        let ids = list_segments(dir)?;
        let mut store = Self {
            dir: dir.to_path_buf(),
            shard,
            config,
            read_only,
            segments: BTreeMap::new(),
            index: Index::default(),
            writer: Writer::new(0, 0, 0, false),
            newest_msg: None,
            spare: None,
            now_us,
        };
        let mut report = OpenReport {
            segments: ids.len(),
            ..OpenReport::default()
        };
        let last = ids.last().copied();
        for &id in &ids {
            if Some(id) == last && !read_only {
                store.recover_open_segment(id, now_us, &mut report)?;
            } else {
                store.load_sealed_segment(id, &mut report)?;
            }
        }
        if !read_only && store.segments.is_empty() {
            let next = last.map_or(1, |l| l + 1);
            store.create_segment(next, now_us)?;
        }
        let mut cut: Vec<MsgId> = store
            .index
            .messages
            .iter()
            .filter(|(_, e)| !e.end_durable)
            .map(|(m, _)| *m)
            .collect();
        cut.sort_unstable();
        if !read_only && store.config.keep_cut_messages_open {
            cut.retain(|msg| !store.reopen_cut_message(*msg));
            report.open_messages = store.writer.open.keys().copied().collect();
            report.open_messages.sort_unstable();
        }
        for msg in &cut {
            if let Some(entry) = store.index.messages.get_mut(msg) {
                entry.state = MessageState::Ended(EndState::Truncated);
                entry.duration_us = Some(0);
                entry.end_durable = read_only;
            }
        }
        if !read_only {
            store.queue_recovery_ends(&cut)?;
        }
        report.truncated_messages = cut;
        store.newest_msg = store.index.messages.keys().max().copied();
        Ok((store, report))
    }

    /// Keeps a message a crash cut open for appends (see `keep_cut_messages_open`). Returns
    /// `false` when it cannot be (the open-message limit is reached): it is ended instead.
    fn reopen_cut_message(&mut self, msg: MsgId) -> bool {
        if self.writer.open.len() >= self.config.open_messages_max {
            return false;
        }
        let Some(entry) = self.index.messages.get_mut(&msg) else {
            return false;
        };
        entry.state = MessageState::Open;
        entry.frames_appended = entry.frames_durable;
        self.writer.open.insert(
            msg,
            crate::writer::OpenMessage::resumed_at(entry.frames_durable),
        );
        true
    }

    fn create_segment(&mut self, id: u32, now_us: u64) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| StoreError::io("create segment", &path, e))?;
        self.segments
            .insert(id, SegmentFile::new(file, now_us, 0, false));
        self.writer = Writer::new(id, 0, 0, false);
        Ok(())
    }

    fn recover_open_segment(
        &mut self,
        id: u32,
        now_us: u64,
        report: &mut OpenReport,
    ) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io("open segment", &path, e))?;
        let scan = match self.scan_file(id, &path, report)? {
            Some(scan) => scan,
            None => {
                // Torn before its first commit was durable: nothing in it was acknowledged.
                drop(file);
                return self.create_segment(id, now_us);
            }
        };
        // A preallocated segment keeps its zero tail: appends continue in place. Anything
        // else after the log (a torn commit) is cut, so no stale block can follow a newer
        // commit.
        if scan.file_bytes != scan.valid_end && !scan.zero_tail {
            file.set_len(scan.valid_end)
                .and_then(|()| file.sync_all())
                .map_err(|e| StoreError::io("truncate segment", &path, e))?;
        }
        let mut seg = SegmentFile::new(file, scan.header.created_us, scan.valid_end, false);
        for summary in &scan.records {
            self.apply_summary(id, &mut seg, summary, report);
        }
        seg.summaries = scan.records;
        self.segments.insert(id, seg);
        // The header is valid, so it is durable; with no commit yet, valid_end is the end
        // of the header block and the next commit goes right after it.
        self.writer = Writer::new(id, scan.valid_end, scan.last_commit_seq, true);
        Ok(())
    }

    fn load_sealed_segment(&mut self, id: u32, report: &mut OpenReport) -> Result<(), StoreError> {
        let path = segment_path(&self.dir, id);
        let file = File::open(&path).map_err(|e| StoreError::io("open segment", &path, e))?;
        let file_bytes = file
            .metadata()
            .map_err(|e| StoreError::io("stat segment", &path, e))?
            .len();
        let hint_path = self.dir.join(hint_file_name(id));
        if let Ok(bytes) = std::fs::read(&hint_path) {
            let mut summaries = Vec::new();
            match SegmentHint::visit(&bytes, |r| summaries.push(r.to_owned_summary())) {
                Ok((seg_id, seg_bytes, created_us)) if seg_id == id && seg_bytes == file_bytes => {
                    let mut seg = SegmentFile::new(file, created_us, seg_bytes, true);
                    for summary in &summaries {
                        self.apply_summary(id, &mut seg, summary, report);
                    }
                    self.segments.insert(id, seg);
                    report.hints_used += 1;
                    return Ok(());
                }
                Err(HintFault::TooNew(found)) => {
                    return Err(StoreError::FormatTooNew {
                        path: hint_path,
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                _ => {}
            }
        }
        let Some(scan) = self.scan_file(id, &path, report)? else {
            return Ok(());
        };
        let mut seg = SegmentFile::new(file, scan.header.created_us, scan.valid_end, true);
        for summary in &scan.records {
            self.apply_summary(id, &mut seg, summary, report);
        }
        self.segments.insert(id, seg);
        if !self.read_only {
            // A sealed segment still preallocated (its cut was lost in a crash) is cut to its
            // data now, so the hint matches the file.
            let trim = scan.zero_tail && scan.valid_end < file_bytes;
            let segment_bytes = if trim { scan.valid_end } else { file_bytes };
            let hint = SegmentHint {
                segment: id,
                segment_bytes,
                created_us: scan.header.created_us,
                records: scan.records,
            };
            // A hint that cannot be encoded or written only costs a rescan next time.
            let write = crate::commit::HintWrite {
                path: hint_path,
                hint,
                trim_segment: trim.then(|| (path.clone(), segment_bytes)),
            };
            if write.write_blocking().is_ok() {
                report.hints_rebuilt += 1;
            }
        }
        Ok(())
    }

    /// Reads and scans a segment file; `None` when its header is torn (ignored segment).
    fn scan_file(
        &self,
        id: u32,
        path: &Path,
        report: &mut OpenReport,
    ) -> Result<Option<SegmentScan>, StoreError> {
        let bytes = std::fs::read(path).map_err(|e| StoreError::io("read segment", path, e))?;
        report.segments_scanned += 1;
        report.bytes_scanned += bytes.len() as u64;
        match scan_segment(id, &bytes) {
            Ok(scan) => {
                report.dropped.extend_from_slice(&scan.dropped);
                Ok(Some(scan))
            }
            Err(ScanFault::TooNew(found)) => Err(StoreError::FormatTooNew {
                path: path.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            }),
            Err(ScanFault::HeaderInvalid | ScanFault::WrongSegment(_)) => {
                report.segments_ignored.push(id);
                if !bytes.is_empty() {
                    report.dropped.push(DroppedRange {
                        segment: id,
                        from_offset: 0,
                        to_offset: bytes.len() as u64,
                    });
                }
                Ok(None)
            }
        }
    }

    fn apply_summary(
        &mut self,
        segment: u32,
        seg: &mut SegmentFile,
        summary: &RecordSummary,
        report: &mut OpenReport,
    ) {
        match summary {
            RecordSummary::Start {
                msg,
                conv,
                sender,
                codec,
                ..
            } => {
                if self
                    .index
                    .recover_start(MsgId(*msg), segment, ConvId(*conv), sender, codec)
                {
                    seg.started.push(MsgId(*msg));
                }
            }
            RecordSummary::Frames {
                msg,
                offset,
                len,
                first_seq,
                count,
            } => {
                let loc = ChunkLoc {
                    segment,
                    offset: *offset,
                    len: *len,
                    first_seq: *first_seq,
                };
                if !self.index.recover_frames(MsgId(*msg), loc, *count) {
                    report.orphan_records += 1;
                }
            }
            RecordSummary::End {
                msg,
                frame_count,
                duration_us,
                truncated,
            } => {
                let state = if *truncated {
                    EndState::Truncated
                } else {
                    EndState::Complete
                };
                self.index
                    .recover_end(MsgId(*msg), *frame_count, *duration_us, state);
            }
        }
    }

    pub(crate) fn writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            Err(StoreError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Preallocates the open segment to `segment_bytes_max`: writes zeros from the end of the
    /// file on and fsyncs, so its commits overwrite allocated blocks like those of later
    /// segments (which the I/O layer prepares as spares). Blocking and disk-heavy (up to a
    /// whole segment of writes): call it after [`Store::open`], before the shard serves. A
    /// no-op on a read-only store, with `preallocate_segments` off, or on a file already
    /// that long.
    pub fn preallocate_open_segment(&mut self) -> Result<(), StoreError> {
        if self.read_only || !self.config.preallocate_segments {
            return Ok(());
        }
        let Some(seg) = self.segments.get(&self.writer.active) else {
            return Ok(());
        };
        let path = segment_path(&self.dir, self.writer.active);
        let err = |e| StoreError::io("preallocate segment", &path, e);
        let from = seg.file.metadata().map_err(err)?.len();
        let never = std::sync::atomic::AtomicBool::new(false);
        crate::spare::write_zeros(&seg.file, from, self.config.segment_bytes_max, &never)
            .map_err(err)?;
        seg.file.sync_all().map_err(err)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shard the store belongs to.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The limits in force.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The newest message id in the store: seed the shard's `MsgIdGenerator` with it
    /// (`resume_after`) so a clock that stepped back cannot reissue an id.
    pub fn newest_msg(&self) -> Option<MsgId> {
        self.newest_msg
    }

    /// Messages the index holds.
    pub fn message_count(&self) -> usize {
        self.index.messages.len()
    }

    /// Messages open for appends.
    pub fn open_message_count(&self) -> usize {
        self.writer.open.len()
    }

    /// Bytes of all segment files (durable commits).
    pub fn stored_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }

    /// Segment numbers present, oldest first.
    pub fn segment_ids(&self) -> Vec<u32> {
        self.segments.keys().copied().collect()
    }

    /// Conversations with at least one message in the index, in no particular order. The
    /// relay uses it after a restart with another shard count to find the store directories
    /// that hold history of conversations now owned by other shards.
    pub fn conversations(&self) -> impl Iterator<Item = ConvId> + '_ {
        self.index.timelines.keys().copied()
    }

    /// The header of one message.
    pub fn message_info(&self, msg: MsgId) -> Option<MessageHeader> {
        let entry = self.index.messages.get(&msg)?;
        Some(MessageHeader {
            msg,
            conv: entry.conv,
            sender: entry.sender.to_vec(),
            codec: entry.codec.to_vec(),
            frame_count: self
                .writer
                .open
                .get(&msg)
                .map_or(entry.frames_appended, |open| open.next_seq),
            frames_durable: entry.frames_durable,
            duration_us: entry.duration_us,
            state: entry.state,
        })
    }

    /// Messages of `conv` from `from` on, oldest first, at most `limit` (capped at
    /// [`TIMELINE_LIMIT_MAX`]).
    pub fn timeline(&self, conv: ConvId, from: TimelineFrom, limit: usize) -> Vec<MessageHeader> {
        let Some(timeline) = self.index.timelines.get(&conv) else {
            return Vec::new();
        };
        let first = match from {
            TimelineFrom::Since(start_us) => timeline.partition_point(|m| m.start_us() < start_us),
            TimelineFrom::After(after) => timeline.partition_point(|m| *m <= after),
        };
        timeline
            .range(first..)
            .take(limit.min(TIMELINE_LIMIT_MAX))
            .filter_map(|m| self.message_info(*m))
            .collect()
    }
}

fn check_format_file(dir: &Path, create: bool) -> Result<(), StoreError> {
    let path = dir.join(FORMAT_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let version = text
                .trim()
                .strip_prefix(FORMAT_FILE_PREFIX)
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| StoreError::NotAStore { path: path.clone() })?;
            if version > FORMAT_VERSION {
                return Err(StoreError::FormatTooNew {
                    path,
                    found: version,
                    supported: FORMAT_VERSION,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let text = format!("{FORMAT_FILE_PREFIX}{FORMAT_VERSION}\n");
            std::fs::write(&path, text)
                .and_then(|()| File::open(dir)?.sync_all())
                .map_err(|e| StoreError::io("write format file", &path, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("read format file", &path, e)),
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u32>, StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io("list dir", dir, e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list dir", dir, e))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}
