//! Bounded queues between the shards of one host.
//!
//! One single-producer single-consumer ring per ordered pair of shards (Seastar's design), so a
//! push is a couple of plain atomic operations and no lock is ever taken. Items are moved, never
//! copied: the relay sends `bytes::Bytes` frames, which are a reference count.
//!
//! Waking a parked core costs up to ~2 ms at p99.9 on a shared VM, so the receiving side is only
//! woken when it is actually parked: a shard that runs out of work sets its `parked` flag,
//! re-checks its lanes and then awaits its doorbell (one end of a socket pair, so it works the
//! same under io_uring and under the epoll fallback). A sender pushes a whole batch and then
//! calls [`Outbox::flush`], which rings the doorbell of each destination that received items
//! *and* is parked. A busy receiver finds the items on its next [`Inbox::drain`] without any
//! system call.
//!
//! Lost wake-ups are excluded by a Dekker-style handshake: the receiver stores `parked = true`,
//! issues a SeqCst fence and then looks at its lanes; the sender publishes its items, issues a
//! SeqCst fence and then looks at `parked`. At least one of them sees the other's write.

use std::io::{self, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};

use monoio::io::AsyncReadRent;

/// Most shards one host runs (one per core).
pub const MESH_SHARDS_MAX: usize = 1024;
/// Largest capacity of one lane, in items.
pub const LANE_CAPACITY_MAX: usize = 1 << 20;
/// Bytes read from a doorbell per wake-up; stale rings beyond this are read on the next wait.
const DOORBELL_READ_BYTES: usize = 64;

/// Why a mesh could not be built or waited on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// Shard count outside 1..=[`MESH_SHARDS_MAX`]; configure fewer cores.
    #[error("a mesh has 1 to {MESH_SHARDS_MAX} shards, asked for {0}")]
    ShardCount(usize),
    /// Lane capacity outside 1..=[`LANE_CAPACITY_MAX`]; pick a capacity in range.
    #[error("a lane holds 1 to {LANE_CAPACITY_MAX} items, asked for {0}")]
    LaneCapacity(usize),
    /// The doorbell socket pair could not be created or used (out of file descriptors, or the
    /// runtime refused it); the shard cannot receive from other cores.
    #[error("doorbell socket: {0}")]
    Doorbell(#[from] io::Error),
}

/// Why an item was not queued; the item is handed back untouched.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// The lane to that shard is full: the receiver is behind. The caller decides what gives
    /// (a listener falls back to replay from the store; a control message is retried).
    Full(T),
    /// The destination is this shard itself or not a shard of the mesh: a routing bug.
    NoSuchLane(T),
}

#[derive(Debug)]
struct Doorbell {
    parked: AtomicBool,
    /// The write end; non-blocking, so a full socket (already rung) costs nothing.
    ring: StdUnixStream,
}

impl Doorbell {
    /// Rings if the receiver is parked. Returns whether it rang.
    fn ring_if_parked(&self) -> bool {
        // Publish-then-check: pairs with the fence in `Inbox::wait`.
        fence(Ordering::SeqCst);
        if !self.parked.load(Ordering::Relaxed) || !self.parked.swap(false, Ordering::AcqRel) {
            return false;
        }
        // WouldBlock means the socket is full of earlier rings: the receiver will wake anyway.
        // Any other error means the receiver is gone (its thread ended); nothing to wake.
        let _ = (&self.ring).write(&[1]);
        true
    }
}

/// The two ends one shard holds: what it sends to the others and what it receives from them.
#[derive(Debug)]
pub struct ShardLinks<T> {
    /// Lanes from this shard to every other shard.
    pub outbox: Outbox<T>,
    /// Lanes from every other shard to this one, and this shard's doorbell; open it on the
    /// shard's own thread with [`InboxHandle::open`].
    pub inbox: InboxHandle<T>,
}

/// Builds the full mesh for `shards` shards, each lane holding `lane_capacity` items.
/// Element `i` of the result belongs to shard `i`; move it to that shard's thread.
pub fn mesh<T: Send>(shards: usize, lane_capacity: usize) -> Result<Vec<ShardLinks<T>>, MeshError> {
    if shards == 0 || shards > MESH_SHARDS_MAX {
        return Err(MeshError::ShardCount(shards));
    }
    if lane_capacity == 0 || lane_capacity > LANE_CAPACITY_MAX {
        return Err(MeshError::LaneCapacity(lane_capacity));
    }
    let mut doorbells = Vec::with_capacity(shards);
    let mut bell_ends = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (ring, listen) = StdUnixStream::pair()?;
        ring.set_nonblocking(true)?;
        listen.set_nonblocking(true)?;
        doorbells.push(Arc::new(Doorbell {
            parked: AtomicBool::new(false),
            ring,
        }));
        bell_ends.push(listen);
    }
    // producers[from][to] and consumers[to][from].
    let mut producers: Vec<Vec<Option<rtrb::Producer<T>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    let mut consumers: Vec<Vec<Option<rtrb::Consumer<T>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    for from in 0..shards {
        for to in (0..shards).filter(|&to| to != from) {
            let (producer, consumer) = rtrb::RingBuffer::new(lane_capacity);
            producers[from][to] = Some(producer);
            consumers[to][from] = Some(consumer);
        }
    }
    let links = producers
        .into_iter()
        .zip(consumers)
        .zip(bell_ends)
        .enumerate()
        .map(|(me, ((out_lanes, in_lanes), bell_end))| ShardLinks {
            outbox: Outbox {
                me,
                lanes: out_lanes,
                doorbells: doorbells.clone(),
                pending: vec![false; shards],
            },
            inbox: InboxHandle {
                me,
                lanes: in_lanes,
                doorbell: Arc::clone(&doorbells[me]),
                bell: bell_end,
            },
        })
        .collect();
    Ok(links)
}

/// The sending side of one shard: a lane to every other shard.
#[derive(Debug)]
pub struct Outbox<T> {
    me: usize,
    lanes: Vec<Option<rtrb::Producer<T>>>,
    doorbells: Vec<Arc<Doorbell>>,
    /// Destinations that received items since the last flush.
    pending: Vec<bool>,
}

impl<T> Outbox<T> {
    /// The shard this outbox belongs to.
    pub fn shard(&self) -> usize {
        self.me
    }

    /// Queues `item` for shard `to`. Nothing is woken until [`Outbox::flush`].
    pub fn push(&mut self, to: usize, item: T) -> Result<(), PushError<T>> {
        let Some(Some(lane)) = self.lanes.get_mut(to) else {
            return Err(PushError::NoSuchLane(item));
        };
        match lane.push(item) {
            Ok(()) => {
                self.pending[to] = true;
                Ok(())
            }
            Err(rtrb::PushError::Full(item)) => Err(PushError::Full(item)),
        }
    }

    /// Free slots in the lane to `to` (0 for no such lane).
    pub fn free_slots(&self, to: usize) -> usize {
        match self.lanes.get(to) {
            Some(Some(lane)) => lane.slots(),
            _ => 0,
        }
    }

    /// Wakes every destination that received items since the last flush and is parked.
    /// Call once per turn of the shard's loop, after its pushes. Returns the doorbells rung.
    pub fn flush(&mut self) -> usize {
        let mut rung = 0;
        for (to, pending) in self.pending.iter_mut().enumerate() {
            if std::mem::take(pending) && self.doorbells[to].ring_if_parked() {
                rung += 1;
            }
        }
        rung
    }
}

/// A shard's receiving side before it is bound to the shard's runtime; it can be sent to the
/// shard's thread.
#[derive(Debug)]
pub struct InboxHandle<T> {
    me: usize,
    lanes: Vec<Option<rtrb::Consumer<T>>>,
    doorbell: Arc<Doorbell>,
    bell: StdUnixStream,
}

impl<T> InboxHandle<T> {
    /// Registers the doorbell with the current thread's monoio runtime. Call it on the shard's
    /// thread, inside its runtime.
    pub fn open(self) -> Result<Inbox<T>, MeshError> {
        Ok(Inbox {
            me: self.me,
            lanes: self.lanes,
            doorbell: self.doorbell,
            bell: monoio::net::UnixStream::from_std(self.bell)?,
            bell_buf: Vec::with_capacity(DOORBELL_READ_BYTES),
            next_lane: 0,
        })
    }
}

/// The receiving side of one shard: a lane from every other shard and this shard's doorbell.
#[derive(Debug)]
pub struct Inbox<T> {
    me: usize,
    lanes: Vec<Option<rtrb::Consumer<T>>>,
    doorbell: Arc<Doorbell>,
    bell: monoio::net::UnixStream,
    bell_buf: Vec<u8>,
    /// The lane the next drain starts with, so no sender can starve another.
    next_lane: usize,
}

impl<T> Inbox<T> {
    /// The shard this inbox belongs to.
    pub fn shard(&self) -> usize {
        self.me
    }

    /// Whether every lane is empty right now.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().flatten().all(|lane| lane.is_empty())
    }

    /// Hands up to `max` queued items to `deliver(from_shard, item)`, taking lanes round-robin.
    /// Returns how many were delivered. Never waits.
    pub fn drain(&mut self, max: usize, mut deliver: impl FnMut(usize, T)) -> usize {
        let shards = self.lanes.len();
        let mut delivered = 0;
        for step in 0..shards {
            if delivered == max {
                break;
            }
            let from = (self.next_lane + step) % shards;
            let Some(lane) = self.lanes[from].as_mut() else {
                continue;
            };
            let take = lane.slots().min(max - delivered);
            if take == 0 {
                continue;
            }
            // `slots()` items are readable, so a chunk of `take <= slots()` always exists.
            let Ok(chunk) = lane.read_chunk(take) else {
                continue;
            };
            for item in chunk {
                deliver(from, item);
            }
            delivered += take;
        }
        self.next_lane = (self.next_lane + 1) % shards;
        delivered
    }

    /// Parks until some lane has items. Returns at once if one already has. Spurious returns are possible; callers drain and loop.
    pub async fn wait(&mut self) -> Result<(), MeshError> {
        self.doorbell.parked.store(true, Ordering::Relaxed);
        // Check-after-park: pairs with the fence in `Doorbell::ring_if_parked`.
        fence(Ordering::SeqCst);
        if !self.is_empty() {
            self.doorbell.parked.store(false, Ordering::Relaxed);
            return Ok(());
        }
        let result = self.read_bell().await;
        self.doorbell.parked.store(false, Ordering::Relaxed);
        result
    }

    async fn read_bell(&mut self) -> Result<(), MeshError> {
        let mut owned = std::mem::take(&mut self.bell_buf);
        if owned.capacity() == 0 {
            // A cancelled earlier wait kept the buffer; a zero-length read would look like EOF.
            owned.reserve(DOORBELL_READ_BYTES);
        }
        let (result, mut owned) = self.bell.read(owned).await;
        owned.clear();
        self.bell_buf = owned;
        match result {
            Ok(0) => Err(MeshError::Doorbell(io::Error::from(
                io::ErrorKind::UnexpectedEof,
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(MeshError::Doorbell(e)),
        }
    }
}

#[cfg(test)]
mod tests;
