//! The I/O executor of a shard's commits, for use inside a monoio runtime.
//!
//! * [`IoMode::Ring`] (io_uring): each commit is one `O_DSYNC` write through the ring (data
//!   and sync in one op); renaming a spare into place and the directory fsync of a segment's
//!   first commit go through the ring too. The shard thread never blocks on the disk.
//! * [`IoMode::SyncThread`] (the epoll fallback, where monoio file ops are plain blocking
//!   syscalls): one sync thread per shard does the write and the fdatasync; it hands the
//!   result back through a channel and wakes the shard through a socket pair that the shard
//!   awaits like any other socket. Live relaying goes on meanwhile.
//!
//! ```text
//!  shard thread                                 sync thread (SyncThread mode only)
//!  store.poll_commit(now) ─► CommitBatch ─► Committer::commit ──job──► pwrite + fdatasync
//!  store.commit_completed(done) ◄─ CommitDone ◄─────────── wake byte + result ◄──┘
//! ```
//!
//! Both modes also run a housekeeping thread (`housekeeping.rs`) for the disk work that is
//! not part of a commit's durability: it prepares the next segment file ahead of need (zeroed
//! and synced, so commits overwrite allocated blocks), cuts sealed segments to their data and
//! writes their hint files, and removes the files retention dropped.
//!
//! The shard's runtime must park now and then (wait on a timer or a socket) for the commit to
//! finish: monoio reaps io_uring completions and fires timers when it parks, so a task that
//! only ever yields starves the commit (measured in `perf/src/bin/store-bench.rs`).
//!
//! What still blocks the shard thread in ring mode after `Store::open`, and why:
//! * replay's `pread` (`replay.rs`): recent data comes from the page cache in about a
//!   microsecond, less than a ring round trip;
//! * creating a segment file when the store rolls and no spare is ready (the housekeeping
//!   thread is late or failing; in the measured runs it never was);
//! * the fallback when the housekeeping queue is full: the batch writes the sealed segment's
//!   hint through the ring, but cuts the segment with a blocking `ftruncate` (monoio 0.2.4
//!   has no ftruncate op);
//! * whatever the caller runs there itself: `Store::preallocate_open_segment`,
//!   `RetentionPlan::remove_files` (use [`Committer::remove_files_later`]).
//!
//! Do not drop a `commit` future before it completes: the batch's outcome would be lost and
//! the store would keep waiting for it.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use monoio::io::AsyncReadRent;

use crate::commit::{CommitBatch, CommitDone, HintWrite};
use crate::housekeeping::Housekeeper;
use crate::retention::RetentionPlan;

/// How a shard's commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring file ops through the shard's own ring.
    Ring,
    /// A per-shard thread doing blocking writes and syncs.
    SyncThread,
}

impl IoMode {
    /// `Ring` when monoio would pick io_uring (it honours `MONOIO_FORCE_LEGACY_DRIVER`),
    /// else `SyncThread`. A runtime built explicitly with the legacy driver must pass
    /// `SyncThread` itself.
    pub fn detect() -> Self {
        if monoio::utils::detect_uring() {
            Self::Ring
        } else {
            Self::SyncThread
        }
    }
}

/// Runs one shard's commits; see the module docs.
#[derive(Debug)]
pub struct Committer {
    inner: Inner,
    /// Prepares spare segments and removes retention's files, off the shard thread.
    house: Housekeeper,
}

#[derive(Debug)]
enum Inner {
    Ring {
        files: RingFiles,
    },
    Thread {
        jobs: Option<SyncSender<CommitBatch>>,
        done: Receiver<CommitDone>,
        wake: monoio::net::UnixStream,
        wake_buf: Option<Vec<u8>>,
        thread: Option<JoinHandle<()>>,
    },
}

impl Committer {
    /// A committer for the current monoio runtime. In `SyncThread` mode it starts the sync
    /// thread and must be called on the shard's runtime thread.
    pub fn new(mode: IoMode) -> io::Result<Self> {
        let inner = match mode {
            IoMode::Ring => Inner::Ring {
                files: RingFiles::default(),
            },
            IoMode::SyncThread => {
                let (shard_end, thread_end) = StdUnixStream::pair()?;
                shard_end.set_nonblocking(true)?;
                let wake = monoio::net::UnixStream::from_std(shard_end)?;
                // One job at a time: the store never has two batches in flight.
                let (jobs_tx, jobs_rx) = mpsc::sync_channel::<CommitBatch>(1);
                let (done_tx, done_rx) = mpsc::sync_channel::<CommitDone>(1);
                let thread = std::thread::Builder::new()
                    .name("hark-store-sync".into())
                    .spawn(move || sync_thread(jobs_rx, done_tx, thread_end))?;
                Inner::Thread {
                    jobs: Some(jobs_tx),
                    done: done_rx,
                    wake,
                    wake_buf: Some(Vec::with_capacity(8)),
                    thread: Some(thread),
                }
            }
        };
        Ok(Self {
            inner,
            house: Housekeeper::start()?,
        })
    }

    /// Which mode this committer runs in.
    pub fn mode(&self) -> IoMode {
        match self.inner {
            Inner::Ring { .. } => IoMode::Ring,
            Inner::Thread { .. } => IoMode::SyncThread,
        }
    }

    /// Writes and syncs `batch`; the result goes to `Store::commit_completed`. When the store
    /// asks for a spare segment, the housekeeping thread starts preparing it; a prepared one
    /// travels back to the store with a later result.
    ///
    /// A batch that seals a segment carries the sealed segment's hint: it goes to the
    /// housekeeping thread (the sealed segment is complete and never written again), so
    /// neither the commit nor the shard thread waits for it.
    pub async fn commit(&mut self, mut batch: CommitBatch) -> CommitDone {
        self.house.tend(batch.spare_wanted.take());
        if let Some(hint) = batch.hint.take() {
            // Queue full (only when segments roll faster than the thread writes their hints):
            // the batch carries the hint and writes it after its sync, as a fallback.
            batch.hint = self.house.write_hint(hint).err();
        }
        let done = self.commit_batch(batch).await;
        match self.house.take_spare() {
            Some(spare) => done.with_spare(spare),
            None => done,
        }
    }

    /// Removes the files of a retention plan on the housekeeping thread (unlinks block).
    /// Hands the plan back when the housekeeping queue ([`crate::housekeeping::HOUSEKEEPING_QUEUE_MAX`]) is full
    /// or its thread is gone: retry later, or call [`RetentionPlan::remove_files`].
    pub fn remove_files_later(&mut self, plan: RetentionPlan) -> Result<(), RetentionPlan> {
        self.house.remove_files(plan)
    }

    /// The latest error of the housekeeping thread (a spare segment that could not be
    /// prepared, a hint file that could not be written, a file that could not be removed),
    /// once. Harmless to the data: without a spare the store creates segment files itself;
    /// a missing hint costs a rescan of its segment on the next open; a file left behind is
    /// removed again by retention after the next open.
    pub fn take_housekeeping_error(&mut self) -> Option<io::Error> {
        self.house.take_error()
    }

    async fn commit_batch(&mut self, batch: CommitBatch) -> CommitDone {
        match &mut self.inner {
            Inner::Ring { files } => commit_ring(files, batch).await,
            Inner::Thread {
                jobs,
                done,
                wake,
                wake_buf,
                ..
            } => {
                let Some(sender) = jobs.as_ref() else {
                    return batch.fail(io::Error::other("commit sync thread is stopped"));
                };
                if let Err(mpsc::SendError(batch)) = sender.send(batch) {
                    return batch.fail(io::Error::other("commit sync thread is gone"));
                }
                // Each finished job is followed by exactly one wake byte, so this loop runs at
                // most twice per commit unless the socket itself fails.
                loop {
                    match done.try_recv() {
                        Ok(result) => return result,
                        Err(TryRecvError::Disconnected) => abort_on_lost_batch(),
                        Err(TryRecvError::Empty) => {}
                    }
                    let buf = wake_buf.take().unwrap_or_default();
                    let (result, mut buf) = wake.read(buf).await;
                    buf.clear();
                    *wake_buf = Some(buf);
                    match result {
                        Ok(0) => abort_on_lost_batch(),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            // The wake socket failed: wait for the result the slow way (blocks
                            // this thread for at most one write and sync). Correct, not fast.
                            return done.recv().unwrap_or_else(|_| abort_on_lost_batch());
                        }
                    }
                }
            }
        }
    }
}

/// The sync thread died while holding a batch (only a panic in std's file I/O could do that):
/// the store can no longer learn that batch's outcome, and acknowledging or retrying it blindly
/// could break the durability promise. Stop the process; recovery on restart is exactly what
/// the store is built for.
fn abort_on_lost_batch() -> ! {
    std::process::abort()
}

impl Drop for Committer {
    fn drop(&mut self) {
        if let Inner::Thread { jobs, thread, .. } = &mut self.inner {
            jobs.take();
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn sync_thread(jobs: Receiver<CommitBatch>, done: SyncSender<CommitDone>, mut wake: StdUnixStream) {
    for batch in jobs {
        if done.send(batch.write_blocking()).is_err() {
            return;
        }
        if wake.write_all(&[1]).is_err() {
            return;
        }
    }
}

/// Ring mode's open files: the active segment's, opened `O_DSYNC` (see [`commit_ring`]) and
/// kept across its commits, and the store directory's, for the first commit of each segment.
#[derive(Debug, Default)]
struct RingFiles {
    segment: Option<(u32, monoio::fs::File)>,
    dir: Option<(PathBuf, monoio::fs::File)>,
}

impl RingFiles {
    /// Opens `batch`'s segment file through the ring on the first commit of a segment, after
    /// renaming its spare into place (also through the ring).
    async fn open_segment(&mut self, batch: &CommitBatch) -> io::Result<()> {
        if self
            .segment
            .as_ref()
            .is_some_and(|(seg, _)| *seg == batch.segment)
        {
            return Ok(());
        }
        self.segment = None;
        if let Some(from) = &batch.adopt_spare {
            match monoio::fs::rename(from, &batch.path).await {
                // An earlier attempt of this commit renamed it: the open below finds it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        let file = monoio::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .open(&batch.path)
            .await?;
        self.segment = Some((batch.segment, file));
        Ok(())
    }

    /// Opens the store directory through the ring, once.
    async fn open_dir(&mut self, dir: &Path) -> io::Result<()> {
        if self.dir.as_ref().is_some_and(|(path, _)| path == dir) {
            return Ok(());
        }
        self.dir = None;
        let file = monoio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .await?;
        self.dir = Some((dir.to_path_buf(), file));
        Ok(())
    }
}

/// One commit through the ring: a single `O_DSYNC` write, so the data and its sync are one
/// op (one trip through the kernel's io-wq worker and one wake-up of the shard) instead of a
/// write and an `fdatasync` (two of each): fdatasync always runs on an io-wq worker, and on
/// this project's ext4 disk the buffered write did too; each hand-over and wake-up costs
/// scheduling latency on a busy machine (measured in docs/benchmarks.md). The first commit of a segment also fsyncs
/// the directory, concurrently with the write (the rename it makes durable is done by then).
async fn commit_ring(files: &mut RingFiles, mut batch: CommitBatch) -> CommitDone {
    if let Err(e) = files.open_segment(&batch).await {
        return batch.fail(e);
    }
    if let Some(dir) = &batch.sync_dir
        && let Err(e) = files.open_dir(dir).await
    {
        return batch.fail(e);
    }
    let Some((_, file)) = &files.segment else {
        return batch.fail(io::Error::other("segment file not open"));
    };
    let buf = std::mem::take(&mut batch.buf);
    let write = file.write_all_at(buf, batch.offset);
    let sync_dir = async {
        match (&batch.sync_dir, &files.dir) {
            (None, _) => Ok(()),
            (Some(_), Some((_, dir))) => dir.sync_all().await,
            (Some(_), None) => Err(io::Error::other("directory not open")),
        }
    };
    let ((written, buf), synced) = monoio::join!(write, sync_dir);
    batch.buf = buf;
    let result = written.and(synced);
    let hint_result = match (&result, batch.hint.as_ref()) {
        (Ok(()), Some(hint)) => Some(write_hint_ring(hint).await),
        _ => None,
    };
    batch.done(result, hint_result)
}

/// The fallback when the housekeeping queue is full: the hint written through the ring. The
/// cut of the sealed segment (`ftruncate`, no ring op in monoio) blocks briefly; only on
/// this path.
async fn write_hint_ring(hint: &HintWrite) -> io::Result<()> {
    hint.trim_segment_blocking()?;
    let bytes = hint.hint.encode().map_err(io::Error::other)?;
    let tmp = hint.path.with_extension("hint.tmp");
    let file = monoio::fs::File::create(&tmp).await?;
    let (written, _) = file.write_all_at(bytes, 0).await;
    written?;
    file.close().await?;
    monoio::fs::rename(&tmp, &hint.path).await
}
