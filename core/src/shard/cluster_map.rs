//! The cluster's map as one shard uses it: who owns a conversation (on this host or
//! another), where this host's listeners of another host's conversation meet, what a message
//! on a host that left is, and requests held while this shard catches up with a newer map.

use super::Shard;
use super::peer::MapVersion;
use super::session::ConnId;
use super::store::BodyStore;
use crate::ids::{ConvId, MsgId, ShardId};
use crate::map::Membership;
use crate::protocol::{ErrorCode, Request};

/// Requests held at most while this shard catches up with a newer map (beyond: refused with
/// `map_changed`).
pub const PARKED_REQUESTS_MAX: usize = 4096;

/// How long a request routed under a newer map waits for this shard to apply it, in µs.
pub const PARKED_WAIT_US: u64 = 2_000_000;

/// A request routed under a map newer than this shard's, held until the shard has it.
#[derive(Debug)]
pub(super) struct Parked {
    proxy: ConnId,
    map: MapVersion,
    request: Request,
    until_us: u64,
}

impl<S: BodyStore> Shard<S> {
    /// The cluster's map changed (a host joined, left or died): routing follows it, and
    /// mirrors of other hosts' conversations subscribe on their new owners. `cluster` must
    /// hold this host's shards as given to [`Shard::new`] (or none of them while this host
    /// drains).
    pub fn set_cluster_map(&mut self, now_us: u64, cluster: Membership) {
        self.now_us = now_us;
        self.cluster = cluster;
        self.retarget_mirrors();
        self.release_parked();
        self.finish_input();
    }

    /// The cluster map in force.
    pub fn cluster_map(&self) -> &Membership {
        &self.cluster
    }

    /// The shard of the cluster that owns `conv`.
    pub(super) fn owner_of(&self, conv: ConvId) -> ShardId {
        self.cluster.owner(conv).unwrap_or(self.shard)
    }

    /// The shard of this host where its listeners of `conv` meet when another host owns it
    /// (the conversation's owner among this host's shards alone).
    pub(super) fn edge_of(&self, conv: ConvId) -> ShardId {
        self.local_shards.owner(conv).unwrap_or(self.shard)
    }

    /// Why message `msg` cannot be served here: `owner_unavailable` when the host that
    /// stored it is not in the cluster now (it is reachable again once that host is back),
    /// else `message_unavailable` with `why`.
    pub(super) fn unavailable(&self, msg: MsgId, why: &str) -> (ErrorCode, String) {
        let home = msg.shard();
        let host_gone = home.host != self.shard.host
            && !self
                .cluster
                .shards()
                .iter()
                .any(|s| s.shard.host == home.host);
        if host_gone {
            let text = format!(
                "message {msg} is stored on host {}, which is not in the cluster now; it is \
                 reachable again when that host is back",
                home.host
            );
            (ErrorCode::OWNER_UNAVAILABLE, text)
        } else {
            (ErrorCode::MESSAGE_UNAVAILABLE, format!("the message {why}"))
        }
    }

    /// Whether `shard` runs on this host.
    pub(super) fn is_local(&self, shard: ShardId) -> bool {
        shard.host == self.shard.host
    }

    /// A routed request: served when the sender's map has this shard's checksum (the same
    /// owners); held when the sender's map is newer (this shard has not applied it yet, and
    /// will within moments), behind any request held before; refused otherwise.
    /// Only requests that choose an owner (talk start, listen, history) are checked against
    /// the map: the frames, end and unlisten of a stream or subscription open here belong
    /// here whatever the map says now (a message goes on to its end where it started). They
    /// wait only behind a request of their own connection held before them.
    pub(super) fn route_or_park(&mut self, proxy: ConnId, map: MapVersion, request: Request) {
        if !chooses_owner(&request) {
            let behind = self.parked.iter().any(|p| p.proxy == proxy);
            if behind && self.parked.len() < PARKED_REQUESTS_MAX {
                let until_us = self.now_us.saturating_add(PARKED_WAIT_US);
                self.parked.push_back(Parked {
                    proxy,
                    map,
                    request,
                    until_us,
                });
                return;
            }
            return self.dispatch(proxy, request);
        }
        let mine = self.map_version();
        if self.parked.is_empty() && map.checksum == mine.checksum {
            return self.dispatch(proxy, request);
        }
        if map.epoch > mine.epoch && self.parked.len() < PARKED_REQUESTS_MAX {
            let until_us = self.now_us.saturating_add(PARKED_WAIT_US);
            self.parked.push_back(Parked {
                proxy,
                map,
                request,
                until_us,
            });
            return;
        }
        if map.checksum == mine.checksum {
            return self.dispatch(proxy, request);
        }
        self.refuse_stale_map(proxy, &request);
    }

    /// Serves or refuses held requests, oldest first: those whose map this shard now has,
    /// and (when `expire`) those held too long. Stops at the first that must wait on.
    pub(super) fn release_parked(&mut self) {
        let mine = self.map_version();
        while let Some(parked) = self.parked.front() {
            let ready = parked.map.checksum == mine.checksum || !chooses_owner(&parked.request);
            let expired = parked.until_us <= self.now_us || parked.map.epoch <= mine.epoch;
            if !ready && !expired {
                return;
            }
            let Some(parked) = self.parked.pop_front() else {
                return;
            };
            if self.session(parked.proxy).is_none() {
                continue; // the proxy was detached meanwhile
            }
            if ready {
                self.dispatch(parked.proxy, parked.request);
            } else {
                self.refuse_stale_map(parked.proxy, &parked.request);
            }
        }
    }
}

/// Whether `request` picks its conversation's owner (and so depends on the map).
fn chooses_owner(request: &Request) -> bool {
    matches!(
        request,
        Request::TalkStart { .. } | Request::Listen { .. } | Request::History { .. }
    )
}
