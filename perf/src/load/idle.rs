//! `hark-perf idle`: opens N authenticated sessions that stay silent (answering the relay's
//! pings) and reports the relay's resident memory per connection, from /proc/PID/status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::hark;
use super::procstat;
use super::run::{RunError, RunShared, token, unix_now_s};
use super::wire::{Wire, put_request};

/// Sessions opened at once.
const SETUP_IN_FLIGHT_MAX: usize = 64;
/// io_uring entries of the idle thread.
const RING_ENTRIES: u32 = 4096;
/// Most sessions one idle run opens (this process needs a file descriptor for each).
pub const IDLE_CONNECTIONS_MAX: u64 = 1_000_000;

/// Flags of `hark-perf idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// The relay's client address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub relay: SocketAddr,
    /// Sessions to open.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=IDLE_CONNECTIONS_MAX))]
    pub connections: u64,
    /// The relay's process id (required: the memory is read from /proc/PID/status).
    #[arg(long)]
    pub relay_pid: u32,
    /// How long to hold the sessions open before measuring, in seconds.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub hold: u64,
    /// Token for every session (default: empty, for a relay in --dev-mode).
    #[arg(long, conflicts_with = "secret_file")]
    pub token: Option<String>,
    /// Mint a token from this secret file (the relay's `<data-dir>/secret`).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// CPU to pin the generator thread to.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `hark-perf idle` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdleReport {
    /// The relay's address.
    pub address: String,
    /// Unix time the run started, s.
    pub started_unix_s: u64,
    /// Sessions open when the memory was read.
    pub connections: u64,
    /// The relay's resident memory before the first session, bytes.
    pub relay_rss_before_bytes: u64,
    /// The relay's resident memory with every session open, bytes.
    pub relay_rss_after_bytes: u64,
    /// (after − before) / connections.
    pub relay_rss_bytes_per_connection: f64,
}

/// `hark-perf idle`.
pub fn run(args: &IdleArgs) -> Result<IdleReport, RunError> {
    let shared = Arc::new(RunShared {
        addr: args.relay,
        token: token(args.token.as_deref(), args.secret_file.as_deref(), "")?,
        conversations: Vec::new(),
        frame_bytes: 0,
        interval_us: 0,
        duration_us: 0,
        ramp_us: 0,
        message_frames: 0,
        late_bound_us: 0,
        early_release_us: 0,
        start_us: AtomicU64::new(0),
        drain_deadline_us: AtomicU64::new(0),
        final_messages: Vec::<AtomicU32>::new(),
        abort: AtomicBool::new(false),
    });
    if let Some(cpu) = args.cores
        && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
    {
        return Err(RunError::Thread(format!("cannot pin to CPU {cpu}")));
    }
    let started_unix_s = unix_now_s();
    let before = procstat::resident_bytes(args.relay_pid)?;
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(RING_ENTRIES)
        .enable_timer()
        .build()
        .map_err(|e| RunError::Thread(format!("cannot build a runtime: {e}")))?;
    let connections = args.connections as usize;
    let hold = Duration::from_secs(args.hold);
    let pid = args.relay_pid;
    let after =
        runtime.block_on(async move {
            let mut wires: Vec<Wire> = Vec::with_capacity(connections);
            while wires.len() < connections {
                let batch = (connections - wires.len()).min(SETUP_IN_FLIGHT_MAX);
                let tasks: Vec<_> = (0..batch)
                    .map(|_| {
                        let shared = Arc::clone(&shared);
                        monoio::spawn(async move { hark::setup_talker(&shared).await })
                    })
                    .collect();
                for task in tasks {
                    wires.push(task.await.map_err(|e| {
                        RunError::Setup(format!("session {}: {e}", wires.len() + 1))
                    })?);
                }
            }
            let wires: Vec<_> = wires
                .into_iter()
                .map(|wire| monoio::spawn(answer_pings(wire, hold)))
                .collect();
            monoio::time::sleep(hold).await;
            let after = procstat::resident_bytes(pid)?;
            for wire in wires {
                wire.await;
            }
            Ok::<u64, RunError>(after)
        })?;
    Ok(IdleReport {
        address: args.relay.to_string(),
        started_unix_s,
        connections: args.connections,
        relay_rss_before_bytes: before,
        relay_rss_after_bytes: after,
        relay_rss_bytes_per_connection: after.saturating_sub(before) as f64
            / args.connections as f64,
    })
}

/// Keeps a session alive for `hold`: answers pings, ignores everything else.
async fn answer_pings(mut wire: Wire, hold: Duration) {
    let serve = async {
        loop {
            while let Ok(Some(event)) = wire.next_buffered() {
                if let hark_core::protocol::Event::Ping { nonce } = event {
                    let mut out = bytes::BytesMut::new();
                    if put_request(&mut out, &hark_core::protocol::Request::Pong { nonce }).is_err()
                        || wire.send(out.freeze()).await.is_err()
                    {
                        return;
                    }
                }
            }
            if wire.read_more().await.is_err() {
                return;
            }
        }
    };
    // Past `hold` the session is no longer needed; the timeout ends it.
    let _ = monoio::time::timeout(hold + Duration::from_millis(100), serve).await;
}

impl IdleReport {
    /// The human summary.
    pub fn summary(&self) -> String {
        format!(
            "idle {}: {} sessions, relay RSS {:.1} MiB → {:.1} MiB, {:.0} bytes per connection\n",
            self.address,
            self.connections,
            self.relay_rss_before_bytes as f64 / 1_048_576.0,
            self.relay_rss_after_bytes as f64 / 1_048_576.0,
            self.relay_rss_bytes_per_connection
        )
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        // Numbers and a string only: serialising cannot fail.
        serde_json::to_string_pretty(self).expect("the idle report serialises")
    }
}
