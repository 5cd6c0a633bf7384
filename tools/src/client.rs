//! A blocking client of hark's wire protocol over `std::net::TcpStream`.
//!
//! What it is: one connection to a relay, requests encoded with hark-core's encoder and written
//! whole, events decoded with hark-core's [`Decoder`] from a buffer that holds at most one
//! frame plus one read. Every wait has a deadline the caller gives, so a test or a CLI never
//! hangs on a relay that went quiet. What it is not: a session manager. It does not remember
//! streams or subscriptions, does not reconnect and does not resume; the caller sees every
//! event, in order, and decides.
//!
//! ```no_run
//! use std::time::Duration;
//! use hark_core::ConvName;
//! use hark_core::protocol::{Event, ListenFrom};
//! use hark_tools::client::Client;
//!
//! let addr = "127.0.0.1:7700".parse()?;
//! let mut client = Client::connect(addr, Duration::from_secs(5))?;
//! let info = client.hello("hk1.…", "example/0.1")?;
//! println!("session {} on host {}", info.session, info.host);
//! client.listen(1, &ConvName::new("general")?, ListenFrom::Live)?;
//! loop {
//!     match client.next_event(Duration::from_secs(30))? {
//!         Event::Frame { seq, payload, .. } => println!("frame {seq}: {} bytes", payload.len()),
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
#[cfg(test)]
mod tests;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hark_core::protocol::{
    Decoder, Event, ListenFrom, PROTOCOL_VERSION, Request, SessionLimits, encode_request,
    write_talk_frame,
};
use hark_core::{ConvName, HostId, MsgId};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

pub use error::ClientError;

/// Bytes asked of the socket per read. The input buffer holds at most one frame
/// ([`FRAME_LEN_MAX`](hark_core::protocol::FRAME_LEN_MAX) plus its prefix, enforced by the
/// decoder before anything is buffered for it) plus one read.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Most events [`Client::expect_closed`] collects before it gives up waiting for the close:
/// a relay that keeps talking instead of closing is reported, not buffered without end.
pub const CLOSE_EVENTS_MAX: usize = 1024;

/// Socket options applied before connecting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// `SO_RCVBUF` in bytes, set before the connection exists so the kernel's window starts
    /// small (the kernel doubles it and applies its minimum). A test's "slow listener" uses a
    /// small one so the relay's send queue fills after little data; `None` keeps the system
    /// default.
    pub recv_buffer_bytes: Option<usize>,
}

/// The terms of a session, as the relay announced them in `hello_accepted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloInfo {
    /// The protocol version the session uses.
    pub version: u16,
    /// The host that accepted the connection.
    pub host: HostId,
    /// The session's id, for matching logs on both sides.
    pub session: u64,
    /// The relay's clock at the accept (µs since the Unix epoch).
    pub server_time_us: u64,
    /// The limits the client must respect (frame sizes, rates, streams, subscriptions, idle
    /// timeout).
    pub limits: SessionLimits,
}

/// One connection to a hark relay.
///
/// Calls block for at most the time they are given. Reads and writes are independent: a
/// caller that stops calling [`Client::next_event`] stops reading, and the relay sees its send
/// queue to this client fill (the "slow listener" of the protocol).
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
    decoder: Decoder,
    /// Received bytes not yet decoded: at most one frame plus one read.
    input: BytesMut,
    /// Reused for encoding requests; emptied by every send.
    output: BytesMut,
    /// Reused read buffer of [`READ_CHUNK_BYTES`].
    scratch: Box<[u8]>,
    /// How long a write may block (the relay not reading).
    write_timeout: Duration,
    answer_pings: bool,
    pings_answered: u64,
}

impl Client {
    /// Connects to `addr`, waiting at most `timeout`; `timeout` also bounds every later write
    /// and the wait for the hello's answer.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ClientError> {
        Self::connect_with(addr, timeout, ConnectOptions::default())
    }

    /// [`Client::connect`] with socket options that must be set before the connection exists.
    pub fn connect_with(
        addr: SocketAddr,
        timeout: Duration,
        options: ConnectOptions,
    ) -> Result<Self, ClientError> {
        let option_failed = |source| ClientError::Io {
            op: "socket option",
            source,
        };
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|source| ClientError::Io {
                op: "socket",
                source,
            })?;
        if let Some(bytes) = options.recv_buffer_bytes {
            socket.set_recv_buffer_size(bytes).map_err(option_failed)?;
        }
        socket
            .connect_timeout(&addr.into(), timeout)
            .map_err(|source| ClientError::from_io("connect", timeout, source))?;
        let stream: TcpStream = socket.into();
        // Frames are small and latency matters more than packet count.
        stream.set_nodelay(true).map_err(option_failed)?;
        stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(option_failed)?;
        let local_addr = stream.local_addr().map_err(option_failed)?;
        let peer_addr = stream.peer_addr().map_err(option_failed)?;
        Ok(Self {
            stream,
            local_addr,
            peer_addr,
            decoder: Decoder::new(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            write_timeout: timeout,
            answer_pings: false,
            pings_answered: 0,
        })
    }

    /// Opens the session: sends `hello` with this crate's protocol version and waits (at most
    /// the connect timeout) for `hello_accepted`. An `error` answer becomes
    /// [`ClientError::Refused`]; the relay closes the connection after it.
    pub fn hello(&mut self, token: &str, client_name: &str) -> Result<HelloInfo, ClientError> {
        self.send(&Request::Hello {
            version: PROTOCOL_VERSION,
            token: Bytes::copy_from_slice(token.as_bytes()),
            client_name: client_name.to_owned(),
        })?;
        match self.next_event(self.write_timeout)? {
            Event::HelloAccepted {
                version,
                host,
                session,
                server_time_us,
                limits,
            } => Ok(HelloInfo {
                version,
                host,
                session,
                server_time_us,
                limits,
            }),
            Event::Error { code, text, .. } => Err(ClientError::Refused { code, text }),
            event => Err(ClientError::UnexpectedEvent {
                expected: "hello_accepted",
                event: Box::new(event),
            }),
        }
    }

    /// Encodes `request` and writes all of it.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        encode_request(request, &mut self.output)?;
        self.write_output()
    }

    /// Writes `bytes` as they are, framing or not: for feeding a relay bad input.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.output.extend_from_slice(bytes);
        self.write_output()
    }

    /// Starts a message on the client's talk stream handle `stream`; `resume` continues a
    /// message after a broken connection.
    pub fn talk_start(
        &mut self,
        stream: u32,
        conversation: &ConvName,
        codec: &[u8],
        resume: Option<MsgId>,
    ) -> Result<(), ClientError> {
        self.send(&Request::TalkStart {
            stream,
            conversation: conversation.clone(),
            codec: Bytes::copy_from_slice(codec),
            resume,
        })
    }

    /// Sends one frame of an open talk stream (the hot path: no allocation beyond the reused
    /// output buffer).
    pub fn talk_frame(&mut self, stream: u32, seq: u32, payload: &[u8]) -> Result<(), ClientError> {
        write_talk_frame(&mut self.output, stream, seq, payload)?;
        self.write_output()
    }

    /// Ends a talk stream with `frame_count` frames.
    pub fn talk_end(&mut self, stream: u32, frame_count: u32) -> Result<(), ClientError> {
        self.send(&Request::TalkEnd {
            stream,
            frame_count,
        })
    }

    /// Opens subscription `sub` on `conversation`.
    pub fn listen(
        &mut self,
        sub: u32,
        conversation: &ConvName,
        from: ListenFrom,
    ) -> Result<(), ClientError> {
        self.send(&Request::Listen {
            sub,
            conversation: conversation.clone(),
            from,
        })
    }

    /// Closes subscription `sub`.
    pub fn unlisten(&mut self, sub: u32) -> Result<(), ClientError> {
        self.send(&Request::Unlisten { sub })
    }

    /// Asks for a page of `conversation`'s message headers since `since_us`.
    pub fn history(
        &mut self,
        request: u32,
        conversation: &ConvName,
        since_us: u64,
        limit: u16,
    ) -> Result<(), ClientError> {
        self.send(&Request::History {
            request,
            conversation: conversation.clone(),
            since_us,
            limit,
        })
    }

    /// Sends a `ping`; the relay answers `pong` with the same nonce.
    pub fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        self.send(&Request::Ping { nonce })
    }

    /// Answers the relay's `ping`.
    pub fn pong(&mut self, nonce: u64) -> Result<(), ClientError> {
        self.send(&Request::Pong { nonce })
    }

    /// Whether [`Client::next_event`] answers the relay's pings itself (and does not return
    /// them). Off by default, so a caller sees every event unless it asks otherwise.
    pub fn set_answer_pings(&mut self, answer: bool) {
        self.answer_pings = answer;
    }

    /// How many pings were answered by [`Client::set_answer_pings`].
    pub fn pings_answered(&self) -> u64 {
        self.pings_answered
    }

    /// The next event, waiting at most `timeout` for it. Errors: [`ClientError::Timeout`],
    /// [`ClientError::Closed`] (only after every complete event before the close was
    /// returned), [`ClientError::Decode`], [`ClientError::Io`].
    pub fn next_event(&mut self, timeout: Duration) -> Result<Event, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.decode_buffered()? {
                return Ok(event);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::Timeout {
                    op: "read",
                    waited: timeout,
                });
            }
            self.read_some(Some(remaining), timeout)?;
        }
    }

    /// The next event if one has arrived already; never waits. `Ok(None)`: nothing complete
    /// is there yet.
    pub fn try_next_event(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(event) = self.decode_buffered()? {
                return Ok(Some(event));
            }
            if !self.read_some(None, Duration::ZERO)? {
                return Ok(None);
            }
        }
    }

    /// Waits at most `timeout` for the relay to close the connection (end of stream or
    /// reset). `Ok(())` only when the close comes before any event; otherwise every event seen
    /// is returned in [`ClientError::EventsBeforeClose`] (at most [`CLOSE_EVENTS_MAX`]), and a
    /// connection that stays open and silent is [`ClientError::Timeout`].
    pub fn expect_closed(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = if remaining.is_zero() {
                self.try_next_event().and_then(|event| {
                    event.ok_or(ClientError::Timeout {
                        op: "close",
                        waited: timeout,
                    })
                })
            } else {
                self.next_event(remaining)
            };
            match result {
                Ok(event) => {
                    events.push(event);
                    if events.len() >= CLOSE_EVENTS_MAX {
                        return Err(ClientError::EventsBeforeClose {
                            events,
                            closed: false,
                        });
                    }
                }
                Err(ClientError::Closed { .. }) if events.is_empty() => return Ok(()),
                Err(ClientError::Closed { .. }) => {
                    return Err(ClientError::EventsBeforeClose {
                        events,
                        closed: true,
                    });
                }
                Err(ClientError::Timeout { .. }) if events.is_empty() => {
                    return Err(ClientError::Timeout {
                        op: "close",
                        waited: timeout,
                    });
                }
                Err(ClientError::Timeout { .. }) => {
                    return Err(ClientError::EventsBeforeClose {
                        events,
                        closed: false,
                    });
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The client's end of the connection (the relay sees this as the peer address).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The relay's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The socket, for options and tricks this type does not offer.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Bytes received and not yet returned as events.
    pub fn buffered_bytes(&self) -> usize {
        self.input.len()
    }

    /// Stops sending: the relay reads an end of stream, while this side can still read what
    /// the relay sends back.
    pub fn shutdown_write(&self) -> Result<(), ClientError> {
        self.stream
            .shutdown(Shutdown::Write)
            .map_err(|source| ClientError::Io {
                op: "shutdown",
                source,
            })
    }

    /// Drops the connection with a TCP reset instead of an orderly close, as a crashed or
    /// unplugged client would (the relay cannot tell it from a network failure).
    pub fn abort(self) -> Result<(), ClientError> {
        // A zero linger turns the close at the end of this function (`self` is dropped) into
        // a reset.
        SockRef::from(&self.stream)
            .set_linger(Some(Duration::ZERO))
            .map_err(|source| ClientError::Io {
                op: "socket option",
                source,
            })
    }

    /// The socket and the received bytes not yet decoded, for a caller that takes over the
    /// connection.
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.input)
    }

    /// Decodes one buffered event, answering it first when it is a ping to be answered.
    fn decode_buffered(&mut self) -> Result<Option<Event>, ClientError> {
        // Bounded: each pass consumes one frame of a finite buffer.
        while let Some(event) = self.decoder.decode_event(&mut self.input)? {
            match event {
                Event::Ping { nonce } if self.answer_pings => {
                    self.pong(nonce)?;
                    self.pings_answered += 1;
                }
                event => return Ok(Some(event)),
            }
        }
        Ok(None)
    }

    /// Reads once into the input buffer: blocking for at most `wait`, or without blocking
    /// when `wait` is `None`. Returns whether bytes arrived (`false` only without blocking).
    /// The end of the stream is [`ClientError::Closed`].
    fn read_some(&mut self, wait: Option<Duration>, waited: Duration) -> Result<bool, ClientError> {
        let configured = match wait {
            // A zero timeout means "block forever" to the OS; the caller never passes one.
            Some(wait) => self
                .stream
                .set_read_timeout(Some(wait.max(Duration::from_micros(1)))),
            None => self.stream.set_nonblocking(true),
        };
        configured.map_err(|source| ClientError::Io {
            op: "socket option",
            source,
        })?;
        let read = loop {
            match self.stream.read(&mut self.scratch) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        if wait.is_none() {
            self.stream
                .set_nonblocking(false)
                .map_err(|source| ClientError::Io {
                    op: "socket option",
                    source,
                })?;
        }
        match read {
            Ok(0) => Err(ClientError::Closed {
                reset: false,
                partial_frame_bytes: self.input.len(),
            }),
            Ok(n) => {
                self.input.extend_from_slice(&self.scratch[..n]);
                Ok(true)
            }
            Err(error) if wait.is_none() && error.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(error) => match ClientError::from_io("read", waited, error) {
                ClientError::Closed { reset, .. } => Err(ClientError::Closed {
                    reset,
                    partial_frame_bytes: self.input.len(),
                }),
                other => Err(other),
            },
        }
    }

    /// Writes the output buffer whole and empties it (also on failure: a half-written request
    /// cannot be taken back, and the error says the connection is done).
    fn write_output(&mut self) -> Result<(), ClientError> {
        let result = self.stream.write_all(&self.output);
        self.output.clear();
        result.map_err(|source| ClientError::from_io("write", self.write_timeout, source))
    }
}
