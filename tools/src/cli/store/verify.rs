//! `hark store verify`: every record's checksum, every hint against its segment, every
//! message replayed from frame 0 against what its records say.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use hark_core::{MsgId, ShardId};
use hark_storage::hint::SegmentHint;
use hark_storage::replay::REPLAY_FRAMES_MAX;
use hark_storage::segment::{RecordSummary, ScanFault, hint_file_name, scan_segment, segment_path};
use hark_storage::{FrameBatch, ReplayStatus, Store, StoreError, TIMELINE_LIMIT_MAX, TimelineFrom};

use super::{CliError, open, store_dirs};

/// Largest segment file verify reads into memory; a bigger one is reported, not read (the
/// relay's `segment_bytes_max` is far below it).
pub const SEGMENT_VERIFY_BYTES_MAX: u64 = 1 << 30;

/// Damage reports kept at most; more are counted, not listed.
const DAMAGE_LISTED_MAX: usize = 10_000;

/// One thing wrong in a store, located as precisely as the store allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The shard whose store it is in.
    pub shard: ShardId,
    /// The segment, when known.
    pub segment: Option<u32>,
    /// The byte offset in the segment, when known.
    pub offset: Option<u64>,
    /// The message, when known.
    pub msg: Option<MsgId>,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.shard)?;
        if let Some(segment) = self.segment {
            write!(f, " segment {segment}")?;
        }
        if let Some(offset) = self.offset {
            write!(f, " offset {offset}")?;
        }
        if let Some(msg) = self.msg {
            write!(f, " message {msg}")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// What `hark store verify` checked and found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Shard stores opened.
    pub stores: usize,
    /// Segment files read.
    pub segments: usize,
    /// Messages replayed.
    pub messages: usize,
    /// Frames replayed.
    pub frames: u64,
    /// Messages still open in the store (a running relay, or one killed): not damage.
    pub open_messages: usize,
    /// Frame records of no message the index knows: normal once retention deleted the segment
    /// holding their message's start (a gap inside a message shows as an unusable range,
    /// which is damage). Reported, not damage.
    pub orphan_records: u64,
    /// What is wrong (at most `DAMAGE_LISTED_MAX` listed).
    pub damage: Vec<Damage>,
    /// Damage found beyond the listed.
    pub damage_unlisted: usize,
}

impl VerifyReport {
    /// No damage at all.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty() && self.damage_unlisted == 0
    }

    fn push(&mut self, damage: Damage) {
        if self.damage.len() < DAMAGE_LISTED_MAX {
            self.damage.push(damage);
        } else {
            self.damage_unlisted += 1;
        }
    }
}

/// Verifies every store in `dir` (a shard store or a data dir). Errors only when `dir` is not
/// a store at all; everything found inside is in the report.
pub fn verify(dir: &Path) -> Result<VerifyReport, CliError> {
    let mut report = VerifyReport::default();
    for (shard, path) in store_dirs(dir)? {
        report.stores += 1;
        verify_store(shard, &path, &mut report);
    }
    Ok(report)
}

/// Runs `hark store verify`: prints the report; [`CliError::StoreDamaged`] when anything is
/// wrong (exit 1).
pub fn run_verify(dir: &Path, out: &mut dyn Write) -> Result<VerifyReport, CliError> {
    let report = verify(dir)?;
    for damage in &report.damage {
        writeln!(out, "DAMAGED {damage}")?;
    }
    if report.damage_unlisted > 0 {
        writeln!(out, "DAMAGED … and {} more", report.damage_unlisted)?;
    }
    let verdict = if report.is_clean() { "ok" } else { "DAMAGED" };
    writeln!(
        out,
        "{verdict}: {} store(s), {} segment(s), {} message(s), {} frame(s) replayed, {} open message(s)",
        report.stores, report.segments, report.messages, report.frames, report.open_messages
    )?;
    if report.orphan_records > 0 {
        writeln!(
            out,
            "note: {} frame record(s) of messages whose start retention removed (not damage)",
            report.orphan_records
        )?;
    }
    if report.is_clean() {
        Ok(report)
    } else {
        Err(CliError::StoreDamaged(
            report.damage.len() + report.damage_unlisted,
        ))
    }
}

fn verify_store(shard: ShardId, path: &Path, report: &mut VerifyReport) {
    let at = |segment, offset, msg, what: String| Damage {
        shard,
        segment,
        offset,
        msg,
        what,
    };
    let (store, opened) = match open(path, shard) {
        Ok(pair) => pair,
        Err(error) => {
            report.push(at(None, None, None, error.to_string()));
            return;
        }
    };
    // Ranges the open and the scans below both find are reported once.
    let mut dropped = BTreeMap::new();
    for range in &opened.dropped {
        dropped.insert((range.segment, range.from_offset, range.to_offset), None);
    }
    let mut ignored: BTreeSet<u32> = opened.segments_ignored.iter().copied().collect();
    let mut end_frames = BTreeMap::new();
    for segment in store.segment_ids() {
        report.segments += 1;
        verify_segment(
            &store,
            segment,
            &mut dropped,
            &mut ignored,
            &mut end_frames,
            report,
        );
    }
    // The newest segment may be all zeros: preallocated, or created, before its first commit
    // became durable. The relay starts it over on open; nothing acknowledged was in it.
    let newest = store.segment_ids().last().copied().unwrap_or(0);
    ignored.retain(|&segment| {
        let unused = segment > newest && is_all_zeros(&segment_path(store.dir(), segment));
        if unused {
            dropped.retain(|(s, _, _), _| *s != segment);
        }
        !unused
    });
    for segment in ignored {
        report.push(at(
            Some(segment),
            None,
            None,
            "segment header torn or foreign: the whole segment is ignored".into(),
        ));
    }
    for ((segment, from, to), claimed) in dropped {
        // The record header's message id is not covered by a good checksum: named only when
        // the store knows that message.
        let msg = claimed.filter(|m| store.message_info(*m).is_some());
        report.push(at(
            Some(segment),
            Some(from),
            msg,
            format!(
                "bytes {from}..{to} unusable (a record failed its checksum or a commit is torn)"
            ),
        ));
    }
    report.orphan_records += opened.orphan_records;
    report.open_messages += opened.truncated_messages.len();
    replay_all(&store, shard, &end_frames, report);
}

fn verify_segment(
    store: &Store,
    segment: u32,
    dropped: &mut DroppedRanges,
    ignored: &mut BTreeSet<u32>,
    end_frames: &mut BTreeMap<MsgId, u32>,
    report: &mut VerifyReport,
) {
    let shard = store.shard();
    let damage = |offset, what: String| Damage {
        shard,
        segment: Some(segment),
        offset,
        msg: None,
        what,
    };
    let path = segment_path(store.dir(), segment);
    let bytes = match read_bounded(&path) {
        Ok(bytes) => bytes,
        Err(what) => {
            report.push(damage(None, what));
            return;
        }
    };
    let scan = match scan_segment(segment, &bytes) {
        Ok(scan) => scan,
        Err(ScanFault::HeaderInvalid | ScanFault::WrongSegment(_)) => {
            ignored.insert(segment);
            return;
        }
        Err(ScanFault::TooNew(version)) => {
            report.push(damage(
                None,
                format!("written by a newer format ({version})"),
            ));
            return;
        }
    };
    for range in &scan.dropped {
        let claimed = claimed_msg(&bytes, range.from_offset);
        dropped.insert((range.segment, range.from_offset, range.to_offset), claimed);
    }
    for record in &scan.records {
        if let RecordSummary::End {
            msg, frame_count, ..
        } = record
        {
            end_frames.insert(MsgId(*msg), *frame_count);
        }
    }
    let hint_path = store.dir().join(hint_file_name(segment));
    let Ok(hint_bytes) = std::fs::read(&hint_path) else {
        return; // No hint: the open scanned the segment itself.
    };
    let mut hinted = Vec::new();
    match SegmentHint::visit(&hint_bytes, |r| hinted.push(r.to_owned_summary())) {
        Ok((_, hint_segment_bytes, _)) if hint_segment_bytes != scan.file_bytes => {
            // The store rescans a segment whose size its hint does not match: not damage.
        }
        Ok(_) => {
            if let Some(i) = (0..hinted.len().max(scan.records.len()))
                .find(|&i| hinted.get(i) != scan.records.get(i))
            {
                let offset = scan.records.get(i).map(record_offset);
                report.push(damage(
                    offset,
                    format!(
                        "hint file disagrees with the segment from record {i} on ({} hinted, {} found)",
                        hinted.len(),
                        scan.records.len()
                    ),
                ));
            }
        }
        Err(_) => report.push(damage(
            None,
            "hint file invalid (the store rescans the segment)".into(),
        )),
    }
}

/// Byte ranges recovery cannot use, with the message the first record there claims to be of.
type DroppedRanges = BTreeMap<(u32, u64, u64), Option<MsgId>>;

/// The message id in the (unverified) record header at `offset`: bytes 12..28 of a record.
fn claimed_msg(segment: &[u8], offset: u64) -> Option<MsgId> {
    let at = usize::try_from(offset).ok()?;
    let id = segment.get(at.checked_add(12)?..at.checked_add(28)?)?;
    Some(MsgId(u128::from_le_bytes(id.try_into().ok()?)))
}

fn record_offset(record: &RecordSummary) -> u64 {
    match record {
        RecordSummary::Start { offset, .. } | RecordSummary::Frames { offset, .. } => {
            u64::from(*offset)
        }
        RecordSummary::End { .. } => 0,
    }
}

fn is_all_zeros(path: &Path) -> bool {
    read_bounded(path).is_ok_and(|bytes| bytes.iter().all(|b| *b == 0))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    if len > SEGMENT_VERIFY_BYTES_MAX {
        return Err(format!(
            "{len} bytes, above the {SEGMENT_VERIFY_BYTES_MAX} verify reads"
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(SEGMENT_VERIFY_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok(bytes)
}

fn replay_all(
    store: &Store,
    shard: ShardId,
    end_frames: &BTreeMap<MsgId, u32>,
    report: &mut VerifyReport,
) {
    let mut frames = FrameBatch::new();
    let convs: Vec<_> = store.conversations().collect();
    for conv in convs {
        let mut from = TimelineFrom::Since(0);
        // Each page is non-empty and moves `from` past its last message.
        loop {
            let page = store.timeline(conv, from, TIMELINE_LIMIT_MAX);
            let Some(last) = page.last() else { break };
            from = TimelineFrom::After(last.msg);
            for header in &page {
                report.messages += 1;
                replay_message(store, shard, header, end_frames, &mut frames, report);
            }
        }
    }
}

fn replay_message(
    store: &Store,
    shard: ShardId,
    header: &hark_storage::MessageHeader,
    end_frames: &BTreeMap<MsgId, u32>,
    frames: &mut FrameBatch,
    report: &mut VerifyReport,
) {
    let msg = header.msg;
    let damage = |segment, offset, what: String| Damage {
        shard,
        segment,
        offset,
        msg: Some(msg),
        what,
    };
    let mut cursor = match store.replay_from(msg, 0) {
        Ok(cursor) => cursor,
        Err(error) => {
            report.push(damage(None, None, format!("cannot replay: {error}")));
            return;
        }
    };
    let mut next_seq = 0u32;
    // Each round returns at least one frame or a final status, so at most frame_count + 1 rounds.
    let stored = loop {
        match store.replay_next(&mut cursor, REPLAY_FRAMES_MAX, frames) {
            Ok(status) => {
                for (seq, _) in frames.iter() {
                    if seq != next_seq {
                        report.push(damage(
                            None,
                            None,
                            format!("frame {seq} where {next_seq} was due"),
                        ));
                        return;
                    }
                    next_seq += 1;
                }
                report.frames += frames.len() as u64;
                match status {
                    ReplayStatus::More if frames.is_empty() => {
                        report.push(damage(
                            None,
                            None,
                            format!("replay stuck at frame {next_seq}"),
                        ));
                        return;
                    }
                    ReplayStatus::More => {}
                    ReplayStatus::CaughtUp { live_from_seq } => break live_from_seq,
                    ReplayStatus::Ended { frame_count, .. } => break frame_count,
                }
            }
            Err(StoreError::RecordCorrupt { segment, offset }) => {
                report.push(damage(
                    Some(segment),
                    Some(offset),
                    format!("frame record after frame {next_seq} fails its checksum"),
                ));
                return;
            }
            Err(error) => {
                report.push(damage(
                    None,
                    None,
                    format!("replay failed at frame {next_seq}: {error}"),
                ));
                return;
            }
        }
    };
    if stored != next_seq || header.frames_durable != next_seq {
        report.push(damage(
            None,
            None,
            format!(
                "replayed {next_seq} frame(s), the header says {} durable, replay ended at {stored}",
                header.frames_durable
            ),
        ));
    }
    if let Some(&written) = end_frames.get(&msg)
        && written != next_seq
    {
        report.push(damage(
            None,
            None,
            format!("its end record says {written} frame(s), {next_seq} are stored"),
        ));
    }
}
