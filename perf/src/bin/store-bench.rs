//! store-bench: benchmarks of hark-storage, one shard on one thread, with the real committer.
//!
//! Scenarios (each prints its exact parameters and the median of `--runs` runs):
//! * `commit-latency`: N concurrent messages of fixed-size frames at a voice cadence, group
//!   commit every `commit_interval_ms`; commit latency percentiles (write + fdatasync, as the
//!   shard sees it) and the shard thread's CPU time per appended frame.
//! * `append-peak`: append as fast as one core can, with group commit running; frames/s.
//! * `replay`: replay of one message (default 60 s of 20 ms frames) from the page cache; frames/s.
//! * `recovery`: open a store whose open segment holds `--mb` MiB; scan MB/s.
//! * `disk-floor`: no store at all: one thread overwriting `--bytes` of an already written
//!   file plus `fdatasync`, every `--interval-ms`; the latency floor of the disk that the
//!   commit latency is judged against (run it next to `commit-latency`).
//!
//! Nothing here asserts a timing; the integrator copies the output into docs/benchmarks.md.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use hark_core::{ConvId, MsgId, MsgIdGenerator, ShardId};
use hark_storage::{
    Committer, EndState, FrameBatch, IoMode, ReplayStatus, Store, StoreConfig, StoreError,
};
use hdrhistogram::Histogram;

const SHARD: ShardId = ShardId::new(1, 0);

#[derive(Parser, Debug)]
#[command(about = "hark-storage benchmarks (one shard, one thread)")]
struct Cli {
    /// Parent directory for the temporary stores (on the disk you want to measure).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// Runs per scenario; the median is reported.
    #[arg(long, global = true, default_value_t = 3)]
    runs: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug, Clone)]
enum Scenario {
    /// Voice-cadence load: commit latency and CPU per frame.
    CommitLatency {
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        #[arg(long, default_value_t = 100)]
        frame_bytes: usize,
        #[arg(long, default_value_t = 50)]
        frames_per_second: u64,
        #[arg(long, default_value_t = 5)]
        commit_interval_ms: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Peak append rate on one core with group commit.
    AppendPeak {
        #[arg(long, default_value_t = 1_000)]
        messages: usize,
        #[arg(long, default_value_t = 100)]
        frame_bytes: usize,
        #[arg(long, default_value_t = 5_000_000)]
        frames: u64,
    },
    /// Replay of one message from the page cache.
    Replay {
        #[arg(long, default_value_t = 3_000)]
        frames: u32,
        #[arg(long, default_value_t = 100)]
        frame_bytes: usize,
        #[arg(long, default_value_t = 300)]
        repeats: u32,
    },
    /// Recovery scan speed when opening a store.
    Recovery {
        #[arg(long, default_value_t = 256)]
        mb: u64,
    },
    /// The disk's floor: pwrite over written blocks + fdatasync, nothing else.
    DiskFloor {
        /// Bytes per write (default: about what one commit writes at the default
        /// commit-latency load, 10,000 messages × 50 frames/s of 100 B every 5 ms).
        #[arg(long, default_value_t = 256 * 1024)]
        bytes: usize,
        #[arg(long, default_value_t = 5)]
        interval_ms: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Every scenario with its defaults.
    All,
}

fn main() -> Result<(), StoreError> {
    let cli = Cli::parse();
    let parent = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    println!(
        "store-bench: io mode {:?} (MONOIO_FORCE_LEGACY_DRIVER={}), runs {}, dir {}",
        IoMode::detect(),
        std::env::var("MONOIO_FORCE_LEGACY_DRIVER").unwrap_or_default(),
        cli.runs,
        parent.display()
    );
    let scenarios = match cli.scenario {
        Scenario::All => vec![
            Scenario::CommitLatency {
                messages: 10_000,
                frame_bytes: 100,
                frames_per_second: 50,
                commit_interval_ms: 5,
                seconds: 10,
            },
            Scenario::AppendPeak {
                messages: 1_000,
                frame_bytes: 100,
                frames: 5_000_000,
            },
            Scenario::Replay {
                frames: 3_000,
                frame_bytes: 100,
                repeats: 300,
            },
            Scenario::Recovery { mb: 256 },
            Scenario::DiskFloor {
                bytes: 256 * 1024,
                interval_ms: 5,
                seconds: 10,
            },
        ],
        one => vec![one],
    };
    for scenario in scenarios {
        println!("\n{scenario:?}");
        match scenario {
            Scenario::CommitLatency {
                messages,
                frame_bytes,
                frames_per_second,
                commit_interval_ms,
                seconds,
            } => {
                let runs: Vec<LatencyRun> = (0..cli.runs)
                    .map(|_| {
                        commit_latency(
                            &parent,
                            messages,
                            frame_bytes,
                            frames_per_second,
                            commit_interval_ms,
                            seconds,
                        )
                    })
                    .collect::<Result<_, _>>()?;
                for (i, r) in runs.iter().enumerate() {
                    println!("  run {i}: {r:?}");
                }
                let med = |f: fn(&LatencyRun) -> f64| median(runs.iter().map(f).collect());
                println!(
                    "  median: commit latency p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us; \
                     {:.0} commits/s; shard CPU {:.0} ns per appended frame; {:.0} frames/s appended",
                    med(|r| r.p50_us),
                    med(|r| r.p99_us),
                    med(|r| r.p999_us),
                    med(|r| r.max_us),
                    med(|r| r.commits_per_s),
                    med(|r| r.cpu_ns_per_frame),
                    med(|r| r.frames_per_s),
                );
            }
            Scenario::AppendPeak {
                messages,
                frame_bytes,
                frames,
            } => {
                let rates: Vec<f64> = (0..cli.runs)
                    .map(|_| append_peak(&parent, messages, frame_bytes, frames))
                    .collect::<Result<_, _>>()?;
                println!("  runs (frames/s): {rates:.0?}");
                println!("  median: {:.0} frames/s", median(rates));
            }
            Scenario::Replay {
                frames,
                frame_bytes,
                repeats,
            } => {
                let rates: Vec<f64> = (0..cli.runs)
                    .map(|_| replay(&parent, frames, frame_bytes, repeats))
                    .collect::<Result<_, _>>()?;
                println!("  runs (frames/s): {rates:.0?}");
                println!("  median: {:.0} frames/s", median(rates));
            }
            Scenario::Recovery { mb } => {
                let rates: Vec<f64> = (0..cli.runs)
                    .map(|_| recovery(&parent, mb))
                    .collect::<Result<_, _>>()?;
                println!("  runs (MB/s): {rates:.0?}");
                println!(
                    "  median: {:.0} MB/s scanned on open (page cache warm)",
                    median(rates)
                );
            }
            Scenario::DiskFloor {
                bytes,
                interval_ms,
                seconds,
            } => {
                let runs: Vec<LatencyRun> = (0..cli.runs)
                    .map(|_| disk_floor(&parent, bytes, interval_ms, seconds))
                    .collect::<Result<_, _>>()?;
                for (i, r) in runs.iter().enumerate() {
                    println!("  run {i}: {r:?}");
                }
                let med = |f: fn(&LatencyRun) -> f64| median(runs.iter().map(f).collect());
                println!(
                    "  median: write + fdatasync latency p50 {:.0} us, p99 {:.0} us, \
                     p99.9 {:.0} us, max {:.0} us; {:.0} syncs/s",
                    med(|r| r.p50_us),
                    med(|r| r.p99_us),
                    med(|r| r.p999_us),
                    med(|r| r.max_us),
                    med(|r| r.commits_per_s),
                );
            }
            Scenario::All => {}
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_THREAD_CPUTIME_ID is valid.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn temp_store(
    parent: &Path,
    config: StoreConfig,
) -> Result<(tempfile::TempDir, Store), StoreError> {
    let dir = tempfile::Builder::new()
        .prefix("hark-store-bench")
        .tempdir_in(parent)
        .map_err(|e| StoreError::Io {
            op: "create temp dir",
            path: parent.to_path_buf(),
            source: e,
        })?;
    let (mut store, _) = Store::open(dir.path(), SHARD, config, wall_us())?;
    // As a relay does at startup: later segments come preallocated from the committer.
    if store.config().preallocate_segments {
        store.preallocate_open_segment()?;
    }
    Ok((dir, store))
}

fn runtime() -> monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
> {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("a monoio runtime (io_uring or epoll)")
}

/// Yields once to the runtime so the commit task (and the ring) make progress.
struct YieldNow(bool);
impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// How the commit task waits when there is nothing to commit: on a timer, so the runtime
/// parks, and parking is when monoio reaps ring completions and fires timers (a task that only
/// yields keeps the runtime from ever parking).
async fn idle() {
    monoio::time::sleep(Duration::from_micros(200)).await;
}

/// The commit side of a shard: polls the store, runs batches through the committer.
async fn commit_loop(
    store: Rc<RefCell<Store>>,
    stop: Rc<Cell<bool>>,
    latencies: Rc<RefCell<Histogram<u64>>>,
) {
    let mut committer = Committer::new(IoMode::detect()).expect("a committer");
    loop {
        let batch = store.borrow_mut().poll_commit(wall_us());
        match batch {
            Ok(Some(batch)) => {
                let started = Instant::now();
                let done = committer.commit(batch).await;
                let _ = latencies
                    .borrow_mut()
                    .record(started.elapsed().as_micros() as u64);
                if let Err(e) = store.borrow_mut().commit_completed(done) {
                    eprintln!("commit failed: {e}");
                }
                if let Some(e) = committer.take_housekeeping_error() {
                    eprintln!("housekeeping: {e}");
                }
            }
            Ok(None) if stop.get() && !store.borrow().commit_in_flight() => {
                if store.borrow().pending_bytes() == 0 {
                    return;
                }
                idle().await;
            }
            Ok(None) => idle().await,
            Err(e) => {
                eprintln!("poll_commit: {e}");
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

#[derive(Debug)]
struct LatencyRun {
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    commits_per_s: f64,
    cpu_ns_per_frame: f64,
    frames_per_s: f64,
}

fn commit_latency(
    parent: &Path,
    messages: usize,
    frame_bytes: usize,
    fps: u64,
    commit_interval_ms: u64,
    seconds: u64,
) -> Result<LatencyRun, StoreError> {
    let config = StoreConfig {
        commit_interval_ms,
        open_messages_max: messages.max(1),
        ..StoreConfig::default()
    };
    let (_dir, store) = temp_store(parent, config)?;
    let store = Rc::new(RefCell::new(store));
    let latencies = Rc::new(RefCell::new(Histogram::<u64>::new(3).expect("3 digits")));
    let stop = Rc::new(Cell::new(false));
    let frame = vec![0x5a_u8; frame_bytes];
    let mut ids = MsgIdGenerator::new(SHARD);
    let msgs: Vec<MsgId> = (0..messages).map(|_| ids.next(wall_us())).collect();
    for (i, m) in msgs.iter().enumerate() {
        store
            .borrow_mut()
            .start_message(*m, ConvId(i as u64 % 1000), b"bench", b"OpusHead")?;
    }
    let period_ms = (1000 / fps.max(1)).max(1);
    let mut appended = 0u64;
    let mut errors = 0u64;
    let cpu_before = thread_cpu_ns();
    let started = Instant::now();
    runtime().block_on(async {
        let committer = monoio::spawn(commit_loop(store.clone(), stop.clone(), latencies.clone()));
        let mut seqs = vec![0u32; messages];
        for tick in 0..seconds * 1000 {
            let due = started + Duration::from_millis(tick);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                monoio::time::sleep(wait).await;
            }
            // Messages are spread over the frame period: bucket tick % period sends now.
            let bucket = (tick % period_ms) as usize;
            let mut s = store.borrow_mut();
            for i in (bucket..messages).step_by(period_ms as usize) {
                match s.append(msgs[i], seqs[i], &frame) {
                    Ok(_) => {
                        seqs[i] += 1;
                        appended += 1;
                    }
                    Err(_) => errors += 1,
                }
            }
        }
        let end = wall_us();
        for m in &msgs {
            let _ = store.borrow_mut().end_message(*m, end, EndState::Complete);
        }
        stop.set(true);
        committer.await;
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_ns().saturating_sub(cpu_before);
    if errors > 0 {
        eprintln!("  {errors} appends refused (backlog)");
    }
    let h = latencies.borrow();
    Ok(LatencyRun {
        p50_us: h.value_at_quantile(0.50) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        p999_us: h.value_at_quantile(0.999) as f64,
        max_us: h.max() as f64,
        commits_per_s: h.len() as f64 / elapsed,
        cpu_ns_per_frame: cpu as f64 / appended.max(1) as f64,
        frames_per_s: appended as f64 / elapsed,
    })
}

fn append_peak(
    parent: &Path,
    messages: usize,
    frame_bytes: usize,
    frames: u64,
) -> Result<f64, StoreError> {
    let config = StoreConfig {
        open_messages_max: messages.max(1),
        pending_bytes_max: 256 * 1024 * 1024,
        segment_bytes_max: 1 << 30,
        // A 1 GiB segment of zeros would dominate this run.
        preallocate_segments: false,
        ..StoreConfig::default()
    };
    let (_dir, store) = temp_store(parent, config)?;
    let store = Rc::new(RefCell::new(store));
    let latencies = Rc::new(RefCell::new(Histogram::<u64>::new(3).expect("3 digits")));
    let stop = Rc::new(Cell::new(false));
    let frame = vec![0xa5_u8; frame_bytes];
    let mut ids = MsgIdGenerator::new(SHARD);
    let msgs: Vec<MsgId> = (0..messages).map(|_| ids.next(wall_us())).collect();
    for (i, m) in msgs.iter().enumerate() {
        store
            .borrow_mut()
            .start_message(*m, ConvId(i as u64), b"bench", b"")?;
    }
    let started = Instant::now();
    runtime().block_on(async {
        let committer = monoio::spawn(commit_loop(store.clone(), stop.clone(), latencies.clone()));
        // The append loop runs as a spawned task: monoio re-polls a yielding block_on future
        // at once, so only spawned tasks really take turns.
        let appender = monoio::spawn(append_flat_out(store.clone(), msgs, frame, frames));
        appender.await;
        stop.set(true);
        committer.await;
    });
    // Every frame durable: the rate includes the final commit.
    Ok(frames as f64 / started.elapsed().as_secs_f64())
}

/// Appends `frames` frames round-robin as fast as possible, yielding every 4096 so the commit
/// task runs, then ends every message.
async fn append_flat_out(store: Rc<RefCell<Store>>, msgs: Vec<MsgId>, frame: Vec<u8>, frames: u64) {
    let mut seqs = vec![0u32; msgs.len()];
    let mut n = 0u64;
    let mut backlog = false;
    while n < frames {
        {
            let mut s = store.borrow_mut();
            for _ in 0..4096 {
                let i = (n % msgs.len() as u64) as usize;
                match s.append(msgs[i], seqs[i], &frame) {
                    Ok(_) => {
                        seqs[i] += 1;
                        n += 1;
                    }
                    Err(StoreError::CommitBacklogFull { .. }) => {
                        backlog = true;
                        break;
                    }
                    Err(e) => {
                        eprintln!("append refused: {e}");
                        n = frames;
                        break;
                    }
                }
            }
        }
        if std::mem::take(&mut backlog) {
            // Let the runtime park so the commit completes (monoio reaps completions on park).
            monoio::time::sleep(Duration::from_micros(50)).await;
        } else {
            YieldNow(false).await;
        }
    }
    let end = wall_us();
    for m in &msgs {
        let _ = store.borrow_mut().end_message(*m, end, EndState::Complete);
    }
}

fn replay(parent: &Path, frames: u32, frame_bytes: usize, repeats: u32) -> Result<f64, StoreError> {
    let (_dir, mut store) = temp_store(parent, StoreConfig::default())?;
    let msg = MsgIdGenerator::new(SHARD).next(wall_us());
    store.start_message(msg, ConvId(1), b"bench", b"OpusHead")?;
    let frame = vec![0x3c_u8; frame_bytes];
    for seq in 0..frames {
        store.append(msg, seq, &frame)?;
    }
    store.end_message(msg, wall_us(), EndState::Complete)?;
    let mut now = wall_us() + 1_000_000;
    while let Some(batch) = store.poll_commit(now)? {
        store.commit_completed(batch.write_blocking())?;
        now += 1_000_000;
    }
    let mut out = FrameBatch::new();
    let mut returned = 0u64;
    let started = Instant::now();
    for _ in 0..repeats {
        let mut cursor = store.replay_from(msg, 0)?;
        loop {
            let status = store.replay_next(&mut cursor, 4096, &mut out)?;
            returned += out.len() as u64;
            if status != ReplayStatus::More {
                break;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if returned != u64::from(frames) * u64::from(repeats) {
        eprintln!(
            "replay returned {returned} frames, expected {}",
            u64::from(frames) * u64::from(repeats)
        );
    }
    Ok(returned as f64 / elapsed)
}

fn recovery(parent: &Path, mb: u64) -> Result<f64, StoreError> {
    let config = StoreConfig {
        segment_bytes_max: 1 << 30,
        // A 1 GiB segment of zeros would dominate this run.
        preallocate_segments: false,
        open_messages_max: 1000,
        ..StoreConfig::default()
    };
    let (dir, mut store) = temp_store(parent, config.clone())?;
    let mut ids = MsgIdGenerator::new(SHARD);
    let msgs: Vec<MsgId> = (0..1000).map(|_| ids.next(wall_us())).collect();
    for m in &msgs {
        store.start_message(*m, ConvId(7), b"bench", b"")?;
    }
    let frame = [0x11_u8; 100];
    let mut seq = 0;
    let mut now = wall_us();
    while store.stored_bytes() < mb * 1024 * 1024 {
        for m in &msgs {
            store.append(*m, seq, &frame)?;
        }
        seq += 1;
        if seq % 50 == 0 {
            now += 1_000_000;
            while let Some(batch) = store.poll_commit(now)? {
                store.commit_completed(batch.write_blocking())?;
            }
        }
    }
    drop(store);
    let started = Instant::now();
    let (_store, report) = Store::open(dir.path(), SHARD, config, wall_us())?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(report.bytes_scanned as f64 / (1024.0 * 1024.0) / elapsed)
}

/// The disk's floor for commits: overwrites of `bytes` inside a file written and synced
/// beforehand (as a preallocated segment is), each followed by `fdatasync`, on a fixed cadence
/// and on the calling thread, with no store, runtime or second thread involved.
fn disk_floor(
    parent: &Path,
    bytes: usize,
    interval_ms: u64,
    seconds: u64,
) -> Result<LatencyRun, StoreError> {
    use std::os::unix::fs::FileExt;
    let io_err = |op: &'static str| {
        move |e| StoreError::Io {
            op,
            path: parent.to_path_buf(),
            source: e,
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("hark-disk-floor")
        .tempdir_in(parent)
        .map_err(io_err("create temp dir"))?;
    let file =
        std::fs::File::create_new(dir.path().join("floor")).map_err(io_err("create floor file"))?;
    let writes = (seconds * 1000 / interval_ms.max(1)).max(1);
    let block = vec![0u8; bytes.max(1)];
    for i in 0..writes {
        file.write_all_at(&block, i * block.len() as u64)
            .map_err(io_err("write floor file"))?;
    }
    file.sync_all().map_err(io_err("sync floor file"))?;
    let data = vec![0x5a_u8; block.len()];
    let mut latencies = Histogram::<u64>::new(3).expect("3 digits");
    let started = Instant::now();
    for i in 0..writes {
        let due = started + Duration::from_millis(i * interval_ms);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        file.write_all_at(&data, i * data.len() as u64)
            .and_then(|()| file.sync_data())
            .map_err(io_err("write and sync"))?;
        let _ = latencies.record(t.elapsed().as_micros() as u64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(LatencyRun {
        p50_us: latencies.value_at_quantile(0.50) as f64,
        p99_us: latencies.value_at_quantile(0.99) as f64,
        p999_us: latencies.value_at_quantile(0.999) as f64,
        max_us: latencies.max() as f64,
        commits_per_s: latencies.len() as f64 / elapsed,
        cpu_ns_per_frame: 0.0,
        frames_per_s: 0.0,
    })
}
