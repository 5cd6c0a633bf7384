//! The admin port: Prometheus metrics, liveness and readiness over plain HTTP/1.1, and the
//! drain switch.
//!
//! It runs on its own std thread with blocking sockets, well away from the shard threads, and
//! only reads the [`Registry`] the shards publish into. It serves one connection at a time (a
//! scraper and a load balancer's probes are its only clients), so every connection is bounded:
//! at most [`AdminLimits::request_head_bytes_max`] bytes of request head, sent within
//! [`AdminLimits::request_read_deadline_ms`] of the accept, and a response taken within
//! [`AdminLimits::response_write_deadline_ms`]. A silent client holds the port no longer than
//! that.
//!
//! ```text
//!  GET /metrics ─► 200 Prometheus text (Registry::render_prometheus)
//!  GET /health  ─► 200 "ok" while the process runs
//!  GET /ready   ─► 200 when ready and not draining, else 503
//!  POST /drain  ─► 202, and the relay drains as on SIGTERM (503 before the relay serves)
//! ```
//!
//! `/drain` changes state, so it is only as private as the admin address: loopback unless
//! configured otherwise (docs/metrics.md).
//!
//! Stopping does not poll: the thread waits in `poll(2)` on the listener and on one end of a
//! socket pair whose other end [`AdminServer`] holds; dropping that end wakes it.

mod http;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::metrics::Registry;
use http::{HeadError, Method, Reply, Status};

/// Default longest request head (request line and headers), in bytes.
pub const ADMIN_REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Largest request head limit a configuration may set, in bytes.
pub const ADMIN_REQUEST_HEAD_BYTES_LIMIT: usize = 1024 * 1024;
/// Smallest request head limit a configuration may set: room for `GET /metrics HTTP/1.1`.
pub const ADMIN_REQUEST_HEAD_BYTES_MIN: usize = 64;
/// Default time a client has to send its request head, from the accept, in milliseconds.
pub const ADMIN_REQUEST_READ_DEADLINE_MS: u64 = 2_000;
/// Default time a client has to take the whole response, in milliseconds.
pub const ADMIN_RESPONSE_WRITE_DEADLINE_MS: u64 = 5_000;
/// Longest deadline a configuration may set, in milliseconds.
pub const ADMIN_DEADLINE_MS_LIMIT: u64 = 60_000;
/// Pause after a failed accept (out of file descriptors, say) before trying again, in
/// milliseconds, so a persistent failure does not spin the thread.
const ACCEPT_RETRY_MS: u16 = 100;

/// Content type of `/metrics`: the Prometheus text format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
const ALLOWED_METHODS: &str = "GET, HEAD";
const DRAIN_ALLOWED_METHODS: &str = "POST";

/// What `POST /drain` calls to start the drain (the same as SIGTERM does). Every `POST
/// /drain` calls it, so it must be harmless to repeat.
pub struct DrainTrigger(Box<dyn Fn() + Send + Sync>);

impl DrainTrigger {
    /// A trigger that calls `start_drain`.
    pub fn new(start_drain: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Box::new(start_drain))
    }
}

impl std::fmt::Debug for DrainTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DrainTrigger")
    }
}

/// The drain trigger, set once the relay serves; until then `POST /drain` answers 503.
type DrainSlot = Arc<OnceLock<DrainTrigger>>;

/// Bounds on each admin connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// Longest request head, in bytes; a longer one gets 431.
    /// [`ADMIN_REQUEST_HEAD_BYTES_MIN`]..=[`ADMIN_REQUEST_HEAD_BYTES_LIMIT`].
    pub request_head_bytes_max: usize,
    /// Time from the accept by which the whole request head must have arrived; later gets 408.
    /// 1..=[`ADMIN_DEADLINE_MS_LIMIT`].
    pub request_read_deadline_ms: u64,
    /// Time the client has to take the whole response; a slower reader is cut off.
    /// 1..=[`ADMIN_DEADLINE_MS_LIMIT`].
    pub response_write_deadline_ms: u64,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            request_head_bytes_max: ADMIN_REQUEST_HEAD_BYTES_MAX,
            request_read_deadline_ms: ADMIN_REQUEST_READ_DEADLINE_MS,
            response_write_deadline_ms: ADMIN_RESPONSE_WRITE_DEADLINE_MS,
        }
    }
}

impl AdminLimits {
    fn check(&self) -> io::Result<()> {
        let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if !(ADMIN_REQUEST_HEAD_BYTES_MIN..=ADMIN_REQUEST_HEAD_BYTES_LIMIT)
            .contains(&self.request_head_bytes_max)
        {
            return invalid(format!(
                "admin request_head_bytes_max is {}, allowed {ADMIN_REQUEST_HEAD_BYTES_MIN}..={ADMIN_REQUEST_HEAD_BYTES_LIMIT}",
                self.request_head_bytes_max
            ));
        }
        for (name, ms) in [
            ("request_read_deadline_ms", self.request_read_deadline_ms),
            (
                "response_write_deadline_ms",
                self.response_write_deadline_ms,
            ),
        ] {
            if !(1..=ADMIN_DEADLINE_MS_LIMIT).contains(&ms) {
                return invalid(format!(
                    "admin {name} is {ms}, allowed 1..={ADMIN_DEADLINE_MS_LIMIT}"
                ));
            }
        }
        Ok(())
    }
}

/// The running admin endpoint. Serves GET /metrics (text/plain; version=0.0.4), /health (200
/// "ok" while the process runs), /ready (200 when ready and not draining, else 503) on its own
/// std thread; HEAD like GET without a body. POST /drain starts the drain through the trigger
/// given to [`AdminServer::set_drain`] (202). Bad requests get 400, unknown paths 404, other
/// methods 405.
///
/// Dropping it without [`AdminServer::stop`] also ends the thread, without waiting for it.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    /// Dropping this end of the socket pair wakes the server thread to exit.
    stop: UnixStream,
    thread: JoinHandle<()>,
    drain: DrainSlot,
}

impl AdminServer {
    /// Serves on `listener` (already bound, e.g. by the config's admin address) with the
    /// default [`AdminLimits`]. Fails if the listener's address cannot be read or the thread
    /// cannot be started.
    pub fn start(listener: TcpListener, registry: Arc<Registry>) -> io::Result<Self> {
        Self::start_with_limits(listener, registry, AdminLimits::default())
    }

    /// As [`AdminServer::start`], with explicit bounds; limits out of range are refused with
    /// [`io::ErrorKind::InvalidInput`].
    pub fn start_with_limits(
        listener: TcpListener,
        registry: Arc<Registry>,
        limits: AdminLimits,
    ) -> io::Result<Self> {
        limits.check()?;
        let local_addr = listener.local_addr()?;
        // Non-blocking: a connection that is reset between poll's readiness and the accept must
        // not leave the thread blocked in accept, deaf to stop.
        listener.set_nonblocking(true)?;
        let (stop, stop_wake) = UnixStream::pair()?;
        let drain = DrainSlot::default();
        let shared = Shared {
            registry,
            drain: Arc::clone(&drain),
        };
        let thread = thread::Builder::new()
            .name("hark-admin".into())
            .spawn(move || serve(listener, stop_wake, &shared, limits))?;
        Ok(Self {
            local_addr,
            stop,
            thread,
            drain,
        })
    }

    /// Arms `POST /drain`: from now on it calls `trigger` (the relay's drain, once it
    /// serves). Only the first trigger is kept; returns false when one was set already.
    pub fn set_drain(&self, trigger: DrainTrigger) -> bool {
        self.drain.set(trigger).is_ok()
    }

    /// The address the endpoint listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and joins the thread. A connection being served finishes first, so this
    /// takes at most one connection's deadlines.
    pub fn stop(self) {
        let Self { stop, thread, .. } = self;
        drop(stop);
        // An Err means the thread panicked; it has ended either way and there is nothing to
        // clean up.
        let _ = thread.join();
    }
}

/// What the server thread reads or calls.
struct Shared {
    registry: Arc<Registry>,
    drain: DrainSlot,
}

/// What woke the server thread.
enum Wake {
    Stop,
    Connection,
    Nothing,
}

/// Buffers reused across connections.
#[derive(Default)]
struct Buffers {
    head: Vec<u8>,
    body: String,
    response: Vec<u8>,
}

fn serve(listener: TcpListener, stop_wake: UnixStream, shared: &Shared, limits: AdminLimits) {
    let mut buffers = Buffers::default();
    loop {
        match wait(Some(listener.as_raw_fd()), stop_wake.as_raw_fd(), -1) {
            Ok(Wake::Stop) => return,
            Ok(Wake::Connection) => {}
            Ok(Wake::Nothing) => continue,
            Err(_) => {
                // poll itself failed (out of memory): wait, still listening for stop.
                thread::sleep(Duration::from_millis(ACCEPT_RETRY_MS.into()));
                continue;
            }
        }
        match listener.accept() {
            Ok((stream, _peer)) => serve_connection(stream, shared, &limits, &mut buffers),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(_) => {
                // Out of file descriptors or the like: back off, still waking for stop.
                if let Ok(Wake::Stop) = wait(None, stop_wake.as_raw_fd(), ACCEPT_RETRY_MS.into()) {
                    return;
                }
            }
        }
    }
}

/// Waits until `listener` (if any) has a connection, the stop socket is readable or closed, or
/// `timeout_ms` passes (-1: no timeout).
fn wait(listener: Option<RawFd>, stop: RawFd, timeout_ms: i32) -> io::Result<Wake> {
    let mut fds = [
        libc::pollfd {
            // poll ignores negative descriptors.
            fd: listener.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a live array of two initialised pollfd structs for the whole call and
    // nfds is its length; poll only writes their `revents` fields.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Ok(Wake::Nothing);
        }
        return Err(error);
    }
    if fds[1].revents != 0 {
        // Readable, hung up or in error: the other end was dropped (nothing else writes to it).
        return Ok(Wake::Stop);
    }
    if fds[0].revents != 0 {
        return Ok(Wake::Connection);
    }
    Ok(Wake::Nothing)
}

/// Answers one request and closes the connection. Errors end the connection silently: the
/// client is gone or too slow, and the port moves on.
fn serve_connection(
    mut stream: TcpStream,
    shared: &Shared,
    limits: &AdminLimits,
    buffers: &mut Buffers,
) {
    let read_deadline = Instant::now() + Duration::from_millis(limits.request_read_deadline_ms);
    // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux, but other systems may.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let Buffers {
        head,
        body,
        response,
    } = buffers;
    let (reply, method, request_consumed) = match http::read_head(
        &mut stream,
        head,
        limits.request_head_bytes_max,
        read_deadline,
    ) {
        Ok(head_len) => match http::parse_head(&head[..head_len]) {
            Ok(request) => (
                route(request.method, request.path, shared, body),
                request.method,
                head_len == head.len(),
            ),
            Err(http::BadRequest(why)) => (
                error(Status::BadRequest, why, body),
                Method::Get,
                head_len == head.len(),
            ),
        },
        Err(HeadError::TooLarge) => (
            error(Status::HeaderFieldsTooLarge, "request head too large", body),
            Method::Get,
            false,
        ),
        Err(HeadError::TimedOut) => (
            error(
                Status::RequestTimeout,
                "request head not received in time",
                body,
            ),
            Method::Get,
            true,
        ),
        Err(HeadError::Truncated) => (
            error(
                Status::BadRequest,
                "connection closed inside the request head",
                body,
            ),
            Method::Get,
            true,
        ),
        Err(HeadError::Closed | HeadError::Io) => return,
    };
    let write_deadline = Instant::now() + Duration::from_millis(limits.response_write_deadline_ms);
    let send_body = method != Method::Head;
    if http::write_response(&mut stream, response, &reply, send_body, write_deadline).is_err() {
        return;
    }
    if !request_consumed {
        // Unread request bytes would make the close a reset that can destroy the response
        // before the client reads it.
        http::linger(&mut stream, read_deadline);
    }
}

/// The answer to a well-formed request. `/metrics` renders into `body`.
fn route<'a>(method: Method, path: &str, shared: &Shared, body: &'a mut String) -> Reply<'a> {
    if path == "/drain" {
        return drain(method, shared);
    }
    if !matches!(path, "/metrics" | "/health" | "/ready") {
        return error(
            Status::NotFound,
            "no such path; try /metrics, /health, /ready or POST /drain",
            body,
        );
    }
    let registry = &shared.registry;
    if !matches!(method, Method::Get | Method::Head) {
        return Reply {
            status: Status::MethodNotAllowed,
            content_type: TEXT_CONTENT_TYPE,
            allow: Some(ALLOWED_METHODS),
            body: "only GET and HEAD are served\n",
        };
    }
    let (status, content_type, text): (Status, &'static str, &'a str) = match path {
        "/metrics" => {
            body.clear();
            registry.render_prometheus(body);
            (Status::Ok, METRICS_CONTENT_TYPE, body.as_str())
        }
        "/health" => (Status::Ok, TEXT_CONTENT_TYPE, "ok\n"),
        _ if registry.is_ready() => (Status::Ok, TEXT_CONTENT_TYPE, "ready\n"),
        _ if registry.is_draining() => {
            (Status::ServiceUnavailable, TEXT_CONTENT_TYPE, "draining\n")
        }
        _ => (Status::ServiceUnavailable, TEXT_CONTENT_TYPE, "not ready\n"),
    };
    Reply {
        status,
        content_type,
        allow: None,
        body: text,
    }
}

/// `/drain`: a POST starts the drain (again: harmless) and says whether it had started
/// already; other methods are refused.
fn drain(method: Method, shared: &Shared) -> Reply<'static> {
    let text = |status, body| Reply {
        status,
        content_type: TEXT_CONTENT_TYPE,
        allow: None,
        body,
    };
    if method != Method::Post {
        return Reply {
            allow: Some(DRAIN_ALLOWED_METHODS),
            ..text(Status::MethodNotAllowed, "only POST starts a drain\n")
        };
    }
    let Some(trigger) = shared.drain.get() else {
        return text(
            Status::ServiceUnavailable,
            "the relay is still starting; nothing to drain yet\n",
        );
    };
    let already = shared.registry.is_draining();
    shared.registry.set_draining(true);
    (trigger.0)();
    if already {
        text(Status::Accepted, "draining already\n")
    } else {
        text(Status::Accepted, "draining started\n")
    }
}

/// An error reply whose body is `why` and a newline, written into `body`.
fn error<'a>(status: Status, why: &str, body: &'a mut String) -> Reply<'a> {
    body.clear();
    body.push_str(why);
    body.push('\n');
    Reply {
        status,
        content_type: TEXT_CONTENT_TYPE,
        allow: None,
        body: body.as_str(),
    }
}
