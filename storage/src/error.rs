//! The one error type of hark-storage. Each variant says whether state changed and what the
//! caller can do.

use std::io;
use std::path::PathBuf;

use hark_core::MsgId;
use thiserror::Error;

/// Everything the store can refuse or fail at.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The configuration's limits do not fit together. Nothing was opened; fix the config.
    #[error("invalid store config: {reason}")]
    ConfigInvalid {
        /// Which rule was broken.
        reason: &'static str,
    },
    /// The directory was written by a newer hark. Nothing was changed; run a newer build.
    #[error("{path:?} holds store format version {found}; this build reads up to {supported}")]
    FormatTooNew {
        /// The file that carries the version.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The directory is not a hark store (a `format` file with other content). Nothing was
    /// changed; check the data dir.
    #[error("{path:?} is not a hark store format file")]
    NotAStore {
        /// The offending file.
        path: PathBuf,
    },
    /// A file operation failed while opening or reading. The store state is unchanged; the
    /// caller may retry or report the disk as failing.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A commit's write or sync failed because the disk is full. Nothing in that batch was
    /// acknowledged; its records stay pending and the next commit rewrites them from the last
    /// good block boundary. Report "storage full" and free space or run retention.
    #[error("commit failed, disk full: {0}")]
    DiskFull(io::Error),
    /// A commit's write or sync failed for another reason. Nothing in that batch was
    /// acknowledged; its records stay pending and will be retried by the next commit.
    #[error("commit failed: {0}")]
    CommitFailed(io::Error),
    /// `commit_completed` got a batch the store did not hand out (or one twice). Nothing changed.
    #[error("commit_completed called with a batch that is not in flight")]
    BatchUnknown,
    /// The store was opened read-only (another shard's history). Nothing changed.
    #[error("store is read-only")]
    ReadOnly,
    /// A frame is larger than `frame_bytes_max`. It was not stored; the message continues.
    #[error("frame of {len} bytes exceeds frame_bytes_max {max}")]
    FrameTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Sender or codec metadata is larger than its limit. The message was not started.
    #[error("message header field {field} is {len} bytes, the limit is {max}")]
    HeaderTooLarge {
        /// `sender` or `codec`.
        field: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `open_messages_max` messages are open. The message was not started; end others first
    /// or tell the talker to retry.
    #[error("{max} messages are open, the limit")]
    TooManyOpenMessages {
        /// The limit.
        max: usize,
    },
    /// Records waiting for commit reached `pending_bytes_max` (the disk is slow or failing).
    /// The frame or record was not stored; the message is still open. Report overload.
    #[error("{pending} bytes wait for commit, the limit is {max}")]
    CommitBacklogFull {
        /// Bytes pending.
        pending: usize,
        /// The limit.
        max: usize,
    },
    /// A message with this id was started before. Nothing changed.
    #[error("message {0} already exists")]
    MessageExists(MsgId),
    /// The message is not open for appends (never started, already ended, or cut by a
    /// restart). Nothing changed.
    #[error("message {0} is not open")]
    MessageNotOpen(MsgId),
    /// The store has no such message (never stored, or deleted by retention).
    #[error("message {0} is not in the store")]
    MessageUnknown(MsgId),
    /// A frame skipped sequence numbers. It was not stored; send the missing frames first.
    #[error("message {msg}: frame {got} arrived, {expected} was expected")]
    SequenceGap {
        /// The message.
        msg: MsgId,
        /// The next sequence number the store needs.
        expected: u32,
        /// What arrived.
        got: u32,
    },
    /// A stored record failed its checksum on read (disk corruption after it was written).
    /// Nothing from it was returned; the message cannot be replayed past this point.
    #[error("record at segment {segment} offset {offset} failed its checksum")]
    RecordCorrupt {
        /// The segment.
        segment: u32,
        /// The record's file offset.
        offset: u64,
    },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Classifies a failed commit.
    pub(crate) fn commit(source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Self::DiskFull(source)
        } else {
            Self::CommitFailed(source)
        }
    }
}
