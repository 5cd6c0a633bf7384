//! The small part of HTTP/1.x the admin port speaks: read one bounded request head, parse its
//! request line, write one response and close.
//!
//! Every read and write runs against a deadline fixed when the connection was accepted, so a
//! silent or slow client costs the port at most that long.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Bytes of an unread request discarded after an error response, so that closing the socket
/// does not reset the connection before the client has read the response.
pub(super) const LINGER_BYTES_MAX: usize = 64 * 1024;
/// Bytes read from the socket per call while reading a head or lingering.
const READ_CHUNK_BYTES: usize = 1024;

/// The request methods the admin port tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Head,
    /// Only `/drain` takes it.
    Post,
    /// A syntactically valid method the port does not serve (405).
    Other,
}

/// A parsed request line; headers are checked for syntax and otherwise ignored.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Request<'a> {
    pub method: Method,
    /// The target's path, without query or fragment.
    pub path: &'a str,
}

/// Why no request head could be read.
#[derive(Debug)]
pub(super) enum HeadError {
    /// The head did not end within the byte limit (431).
    TooLarge,
    /// The deadline passed before the head ended (408).
    TimedOut,
    /// The client closed the connection without sending anything: nothing to answer.
    Closed,
    /// The client closed the connection in the middle of a head (400).
    Truncated,
    /// The socket failed: nothing can be answered.
    Io,
}

/// Why a head is not an HTTP/1.x request (400); the text goes into the response body.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BadRequest(pub &'static str);

/// Response statuses the admin port sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Ok,
    Accepted,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeaderFieldsTooLarge,
    ServiceUnavailable,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::Accepted => 202,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::HeaderFieldsTooLarge => 431,
            Status::ServiceUnavailable => 503,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Accepted => "Accepted",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// Reads a request head into `head` (cleared first): at most `head_bytes_max` bytes, until
/// `deadline`. Returns the head's length, up to and including the empty line that ends it;
/// `head` may hold bytes after it.
pub(super) fn read_head(
    stream: &mut TcpStream,
    head: &mut Vec<u8>,
    head_bytes_max: usize,
    deadline: Instant,
) -> Result<usize, HeadError> {
    head.clear();
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        let room = head_bytes_max - head.len();
        if room == 0 {
            return Err(HeadError::TooLarge);
        }
        let Some(remaining) = remaining(deadline) else {
            return Err(HeadError::TimedOut);
        };
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|_| HeadError::Io)?;
        let want = room.min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) if head.is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Truncated),
            Ok(n) => {
                let scan_from = head.len().saturating_sub(2);
                head.extend_from_slice(&chunk[..n]);
                if let Some(end) = head_end(&head[scan_from..]) {
                    return Ok(scan_from + end);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(HeadError::TimedOut),
            Err(_) => return Err(HeadError::Io),
        }
    }
}

/// The length up to and including the empty line ending a head (`\n\n` or `\n\r\n`; HTTP allows
/// a bare LF as a line end).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'\n') {
        let after = i + offset + 1;
        match bytes.get(after..) {
            Some([b'\n', ..]) => return Some(after + 1),
            Some([b'\r', b'\n', ..]) => return Some(after + 2),
            _ => i = after,
        }
    }
    None
}

/// Parses a head (request line and header lines, ending with an empty line).
pub(super) fn parse_head(head: &[u8]) -> Result<Request<'_>, BadRequest> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let request = parse_request_line(request_line)?;
    for line in lines {
        if line.is_empty() {
            break;
        }
        check_header_line(line)?;
    }
    Ok(request)
}

fn parse_request_line(line: &[u8]) -> Result<Request<'_>, BadRequest> {
    if line.is_empty() {
        return Err(BadRequest("empty request line"));
    }
    if !line.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
        return Err(BadRequest("request line holds a control or non-ASCII byte"));
    }
    // All bytes are ASCII, so the line is UTF-8.
    let line = std::str::from_utf8(line).map_err(|_| BadRequest("request line is not ASCII"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest("request line is not `METHOD /path HTTP/1.1`"));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(BadRequest("bad method"));
    }
    if !target.starts_with('/') {
        return Err(BadRequest(
            "request target must be a path starting with '/'",
        ));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(BadRequest("only HTTP/1.0 and HTTP/1.1 are served"));
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let path_end = target.find(['?', '#']).unwrap_or(target.len());
    Ok(Request {
        method,
        path: &target[..path_end],
    })
}

/// `name: value`, with a token name and no control bytes but tab in the value.
fn check_header_line(line: &[u8]) -> Result<(), BadRequest> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(BadRequest("header line without ':'"))?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().copied().all(is_token_byte) {
        return Err(BadRequest("bad header name"));
    }
    if line[colon + 1..]
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(BadRequest("control byte in a header value"));
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One response: status, content type, body, and for 405 the methods allowed.
#[derive(Debug)]
pub(super) struct Reply<'a> {
    pub status: Status,
    pub content_type: &'static str,
    pub allow: Option<&'static str>,
    pub body: &'a str,
}

/// Writes a whole response (`Connection: close`) by `deadline`; `send_body` is false for HEAD.
/// `buffer` is reused between responses.
pub(super) fn write_response(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    reply: &Reply<'_>,
    send_body: bool,
    deadline: Instant,
) -> io::Result<()> {
    buffer.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(
        buffer,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        reply.status.code(),
        reply.status.reason(),
        reply.content_type,
        reply.body.len()
    );
    if let Some(allow) = reply.allow {
        let _ = write!(buffer, "Allow: {allow}\r\n");
    }
    buffer.extend_from_slice(b"\r\n");
    if send_body {
        buffer.extend_from_slice(reply.body.as_bytes());
    }
    write_all_by(stream, buffer, deadline)
}

fn write_all_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let remaining = remaining(deadline).ok_or(io::ErrorKind::TimedOut)?;
        stream.set_write_timeout(Some(remaining))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends our side and discards what the client still sends, up to [`LINGER_BYTES_MAX`] bytes or
/// `deadline`, so the client reads the response before the socket closes. Returns the bytes
/// discarded.
pub(super) fn linger(stream: &mut TcpStream, deadline: Instant) -> usize {
    let _ = stream.shutdown(Shutdown::Write);
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    let mut discarded = 0;
    while discarded < LINGER_BYTES_MAX {
        let Some(remaining) = remaining(deadline) else {
            break;
        };
        if stream.set_read_timeout(Some(remaining)).is_err() {
            break;
        }
        let want = chunk.len().min(LINGER_BYTES_MAX - discarded);
        match stream.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => discarded += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    discarded
}

/// Time left until `deadline`; `None` once it has passed (a zero timeout is invalid for sockets).
fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn heads_end_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_end(b"\n"), None);
    }

    #[test]
    fn parses_request_lines() {
        let get = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a:9\r\n\r\n").unwrap();
        assert_eq!(
            get,
            Request {
                method: Method::Get,
                path: "/metrics"
            }
        );
        let head = parse_head(b"HEAD /ready HTTP/1.0\n\n").unwrap();
        assert_eq!(head.method, Method::Head);
        let post = parse_head(b"POST /drain HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(post.method, Method::Post);
        let delete = parse_head(b"DELETE /health HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(delete.method, Method::Other);
    }

    #[test]
    fn rejects_what_is_not_http_1() {
        for head in [
            &b"\r\n\r\n"[..],
            b"GARBAGE\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        ] {
            assert!(
                parse_head(head).is_err(),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    proptest! {
        #[test]
        fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&bytes);
            let _ = head_end(&bytes);
        }

        #[test]
        fn any_valid_path_parses_back(path in "/[a-zA-Z0-9_./-]{0,40}", query in "[a-z=&]{0,10}") {
            let head = format!("GET {path}?{query} HTTP/1.1\r\nHost: h\r\n\r\n");
            let request = parse_head(head.as_bytes()).unwrap();
            prop_assert_eq!(request.path, path.as_str());
            prop_assert_eq!(request.method, Method::Get);
        }
    }
}
