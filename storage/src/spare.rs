//! Spare segments: the next segment file, created at its full size, written with zeros and
//! synced before it is needed, so commits overwrite allocated blocks instead of growing the
//! file. Growing a file makes every fdatasync also flush the file size and new extents (on this
//! project's ext4 VM disk a growing synced write costs ~3.5 ms against ~1 ms for an overwrite).
//! `fallocate` alone is not enough: it leaves unwritten extents whose conversion on first write
//! costs a journal commit (measured: slower than plain appends).
//!
//! A spare lives under a temporary name (`seg-<8 hex>.spare`) until the store rolls into it;
//! the first commit of the new segment renames it into place and syncs the directory. A spare
//! left behind by a crash is removed when the store opens.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Zeros are written in chunks of this many bytes (a bound on the zero buffer), each pushed
/// to the disk before the next one is written.
pub const ZERO_CHUNK_BYTES: usize = 256 * 1024;

/// File name of the spare that will become segment `segment`.
pub fn spare_file_name(segment: u32) -> String {
    format!("seg-{segment:08x}.spare")
}

/// Whether `name` is a spare segment's file name.
pub fn is_spare_file_name(name: &str) -> bool {
    name.strip_prefix("seg-")
        .and_then(|rest| rest.strip_suffix(".spare"))
        .is_some_and(|hex| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What the store asks the I/O layer to prepare: the spare for segment `segment`, `bytes` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpareRequest {
    /// The store's directory.
    pub dir: PathBuf,
    /// The segment number the spare is for (the active one plus one).
    pub segment: u32,
    /// Its size: the store's `segment_bytes_max`, or 0 without preallocation (an empty file
    /// that grows with its commits).
    pub bytes: u64,
}

/// A zeroed, synced segment file waiting under its temporary name.
#[derive(Debug)]
pub struct SpareSegment {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) segment: u32,
}

impl SpareSegment {
    /// Creates the spare `request` asks for: writes `bytes` of zeros and fsyncs it. Blocking
    /// and disk-heavy (a whole segment of writes): run it on a helper thread, never on a shard
    /// thread. An existing file of the same name is replaced.
    pub fn prepare(request: &SpareRequest) -> io::Result<Self> {
        Self::prepare_unless(request, &AtomicBool::new(false))
    }

    /// [`SpareSegment::prepare`], given up (file removed, `Interrupted` returned) as soon as
    /// `stop` is set: a committer being dropped does not wait for a whole segment of writes.
    pub(crate) fn prepare_unless(request: &SpareRequest, stop: &AtomicBool) -> io::Result<Self> {
        let path = request.dir.join(spare_file_name(request.segment));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        if let Err(e) = write_zeros(&file, 0, request.bytes, stop).and_then(|()| file.sync_all()) {
            // Best effort: a leftover spare is removed on the next open anyway.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Self {
            file,
            path,
            segment: request.segment,
        })
    }

    /// The segment number it is for.
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// Its temporary path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes zeros over `from..to` of `file` (nothing when `to <= from`), without syncing.
/// Stops with `Interrupted` when `stop` is set.
pub(crate) fn write_zeros(file: &File, from: u64, to: u64, stop: &AtomicBool) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut offset = from;
    // Each iteration writes at least one byte, so the loop ends within `to - from` iterations.
    while offset < to {
        if stop.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = (to - offset).min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..n], offset)?;
        write_out(file, offset, n as u64)?;
        offset += n as u64;
    }
    Ok(())
}

/// Writes `bytes` at the start of `file` in chunks of [`ZERO_CHUNK_BYTES`], each pushed out
/// to the disk before the next (see `write_out`); not synced.
pub(crate) fn write_out_in_chunks(file: &File, bytes: &[u8]) -> io::Result<()> {
    let mut offset = 0u64;
    for chunk in bytes.chunks(ZERO_CHUNK_BYTES) {
        file.write_all_at(chunk, offset)?;
        write_out(file, offset, chunk.len() as u64)?;
        offset += chunk.len() as u64;
    }
    Ok(())
}

/// Writes `len` bytes at `offset` of `file` out to the disk and waits for them (no metadata,
/// no flush of the device cache: the final fsync does that). Keeps the spare's dirty pages to
/// one chunk: on ext4 (data=ordered) a journal commit, which a commit's fdatasync may force,
/// first writes out every dirty page with newly allocated blocks, so a whole segment of dirty
/// zeros would stall the commits behind it.
fn write_out(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range only reads its integer arguments; the fd is open for the
    // duration of the call because `file` is borrowed.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Renames a spare into place as `to`. Idempotent: when `from` is gone and `to` exists (an
/// earlier attempt renamed it, then its commit failed), it is done.
pub(crate) fn adopt_spare(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && to.exists() => Ok(()),
        other => other,
    }
}

/// Removes spares left in `dir` by a process that stopped before using them.
pub(crate) fn remove_stale_spares(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(is_spare_file_name) {
            match std::fs::remove_file(entry.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_names_are_recognised_and_never_taken_for_segments() {
        assert_eq!(spare_file_name(0x2a), "seg-0000002a.spare");
        assert!(is_spare_file_name("seg-0000002a.spare"));
        assert!(!is_spare_file_name("seg-2a.spare"));
        assert!(!is_spare_file_name("seg-0000002a.hark"));
        assert_eq!(
            crate::segment::parse_segment_file_name("seg-0000002a.spare"),
            None
        );
    }

    #[test]
    fn a_spare_is_full_size_and_zero_and_adoption_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let request = SpareRequest {
            dir: dir.path().to_path_buf(),
            segment: 3,
            bytes: ZERO_CHUNK_BYTES as u64 + 4096,
        };
        let spare = SpareSegment::prepare(&request).unwrap();
        let bytes = std::fs::read(spare.path()).unwrap();
        assert_eq!(bytes.len() as u64, request.bytes);
        assert!(bytes.iter().all(|b| *b == 0));
        let to = dir.path().join("seg-00000003.hark");
        adopt_spare(spare.path(), &to).unwrap();
        adopt_spare(spare.path(), &to).unwrap();
        assert!(to.exists() && !spare.path().exists());
        std::fs::write(dir.path().join(spare_file_name(9)), b"left by a crash").unwrap();
        remove_stale_spares(dir.path()).unwrap();
        assert!(!dir.path().join(spare_file_name(9)).exists());
        assert!(to.exists());
    }

    #[test]
    fn a_stopped_preparation_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let request = SpareRequest {
            dir: dir.path().to_path_buf(),
            segment: 4,
            bytes: 4096,
        };
        let err = SpareSegment::prepare_unless(&request, &AtomicBool::new(true)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert!(!dir.path().join(spare_file_name(4)).exists());
    }
}
