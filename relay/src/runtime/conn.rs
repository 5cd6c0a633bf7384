//! One client connection on a shard thread: a reader task (socket → decoder → shard) and a
//! writer task (send queue → `writev` → socket), sharing a [`Conn`].
//!
//! ```text
//!  socket ─read─► BytesMut ─decode─► Shard::handle_request ─► actions ─► Conn::push ─┐
//!  socket ◄─writev── IoVecs ◄── send queue (shared Bytes, no copy per recipient) ◄─────┘
//! ```
//!
//! A connection ends in one of three ways: the peer hangs up (the reader tells the shard),
//! the shard closes it (the writer flushes what was queued, then shuts the socket down, which
//! also ends the reader's pending read), or the shard hands it to another shard (the reader
//! stops decoding at once, the writer finishes its write in flight, and the reunited socket,
//! its undecoded input and its unwritten queue travel over the mesh).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hark_core::protocol::Decoder;
use hark_core::protocol::Request;
use hark_core::shard::{ConnId, SessionHandoff};
use monoio::buf::{IoBufMut, IoVecBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

use super::ctx::{Ctx, HandOffSocket, MeshItem, SharedCtx};
use super::wake::{Wakeup, now_us};

/// Buffers handed to one `writev` at most (well below `IOV_MAX`).
const WRITE_IOVECS_MAX: usize = 64;
/// Bytes handed to one `writev` at most.
const WRITE_BYTES_MAX: usize = 256 * 1024;
/// The reader keeps at least this much room free before it reads.
const READ_ROOM_MIN: usize = 1024;
/// What the reader's buffer grows by when it needs room.
const READ_CHUNK_BYTES: usize = 4 * 1024;
/// How long a connection the shard closed may take to write what was queued for it before
/// the socket is shut down regardless (a client that stopped reading).
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Served: reading and writing.
    Open,
    /// The shard closed it: write what is queued, then shut down.
    Closing,
    /// The peer is gone: drop what is queued, shut down.
    Gone,
    /// Moving to another shard: stop reading at once, finish the write in flight, stop.
    HandingOff,
}

/// Bytes queued for the socket, with the time of the input that produced them (for the relay
/// latency histogram).
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) bytes: Bytes,
    pub(crate) input_us: u64,
}

/// The state the reader, the writer and the shard's dispatch share.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    fd: RawFd,
    pub(crate) phase: Cell<Phase>,
    queue: RefCell<VecDeque<Queued>>,
    queued_bytes: Cell<usize>,
    writer_wake: Wakeup,
    /// The write half, parked here by the writer when it stops for a handoff.
    writer_half: RefCell<Option<OwnedWriteHalf<TcpStream>>>,
    writer_stopped: Wakeup,
    /// Target shard and session of a handoff in progress.
    handoff: RefCell<Option<(usize, SessionHandoff)>>,
    /// Bytes written after the shard handed the session off (already counted in the
    /// handoff's `queued_bytes`; the new shard must not wait for them).
    written_after_handoff: Cell<usize>,
    /// Halves of the socket still alive; the fd is closed once both are dropped.
    halves: Cell<u8>,
    /// The reader is waiting in `read` (not processing input).
    reading: Cell<bool>,
}

impl Conn {
    fn new(id: ConnId, fd: RawFd, queue: VecDeque<Queued>) -> Rc<Self> {
        let queued_bytes = queue.iter().map(|q| q.bytes.len()).sum();
        Rc::new(Self {
            id,
            fd,
            phase: Cell::new(Phase::Open),
            queue: RefCell::new(queue),
            queued_bytes: Cell::new(queued_bytes),
            writer_wake: Wakeup::default(),
            writer_half: RefCell::new(None),
            writer_stopped: Wakeup::default(),
            handoff: RefCell::new(None),
            written_after_handoff: Cell::new(0),
            halves: Cell::new(2),
            reading: Cell::new(false),
        })
    }

    /// Queues `bytes` for the socket. Ignored once the connection is not open.
    pub(crate) fn push(&self, bytes: Bytes, input_us: u64) -> usize {
        if self.phase.get() != Phase::Open {
            return 0;
        }
        let len = bytes.len();
        self.queue
            .borrow_mut()
            .push_back(Queued { bytes, input_us });
        self.queued_bytes.set(self.queued_bytes.get() + len);
        self.writer_wake.notify();
        len
    }

    /// The shard closed the connection: flush, then shut down (at most [`CLOSE_LINGER`]).
    pub(crate) fn close_after_flush(self: &Rc<Self>) {
        if self.phase.get() != Phase::Open {
            return;
        }
        self.phase.set(Phase::Closing);
        self.writer_wake.notify();
        self.shut_down_after_linger();
    }

    /// Shuts the socket down [`CLOSE_LINGER`] from now, whatever is still queued.
    fn shut_down_after_linger(self: &Rc<Self>) {
        let conn = Rc::clone(self);
        monoio::spawn(async move {
            monoio::time::sleep(CLOSE_LINGER).await;
            conn.shut_down();
        });
    }

    /// The peer is gone: drop the queue and shut down.
    pub(crate) fn abandon(&self) -> usize {
        self.phase.set(Phase::Gone);
        let dropped = self.queued_bytes.replace(0);
        self.queue.borrow_mut().clear();
        self.writer_wake.notify();
        self.shut_down();
        dropped
    }

    /// The shard handed the session to shard `to`. Returns `false` when the reader is parked
    /// in a read (the handoff then cannot carry the socket; the caller closes instead).
    pub(crate) fn begin_handoff(&self, to: usize, state: SessionHandoff) -> bool {
        if self.reading.get() || self.phase.get() != Phase::Open {
            return false;
        }
        self.phase.set(Phase::HandingOff);
        *self.handoff.borrow_mut() = Some((to, state));
        self.writer_wake.notify();
        true
    }

    /// Shuts the socket down both ways (ends a pending read or write), if it is still open.
    fn shut_down(&self) {
        if self.halves.get() > 0 {
            // SAFETY: the fd belongs to this connection's socket while a half is alive
            // (`halves > 0`), so it cannot name another file.
            unsafe {
                libc::shutdown(self.fd, libc::SHUT_RDWR);
            }
        }
    }
}

/// `writev` buffers: the queued `Bytes` themselves (moved out of the queue, never copied) and
/// their iovecs.
struct IoVecs {
    bufs: Vec<Queued>,
    iovecs: Vec<libc::iovec>,
}

// SAFETY: `iovecs[i]` points into `bufs[i].bytes`, whose heap data does not move or change
// while the struct is owned by the runtime (the `Bytes` are immutable and only moved as
// handles); the count is `iovecs.len()`.
unsafe impl IoVecBuf for IoVecs {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }
    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}

impl IoVecs {
    fn new() -> Self {
        Self {
            bufs: Vec::with_capacity(WRITE_IOVECS_MAX),
            iovecs: Vec::with_capacity(WRITE_IOVECS_MAX),
        }
    }

    /// Moves buffers from the front of `queue` until the batch is full.
    fn fill(&mut self, queue: &mut VecDeque<Queued>) {
        let mut bytes = 0;
        while self.bufs.len() < WRITE_IOVECS_MAX && bytes < WRITE_BYTES_MAX {
            let Some(q) = queue.pop_front() else { break };
            bytes += q.bytes.len();
            self.iovecs.push(libc::iovec {
                iov_base: q.bytes.as_ptr() as *mut libc::c_void,
                iov_len: q.bytes.len(),
            });
            self.bufs.push(q);
        }
    }

    /// After `written` bytes went out: returns the oldest input time among the buffers
    /// finished, and puts the unwritten rest back at the front of `queue`, in order.
    fn settle(&mut self, mut written: usize, queue: &mut VecDeque<Queued>) -> Option<u64> {
        self.iovecs.clear();
        let mut oldest: Option<u64> = None;
        let mut rest = Vec::new();
        for mut q in self.bufs.drain(..) {
            if written >= q.bytes.len() {
                written -= q.bytes.len();
                oldest = Some(oldest.map_or(q.input_us, |o| o.min(q.input_us)));
            } else {
                q.bytes.advance(written);
                written = 0;
                rest.push(q);
            }
        }
        for q in rest.into_iter().rev() {
            queue.push_front(q);
        }
        oldest
    }
}

/// Starts serving a socket as connection `id`: its reader (which first decodes `input`, the
/// bytes a previous shard read and did not decode) and its writer (which first writes
/// `queue`).
pub(crate) fn serve(
    ctx: &SharedCtx,
    id: ConnId,
    stream: TcpStream,
    input: BytesMut,
    queue: VecDeque<Queued>,
    frame_len_max: u32,
) -> Rc<Conn> {
    let conn = Conn::new(id, stream.as_raw_fd(), queue);
    let (reader, writer) = stream.into_split();
    ctx.borrow_mut().writers_running += 1;
    monoio::spawn(write_loop(Rc::clone(ctx), Rc::clone(&conn), writer));
    monoio::spawn(read_loop(
        Rc::clone(ctx),
        Rc::clone(&conn),
        reader,
        input,
        Decoder::with_frame_len_max(frame_len_max),
    ));
    conn
}

/// Writes `goodbye` to a connection the shard refused and closes it; no reader.
pub(crate) fn refuse(ctx: &SharedCtx, stream: TcpStream, goodbye: Bytes) {
    let unknown = ConnId {
        index: u32::MAX,
        generation: u32::MAX,
    };
    let mut queue = VecDeque::new();
    queue.push_back(Queued {
        bytes: goodbye,
        input_us: now_us(),
    });
    let conn = Conn::new(unknown, stream.as_raw_fd(), queue);
    conn.phase.set(Phase::Closing);
    // The read half is dropped at once; the write half flushes the goodbye.
    let (reader, writer) = stream.into_split();
    drop(reader);
    conn.halves.set(1);
    ctx.borrow_mut().writers_running += 1;
    conn.shut_down_after_linger();
    monoio::spawn(write_loop(Rc::clone(ctx), conn, writer));
}

async fn write_loop(ctx: SharedCtx, conn: Rc<Conn>, mut writer: OwnedWriteHalf<TcpStream>) {
    let mut batch = IoVecs::new();
    loop {
        match conn.phase.get() {
            Phase::Gone => break,
            Phase::HandingOff => {
                *conn.writer_half.borrow_mut() = Some(writer);
                conn.writer_stopped.notify();
                ctx.borrow_mut().writers_running -= 1;
                return;
            }
            Phase::Open | Phase::Closing => {}
        }
        batch.fill(&mut conn.queue.borrow_mut());
        if batch.bufs.is_empty() {
            if conn.phase.get() == Phase::Closing {
                break;
            }
            conn.writer_wake.wait().await;
            continue;
        }
        let (result, back) = writer.writev(batch).await;
        batch = back;
        let written = match result {
            Ok(n) => n,
            Err(_) if conn.phase.get() == Phase::HandingOff => {
                // The socket moves on anyway; its new shard finds it dead and closes it.
                batch.settle(0, &mut conn.queue.borrow_mut());
                continue;
            }
            Err(_) => {
                // Anything but a clean write: the connection is dead. The shutdown also ends
                // the reader's pending read.
                batch.settle(0, &mut conn.queue.borrow_mut());
                if conn.phase.get() == Phase::Open {
                    let mut c = ctx.borrow_mut();
                    c.peer_closed(&conn);
                    c.after_input();
                } else {
                    conn.abandon();
                }
                break;
            }
        };
        let oldest = batch.settle(written, &mut conn.queue.borrow_mut());
        conn.queued_bytes
            .set(conn.queued_bytes.get().saturating_sub(written));
        let now = now_us();
        let mut c = ctx.borrow_mut();
        c.wrote(written, oldest.map(|t| now.saturating_sub(t)));
        match conn.phase.get() {
            Phase::Open => {
                c.input_us = now;
                c.shard.bytes_written(now, conn.id, written);
                c.after_input();
            }
            Phase::HandingOff => {
                conn.written_after_handoff
                    .set(conn.written_after_handoff.get() + written);
            }
            Phase::Closing | Phase::Gone => {}
        }
    }
    // Closed: what is left in the queue is not counted as queued any more.
    let left = conn.queued_bytes.replace(0);
    conn.queue.borrow_mut().clear();
    {
        let mut c = ctx.borrow_mut();
        c.unqueued(left);
        c.writers_running -= 1;
        if c.draining {
            c.finished.notify();
        }
    }
    conn.shut_down();
    conn.halves.set(conn.halves.get().saturating_sub(1));
    drop(writer);
}

async fn read_loop(
    ctx: SharedCtx,
    conn: Rc<Conn>,
    mut reader: OwnedReadHalf<TcpStream>,
    mut input: BytesMut,
    mut decoder: Decoder,
) {
    loop {
        if !input.is_empty() && !decode_input(&ctx, &conn, &mut input, &mut decoder) {
            break;
        }
        if conn.phase.get() != Phase::Open {
            break;
        }
        Ctx::wait_for_mesh_room(&ctx).await;
        if input.capacity() - input.len() < READ_ROOM_MIN {
            input.reserve(READ_CHUNK_BYTES);
        }
        let room = input.len()..input.capacity();
        conn.reading.set(true);
        let (result, slice) = reader.read(input.slice_mut(room)).await;
        conn.reading.set(false);
        input = slice.into_inner();
        match result {
            Ok(n) if n > 0 => ctx.borrow_mut().read_bytes(n),
            _ => {
                if conn.phase.get() == Phase::Open {
                    let mut c = ctx.borrow_mut();
                    c.peer_closed(&conn);
                    c.after_input();
                }
                break;
            }
        }
    }
    if conn.phase.get() == Phase::HandingOff {
        hand_off(&ctx, &conn, reader, input).await;
        return;
    }
    conn.halves.set(conn.halves.get().saturating_sub(1));
    drop(reader);
}

/// Decodes and handles every whole request in `input`. Returns whether to keep reading.
fn decode_input(ctx: &SharedCtx, conn: &Conn, input: &mut BytesMut, decoder: &mut Decoder) -> bool {
    let now = now_us();
    let mut c = ctx.borrow_mut();
    c.input_us = now;
    let mut keep_reading = true;
    while conn.phase.get() == Phase::Open {
        match decoder.decode_request(input) {
            Ok(Some(request)) => {
                if matches!(request, Request::TalkFrame { .. }) {
                    c.stats.counters.frames_in += 1;
                }
                c.shard.handle_request(now, conn.id, request);
                c.dispatch();
            }
            Ok(None) => break,
            Err(error) => {
                c.stats.counters.decode_errors += 1;
                c.shard.decode_failed(now, conn.id, &error);
                c.dispatch();
                keep_reading = false;
                break;
            }
        }
    }
    c.after_input();
    keep_reading && conn.phase.get() == Phase::Open
}

/// Moves the socket to the handoff's target shard once the writer has stopped.
async fn hand_off(
    ctx: &SharedCtx,
    conn: &Rc<Conn>,
    reader: OwnedReadHalf<TcpStream>,
    input: BytesMut,
) {
    loop {
        if let Some(writer) = conn.writer_half.borrow_mut().take() {
            let Some((to, mut state)) = conn.handoff.borrow_mut().take() else {
                return;
            };
            state.queued_bytes = state
                .queued_bytes
                .saturating_sub(conn.written_after_handoff.get());
            let queue = std::mem::take(&mut *conn.queue.borrow_mut());
            let queued = conn.queued_bytes.replace(0);
            let socket = match reader.reunite(writer) {
                // SAFETY: `into_raw_fd` gives up the runtime's ownership of the fd (and
                // deregisters it from the legacy driver); std takes it over.
                Ok(stream) => unsafe { std::net::TcpStream::from_raw_fd(stream.into_raw_fd()) },
                Err(_) => return,
            };
            conn.halves.set(0);
            let mut c = ctx.borrow_mut();
            c.unqueued(queued);
            c.stats.counters.handoffs_out += 1;
            c.send_mesh(
                to,
                MeshItem::HandOff(Box::new(HandOffSocket {
                    socket,
                    input,
                    queue,
                    state,
                })),
            );
            c.after_input();
            return;
        }
        conn.writer_stopped.wait().await;
    }
}

impl Ctx {
    /// Takes over a socket another shard handed off (the mesh's `HandOff`).
    pub(crate) fn adopt(ctx: &SharedCtx, handoff: HandOffSocket) {
        let HandOffSocket {
            socket,
            input,
            queue,
            state,
        } = handoff;
        let stream = match TcpStream::from_std(socket) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "a handed-off socket could not join this shard's runtime");
                return;
            }
        };
        let now = now_us();
        let opened = {
            let mut c = ctx.borrow_mut();
            c.input_us = now;
            c.stats.counters.handoffs_in += 1;
            c.shard.connection_adopted(now, state)
        };
        match opened {
            hark_core::shard::Opened::Accepted(id) => {
                let queued: usize = queue.iter().map(|q| q.bytes.len()).sum();
                let frame_len_max = ctx.borrow().frame_len_max;
                let conn = serve(ctx, id, stream, input, queue, frame_len_max);
                let mut c = ctx.borrow_mut();
                c.requeued(queued);
                c.conns.insert(id, conn);
                c.dispatch();
            }
            hark_core::shard::Opened::Refused { goodbye } => {
                ctx.borrow_mut().stats.counters.connections_refused += 1;
                refuse(ctx, stream, goodbye);
            }
        }
    }
}
