//! Drives a hark-core [`ClientSession`] over a blocking `TcpStream`, reconnecting on demand
//! to the relay hosts a [`HostPool`] chooses.
//!
//! ```text
//!  --relay A,B / RelaySource ──merge──► HostPool ──next(now)──► Connect(addr) ──► attempt:
//!        TCP connect (CONNECT_TIMEOUT) ──► hello ──► hello_accepted within CONNECT_TIMEOUT?
//!             yes ──► pool.connected(addr)        no ──► pool.failed(addr) (backoff)
//!                                    WaitUntil(t) ──► sleep until t (reconnect only)
//!  go_away{reconnect_to: X} ──► pool.failed(current), pool.redirect(X) ──► reconnect: X first
//! ```
//!
//! The pool is sans-IO; the sleeping happens here, for exactly as long as the pool says,
//! and only in [`reconnect`]. The first [`Driver::connect`] tries each host once, without
//! waiting, so a command against relays that are all down fails at once.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use hark_core::HostId;
use hark_core::client::{
    Choice, ClientSession, ClientSessionError, HelloState, HostPool, HostPoolError,
};
use hark_core::protocol::{ErrorCode, Event, GoAwayReason};

use super::CliError;

/// How long a connect, a write or the hello's answer may take. A relay that accepts the TCP
/// connection but does not answer the hello within this counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes asked of the socket per read; the input buffer holds at most one frame plus this.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Failed attempts a [`Connection`] reports (the latest ones; older are counted only).
pub const FAILED_ATTEMPTS_KEPT: usize = 16;

/// Where the relay is: asked again before every connection attempt, so a relay that moved
/// (a restart on another port, a DNS change) is found. The addresses join the pool.
pub type RelaySource<'a> = dyn FnMut() -> Vec<String> + 'a;

/// µs since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// A connection attempt that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    /// The relay address, as listed.
    pub relay: String,
    /// Why (connection refused, no answer to the hello, …).
    pub detail: String,
}

/// A connection made: where it went, and what failed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The relay address, as listed (or as a relay's `go_away` named it).
    pub relay: String,
    /// The host id the relay announced in `hello_accepted`.
    pub host: HostId,
    /// Connections made so far, this one included (1: the first; failed attempts are not
    /// counted).
    pub number: u32,
    /// The attempts that failed before this one, the latest [`FAILED_ATTEMPTS_KEPT`].
    pub failed: Vec<FailedAttempt>,
    /// How many attempts failed before this one in all.
    pub failed_count: usize,
}

impl Connection {
    /// Writes the connection for the user: a `connect_failed` per failed attempt and a
    /// `connected` event in JSON, a line each in text.
    pub fn report(&self, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
        for failure in &self.failed {
            if json {
                let line = serde_json::json!({
                    "event": "connect_failed", "relay": failure.relay, "detail": failure.detail,
                });
                writeln!(out, "{line}")?;
            } else {
                writeln!(out, "could not use {}: {}", failure.relay, failure.detail)?;
            }
        }
        if json {
            let line = serde_json::json!({
                "event": "connected", "relay": self.relay, "host": self.host.0,
                "connection": self.number, "failed_attempts": self.failed_count,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "connected to {} (host {})", self.relay, self.host.0)?;
        }
        Ok(())
    }
}

/// One session, its relay hosts and its current connection.
pub struct Driver {
    pub(crate) session: ClientSession,
    pool: Option<HostPool>,
    /// The seed of the pool's jitter.
    seed: u64,
    /// The pool's clock starts here (monotonic, unlike [`now_us`]).
    clock_origin: Instant,
    /// The address of the open connection.
    current: Option<String>,
    stream: Option<TcpStream>,
    input: BytesMut,
    pub(crate) out: BytesMut,
    scratch: Box<[u8]>,
    failed: Vec<FailedAttempt>,
    failed_count: usize,
    /// Connections whose hello was accepted.
    connections: u32,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("connected_to", &self.current)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for `session`, not connected yet. The jitter of its reconnects is seeded
    /// from the clock and the process id, so clients that lost the same relay spread out.
    pub fn new(session: ClientSession) -> Self {
        Self::with_seed(session, now_us() ^ (u64::from(std::process::id()) << 32))
    }

    /// [`Driver::new`] with a fixed jitter seed (tests).
    pub fn with_seed(session: ClientSession, seed: u64) -> Self {
        Self {
            session,
            pool: None,
            seed,
            clock_origin: Instant::now(),
            current: None,
            stream: None,
            input: BytesMut::new(),
            out: BytesMut::new(),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            failed: Vec::new(),
            failed_count: 0,
            connections: 0,
        }
    }

    /// Connections made so far whose hello was accepted (attempts that failed are not
    /// counted, unlike [`ClientSession::connections`]).
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// The pool's clock: µs since the driver was made.
    fn clock_us(&self) -> u64 {
        self.clock_origin.elapsed().as_micros() as u64
    }

    /// Adds `relays` to the host pool (making it on the first call).
    fn merge(&mut self, relays: &[String]) -> Result<(), CliError> {
        let pool_error = |error: HostPoolError| CliError::Usage(format!("--relay: {error}"));
        match &mut self.pool {
            Some(pool) => pool.merge(relays).map(drop).map_err(pool_error),
            None => {
                self.pool = Some(HostPool::new(relays, self.seed).map_err(pool_error)?);
                Ok(())
            }
        }
    }

    /// The pool's addresses, for an error message.
    fn addresses(&self) -> String {
        self.pool.as_ref().map_or_else(String::new, |pool| {
            pool.addresses().collect::<Vec<_>>().join(", ")
        })
    }

    /// Where the pool says to go now (an error before any address was merged).
    fn choose(&mut self) -> Result<Choice, CliError> {
        let now = self.clock_us();
        match &mut self.pool {
            Some(pool) => Ok(pool.next(now)),
            None => Err(CliError::Usage("--relay: no relay address given".into())),
        }
    }

    /// Connects to a host of `relays` (joined to the pool) and waits for the hello's answer,
    /// trying each host the pool offers without waiting, each at most once. Requests queued
    /// in `out` before the call are discarded: the session's `connect` writes everything a
    /// new connection needs. A refused token ends the attempts (another host would refuse
    /// it too).
    pub fn connect(&mut self, relays: &[String]) -> Result<Connection, CliError> {
        self.merge(relays)?;
        self.begin_attempts();
        let hosts = self.pool.as_ref().map_or(0, HostPool::len);
        let mut last = String::from("no address to try");
        // Bounded: one attempt per host in the pool.
        for _ in 0..hosts {
            let Choice::Connect(addr) = self.choose()? else {
                break;
            };
            match self.attempt(&addr) {
                Ok(connection) => return Ok(connection),
                Err(error @ CliError::TokenRefused { .. }) => return Err(error),
                Err(error) => last = format!("{addr}: {}", detail_of(&error)),
            }
        }
        Err(CliError::RelayDown {
            addrs: self.addresses(),
            detail: last,
        })
    }

    /// Starts counting the failed attempts of one connect or reconnect.
    fn begin_attempts(&mut self) {
        self.failed.clear();
        self.failed_count = 0;
    }

    /// One attempt at `addr`: TCP connect, hello, its answer. The pool hears the outcome
    /// (a refused token is not the host's fault and is not counted against it).
    fn attempt(&mut self, addr: &str) -> Result<Connection, CliError> {
        match self.open(addr) {
            Ok(host) => {
                let now = self.clock_us();
                if let Some(pool) = &mut self.pool {
                    pool.connected(addr, now);
                }
                self.current = Some(addr.to_owned());
                self.connections += 1;
                Ok(Connection {
                    relay: addr.to_owned(),
                    host,
                    number: self.connections,
                    failed: std::mem::take(&mut self.failed),
                    failed_count: std::mem::take(&mut self.failed_count),
                })
            }
            Err(error) => {
                self.stream = None;
                if !matches!(error, CliError::TokenRefused { .. }) {
                    let now = self.clock_us();
                    if let Some(pool) = &mut self.pool {
                        pool.failed(addr, now);
                    }
                    if self.failed.len() >= FAILED_ATTEMPTS_KEPT {
                        self.failed.remove(0);
                    }
                    self.failed.push(FailedAttempt {
                        relay: addr.to_owned(),
                        detail: detail_of(&error),
                    });
                    self.failed_count += 1;
                }
                Err(error)
            }
        }
    }

    /// Opens a connection to `addr` and waits for the hello's answer; returns the host id.
    fn open(&mut self, addr: &str) -> Result<HostId, CliError> {
        self.stream = None;
        self.current = None;
        let down = |detail: String| CliError::RelayDown {
            addrs: addr.to_owned(),
            detail,
        };
        let resolved = addr
            .to_socket_addrs()
            .map_err(|error| down(format!("cannot resolve: {error}")))?;
        let mut last = String::from("the name resolves to no address");
        let mut connected = None;
        for socket_addr in resolved {
            match TcpStream::connect_timeout(&socket_addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    connected = Some(stream);
                    break;
                }
                Err(error) => last = error.to_string(),
            }
        }
        let stream = connected.ok_or_else(|| down(last))?;
        stream
            .set_nodelay(true)
            .map_err(|error| down(error.to_string()))?;
        stream
            .set_write_timeout(Some(CONNECT_TIMEOUT))
            .map_err(|error| down(error.to_string()))?;
        self.stream = Some(stream);
        self.input.clear();
        self.out.clear();
        self.session
            .connect(now_us(), &mut self.out)
            .map_err(|error| CliError::Protocol(error.to_string()))?;
        self.flush()?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        // Events before the hello's answer are impossible; wait for it alone.
        loop {
            match self.session.hello_state() {
                HelloState::Accepted(terms) => return Ok(terms.host),
                HelloState::Refused { code, text } => {
                    return Err(CliError::token_refused(*code, text));
                }
                HelloState::NotSent | HelloState::Sent => {}
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(down(format!(
                    "no answer to the hello within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            if let Some(Event::Error { code, text, .. }) = self.next_event(remaining)? {
                return Err(CliError::token_refused(code, &text));
            }
        }
    }

    /// The connection is gone (broken, closed, or the relay leaves): the pool counts it as
    /// a failure of its host, so the next choice prefers another.
    fn lose(&mut self) {
        self.stream = None;
        if let Some(addr) = self.current.take() {
            let now = self.clock_us();
            if let Some(pool) = &mut self.pool {
                pool.failed(&addr, now);
            }
        }
    }

    /// A relay's `go_away`: leave it, and go where it says first (any other host when it
    /// names none). Returns the reason as the disconnection's detail.
    fn go_away(&mut self, reason: GoAwayReason, reconnect_to: &str) -> CliError {
        let from = self.current.clone().unwrap_or_else(|| "the relay".into());
        self.lose();
        let target = if reconnect_to.is_empty() {
            "any other relay".to_owned()
        } else {
            match self.pool.as_mut().map(|pool| pool.redirect(reconnect_to)) {
                Some(Ok(())) => reconnect_to.to_owned(),
                Some(Err(error)) => format!("another relay (not {reconnect_to}: {error})"),
                None => "another relay".to_owned(),
            }
        };
        CliError::Disconnected(format!(
            "{from} is going away ({}); reconnecting to {target}",
            reason_name(reason)
        ))
    }

    /// Writes what the session queued.
    pub fn flush(&mut self) -> Result<(), CliError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let Some(stream) = self.stream.as_mut() else {
            self.out.clear();
            return Err(CliError::Disconnected("not connected".into()));
        };
        let result = stream.write_all(&self.out);
        self.out.clear();
        result.map_err(|error| {
            self.lose();
            CliError::Disconnected(error.to_string())
        })
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` when none came. Keepalive pings
    /// and the session's answers (pongs, resent frames, a handover's resumes, each when the
    /// session says it is due) are written on the way. A handover the session gave up is an
    /// error ([`session_error`]).
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, CliError> {
        let deadline = Instant::now() + timeout;
        loop {
            let decoded = self
                .session
                .receive(&mut self.input, now_us(), &mut self.out)
                .map_err(session_error);
            let decoded = match decoded {
                Ok(decoded) => decoded,
                Err(error) => {
                    self.lose();
                    return Err(error);
                }
            };
            if let Some(Event::GoAway {
                reason,
                reconnect_to,
            }) = &decoded
            {
                return Err(self.go_away(*reason, reconnect_to));
            }
            let wrote = self
                .session
                .poll(now_us(), &mut self.out)
                .map_err(session_error)?;
            if wrote || !self.out.is_empty() {
                self.flush()?;
            }
            if let Some(event) = decoded {
                return Ok(Some(event));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            // Wake for the session's next due work (a handover's resume) too.
            let until_poll = self.session.next_poll_us().map_or(remaining, |at_us| {
                Duration::from_micros(at_us.saturating_sub(now_us()))
            });
            self.read_some(remaining.min(until_poll))?;
        }
    }

    fn read_some(&mut self, wait: Duration) -> Result<(), CliError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(CliError::Disconnected("not connected".into()));
        };
        if let Err(error) = stream.set_read_timeout(Some(wait.max(Duration::from_millis(1)))) {
            self.lose();
            return Err(CliError::Disconnected(error.to_string()));
        }
        match stream.read(&mut self.scratch) {
            Ok(0) => {
                self.lose();
                Err(CliError::Disconnected(
                    "the relay closed the connection".into(),
                ))
            }
            Ok(n) => {
                self.input.extend_from_slice(&self.scratch[..n]);
                Ok(())
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(error) => {
                self.lose();
                Err(CliError::Disconnected(error.to_string()))
            }
        }
    }
}

/// Reconnects `driver` to a host the pool chooses among the addresses from `source` (asked
/// before every attempt and merged into the pool), sleeping while every host waits out its
/// backoff, until `patience` runs out. A redirect from a `go_away` is tried first. A
/// refused token ends the attempts at once (retrying cannot help).
pub fn reconnect(
    driver: &mut Driver,
    source: &mut RelaySource<'_>,
    patience: Duration,
) -> Result<Connection, CliError> {
    let deadline = Instant::now() + patience;
    driver.lose();
    driver.begin_attempts();
    let mut last = String::from("no attempt in time");
    // Bounded by the deadline: an attempt fails at once only for a host that is then down
    // for at least the backoff's minimum, so time passes between rounds.
    loop {
        driver.merge(&source())?;
        match driver.choose()? {
            Choice::Connect(addr) => match driver.attempt(&addr) {
                Ok(connection) => return Ok(connection),
                Err(error @ CliError::TokenRefused { .. }) => return Err(error),
                Err(error) => {
                    last = format!("{addr}: {}", detail_of(&error));
                    if Instant::now() >= deadline {
                        return Err(CliError::Disconnected(last));
                    }
                }
            },
            Choice::WaitUntil(at_us) => {
                let wait = Duration::from_micros(at_us.saturating_sub(driver.clock_us()));
                if Instant::now() + wait > deadline {
                    return Err(CliError::Disconnected(last));
                }
                std::thread::sleep(wait);
            }
        }
    }
}

/// A session error as the CLI reports it. A message the session can no longer complete is a
/// refusal with the nearest wire code, so `hark talk` may talk the file again: a resume
/// asking for frames no longer kept ([`ClientSessionError::ResumeGap`]) as
/// `message_unavailable`, a handover given up ([`ClientSessionError::HandoverFailed`]) as
/// `owner_unavailable` (the owner stayed unreachable). Anything else is a protocol error.
pub(crate) fn session_error(error: ClientSessionError) -> CliError {
    match &error {
        ClientSessionError::ResumeGap { msg_id, .. } => CliError::refused(
            format!("resume {msg_id}"),
            ErrorCode::MESSAGE_UNAVAILABLE,
            &error.to_string(),
        ),
        ClientSessionError::HandoverFailed { msg_id, .. } => CliError::refused(
            format!("hand {msg_id} over to a new owner"),
            ErrorCode::OWNER_UNAVAILABLE,
            &error.to_string(),
        ),
        _ => CliError::Protocol(error.to_string()),
    }
}

/// The part of an error that says what went wrong with one host.
fn detail_of(error: &CliError) -> String {
    match error {
        CliError::RelayDown { detail, .. } | CliError::Disconnected(detail) => detail.clone(),
        other => other.to_string(),
    }
}

/// A `go_away` reason for people.
fn reason_name(reason: GoAwayReason) -> String {
    match reason {
        GoAwayReason::DRAINING => "draining".into(),
        GoAwayReason::REBALANCED => "rebalanced".into(),
        GoAwayReason::OVERLOADED => "overloaded".into(),
        GoAwayReason(other) => format!("reason {other}"),
    }
}
