//! The simulated cluster: hosts (a `ClusterNode` and its shards), the glue that routes each
//! shard action, crashes and restarts, and the clients' connections.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;

use super::clients::{
    HANDOVER_ATTEMPTS_MAX, Location, Role, SimClient, asks_handover, breaks_listen, breaks_talk,
};
use super::net::{self, Net, host_index};
use crate::cluster::{ClusterConfig, ClusterNode, ClusterOutput, HostCard};
use crate::ids::{HostId, MsgId, ShardId};
use crate::map::{HostSpec, Membership};
use crate::protocol::{Decoder, ErrorCode, Event, Request};
use crate::shard::tests::{T0_US, conv, full_token, keyring};
use crate::shard::{
    Action, BodyStore, MemoryStore, MessageState, Opened, Shard, ShardConfig, TimelineFrom,
};

/// Rounds of action routing before the glue declares a livelock.
const SETTLE_ROUNDS_MAX: usize = 100_000;
/// Messages listed per conversation when a restarted shard looks for its newest and open ones.
const TIMELINE_SCAN_MAX: usize = 1_000_000;
/// How long a talker waits before resuming a message its owner could not take (µs).
const HANDOVER_RETRY_US: u64 = 200_000;

/// Weight per core on every card (any nonzero value: all hosts equal).
const WEIGHT_PER_CORE: u32 = 100;

pub(super) struct SimHost {
    pub id: HostId,
    pub cores: u16,
    pub node: Option<ClusterNode>,
    pub shards: Vec<Shard<MemoryStore>>,
    /// The durable stores of a crashed host's shards, kept for its restart.
    pub saved: Vec<MemoryStore>,
    pub wakes: Vec<BTreeSet<u64>>,
    /// Hosts in this host's newest map: peer links reach only those.
    pub map_hosts: BTreeSet<HostId>,
    pub boots: u64,
    /// Draining: the host stops (as a crash that loses nothing) at this time.
    pub stops_at_us: Option<u64>,
}

pub(super) struct World {
    pub rng: XorShiftRng,
    pub now_us: u64,
    pub config: ShardConfig,
    pub hosts: Vec<SimHost>,
    pub net: Net,
    pub convs: Vec<String>,
    pub clients: Vec<SimClient>,
    location: BTreeMap<Location, usize>,
    /// Frames a talker got `stored` for: message -> (frames stored, talker id).
    pub acked: BTreeMap<MsgId, (u32, u32)>,
    /// Messages started, per conversation index (listen-from-message targets).
    pub talked: BTreeMap<usize, Vec<MsgId>>,
    /// Resumes a new owner answered (messages handed over).
    pub handovers: u32,
}

impl World {
    pub fn new(seed: u64) -> Self {
        let mut rng = XorShiftRng::seed_from_u64(seed);
        let count = 2 + (rng.next_u64() % 3) as usize;
        let hosts = (0..count)
            .map(|i| {
                let cores = 1 + (rng.next_u64() % 2) as u16;
                SimHost {
                    id: HostId(i as u16 + 1),
                    cores,
                    node: None,
                    shards: Vec::new(),
                    saved: (0..cores).map(|_| MemoryStore::default()).collect(),
                    wakes: Vec::new(),
                    map_hosts: BTreeSet::new(),
                    stops_at_us: None,
                    boots: 0,
                }
            })
            .collect();
        let convs = (0..1 + rng.next_u64() % 3)
            .map(|i| format!("sim-room-{i}"))
            .collect();
        Self {
            rng,
            now_us: T0_US,
            config: ShardConfig::default(),
            hosts,
            net: Net::new(),
            convs,
            clients: Vec::new(),
            location: BTreeMap::new(),
            acked: BTreeMap::new(),
            talked: BTreeMap::new(),
            handovers: 0,
        }
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.rng.next_u64() % bound.max(1)
    }

    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|i| self.hosts[*i].node.is_some())
            .collect()
    }

    /// Boots host `h` with a new generation; its shards take over the stores it had.
    pub fn boot(&mut self, h: usize) {
        let now = self.now_us;
        trace(now, || format!("boot host {h}"));
        let host = &mut self.hosts[h];
        host.boots += 1;
        let spec = HostSpec {
            host: host.id,
            cores: (0..host.cores).collect(),
            weight_per_core: WEIGHT_PER_CORE,
        };
        // Invariant: one host with 1..=2 cores and a nonzero weight is a valid membership.
        let local = Membership::from_hosts(1, [spec]).expect("a valid one-host membership");
        let stores = std::mem::take(&mut host.saved);
        for (core, store) in stores.into_iter().enumerate() {
            let mut newest: Option<MsgId> = None;
            let mut open = Vec::new();
            for name in &self.convs {
                for header in
                    store.timeline(conv(name).id(), TimelineFrom::Since(0), TIMELINE_SCAN_MAX)
                {
                    newest = newest.max(Some(header.msg));
                    if header.state == MessageState::Open {
                        open.push(header.msg);
                    }
                }
            }
            let id = ShardId::new(host.id.0, core as u16);
            let mut shard = Shard::new(
                self.config.clone(),
                id,
                local.clone(),
                keyring(),
                store,
                now,
            );
            if let Some(newest) = newest {
                shard.resume_ids_after(newest);
            }
            shard.recover_open_messages(now, &open);
            host.shards.push(shard);
        }
        host.wakes = vec![BTreeSet::new(); usize::from(host.cores)];
        let card = HostCard::new(
            host.id,
            now + host.boots,
            net::cluster_addr(h),
            net::client_addr(h),
            host.cores,
            WEIGHT_PER_CORE,
        )
        .expect("sim cards are valid");
        let node_seed = self.rng.next_u64();
        let mut node =
            ClusterNode::new(card, ClusterConfig::default(), node_seed).expect("default config");
        node.join(now, &[net::cluster_addr(0), net::cluster_addr(1)])
            .expect("two seeds");
        let map = std::sync::Arc::clone(node.map());
        self.hosts[h].node = Some(node);
        self.apply_map(
            h,
            map.membership().clone(),
            map.hosts().keys().copied().collect(),
        );
        self.drain_node(h);
        self.settle();
    }

    /// Host `h` drains: it leaves the cluster, its shards take the map without it and tell
    /// their clients to go to the live hosts, and it stops after the shutdown linger.
    pub fn drain(&mut self, h: usize) {
        let now = self.now_us;
        trace(now, || format!("drain host {h}"));
        let Some(node) = self.hosts[h].node.as_mut() else {
            return;
        };
        node.leave(now);
        self.drain_node(h);
        let live: Vec<String> = self
            .live()
            .into_iter()
            .filter(|o| *o != h)
            .map(|o| net::client_addr(o).to_string())
            .collect();
        for shard in &mut self.hosts[h].shards {
            shard.begin_shutdown_with(now, &live);
        }
        self.hosts[h].stops_at_us = Some(now + self.config.shutdown_linger_ms * 1000);
        self.settle();
    }

    /// Stops the drained hosts whose linger has passed.
    pub fn stop_drained(&mut self) {
        let now = self.now_us;
        for h in 0..self.hosts.len() {
            if self.hosts[h].stops_at_us.is_some_and(|at| at <= now) {
                self.hosts[h].stops_at_us = None;
                self.crash(h);
            }
        }
    }

    /// Host `h` vanishes: shards and node gone, clients there see their connection close,
    /// its peer links break. The stores survive (they are durable).
    pub fn crash(&mut self, h: usize) {
        if self.hosts[h].shards.is_empty() {
            return; // down already (a drained host that crashed before it stopped)
        }
        trace(self.now_us, || format!("crash host {h}"));
        let host = &mut self.hosts[h];
        host.node = None;
        host.saved = host
            .shards
            .iter_mut()
            .map(|s| std::mem::take(s.store_mut()))
            .collect();
        host.shards.clear();
        host.wakes.clear();
        host.map_hosts.clear();
        let gone: Vec<Location> = self.location.keys().filter(|l| l.0 == h).copied().collect();
        for at in gone {
            if let Some(c) = self.location.remove(&at) {
                self.clients[c].at = None;
                self.clients[c].broken = true;
            }
        }
        self.net
            .break_links(|from, to| host_index(from) == h || host_index(to) == h);
        self.settle();
    }

    fn apply_map(&mut self, h: usize, membership: Membership, hosts: BTreeSet<HostId>) {
        let now = self.now_us;
        for shard in &mut self.hosts[h].shards {
            shard.set_cluster_map(now, membership.clone());
        }
        self.net
            .break_links(|from, to| host_index(from) == h && !hosts.contains(&to.host));
        self.hosts[h].map_hosts = hosts;
    }

    pub fn drain_node(&mut self, h: usize) {
        let hosts = self.hosts.len();
        // Bounded by the node's output queue.
        while let Some(output) = self.hosts[h].node.as_mut().and_then(|n| n.poll_output()) {
            match output {
                ClusterOutput::Send { to, data } => {
                    self.net
                        .transmit(&mut self.rng, self.now_us, h, to, hosts, data)
                }
                ClusterOutput::MapChanged(map) => {
                    trace(self.now_us, || {
                        format!("host {h} map {:?} {:?}", map.version(), map.hosts().keys())
                    });
                    self.apply_map(
                        h,
                        map.membership().clone(),
                        map.hosts().keys().copied().collect(),
                    )
                }
            }
        }
    }

    /// Routes shard actions and link losses until everything is quiet.
    pub fn settle(&mut self) {
        for _ in 0..SETTLE_ROUNDS_MAX {
            let mut idle = true;
            for h in 0..self.hosts.len() {
                for s in 0..self.hosts[h].shards.len() {
                    while let Some(action) = self.hosts[h].shards[s].poll_action() {
                        idle = false;
                        self.apply(h, s, action);
                    }
                }
            }
            for (shard, peer) in std::mem::take(&mut self.net.lost) {
                let now = self.now_us;
                trace(now, || format!("peer_lost at {shard} of {peer}"));
                if let Some(target) = self.shard_mut(shard) {
                    idle = false;
                    target.peer_lost(now, peer);
                }
            }
            if idle {
                return;
            }
        }
        panic!("the shards never went quiet");
    }

    fn shard_mut(&mut self, id: ShardId) -> Option<&mut Shard<MemoryStore>> {
        self.hosts
            .get_mut(host_index(id))?
            .shards
            .get_mut(usize::from(id.core))
    }

    fn apply(&mut self, h: usize, s: usize, action: Action) {
        let now = self.now_us;
        match action {
            Action::Send { conn, bytes } => {
                let Some(&c) = self.location.get(&(h, s, conn)) else {
                    panic!("send to an unknown connection {conn:?} on {h}/{s}");
                };
                let len = bytes.len();
                self.record(c, &bytes);
                self.hosts[h].shards[s].bytes_written(now, conn, len);
            }
            Action::Close { conn } => {
                if let Some(c) = self.location.remove(&(h, s, conn)) {
                    self.clients[c].at = None;
                    self.clients[c].broken = true;
                }
            }
            Action::HandOff { conn, to, state } => {
                assert_eq!(to.host, self.hosts[h].id, "handoff across hosts");
                let c = self
                    .location
                    .remove(&(h, s, conn))
                    .expect("handoff of a known connection");
                let target = usize::from(to.core);
                match self.hosts[h].shards[target].connection_adopted(now, state) {
                    Opened::Accepted(conn) => {
                        self.location.insert((h, target, conn), c);
                        self.clients[c].at = Some((h, target, conn));
                    }
                    Opened::Refused { goodbye } => {
                        self.record(c, &goodbye);
                        self.clients[c].at = None;
                        self.clients[c].broken = true;
                    }
                }
            }
            Action::WakeAt(at) => {
                self.hosts[h].wakes[s].insert(at);
            }
            Action::ToShard { shard: to, msg } => {
                let from = self.hosts[h].shards[s].id();
                if !matches!(
                    msg,
                    crate::shard::PeerMessage::Deliver { .. }
                        | crate::shard::PeerMessage::Written { .. }
                ) {
                    trace(now, || format!("{from} -> {to}: {msg:?}"));
                }
                if to.host == from.host {
                    self.hosts[h].shards[usize::from(to.core)].handle_peer(now, from, msg);
                    return;
                }
                let t = host_index(to);
                let reachable = self.hosts.get(t).is_some_and(|host| {
                    host.node.is_some() && usize::from(to.core) < host.shards.len()
                }) && self.net.connected(h, t)
                    && self.hosts[h].map_hosts.contains(&to.host);
                self.net.send(&mut self.rng, now, from, to, reachable, msg);
            }
        }
    }

    /// Hands a client the bytes the relay wrote to it; checks listeners as events arrive.
    fn record(&mut self, c: usize, bytes: &Bytes) {
        let mut input = BytesMut::from(&bytes[..]);
        let mut decoder = Decoder::new();
        let client = &mut self.clients[c];
        loop {
            let event = match decoder.decode_event(&mut input) {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(error) => panic!("client {} got undecodable bytes: {error}", client.id),
            };
            if let Event::Ping { nonce } = event {
                client.pong = Some(nonce);
            }
            match &mut client.role {
                Role::Talker(talk) => {
                    match &event {
                        Event::TalkStarted {
                            stream,
                            msg_id,
                            next_seq,
                        } if *stream == talk.stream => {
                            if talk.resuming {
                                // A handover: go on from where the new owner asks.
                                assert_eq!(talk.msg, Some(*msg_id), "a resume names its message");
                                talk.resuming = false;
                                self.handovers += 1;
                                talk.next_seq = *next_seq;
                                talk.end_sent = false;
                            } else {
                                talk.msg = Some(*msg_id);
                                self.talked.entry(talk.conv).or_default().push(*msg_id);
                            }
                        }
                        Event::Stored {
                            stream,
                            frames_stored,
                        } if *stream == talk.stream => {
                            let msg = talk.msg.expect("stored after talk_started");
                            let voice = talk.voice.unwrap_or(client.id);
                            let entry = self.acked.entry(msg).or_insert((0, voice));
                            entry.0 = entry.0.max(*frames_stored);
                        }
                        Event::TalkEnded { stream, .. } if *stream == talk.stream => {
                            talk.ended = true;
                        }
                        _ => {}
                    }
                    if let Event::Error { code, text, .. } = &event {
                        // The talker sends every frame once and in order, on handles the relay
                        // opened: these would be the relay losing or misrouting frames.
                        assert!(
                            *code != ErrorCode::SEQ_GAP && *code != ErrorCode::UNKNOWN_STREAM,
                            "talker {} got {code}: {text}",
                            client.id
                        );
                    }
                    if asks_handover(&event, talk.stream)
                        && talk.msg.is_some()
                        && !talk.ended
                        && talk.handovers < HANDOVER_ATTEMPTS_MAX
                    {
                        talk.handovers += 1;
                        talk.resuming = false;
                        talk.resume_at = Some(self.now_us + HANDOVER_RETRY_US);
                    } else if breaks_talk(&event, talk.stream) {
                        client.broken = true;
                    }
                }
                Role::Listener(listen) => {
                    let id = client.id;
                    let at = client.at;
                    trace(self.now_us, || match &event {
                        Event::Frame { .. } => String::new(),
                        other => format!("listener {id} at {at:?} heard {other:?}"),
                    });
                    if let Err(rule) = listen.ear.hear(&event) {
                        panic!(
                            "invariant 2: listener {} on {:?}: {rule}",
                            client.id, client.at
                        );
                    }
                    if matches!(event, Event::Listening { sub } if sub == listen.sub) {
                        listen.listening = true;
                    }
                    if breaks_listen(&event, listen.sub) {
                        client.broken = true;
                    }
                }
            }
        }
        assert!(input.is_empty(), "sends are whole events");
    }

    /// Opens a client connection on host `h` (a random shard, as the kernel would pick) and
    /// says hello.
    pub fn connect(&mut self, h: usize, role: Role) -> usize {
        let s = self.below(u64::from(self.hosts[h].cores)) as usize;
        let c = self.clients.len();
        self.clients.push(SimClient {
            id: c as u32,
            at: None,
            role,
            pong: None,
            broken: false,
            retired: false,
        });
        match self.hosts[h].shards[s].connection_opened(self.now_us, true) {
            Opened::Accepted(conn) => {
                self.location.insert((h, s, conn), c);
                self.clients[c].at = Some((h, s, conn));
            }
            Opened::Refused { goodbye } => {
                self.record(c, &goodbye);
                self.clients[c].broken = true;
            }
        }
        self.request(
            c,
            Request::Hello {
                version: 1,
                token: full_token(),
                client_name: "sim".into(),
            },
        );
        c
    }

    pub fn request(&mut self, c: usize, request: Request) {
        let Some((h, s, conn)) = self.clients[c].at else {
            return;
        };
        self.hosts[h].shards[s].handle_request(self.now_us, conn, request);
        self.settle();
    }

    /// The client hangs up.
    pub fn hang_up(&mut self, c: usize) {
        self.clients[c].retired = true;
        if let Some(at) = self.clients[c].at.take() {
            self.location.remove(&at);
            self.hosts[at.0].shards[at.1].connection_closed(self.now_us, at.2);
            self.settle();
        }
    }

    /// A group commit on every shard of host `h`, its acks fed back.
    pub fn commit(&mut self, h: usize) {
        let now = self.now_us;
        for shard in &mut self.hosts[h].shards {
            let acks = shard.store_mut().commit();
            shard.store_acks(now, &acks);
        }
        self.settle();
    }

    /// Advances virtual time to `until_us`, delivering datagrams and link messages and firing
    /// node and shard timers in time order.
    pub fn run_until(&mut self, until_us: u64) {
        loop {
            let next = [
                self.net.flights.peek().map(|f| f.0.due_us),
                self.net.next_link_due(),
                self.hosts
                    .iter()
                    .filter_map(|h| h.node.as_ref().and_then(ClusterNode::next_wake_us))
                    .min(),
                self.hosts
                    .iter()
                    .flat_map(|h| h.wakes.iter().filter_map(|w| w.first().copied()))
                    .min(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|n| *n <= until_us) else {
                self.now_us = self.now_us.max(until_us);
                return;
            };
            self.now_us = self.now_us.max(next);
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.now_us;
        let hosts = self.hosts.len();
        while self.net.flights.peek().is_some_and(|f| f.0.due_us <= now) {
            let Some(flight) = self.net.flights.pop() else {
                break;
            };
            let flight = flight.0;
            let Some(h) = net::index_of(flight.to, hosts) else {
                continue;
            };
            if let Some(node) = self.hosts[h].node.as_mut() {
                node.handle_datagram(now, flight.from, &flight.data);
                self.drain_node(h);
            }
        }
        for (from, to, msg) in self.net.take_due(now) {
            if let Some(shard) = self.shard_mut(to) {
                shard.handle_peer(now, from, msg);
            }
        }
        for h in 0..hosts {
            let due = self.hosts[h]
                .node
                .as_ref()
                .and_then(ClusterNode::next_wake_us)
                .is_some_and(|w| w <= now);
            if due && let Some(node) = self.hosts[h].node.as_mut() {
                node.handle_timeout(now);
                self.drain_node(h);
            }
            for s in 0..self.hosts[h].shards.len() {
                let wakes = &mut self.hosts[h].wakes[s];
                if wakes.first().is_some_and(|w| *w <= now) {
                    wakes.retain(|w| *w > now);
                    self.hosts[h].shards[s].handle_timeout(now);
                }
            }
        }
        self.settle();
    }
}

/// Prints a line of the run's story when `HARK_CLUSTER_SIM_TRACE` is set.
pub(super) fn trace(now_us: u64, line: impl FnOnce() -> String) {
    if std::env::var_os("HARK_CLUSTER_SIM_TRACE").is_some() {
        eprintln!("t={} {}", now_us - T0_US, line());
    }
}
