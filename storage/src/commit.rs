//! The hand-over between the store and whoever does the disk I/O: a [`CommitBatch`] leaves
//! the store, is written and synced elsewhere, and comes back as a [`CommitDone`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use hark_core::MsgId;

use crate::format::EndState;
use crate::hint::SegmentHint;
use crate::spare::{SpareRequest, SpareSegment, adopt_spare, write_out_in_chunks};

/// One commit: block-aligned bytes to write at `offset` of one segment file and then sync.
///
/// It owns its buffer and a handle on the file, so the store is not borrowed while the I/O
/// runs. Hand it to [`crate::io::Committer::commit`] (or [`CommitBatch::write_blocking`]) and
/// give the result to [`crate::Store::commit_completed`].
#[derive(Debug)]
pub struct CommitBatch {
    pub(crate) id: u64,
    pub(crate) segment: u32,
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    pub(crate) offset: u64,
    pub(crate) buf: Vec<u8>,
    pub(crate) sync_dir: Option<PathBuf>,
    pub(crate) hint: Option<HintWrite>,
    /// A spare file to rename to `path` before the write (first commit of a segment that was
    /// rolled into a spare); `sync_dir` is set with it, so the rename is durable with the
    /// commit.
    pub(crate) adopt_spare: Option<PathBuf>,
    /// The store has no spare segment: an I/O layer that prepares spares starts one.
    pub(crate) spare_wanted: Option<SpareRequest>,
}

/// A sealed segment's hint file (best effort, never synced), written by the committer's
/// housekeeping thread while the batch that sealed the segment commits.
///
/// It carries the hint unencoded: encoding a segment's worth of summaries takes milliseconds
/// (64 MiB of voice frames make ~100k records and a ~7 MiB hint), so it happens where the
/// file is written, not on the shard thread that sealed the segment.
#[derive(Debug)]
pub struct HintWrite {
    pub(crate) path: PathBuf,
    pub(crate) hint: SegmentHint,
    /// The sealed segment file and its data bytes: a preallocated segment is cut to its data
    /// first, so the hint's `segment_bytes` matches the file and the zero tail goes back to
    /// the filesystem. Not synced: if the cut is lost, the next open rescans the segment
    /// (its hint no longer matches) and rebuilds the hint.
    pub(crate) trim_segment: Option<(PathBuf, u64)>,
}

impl HintWrite {
    /// Cuts the sealed segment to its data, if asked, then encodes the hint, writes it to a
    /// temporary name and renames it into place. Blocking: a shard thread must not call it.
    ///
    /// The bytes are pushed out to the disk chunk by chunk as they are written (not synced):
    /// several MiB of dirty pages of a new file would otherwise be written out by the next
    /// journal commit, which a commit's directory sync waits for.
    pub fn write_blocking(&self) -> io::Result<()> {
        self.trim_segment_blocking()?;
        let bytes = self.hint.encode().map_err(io::Error::other)?;
        let tmp = self.path.with_extension("hint.tmp");
        let file = File::create(&tmp)?;
        write_out_in_chunks(&file, &bytes)?;
        drop(file);
        std::fs::rename(&tmp, &self.path)
    }

    /// The sealed segment's number.
    pub fn segment(&self) -> u32 {
        self.hint.segment
    }

    /// Cuts the sealed segment to its data bytes (a no-op when it is not longer).
    pub(crate) fn trim_segment_blocking(&self) -> io::Result<()> {
        let Some((path, bytes)) = &self.trim_segment else {
            return Ok(());
        };
        let file = OpenOptions::new().write(true).open(path)?;
        if file.metadata()?.len() > *bytes {
            file.set_len(*bytes)?;
        }
        Ok(())
    }
}

impl CommitBatch {
    /// The segment the batch goes to.
    pub fn segment(&self) -> u32 {
        self.segment
    }
    /// File offset of the first byte (a block boundary).
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Bytes to write (a whole number of blocks).
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Always false: a batch holds at least one block.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Writes, syncs, and writes the hint (if the batch carries one), on the calling thread.
    /// Used by the sync thread of the epoll fallback, by tests and by tools; a shard thread
    /// must not call it.
    pub fn write_blocking(self) -> CommitDone {
        let result = self.write_and_sync();
        let hint_result = self.hint.as_ref().map(HintWrite::write_blocking);
        CommitDone {
            batch: self,
            result,
            hint_result,
            spare: None,
        }
    }

    fn write_and_sync(&self) -> io::Result<()> {
        if let Some(from) = &self.adopt_spare {
            adopt_spare(from, &self.path)?;
        }
        self.file.write_all_at(&self.buf, self.offset)?;
        self.file.sync_data()?;
        if let Some(dir) = &self.sync_dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The segment file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Fault injection for tests: the batch with a read-only handle on its file, so the
    /// write fails inside the I/O layer. Not for production use.
    #[doc(hidden)]
    pub fn with_read_only_file_for_test(mut self) -> Self {
        if let Ok(file) = File::open(&self.path) {
            self.file = Arc::new(file);
        }
        self
    }

    /// The batch as failed with `error`, without touching the disk (what an I/O layer reports
    /// when it cannot even start the write; also used to test failure handling).
    pub fn fail(self, error: io::Error) -> CommitDone {
        CommitDone {
            batch: self,
            result: Err(error),
            hint_result: None,
            spare: None,
        }
    }

    /// The batch with the outcome an I/O layer observed.
    pub fn done(self, result: io::Result<()>, hint_result: Option<io::Result<()>>) -> CommitDone {
        CommitDone {
            batch: self,
            result,
            hint_result,
            spare: None,
        }
    }

    /// What the store asks for: a spare segment to prepare (see [`crate::spare`]).
    pub fn spare_wanted(&self) -> Option<&SpareRequest> {
        self.spare_wanted.as_ref()
    }
}

/// A batch coming back from the I/O layer with its outcome.
#[derive(Debug)]
pub struct CommitDone {
    pub(crate) batch: CommitBatch,
    pub(crate) result: io::Result<()>,
    pub(crate) hint_result: Option<io::Result<()>>,
    /// A spare segment the I/O layer prepared, handed to the store with the outcome.
    pub(crate) spare: Option<SpareSegment>,
}

impl CommitDone {
    /// Hands the store a prepared spare segment along with this outcome.
    pub fn with_spare(mut self, spare: SpareSegment) -> Self {
        self.spare = Some(spare);
        self
    }

    /// Whether the data write and sync succeeded.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// The highest frame of a message now durable: the relay sends a stored-ack from it.
pub use hark_core::shard::DurableAck;

/// What a successful commit made durable.
#[derive(Debug, Default)]
pub struct CommitAcks {
    /// One entry per message with newly durable frames.
    pub durable: Vec<DurableAck>,
    /// Messages whose End record is now durable, and how they ended.
    pub ended: Vec<(MsgId, EndState)>,
    /// Bytes written by the commit, padding included.
    pub bytes_written: usize,
    /// A hint file written with the batch could not be written; harmless (the segment is
    /// rescanned on next open). `Committer` writes hints on its housekeeping thread and
    /// reports their errors through `Committer::take_housekeeping_error` instead; this is
    /// for [`CommitBatch::write_blocking`] and the committer's fallback when that thread's
    /// queue is full.
    pub hint_error: Option<io::Error>,
}
