//! `hark listen` against a scripted relay on a loopback socket: a subscription the relay ends
//! because the owner is unreachable is listened to again on a new connection, from where it
//! left off; any other refusal ends the command.

use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::thread;

use bytes::BytesMut;
use hark_core::ShardId;
use hark_core::protocol::{Decoder, FrameKind, Request, SessionLimits};

use super::*;
use crate::cli::test_relay::{next_request, send};
use crate::opus::OpusFile;

/// The server time of the scripted relay's first `hello_accepted` (µs).
const FIRST_HELLO_US: u64 = 1_000_000;

/// Safety net: a script step the client never answers fails the test instead of hanging it.
const SCRIPT_READ_TIMEOUT: Duration = Duration::from_secs(20);

fn fixture() -> OpusFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tone-1s.opus");
    OpusFile::read(&path).expect("the fixture is Ogg Opus")
}

fn conversation() -> ConvName {
    ConvName::new("general").expect("a valid name")
}

/// Accepts the next connection, with [`SCRIPT_READ_TIMEOUT`] on its reads.
fn accept(listener: &TcpListener) -> TcpStream {
    let (socket, _) = listener.accept().expect("the client connects");
    socket
        .set_read_timeout(Some(SCRIPT_READ_TIMEOUT))
        .expect("a socket option");
    socket
}

/// One connection's start: answers the hello (server time `server_time_us`), reads the
/// listen, checks it is subscription [`SUB`] of `general` and returns where it listens from.
fn accept_listen(socket: &mut TcpStream, server_time_us: u64) -> ListenFrom {
    let mut decoder = Decoder::new();
    let mut input = BytesMut::new();
    let Request::Hello { .. } = next_request(socket, &mut decoder, &mut input) else {
        panic!("the client says hello first");
    };
    send(
        socket,
        &Event::HelloAccepted {
            version: 1,
            host: hark_core::HostId(1),
            session: 1,
            server_time_us,
            limits: SessionLimits {
                frame_len_max: 65536,
                audio_payload_len_max: 4096,
                frames_per_second_max: 500,
                talk_streams_max: 4,
                subs_max: 4,
                history_limit_max: 100,
                idle_timeout_ms: 30_000,
            },
        },
    );
    // Bounded by the client, which sends its listen right after the hello; a keepalive
    // on a slow machine is answered on the way.
    loop {
        match next_request(socket, &mut decoder, &mut input) {
            Request::Listen {
                sub,
                conversation: listened,
                from,
            } => {
                assert_eq!((sub, listened), (SUB, conversation()));
                return from;
            }
            Request::Ping { nonce } => send(socket, &Event::Pong { nonce }),
            other => panic!("expected a listen, got {other:?}"),
        }
    }
}

/// Waits until the client closes `socket` (it returned), reading whatever it still sends.
fn wait_for_close(socket: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    // Bounded by the client, which closes the connection when the command returns.
    loop {
        match socket.read(&mut chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return,
            Err(error) => panic!("the client never closed the connection: {error}"),
        }
    }
}

/// `listening` and `caught_up` for the subscription.
fn listening() -> [Event; 2] {
    [Event::Listening { sub: SUB }, Event::CaughtUp { sub: SUB }]
}

/// A whole message on `stream`: started, every packet of `file`, ended complete.
fn whole_message(stream: u32, msg_id: MsgId, file: &OpusFile) -> Vec<Event> {
    let mut events = vec![Event::MessageStarted {
        sub: SUB,
        stream,
        msg_id,
        conversation: conversation(),
        sender: "ann".into(),
        codec: file.head_bytes.clone(),
    }];
    events.extend(
        file.packets
            .iter()
            .enumerate()
            .map(|(seq, payload)| Event::Frame {
                stream,
                seq: seq as u32,
                kind: FrameKind::Live,
                payload: payload.clone(),
            }),
    );
    events.push(Event::MessageEnded {
        stream,
        frame_count: file.packets.len() as u32,
        outcome: MessageOutcome::Complete,
    });
    events
}

fn sub_error(code: ErrorCode, text: &str) -> Event {
    Event::Error {
        code,
        about: ErrorSubject::Sub(SUB),
        text: text.into(),
    }
}

fn listen_args(addr: String, out_dir: &std::path::Path, messages: u64) -> ListenArgs {
    ListenArgs {
        relay: vec![addr],
        conv: "general".into(),
        from: "live".into(),
        out_dir: out_dir.join("heard"),
        messages: Some(messages),
        idle_exit: None,
        json: true,
        token: Some(String::new()),
        data_dir: out_dir.to_path_buf(),
        subject: None,
        reconnect_patience: Duration::from_secs(5),
    }
}

fn json_lines(out: Vec<u8>) -> Vec<serde_json::Value> {
    String::from_utf8(out)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
        .collect()
}

/// Asserts that `heard` holds exactly `file`'s packets.
fn assert_holds(heard: &HeardFile, file: &OpusFile) {
    let written = OpusFile::read(&heard.path).expect("a valid Ogg Opus file");
    assert_eq!(written.packets, file.packets, "{}", heard.msg_id);
    assert_eq!(heard.frames as usize, file.packets.len());
    assert!(heard.complete);
}

#[test]
fn a_subscription_ended_by_a_lost_owner_is_listened_to_again_after_the_last_ended_message() {
    let file = fixture();
    let first_msg = MsgId::from_parts(FIRST_HELLO_US + 2_000, ShardId::new(2, 0), 1);
    let second_msg = MsgId::from_parts(FIRST_HELLO_US + 9_000, ShardId::new(3, 0), 1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let script_listener = listener.try_clone().unwrap();
    let script_file = file.clone();
    let relay = thread::spawn(move || {
        let mut first = accept(&script_listener);
        let first_from = accept_listen(&mut first, FIRST_HELLO_US);
        for event in listening()
            .into_iter()
            .chain(whole_message(7, first_msg, &script_file))
        {
            send(&mut first, &event);
        }
        send(
            &mut first,
            &sub_error(ErrorCode::OWNER_UNAVAILABLE, "owner host 2 is unreachable"),
        );
        let mut second = accept(&script_listener);
        let second_from = accept_listen(&mut second, FIRST_HELLO_US + 5_000);
        for event in listening()
            .into_iter()
            .chain(whole_message(3, second_msg, &script_file))
        {
            send(&mut second, &event);
        }
        wait_for_close(&mut second);
        (first_from, second_from)
    });
    let dir = tempfile::tempdir().unwrap();
    let args = listen_args(addr, dir.path(), 2);
    let stop = AtomicBool::new(false);
    let mut out = Vec::new();
    let heard = run(&args, &stop, &mut out).expect("both messages are heard");
    let (first_from, second_from) = relay.join().expect("the relay script held");
    assert_eq!(first_from, ListenFrom::Live);
    assert_eq!(
        second_from,
        ListenFrom::Since(first_msg.start_us() + 1),
        "listened to again right after the message that ended"
    );
    assert_eq!(
        heard.iter().map(|file| file.msg_id).collect::<Vec<_>>(),
        [first_msg, second_msg]
    );
    for heard_file in &heard {
        assert_holds(heard_file, &file);
    }
    let lines = json_lines(out);
    let relisten: Vec<_> = lines
        .iter()
        .filter(|line| line["event"] == "relisten")
        .collect();
    assert_eq!(relisten.len(), 1, "{lines:?}");
    assert_eq!(relisten[0]["reason"], "owner_unavailable");
    // The first pause of the backoff: between its minimum and twice that.
    let pause_ms = relisten[0]["pause_ms"].as_u64().expect("a number");
    assert!(
        (RELISTEN_MIN_US / 1000..=2 * RELISTEN_MIN_US / 1000).contains(&pause_ms),
        "{pause_ms}"
    );
    let connections: Vec<_> = lines
        .iter()
        .filter(|line| line["event"] == "connected")
        .map(|line| line["connection"].clone())
        .collect();
    assert_eq!(connections, [1, 2]);
}

#[test]
fn a_listen_refused_by_a_lost_owner_before_listening_is_sent_again_on_the_new_connection() {
    // The session forgets a subscription refused before `listening`: the command listens
    // again itself, from where the subscription was (a `live` one from the first hello).
    let file = fixture();
    let msg_id = MsgId::from_parts(FIRST_HELLO_US + 9_000, ShardId::new(3, 0), 1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let script_listener = listener.try_clone().unwrap();
    let script_file = file.clone();
    let relay = thread::spawn(move || {
        let mut first = accept(&script_listener);
        let first_from = accept_listen(&mut first, FIRST_HELLO_US);
        send(
            &mut first,
            &sub_error(
                ErrorCode::OWNER_UNAVAILABLE,
                "too many listeners of this host are catching up from other hosts; retry later",
            ),
        );
        let mut second = accept(&script_listener);
        let second_from = accept_listen(&mut second, FIRST_HELLO_US + 5_000);
        for event in listening()
            .into_iter()
            .chain(whole_message(3, msg_id, &script_file))
        {
            send(&mut second, &event);
        }
        wait_for_close(&mut second);
        (first_from, second_from)
    });
    let dir = tempfile::tempdir().unwrap();
    let args = listen_args(addr, dir.path(), 1);
    let stop = AtomicBool::new(false);
    let mut out = Vec::new();
    let heard = run(&args, &stop, &mut out).expect("the message is heard");
    let (first_from, second_from) = relay.join().expect("the relay script held");
    assert_eq!(first_from, ListenFrom::Live);
    assert_eq!(second_from, ListenFrom::Since(FIRST_HELLO_US));
    assert_eq!(heard.len(), 1);
    assert_eq!(heard[0].msg_id, msg_id);
    assert_holds(&heard[0], &file);
    let lines = json_lines(out);
    assert_eq!(
        lines
            .iter()
            .filter(|line| line["event"] == "relisten")
            .count(),
        1,
        "{lines:?}"
    );
}

#[test]
fn a_subscription_ended_for_another_reason_ends_the_command_without_a_new_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let script_listener = listener.try_clone().unwrap();
    let relay = thread::spawn(move || {
        let mut first = accept(&script_listener);
        let from = accept_listen(&mut first, FIRST_HELLO_US);
        for event in listening() {
            send(&mut first, &event);
        }
        send(
            &mut first,
            &sub_error(
                ErrorCode::TOO_MANY_CONVERSATIONS,
                "too many conversations on this shard",
            ),
        );
        wait_for_close(&mut first);
        from
    });
    let dir = tempfile::tempdir().unwrap();
    let args = listen_args(addr, dir.path(), 1);
    let stop = AtomicBool::new(false);
    let mut out = Vec::new();
    let result = run(&args, &stop, &mut out);
    assert_eq!(
        relay.join().expect("the relay script held"),
        ListenFrom::Live
    );
    match result {
        Err(CliError::Refused { what, code, .. }) => {
            assert_eq!(what, "listen to general");
            assert_eq!(code, ErrorCode::TOO_MANY_CONVERSATIONS.0);
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    // The command returned: any connection it made is queued on the listener by now.
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(error) if error.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a second connection: {other:?}"),
    }
    let lines = json_lines(out);
    assert!(
        lines.iter().all(|line| line["event"] != "relisten"),
        "{lines:?}"
    );
}
