//! The generator's side of a hark connection on a monoio thread: connect, hello, send requests,
//! read events with a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hark_core::protocol::{DecodeError, Decoder, Event, Request, encode_request};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// The client name hark-perf announces in its hello.
pub const CLIENT_NAME: &str = "hark-perf/0.1";

/// Free room below which the input buffer grows before a read.
const READ_ROOM_MIN: usize = 1024;
/// How much the input buffer grows by.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Why a connection could not be set up or broke.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed (connect refused, reset). Check the address and that the relay runs.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection. The relay may be at a limit; see its log.
    #[error("the relay closed the connection")]
    Closed,
    /// The relay sent bytes that do not decode: a protocol mismatch or a relay bug.
    #[error("undecodable event: {0}")]
    Decode(#[from] DecodeError),
    /// A setup step did not finish in time: the relay is overloaded or stuck.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The relay refused something (token, listen, a limit).
    #[error("the relay refused: {0}")]
    Refused(String),
    /// A request could not be encoded (a configuration value out of the protocol's range).
    #[error("cannot encode a request: {0}")]
    Encode(String),
}

/// Monotonic clock in µs: frame stamps and latencies (talkers and listeners share the host).
pub fn mono_now_us() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// Appends `request` to `buf`.
pub fn put_request(buf: &mut BytesMut, request: &Request) -> Result<(), WireError> {
    encode_request(request, buf).map_err(|e| WireError::Encode(e.to_string()))
}

/// A connection's socket, its undecoded input and its decoder.
#[derive(Debug)]
pub struct Wire {
    pub stream: TcpStream,
    pub input: BytesMut,
    pub decoder: Decoder,
}

impl Wire {
    /// Connects to `addr` with TCP_NODELAY (frames are small and latency-bound).
    pub async fn connect(addr: SocketAddr) -> Result<Wire, WireError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Wire {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK_BYTES),
            decoder: Decoder::new(),
        })
    }

    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: Bytes) -> Result<(), WireError> {
        let (result, _) = self.stream.write_all(bytes).await;
        result?;
        Ok(())
    }

    /// The next event already buffered, if any.
    pub fn next_buffered(&mut self) -> Result<Option<Event>, WireError> {
        Ok(self.decoder.decode_event(&mut self.input)?)
    }

    /// Reads more input once; `Closed` when the peer has closed.
    pub async fn read_more(&mut self) -> Result<usize, WireError> {
        read_into(&mut self.stream, &mut self.input).await
    }

    /// Reads events until `wanted` says the step is complete (`Ok(true)`), within `wait`.
    pub async fn read_until(
        &mut self,
        wait: Duration,
        mut wanted: impl FnMut(Event) -> Result<bool, WireError>,
    ) -> Result<(), WireError> {
        let step = async {
            loop {
                while let Some(event) = self.next_buffered()? {
                    if wanted(event)? {
                        return Ok(());
                    }
                }
                self.read_more().await?;
            }
        };
        match monoio::time::timeout(wait, step).await {
            Ok(result) => result,
            Err(_) => Err(WireError::Timeout(wait)),
        }
    }
}

/// Reads once from `stream` onto the end of `input`.
pub async fn read_into<R: AsyncReadRent>(
    stream: &mut R,
    input: &mut BytesMut,
) -> Result<usize, WireError> {
    if input.capacity() - input.len() < READ_ROOM_MIN {
        input.reserve(READ_CHUNK_BYTES);
    }
    let room = input.len()..input.capacity();
    let buffer = std::mem::take(input);
    let (result, slice) = stream.read(buffer.slice_mut(room)).await;
    *input = slice.into_inner();
    match result? {
        0 => Err(WireError::Closed),
        n => Ok(n),
    }
}

/// The text of an error event, for reports.
pub fn describe_error(event: &Event) -> String {
    match event {
        Event::Error { code, about, text } => {
            format!(
                "{} ({}) on {about:?}: {text}",
                code.name().unwrap_or("unknown"),
                code.0
            )
        }
        other => format!("{other:?}"),
    }
}
