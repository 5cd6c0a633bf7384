//! The sans-IO membership node: foca's SWIM plus the epoch rule, driven by datagrams and
//! time that the caller supplies.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use foca::{Foca, Notification, Runtime, Timer};
use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;

use super::card::HostCard;
use super::codec::{
    CardCodec, Datagram, ENVELOPE_LEN, EnvelopeError, MapAnnouncement, decode_datagram,
    encode_i_am, encode_who_are_you, swim_envelope,
};
use super::config::ClusterConfig;
use super::error::ClusterError;
use super::gossip::{GossipError, MapGossip};
use super::map::ClusterMap;
use super::stats::{ClusterStats, DropReason};
use super::timers::TimerQueue;
use crate::ids::HostId;

/// Most datagrams waiting in the output queue; the caller drains it after every call, so
/// this is reached only by a caller that stops draining (further sends are dropped and
/// counted as [`DropReason::OutputQueueFull`], which SWIM treats as loss).
pub const OUTPUT_QUEUE_MAX: usize = 256;
/// Most seed addresses [`ClusterNode::join`] takes.
pub const JOIN_SEEDS_MAX: usize = 64;

/// What the node asks its caller to do.
#[derive(Debug, Clone)]
pub enum ClusterOutput {
    /// Send `data` as one UDP datagram to `to`.
    Send {
        /// A host's cluster address.
        to: SocketAddr,
        /// The datagram, at most `datagram_bytes_max` long.
        data: Vec<u8>,
    },
    /// The live hosts, a live host's card or the epoch changed: hand the new map to the
    /// shards. Only the newest is reported when several changes happen between polls.
    MapChanged(Arc<ClusterMap>),
}

type Swim = Foca<HostCard, CardCodec, XorShiftRng, MapGossip>;

/// One host's membership: which hosts are live, as an ownership map with an epoch.
///
/// Sans-IO (like foca itself): the caller feeds received datagrams and the current time,
/// calls [`handle_timeout`](Self::handle_timeout) at [`next_wake_us`](Self::next_wake_us),
/// and drains [`poll_output`](Self::poll_output) after every call. No sockets, threads or
/// clocks inside, so a seeded simulation replays a run exactly.
///
/// ```text
///   datagram ─► handle_datagram ─► foca (SWIM) ─► live hosts ─► epoch rule ─► MapChanged
///   now ──────► handle_timeout ──►   │                              ▲
///                                    └─► map announcements ─────────┘   Send ─► socket
/// ```
///
/// **Epoch rule.** Whenever the live set a node computes changes (a host joins, leaves or is
/// declared down: anything that changes the shards or weights), the node's epoch becomes
/// `max(own epoch, highest epoch seen in any announcement) + 1`. Every node gossips
/// `(host, epoch, checksum)` as a foca custom broadcast on each change and every
/// `epoch_rebroadcast_interval_ms`; a node that hears its own checksum with a higher epoch
/// adopts that epoch. Once the live set stops changing, every live node ends with the same
/// checksum and the highest epoch any of them reached. A new card for a host that stays
/// (a renewed or restarted boot with the same shards) is reported as a `MapChanged` at the
/// same version: the owners did not change.
pub struct ClusterNode {
    swim: Swim,
    config: ClusterConfig,
    timers: TimerQueue,
    sends: VecDeque<(SocketAddr, Vec<u8>)>,
    map_changed: Option<Arc<ClusterMap>>,
    map: Arc<ClusterMap>,
    live: BTreeMap<HostId, HostCard>,
    announcements: Receiver<MapAnnouncement>,
    inbox_len: usize,
    epoch_seen_max: u64,
    announce_seq: u64,
    seeds: Vec<SocketAddr>,
    join_nonce: u64,
    join_retry_due_us: Option<u64>,
    rebroadcast_due_us: Option<u64>,
    left: bool,
    swim_state: SwimState,
    stats: ClusterStats,
}

impl fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterNode")
            .field("card", self.swim.identity())
            .field("map", &self.map.version())
            .field("live", &self.live.keys().collect::<Vec<_>>())
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

/// What foca told us about its own connection state.
#[derive(Debug, Default, Clone, Copy)]
struct SwimState {
    /// foca is connected: it probes and gossips (it has live peers and is not down).
    connected: bool,
    /// foca renewed its identity since the last check.
    rejoined: bool,
}

/// foca's runtime: sends go to the output queue, timers to the timer queue.
struct Effects<'a> {
    now_us: u64,
    timers: &'a mut TimerQueue,
    sends: &'a mut VecDeque<(SocketAddr, Vec<u8>)>,
    stats: &'a mut ClusterStats,
    state: &'a mut SwimState,
}

impl Runtime<HostCard> for Effects<'_> {
    fn notify(&mut self, notification: Notification<'_, HostCard>) {
        match notification {
            Notification::Active => self.state.connected = true,
            Notification::Idle | Notification::Defunct => self.state.connected = false,
            Notification::Rejoin(_) => {
                self.stats.renewals += 1;
                // foca resets to disconnected on a new identity.
                self.state.connected = false;
                self.state.rejoined = true;
            }
            _ => {}
        }
    }

    fn send_to(&mut self, to: HostCard, data: &[u8]) {
        let mut out = Vec::with_capacity(ENVELOPE_LEN + data.len());
        swim_envelope(&mut out);
        out.extend_from_slice(data);
        queue_send(self.sends, self.stats, to.cluster_addr(), out);
    }

    fn submit_after(&mut self, event: Timer<HostCard>, after: std::time::Duration) {
        self.timers.schedule(self.now_us, after, event);
    }
}

fn queue_send(
    sends: &mut VecDeque<(SocketAddr, Vec<u8>)>,
    stats: &mut ClusterStats,
    to: SocketAddr,
    data: Vec<u8>,
) {
    if sends.len() >= OUTPUT_QUEUE_MAX {
        stats.count_drop(DropReason::OutputQueueFull);
        return;
    }
    stats.datagrams_out += 1;
    sends.push_back((to, data));
}

impl ClusterNode {
    /// A node for this host, alone in its map at epoch 1 until it hears from others.
    /// `rng_seed` drives foca's choices and the join nonce: the relay passes a random one, a
    /// simulation a fixed one to replay a run.
    pub fn new(card: HostCard, config: ClusterConfig, rng_seed: u64) -> Result<Self, ClusterError> {
        config.validate()?;
        let inbox_len = MapGossip::inbox_len_for(config.datagram_bytes_max.into());
        let (gossip, announcements) = MapGossip::new(inbox_len);
        let join_nonce = XorShiftRng::seed_from_u64(!rng_seed).next_u64();
        let mut live = BTreeMap::new();
        live.insert(card.host(), card.clone());
        let map = Arc::new(ClusterMap::build(1, &live));
        let swim = Foca::with_custom_broadcast(
            card,
            config.foca_config(),
            XorShiftRng::seed_from_u64(rng_seed),
            CardCodec,
            gossip,
        );
        Ok(Self {
            swim,
            config,
            timers: TimerQueue::default(),
            sends: VecDeque::new(),
            map_changed: None,
            map,
            live,
            announcements,
            inbox_len,
            epoch_seen_max: 1,
            announce_seq: 0,
            seeds: Vec::new(),
            join_nonce,
            join_retry_due_us: None,
            rebroadcast_due_us: None,
            left: false,
            swim_state: SwimState::default(),
            stats: ClusterStats::default(),
        })
    }

    /// Starts joining through `seeds` (cluster addresses of some hosts, ids unknown): each is
    /// asked for its card, and foca announces this host to every card that answers. Seeds
    /// are asked again every `join_retry_interval_ms` while foca is not connected (no live
    /// peer, or just renewed after being declared down). Our own address
    /// is skipped; an empty list makes a cluster of one that others join.
    pub fn join(&mut self, now_us: u64, seeds: &[SocketAddr]) -> Result<(), ClusterError> {
        if seeds.len() > JOIN_SEEDS_MAX {
            return Err(ClusterError::SeedsTooMany {
                count: seeds.len(),
                max: JOIN_SEEDS_MAX,
            });
        }
        let own = self.swim.identity().cluster_addr();
        let mut list: Vec<SocketAddr> = seeds.iter().copied().filter(|s| *s != own).collect();
        list.sort_unstable();
        list.dedup();
        self.seeds = list;
        self.start_timers(now_us);
        if !self.left {
            self.ask_seeds();
        }
        Ok(())
    }

    /// Handles one received datagram. Bytes that are not a valid hark cluster datagram are
    /// dropped and counted in [`stats`](Self::stats); nothing panics on input.
    pub fn handle_datagram(&mut self, now_us: u64, from: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in += 1;
        if self.left {
            self.stats.count_drop(DropReason::AfterLeave);
            return;
        }
        if data.len() > usize::from(self.config.datagram_bytes_max) {
            self.stats.count_drop(DropReason::TooBig);
            return;
        }
        self.start_timers(now_us);
        match decode_datagram(data) {
            Err(error) => self.stats.count_drop(match error {
                EnvelopeError::NotHark => DropReason::NotHark,
                EnvelopeError::VersionUnknown(_) => DropReason::VersionUnknown,
                EnvelopeError::KindUnknown(_) => DropReason::KindUnknown,
                EnvelopeError::Body(_) => DropReason::Malformed,
            }),
            Ok(Datagram::Swim(body)) => {
                let (swim, effects) = self.split(now_us);
                let result = swim.handle_data(body, effects);
                self.count_result(result);
            }
            Ok(Datagram::WhoAreYou { nonce }) => {
                let answer = encode_i_am(nonce, self.swim.identity());
                queue_send(&mut self.sends, &mut self.stats, from, answer);
            }
            Ok(Datagram::IAm { nonce, card }) => {
                if nonce != self.join_nonce {
                    self.stats.count_drop(DropReason::Unsolicited);
                } else if card.host() != self.swim.identity().host() {
                    let (swim, effects) = self.split(now_us);
                    let result = swim.announce(card, effects);
                    self.count_result(result);
                }
            }
        }
        self.absorb(now_us);
    }

    /// Runs every timer due at `now_us`: foca's probes, suspicions and gossip, the seed
    /// retry and the epoch re-broadcast.
    pub fn handle_timeout(&mut self, now_us: u64) {
        if self.left {
            return;
        }
        self.start_timers(now_us);
        // Bounded by the events pending on entry: new ones are due strictly later (every
        // foca duration is at least 1 ms, checked by the config).
        for _ in 0..self.timers.len() {
            let Some(timer) = self.timers.pop_due(now_us) else {
                break;
            };
            let (swim, effects) = self.split(now_us);
            let result = swim.handle_timer(timer, effects);
            self.count_result(result);
        }
        if self.join_retry_due_us.is_some_and(|due| due <= now_us) {
            self.join_retry_due_us =
                Some(now_us + u64::from(self.config.join_retry_interval_ms) * 1000);
            if !self.swim_state.connected {
                self.ask_seeds();
            }
        }
        if self.rebroadcast_due_us.is_some_and(|due| due <= now_us) {
            self.rebroadcast_due_us =
                Some(now_us + u64::from(self.config.epoch_rebroadcast_interval_ms) * 1000);
            self.announce_map();
        }
        self.absorb(now_us);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work; `None` after
    /// [`leave`](Self::leave).
    pub fn next_wake_us(&self) -> Option<u64> {
        if self.left {
            return None;
        }
        [
            self.timers.next_due_us(),
            self.join_retry_due_us,
            self.rebroadcast_due_us,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Leaves the cluster for a drain: tells a few live hosts this host is down, and from now
    /// on this node's map excludes this host (so the draining host knows where its
    /// conversations go). The node is inert afterwards: it drops datagrams and has no
    /// timers, so its map stays the live set as of leaving.
    pub fn leave(&mut self, now_us: u64) {
        if self.left {
            return;
        }
        let (swim, effects) = self.split(now_us);
        let result = swim.leave_cluster(effects);
        self.count_result(result);
        self.left = true;
        self.timers.clear();
        self.join_retry_due_us = None;
        self.rebroadcast_due_us = None;
        self.absorb(now_us);
    }

    /// The next thing to do: a changed map first, then datagrams to send in order.
    pub fn poll_output(&mut self) -> Option<ClusterOutput> {
        if let Some(map) = self.map_changed.take() {
            return Some(ClusterOutput::MapChanged(map));
        }
        self.sends
            .pop_front()
            .map(|(to, data)| ClusterOutput::Send { to, data })
    }

    /// The current map.
    pub fn map(&self) -> &Arc<ClusterMap> {
        &self.map
    }

    /// This host's card (its generation grows when it rejoins after being declared down).
    pub fn card(&self) -> &HostCard {
        self.swim.identity()
    }

    /// Whether [`leave`](Self::leave) was called.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Counters for metrics.
    pub fn stats(&self) -> ClusterStats {
        let mut stats = self.stats.clone();
        stats.members = self.map.hosts().len();
        stats.hosts_left_out = self.map.hosts_left_out();
        stats.epoch = self.map.version().epoch;
        stats.checksum = self.map.version().checksum;
        stats.timers = self.timers.len();
        stats
    }

    fn split(&mut self, now_us: u64) -> (&mut Swim, Effects<'_>) {
        (
            &mut self.swim,
            Effects {
                now_us,
                timers: &mut self.timers,
                sends: &mut self.sends,
                stats: &mut self.stats,
                state: &mut self.swim_state,
            },
        )
    }

    fn start_timers(&mut self, now_us: u64) {
        if self.left {
            return;
        }
        self.join_retry_due_us.get_or_insert(
            now_us.saturating_add(u64::from(self.config.join_retry_interval_ms) * 1000),
        );
        self.rebroadcast_due_us.get_or_insert(
            now_us.saturating_add(u64::from(self.config.epoch_rebroadcast_interval_ms) * 1000),
        );
    }

    fn ask_seeds(&mut self) {
        for seed in &self.seeds {
            let question = encode_who_are_you(self.join_nonce);
            queue_send(&mut self.sends, &mut self.stats, *seed, question);
        }
    }

    /// Counts what foca reported; input errors are drops, the rest internal errors.
    fn count_result(&mut self, result: Result<(), foca::Error>) {
        let Err(error) = result else {
            return;
        };
        match error {
            foca::Error::DataTooBig => self.stats.count_drop(DropReason::TooBig),
            foca::Error::Decode(_) => self.stats.count_drop(DropReason::Malformed),
            foca::Error::DataFromOurselves => self.stats.count_drop(DropReason::FromOurselves),
            foca::Error::IndirectForOurselves | foca::Error::MalformedPacket => {
                self.stats.count_drop(DropReason::Refused);
            }
            foca::Error::CustomBroadcast(inner) => {
                let reason = match inner.downcast_ref::<GossipError>() {
                    Some(GossipError::InboxFull) => DropReason::AnnouncementInboxFull,
                    _ => DropReason::AnnouncementMalformed,
                };
                self.stats.count_drop(reason);
            }
            _ => self.stats.internal_errors += 1,
        }
    }

    /// Takes the announcements foca accepted, then recomputes the live set.
    fn absorb(&mut self, now_us: u64) {
        if self.swim_state.rejoined && !self.left {
            // After renewing its identity foca stays disconnected (no probes) until some
            // message arrives, even with peers it believes live; a peer that believes us down
            // may never send one. Applying no updates makes foca re-check and, with live
            // peers, start probing them under the new identity.
            self.swim_state.rejoined = false;
            let (swim, effects) = self.split(now_us);
            let result = swim.apply_many(std::iter::empty(), true, effects);
            self.count_result(result);
        }
        // Bounded: the channel holds `inbox_len`, plus at most one own announcement per
        // adoption, and an adoption needs a strictly higher epoch from another host.
        for _ in 0..2 * self.inbox_len + 2 {
            let Ok(item) = self.announcements.try_recv() else {
                break;
            };
            self.take_announcement(item);
        }
        self.refresh_live();
    }

    fn take_announcement(&mut self, item: MapAnnouncement) {
        if item.host == self.swim.identity().host() {
            return;
        }
        self.epoch_seen_max = self.epoch_seen_max.max(item.epoch);
        let version = self.map.version();
        if item.checksum == version.checksum && item.epoch > version.epoch {
            self.set_map(self.map.with_epoch(item.epoch));
        }
    }

    fn refresh_live(&mut self) {
        let mut live: BTreeMap<HostId, HostCard> = self
            .swim
            .iter_members()
            .map(|member| (member.id().host(), member.id().clone()))
            .collect();
        if !self.left {
            let own = self.swim.identity();
            live.insert(own.host(), own.clone());
        }
        if live == self.live {
            return;
        }
        let shards = |hosts: &BTreeMap<HostId, HostCard>| -> Vec<(HostId, u16, u32)> {
            hosts
                .values()
                .map(|card| (card.host(), card.cores(), card.weight_per_core()))
                .collect()
        };
        let shards_changed = shards(&live) != shards(&self.live);
        self.live = live;
        if shards_changed {
            let epoch = self.map.version().epoch.max(self.epoch_seen_max) + 1;
            self.set_map(ClusterMap::build(epoch, &self.live));
        } else {
            // Same hosts and shards, new cards (a boot renewed or restarted before anyone
            // noticed it was gone): the owners are unchanged, so the version is too.
            self.map = Arc::new(ClusterMap::build(self.map.version().epoch, &self.live));
            self.map_changed = Some(Arc::clone(&self.map));
        }
    }

    fn set_map(&mut self, map: ClusterMap) {
        self.epoch_seen_max = self.epoch_seen_max.max(map.version().epoch);
        self.map = Arc::new(map);
        self.map_changed = Some(Arc::clone(&self.map));
        self.announce_map();
    }

    fn announce_map(&mut self) {
        if self.left {
            return;
        }
        self.announce_seq += 1;
        let card = self.swim.identity();
        let item = MapAnnouncement {
            host: card.host(),
            generation: card.generation(),
            seq: self.announce_seq,
            epoch: self.map.version().epoch,
            checksum: self.map.version().checksum,
        };
        let result = self.swim.add_broadcast(&item.encode()).map(drop);
        self.count_result(result);
    }
}
