//! The map the relay consumes: the ownership map over the live hosts, and where they are.

use std::collections::BTreeMap;

use super::card::HostCard;
use crate::ids::HostId;
use crate::map::{MEMBERSHIP_SHARDS_MAX, Membership};
use crate::shard::MapVersion;

/// The live hosts as one node sees them, at one epoch.
///
/// `membership` is the weighted HRW map over every shard of `hosts`; two nodes with the same
/// `version().checksum` name the same owners. Hosts whose shards would push the total past
/// [`MEMBERSHIP_SHARDS_MAX`] (taken in [`HostId`] order, so every node leaves out the same
/// ones) are in neither.
#[derive(Debug, Clone)]
pub struct ClusterMap {
    membership: Membership,
    hosts: BTreeMap<HostId, HostCard>,
    hosts_left_out: usize,
}

impl ClusterMap {
    /// The map of `live` at `epoch`.
    pub(crate) fn build(epoch: u64, live: &BTreeMap<HostId, HostCard>) -> Self {
        let mut hosts = BTreeMap::new();
        let mut shards = 0usize;
        let mut hosts_left_out = 0;
        for (host, card) in live {
            let cores = usize::from(card.cores());
            if shards + cores > MEMBERSHIP_SHARDS_MAX {
                hosts_left_out += 1;
                continue;
            }
            shards += cores;
            hosts.insert(*host, card.clone());
        }
        let membership = Membership::from_hosts(epoch, hosts.values().map(HostCard::host_spec))
            // Invariant: hosts are unique (map keys), cards have weight > 0 and 1..=limit
            // cores, and the loop above keeps the shard total within the limit.
            .expect("cards are valid and the shard total is within MEMBERSHIP_SHARDS_MAX");
        Self {
            membership,
            hosts,
            hosts_left_out,
        }
    }

    /// The same hosts at another epoch.
    pub(crate) fn with_epoch(&self, epoch: u64) -> Self {
        Self::build(epoch, &self.hosts)
    }

    /// The ownership map over the live hosts' shards.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The live hosts in the map, with where to reach them.
    pub fn hosts(&self) -> &BTreeMap<HostId, HostCard> {
        &self.hosts
    }

    /// One live host's card.
    pub fn host(&self, host: HostId) -> Option<&HostCard> {
        self.hosts.get(&host)
    }

    /// The `(epoch, checksum)` that forwarded work carries: equal checksums mean equal
    /// owners, the epoch orders maps.
    pub fn version(&self) -> MapVersion {
        MapVersion {
            epoch: self.membership.epoch(),
            checksum: self.membership.checksum(),
        }
    }

    /// Live hosts left out because the shard total would pass [`MEMBERSHIP_SHARDS_MAX`].
    pub fn hosts_left_out(&self) -> usize {
        self.hosts_left_out
    }
}
