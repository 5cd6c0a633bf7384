//! What a cluster host starts besides its shards: the peer-link listeners on the cluster
//! address, the gossip socket and membership node, and the board the shards read maps from.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;

use hark_core::HostId;
use hark_core::cluster::{ClusterConfig, ClusterNode, HostCard};
use hark_core::shard::peer_wire::LinkKeys;
use hark_core::token::{KeyId, Keyring};

use super::{StartError, bind_listeners, io_error, now_us};
use crate::cluster::MapBoard;

/// A cluster host's membership settings (see `docs/cluster.md`).
#[derive(Debug, Clone)]
pub struct RuntimeCluster {
    /// Cluster address: UDP gossip and TCP peer links (port 0 picks one).
    pub listen: SocketAddr,
    /// Other hosts' cluster addresses to join through.
    pub seeds: Vec<SocketAddr>,
    /// The client address handed to clients for this host; `None`: the bound client address.
    pub advertise: Option<SocketAddr>,
    /// Each shard's weight in the ownership map.
    pub weight_per_core: u32,
}

/// What a shard thread of a cluster host gets.
pub(super) struct ShardCluster {
    pub(super) listener: StdTcpListener,
    pub(super) board: Arc<MapBoard>,
    pub(super) keys: LinkKeys,
    pub(super) key_id: KeyId,
    pub(super) generation: u64,
}

/// A cluster host's start: its peer-link listeners, its gossip socket and node, and the map
/// board the shards read.
pub(super) struct ClusterStart {
    listeners: Vec<StdTcpListener>,
    pub(super) addr: SocketAddr,
    pub(super) socket: std::net::UdpSocket,
    pub(super) node: ClusterNode,
    pub(super) board: Arc<MapBoard>,
    keys: LinkKeys,
    key_id: KeyId,
    generation: u64,
}

impl ClusterStart {
    pub(super) fn bind(
        settings: &RuntimeCluster,
        host: HostId,
        client_addr: SocketAddr,
        count: usize,
        keyring: &Keyring,
    ) -> Result<Self, StartError> {
        let listeners = bind_listeners(settings.listen, count)?;
        let addr = listeners[0]
            .local_addr()
            .map_err(io_error("read the cluster address"))?;
        // Gossip uses the same port number over UDP.
        let socket = std::net::UdpSocket::bind(addr)
            .map_err(io_error(format!("bind the cluster address {addr} (UDP)")))?;
        let generation = now_us();
        let card = HostCard::new(
            host,
            generation,
            addr,
            settings.advertise.unwrap_or(client_addr),
            count as u16,
            settings.weight_per_core,
        )
        .map_err(|e| StartError::Map(e.to_string()))?;
        // The join's nonces come from the node's generator: seed it unpredictably.
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| StartError::Io {
            what: "seed the membership node".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut node = ClusterNode::new(card, ClusterConfig::default(), u64::from_le_bytes(seed))
            .map_err(|e| StartError::Map(e.to_string()))?;
        node.join(generation, &settings.seeds)
            .map_err(|e| StartError::Map(e.to_string()))?;
        let board = Arc::new(MapBoard::new(Arc::clone(node.map())));
        Ok(Self {
            listeners,
            addr,
            socket,
            node,
            board,
            keys: LinkKeys::derive(keyring),
            key_id: keyring.minting_key_id(),
            generation,
        })
    }

    /// The next shard's part (listeners are handed out in shard order).
    pub(super) fn shard_plan(&mut self) -> Option<ShardCluster> {
        let listener = self.listeners.pop()?;
        Some(ShardCluster {
            listener,
            board: Arc::clone(&self.board),
            keys: self.keys.clone(),
            key_id: self.key_id,
            generation: self.generation,
        })
    }
}
