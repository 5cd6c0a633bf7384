//! The housekeeping thread of a shard's I/O layer: the disk work that must not run on the
//! shard thread and is not part of a commit. It prepares spare segments (a whole segment of
//! zero writes plus an fsync) and removes the files of segments retention dropped (unlinks).
//! One per `Committer`; the shard only ever does non-blocking channel operations with it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;

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
    Remove(Vec<PathBuf>),
}

enum Outcome {
    Spare(io::Result<SpareSegment>),
    Removed(io::Result<()>),
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
            Self::Remove(p) => f.debug_tuple("Remove").field(p).finish(),
        }
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spare(r) => f.debug_tuple("Spare").field(&r.is_ok()).finish(),
            Self::Removed(r) => f.debug_tuple("Removed").field(&r.is_ok()).finish(),
        }
    }
}

impl Housekeeper {
    pub(crate) fn start() -> io::Result<Self> {
        let (chores_tx, chores_rx) = mpsc::sync_channel::<Chore>(HOUSEKEEPING_QUEUE_MAX);
        // Every chore sends one outcome; with at most QUEUE_MAX queued and one running, the
        // thread never blocks on a full outcome channel.
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
        if self
            .ready
            .as_ref()
            .is_some_and(|s| s.segment == request.segment)
        {
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
            Outcome::Removed(result) => {
                if let Err(e) = result {
                    self.error = Some(e);
                }
            }
        }
    }
}

impl Drop for Housekeeper {
    /// Stops a spare preparation in progress (its file is removed) and waits for the thread,
    /// which finishes queued removals first, so no file is half written after the committer
    /// is gone.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
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
            Chore::Remove(files) => Outcome::Removed(remove_all(&files)),
        };
        if outcomes.send(outcome).is_err() {
            return;
        }
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
    }
}
