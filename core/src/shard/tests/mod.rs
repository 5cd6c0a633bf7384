//! Shard tests: a harness that plays the glue (routes actions, decodes what a client would
//! read, reports writes) and tests by concern.

mod bounds;
mod catch_up;
mod cluster;
mod cluster_catch_up;
mod cluster_sim;
mod handover;
mod limits;
mod live;
mod sessions;
mod simulation;

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use super::{Action, ConnId, MemoryStore, Opened, SessionHandoff, Shard, ShardConfig};
use crate::HostId;
use crate::ids::{ConvName, MsgId, ShardId};
use crate::map::{HostSpec, Membership};
use crate::protocol::{Decoder, ErrorCode, Event, FrameKind, ListenFrom, Request};
use crate::token::{ConvPrefix, Grant, KeyId, Keyring, Right, Rights, Scope, SecretKey, Subject};

pub(super) const T0_US: u64 = 1_800_000_000_000_000;

pub(super) fn keyring() -> Keyring {
    Keyring::new(KeyId(1), SecretKey::from_bytes([7; 32]))
}

pub(super) fn token(rights: &[Right], prefix: &str, expires_at_s: u64) -> Bytes {
    let keyring = keyring();
    let grant = Grant {
        subject: Subject::new("alice").unwrap(),
        rights: Rights::of(rights),
        scope: Scope::Prefix(ConvPrefix::new(prefix).unwrap()),
        expires_at_s,
        key_id: keyring.minting_key_id(),
    };
    Bytes::from(keyring.mint(&grant).unwrap())
}

pub(super) fn full_token() -> Bytes {
    token(
        &[Right::Talk, Right::Listen, Right::History],
        "",
        1_900_000_000,
    )
}

pub(super) fn conv(name: &str) -> ConvName {
    ConvName::new(name).unwrap()
}

/// One host of `cores` shards, all in one thread; the harness is the glue.
pub(super) struct Host {
    pub shards: Vec<Shard<MemoryStore>>,
    pub now_us: u64,
    /// Events each connection received, decoded, in order; keyed by (shard, conn).
    pub events: HashMap<Client, Vec<Event>>,
    /// Raw bytes each connection received, in order.
    pub wire: HashMap<Client, Vec<Bytes>>,
    pub closed: Vec<Client>,
    /// Connections whose writes the harness does not report (a client that stopped reading).
    pub stalled: Vec<Client>,
    /// Where a connection lives now (handoffs move it): client -> (shard index, conn).
    pub location: HashMap<Client, (usize, ConnId)>,
    pub wakes: Vec<u64>,
    /// Bytes of `Deliver` messages that crossed from one host to another.
    pub peer_deliver_bytes: usize,
    /// Hosts whose shards no longer receive anything (killed).
    pub dead_hosts: Vec<HostId>,
    /// While set, messages between hosts wait in `held` (a slow peer link).
    pub hold_cross_host: bool,
    held: Vec<(ShardId, ShardId, super::PeerMessage)>,
    next_client: u32,
}

/// A test client's stable name (connections move between shards on handoff).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Client(pub u32);

impl Host {
    pub fn new(config: ShardConfig) -> Self {
        Self::with_cores(config, 1)
    }

    pub fn with_cores(config: ShardConfig, cores: u16) -> Self {
        let membership = Membership::from_hosts(
            1,
            [HostSpec {
                host: HostId(1),
                cores: (0..cores).collect(),
                weight_per_core: 1,
            }],
        )
        .unwrap();
        let shards = (0..cores)
            .map(|core| {
                Shard::new(
                    config.clone(),
                    ShardId::new(1, core),
                    membership.clone(),
                    keyring(),
                    MemoryStore::default(),
                    T0_US,
                )
            })
            .collect();
        Self {
            shards,
            now_us: T0_US,
            events: HashMap::new(),
            wire: HashMap::new(),
            closed: Vec::new(),
            stalled: Vec::new(),
            location: HashMap::new(),
            wakes: Vec::new(),
            peer_deliver_bytes: 0,
            dead_hosts: Vec::new(),
            hold_cross_host: false,
            held: Vec::new(),
            next_client: 0,
        }
    }

    /// Several hosts (ids 1, 2, …) of `cores` shards each, all in one thread: one cluster map
    /// over every shard, each host's own map over its shards.
    pub fn cluster(config: ShardConfig, hosts: u16, cores: u16) -> Self {
        let specs: Vec<HostSpec> = (1..=hosts)
            .map(|host| HostSpec {
                host: HostId(host),
                cores: (0..cores).collect(),
                weight_per_core: 1,
            })
            .collect();
        let cluster = Membership::from_hosts(2, specs.clone()).unwrap();
        let mut shards = Vec::new();
        for spec in specs {
            let local = Membership::from_hosts(1, [spec.clone()]).unwrap();
            for core in 0..cores {
                let mut shard = Shard::new(
                    config.clone(),
                    ShardId::new(spec.host.0, core),
                    local.clone(),
                    keyring(),
                    MemoryStore::default(),
                    T0_US,
                );
                shard.set_cluster_map(T0_US, cluster.clone());
                shards.push(shard);
            }
        }
        let mut host = Self::with_cores(config, 1);
        host.shards = shards;
        host.run();
        host
    }

    /// The index of shard `id` in `shards`.
    pub fn index_of(&self, id: ShardId) -> usize {
        self.shards
            .iter()
            .position(|s| s.id() == id)
            .expect("a shard of the cluster")
    }

    pub fn shard(&mut self) -> &mut Shard<MemoryStore> {
        &mut self.shards[0]
    }

    /// Opens a connection on `shard` without a hello.
    pub fn connect_on(&mut self, shard: usize) -> Client {
        let client = Client(self.next_client);
        self.next_client += 1;
        match self.shards[shard].connection_opened(self.now_us, true) {
            Opened::Accepted(conn) => {
                self.location.insert(client, (shard, conn));
            }
            Opened::Refused { goodbye } => {
                self.record(client, goodbye);
                self.closed.push(client);
            }
        }
        self.run();
        client
    }

    /// A connection on shard 0 whose hello carries a full token.
    pub fn client(&mut self) -> Client {
        self.client_on(0)
    }

    pub fn client_on(&mut self, shard: usize) -> Client {
        let client = self.connect_on(shard);
        self.hello(client, full_token());
        client
    }

    pub fn hello(&mut self, client: Client, token: Bytes) {
        self.request(
            client,
            Request::Hello {
                version: 1,
                token,
                client_name: "test".into(),
            },
        );
    }

    pub fn request(&mut self, client: Client, request: Request) {
        let Some(&(shard, conn)) = self.location.get(&client) else {
            return;
        };
        self.shards[shard].handle_request(self.now_us, conn, request);
        self.run();
    }

    pub fn talk_start(&mut self, client: Client, stream: u32, name: &str) {
        self.request(
            client,
            Request::TalkStart {
                stream,
                conversation: conv(name),
                codec: Bytes::from_static(b"OpusHead"),
                resume: None,
            },
        );
    }

    pub fn frame(&mut self, client: Client, stream: u32, seq: u32, payload: &[u8]) {
        self.request(
            client,
            Request::TalkFrame {
                stream,
                seq,
                payload: Bytes::copy_from_slice(payload),
            },
        );
    }

    pub fn listen(&mut self, client: Client, sub: u32, name: &str, from: ListenFrom) {
        self.request(
            client,
            Request::Listen {
                sub,
                conversation: conv(name),
                from,
            },
        );
    }

    pub fn commit(&mut self) {
        for i in 0..self.shards.len() {
            let acks = self.shards[i].store_mut().commit();
            self.shards[i].store_acks(self.now_us, &acks);
        }
        self.run();
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.now_us += ms * 1000;
        for i in 0..self.shards.len() {
            self.shards[i].handle_timeout(self.now_us);
        }
        self.run();
    }

    /// Reports a stalled client's queued bytes as written.
    pub fn unstall(&mut self, client: Client) {
        self.stalled.retain(|c| *c != client);
        let written: usize = self.wire_len(client);
        let Some(&(shard, conn)) = self.location.get(&client) else {
            return;
        };
        self.shards[shard].bytes_written(self.now_us, conn, written);
        self.run();
    }

    fn wire_len(&self, client: Client) -> usize {
        // Everything ever handed over; the shard saturates at zero.
        self.wire
            .get(&client)
            .map_or(0, |w| w.iter().map(Bytes::len).sum())
    }

    fn client_of(&self, shard: usize, conn: ConnId) -> Option<Client> {
        self.location
            .iter()
            .find(|(_, loc)| **loc == (shard, conn))
            .map(|(c, _)| *c)
    }

    fn record(&mut self, client: Client, bytes: Bytes) {
        let mut input = BytesMut::from(&bytes[..]);
        let mut decoder = Decoder::new();
        while let Some(event) = decoder.decode_event(&mut input).unwrap() {
            self.events.entry(client).or_default().push(event);
        }
        assert!(input.is_empty(), "sends are whole events");
        self.wire.entry(client).or_default().push(bytes);
    }

    /// Routes actions until every shard is quiet.
    pub fn run(&mut self) {
        for _ in 0..100_000 {
            let mut idle = true;
            for i in 0..self.shards.len() {
                while let Some(action) = self.shards[i].poll_action() {
                    idle = false;
                    self.apply(i, action);
                }
            }
            if idle {
                return;
            }
        }
        panic!("the shards never went quiet");
    }

    fn apply(&mut self, shard: usize, action: Action) {
        match action {
            Action::Send { conn, bytes } => {
                let Some(client) = self.client_of(shard, conn) else {
                    panic!("send to an unknown connection {conn:?}");
                };
                let len = bytes.len();
                self.record(client, bytes);
                if !self.stalled.contains(&client) {
                    self.shards[shard].bytes_written(self.now_us, conn, len);
                }
            }
            Action::Close { conn } => {
                if let Some(client) = self.client_of(shard, conn) {
                    self.location.remove(&client);
                    self.closed.push(client);
                }
            }
            Action::HandOff { conn, to, state } => {
                let client = self
                    .client_of(shard, conn)
                    .expect("handoff of a known connection");
                assert_eq!(
                    to.host,
                    self.shards[shard].id().host,
                    "handoff across hosts"
                );
                let target = self
                    .shards
                    .iter()
                    .position(|s| s.id() == to)
                    .expect("handoff to a shard of this host");
                self.adopt(client, target, state);
            }
            Action::WakeAt(at) => self.wakes.push(at),
            Action::ToShard { shard: to, msg } => {
                let from = self.shards[shard].id();
                if self.dead_hosts.contains(&to.host) || self.dead_hosts.contains(&from.host) {
                    return;
                }
                if from.host != to.host && self.hold_cross_host {
                    self.held.push((from, to, msg));
                    return;
                }
                if from.host != to.host
                    && let super::PeerMessage::Deliver { bytes, .. } = &msg
                {
                    self.peer_deliver_bytes += bytes.len();
                }
                let target = self
                    .shards
                    .iter()
                    .position(|s| s.id() == to)
                    .expect("a message to a shard of the cluster");
                self.shards[target].handle_peer(self.now_us, from, msg);
            }
        }
    }

    /// The client's connection closes (it hung up or its network broke).
    pub fn hang_up(&mut self, client: Client) {
        if let Some((shard, conn)) = self.location.remove(&client) {
            self.shards[shard].connection_closed(self.now_us, conn);
            self.run();
        }
    }

    /// Stops holding messages between hosts and delivers the held ones in order.
    pub fn release_held(&mut self) {
        self.hold_cross_host = false;
        for (from, to, msg) in std::mem::take(&mut self.held) {
            if let super::PeerMessage::Deliver { bytes, .. } = &msg {
                self.peer_deliver_bytes += bytes.len();
            }
            let target = self.index_of(to);
            self.shards[target].handle_peer(self.now_us, from, msg);
            self.run();
        }
        self.run();
    }

    fn adopt(&mut self, client: Client, target: usize, state: SessionHandoff) {
        self.location.remove(&client);
        match self.shards[target].connection_adopted(self.now_us, state) {
            Opened::Accepted(conn) => {
                self.location.insert(client, (target, conn));
            }
            Opened::Refused { goodbye } => {
                self.record(client, goodbye);
                self.closed.push(client);
            }
        }
    }

    pub fn events(&self, client: Client) -> &[Event] {
        self.events.get(&client).map_or(&[], |e| &e[..])
    }

    /// The error codes a client received, in order.
    pub fn errors(&self, client: Client) -> Vec<ErrorCode> {
        self.events(client)
            .iter()
            .filter_map(|e| match e {
                Event::Error { code, .. } => Some(*code),
                _ => None,
            })
            .collect()
    }

    pub fn is_closed(&self, client: Client) -> bool {
        self.closed.contains(&client)
    }

    pub fn talk_started(&self, client: Client, stream: u32) -> MsgId {
        self.events(client)
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::TalkStarted {
                    stream: s, msg_id, ..
                } if *s == stream => Some(*msg_id),
                _ => None,
            })
            .expect("talk_started")
    }
}

/// What a listener heard of each message: frames (seq, kind, payload) in arrival order,
/// whether it ended, and where `caught_up` events fell (index in the event list).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Heard {
    pub frames: Vec<(u32, FrameKind, Bytes)>,
    pub ended: Option<(u32, crate::protocol::MessageOutcome)>,
}

/// Reconstructs per-message frames from a client's events (handles mapped to messages),
/// checking the stream-handle rules on the way.
pub(super) fn heard(events: &[Event]) -> HashMap<MsgId, Heard> {
    let mut open: HashMap<u32, MsgId> = HashMap::new();
    let mut out: HashMap<MsgId, Heard> = HashMap::new();
    for event in events {
        match event {
            Event::MessageStarted { stream, msg_id, .. } => {
                assert!(
                    open.insert(*stream, *msg_id).is_none(),
                    "handle {stream} reused while open"
                );
                assert!(!out.contains_key(msg_id), "message {msg_id} started twice");
                out.insert(*msg_id, Heard::default());
            }
            Event::Frame {
                stream,
                seq,
                kind,
                payload,
            } => {
                let msg = open.get(stream).expect("frame on an open stream");
                out.get_mut(msg)
                    .unwrap()
                    .frames
                    .push((*seq, *kind, payload.clone()));
            }
            Event::MessageEnded {
                stream,
                frame_count,
                outcome,
            } => {
                let msg = open.remove(stream).expect("end of an open stream");
                out.get_mut(&msg).unwrap().ended = Some((*frame_count, *outcome));
            }
            _ => {}
        }
    }
    out
}

/// The payload of frame `seq` of talker `t` in the tests' messages.
pub(super) fn payload(t: u32, seq: u32) -> Vec<u8> {
    let mut p = vec![t as u8, (seq & 0xff) as u8, (seq >> 8) as u8];
    p.extend(std::iter::repeat_n(0xa5, (seq % 7) as usize));
    p
}

pub(super) fn seqs(h: &Heard) -> Vec<u32> {
    h.frames.iter().map(|f| f.0).collect()
}
