//! A seeded, deterministic simulation of a cluster of [`ClusterNode`]s in one thread: no
//! sockets, no clock, virtual time advanced by the simulation.
//!
//! Each seed boots 3–5 hosts, runs a chaos phase (loss, delay and reordering, partitions that
//! heal, crashes and restarts under a new generation), heals the network and checks:
//! * after a bounded quiet period every live node has the same epoch and checksum, and its
//!   map holds exactly the live hosts (with their current cards);
//! * the converged maps stay put while nothing changes;
//! * on the healthy network a crashed host leaves every live node's map within
//!   [`DETECTION_US_MAX`] (the documented default bound);
//! * nothing panics.
//!
//! `HARK_SIM_SEED=<n> cargo test -p hark-core cluster::sim` replays one seed;
//! `HARK_SIM_SEEDS=<count>` runs more seeds than the default [`SEEDS_DEFAULT`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;

use super::{ClusterConfig, ClusterNode, ClusterOutput, HostCard};
use crate::ids::HostId;
use crate::shard::MapVersion;

/// Seeds run by a plain `cargo test`.
const SEEDS_DEFAULT: u64 = 64;
/// The documented default detection bound: a crashed host is out of every live map by then.
const DETECTION_US_MAX: u64 = 3_000_000;
/// How long the healed network gets to converge.
const QUIET_US_MAX: u64 = 30_000_000;
/// How long a converged state must hold before it counts: longer than a suspicion takes to
/// be refuted or confirmed.
const HOLD_US: u64 = 3_000_000;
/// How long converged maps must then stay unchanged.
const STABLE_US: u64 = 5_000_000;
/// Length of the chaos phase.
const CHAOS_US: u64 = 20_000_000;
/// Bound on simulation steps per seed, so a livelock fails instead of hanging.
const STEPS_MAX: u64 = 20_000_000;
const SECOND_US: u64 = 1_000_000;

struct Host {
    id: HostId,
    cores: u16,
    node: Option<ClusterNode>,
}

/// A datagram in flight.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Flight {
    due_us: u64,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

#[derive(Clone, Copy)]
struct Network {
    loss_per_mille: u64,
    delay_us_min: u64,
    delay_us_max: u64,
}

const HEALTHY: Network = Network {
    loss_per_mille: 0,
    delay_us_min: 100,
    delay_us_max: 2_000,
};

struct Sim {
    rng: XorShiftRng,
    now_us: u64,
    hosts: Vec<Host>,
    flights: BinaryHeap<Reverse<Flight>>,
    flight_seq: u64,
    network: Network,
    /// `side[i]` is host i's side of a partition; datagrams cross only between equal sides.
    side: Option<Vec<u8>>,
    steps: u64,
    delivered: u64,
}

fn cluster_addr(index: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, index as u8 + 1)), 7000)
}

fn client_addr(index: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, index as u8 + 1)), 7100)
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = XorShiftRng::seed_from_u64(seed);
        let count = 3 + (rng.next_u64() % 3) as usize;
        let hosts = (0..count)
            .map(|i| Host {
                id: HostId(i as u16 + 1),
                cores: 1 + (rng.next_u64() % 4) as u16,
                node: None,
            })
            .collect();
        Self {
            rng,
            now_us: 0,
            hosts,
            flights: BinaryHeap::new(),
            flight_seq: 0,
            network: HEALTHY,
            side: None,
            steps: 0,
            delivered: 0,
        }
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.rng.next_u64() % 1000 < per_mille
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.rng.next_u64() % bound.max(1)
    }

    /// Boots host `index` with a new generation (its boot time) and joins via hosts 0 and 1.
    fn boot(&mut self, index: usize) {
        let host = &self.hosts[index];
        let card = HostCard::new(
            host.id,
            self.now_us + 1,
            cluster_addr(index),
            client_addr(index),
            host.cores,
            100,
        )
        .expect("sim cards are valid");
        let node_seed = self.rng.next_u64();
        let mut node =
            ClusterNode::new(card, ClusterConfig::default(), node_seed).expect("default config");
        node.join(self.now_us, &[cluster_addr(0), cluster_addr(1)])
            .expect("two seeds");
        self.hosts[index].node = Some(node);
        self.drain(index);
    }

    fn crash(&mut self, index: usize) {
        self.hosts[index].node = None;
    }

    fn live(&self) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|i| self.hosts[*i].node.is_some())
            .collect()
    }

    fn transmit(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let from_index = usize::from(from_octet(from)) - 1;
        let Some(to_index) = index_of(to, self.hosts.len()) else {
            return;
        };
        if let Some(side) = &self.side
            && side[from_index] != side[to_index]
        {
            return;
        }
        if self.chance(self.network.loss_per_mille) {
            return;
        }
        let span = self.network.delay_us_max - self.network.delay_us_min;
        let delay = self.network.delay_us_min + self.below(span + 1);
        self.flight_seq += 1;
        self.flights.push(Reverse(Flight {
            due_us: self.now_us + delay,
            seq: self.flight_seq,
            from,
            to,
            data,
        }));
    }

    fn drain(&mut self, index: usize) {
        let from = cluster_addr(index);
        // Bounded by the node's output queue.
        while let Some(output) = self.hosts[index]
            .node
            .as_mut()
            .and_then(|n| n.poll_output())
        {
            match output {
                ClusterOutput::Send { to, data } => {
                    assert!(data.len() <= usize::from(super::DATAGRAM_BYTES_MAX));
                    self.transmit(from, to, data);
                }
                ClusterOutput::MapChanged(map) => {
                    let node = self.hosts[index]
                        .node
                        .as_ref()
                        .expect("drained node is live");
                    assert_eq!(map.version(), node.map().version());
                    if std::env::var("HARK_SIM_TRACE").is_ok() {
                        eprintln!(
                            "t={} host {} map {:?} {:?}",
                            self.now_us,
                            self.hosts[index].id,
                            map.version(),
                            map.hosts()
                                .values()
                                .map(|c| (c.host().0, c.generation()))
                                .collect::<Vec<_>>()
                        );
                    }
                }
            }
        }
    }

    /// Advances virtual time to `until_us`, delivering datagrams and firing timers in order.
    fn run_until(&mut self, until_us: u64) {
        loop {
            self.steps += 1;
            assert!(self.steps < STEPS_MAX, "simulation did not settle");
            let next_flight = self.flights.peek().map(|Reverse(f)| f.due_us);
            let next_wake = self
                .hosts
                .iter()
                .filter_map(|h| h.node.as_ref().and_then(ClusterNode::next_wake_us))
                .min();
            let Some(next) = [next_flight, next_wake].into_iter().flatten().min() else {
                self.now_us = until_us;
                return;
            };
            if next > until_us {
                self.now_us = until_us;
                return;
            }
            self.now_us = self.now_us.max(next);
            while self
                .flights
                .peek()
                .is_some_and(|Reverse(f)| f.due_us <= self.now_us)
            {
                let Reverse(flight) = self.flights.pop().expect("peeked");
                let Some(index) = index_of(flight.to, self.hosts.len()) else {
                    continue;
                };
                if let Some(node) = self.hosts[index].node.as_mut() {
                    node.handle_datagram(self.now_us, flight.from, &flight.data);
                    self.delivered += 1;
                    self.drain(index);
                }
            }
            for index in 0..self.hosts.len() {
                let now_us = self.now_us;
                let Some(node) = self.hosts[index].node.as_mut() else {
                    continue;
                };
                if node.next_wake_us().is_some_and(|wake| wake <= now_us) {
                    node.handle_timeout(now_us);
                    self.drain(index);
                }
            }
        }
    }

    /// The live hosts and their current cards: what every live map must hold.
    fn expected_hosts(&self) -> BTreeMap<HostId, HostCard> {
        self.hosts
            .iter()
            .filter_map(|h| h.node.as_ref().map(|n| (h.id, n.card().clone())))
            .collect()
    }

    /// `Some(version)` when every live node holds exactly the live hosts at one version.
    fn converged(&self) -> Option<MapVersion> {
        let expected = self.expected_hosts();
        let mut versions = self
            .hosts
            .iter()
            .filter_map(|h| h.node.as_ref())
            .map(|n| (n.map().hosts() == &expected).then(|| n.map().version()));
        let first = versions.next()??;
        versions.all(|v| v == Some(first)).then_some(first)
    }

    /// Runs until converged and unchanged for [`HOLD_US`] (checked every 100 ms of virtual
    /// time, so suspicions raised before the heal have played out); returns when the held
    /// state was first reached, relative to the start.
    fn settle(&mut self, limit_us: u64) -> Result<u64, String> {
        let start = self.now_us;
        let mut held: Option<(u64, MapVersion)> = None;
        loop {
            match (self.converged(), held) {
                (Some(version), Some((since, seen))) if version == seen => {
                    if self.now_us - since >= HOLD_US {
                        return Ok(since - start);
                    }
                }
                (Some(version), _) => held = Some((self.now_us, version)),
                (None, _) => held = None,
            }
            if self.now_us - start >= limit_us {
                return Err(self.describe());
            }
            self.run_until(self.now_us + 100_000);
        }
    }

    fn describe(&self) -> String {
        let mut text = format!("t={} µs, live: {:?}\n", self.now_us, self.expected_hosts());
        for host in &self.hosts {
            if let Some(node) = &host.node {
                text += &format!(
                    "  host {}: {:?} hosts {:?} stats {:?}\n",
                    host.id,
                    node.map().version(),
                    node.map().hosts().values().collect::<Vec<_>>(),
                    node.stats()
                );
            }
        }
        text
    }

    fn chaos(&mut self) {
        let end = self.now_us + CHAOS_US;
        while self.now_us < end {
            let step = 500_000 + self.below(2_500_000);
            self.run_until((self.now_us + step).min(end));
            match self.below(6) {
                0 => {
                    self.network = Network {
                        loss_per_mille: self.below(300),
                        delay_us_min: self.below(5_000),
                        delay_us_max: 5_000 + self.below(60_000),
                    };
                }
                1 => {
                    let side = (0..self.hosts.len()).map(|_| self.below(2) as u8).collect();
                    self.side = Some(side);
                }
                2 => self.side = None,
                3 => {
                    let live = self.live();
                    if live.len() > 1 {
                        let victim = live[self.below(live.len() as u64) as usize];
                        self.crash(victim);
                    }
                }
                4 => {
                    let down: Vec<usize> = (0..self.hosts.len())
                        .filter(|i| self.hosts[*i].node.is_none())
                        .collect();
                    if !down.is_empty() {
                        let back = down[self.below(down.len() as u64) as usize];
                        self.boot(back);
                    }
                }
                _ => self.network = HEALTHY,
            }
        }
    }
}

fn from_octet(addr: SocketAddr) -> u8 {
    match addr.ip() {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(_) => 0,
    }
}

fn index_of(addr: SocketAddr, hosts: usize) -> Option<usize> {
    let octet = usize::from(from_octet(addr));
    (addr.port() == 7000 && (1..=hosts).contains(&octet)).then(|| octet - 1)
}

/// What one seed measured.
struct Outcome {
    converge_us: u64,
    detection_us: u64,
}

fn run_seed(seed: u64) -> Outcome {
    let mut sim = Sim::new(seed);
    // Staggered boots, healthy network: everyone joins.
    for index in 0..sim.hosts.len() {
        let at = sim.now_us + sim.below(500_000);
        sim.run_until(at);
        sim.boot(index);
    }
    sim.settle(QUIET_US_MAX)
        .unwrap_or_else(|state| panic!("initial join did not converge:\n{state}"));

    sim.chaos();

    // Heal, bring back all but possibly one crashed host, and wait for convergence.
    sim.network = HEALTHY;
    sim.side = None;
    let down: Vec<usize> = (0..sim.hosts.len())
        .filter(|i| sim.hosts[*i].node.is_none())
        .collect();
    for (n, index) in down.into_iter().enumerate() {
        if n > 0 || sim.chance(500) {
            sim.boot(index);
        }
    }
    let converge_us = sim
        .settle(QUIET_US_MAX)
        .unwrap_or_else(|state| panic!("no convergence after healing:\n{state}"));

    // Converged maps stay put while nothing changes.
    let version = sim.converged().expect("just converged");
    sim.run_until(sim.now_us + STABLE_US);
    assert_eq!(
        sim.converged(),
        Some(version),
        "maps moved on a quiet network:\n{}",
        sim.describe()
    );

    // Crash detection on the healthy network.
    let live = sim.live();
    if live.len() < 2 {
        sim.boot((live[0] + 1) % sim.hosts.len());
        sim.settle(QUIET_US_MAX)
            .unwrap_or_else(|state| panic!("rejoin did not converge:\n{state}"));
    }
    let live = sim.live();
    let victim = live[sim.below(live.len() as u64) as usize];
    let victim_id = sim.hosts[victim].id;
    sim.crash(victim);
    let crashed_at = sim.now_us;
    let detection_us = loop {
        let all_out = sim
            .hosts
            .iter()
            .filter_map(|h| h.node.as_ref())
            .all(|n| n.map().host(victim_id).is_none());
        if all_out {
            break sim.now_us - crashed_at;
        }
        assert!(
            sim.now_us - crashed_at <= DETECTION_US_MAX,
            "host {victim_id} still in a live map {} µs after its crash:\n{}",
            sim.now_us - crashed_at,
            sim.describe()
        );
        sim.run_until(sim.now_us + 10_000);
    };
    sim.settle(QUIET_US_MAX)
        .unwrap_or_else(|state| panic!("no convergence after the crash:\n{state}"));
    Outcome {
        converge_us,
        detection_us,
    }
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("HARK_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var("HARK_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS_DEFAULT);
    (0..count).collect()
}

#[test]
fn cluster_converges_and_detects_crashes_under_chaos() {
    let mut detection_max = 0;
    let mut converge_max = 0;
    for seed in seeds() {
        let outcome = catch_unwind(AssertUnwindSafe(|| run_seed(seed)));
        match outcome {
            Ok(outcome) => {
                detection_max = detection_max.max(outcome.detection_us);
                converge_max = converge_max.max(outcome.converge_us);
            }
            Err(panic) => {
                eprintln!(
                    "cluster sim failed with seed {seed}; replay: \
                     HARK_SIM_SEED={seed} cargo test -p hark-core cluster::sim"
                );
                resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "cluster sim: detection max {detection_max} µs, convergence after healing max {converge_max} µs"
    );
    assert!(detection_max <= DETECTION_US_MAX);
}

/// The same seed gives the same run: the datagram count and the final maps match.
#[test]
fn a_seed_replays_exactly() {
    let run = |seed| {
        let mut sim = Sim::new(seed);
        for index in 0..sim.hosts.len() {
            sim.boot(index);
        }
        sim.network = Network {
            loss_per_mille: 100,
            delay_us_min: 0,
            delay_us_max: 20_000,
        };
        sim.run_until(5 * SECOND_US);
        let versions: Vec<_> = sim
            .hosts
            .iter()
            .filter_map(|h| h.node.as_ref().map(|n| n.map().version()))
            .collect();
        (sim.delivered, format!("{versions:?}"))
    };
    assert_eq!(run(7), run(7));
    assert!(run(7).0 > 100);
}

/// A draining host drops itself from its own map at once; the others drop it well before
/// failure detection would.
#[test]
fn leaving_host_is_out_of_every_map_quickly() {
    let mut sim = Sim::new(11);
    for index in 0..sim.hosts.len() {
        sim.boot(index);
    }
    sim.settle(QUIET_US_MAX).expect("joins converge");
    let leaver = sim.hosts.len() - 1;
    let leaver_id = sim.hosts[leaver].id;
    let before = sim.hosts[leaver]
        .node
        .as_ref()
        .expect("booted")
        .map()
        .version();
    let now_us = sim.now_us;
    sim.hosts[leaver]
        .node
        .as_mut()
        .expect("booted")
        .leave(now_us);
    sim.drain(leaver);
    let node = sim.hosts[leaver].node.as_ref().expect("booted");
    assert!(node.has_left());
    assert!(node.map().host(leaver_id).is_none());
    assert!(node.map().version().epoch > before.epoch);
    let others: BTreeSet<HostId> = (0..leaver).map(|i| sim.hosts[i].id).collect();
    assert_eq!(
        node.map().hosts().keys().copied().collect::<BTreeSet<_>>(),
        others
    );
    assert_eq!(node.next_wake_us(), None);

    sim.run_until(sim.now_us + 500_000);
    for host in &sim.hosts[..leaver] {
        let map = host.node.as_ref().expect("booted").map();
        assert!(
            map.host(leaver_id).is_none(),
            "host {} still lists the leaver",
            host.id
        );
    }
    // The leaver is inert: its map stays, datagrams are dropped.
    sim.crash(leaver);
    sim.settle(QUIET_US_MAX).expect("the rest converge");
}
