//! The membership thread of a cluster host: SWIM gossip (hark-core's sans-IO
//! [`ClusterNode`] over foca) on the cluster address's UDP port, and the newest ownership map
//! published to the shard threads.
//!
//! ```text
//!  UDP datagrams ─► ClusterNode ─► Send ─► UDP
//!  clock ─────────►     │
//!                       └─► MapChanged ─► MapBoard (newest map) ─► 'm' on every shard's
//!                                                                   control socket
//! ```
//!
//! One plain thread, off the shards' cores' hot path: gossip is a few datagrams per second,
//! and a shard only reads the board when told a new map is there.

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use hark_core::cluster::{ClusterMap, ClusterNode, ClusterOutput};

use crate::metrics::{ClusterGauges, Registry};
use crate::runtime::now_us;

/// Longest the thread sleeps between looks at its command channel.
const COMMAND_POLL: Duration = Duration::from_millis(50);

/// How long a drain waits for the membership thread to send its leave.
pub const LEAVE_WAIT: Duration = Duration::from_secs(1);
/// Largest datagram read (foca's are at most `datagram_bytes_max`, ≤ 1400).
const DATAGRAM_BUF_BYTES: usize = 2048;

/// The newest ownership map, for the shard threads.
#[derive(Debug)]
pub struct MapBoard {
    latest: Mutex<Arc<ClusterMap>>,
}

impl MapBoard {
    /// A board holding `map`.
    pub fn new(map: Arc<ClusterMap>) -> Self {
        Self {
            latest: Mutex::new(map),
        }
    }

    /// The newest map.
    pub fn latest(&self) -> Arc<ClusterMap> {
        Arc::clone(&self.latest.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn publish(&self, map: Arc<ClusterMap>) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = map;
    }
}

/// What the relay asks of the membership thread.
#[derive(Debug)]
enum Command {
    /// Leave the map (drain): other hosts take this host's conversations. The sender hears
    /// back once the leave datagrams are sent.
    Leave(std::sync::mpsc::SyncSender<()>),
    /// Stop the thread.
    Stop,
}

/// The running membership thread.
#[derive(Debug)]
pub struct Membership {
    board: Arc<MapBoard>,
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl Membership {
    /// Starts gossiping on `socket` (the cluster address's UDP port) with `node`, which has
    /// joined already; `board` holds `node`'s map and receives every new one, and `notify`
    /// are the shards' control sockets (one `m` byte each says a new map is on the board).
    pub fn start(
        node: ClusterNode,
        socket: UdpSocket,
        board: Arc<MapBoard>,
        notify: Vec<UnixStream>,
        registry: Arc<Registry>,
    ) -> io::Result<Self> {
        let local_addr = socket.local_addr()?;
        let (commands, command_rx) = mpsc::channel();
        let thread_board = Arc::clone(&board);
        let thread = std::thread::Builder::new()
            .name("hark-membership".into())
            .spawn(move || {
                let publisher = Publisher {
                    board: thread_board,
                    notify,
                    registry,
                };
                run(node, socket, publisher, command_rx)
            })?;
        Ok(Self {
            board,
            commands,
            thread: Some(thread),
            local_addr,
        })
    }

    /// The newest map.
    pub fn board(&self) -> &Arc<MapBoard> {
        &self.board
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Leaves the map: every host (this one included) moves this host's conversations to
    /// their fallback shards.
    ///
    /// Waits (at most [`LEAVE_WAIT`]) until the leave is on the wire, so a host that drains
    /// and exits at once has told the others first; else they would only notice it gone by
    /// failure detection, and its clients' resumes would meet a map still naming it.
    pub fn leave(&self) {
        let (done, sent) = std::sync::mpsc::sync_channel(1);
        if self.commands.send(Command::Leave(done)).is_ok() {
            let _ = sent.recv_timeout(LEAVE_WAIT);
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where a new map goes: the board, the shards, the metrics.
struct Publisher {
    board: Arc<MapBoard>,
    notify: Vec<UnixStream>,
    registry: Arc<Registry>,
}

fn run(
    mut node: ClusterNode,
    socket: UdpSocket,
    mut publisher: Publisher,
    commands: Receiver<Command>,
) {
    let mut buf = vec![0u8; DATAGRAM_BUF_BYTES];
    // The first map (this host alone, or what the node knows already) goes out at once.
    publisher.publish(Arc::clone(node.map()));
    loop {
        drain_outputs(&mut node, &socket, &mut publisher);
        match commands.try_recv() {
            Ok(Command::Leave(done)) => {
                node.leave(now_us());
                drain_outputs(&mut node, &socket, &mut publisher);
                let _ = done.try_send(());
                continue;
            }
            Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {}
        }
        let now = now_us();
        let wait = node
            .next_wake_us()
            .map_or(COMMAND_POLL, |at| {
                Duration::from_micros(at.saturating_sub(now)).min(COMMAND_POLL)
            })
            .max(Duration::from_millis(1));
        // Fails only for a zero duration; `wait` is at least 1 ms.
        let _ = socket.set_read_timeout(Some(wait));
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => node.handle_datagram(now_us(), from, &buf[..len]),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(error) => tracing::warn!(%error, "cluster socket receive failed"),
        }
        let now = now_us();
        if node.next_wake_us().is_some_and(|at| at <= now) {
            node.handle_timeout(now);
        }
    }
}

fn drain_outputs(node: &mut ClusterNode, socket: &UdpSocket, publisher: &mut Publisher) {
    while let Some(output) = node.poll_output() {
        match output {
            ClusterOutput::Send { to, data } => {
                // Loss is SWIM's to handle; a failed send is one lost datagram.
                if let Err(error) = socket.send_to(&data, to) {
                    tracing::debug!(%error, %to, "cluster datagram not sent");
                }
            }
            ClusterOutput::MapChanged(map) => publisher.publish(map),
        }
    }
}

impl Publisher {
    fn publish(&mut self, map: Arc<ClusterMap>) {
        let membership = map.membership();
        tracing::info!(
            epoch = membership.epoch(),
            checksum = format_args!("{:016x}", membership.checksum()),
            hosts = map.hosts().len(),
            "ownership map changed"
        );
        self.registry.set_cluster(ClusterGauges {
            epoch: membership.epoch(),
            checksum: membership.checksum(),
            hosts: map.hosts().len() as u64,
        });
        self.board.publish(map);
        for shard in &mut self.notify {
            // A shard that exited has closed its end; the others read the byte.
            let _ = shard.write_all(b"m");
        }
    }
}
