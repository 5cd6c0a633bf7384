//! Peer links: the TCP connections that carry [`PeerMessage`]s between a shard of this host
//! and a shard of another (docs/peer-links.md has the bytes, docs/cluster.md the behaviour).
//!
//! Each direction has its own link: a shard *dials* one link to every remote shard it sends
//! to, and *accepts* the links remote shards dial to it (on the cluster address, every shard
//! accepting with SO_REUSEPORT; a link that reaches the wrong shard moves to the right one
//! over the mesh, like a client socket). So each link's writer is one task and its frames stay
//! in order, and nothing on the hot path is shared between threads.
//!
//! ```text
//!  Shard ─ ToShard(remote) ─► encode into the link's buffer ─► writer task ─► socket ─►
//!  ─► acceptor's reader ─ LinkDecoder ─► Shard::handle_peer(from) (same shard thread)
//! ```
//!
//! A link that fails (connect, handshake, write, 3 s without a pong or a frame) is dropped
//! and its peer reported to the shard as lost ([`Shard::peer_lost`]): proxies and mirrors
//! tied to it are reset on both sides, so nothing waits on messages a dead link swallowed.
//! The next send redials after a backoff.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use hark_core::shard::peer_wire::{
    DialerHandshake, HostState, LINK_NONCE_LEN, LinkDecoder, LinkFrame, LinkKeys,
    encode_link_frame, split_deliver,
};
use hark_core::shard::{MapVersion, PeerMessage};
use hark_core::token::KeyId;
use hark_core::{HostId, ShardId};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

mod accept;

pub(crate) use accept::{AcceptedLink, link_accept_loop, serve_link};

use super::ctx::SharedCtx;
use super::wake::{Wakeup, now_us, sleep_or_wake};

/// Longest a connect or a handshake may take.
const LINK_SETUP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a dialer pings an idle link.
const LINK_PING_INTERVAL: Duration = Duration::from_millis(500);
/// A link silent this long (no pong on a dialed link, no frame on an accepted one) is dead.
const LINK_SILENCE_MAX: Duration = Duration::from_secs(3);
/// Bytes waiting in one link's buffer beyond which the link is declared failed (the peer does
/// not read): its peer is reset rather than this shard's memory growing.
pub(crate) const LINK_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// First and longest pause before redialing a peer whose link failed.
const REDIAL_BACKOFF_MIN: Duration = Duration::from_millis(100);
const REDIAL_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bytes read per call at least.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// How this shard reaches the other hosts' shards.
#[derive(Debug)]
pub(crate) struct Links {
    me: ShardId,
    keys: LinkKeys,
    key_id: KeyId,
    generation: u64,
    map: MapVersion,
    /// Cluster address of every live host, from the newest map.
    hosts: HashMap<HostId, SocketAddr>,
    /// Dialed links by peer.
    out: HashMap<ShardId, Rc<LinkOut>>,
    /// Links to dial (the dial task takes them).
    to_dial: Vec<Rc<LinkOut>>,
    pub(crate) dial_wake: Rc<Wakeup>,
    /// Peers whose link failed, with when they may be dialed again and the next backoff.
    backoff: HashMap<ShardId, (u64, Duration)>,
    /// Peers to report lost to the shard: every message dropped for want of a link reports its
    /// peer again, so the shard never waits on a message that was not sent (a mirror that
    /// subscribed during a redial backoff subscribes again on its next tick).
    lost: Vec<ShardId>,
    /// The accepted link currently serving each peer (an older one is stale).
    inbound: HashMap<ShardId, u64>,
    next_link_id: u64,
}

/// One dialed link: the frames waiting for its writer.
#[derive(Debug)]
pub(crate) struct LinkOut {
    peer: ShardId,
    addr: SocketAddr,
    buf: RefCell<BytesMut>,
    wake: Wakeup,
    failed: Cell<bool>,
    last_pong_us: Cell<u64>,
}

impl Links {
    pub(crate) fn new(me: ShardId, keys: LinkKeys, key_id: KeyId, generation: u64) -> Self {
        Self {
            me,
            keys,
            key_id,
            generation,
            map: MapVersion {
                epoch: 0,
                checksum: 0,
            },
            hosts: HashMap::new(),
            out: HashMap::new(),
            to_dial: Vec::new(),
            dial_wake: Rc::new(Wakeup::default()),
            backoff: HashMap::new(),
            lost: Vec::new(),
            inbound: HashMap::new(),
            next_link_id: 0,
        }
    }

    /// A new map: where hosts are. Links to hosts that left are failed (their peers lost).
    pub(crate) fn set_map(&mut self, map: MapVersion, hosts: HashMap<HostId, SocketAddr>) {
        self.map = map;
        let gone: Vec<ShardId> = self
            .out
            .keys()
            .filter(|peer| !hosts.contains_key(&peer.host))
            .copied()
            .collect();
        self.hosts = hosts;
        for peer in gone {
            if let Some(link) = self.out.remove(&peer) {
                link.fail();
            }
            self.report_lost(peer);
        }
    }

    /// Queues `msg` for `peer`'s link, dialing it first if needed. A message that cannot go
    /// (no address, backing off, overfull link) is dropped and the peer reported lost.
    pub(crate) fn send(&mut self, peer: ShardId, msg: PeerMessage) -> usize {
        let link = match self.out.get(&peer) {
            Some(link) => Rc::clone(link),
            None => match self.open(peer) {
                Some(link) => link,
                None => {
                    self.report_lost(peer);
                    return 0;
                }
            },
        };
        let mut buf = link.buf.borrow_mut();
        let before = buf.len();
        let frames = match msg {
            // A shard may hand over any amount at once; the link cuts it at event borders.
            PeerMessage::Deliver { conn, bytes } => match split_deliver(bytes) {
                Ok(pieces) => pieces
                    .into_iter()
                    .map(|bytes| LinkFrame::Peer(PeerMessage::Deliver { conn, bytes }))
                    .collect(),
                Err(error) => {
                    tracing::error!(%error, "a shard delivered bytes that are not whole events");
                    Vec::new()
                }
            },
            msg => vec![LinkFrame::Peer(msg)],
        };
        for frame in &frames {
            if let Err(error) = encode_link_frame(frame, &mut buf) {
                tracing::error!(%error, "a peer message could not be encoded; dropped");
            }
        }
        let queued = buf.len() - before;
        let overfull = buf.len() > LINK_QUEUE_BYTES_MAX;
        drop(buf);
        if overfull {
            tracing::warn!(%peer, "peer link backlog over its bound; resetting the link");
            self.link_failed(&link);
            return 0;
        }
        link.wake.notify();
        queued
    }

    fn open(&mut self, peer: ShardId) -> Option<Rc<LinkOut>> {
        let addr = *self.hosts.get(&peer.host)?;
        let now = now_us();
        if self
            .backoff
            .get(&peer)
            .is_some_and(|(until, _)| now < *until)
        {
            return None;
        }
        let link = Rc::new(LinkOut {
            peer,
            addr,
            buf: RefCell::new(BytesMut::new()),
            wake: Wakeup::default(),
            failed: Cell::new(false),
            last_pong_us: Cell::new(now),
        });
        self.out.insert(peer, Rc::clone(&link));
        self.to_dial.push(Rc::clone(&link));
        self.dial_wake.notify();
        Some(link)
    }

    /// Reports `peer` lost to the shard, and drops the accepted link from it: its reader
    /// stops at its next wake-up (a ping comes every 500 ms) and closes the socket, so the
    /// peer's dialed link fails and the peer resets what it had with this shard too (it may be
    /// waiting for an answer this shard could not send).
    fn report_lost(&mut self, peer: ShardId) {
        self.inbound.remove(&peer);
        if !self.lost.contains(&peer) {
            self.lost.push(peer);
        }
    }

    /// A dialed link failed: forget it, back off, report the peer.
    pub(crate) fn link_failed(&mut self, link: &Rc<LinkOut>) {
        link.fail();
        if self
            .out
            .get(&link.peer)
            .is_some_and(|l| Rc::ptr_eq(l, link))
        {
            self.out.remove(&link.peer);
        }
        let backoff = self
            .backoff
            .get(&link.peer)
            .map_or(REDIAL_BACKOFF_MIN, |(_, last)| {
                (*last * 2).min(REDIAL_BACKOFF_MAX)
            });
        self.backoff
            .insert(link.peer, (now_us() + backoff.as_micros() as u64, backoff));
        self.report_lost(link.peer);
    }

    fn link_up(&mut self, peer: ShardId) {
        self.backoff.remove(&peer);
    }

    /// Peers to report lost, oldest first.
    pub(crate) fn take_lost(&mut self) -> Vec<ShardId> {
        std::mem::take(&mut self.lost)
    }
}

impl LinkOut {
    fn fail(&self) {
        self.failed.set(true);
        self.wake.notify();
    }
}

/// Dials the links the shard asked for, for as long as the shard runs.
pub(crate) async fn dial_loop(ctx: SharedCtx) {
    let wake = match ctx.borrow().links.as_ref() {
        Some(links) => Rc::clone(&links.dial_wake),
        None => return,
    };
    loop {
        wake.wait().await;
        let links = match ctx.borrow_mut().links.as_mut() {
            Some(links) => std::mem::take(&mut links.to_dial),
            None => return,
        };
        for link in links {
            monoio::spawn(dial(Rc::clone(&ctx), link));
        }
    }
}

/// Connects, authenticates and then writes the link's frames until it fails.
async fn dial(ctx: SharedCtx, link: Rc<LinkOut>) {
    let result = dial_and_write(&ctx, &link).await;
    if let Err(reason) = result {
        if !link.failed.get() {
            tracing::warn!(peer = %link.peer, addr = %link.addr, %reason, "peer link failed");
        }
        let mut c = ctx.borrow_mut();
        if let Some(links) = c.links.as_mut() {
            links.link_failed(&link);
        }
        c.stats.counters.peer_link_failures += 1;
        c.after_input();
    }
}

async fn dial_and_write(ctx: &SharedCtx, link: &Rc<LinkOut>) -> Result<(), String> {
    let stream = monoio::time::timeout(LINK_SETUP_TIMEOUT, TcpStream::connect(link.addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut nonce = [0u8; LINK_NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| format!("random nonce: {e}"))?;
    let mut out = BytesMut::new();
    let mut handshake = {
        let c = ctx.borrow();
        let links = c.links.as_ref().ok_or("not a cluster host")?;
        DialerHandshake::start(
            &links.keys,
            links.key_id,
            links.me,
            link.peer,
            HostState {
                generation: links.generation,
                map: links.map,
            },
            nonce,
            &mut out,
        )
        .map_err(|e| e.to_string())?
    };
    let (mut reader, mut writer) = stream.into_split();
    let (result, _) = writer.write_all(out.split().freeze()).await;
    result.map_err(|e| format!("write hello: {e}"))?;
    let setup = async move {
        let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
        loop {
            if let Some(established) = handshake
                .handle_input(&mut input, &mut out)
                .map_err(|e| format!("handshake: {e}"))?
            {
                return Ok::<_, String>((established, input, out, reader));
            }
            input.reserve(READ_CHUNK_BYTES);
            let room = input.len()..input.capacity();
            let (result, slice) = reader.read(input.slice_mut(room)).await;
            input = slice.into_inner();
            match result {
                Ok(n) if n > 0 => {}
                Ok(_) => return Err("closed during the handshake".to_owned()),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    };
    let (established, input, mut out, reader) = monoio::time::timeout(LINK_SETUP_TIMEOUT, setup)
        .await
        .map_err(|_| "handshake timed out".to_owned())??;
    let (result, _) = writer.write_all(out.split().freeze()).await;
    result.map_err(|e| format!("write proof: {e}"))?;
    tracing::info!(peer = %established.peer, addr = %link.addr, "peer link up");
    {
        let mut c = ctx.borrow_mut();
        if let Some(links) = c.links.as_mut() {
            links.link_up(link.peer);
        }
    }
    link.last_pong_us.set(now_us());
    monoio::spawn(read_pongs(Rc::clone(link), reader, input));
    let mut next_ping_us = now_us() + LINK_PING_INTERVAL.as_micros() as u64;
    loop {
        if link.failed.get() {
            return Err("closed".to_owned());
        }
        let now = now_us();
        if now.saturating_sub(link.last_pong_us.get()) > LINK_SILENCE_MAX.as_micros() as u64 {
            return Err("no pong in time".to_owned());
        }
        if now >= next_ping_us {
            next_ping_us = now + LINK_PING_INTERVAL.as_micros() as u64;
            let map = ctx.borrow().links.as_ref().map(|l| l.map);
            if let Some(map) = map {
                let ping = LinkFrame::Ping { map, sent_us: now };
                let _ = encode_link_frame(&ping, &mut link.buf.borrow_mut());
            }
        }
        let pending = {
            let mut buf = link.buf.borrow_mut();
            (!buf.is_empty()).then(|| buf.split().freeze())
        };
        match pending {
            Some(bytes) => {
                let len = bytes.len();
                let (result, _) = writer.write_all(bytes).await;
                result.map_err(|e| format!("write: {e}"))?;
                ctx.borrow_mut().stats.counters.peer_link_bytes_out += len as u64;
            }
            None => {
                let wait = Duration::from_micros(next_ping_us.saturating_sub(now_us()));
                sleep_or_wake(&link.wake, wait.max(Duration::from_millis(1))).await;
            }
        }
    }
}

/// Reads what the acceptor sends back on a dialed link: pongs, or a goodbye.
async fn read_pongs(
    link: Rc<LinkOut>,
    mut reader: monoio::io::OwnedReadHalf<TcpStream>,
    mut input: BytesMut,
) {
    let mut decoder = LinkDecoder::new();
    loop {
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(LinkFrame::Pong { .. })) => link.last_pong_us.set(now_us()),
                Ok(Some(LinkFrame::Goodbye { .. })) | Err(_) => return link.fail(),
                Ok(Some(_)) => return link.fail(),
                Ok(None) => break,
            }
        }
        if link.failed.get() {
            return;
        }
        input.reserve(READ_CHUNK_BYTES);
        let room = input.len()..input.capacity();
        let (result, slice) = reader.read(input.slice_mut(room)).await;
        input = slice.into_inner();
        if !matches!(result, Ok(n) if n > 0) {
            return link.fail();
        }
    }
}
