//! The long-running tasks of a shard thread besides its connections: accepting, the mesh
//! inbox, timers (and statistics), commits, and the drain signal.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hark_core::HostId;
use hark_core::cluster::ClusterMap;
use hark_core::shard::Opened;
use hark_storage::Committer;
use monoio::io::AsyncReadRent;
use monoio::net::{TcpListener, UnixStream};

use super::conn::{refuse, serve};
use super::ctx::{Ctx, MeshItem, SharedCtx};
use super::link::{AcceptedLink, serve_link};
use super::wake::{now_us, sleep_or_wake};
use crate::cluster::MapBoard;
use crate::mesh::Inbox;
use crate::metrics::Registry;
use crate::store::store_acks;

/// How often a shard publishes its statistics for the admin endpoint.
pub(crate) const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);
/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(10);
/// How long the commit loop waits before retrying after a store error.
const COMMIT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Mesh items handled per batch before actions are flushed.
const INBOX_BATCH: usize = 256;
/// How long accepting pauses after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// Control bytes read at once (each is one command).
const CONTROL_READ_BYTES: usize = 64;

/// Accepts connections until the drain starts.
pub(crate) async fn accept_loop(ctx: SharedCtx, listener: TcpListener) {
    loop {
        let accepted = listener.accept().await;
        if ctx.borrow().draining {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                monoio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Frames are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let now = now_us();
        let opened = {
            let mut c = ctx.borrow_mut();
            c.input_us = now;
            c.shard.connection_opened(now, peer.ip().is_loopback())
        };
        match opened {
            Opened::Accepted(id) => {
                let frame_len_max = ctx.borrow().frame_len_max;
                let conn = serve(
                    &ctx,
                    id,
                    stream,
                    BytesMut::new(),
                    Default::default(),
                    frame_len_max,
                );
                let mut c = ctx.borrow_mut();
                c.stats.counters.connections_accepted += 1;
                c.conns.insert(id, conn);
                c.dispatch();
                c.after_input();
            }
            Opened::Refused { goodbye } => {
                ctx.borrow_mut().stats.counters.connections_refused += 1;
                refuse(&ctx, stream, goodbye);
            }
        }
    }
}

/// Handles what other shards send, in batches.
pub(crate) async fn inbox_loop(ctx: SharedCtx, mut inbox: Inbox<MeshItem>) {
    loop {
        if let Err(error) = inbox.wait().await {
            tracing::error!(%error, "the mesh doorbell failed; this shard no longer hears the others");
            return;
        }
        loop {
            let mut handoffs = Vec::new();
            let mut links = Vec::new();
            let delivered = {
                let mut c = ctx.borrow_mut();
                let now = now_us();
                c.input_us = now;
                let delivered = inbox.drain(INBOX_BATCH, |from, item| match item {
                    MeshItem::Peer(msg) => {
                        let from = c.shard_ids[from];
                        c.shard.handle_peer(now, from, msg);
                        c.dispatch();
                    }
                    MeshItem::HandOff(socket) => handoffs.push(socket),
                    MeshItem::Link(link) => links.push(link),
                });
                c.after_input();
                delivered
            };
            for socket in handoffs {
                Ctx::adopt(&ctx, *socket);
                ctx.borrow_mut().after_input();
            }
            for link in links {
                let AcceptedLink {
                    socket,
                    input,
                    peer,
                } = *link;
                match monoio::net::TcpStream::from_std(socket) {
                    Ok(stream) => serve_link(Rc::clone(&ctx), stream, input, peer),
                    Err(error) => {
                        tracing::warn!(%error, "a peer link could not join this shard's runtime");
                    }
                }
            }
            if delivered < INBOX_BATCH {
                break;
            }
        }
    }
}

/// Calls `handle_timeout` when the shard asked, retries full mesh lanes, and publishes the
/// statistics.
pub(crate) async fn timer_loop(ctx: SharedCtx, registry: Arc<Registry>, me: usize) {
    let wake = Rc::clone(&ctx.borrow().timer_wake);
    let publish_us = PUBLISH_INTERVAL.as_micros() as u64;
    let mut next_publish = now_us() + publish_us;
    loop {
        let now = now_us();
        let mut deadline = next_publish;
        {
            let mut c = ctx.borrow_mut();
            if c.wake_times.first().is_some_and(|&at| at <= now) {
                while c.wake_times.first().is_some_and(|&at| at <= now) {
                    c.wake_times.pop_first();
                }
                c.input_us = now;
                c.shard.handle_timeout(now);
                c.dispatch();
                c.after_input();
            } else if c.mesh_overflow() > 0 {
                c.after_input();
            }
            if now >= next_publish {
                publish(&mut c, &registry, me);
                next_publish = now + publish_us;
                deadline = next_publish;
            }
            if let Some(&at) = c.wake_times.first() {
                deadline = deadline.min(at);
            }
            if c.mesh_overflow() > 0 {
                deadline = deadline.min(now + 1000);
            }
        }
        sleep_or_wake(&wake, Duration::from_micros(deadline.saturating_sub(now))).await;
    }
}

fn publish(c: &mut Ctx, registry: &Registry, me: usize) {
    let connections = c.shard.connection_count() as u64;
    let pending = c.shard.store().own().pending_bytes() as u64;
    let overflow = c.mesh_overflow() as u64;
    let in_lanes = c.outbox_depth() as u64;
    let tally = c.shard.tally();
    let map_epoch = c.shard.cluster_map().epoch();
    let counters = &mut c.stats.counters;
    counters.map_epoch = map_epoch;
    counters.connections_open = connections;
    counters.store_pending_bytes = pending;
    counters.mesh_queue_depth = overflow + in_lanes;
    counters.frames_out = tally.frame_events_out;
    counters.slow_listener_fallbacks = tally.slow_listener_fallbacks;
    counters.messages_started = tally.messages_started;
    counters.messages_ended = tally.messages_ended;
    counters.messages_handed_over = tally.messages_handed_over;
    registry.publish(me, &c.stats);
}

/// Group commits: hands due batches to the committer, feeds durable acks to the shard, and
/// runs retention now and then.
pub(crate) async fn commit_loop(ctx: SharedCtx, mut committer: Committer) {
    let wake = Rc::clone(&ctx.borrow().commit_wake);
    let mut next_retention = Instant::now() + RETENTION_INTERVAL;
    loop {
        let now = now_us();
        let polled = {
            let mut c = ctx.borrow_mut();
            c.commit_at = None;
            c.shard.store_mut().own_mut().poll_commit(now)
        };
        match polled {
            Ok(Some(batch)) => {
                let bytes = batch.len() as u64;
                let started = Instant::now();
                let done = committer.commit(batch).await;
                let latency_us = started.elapsed().as_micros() as u64;
                let now = now_us();
                let mut c = ctx.borrow_mut();
                c.input_us = now;
                match c.shard.store_mut().own_mut().commit_completed(done) {
                    Ok(acks) => {
                        if let Some(error) = &acks.hint_error {
                            tracing::warn!(%error, "a hint file could not be written (harmless: the segment is rescanned on open)");
                        }
                        c.stats.counters.commits += 1;
                        c.stats.counters.commit_bytes += bytes;
                        c.stats.record_commit_latency_us(latency_us);
                        c.shard.store_acks(now, &store_acks(acks));
                        c.dispatch();
                    }
                    Err(error) => {
                        c.stats.counters.commit_errors += 1;
                        tracing::error!(%error, "commit failed; its records are retried");
                    }
                }
                c.after_input();
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                ctx.borrow_mut().stats.counters.commit_errors += 1;
                tracing::error!(%error, "the store cannot commit now; retrying");
                sleep_or_wake(&wake, COMMIT_RETRY_DELAY).await;
                continue;
            }
        }
        if let Some(error) = committer.take_housekeeping_error() {
            tracing::warn!(%error, "store housekeeping (spare segments, retention unlinks)");
        }
        if Instant::now() >= next_retention {
            next_retention = Instant::now() + RETENTION_INTERVAL;
            let plan = ctx
                .borrow_mut()
                .shard
                .store_mut()
                .own_mut()
                .apply_retention(now);
            if !plan.files.is_empty()
                && let Err(plan) = committer.remove_files_later(plan)
                && let Err(error) = plan.remove_files()
            {
                tracing::warn!(%error, "retention could not remove a file; retried after restart");
            }
        }
        let next = {
            let mut c = ctx.borrow_mut();
            if c.drained() {
                c.finished.notify();
            }
            let next = c.shard.store().own().next_wakeup_us();
            c.commit_at = Some(next.unwrap_or(u64::MAX));
            next
        };
        let retention_us = RETENTION_INTERVAL.as_micros() as u64;
        let delay_us = next.map_or(retention_us, |at| at.saturating_sub(now).min(retention_us));
        sleep_or_wake(&wake, Duration::from_micros(delay_us)).await;
    }
}

/// Waits on the control socket: `m` says a new cluster map is on the board, `d` (or the
/// other end closing) starts the drain: no more accepting, `begin_shutdown` in the shard logic
/// (on a cluster host naming the other live hosts, see [`reconnect_addresses`]).
pub(crate) async fn control_loop(
    ctx: SharedCtx,
    mut control: UnixStream,
    listener_fd: i32,
    board: Option<Arc<MapBoard>>,
) {
    loop {
        let buf = Vec::with_capacity(CONTROL_READ_BYTES);
        let (result, buf) = control.read(buf).await;
        let n = result.unwrap_or(0);
        if n > 0
            && buf[..n].contains(&b'm')
            && let Some(board) = &board
        {
            apply_map(&mut ctx.borrow_mut(), board);
        }
        if n == 0 || buf[..n].contains(&b'd') {
            break;
        }
    }
    let now = now_us();
    let mut c = ctx.borrow_mut();
    c.draining = true;
    // Ends the pending accept (it fails with EINVAL) so the listener stops taking
    // connections; connections already in its backlog are reset when it closes.
    // SAFETY: the listener is owned by the accept task of this thread and still open.
    unsafe {
        libc::shutdown(listener_fd, libc::SHUT_RD);
    }
    c.input_us = now;
    match &board {
        Some(board) => {
            let me = c.shard_ids[c.me].host;
            let live = reconnect_addresses(&board.latest(), me);
            c.shard.begin_shutdown_with(now, &live);
        }
        None => c.shard.begin_shutdown(now),
    }
    c.dispatch();
    c.after_input();
}

/// The client addresses of the hosts in `map` other than `me`, in host id order: where a
/// draining cluster host sends its clients. The map is the one on the board when the drain
/// starts, with or without this host depending on whether the membership thread has left
/// already; either way the others are the hosts live as this host leaves.
pub(crate) fn reconnect_addresses(map: &ClusterMap, me: HostId) -> Vec<String> {
    map.hosts()
        .iter()
        .filter(|(host, _)| **host != me)
        .map(|(_, card)| card.client_addr().to_string())
        .collect()
}

/// Hands the board's newest cluster map to the shard logic and the peer links.
pub(crate) fn apply_map(c: &mut Ctx, board: &MapBoard) {
    let map = board.latest();
    let now = now_us();
    c.input_us = now;
    if let Some(links) = c.links.as_mut() {
        let hosts = map
            .hosts()
            .iter()
            .map(|(host, card)| (*host, card.cluster_addr()))
            .collect();
        links.set_map(map.version(), hosts);
    }
    c.shard.set_cluster_map(now, map.membership().clone());
    c.after_input();
}
