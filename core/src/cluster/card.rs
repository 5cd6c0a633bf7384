//! The identity card a host gossips about itself: who it is, which boot of it, where to
//! reach it and how many shards it brings.

use std::cmp::Ordering;
use std::net::SocketAddr;

use foca::Identity;

use super::error::CardError;
use crate::ids::HostId;
use crate::map::{HostSpec, MEMBERSHIP_SHARDS_MAX};

/// One boot of one host, as the cluster knows it: foca's identity.
///
/// Two cards with the same [`HostId`] are two boots of the same host (foca's `Addr` is the
/// host id); the higher `generation` wins, so a restarted host replaces its previous boot and
/// a host declared down by mistake rejoins with [`HostCard::renewed`]. A card can only be
/// built valid: 1..=[`MEMBERSHIP_SHARDS_MAX`] shards, a positive weight, reachable addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostCard {
    host: HostId,
    generation: u64,
    cluster_addr: SocketAddr,
    client_addr: SocketAddr,
    cores: u16,
    weight_per_core: u32,
}

impl HostCard {
    /// A card for this host. `generation` should grow with every boot (the relay uses its boot
    /// time in microseconds) so the cluster prefers the new boot over a stale one.
    pub fn new(
        host: HostId,
        generation: u64,
        cluster_addr: SocketAddr,
        client_addr: SocketAddr,
        cores: u16,
        weight_per_core: u32,
    ) -> Result<Self, CardError> {
        if cores == 0 || usize::from(cores) > MEMBERSHIP_SHARDS_MAX {
            return Err(CardError::CoresOutOfRange { cores });
        }
        if weight_per_core == 0 {
            return Err(CardError::WeightZero);
        }
        for addr in [cluster_addr, client_addr] {
            if addr.ip().is_unspecified() {
                return Err(CardError::AddressUnspecified(addr));
            }
            if addr.port() == 0 {
                return Err(CardError::PortZero(addr));
            }
        }
        Ok(Self {
            host,
            generation,
            cluster_addr,
            client_addr,
            cores,
            weight_per_core,
        })
    }

    /// The host.
    pub fn host(&self) -> HostId {
        self.host
    }

    /// Which boot of the host (higher is newer).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where peers send gossip datagrams (UDP) and open peer links (TCP).
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster_addr
    }

    /// Where clients are told to connect.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// How many shards (cores 0..cores) the host runs.
    pub fn cores(&self) -> u16 {
        self.cores
    }

    /// The weight of each of its shards in the ownership map.
    pub fn weight_per_core(&self) -> u32 {
        self.weight_per_core
    }

    /// The same host with the next generation: what a host declared down uses to rejoin.
    /// `None` at `u64::MAX` (the host then stays out until restarted with a new generation).
    pub fn renewed(&self) -> Option<Self> {
        let generation = self.generation.checked_add(1)?;
        Some(Self {
            generation,
            ..self.clone()
        })
    }

    /// The host's shards as the ownership map lists them.
    pub(crate) fn host_spec(&self) -> HostSpec {
        HostSpec {
            host: self.host,
            cores: (0..self.cores).collect(),
            weight_per_core: self.weight_per_core,
        }
    }

    /// Orders two boots of the same host: generation first, then the other fields, so every
    /// node picks the same winner even for two boots that claim the same generation.
    fn precedence(&self, other: &Self) -> Ordering {
        self.generation
            .cmp(&other.generation)
            .then_with(|| self.cluster_addr.cmp(&other.cluster_addr))
            .then_with(|| self.client_addr.cmp(&other.client_addr))
            .then_with(|| self.cores.cmp(&other.cores))
            .then_with(|| self.weight_per_core.cmp(&other.weight_per_core))
    }
}

impl Identity for HostCard {
    type Addr = HostId;

    fn renew(&self) -> Option<Self> {
        self.renewed()
    }

    fn addr(&self) -> HostId {
        self.host
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.precedence(adversary) == Ordering::Greater
    }
}
