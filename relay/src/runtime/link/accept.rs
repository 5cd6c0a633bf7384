//! The accepting side of peer links: links dialed to this shard (or handed to it by the shard
//! that accepted them), authenticated, then read: their frames go to the shard logic as
//! messages from the dialing shard, and pings are answered.

use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use hark_core::ShardId;
use hark_core::shard::peer_wire::{
    AcceptorHandshake, HostState, LINK_NONCE_LEN, LinkDecoder, LinkFrame, encode_link_frame,
};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};

use super::super::ctx::{MeshItem, SharedCtx};
use super::super::wake::now_us;
use super::{LINK_SETUP_TIMEOUT, LINK_SILENCE_MAX, READ_CHUNK_BYTES};

/// A link accepted by one shard for another (the hello named it), on its way over the mesh.
#[derive(Debug)]
pub(crate) struct AcceptedLink {
    pub(crate) socket: std::net::TcpStream,
    pub(crate) input: BytesMut,
    pub(crate) peer: ShardId,
}

/// Accepts peer links on the cluster address until the shard drains.
pub(crate) async fn link_accept_loop(ctx: SharedCtx, listener: TcpListener) {
    loop {
        let accepted = listener.accept().await;
        if ctx.borrow().draining {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(accept_link(Rc::clone(&ctx), stream));
            }
            Err(error) => {
                tracing::warn!(%error, "peer link accept failed");
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn accept_link(ctx: SharedCtx, stream: TcpStream) {
    match accept_handshake(&ctx, stream).await {
        Ok(()) => {}
        Err(reason) => tracing::warn!(%reason, "peer link refused"),
    }
}

async fn accept_handshake(ctx: &SharedCtx, mut stream: TcpStream) -> Result<(), String> {
    let mut nonce = [0u8; LINK_NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| format!("random nonce: {e}"))?;
    let (mut handshake, me) = {
        let c = ctx.borrow();
        let links = c.links.as_ref().ok_or("not a cluster host")?;
        let state = HostState {
            generation: links.generation,
            map: links.map,
        };
        (
            AcceptorHandshake::new(&links.keys, links.me.host, state, nonce),
            links.me,
        )
    };
    let setup = async move {
        let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
        let mut out = BytesMut::new();
        loop {
            let done = handshake
                .handle_input(&mut input, &mut out)
                .map_err(|e| format!("handshake: {e}"))?;
            if !out.is_empty() {
                let (result, _) = stream.write_all(out.split().freeze()).await;
                result.map_err(|e| format!("write welcome: {e}"))?;
            }
            if let Some(established) = done {
                return Ok::<_, String>((established, input, stream));
            }
            input.reserve(READ_CHUNK_BYTES);
            let room = input.len()..input.capacity();
            let (result, slice) = stream.read(input.slice_mut(room)).await;
            input = slice.into_inner();
            match result {
                Ok(n) if n > 0 => {}
                Ok(_) => return Err("closed during the handshake".to_owned()),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    };
    let (established, input, stream) = monoio::time::timeout(LINK_SETUP_TIMEOUT, setup)
        .await
        .map_err(|_| "handshake timed out".to_owned())??;
    let peer = established.peer;
    if established.local == me {
        serve_link(Rc::clone(ctx), stream, input, peer);
        return Ok(());
    }
    let target = {
        let c = ctx.borrow();
        c.shard_ids.iter().position(|s| *s == established.local)
    };
    let Some(target) = target else {
        return Err(format!(
            "hello for {}, not a shard of this host",
            established.local
        ));
    };
    // No operation holds the socket now: the handshake's reads and writes are complete.
    let socket = unsafe { std::net::TcpStream::from_raw_fd(stream.into_raw_fd()) };
    let mut c = ctx.borrow_mut();
    c.send_mesh(
        target,
        MeshItem::Link(Box::new(AcceptedLink {
            socket,
            input,
            peer,
        })),
    );
    c.after_input();
    Ok(())
}

/// Serves an accepted link on this shard: its frames go to the shard logic as messages from
/// `peer`; pings are answered.
pub(crate) fn serve_link(ctx: SharedCtx, stream: TcpStream, input: BytesMut, peer: ShardId) {
    let link_id = {
        let mut c = ctx.borrow_mut();
        let now = now_us();
        let Some(links) = c.links.as_mut() else {
            return;
        };
        links.next_link_id += 1;
        let id = links.next_link_id;
        // A peer dials again only after its link failed, and then it has reset everything
        // it had with this shard: so does this shard, before the new link's first frame.
        let replaced = links.inbound.insert(peer, id).is_some();
        if replaced {
            c.input_us = now;
            c.shard.peer_lost(now, peer);
            c.after_input();
        }
        id
    };
    monoio::spawn(read_link(ctx, stream, input, peer, link_id));
}

async fn read_link(
    ctx: SharedCtx,
    stream: TcpStream,
    mut input: BytesMut,
    peer: ShardId,
    link_id: u64,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut decoder = LinkDecoder::new();
    let reason = 'link: loop {
        let mut pongs = BytesMut::new();
        let mut goodbye = false;
        {
            let mut c = ctx.borrow_mut();
            let now = now_us();
            c.input_us = now;
            if c.links.as_ref().and_then(|l| l.inbound.get(&peer)) != Some(&link_id) {
                return; // replaced by a newer link from the same peer
            }
            loop {
                match decoder.decode(&mut input) {
                    Ok(Some(LinkFrame::Peer(msg))) => {
                        c.shard.handle_peer(now, peer, msg);
                        c.dispatch();
                    }
                    Ok(Some(LinkFrame::Ping { sent_us, .. })) => {
                        let map = c.links.as_ref().map(|l| l.map);
                        if let Some(map) = map {
                            let pong = LinkFrame::Pong {
                                map,
                                echo_us: sent_us,
                            };
                            let _ = encode_link_frame(&pong, &mut pongs);
                        }
                    }
                    Ok(Some(LinkFrame::Pong { .. })) => {}
                    Ok(Some(LinkFrame::Goodbye { reason })) => {
                        tracing::info!(%peer, ?reason, "peer link closed by its dialer");
                        goodbye = true;
                        break;
                    }
                    Ok(None) => break,
                    Err(error) => {
                        c.after_input();
                        break 'link format!("bad frame: {error}");
                    }
                }
            }
            c.after_input();
        }
        if goodbye {
            break 'link "goodbye".to_owned();
        }
        if !pongs.is_empty() {
            let (result, _) = writer.write_all(pongs.freeze()).await;
            if let Err(error) = result {
                break 'link format!("write pong: {error}");
            }
        }
        input.reserve(READ_CHUNK_BYTES);
        let room = input.len()..input.capacity();
        let read = monoio::time::timeout(LINK_SILENCE_MAX, reader.read(input.slice_mut(room)));
        let (result, slice) = match read.await {
            Ok(done) => done,
            Err(_) => break 'link "silent for too long".to_owned(),
        };
        input = slice.into_inner();
        match result {
            Ok(n) if n > 0 => ctx.borrow_mut().stats.counters.peer_link_bytes_in += n as u64,
            Ok(_) => break 'link "closed by the peer".to_owned(),
            Err(error) => break 'link format!("read: {error}"),
        }
    };
    let mut c = ctx.borrow_mut();
    let current = c
        .links
        .as_mut()
        .is_some_and(|l| l.inbound.get(&peer) == Some(&link_id));
    if current {
        tracing::warn!(%peer, %reason, "accepted peer link ended");
        if let Some(links) = c.links.as_mut() {
            links.inbound.remove(&peer);
        }
        let now = now_us();
        c.input_us = now;
        c.shard.peer_lost(now, peer);
        c.after_input();
    }
}
