//! The housekeeping thread of a shard's I/O layer: the disk work that must not run on the
//! shard thread and is not part of a commit's durability. It prepares spare segments (a whole
//! segment of zero writes plus an fsync), cuts sealed segments to their data and writes their
//! hint files (encoding a hint takes milliseconds, writing it several MiB), and removes the
//! files of segments retention dropped (unlinks). One per `Committer`; the shard only ever
//! does non-blocking channel operations with it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;

use crate::commit::HintWrite;
use crate::retention::RetentionPlan;
use crate::spare::{SpareRequest, SpareSegment};

/// Chores that may wait for the housekeeping thread; beyond it, a retention plan is handed
/// back to the caller.
pub const HOUSEKEEPING_QUEUE_MAX: usize = 4;
/// After a spare segment could not be prepared (e.g. the disk is full), this many spare
/// requests are ignored before trying again, so a failing disk is not hammered with a whole
/// segment of writes per commit. The store creates segment files itself meanwhile.
pub const SPARE_RETRY_AFTER_REQUESTS: u32 = 1000;

enum Chore {
    Spare(SpareRequest),
    Hint(HintWrite),
    Remove(Vec<PathBuf>),
}

enum Outcome {
    Spare(io::Result<SpareSegment>),
    /// A hint written, or a file removed.
    Done(io::Result<()>),
}

#[derive(Debug)]
pub(crate) struct Housekeeper {
    chores: Option<SyncSender<Chore>>,
    outcomes: Receiver<Outcome>,
    spare_in_progress: bool,
    ready: Option<SpareSegment>,
    /// Spare requests still to skip after a failure.
    spare_backoff: u32,
    error: Option<io::Error>,
    /// Set on drop: a spare preparation in progress gives up at its next chunk.
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Chore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spare(r) => f.debug_tuple("Spare").field(r).finish(),
            Self::Hint(h) => f.debug_tuple("Hint").field(&h.segment()).finish(),
            Self::Remove(p) => f.debug_tuple("Remove").field(p).finish(),
        }
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spare(r) => f.debug_tuple("Spare").field(&r.is_ok()).finish(),
            Self::Done(r) => f.debug_tuple("Done").field(&r.is_ok()).finish(),
        }
    }
}

impl Housekeeper {
    pub(crate) fn start() -> io::Result<Self> {
        let (chores_tx, chores_rx) = mpsc::sync_channel::<Chore>(HOUSEKEEPING_QUEUE_MAX);
        // Every chore sends one outcome; the shard collects them before it queues a chore, so
        // the thread rarely waits on a full outcome channel, and only until the next commit.
        let (outcomes_tx, outcomes_rx) = mpsc::sync_channel::<Outcome>(HOUSEKEEPING_QUEUE_MAX + 1);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hark-store-house".into())
            .spawn(move || housekeeping_thread(chores_rx, outcomes_tx, &thread_stop))?;
        Ok(Self {
            chores: Some(chores_tx),
            outcomes: outcomes_rx,
            spare_in_progress: false,
            ready: None,
            spare_backoff: 0,
            error: None,
            stop,
            thread: Some(thread),
        })
    }

    /// Collects finished chores, then starts preparing the spare `wanted` names if none is
    /// ready or in progress. Never blocks.
    pub(crate) fn tend(&mut self, wanted: Option<SpareRequest>) {
        self.collect();
        let Some(request) = wanted else {
            return;
        };
        if self.spare_in_progress {
            return;
        }
        // Any spare serves any segment (see `Store::take_spare`): one ready is enough.
        if self.ready.is_some() {
            return;
        }
        if self.spare_backoff > 0 {
            self.spare_backoff -= 1;
            return;
        }
        if self.send(Chore::Spare(request)).is_ok() {
            self.spare_in_progress = true;
        }
    }

    /// A prepared spare, if one is ready.
    pub(crate) fn take_spare(&mut self) -> Option<SpareSegment> {
        self.collect();
        self.ready.take()
    }

    /// Queues the cut of a sealed segment and the write of its hint file; hands the hint back
    /// when the queue is full or the thread is gone (the caller writes it itself).
    pub(crate) fn write_hint(&mut self, hint: HintWrite) -> Result<(), HintWrite> {
        self.collect();
        match self.send(Chore::Hint(hint)) {
            Ok(()) => Ok(()),
            Err(Chore::Hint(hint)) => Err(hint),
            // `send` hands back the very chore it was given, so this arm never runs.
            Err(_) => Ok(()),
        }
    }

    /// Queues the removal of a retention plan's files; hands the plan back when the queue is
    /// full or the thread is gone.
    pub(crate) fn remove_files(&mut self, plan: RetentionPlan) -> Result<(), RetentionPlan> {
        self.collect();
        let RetentionPlan { files, .. } = &plan;
        match self.send(Chore::Remove(files.clone())) {
            Ok(()) => Ok(()),
            Err(_) => Err(plan),
        }
    }

    pub(crate) fn take_error(&mut self) -> Option<io::Error> {
        self.collect();
        self.error.take()
    }

    fn send(&mut self, chore: Chore) -> Result<(), Chore> {
        let Some(chores) = self.chores.as_ref() else {
            return Err(chore);
        };
        match chores.try_send(chore) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(chore)) => Err(chore),
            Err(TrySendError::Disconnected(chore)) => {
                self.chores = None;
                Err(chore)
            }
        }
    }

    fn collect(&mut self) {
        loop {
            match self.outcomes.try_recv() {
                Ok(outcome) => self.handle(outcome),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.spare_in_progress = false;
                    self.chores = None;
                    return;
                }
            }
        }
    }

    fn handle(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Spare(Ok(spare)) => {
                self.spare_in_progress = false;
                self.ready = Some(spare);
            }
            Outcome::Spare(Err(e)) => {
                self.spare_in_progress = false;
                self.spare_backoff = SPARE_RETRY_AFTER_REQUESTS;
                self.error = Some(e);
            }
            Outcome::Done(result) => {
                if let Err(e) = result {
                    self.error = Some(e);
                }
            }
        }
    }
}

impl Drop for Housekeeper {
    /// Stops a spare preparation in progress (its file is removed) and waits for the thread,
    /// which finishes queued hint writes and removals first, so no file is half written after
    /// the committer is gone.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Nobody reads outcomes from here on: hang up so the thread never waits to send one.
        let (_, hung_up) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.outcomes, hung_up));
        self.chores.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn housekeeping_thread(chores: Receiver<Chore>, outcomes: SyncSender<Outcome>, stop: &AtomicBool) {
    for chore in chores {
        let outcome = match chore {
            Chore::Spare(request) => Outcome::Spare(SpareSegment::prepare_unless(&request, stop)),
            Chore::Hint(hint) => Outcome::Done(hint.write_blocking()),
            Chore::Remove(files) => Outcome::Done(remove_all(&files)),
        };
        // Outcomes hung up (the committer is being dropped): the queued chores still run.
        let _ = outcomes.send(outcome);
    }
}

pub(crate) fn remove_all(files: &[PathBuf]) -> io::Result<()> {
    for path in files {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Housekeeper {
        /// Waits for one chore's outcome (tests only: deterministic hand-over).
        fn wait_outcome(&mut self) {
            if let Ok(outcome) = self.outcomes.recv() {
                self.handle(outcome);
            }
        }
    }

    fn plan(files: Vec<PathBuf>) -> RetentionPlan {
        RetentionPlan {
            files,
            ..RetentionPlan::default()
        }
    }

    #[test]
    fn prepares_one_spare_at_a_time_and_removes_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut house = Housekeeper::start().unwrap();
        let request = SpareRequest {
            dir: dir.path().to_path_buf(),
            segment: 2,
            bytes: 64 * 1024,
        };
        house.tend(Some(request.clone()));
        assert!(house.spare_in_progress);
        // A second request while one is in progress starts nothing.
        house.tend(Some(request));
        house.wait_outcome();
        let spare = house.take_spare().expect("spare ready");
        assert_eq!(spare.segment(), 2);
        assert_eq!(std::fs::metadata(spare.path()).unwrap().len(), 64 * 1024);
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"x").unwrap();
        house.remove_files(plan(vec![victim.clone()])).unwrap();
        house.wait_outcome();
        assert!(!victim.exists());
        assert!(house.take_error().is_none());
    }

    #[test]
    fn a_failed_spare_is_reported_and_retried_only_after_the_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let mut house = Housekeeper::start().unwrap();
        let request = SpareRequest {
            dir: dir.path().join("missing"),
            segment: 2,
            bytes: 4096,
        };
        house.tend(Some(request.clone()));
        house.wait_outcome();
        assert!(house.take_error().is_some());
        for _ in 0..SPARE_RETRY_AFTER_REQUESTS {
            house.tend(Some(request.clone()));
            assert!(!house.spare_in_progress);
        }
        house.tend(Some(request));
        assert!(house.spare_in_progress, "retried after the backoff");
    }

    fn hint_for(dir: &std::path::Path, segment: u32, data_bytes: u64) -> HintWrite {
        HintWrite {
            path: dir.join(crate::segment::hint_file_name(segment)),
            hint: crate::hint::SegmentHint {
                segment,
                segment_bytes: data_bytes,
                created_us: 77,
                records: Vec::new(),
            },
            trim_segment: Some((dir.join(format!("seg-{segment}")), data_bytes)),
        }
    }

    #[test]
    fn a_hint_chore_cuts_the_sealed_segment_and_writes_the_hint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seg-5"), vec![0u8; 64 * 1024]).unwrap();
        let mut house = Housekeeper::start().unwrap();
        assert!(house.write_hint(hint_for(dir.path(), 5, 8192)).is_ok());
        house.wait_outcome();
        assert!(house.take_error().is_none());
        let segment = std::fs::metadata(dir.path().join("seg-5")).unwrap();
        assert_eq!(segment.len(), 8192, "cut to its data");
        let bytes = std::fs::read(dir.path().join(crate::segment::hint_file_name(5))).unwrap();
        let head = crate::hint::SegmentHint::visit(&bytes, |_| {}).unwrap();
        assert_eq!(head, (5, 8192, 77));
    }

    #[test]
    fn the_queue_is_bounded_and_a_plan_comes_back_when_full() {
        let (chores, _chores_rx) = mpsc::sync_channel::<Chore>(HOUSEKEEPING_QUEUE_MAX);
        let (_outcomes_tx, outcomes) = mpsc::sync_channel::<Outcome>(1);
        // No thread: nothing drains the queue.
        let mut house = Housekeeper {
            chores: Some(chores),
            outcomes,
            spare_in_progress: false,
            ready: None,
            spare_backoff: 0,
            error: None,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        for _ in 0..HOUSEKEEPING_QUEUE_MAX {
            house.remove_files(plan(vec![PathBuf::from("a")])).unwrap();
        }
        let back = house.remove_files(plan(vec![PathBuf::from("b")]));
        assert_eq!(back.unwrap_err().files, vec![PathBuf::from("b")]);
        // A hint comes back too: the committer then writes it with the batch.
        let hint = hint_for(std::path::Path::new("/nowhere"), 9, 4096);
        assert_eq!(house.write_hint(hint).unwrap_err().segment(), 9);
    }
}
