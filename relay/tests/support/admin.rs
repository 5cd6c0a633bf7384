//! Plain HTTP/1.1 GETs to the relay's admin endpoint (the Prometheus text is parsed with
//! `hark_tools::cli::status::parse_metrics`, the CLI's own parser).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::WAIT;

/// Largest admin response read; more is a test failure (metrics of a test relay are small).
pub const RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (chunked encoding undone).
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// `GET path` on `addr` with `Connection: close`; panics on a transport or framing failure.
pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT)
        .unwrap_or_else(|error| panic!("admin connect {addr}: {error}"));
    stream.set_read_timeout(Some(WAIT)).expect("socket option");
    stream.set_write_timeout(Some(WAIT)).expect("socket option");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|error| panic!("admin write {path}: {error}"));
    let mut raw = Vec::new();
    stream
        .take(RESPONSE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut raw)
        .unwrap_or_else(|error| panic!("admin read {path}: {error}"));
    assert!(
        raw.len() <= RESPONSE_BYTES_MAX,
        "admin {path}: response too long"
    );
    parse_response(&raw).unwrap_or_else(|problem| {
        panic!(
            "admin {path}: {problem}: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Parses a whole HTTP/1.x response read to the end of the connection.
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not HTTP/1.x: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(body)?
    } else if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad content-length {length:?}"))?;
        body.get(..length)
            .ok_or_else(|| format!("body has {} of {length} bytes", body.len()))?
            .to_vec()
    } else {
        body.to_vec()
    };
    let body = String::from_utf8(body).map_err(|_| "body is not UTF-8")?;
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Undoes chunked transfer encoding.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    // Bounded: every pass consumes at least the size line of a finite body.
    loop {
        let line_end = body
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("chunk size line without end")?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or("chunk shorter than its size")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or("chunk without its CRLF")?;
    }
}
