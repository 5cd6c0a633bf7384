use super::*;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;

use hark_core::ShardId;

use crate::metrics::{ShardStats, text_check};

/// Safety net only: a server that never answers shows up as a failure after this long.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Limits with a short read deadline, so the deadline tests take a fraction of a second.
const QUICK: AdminLimits = AdminLimits {
    request_head_bytes_max: ADMIN_REQUEST_HEAD_BYTES_MAX,
    request_read_deadline_ms: 300,
    response_write_deadline_ms: 5_000,
};

fn start(limits: AdminLimits) -> (AdminServer, Arc<Registry>) {
    let registry = Registry::new(&[ShardId::new(4, 0), ShardId::new(4, 1)]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("loopback is available");
    let server = AdminServer::start_with_limits(listener, Arc::clone(&registry), limits)
        .expect("the admin server starts");
    (server, registry)
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("the admin port accepts");
    stream.set_read_timeout(Some(HANG_LIMIT)).unwrap();
    stream
}

/// Reads a whole response (the server closes after it).
fn read_answer(mut stream: TcpStream) -> Answer {
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .expect("a response before the hang limit");
    let text = String::from_utf8(raw).expect("responses are UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    read_answer(stream)
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

#[test]
fn metrics_serves_the_published_values() {
    let (server, registry) = start(AdminLimits::default());
    let mut stats = ShardStats::new();
    stats.counters.frames_in = 321;
    stats.counters.connections_open = 12;
    stats.record_relay_latency_us(80);
    registry.publish(1, &stats);

    let answer = get(server.local_addr(), "/metrics");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("Content-Type"), Some(METRICS_CONTENT_TYPE));
    assert_eq!(
        answer.header("Content-Length"),
        Some(answer.body.len().to_string().as_str())
    );
    let exposition = text_check::parse(&answer.body).unwrap_or_else(|e| panic!("{e}"));
    let shard = [("shard", "4-1")];
    assert_eq!(
        exposition.value("hark_frames_received_total", &shard),
        Some(321.0)
    );
    assert_eq!(
        exposition.value("hark_connections_open", &shard),
        Some(12.0)
    );
    assert_eq!(
        exposition.value(
            "hark_relay_latency_seconds_bucket",
            &[("shard", "4-1"), ("le", "0.0001")]
        ),
        Some(1.0)
    );
    assert_eq!(
        exposition.value("hark_frames_received_total", &[("shard", "4-0")]),
        Some(0.0)
    );
    server.stop();
}

#[test]
fn health_is_ok_while_running() {
    let (server, _registry) = start(AdminLimits::default());
    let answer = get(server.local_addr(), "/health");
    assert_eq!((answer.status, answer.body.as_str()), (200, "ok\n"));
    server.stop();
}

#[test]
fn ready_follows_readiness_and_draining() {
    let (server, registry) = start(AdminLimits::default());
    let addr = server.local_addr();
    let answer = get(addr, "/ready");
    assert_eq!((answer.status, answer.body.as_str()), (503, "not ready\n"));
    registry.set_ready(true);
    let answer = get(addr, "/ready");
    assert_eq!((answer.status, answer.body.as_str()), (200, "ready\n"));
    registry.set_draining(true);
    let answer = get(addr, "/ready");
    assert_eq!((answer.status, answer.body.as_str()), (503, "draining\n"));
    // Liveness is unaffected by draining.
    assert_eq!(get(addr, "/health").status, 200);
    server.stop();
}

#[test]
fn unknown_paths_and_methods_are_refused() {
    let (server, _registry) = start(AdminLimits::default());
    let addr = server.local_addr();
    assert_eq!(get(addr, "/").status, 404);
    assert_eq!(get(addr, "/metricsx").status, 404);
    let post = exchange(
        addr,
        b"PATCH /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("Allow"), Some("GET, HEAD"));
    assert_eq!(
        exchange(addr, b"DELETE /ready HTTP/1.0\r\n\r\n").status,
        405
    );
    // A query string does not change the path.
    assert_eq!(get(addr, "/health?verbose=1").status, 200);
    server.stop();
}

#[test]
fn head_answers_like_get_without_a_body() {
    let (server, _registry) = start(AdminLimits::default());
    let answer = exchange(server.local_addr(), b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "");
    let length: usize = answer.header("Content-Length").unwrap().parse().unwrap();
    assert!(length > 1_000, "Content-Length {length}");
    server.stop();
}

#[test]
fn garbage_gets_bad_request() {
    let (server, _registry) = start(AdminLimits::default());
    let addr = server.local_addr();
    for request in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /health HTTP/2.0\r\n\r\n",
        b"GET /health HTTP/1.1\r\nthis is not a header\r\n\r\n",
    ] {
        let answer = exchange(addr, request);
        assert_eq!(answer.status, 400, "{:?}", String::from_utf8_lossy(request));
    }
    server.stop();
}

#[test]
fn a_client_closing_mid_head_gets_bad_request() {
    let (server, _registry) = start(AdminLimits::default());
    let mut stream = connect(server.local_addr());
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_answer(stream).status, 400);
    server.stop();
}

/// Builds a GET /health head of exactly `len` bytes by padding a header.
fn head_of_len(len: usize) -> Vec<u8> {
    let start = b"GET /health HTTP/1.1\r\nX-Pad: ";
    let end = b"\r\n\r\n";
    let mut head = start.to_vec();
    head.resize(len - end.len(), b'a');
    head.extend_from_slice(end);
    head
}

#[test]
fn the_head_limit_is_exact() {
    let (server, _registry) = start(AdminLimits::default());
    let addr = server.local_addr();
    let at_limit = exchange(addr, &head_of_len(ADMIN_REQUEST_HEAD_BYTES_MAX));
    assert_eq!(at_limit.status, 200);
    let over_limit = exchange(addr, &head_of_len(ADMIN_REQUEST_HEAD_BYTES_MAX + 1));
    assert_eq!(over_limit.status, 431);
    // A head that never ends, well past the limit.
    let mut endless = b"GET /health HTTP/1.1\r\nX-Pad: ".to_vec();
    endless.resize(ADMIN_REQUEST_HEAD_BYTES_MAX + 4_000, b'a');
    assert_eq!(exchange(addr, &endless).status, 431);
    server.stop();
}

#[test]
fn a_silent_client_holds_the_port_only_until_its_deadline() {
    let (server, _registry) = start(QUICK);
    let addr = server.local_addr();
    // Accepted first (connections are accepted in order) and never sends anything.
    let silent = connect(addr);
    // Sends half a head, then nothing.
    let mut partial = connect(addr);
    partial.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    // Waits behind both, and is served once their deadlines pass.
    let patient = get(addr, "/health");
    assert_eq!(patient.status, 200);
    assert_eq!(read_answer(silent).status, 408);
    assert_eq!(read_answer(partial).status, 408);
    server.stop();
}

#[test]
fn a_client_that_leaves_without_a_word_does_not_disturb_the_next() {
    let (server, _registry) = start(QUICK);
    let addr = server.local_addr();
    drop(connect(addr));
    let mut abandoned = connect(addr);
    abandoned
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .unwrap();
    drop(abandoned);
    assert_eq!(get(addr, "/health").status, 200);
    server.stop();
}

#[test]
fn stop_returns_and_closes_the_port() {
    let (server, _registry) = start(AdminLimits::default());
    let addr = server.local_addr();
    assert_eq!(get(addr, "/health").status, 200);
    server.stop();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after stop"
    );
}

#[test]
fn stop_returns_while_a_silent_client_is_connected() {
    let (server, _registry) = start(QUICK);
    let mut silent = connect(server.local_addr());
    server.stop();
    // Either the server was serving it (it finishes that connection, answering 408, before it
    // exits) or it was still waiting in the backlog (closed with the listener). Either way the
    // client is not left hanging.
    let mut raw = Vec::new();
    match silent.read_to_end(&mut raw) {
        Ok(_) => assert!(
            raw.is_empty() || raw.starts_with(b"HTTP/1.1 408 "),
            "{:?}",
            String::from_utf8_lossy(&raw)
        ),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn limits_out_of_range_are_refused() {
    for limits in [
        AdminLimits {
            request_head_bytes_max: ADMIN_REQUEST_HEAD_BYTES_MIN - 1,
            ..AdminLimits::default()
        },
        AdminLimits {
            request_head_bytes_max: ADMIN_REQUEST_HEAD_BYTES_LIMIT + 1,
            ..AdminLimits::default()
        },
        AdminLimits {
            request_read_deadline_ms: 0,
            ..AdminLimits::default()
        },
        AdminLimits {
            response_write_deadline_ms: ADMIN_DEADLINE_MS_LIMIT + 1,
            ..AdminLimits::default()
        },
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = AdminServer::start_with_limits(listener, Registry::new(&[]), limits);
        assert_eq!(
            refused.map(|_| ()).unwrap_err().kind(),
            io::ErrorKind::InvalidInput,
            "{limits:?}"
        );
    }
}

#[test]
fn lingering_discards_at_most_its_bound() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let writer = thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let chunk = [b'x'; 4096];
        // Writes well past the bound; fails once the server closes, which ends the loop.
        for _ in 0..(4 * http::LINGER_BYTES_MAX / chunk.len()) {
            if stream.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let (mut stream, _) = listener.accept().unwrap();
    let discarded = http::linger(&mut stream, Instant::now() + HANG_LIMIT);
    assert_eq!(discarded, http::LINGER_BYTES_MAX);
    drop(stream);
    writer.join().unwrap();
}

fn post_drain(addr: SocketAddr) -> Answer {
    exchange(
        addr,
        b"POST /drain HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n",
    )
}

/// Arms `/drain` with a trigger that counts its calls.
fn arm_drain(server: &AdminServer) -> Arc<std::sync::atomic::AtomicUsize> {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    assert!(server.set_drain(DrainTrigger::new(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    })));
    calls
}

#[test]
fn post_drain_starts_the_drain_and_a_second_post_is_harmless() {
    let (server, registry) = start(AdminLimits::default());
    registry.set_ready(true);
    let calls = arm_drain(&server);
    let addr = server.local_addr();

    let first = post_drain(addr);
    assert_eq!(
        (first.status, first.body.as_str()),
        (202, "draining started\n")
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(registry.is_draining());
    assert_eq!(get(addr, "/ready").body, "draining\n");

    let second = post_drain(addr);
    assert_eq!(
        (second.status, second.body.as_str()),
        (202, "draining already\n")
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The port still serves while the relay drains.
    assert_eq!(get(addr, "/health").status, 200);
    server.stop();
}

#[test]
fn drain_takes_only_post() {
    let (server, _registry) = start(AdminLimits::default());
    let calls = arm_drain(&server);
    let addr = server.local_addr();
    for request in [
        &b"GET /drain HTTP/1.1\r\n\r\n"[..],
        b"HEAD /drain HTTP/1.1\r\n\r\n",
        b"PUT /drain HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"DELETE /drain HTTP/1.0\r\n\r\n",
    ] {
        let answer = exchange(addr, request);
        let what = String::from_utf8_lossy(request);
        assert_eq!(answer.status, 405, "{what}");
        assert_eq!(answer.header("Allow"), Some("POST"), "{what}");
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    // POST elsewhere starts nothing either.
    let post = exchange(addr, b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("Allow"), Some("GET, HEAD"));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    server.stop();
}

#[test]
fn drain_before_the_relay_serves_is_unavailable_and_the_trigger_is_set_once() {
    let (server, registry) = start(AdminLimits::default());
    let addr = server.local_addr();
    let early = post_drain(addr);
    assert_eq!(early.status, 503);
    assert!(!registry.is_draining(), "nothing was drained");
    let calls = arm_drain(&server);
    assert!(
        !server.set_drain(DrainTrigger::new(|| {})),
        "the first trigger stays"
    );
    assert_eq!(post_drain(addr).status, 202);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    server.stop();
}

#[test]
fn a_drain_request_with_a_body_is_answered_in_full() {
    let (server, _registry) = start(AdminLimits::default());
    let calls = arm_drain(&server);
    let answer = exchange(
        server.local_addr(),
        b"POST /drain HTTP/1.1\r\nContent-Length: 5\r\n\r\nnow!\n",
    );
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (202, "draining started\n")
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    server.stop();
}
