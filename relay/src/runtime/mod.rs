//! The relay's runtime: one thread per shard, each pinned to its core and running a monoio
//! runtime (io_uring, or epoll where io_uring is unavailable or
//! `MONOIO_FORCE_LEGACY_DRIVER` is set), around the sans-IO shard logic of hark-core.
//!
//! Start-up, in order (each step reports to [`Relay::start`], which fails as a whole):
//!
//! 1. every shard thread pins itself and opens (and recovers) its own store;
//! 2. the start thread opens the [`Archive`] of history other shards hold (after step 1, so
//!    it reads recovered files) and hands it to every shard;
//! 3. every shard starts accepting on the shared port (`SO_REUSEPORT`, one listener each).
//!
//! Draining ([`Relay::drain`]): each shard stops accepting, tells its sessions to go away,
//! ends live messages truncated, commits what is pending, closes its connections after the
//! linger time and leaves its runtime once nothing is left.

mod cluster_start;
mod conn;
mod ctx;
mod link;
mod tasks;
mod wake;

#[cfg(test)]
mod tests;

pub use cluster_start::RuntimeCluster;
pub use wake::{Wakeup, now_us, sleep_or_wake};

use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use hark_core::map::{Membership, ShardWeight};
use hark_core::shard::{Shard, ShardConfig};
use hark_core::token::Keyring;
use hark_core::{HostId, ShardId};
use hark_storage::{Committer, IoMode, Store, StoreConfig};

use crate::mesh::{ShardLinks, mesh};
use crate::metrics::Registry;
use crate::store::{Archive, ShardStore};
use cluster_start::{ClusterStart, ShardCluster};
use ctx::{Ctx, MeshItem};

/// io_uring submission queue entries per shard.
const RING_ENTRIES: u32 = 1024;
/// The weight of every shard in the host's ownership map (all cores are equal).
const SHARD_WEIGHT: u32 = 100;

/// What the runtime needs to start.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// This host.
    pub host: HostId,
    /// One entry per shard: the CPU its thread is pinned to (`None`: not pinned).
    pub cpus: Vec<Option<usize>>,
    /// The data directory (one store directory per shard under it).
    pub data_dir: PathBuf,
    /// Limits and knobs of the shard logic.
    pub shard: ShardConfig,
    /// Limits and knobs of the stores.
    pub store: StoreConfig,
    /// Items per cross-shard queue.
    pub mesh_lane_capacity: usize,
    /// How this host joins a cluster; `None` on a single host.
    pub cluster: Option<RuntimeCluster>,
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration names no shard.
    #[error("no shard to run: the core list is empty")]
    NoShards,
    /// More shards than a host's ownership map or mesh can hold.
    #[error("cannot build the host's shard map: {0}")]
    Map(String),
    /// The cross-shard queues could not be built.
    #[error("cannot build the cross-shard queues: {0}")]
    Mesh(#[from] crate::mesh::MeshError),
    /// A socket could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A shard's store could not be opened.
    #[error("shard {shard}: cannot open its store: {error}")]
    Store {
        /// The shard.
        shard: String,
        /// The store's error.
        error: String,
    },
    /// The archive of other shard directories could not be opened.
    #[error("cannot open the history of other shard directories: {0}")]
    Archive(String),
    /// A shard thread failed before serving.
    #[error("shard {shard} failed to start: {reason}")]
    Shard {
        /// The shard.
        shard: String,
        /// Why.
        reason: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// The start-up steps every shard reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    StoreOpened,
    Serving,
}

/// What a shard thread reports to the start thread.
enum Report {
    StoreOpened { shard: usize, messages: usize },
    Serving { shard: usize },
    Failed { shard: usize, reason: String },
    Exited { shard: usize },
}

/// A running relay: its shard threads and the means to drain them.
#[derive(Debug)]
pub struct Relay {
    shards: Vec<ShardId>,
    /// The membership thread of a cluster host.
    membership: Option<Arc<crate::cluster::Membership>>,
    cluster_addr: Option<SocketAddr>,
    controls: Vec<StdUnixStream>,
    threads: Vec<JoinHandle<()>>,
    reports: Receiver<Report>,
    client_addr: SocketAddr,
    io_mode: IoMode,
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Report::StoreOpened { shard, .. } => write!(f, "StoreOpened({shard})"),
            Report::Serving { shard } => write!(f, "Serving({shard})"),
            Report::Failed { shard, reason } => write!(f, "Failed({shard}: {reason})"),
            Report::Exited { shard } => write!(f, "Exited({shard})"),
        }
    }
}

impl Relay {
    /// Starts every shard on `listen` and returns once all of them accept. `registry`
    /// receives each shard's statistics.
    pub fn start(
        config: &RuntimeConfig,
        listen: SocketAddr,
        keyring: &Keyring,
        registry: Arc<Registry>,
    ) -> Result<Self, StartError> {
        let count = config.cpus.len();
        if count == 0 {
            return Err(StartError::NoShards);
        }
        let shards: Vec<ShardId> = (0..count)
            .map(|i| ShardId::new(config.host.0, i as u16))
            .collect();
        let map = Membership::from_shards(
            1,
            shards.iter().map(|&shard| ShardWeight {
                shard,
                weight: SHARD_WEIGHT,
            }),
        )
        .map_err(|e| StartError::Map(e.to_string()))?;
        let listeners = bind_listeners(listen, count)?;
        let client_addr = listeners[0]
            .local_addr()
            .map_err(io_error("read the listen address"))?;
        let mut cluster = match &config.cluster {
            Some(settings) => Some(ClusterStart::bind(
                settings,
                config.host,
                client_addr,
                count,
                keyring,
            )?),
            None => None,
        };
        let links = mesh::<MeshItem>(count, config.mesh_lane_capacity)?;
        let io_mode = IoMode::detect();
        let (report_tx, reports) = mpsc::channel();
        let mut archive_txs = Vec::with_capacity(count);
        let mut controls = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        let shard_ids: Arc<[ShardId]> = shards.clone().into();
        for (index, (links, listener)) in links.into_iter().zip(listeners).enumerate() {
            let (archive_tx, archive_rx) = mpsc::channel::<Arc<Archive>>();
            archive_txs.push(archive_tx);
            let (control, control_end) =
                StdUnixStream::pair().map_err(io_error("create a control socket"))?;
            control_end
                .set_nonblocking(true)
                .map_err(io_error("set up a control socket"))?;
            controls.push(control);
            let plan = ShardPlan {
                index,
                shard_ids: Arc::clone(&shard_ids),
                cpu: config.cpus[index],
                data_dir: config.data_dir.clone(),
                shard_config: config.shard.clone(),
                store_config: config.store.clone(),
                map: map.clone(),
                keyring: keyring.clone(),
                links,
                listener,
                control: control_end,
                archive: archive_rx,
                reports: report_tx.clone(),
                registry: Arc::clone(&registry),
                io_mode,
                lane_capacity: config.mesh_lane_capacity,
                cluster: cluster.as_mut().and_then(ClusterStart::shard_plan),
            };
            let thread = std::thread::Builder::new()
                .name(format!("hark-shard-{index}"))
                .spawn(move || run_shard(plan))
                .map_err(io_error("start a shard thread"))?;
            threads.push(thread);
        }
        drop(report_tx);
        let (membership, cluster_addr) = match cluster {
            Some(start) => {
                let notify = controls
                    .iter()
                    .map(StdUnixStream::try_clone)
                    .collect::<std::io::Result<Vec<_>>>()
                    .map_err(io_error("share the control sockets"))?;
                let addr = start.addr;
                let membership = crate::cluster::Membership::start(
                    start.node,
                    start.socket,
                    start.board,
                    notify,
                    Arc::clone(&registry),
                )
                .map_err(io_error("start the membership thread"))?;
                (Some(Arc::new(membership)), Some(addr))
            }
            None => (None, None),
        };
        let relay = Self {
            shards,
            membership,
            cluster_addr,
            controls,
            threads,
            reports,
            client_addr,
            io_mode,
        };
        relay.finish_start(config, &map, archive_txs)
    }

    fn finish_start(
        self,
        config: &RuntimeConfig,
        map: &Membership,
        archive_txs: Vec<Sender<Arc<Archive>>>,
    ) -> Result<Self, StartError> {
        if let Err(error) = self.await_reports(Stage::StoreOpened) {
            self.abort();
            return Err(error);
        }
        let archive = match Archive::open(&config.data_dir, map, &config.store) {
            Ok((archive, entries)) => {
                for entry in entries.iter().filter(|e| e.kept) {
                    tracing::info!(
                        shard = %entry.shard,
                        messages = entry.messages,
                        "history of another shard directory is served read-only"
                    );
                }
                Arc::new(archive)
            }
            Err(error) => {
                self.abort();
                return Err(StartError::Archive(error.to_string()));
            }
        };
        for tx in archive_txs {
            let _ = tx.send(Arc::clone(&archive));
        }
        if let Err(error) = self.await_reports(Stage::Serving) {
            self.abort();
            return Err(error);
        }
        Ok(self)
    }

    /// Waits until every shard reported `stage`, or one failed.
    fn await_reports(&self, stage: Stage) -> Result<(), StartError> {
        let mut reached = 0;
        while reached < self.shards.len() {
            match self.reports.recv() {
                Ok(Report::StoreOpened { shard, messages }) if stage == Stage::StoreOpened => {
                    tracing::info!(shard, messages, "store opened");
                    reached += 1;
                }
                Ok(Report::Serving { .. }) if stage == Stage::Serving => reached += 1,
                Ok(Report::Failed { shard, reason }) => {
                    let shard = self.shards[shard].to_string();
                    return Err(StartError::Shard { shard, reason });
                }
                Ok(other) => tracing::debug!(?other, "report during start-up"),
                Err(_) => {
                    return Err(StartError::Shard {
                        shard: "?".into(),
                        reason: "a shard thread ended during start-up".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The address clients connect to (the bound port when 0 was asked).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The shards served.
    pub fn shards(&self) -> &[ShardId] {
        &self.shards
    }

    /// How the stores commit (io_uring ring, or a sync thread under epoll).
    pub fn io_mode(&self) -> IoMode {
        self.io_mode
    }

    /// The cluster address (UDP gossip and TCP peer links), on a cluster host.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster_addr
    }

    /// The newest cluster map, on a cluster host.
    pub fn cluster_map(&self) -> Option<Arc<hark_core::cluster::ClusterMap>> {
        self.membership.as_ref().map(|m| m.board().latest())
    }

    /// Tells every shard to drain (see the module docs). Returns at once.
    pub fn drain(&mut self) {
        if let Some(membership) = &self.membership {
            membership.leave();
        }
        signal_drain(&mut self.controls);
    }

    /// A handle that starts the drain from another thread (e.g. the signal thread).
    pub fn drain_handle(&self) -> std::io::Result<DrainHandle> {
        let controls = self
            .controls
            .iter()
            .map(StdUnixStream::try_clone)
            .collect::<std::io::Result<_>>()?;
        Ok(DrainHandle {
            controls,
            membership: self.membership.clone(),
            started: false,
        })
    }

    /// Waits until a shard thread ends (after a drain, or by failing). Returns the shard's
    /// index, or `None` when all have ended.
    pub fn wait_exit(&self) -> Option<(usize, Option<String>)> {
        loop {
            match self.reports.recv() {
                Ok(Report::Exited { shard }) => return Some((shard, None)),
                Ok(Report::Failed { shard, reason }) => return Some((shard, Some(reason))),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Waits for every shard thread to end.
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }

    fn abort(mut self) {
        self.drain();
        // Closing the control sockets also drains shards still starting.
        self.controls.clear();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Starts the drain of every shard from any thread; see [`Relay::drain`].
#[derive(Debug)]
pub struct DrainHandle {
    controls: Vec<StdUnixStream>,
    membership: Option<Arc<crate::cluster::Membership>>,
    /// The drain was signalled: later calls do nothing, so repeated requests (signals,
    /// `POST /drain`) cannot fill control sockets the shards no longer read.
    started: bool,
}

impl DrainHandle {
    /// Tells every shard to drain (a cluster host first leaves the map). Only the first call
    /// acts; later ones are harmless no-ops.
    pub fn drain(&mut self) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        if let Some(membership) = &self.membership {
            membership.leave();
        }
        signal_drain(&mut self.controls);
    }
}

/// Writes the drain byte to every shard's control socket (a shard gone already is skipped).
fn signal_drain(controls: &mut [StdUnixStream]) {
    for control in controls {
        let _ = control.write_all(b"d");
    }
}

/// Binds `count` listeners on one address with `SO_REUSEPORT` (the kernel spreads new
/// connections over them). With port 0 the first one picks the port and the rest reuse it.
fn bind_listeners(listen: SocketAddr, count: usize) -> Result<Vec<StdTcpListener>, StartError> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = listen;
    for _ in 0..count {
        let listener = bind_reuseport(addr).map_err(io_error(format!("listen on {addr}")))?;
        if addr.port() == 0 {
            addr = listener
                .local_addr()
                .map_err(io_error("read the listen address"))?;
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

fn bind_reuseport(addr: SocketAddr) -> std::io::Result<StdTcpListener> {
    let domain = match addr {
        SocketAddr::V4(_) => socket2::Domain::IPV4,
        SocketAddr::V6(_) => socket2::Domain::IPV6,
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Everything a shard thread starts from.
struct ShardPlan {
    index: usize,
    shard_ids: Arc<[ShardId]>,
    cpu: Option<usize>,
    data_dir: PathBuf,
    shard_config: ShardConfig,
    store_config: StoreConfig,
    map: Membership,
    keyring: Keyring,
    links: ShardLinks<MeshItem>,
    listener: StdTcpListener,
    control: StdUnixStream,
    archive: Receiver<Arc<Archive>>,
    reports: Sender<Report>,
    registry: Arc<Registry>,
    io_mode: IoMode,
    lane_capacity: usize,
    cluster: Option<ShardCluster>,
}

fn run_shard(plan: ShardPlan) {
    let index = plan.index;
    let reports = plan.reports.clone();
    match serve_shard(plan) {
        Ok(()) => {
            let _ = reports.send(Report::Exited { shard: index });
        }
        Err(reason) => {
            tracing::error!(shard = index, %reason, "shard stopped");
            let _ = reports.send(Report::Failed {
                shard: index,
                reason,
            });
        }
    }
}

fn serve_shard(plan: ShardPlan) -> Result<(), String> {
    let me = plan.index;
    let shard_id = plan.shard_ids[me];
    if let Some(cpu) = plan.cpu
        && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
    {
        return Err(format!("cannot pin the thread to CPU {cpu}"));
    }
    let dir = hark_storage::shard_dir(&plan.data_dir, shard_id);
    // Messages a crash left open stay open so their talkers can resume them; the shard ends
    // them truncated when nobody does within the resume grace.
    let store_config = StoreConfig {
        keep_cut_messages_open: true,
        ..plan.store_config.clone()
    };
    let (mut store, report) = Store::open(&dir, shard_id, store_config, now_us())
        .map_err(|e| format!("cannot open its store in {}: {e}", dir.display()))?;
    if !report.truncated_messages.is_empty() {
        tracing::info!(
            shard = me,
            messages = report.truncated_messages.len(),
            "messages cut by the last stop were ended as truncated"
        );
    }
    if plan.store_config.preallocate_segments
        && let Err(error) = store.preallocate_open_segment()
    {
        tracing::warn!(shard = me, %error, "cannot preallocate the open segment");
    }
    let _ = plan.reports.send(Report::StoreOpened {
        shard: me,
        messages: store.message_count(),
    });
    let archive = plan
        .archive
        .recv()
        .map_err(|_| "start-up was abandoned".to_string())?;
    let newest = store.newest_msg();
    let mut shard = Shard::new(
        plan.shard_config,
        shard_id,
        plan.map,
        plan.keyring,
        ShardStore::new(store, archive),
        now_us(),
    );
    if let Some(newest) = newest {
        shard.resume_ids_after(newest);
    }
    let resumable = shard.recover_open_messages(now_us(), &report.open_messages);
    if !report.open_messages.is_empty() {
        tracing::info!(
            shard = me,
            resumable,
            ended = report.open_messages.len() - resumable,
            "messages cut by the last stop are open for their talkers to resume"
        );
    }

    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(RING_ENTRIES)
        .enable_timer()
        .build()
        .map_err(|e| format!("cannot build its runtime: {e}"))?;
    let ShardLinks { outbox, inbox } = plan.links;
    let registry = plan.registry;
    let reports = plan.reports;
    let io_mode = plan.io_mode;
    let lane_capacity = plan.lane_capacity;
    let listener = plan.listener;
    let control = plan.control;
    let cluster = plan.cluster;
    let shard_ids: Rc<[ShardId]> = plan.shard_ids.iter().copied().collect();
    runtime.block_on(async move {
        let inbox = inbox.open().map_err(|e| format!("mesh inbox: {e}"))?;
        let listener_fd = listener.as_raw_fd();
        let listener = monoio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("cannot accept: {e}"))?;
        let control = monoio::net::UnixStream::from_std(control)
            .map_err(|e| format!("control socket: {e}"))?;
        let committer = Committer::new(io_mode).map_err(|e| format!("store committer: {e}"))?;
        let ctx = Rc::new(std::cell::RefCell::new(Ctx::new(
            shard,
            me,
            shard_ids,
            outbox,
            lane_capacity,
        )));
        // What the shard queued before serving (the recovered messages' timers).
        ctx.borrow_mut().after_input();
        let board = match cluster {
            Some(cluster) => {
                let link_listener = monoio::net::TcpListener::from_std(cluster.listener)
                    .map_err(|e| format!("cannot accept peer links: {e}"))?;
                ctx.borrow_mut().links = Some(link::Links::new(
                    shard_id,
                    cluster.keys,
                    cluster.key_id,
                    cluster.generation,
                ));
                tasks::apply_map(&mut ctx.borrow_mut(), &cluster.board);
                monoio::spawn(link::dial_loop(Rc::clone(&ctx)));
                monoio::spawn(link::link_accept_loop(Rc::clone(&ctx), link_listener));
                Some(cluster.board)
            }
            None => None,
        };
        let finished = Rc::clone(&ctx.borrow().finished);
        monoio::spawn(tasks::accept_loop(Rc::clone(&ctx), listener));
        monoio::spawn(tasks::inbox_loop(Rc::clone(&ctx), inbox));
        monoio::spawn(tasks::timer_loop(
            Rc::clone(&ctx),
            Arc::clone(&registry),
            me,
        ));
        monoio::spawn(tasks::commit_loop(Rc::clone(&ctx), committer));
        monoio::spawn(tasks::control_loop(
            Rc::clone(&ctx),
            control,
            listener_fd,
            board,
        ));
        let _ = reports.send(Report::Serving { shard: me });
        loop {
            finished.wait().await;
            let mut c = ctx.borrow_mut();
            if c.drained() {
                c.stats.counters.connections_open = 0;
                registry.publish(me, &c.stats);
                return Ok(());
            }
        }
    })
}
