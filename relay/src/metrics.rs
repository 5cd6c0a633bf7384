//! Per-shard statistics and the registry the admin endpoint renders from.
//!
//! The hot path must stay free of locks, atomics and allocations, so each shard thread owns a
//! plain [`ShardStats`] and bumps its `u64` fields directly. On its timer tick (about every
//! [`PUBLISH_INTERVAL_MS`]) the shard copies them into its slot of the shared [`Registry`]:
//! one uncontended lock and a memcpy, a few times a second. The admin thread renders the
//! published copies as Prometheus text, so a scrape never touches a shard's working state.
//!
//! ```text
//!  shard thread                         admin thread
//!  ShardStats (plain u64, hdr) ─publish every ~250 ms─► Registry slot ─render─► GET /metrics
//! ```
//!
//! Every metric, its type and meaning are listed in `docs/metrics.md`.

mod latency;
mod render;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod text_check;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use hark_core::ShardId;

pub use latency::{
    LATENCY_BUCKET_BOUNDS_US, LATENCY_BUCKETS, LATENCY_SIGNIFICANT_FIGURES, LATENCY_US_MAX,
    LATENCY_US_MIN, LatencyHistogram,
};

/// How often a shard is expected to publish, in milliseconds: often enough that a 15 s scrape
/// sees data at most a quarter second old, rarely enough that the copies cost nothing.
pub const PUBLISH_INTERVAL_MS: u64 = 250;

/// A shard's counters and gauges, bumped in place by its thread.
///
/// Counters only grow (they wrap after 2^64, which no relay reaches); gauges are set to the
/// current value before each publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardCounters {
    /// Gauge: client connections open on this shard.
    pub connections_open: u64,
    /// Counter: client connections accepted from this shard's listening socket (connections
    /// adopted from another shard count in `handoffs_in` instead).
    pub connections_accepted: u64,
    /// Counter: connections refused because the shard was at its connection limit.
    pub connections_refused: u64,
    /// Counter: connections handed to another shard (the conversation's owner).
    pub handoffs_out: u64,
    /// Counter: connections adopted from another shard.
    pub handoffs_in: u64,
    /// Counter: talk frames received from clients.
    pub frames_in: u64,
    /// Counter: frame events sent to listeners, live and replayed.
    pub frames_out: u64,
    /// Counter: bytes read from client sockets.
    pub bytes_in: u64,
    /// Counter: bytes written to client sockets.
    pub bytes_out: u64,
    /// Gauge: bytes queued for client sockets, over all connections of the shard.
    pub send_queue_bytes: u64,
    /// Gauge: entries waiting in this shard's outbound mesh lanes and their overflow.
    pub mesh_queue_depth: u64,
    /// Counter: listeners that overflowed their send queue and fell back to replay from the store.
    pub slow_listener_fallbacks: u64,
    /// Counter: messages started (talk start accepted) on this shard.
    pub messages_started: u64,
    /// Counter: messages ended on this shard.
    pub messages_ended: u64,
    /// Counter: messages a talker resumed on this shard after their owner died or drained
    /// (handed over, see docs/cluster.md).
    pub messages_handed_over: u64,
    /// Counter: group commits of the body store that became durable.
    pub commits: u64,
    /// Counter: group commits that failed.
    pub commit_errors: u64,
    /// Counter: bytes made durable by group commits.
    pub commit_bytes: u64,
    /// Gauge: bytes appended to the store and not yet durable.
    pub store_pending_bytes: u64,
    /// Counter: client frames that could not be decoded.
    pub decode_errors: u64,
    /// Counter: bytes written to peer links (to other hosts' shards).
    pub peer_link_bytes_out: u64,
    /// Counter: bytes read from peer links.
    pub peer_link_bytes_in: u64,
    /// Counter: peer links this shard dialed that failed (connect, handshake, write, silence).
    pub peer_link_failures: u64,
    /// Gauge: epoch of the ownership map the shard routes by.
    pub map_epoch: u64,
}

/// Everything one shard measures: counters, gauges and two latency distributions.
///
/// Owned by the shard's thread; nothing here is atomic or locked.
#[derive(Debug)]
pub struct ShardStats {
    /// Counters and gauges; bump the fields directly.
    pub counters: ShardCounters,
    commit_latency_us: LatencyHistogram,
    relay_latency_us: LatencyHistogram,
}

impl ShardStats {
    /// Zeroed statistics. Allocates the two histograms (about 40 KiB) once.
    pub fn new() -> Self {
        Self {
            counters: ShardCounters::default(),
            commit_latency_us: LatencyHistogram::new(),
            relay_latency_us: LatencyHistogram::new(),
        }
    }

    /// Records one group commit's latency (from handing its batch to the committer to the
    /// write and fdatasync completing), in µs.
    /// Values above [`LATENCY_US_MAX`] count as the maximum; never panics.
    pub fn record_commit_latency_us(&mut self, us: u64) {
        self.commit_latency_us.record_us(us);
    }

    /// Records one relay latency: from the input that produced an event (a socket read, a mesh
    /// batch, a timer) to the `writev` that handed it to the kernel, once per write (for the
    /// oldest event it finished), in µs. Values above [`LATENCY_US_MAX`] count as the maximum.
    pub fn record_relay_latency_us(&mut self, us: u64) {
        self.relay_latency_us.record_us(us);
    }

    /// The store commit latencies recorded so far.
    pub fn commit_latency(&self) -> &LatencyHistogram {
        &self.commit_latency_us
    }

    /// The relay latencies recorded so far.
    pub fn relay_latency(&self) -> &LatencyHistogram {
        &self.relay_latency_us
    }
}

impl Default for ShardStats {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for ShardStats {
    fn clone(&self) -> Self {
        Self {
            counters: self.counters.clone(),
            commit_latency_us: self.commit_latency_us.clone(),
            relay_latency_us: self.relay_latency_us.clone(),
        }
    }

    /// Copies in place without allocating (see [`LatencyHistogram`]'s `clone_from`).
    fn clone_from(&mut self, source: &Self) {
        self.counters.clone_from(&source.counters);
        self.commit_latency_us.clone_from(&source.commit_latency_us);
        self.relay_latency_us.clone_from(&source.relay_latency_us);
    }
}

/// The host's shared view of every shard's last published statistics, plus readiness.
///
/// Shared as `Arc<Registry>` between the shard threads (which publish) and the admin thread
/// (which renders).
pub struct Registry {
    slots: Vec<ShardSlot>,
    created: Instant,
    ready: AtomicBool,
    draining: AtomicBool,
    cluster: Mutex<Option<ClusterGauges>>,
}

/// What a cluster host reports of its ownership map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterGauges {
    /// The map's epoch.
    pub epoch: u64,
    /// The map's checksum (equal on hosts that agree on the live hosts).
    pub checksum: u64,
    /// Live hosts in the map.
    pub hosts: u64,
}

struct ShardSlot {
    shard: ShardId,
    published: Mutex<Published>,
}

struct Published {
    stats: ShardStats,
    /// When the shard last published; `None` before its first publish.
    at: Option<Instant>,
}

impl Registry {
    /// A registry with one zeroed slot per shard; slot `i` belongs to `shards[i]`. The ids must be
    /// distinct (they label the samples). Neither ready nor draining.
    pub fn new(shards: &[ShardId]) -> Arc<Self> {
        let slots = shards
            .iter()
            .map(|&shard| ShardSlot {
                shard,
                published: Mutex::new(Published {
                    stats: ShardStats::new(),
                    at: None,
                }),
            })
            .collect();
        Arc::new(Self {
            slots,
            created: Instant::now(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            cluster: Mutex::new(None),
        })
    }

    /// A cluster host's newest map (rendered as `hark_cluster_*`).
    pub fn set_cluster(&self, gauges: ClusterGauges) {
        *self.cluster.lock().unwrap_or_else(PoisonError::into_inner) = Some(gauges);
    }

    /// The shards, in slot order.
    pub fn shards(&self) -> impl ExactSizeIterator<Item = ShardId> + '_ {
        self.slots.iter().map(|slot| slot.shard)
    }

    /// Copies `stats` into slot `shard_index` (without allocating) and notes the time. An index
    /// that is not a slot is ignored: it is a caller bug, and metrics must never take a shard down.
    pub fn publish(&self, shard_index: usize, stats: &ShardStats) {
        let Some(slot) = self.slots.get(shard_index) else {
            return;
        };
        let mut published = lock(&slot.published);
        published.stats.clone_from(stats);
        published.at = Some(Instant::now());
    }

    /// Every shard is accepting connections: `/ready` may say 200 (unless draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Shutdown has begun: `/ready` says 503 so load balancers stop sending clients here.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Release);
    }

    /// Whether `/ready` answers 200: ready and not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.is_draining()
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Appends the Prometheus text exposition (format 0.0.4) of every shard's last published
    /// statistics to `out`. Each slot is locked once, only long enough to copy it.
    pub fn render_prometheus(&self, out: &mut String) {
        let now = Instant::now();
        let snapshots: Vec<render::ShardSnapshot> = self
            .slots
            .iter()
            .map(|slot| {
                let published = lock(&slot.published);
                let since = published.at.unwrap_or(self.created);
                render::ShardSnapshot {
                    shard: slot.shard,
                    stats: published.stats.clone(),
                    stats_age_us: duration_us(now.saturating_duration_since(since)),
                }
            })
            .collect();
        let cluster = *self.cluster.lock().unwrap_or_else(PoisonError::into_inner);
        render::render(
            out,
            &snapshots,
            self.ready.load(Ordering::Acquire),
            self.is_draining(),
            cluster,
        );
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field(
                "shards",
                &self.slots.iter().map(|s| s.shard).collect::<Vec<_>>(),
            )
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .field("draining", &self.draining.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Locks a slot. A poisoned lock (a panic while copying, which plain copies cannot do) still
/// holds complete counters, so it is used as is rather than spreading the panic.
fn lock(slot: &Mutex<Published>) -> MutexGuard<'_, Published> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

fn duration_us(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
