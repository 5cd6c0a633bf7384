//! Drives a hark-core [`ClientSession`] over a blocking `TcpStream`, reconnecting on demand.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use hark_core::client::{ClientSession, HelloState};
use hark_core::protocol::Event;

use super::CliError;

/// How long a connect, a write or the hello's answer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes asked of the socket per read; the input buffer holds at most one frame plus this.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Where the relay is: asked again before every connection attempt, so a relay that moved
/// (a restart on another port, a DNS change) is found.
pub type RelaySource<'a> = dyn FnMut() -> Vec<String> + 'a;

/// The addresses of `--relay` flags, resolved now.
pub fn resolve(relays: &[String]) -> Vec<SocketAddr> {
    relays
        .iter()
        .filter_map(|relay| relay.to_socket_addrs().ok())
        .flatten()
        .collect()
}

/// µs since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// One session and its current connection.
pub struct Driver {
    pub(crate) session: ClientSession,
    stream: Option<TcpStream>,
    input: BytesMut,
    pub(crate) out: BytesMut,
    scratch: Box<[u8]>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("connected", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for `session`, not connected yet.
    pub fn new(session: ClientSession) -> Self {
        Self {
            session,
            stream: None,
            input: BytesMut::new(),
            out: BytesMut::new(),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
        }
    }

    /// Connects to the first address of `relays` that answers and waits for the hello's
    /// answer. Requests queued in `out` before the call are discarded: the session's
    /// `connect` writes everything a new connection needs.
    pub fn connect(&mut self, relays: &[String]) -> Result<(), CliError> {
        self.stream = None;
        let addrs = resolve(relays);
        let mut last = String::from("no address resolves");
        let mut connected = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    connected = Some(stream);
                    break;
                }
                Err(error) => last = error.to_string(),
            }
        }
        let Some(stream) = connected else {
            return Err(CliError::RelayDown {
                addrs: relays.join(", "),
                detail: last,
            });
        };
        let io_error = |error: io::Error| CliError::RelayDown {
            addrs: relays.join(", "),
            detail: error.to_string(),
        };
        stream.set_nodelay(true).map_err(io_error)?;
        stream
            .set_write_timeout(Some(CONNECT_TIMEOUT))
            .map_err(io_error)?;
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
                HelloState::Accepted(_) => return Ok(()),
                HelloState::Refused { code, text } => {
                    return Err(CliError::token_refused(*code, text));
                }
                HelloState::NotSent | HelloState::Sent => {}
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(CliError::RelayDown {
                    addrs: relays.join(", "),
                    detail: "no answer to the hello".into(),
                });
            }
            if let Some(Event::Error { code, text, .. }) = self.next_event(remaining)? {
                return Err(CliError::token_refused(code, &text));
            }
        }
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
            self.stream = None;
            CliError::Disconnected(error.to_string())
        })
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` when none came. Keepalive pings
    /// and the session's answers (pongs, resent frames) are written on the way.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, CliError> {
        let deadline = Instant::now() + timeout;
        loop {
            let decoded = self
                .session
                .receive(&mut self.input, now_us(), &mut self.out)
                .map_err(|error| CliError::Protocol(error.to_string()));
            let decoded = match decoded {
                Ok(decoded) => decoded,
                Err(error) => {
                    self.stream = None;
                    return Err(error);
                }
            };
            if self.session.poll(now_us(), &mut self.out).unwrap_or(false) || !self.out.is_empty() {
                self.flush()?;
            }
            if let Some(event) = decoded {
                return Ok(Some(event));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            self.read_some(remaining)?;
        }
    }

    fn read_some(&mut self, wait: Duration) -> Result<(), CliError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(CliError::Disconnected("not connected".into()));
        };
        if let Err(error) = stream.set_read_timeout(Some(wait.max(Duration::from_millis(1)))) {
            self.stream = None;
            return Err(CliError::Disconnected(error.to_string()));
        }
        match stream.read(&mut self.scratch) {
            Ok(0) => {
                self.stream = None;
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
                self.stream = None;
                Err(CliError::Disconnected(error.to_string()))
            }
        }
    }
}

/// Reconnect policy: attempts spaced from [`RECONNECT_BACKOFF_MIN`] doubling to
/// [`RECONNECT_BACKOFF_MAX`], for at most the caller's patience.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Longest pause between two reconnect attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Reconnects `driver` using addresses from `source`, retrying until `patience` runs out.
/// A refused token ends the attempts at once (retrying cannot help).
pub fn reconnect(
    driver: &mut Driver,
    source: &mut RelaySource<'_>,
    patience: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + patience;
    let mut backoff = RECONNECT_BACKOFF_MIN;
    // Bounded by the deadline: every failed attempt sleeps at least RECONNECT_BACKOFF_MIN.
    loop {
        let relays = source();
        match driver.connect(&relays) {
            Ok(()) => return Ok(()),
            Err(error @ CliError::TokenRefused { .. }) => return Err(error),
            Err(error) => {
                if Instant::now() + backoff > deadline {
                    return Err(CliError::Disconnected(error.to_string()));
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
        }
    }
}
