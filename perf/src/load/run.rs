//! `hark-perf run`: the open-loop load test. Sets up every connection first (listeners
//! subscribed, talkers said hello), then starts all talkers on one shared clock, prints a
//! progress line per second, drains, and reports.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Args;
use hark_core::ConvName;
use hdrhistogram::Histogram;

use super::hark;
use super::payload::PAYLOAD_HEADER_BYTES;
use super::procstat;
use super::report::{PROGRESS_HEADER, Parameters, Report, progress_line};
use super::stats::{LoadStats, latency_histogram};
use super::wire::{Wire, mono_now_us};

/// Connections one thread sets up at once (more would overflow the relay's accept backlog).
const SETUP_IN_FLIGHT_MAX: usize = 64;
/// Time between all connections being ready and the first frame, so every thread sees the
/// start before it is due.
const START_DELAY_US: u64 = 200_000;
/// Period of a thread's supervision loop (drain deadline, progress publication).
const SUPERVISE_PERIOD: Duration = Duration::from_millis(10);
/// How long the main thread waits for the threads' setup.
const SETUP_WAIT_TOTAL: Duration = Duration::from_secs(300);
/// io_uring entries per generator thread.
const RING_ENTRIES: u32 = 4096;
/// Most conversations one run drives.
pub const CONVERSATIONS_MAX: u64 = 1_000_000;
/// Most listeners per conversation.
pub const LISTENERS_MAX: u64 = 10_000;

/// Flags of `hark-perf run` (and of each step of `sweep`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The relay's client address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub relay: SocketAddr,
    /// Run against Redis Streams instead of hark: `redis://HOST:PORT`.
    #[arg(long)]
    pub target: Option<String>,
    /// Conversations, one talker each.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=CONVERSATIONS_MAX))]
    pub conversations: u64,
    /// Listeners per conversation.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=LISTENERS_MAX))]
    pub listeners: u64,
    /// Payload bytes per frame (at least the 32-byte timing header).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(PAYLOAD_HEADER_BYTES as u64..=65_000))]
    pub frame_bytes: u64,
    /// Time between a talker's frames, in milliseconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub interval_ms: u64,
    /// Length of the sending window, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Talkers join evenly over this many seconds at the start of the window.
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// CPUs to run generator threads on (one monoio thread per CPU), like 1 or 2-3. Default:
    /// one unpinned thread.
    #[arg(long, value_parser = parse_core_list)]
    pub cores: Option<CoreList>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML page (latency percentile plot, parameters) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// The relay's process id, for its CPU time per delivery (/proc/PID/stat).
    #[arg(long)]
    pub relay_pid: Option<u32>,
    /// Frames per message: a talker ends its message and starts the next after this many.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub message_frames: u32,
    /// Conversations one listener connection subscribes to (more than 1 exercises the relay's
    /// cross-shard path).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub subs_per_connection: u64,
    /// A frame sent later than this after its intended time counts as late, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub late_bound_ms: u64,
    /// Talkers wake up to this many µs before a frame's intended send time and send it then:
    /// the runtime's timer is 1 ms-granular and would otherwise add its rounding to every
    /// latency. Latency counts from the earlier of the intended and the actual send time.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub early_release_us: u64,
    /// Exit with code 3 when the generator was late on more than this percentage of frames.
    #[arg(long, default_value_t = 0.1)]
    pub overload_max_percent: f64,
    /// How long listeners may still receive after the window ends, in milliseconds.
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub drain_ms: u64,
    /// Token for every connection (default: empty, for a relay in --dev-mode).
    #[arg(long, conflicts_with = "secret_file")]
    pub token: Option<String>,
    /// Mint a token from this secret file (the relay's `<data-dir>/secret`).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Conversation names are this prefix followed by the conversation's index.
    #[arg(long, default_value = "perf/")]
    pub conversation_prefix: String,
    /// No per-second progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// CPUs to pin generator threads to, sorted, without repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreList(pub Vec<usize>);

/// clap's parser for [`CoreList`].
fn parse_core_list(text: &str) -> Result<CoreList, String> {
    parse_cores(text).map(CoreList)
}

/// Parses a CPU list like `0-3,6`.
pub fn parse_cores(text: &str) -> Result<Vec<usize>, String> {
    const CPU_MAX: usize = 1023;
    let mut cores = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (low, high) = match part.split_once('-') {
            Some((low, high)) => (low, high),
            None => (part, part),
        };
        let low: usize = low
            .trim()
            .parse()
            .map_err(|_| format!("bad CPU in `{part}`"))?;
        let high: usize = high
            .trim()
            .parse()
            .map_err(|_| format!("bad CPU in `{part}`"))?;
        if low > high || high > CPU_MAX {
            return Err(format!("bad CPU range `{part}` (0..={CPU_MAX})"));
        }
        cores.extend(low..=high);
    }
    cores.sort_unstable();
    cores.dedup();
    if cores.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(cores)
}

/// Why a run could not be carried out (a run that completes with loss is not an error: its
/// report says so).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag's value is out of range; fix the command line.
    #[error("{0}")]
    Usage(String),
    /// Connections could not be set up: the relay is not there, refuses the token or hit a
    /// limit (see the relay's log, raise `--connections-per-shard-max` and friends).
    #[error("setup failed: {0}")]
    Setup(String),
    /// A generator thread failed (runtime, pinning).
    #[error("generator thread: {0}")]
    Thread(String),
    /// The report could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// /proc could not be read for the relay's pid.
    #[error(transparent)]
    Proc(#[from] procstat::ProcError),
}

/// The run's configuration, shared by every generator thread.
#[derive(Debug)]
pub struct RunShared {
    pub addr: SocketAddr,
    pub token: Bytes,
    pub conversations: Vec<ConvName>,
    pub frame_bytes: usize,
    pub interval_us: u64,
    pub duration_us: u64,
    pub ramp_us: u64,
    pub message_frames: u32,
    pub late_bound_us: u64,
    /// Talkers wake this long before a frame's intended time (the timer is 1 ms-granular).
    pub early_release_us: u64,
    /// Monotonic µs of the run's start; 0 until every thread is ready.
    pub start_us: AtomicU64,
    /// Monotonic µs at which remaining connections are shut down.
    pub drain_deadline_us: AtomicU64,
    /// Per conversation: messages its talker sent, once it has finished (u32::MAX before).
    pub final_messages: Vec<AtomicU32>,
    /// Setup failed somewhere: threads give up.
    pub abort: AtomicBool,
}

/// One generator thread's state, shared by its tasks.
#[derive(Debug)]
pub struct ThreadCtx {
    pub shared: Arc<RunShared>,
    pub stats: RefCell<LoadStats>,
    /// Latencies since the last progress publication.
    pub interval_latency: RefCell<Histogram<u64>>,
    /// The drain deadline passed and the remaining sockets were shut down by us.
    pub draining_done: Cell<bool>,
    /// Sockets of running tasks.
    open_fds: RefCell<HashSet<RawFd>>,
    live_tasks: Cell<usize>,
}

/// What a thread last published for the progress table.
#[derive(Debug)]
pub struct ProgressSnapshot {
    pub sent: u64,
    pub delivered: u64,
    pub late: u64,
    pub connection_errors: u64,
    pub interval_latency: Histogram<u64>,
}

impl Default for ProgressSnapshot {
    fn default() -> Self {
        ProgressSnapshot {
            sent: 0,
            delivered: 0,
            late: 0,
            connection_errors: 0,
            interval_latency: latency_histogram(),
        }
    }
}

/// Locks `mutex`, taking the value even if another thread panicked while holding it (the
/// progress numbers stay usable).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one thread drives.
#[derive(Debug, Default)]
struct ThreadPlan {
    cpu: Option<usize>,
    talkers: Vec<u32>,
    listener_connections: Vec<Vec<u32>>,
}

/// Distributes talkers and listener connections round-robin over `threads` threads. Listener
/// subscriptions are ordered listener-major, so the `subs_per_connection` conversations of one
/// connection are distinct (when there are at least that many conversations).
fn plan_threads(
    conversations: u64,
    listeners: u64,
    subs_per_connection: u64,
    cpus: &[Option<usize>],
) -> Vec<ThreadPlan> {
    let mut plans: Vec<ThreadPlan> = cpus
        .iter()
        .map(|cpu| ThreadPlan {
            cpu: *cpu,
            ..ThreadPlan::default()
        })
        .collect();
    let threads = plans.len();
    for conversation in 0..conversations as u32 {
        plans[conversation as usize % threads]
            .talkers
            .push(conversation);
    }
    let subs: Vec<u32> = (0..listeners)
        .flat_map(|_| 0..conversations as u32)
        .collect();
    for (index, connection) in subs.chunks(subs_per_connection as usize).enumerate() {
        plans[index % threads]
            .listener_connections
            .push(connection.to_vec());
    }
    plans
}

/// The token the connections present: `token` as given, or one minted from `secret_file`
/// for talk and listen on every conversation under `prefix`, or empty (dev mode).
pub fn token(
    token: Option<&str>,
    secret_file: Option<&std::path::Path>,
    prefix: &str,
) -> Result<Bytes, RunError> {
    if let Some(token) = token {
        return Ok(Bytes::from(token.to_owned().into_bytes()));
    }
    let Some(path) = secret_file else {
        return Ok(Bytes::new());
    };
    use hark_core::token::{ConvPrefix, Grant, Rights, Scope, Subject, read_secret_file};
    let keyring = read_secret_file(path).map_err(|e| RunError::Usage(e.to_string()))?;
    let bad = |e: hark_core::token::TokenError| RunError::Usage(format!("cannot mint: {e}"));
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let grant = Grant {
        subject: Subject::new("hark-perf").map_err(bad)?,
        rights: "talk,listen".parse::<Rights>().map_err(bad)?,
        scope: Scope::Prefix(ConvPrefix::new(prefix).map_err(bad)?),
        expires_at_s: now_s + 24 * 3600,
        key_id: keyring.minting_key_id(),
    };
    Ok(Bytes::from(keyring.mint(&grant).map_err(bad)?.into_bytes()))
}

/// Checks the flags that clap cannot.
pub fn validate(args: &RunArgs) -> Result<(), RunError> {
    let seconds_ok = |s: f64| s.is_finite() && (0.0..=86_400.0).contains(&s);
    if !seconds_ok(args.duration) || args.duration < 0.01 {
        return Err(RunError::Usage("--duration must be 0.01..=86400 s".into()));
    }
    if !seconds_ok(args.ramp) || args.ramp > args.duration {
        return Err(RunError::Usage("--ramp must be 0..=--duration s".into()));
    }
    if !(args.overload_max_percent.is_finite()
        && (0.0..=100.0).contains(&args.overload_max_percent))
    {
        return Err(RunError::Usage(
            "--overload-max-percent must be 0..=100".into(),
        ));
    }
    if args.conversations * args.listeners / args.subs_per_connection > 4 * CONVERSATIONS_MAX {
        return Err(RunError::Usage("too many listener connections".into()));
    }
    Ok(())
}

/// The parameters block of the report.
pub fn parameters(args: &RunArgs, target: &str, address: String) -> Parameters {
    Parameters {
        target: target.to_owned(),
        address,
        conversations: args.conversations,
        listeners: args.listeners,
        frame_bytes: args.frame_bytes,
        interval_ms: args.interval_ms,
        duration_s: args.duration,
        ramp_s: args.ramp,
        message_frames: u64::from(args.message_frames),
        subs_per_connection: args.subs_per_connection,
        threads: args.cores.as_ref().map_or(1, |c| c.0.len() as u64),
    }
}

/// Unix time now, s.
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the load test against a hark relay and returns its report.
pub fn run_hark(args: &RunArgs) -> Result<Report, RunError> {
    validate(args)?;
    let conversations = (0..args.conversations)
        .map(|i| ConvName::new(format!("{}{i}", args.conversation_prefix)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RunError::Usage(format!("--conversation-prefix: {e}")))?;
    let shared = Arc::new(RunShared {
        addr: args.relay,
        token: token(
            args.token.as_deref(),
            args.secret_file.as_deref(),
            &args.conversation_prefix,
        )?,
        conversations,
        frame_bytes: args.frame_bytes as usize,
        interval_us: args.interval_ms * 1_000,
        duration_us: (args.duration * 1e6) as u64,
        ramp_us: (args.ramp * 1e6) as u64,
        message_frames: args.message_frames,
        late_bound_us: args.late_bound_ms * 1_000,
        early_release_us: args.early_release_us,
        start_us: AtomicU64::new(0),
        drain_deadline_us: AtomicU64::new(u64::MAX),
        final_messages: (0..args.conversations)
            .map(|_| AtomicU32::new(u32::MAX))
            .collect(),
        abort: AtomicBool::new(false),
    });
    let cpus: Vec<Option<usize>> = match &args.cores {
        Some(cores) => cores.0.iter().map(|c| Some(*c)).collect(),
        None => vec![None],
    };
    let plans = plan_threads(
        args.conversations,
        args.listeners,
        args.subs_per_connection,
        &cpus,
    );
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::new();
    let mut slots = Vec::new();
    for (index, plan) in plans.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let ready = ready_tx.clone();
        let slot = Arc::new(Mutex::new(ProgressSnapshot::default()));
        slots.push(Arc::clone(&slot));
        let handle = std::thread::Builder::new()
            .name(format!("hark-perf-{index}"))
            .spawn(move || generator_thread(shared, plan, ready, slot))
            .map_err(|e| RunError::Thread(e.to_string()))?;
        threads.push(handle);
    }
    drop(ready_tx);
    let mut setup_error = None;
    for _ in 0..threads.len() {
        match ready_rx.recv_timeout(SETUP_WAIT_TOTAL) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                setup_error.get_or_insert(error);
            }
            Err(_) => {
                setup_error.get_or_insert("a generator thread did not finish its setup".into());
                break;
            }
        }
    }
    if let Some(error) = setup_error {
        shared.abort.store(true, Ordering::Release);
        for thread in threads {
            let _ = thread.join();
        }
        return Err(RunError::Setup(error));
    }
    let cpu_before = args.relay_pid.map(procstat::cpu_time_us).transpose()?;
    let started_unix_s = unix_now_s();
    let start_us = mono_now_us() + START_DELAY_US;
    shared.drain_deadline_us.store(
        start_us + shared.duration_us + args.drain_ms * 1_000,
        Ordering::Release,
    );
    shared.start_us.store(start_us, Ordering::Release);

    if !args.quiet {
        println!("{PROGRESS_HEADER}");
    }
    let mut previous = (0u64, 0u64);
    let mut second = 1u64;
    while threads.iter().any(|t| !t.is_finished()) {
        let due_us = start_us + second * 1_000_000;
        let now_us = mono_now_us();
        if now_us < due_us {
            std::thread::sleep(Duration::from_micros((due_us - now_us).min(50_000)));
            continue;
        }
        let mut latency = latency_histogram();
        let (mut sent, mut delivered, mut late, mut errors) = (0, 0, 0, 0);
        for slot in &slots {
            let mut snapshot = lock(slot);
            sent += snapshot.sent;
            delivered += snapshot.delivered;
            late += snapshot.late;
            errors += snapshot.connection_errors;
            let _ = latency.add(&snapshot.interval_latency);
            snapshot.interval_latency.reset();
        }
        if !args.quiet {
            println!(
                "{}",
                progress_line(
                    second,
                    sent - previous.0,
                    delivered - previous.1,
                    &latency,
                    late,
                    errors
                )
            );
        }
        previous = (sent, delivered);
        second += 1;
    }
    let mut stats = LoadStats::default();
    for thread in threads {
        match thread.join() {
            Ok(Ok(thread_stats)) => stats.merge(&thread_stats),
            Ok(Err(error)) => return Err(RunError::Thread(error)),
            Err(_) => return Err(RunError::Thread("a generator thread panicked".into())),
        }
    }
    let relay_cpu_us = match (args.relay_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(procstat::cpu_time_us(pid)?.saturating_sub(before)),
        _ => None,
    };
    Ok(Report::new(
        parameters(args, "hark", args.relay.to_string()),
        started_unix_s,
        &stats,
        args.overload_max_percent,
        relay_cpu_us,
    ))
}

/// One generator thread: its own pinned monoio runtime, its share of the connections.
fn generator_thread(
    shared: Arc<RunShared>,
    plan: ThreadPlan,
    ready: mpsc::Sender<Result<(), String>>,
    progress: Arc<Mutex<ProgressSnapshot>>,
) -> Result<LoadStats, String> {
    if let Some(cpu) = plan.cpu
        && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
    {
        let error = format!("cannot pin a generator thread to CPU {cpu}");
        let _ = ready.send(Err(error.clone()));
        return Err(error);
    }
    let mut runtime = match monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(RING_ENTRIES)
        .enable_timer()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let error = format!("cannot build a runtime: {e}");
            let _ = ready.send(Err(error.clone()));
            return Err(error);
        }
    };
    runtime.block_on(async move {
        let ctx = Rc::new(ThreadCtx {
            shared: Arc::clone(&shared),
            stats: RefCell::new(LoadStats::default()),
            interval_latency: RefCell::new(latency_histogram()),
            draining_done: Cell::new(false),
            open_fds: RefCell::new(HashSet::new()),
            live_tasks: Cell::new(0),
        });
        let set_up = monoio::spawn(set_up_connections(Arc::clone(&shared), plan)).await;
        let (listeners, talkers) = match set_up {
            Ok(connections) => {
                let _ = ready.send(Ok(()));
                connections
            }
            Err(error) => {
                let _ = ready.send(Err(error.clone()));
                return Err(error);
            }
        };
        let start_us = loop {
            let start_us = shared.start_us.load(Ordering::Acquire);
            if start_us != 0 {
                break start_us;
            }
            if shared.abort.load(Ordering::Acquire) {
                return Err("aborted".to_string());
            }
            monoio::time::sleep(Duration::from_millis(1)).await;
        };
        for (wire, conversations) in listeners {
            let fd = hark::raw_fd(&wire);
            spawn_task(&ctx, fd, hark::listen(Rc::clone(&ctx), wire, conversations));
        }
        for (wire, conversation) in talkers {
            let fd = hark::raw_fd(&wire);
            spawn_task(&ctx, fd, hark::talk(Rc::clone(&ctx), wire, conversation));
        }
        let drain_deadline_us = shared.drain_deadline_us.load(Ordering::Acquire);
        let mut next_publish_us = start_us + 500_000;
        while ctx.live_tasks.get() > 0 {
            let now_us = mono_now_us();
            if now_us >= drain_deadline_us && !ctx.draining_done.get() {
                ctx.draining_done.set(true);
                for fd in ctx.open_fds.borrow().iter() {
                    // SAFETY: the fd belongs to a running task's socket (removed from the
                    // set when the task ends, before anything could reuse the number);
                    // shutdown only ends its pending reads and writes.
                    unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
                }
            }
            if now_us >= next_publish_us {
                publish(&ctx, &progress);
                next_publish_us += 500_000;
            }
            monoio::time::sleep(SUPERVISE_PERIOD).await;
        }
        publish(&ctx, &progress);
        Ok(ctx.stats.replace(LoadStats::default()))
    })
}

/// Copies the thread's counters and recent latencies to its progress slot.
fn publish(ctx: &ThreadCtx, progress: &Mutex<ProgressSnapshot>) {
    let stats = ctx.stats.borrow();
    let mut interval = ctx.interval_latency.borrow_mut();
    let mut snapshot = lock(progress);
    snapshot.sent = stats.frames_sent;
    snapshot.delivered = stats.unique_deliveries;
    snapshot.late = stats.generator_late_frames;
    snapshot.connection_errors = stats.connection_errors;
    let _ = snapshot.interval_latency.add(&*interval);
    interval.reset();
}

/// Spawns a connection's task, keeping its fd for the drain deadline and counting it live.
fn spawn_task(
    ctx: &Rc<ThreadCtx>,
    fd: RawFd,
    task: impl std::future::Future<Output = ()> + 'static,
) {
    ctx.open_fds.borrow_mut().insert(fd);
    ctx.live_tasks.set(ctx.live_tasks.get() + 1);
    let ctx = Rc::clone(ctx);
    monoio::spawn(async move {
        task.await;
        ctx.open_fds.borrow_mut().remove(&fd);
        ctx.live_tasks.set(ctx.live_tasks.get() - 1);
    });
}

type Connections = (Vec<(Wire, Vec<u32>)>, Vec<(Wire, u32)>);

/// Opens the thread's listener connections (subscribed) and talker connections (hello done),
/// at most [`SETUP_IN_FLIGHT_MAX`] at a time.
async fn set_up_connections(
    shared: Arc<RunShared>,
    plan: ThreadPlan,
) -> Result<Connections, String> {
    let mut listeners = Vec::with_capacity(plan.listener_connections.len());
    for chunk in plan.listener_connections.chunks(SETUP_IN_FLIGHT_MAX) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|conversations| {
                let shared = Arc::clone(&shared);
                let conversations = conversations.clone();
                monoio::spawn(async move {
                    let wire = hark::setup_listener(&shared, &conversations).await;
                    wire.map(|wire| (wire, conversations))
                })
            })
            .collect();
        for task in tasks {
            listeners.push(
                task.await
                    .map_err(|e| format!("listener connection: {e}"))?,
            );
        }
        if shared.abort.load(Ordering::Acquire) {
            return Err("aborted".into());
        }
    }
    let mut talkers = Vec::with_capacity(plan.talkers.len());
    for chunk in plan.talkers.chunks(SETUP_IN_FLIGHT_MAX) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&conversation| {
                let shared = Arc::clone(&shared);
                monoio::spawn(async move {
                    hark::setup_talker(&shared)
                        .await
                        .map(|wire| (wire, conversation))
                })
            })
            .collect();
        for task in tasks {
            talkers.push(task.await.map_err(|e| format!("talker connection: {e}"))?);
        }
    }
    Ok((listeners, talkers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_parse() {
        assert_eq!(parse_cores("1"), Ok(vec![1]));
        assert_eq!(parse_cores("3,0-1"), Ok(vec![0, 1, 3]));
        assert!(parse_cores("").is_err());
        assert!(parse_cores("2-1").is_err());
        assert!(parse_cores("5000").is_err());
    }

    #[test]
    fn listener_connections_hold_distinct_conversations() {
        let plans = plan_threads(3, 2, 2, &[None, Some(1)]);
        assert_eq!(plans[0].talkers, vec![0, 2]);
        assert_eq!(plans[1].talkers, vec![1]);
        let connections: Vec<Vec<u32>> = plans
            .iter()
            .flat_map(|p| p.listener_connections.clone())
            .collect();
        assert_eq!(connections.len(), 3);
        let mut subs = 0;
        for connection in &connections {
            let distinct: HashSet<_> = connection.iter().collect();
            assert_eq!(distinct.len(), connection.len());
            subs += connection.len();
        }
        assert_eq!(subs, 6);
    }
}
