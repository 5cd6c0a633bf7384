//! The client against a scripted fake relay on a loopback socket: each test's relay side is a
//! thread that reads requests with hark-core's decoder and writes events with its encoder.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hark_core::protocol::{
    Decoder, ErrorCode, ErrorSubject, Event, FrameKind, ListenFrom, Request, SessionLimits,
    encode_event, encode_frame_event,
};
use hark_core::{ConvName, HostId, MsgId, ShardId};

use super::{Client, ClientError, ConnectOptions, HelloInfo};

/// A safety net only: every wait below ends on an event long before it.
const WAIT: Duration = Duration::from_secs(10);

const LIMITS: SessionLimits = SessionLimits {
    frame_len_max: 65536,
    audio_payload_len_max: 1500,
    frames_per_second_max: 100,
    talk_streams_max: 4,
    subs_max: 64,
    history_limit_max: 256,
    idle_timeout_ms: 30_000,
};

/// Runs `script` as the relay side of one connection.
fn fake_relay(script: impl FnOnce(TcpStream) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("loopback bind works in tests");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let relay = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("the client connects");
        script(stream);
    });
    (addr, relay)
}

/// Reads the next request on the relay side.
fn read_request(stream: &mut TcpStream, input: &mut BytesMut) -> Option<Request> {
    let mut decoder = Decoder::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(request) = decoder.decode_request(input).expect("the client encodes") {
            return Some(request);
        }
        let n = stream.read(&mut chunk).expect("relay side read");
        if n == 0 {
            return None;
        }
        input.extend_from_slice(&chunk[..n]);
    }
}

fn write_event(stream: &mut TcpStream, event: &Event) {
    let bytes = encode_event(event).expect("test events are within limits");
    stream.write_all(&bytes).expect("relay side write");
}

fn hello_accepted() -> Event {
    Event::HelloAccepted {
        version: 1,
        host: HostId(3),
        session: 77,
        server_time_us: 1_767_225_600_000_000,
        limits: LIMITS,
    }
}

fn connect(addr: SocketAddr) -> Client {
    Client::connect(addr, WAIT).expect("the fake relay listens")
}

#[test]
fn hello_sends_token_and_name_and_returns_the_session_terms() {
    let (addr, relay) = fake_relay(|mut stream| {
        let mut input = BytesMut::new();
        let hello = read_request(&mut stream, &mut input);
        assert_eq!(
            hello,
            Some(Request::Hello {
                version: 1,
                token: Bytes::from_static(b"hk1.token"),
                client_name: "test/1".to_owned(),
            })
        );
        write_event(&mut stream, &hello_accepted());
    });
    let mut client = connect(addr);
    let info = client.hello("hk1.token", "test/1").expect("accepted");
    assert_eq!(
        info,
        HelloInfo {
            version: 1,
            host: HostId(3),
            session: 77,
            server_time_us: 1_767_225_600_000_000,
            limits: LIMITS,
        }
    );
    relay.join().expect("relay script");
}

#[test]
fn a_refused_hello_returns_the_code_and_the_close_follows() {
    let (addr, relay) = fake_relay(|mut stream| {
        let mut input = BytesMut::new();
        read_request(&mut stream, &mut input);
        write_event(
            &mut stream,
            &Event::Error {
                code: ErrorCode::TOKEN_EXPIRED,
                about: ErrorSubject::Connection,
                text: "expired".to_owned(),
            },
        );
    });
    let mut client = connect(addr);
    match client.hello("hk1.old", "test/1") {
        Err(ClientError::Refused { code, text }) => {
            assert_eq!((code, text.as_str()), (ErrorCode::TOKEN_EXPIRED, "expired"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    relay.join().expect("relay script");
    client.expect_closed(WAIT).expect("closed after the error");
}

#[test]
fn hello_answered_by_another_event_hands_the_event_back() {
    let (addr, relay) = fake_relay(|mut stream| {
        let mut input = BytesMut::new();
        read_request(&mut stream, &mut input);
        write_event(&mut stream, &Event::Pong { nonce: 5 });
    });
    let mut client = connect(addr);
    match client.hello("", "test/1") {
        Err(ClientError::UnexpectedEvent { expected, event }) => {
            assert_eq!(expected, "hello_accepted");
            assert_eq!(*event, Event::Pong { nonce: 5 });
        }
        other => panic!("expected an unexpected event, got {other:?}"),
    }
    relay.join().expect("relay script");
}

#[test]
fn requests_are_encoded_whole_and_raw_bytes_are_sent_verbatim() {
    let conv = ConvName::new("general").expect("valid name");
    let msg = MsgId::from_parts(1_767_225_600_000_000, ShardId::new(0, 1), 9);
    let expected = vec![
        Request::TalkStart {
            stream: 1,
            conversation: conv.clone(),
            codec: Bytes::from_static(b"OpusHead"),
            resume: Some(msg),
        },
        Request::TalkFrame {
            stream: 1,
            seq: 0,
            payload: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
        },
        Request::TalkEnd {
            stream: 1,
            frame_count: 1,
        },
        Request::Listen {
            sub: 2,
            conversation: conv.clone(),
            from: ListenFrom::Since(5),
        },
        Request::Unlisten { sub: 2 },
        Request::History {
            request: 3,
            conversation: conv.clone(),
            since_us: 0,
            limit: 10,
        },
        Request::Ping { nonce: 11 },
        Request::Pong { nonce: 12 },
    ];
    let (done_tx, done_rx) = mpsc::channel();
    let (addr, relay) = fake_relay(move |mut stream| {
        let mut input = BytesMut::new();
        let mut requests = Vec::new();
        for _ in 0..8 {
            requests.push(read_request(&mut stream, &mut input).expect("a request"));
        }
        // The raw bytes may already sit in `input` behind the last request.
        let mut raw = [0u8; 3];
        let buffered = input.len().min(raw.len());
        raw[..buffered].copy_from_slice(&input[..buffered]);
        stream.read_exact(&mut raw[buffered..]).expect("raw bytes");
        done_tx.send((requests, raw)).expect("test waits");
    });
    let mut client = connect(addr);
    client
        .talk_start(1, &conv, b"OpusHead", Some(msg))
        .expect("send");
    client.talk_frame(1, 0, &[0xfc, 0xff, 0xfe]).expect("send");
    client.talk_end(1, 1).expect("send");
    client.listen(2, &conv, ListenFrom::Since(5)).expect("send");
    client.unlisten(2).expect("send");
    client.history(3, &conv, 0, 10).expect("send");
    client.ping(11).expect("send");
    client.pong(12).expect("send");
    client.send_raw(&[0xde, 0xad, 0x00]).expect("send");
    let (requests, raw) = done_rx.recv_timeout(WAIT).expect("relay script");
    assert_eq!(requests, expected);
    assert_eq!(raw, [0xde, 0xad, 0x00]);
    relay.join().expect("relay script");
}

#[test]
fn events_split_into_single_bytes_are_reassembled_in_order() {
    let events = vec![
        Event::Listening { sub: 1 },
        Event::Frame {
            stream: 9,
            seq: 0,
            kind: FrameKind::Live,
            payload: Bytes::from_static(b"abc"),
        },
        Event::CaughtUp { sub: 1 },
    ];
    let sent = events.clone();
    let (addr, relay) = fake_relay(move |mut stream| {
        stream.set_nodelay(true).expect("socket option");
        let mut wire = Vec::new();
        for event in &sent {
            wire.extend_from_slice(&encode_event(event).expect("encodes"));
        }
        for byte in wire {
            stream.write_all(&[byte]).expect("relay side write");
        }
    });
    let mut client = connect(addr);
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(client.next_event(WAIT).expect("an event"));
    }
    assert_eq!(received, events);
    relay.join().expect("relay script");
    client.expect_closed(WAIT).expect("the relay side ended");
}

#[test]
fn a_silent_relay_is_a_timeout_and_later_events_still_arrive() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (addr, relay) = fake_relay(move |mut stream| {
        go_rx.recv().expect("test signals");
        write_event(&mut stream, &Event::Pong { nonce: 1 });
        go_rx.recv().expect("test signals");
    });
    let mut client = connect(addr);
    let waited = Duration::from_millis(30);
    match client.next_event(waited) {
        Err(ClientError::Timeout { op, waited: w }) => assert_eq!((op, w), ("read", waited)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(client.try_next_event().expect("no error"), None);
    go_tx.send(()).expect("relay waits");
    assert_eq!(
        client.next_event(WAIT).expect("event"),
        Event::Pong { nonce: 1 }
    );
    assert!(
        client
            .expect_closed(Duration::from_millis(30))
            .expect_err("still open")
            .is_timeout()
    );
    go_tx.send(()).expect("relay waits");
    relay.join().expect("relay script");
    client.expect_closed(WAIT).expect("closed");
}

#[test]
fn try_next_event_returns_an_event_that_has_arrived() {
    let (sent_tx, sent_rx) = mpsc::channel::<()>();
    let (addr, relay) = fake_relay(move |mut stream| {
        let frame = encode_frame_event(4, 2, FrameKind::Replay, b"xyz").expect("encodes");
        stream.write_all(&frame).expect("write");
        sent_tx.send(()).expect("test waits");
        // Keep the connection open until the client is done.
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .expect("read to the client's close");
    });
    let mut client = connect(addr);
    sent_rx.recv_timeout(WAIT).expect("relay wrote");
    // The bytes are on their way; a non-blocking read sees them once the kernel has them, so
    // wait for them with a blocking read of the same event instead of polling.
    let event = match client.try_next_event().expect("no error") {
        Some(event) => event,
        None => client.next_event(WAIT).expect("event"),
    };
    assert_eq!(
        event,
        Event::Frame {
            stream: 4,
            seq: 2,
            kind: FrameKind::Replay,
            payload: Bytes::from_static(b"xyz"),
        }
    );
    client.shutdown_write().expect("shutdown");
    relay.join().expect("relay script");
}

#[test]
fn expect_closed_hands_back_events_that_came_before_the_close() {
    let (addr, relay) = fake_relay(|mut stream| {
        write_event(&mut stream, &Event::Pong { nonce: 3 });
    });
    let mut client = connect(addr);
    relay.join().expect("relay script");
    match client.expect_closed(WAIT) {
        Err(ClientError::EventsBeforeClose { events, closed }) => {
            assert_eq!(events, vec![Event::Pong { nonce: 3 }]);
            assert!(closed);
        }
        other => panic!("expected events before the close, got {other:?}"),
    }
}

#[test]
fn a_close_inside_a_frame_reports_the_partial_bytes() {
    let (addr, relay) = fake_relay(|mut stream| {
        let bytes = encode_event(&Event::Pong { nonce: 3 }).expect("encodes");
        stream.write_all(&bytes[..6]).expect("write");
    });
    let mut client = connect(addr);
    relay.join().expect("relay script");
    match client.next_event(WAIT) {
        Err(ClientError::Closed {
            reset: false,
            partial_frame_bytes: 6,
        }) => {}
        other => panic!("expected a close inside a frame, got {other:?}"),
    }
}

#[test]
fn an_oversized_length_from_the_relay_is_a_decode_error() {
    let (addr, relay) = fake_relay(|mut stream| {
        stream
            .write_all(&[0x01, 0x00, 0x01, 0x00, 0x47])
            .expect("write");
    });
    let mut client = connect(addr);
    match client.next_event(WAIT) {
        Err(ClientError::Decode(error)) => {
            assert_eq!(error.error_code(), ErrorCode::FRAME_TOO_LONG);
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    relay.join().expect("relay script");
}

#[test]
fn pings_are_answered_when_asked_and_not_returned() {
    let (addr, relay) = fake_relay(|mut stream| {
        write_event(&mut stream, &Event::Ping { nonce: 41 });
        let mut input = BytesMut::new();
        assert_eq!(
            read_request(&mut stream, &mut input),
            Some(Request::Pong { nonce: 41 })
        );
        write_event(&mut stream, &Event::Pong { nonce: 42 });
    });
    let mut client = connect(addr);
    client.set_answer_pings(true);
    assert_eq!(
        client.next_event(WAIT).expect("event"),
        Event::Pong { nonce: 42 }
    );
    assert_eq!(client.pings_answered(), 1);
    relay.join().expect("relay script");
}

#[test]
fn pings_are_returned_by_default() {
    let (addr, relay) = fake_relay(|mut stream| {
        write_event(&mut stream, &Event::Ping { nonce: 41 });
    });
    let mut client = connect(addr);
    assert_eq!(
        client.next_event(WAIT).expect("event"),
        Event::Ping { nonce: 41 }
    );
    assert_eq!(client.pings_answered(), 0);
    relay.join().expect("relay script");
}

#[test]
fn abort_resets_the_connection() {
    let (result_tx, result_rx) = mpsc::channel();
    let (addr, relay) = fake_relay(move |mut stream| {
        let mut buf = [0u8; 16];
        result_tx
            .send(stream.read(&mut buf).map_err(|error| error.kind()))
            .expect("test waits");
    });
    let client = connect(addr);
    client.abort().expect("abort");
    let read = result_rx.recv_timeout(WAIT).expect("relay read");
    assert_eq!(read, Err(std::io::ErrorKind::ConnectionReset));
    relay.join().expect("relay script");
}

#[test]
fn a_small_receive_buffer_is_applied_before_connecting() {
    let (addr, relay) = fake_relay(|_stream| {});
    let options = ConnectOptions {
        recv_buffer_bytes: Some(4096),
    };
    let client = Client::connect_with(addr, WAIT, options).expect("connects");
    let size = socket2::SockRef::from(client.stream())
        .recv_buffer_size()
        .expect("socket option");
    // Linux doubles the value for its bookkeeping; anything near the default (~128 KiB)
    // would mean the option was not applied.
    assert!(size <= 2 * 4096, "SO_RCVBUF is {size}");
    relay.join().expect("relay script");
}

#[test]
fn connecting_to_a_closed_port_is_an_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    match Client::connect(addr, WAIT) {
        Err(ClientError::Io { op: "connect", .. }) => {}
        other => panic!("expected a refused connect, got {other:?}"),
    }
}

#[test]
fn expect_closed_stops_collecting_at_its_bound() {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (addr, relay) = fake_relay(move |mut stream| {
        let mut wire = Vec::new();
        for nonce in 0..super::CLOSE_EVENTS_MAX as u64 + 5 {
            wire.extend_from_slice(&encode_event(&Event::Pong { nonce }).expect("encodes"));
        }
        stream.write_all(&wire).expect("write");
        // Stay open until the client has given up.
        done_rx.recv().expect("test signals");
    });
    let mut client = connect(addr);
    match client.expect_closed(WAIT) {
        Err(ClientError::EventsBeforeClose { events, closed }) => {
            assert_eq!(events.len(), super::CLOSE_EVENTS_MAX);
            assert_eq!(events[0], Event::Pong { nonce: 0 });
            assert!(!closed);
        }
        other => panic!("expected the bound to stop it, got {other:?}"),
    }
    // The rest is still there, in order.
    assert_eq!(
        client.next_event(WAIT).expect("event"),
        Event::Pong {
            nonce: super::CLOSE_EVENTS_MAX as u64
        }
    );
    done_tx.send(()).expect("relay waits");
    relay.join().expect("relay script");
}
