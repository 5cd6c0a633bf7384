//! The simulated network of the cluster simulation: membership datagrams (lossy, delayed,
//! reordered, cut by partitions) and peer links between shards of different hosts (in order,
//! delayed, lossless while up; broken by partitions, crashes and map removals, and then both
//! ends hear `peer_lost`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand_core::Rng;
use rand_xorshift::XorShiftRng;

use crate::ids::ShardId;
use crate::shard::PeerMessage;

/// How membership datagrams fare now.
#[derive(Debug, Clone, Copy)]
pub(super) struct Weather {
    pub loss_per_mille: u64,
    pub delay_us_min: u64,
    pub delay_us_max: u64,
}

/// No loss, short delays.
pub(super) const HEALTHY: Weather = Weather {
    loss_per_mille: 0,
    delay_us_min: 100,
    delay_us_max: 2_000,
};

/// Longest one-way delay of a peer link message, in µs (a link's messages keep their order).
pub(super) const LINK_DELAY_US_MAX: u64 = 3_000;

/// Most messages queued on one peer link: a sim that queues more has a runaway loop.
pub(super) const LINK_QUEUE_MAX: usize = 100_000;

/// A membership datagram in flight.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Flight {
    pub due_us: u64,
    pub seq: u64,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// One direction of a peer link between two shards of different hosts.
#[derive(Default)]
pub(super) struct Link {
    /// Established (a send found the peer reachable); messages flow in order.
    pub up: bool,
    pub queue: VecDeque<(u64, PeerMessage)>,
}

/// The network between hosts.
pub(super) struct Net {
    pub weather: Weather,
    /// `side[i]` is host i's side of a partition; nothing crosses between different sides.
    pub side: Option<Vec<u8>>,
    pub flights: BinaryHeap<Reverse<Flight>>,
    flight_seq: u64,
    pub links: BTreeMap<(ShardId, ShardId), Link>,
    /// `(shard, peer)`: tell `shard` that its link with `peer` is gone.
    pub lost: Vec<(ShardId, ShardId)>,
}

pub(super) fn cluster_addr(index: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, index as u8 + 1)), 7000)
}

pub(super) fn client_addr(index: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, index as u8 + 1)), 7100)
}

/// The host index a cluster address names.
pub(super) fn index_of(addr: SocketAddr, hosts: usize) -> Option<usize> {
    let octet = match addr.ip() {
        IpAddr::V4(v4) => usize::from(v4.octets()[3]),
        IpAddr::V6(_) => 0,
    };
    (addr.port() == 7000 && (1..=hosts).contains(&octet)).then(|| octet - 1)
}

/// The host index of a shard (hosts are numbered from 1).
pub(super) fn host_index(shard: ShardId) -> usize {
    usize::from(shard.host.0) - 1
}

impl Net {
    pub fn new() -> Self {
        Self {
            weather: HEALTHY,
            side: None,
            flights: BinaryHeap::new(),
            flight_seq: 0,
            links: BTreeMap::new(),
            lost: Vec::new(),
        }
    }

    /// Whether hosts `a` and `b` (indexes) can reach each other now.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.side.as_ref().is_none_or(|side| side[a] == side[b])
    }

    /// Sends a membership datagram, subject to the weather and the partition.
    pub fn transmit(
        &mut self,
        rng: &mut XorShiftRng,
        now_us: u64,
        from: usize,
        to: SocketAddr,
        hosts: usize,
        data: Vec<u8>,
    ) {
        let Some(to_index) = index_of(to, hosts) else {
            return;
        };
        if !self.connected(from, to_index) || rng.next_u64() % 1000 < self.weather.loss_per_mille {
            return;
        }
        let span = self.weather.delay_us_max - self.weather.delay_us_min;
        let delay = self.weather.delay_us_min + rng.next_u64() % (span + 1);
        self.flight_seq += 1;
        self.flights.push(Reverse(Flight {
            due_us: now_us + delay,
            seq: self.flight_seq,
            from: cluster_addr(from),
            to,
            data,
        }));
    }

    /// Queues `msg` on the link `from → to`, establishing it when `to` is `reachable`; an
    /// unreachable peer drops the message and is reported lost to both ends (again for every
    /// dropped message, so neither waits on one that was not sent).
    pub fn send(
        &mut self,
        rng: &mut XorShiftRng,
        now_us: u64,
        from: ShardId,
        to: ShardId,
        reachable: bool,
        msg: PeerMessage,
    ) {
        let link = self.links.entry((from, to)).or_default();
        if !link.up {
            if !reachable {
                // The relay closes its accepted link from a peer it cannot answer, so the
                // peer learns it too (its dialed link fails).
                for pair in [(from, to), (to, from)] {
                    if !self.lost.contains(&pair) {
                        self.lost.push(pair);
                    }
                }
                return;
            }
            link.up = true;
        }
        let last = link.queue.back().map_or(0, |(due, _)| *due);
        let due = (now_us + 1 + rng.next_u64() % LINK_DELAY_US_MAX).max(last);
        assert!(
            link.queue.len() < LINK_QUEUE_MAX,
            "peer link {from} → {to} holds {LINK_QUEUE_MAX} messages"
        );
        link.queue.push_back((due, msg));
    }

    /// Breaks every established link for which `cut(from, to)` holds: queued messages are
    /// dropped and both ends hear `peer_lost`.
    pub fn break_links(&mut self, mut cut: impl FnMut(ShardId, ShardId) -> bool) {
        for (&(from, to), link) in self.links.iter_mut() {
            if link.up && cut(from, to) {
                link.up = false;
                link.queue.clear();
                self.lost.push((from, to));
                self.lost.push((to, from));
            }
        }
    }

    /// The earliest time something is due on a link.
    pub fn next_link_due(&self) -> Option<u64> {
        self.links
            .values()
            .filter_map(|l| l.queue.front().map(|(due, _)| *due))
            .min()
    }

    /// Takes the messages due by `now_us`, per link in order.
    pub fn take_due(&mut self, now_us: u64) -> Vec<(ShardId, ShardId, PeerMessage)> {
        let mut due = Vec::new();
        for (&(from, to), link) in self.links.iter_mut() {
            while link.queue.front().is_some_and(|(at, _)| *at <= now_us) {
                if let Some((_, msg)) = link.queue.pop_front() {
                    due.push((from, to, msg));
                }
            }
        }
        due
    }
}
