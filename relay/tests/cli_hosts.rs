//! The `hark` CLI with several relay addresses: a dead host or one that never answers the
//! hello is passed over, a relay's `go_away` sends the client where it says (or, naming no
//! address, to another relay listed), a relay restarted on another port is followed, and
//! every (re)connection says where it went.

#[path = "support/cli.rs"]
// The helpers other cli_* tests use are unused here.
#[allow(dead_code)]
mod cli_support;
mod support;

use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use bytes::BytesMut;
use cli_support::{
    FIXTURE, LineWriter, assert_same_packets, listen_args, talk_args, wait_for_line,
};
use hark_core::HostId;
use hark_core::protocol::{
    Decoder, Event, GoAwayReason, PROTOCOL_VERSION, Request, SessionLimits, write_event,
};
use hark_tools::cli::conn::CONNECT_TIMEOUT;
use hark_tools::cli::{listen, run, talk};
use serde_json::Value;
use support::process::RelayProcess;
use support::{FAST_TALK, QUICK_COMMITS, args};

/// An address nothing listens on: bound, then closed.
fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The JSON events of a command's output.
fn events(output: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")))
        .collect()
}

/// The events named `name`.
fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["event"] == name)
        .collect()
}

#[test]
fn talk_and_history_pass_over_a_dead_relay_and_say_where_they_connected() {
    let relay = RelayProcess::start(&args(&[FAST_TALK, QUICK_COMMITS]));
    let dead = dead_addr().to_string();
    let live = relay.addr().to_string();
    let relays = format!("{dead},{live}");
    let data_dir = relay.data_dir().to_str().unwrap().to_owned();
    let stop = AtomicBool::new(false);
    let command = |words: &[&str]| -> Vec<OsString> {
        ["hark"].iter().chain(words).map(OsString::from).collect()
    };

    let mut talk_out = Vec::new();
    let talked = command(&[
        "talk",
        "--relay",
        &relays,
        "--conv",
        "hosts",
        "--data-dir",
        &data_dir,
        "--as",
        "cli-test",
        "--json",
        "--fast",
        FIXTURE,
    ]);
    run(talked, &stop, &mut talk_out)
        .unwrap_or_else(|error| relay.fail(&format!("talk failed: {error}")));
    let talk_events = events(&talk_out);
    let failed = named(&talk_events, "connect_failed");
    assert_eq!(failed.len(), 1, "{talk_events:?}");
    assert_eq!(failed[0]["relay"], dead.as_str());
    let connected = named(&talk_events, "connected");
    assert_eq!(connected.len(), 1, "{talk_events:?}");
    assert_eq!(connected[0]["relay"], live.as_str());
    assert_eq!(connected[0]["connection"], 1);
    assert_eq!(connected[0]["failed_attempts"], 1);
    let stored = named(&talk_events, "stored");
    assert_eq!(stored[0]["complete"], true);

    let mut history_out = Vec::new();
    let listed = command(&[
        "history",
        "--relay",
        &dead,
        "--relay",
        &live,
        "--conv",
        "hosts",
        "--data-dir",
        &data_dir,
        "--as",
        "cli-test",
        "--json",
    ]);
    run(listed, &stop, &mut history_out)
        .unwrap_or_else(|error| relay.fail(&format!("history failed: {error}")));
    let entries = events(&history_out);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["msg_id"], stored[0]["msg_id"]);
}

#[test]
fn a_relay_that_accepts_but_never_answers_is_left_after_the_hello_timeout() {
    let relay = RelayProcess::start(&args(&[FAST_TALK, QUICK_COMMITS]));
    // The kernel completes the handshake for the listener's backlog: the client sees an
    // accepted connection on which no hello answer ever comes.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let mut talk = talk_args(&relay, "silent-first", Path::new(FIXTURE), true);
    talk.relay = vec![silent_addr.clone(), relay.addr().to_string()];

    let started = Instant::now();
    let mut out = Vec::new();
    let report = talk::run(&talk, &mut out)
        .unwrap_or_else(|error| relay.fail(&format!("talk failed: {error}")));
    assert!(
        started.elapsed() >= CONNECT_TIMEOUT,
        "the silent relay had its full hello timeout"
    );
    silent.set_nonblocking(true).unwrap();
    assert!(
        silent.accept().is_ok(),
        "the CLI did connect to the silent relay"
    );

    let talk_events = events(&out);
    let failed = named(&talk_events, "connect_failed");
    assert_eq!(failed.len(), 1, "{talk_events:?}");
    assert_eq!(failed[0]["relay"], silent_addr.as_str());
    assert!(
        failed[0]["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("no answer to the hello")),
        "{failed:?}"
    );
    let connected = named(&talk_events, "connected");
    assert_eq!(connected.len(), 1);
    assert_eq!(connected[0]["relay"], relay.addr().to_string().as_str());
    assert_eq!(report.resumes, 0);
}

/// A relay that accepts one connection, accepts the hello, says `go_away` naming
/// `reconnect_to`, and then waits for the client to close.
fn redirecting_relay(listener: TcpListener, reconnect_to: String) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("the CLI connects");
        let mut decoder = Decoder::new();
        let mut input = BytesMut::new();
        let mut chunk = [0u8; 4096];
        // Bounded by the client: it writes a hello first, then closes after the go_away.
        loop {
            match decoder
                .decode_request(&mut input)
                .expect("the CLI's bytes decode")
            {
                Some(Request::Hello { version, .. }) => {
                    assert_eq!(version, PROTOCOL_VERSION);
                    break;
                }
                Some(other) => panic!("a hello first, not {other:?}"),
                None => {}
            }
            let n = socket.read(&mut chunk).expect("the hello arrives");
            assert_ne!(n, 0, "closed before the hello");
            input.extend_from_slice(&chunk[..n]);
        }
        let mut out = BytesMut::new();
        let accepted = Event::HelloAccepted {
            version: PROTOCOL_VERSION,
            host: HostId(9),
            session: 1,
            server_time_us: 1,
            limits: SessionLimits {
                frame_len_max: 65536,
                audio_payload_len_max: 4096,
                frames_per_second_max: 1000,
                talk_streams_max: 4,
                subs_max: 4,
                history_limit_max: 100,
                idle_timeout_ms: 30_000,
            },
        };
        write_event(&accepted, &mut out).unwrap();
        let go_away = Event::GoAway {
            reason: GoAwayReason::DRAINING,
            reconnect_to,
        };
        write_event(&go_away, &mut out).unwrap();
        socket.write_all(&out).expect("the CLI reads");
        // The client leaves on its own: read to its close.
        loop {
            match socket.read(&mut chunk) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

#[test]
fn a_go_away_naming_another_relay_moves_the_talk_there() {
    let relay = RelayProcess::start(&args(&[FAST_TALK, QUICK_COMMITS]));
    let live = relay.addr().to_string();
    let leaving = TcpListener::bind("127.0.0.1:0").unwrap();
    let leaving_addr = leaving.local_addr().unwrap().to_string();
    let fake = redirecting_relay(leaving, live.clone());
    // Only the leaving relay is listed: the live one is known from the go_away alone.
    let mut talk = talk_args(&relay, "redirected", Path::new(FIXTURE), true);
    talk.relay = vec![leaving_addr.clone()];

    let mut out = Vec::new();
    let report = talk::run(&talk, &mut out)
        .unwrap_or_else(|error| relay.fail(&format!("talk failed: {error}")));
    fake.join().expect("the leaving relay saw the client go");

    let talk_events = events(&out);
    let connected = named(&talk_events, "connected");
    assert_eq!(connected.len(), 2, "{talk_events:?}");
    assert_eq!(connected[0]["relay"], leaving_addr.as_str());
    assert_eq!(connected[0]["host"], 9);
    assert_eq!(connected[1]["relay"], live.as_str());
    assert_eq!(connected[1]["connection"], 2);
    assert_eq!(
        connected[1]["failed_attempts"], 0,
        "the redirect went first"
    );
    let disconnected = named(&talk_events, "disconnected");
    let detail = disconnected[0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("going away (draining)") && detail.contains(&live),
        "{detail}"
    );
    assert_eq!(report.resumes, 1);
    assert!(report.abandoned.is_empty());
    let stored = named(&talk_events, "stored");
    assert_eq!(stored[0]["complete"], true);

    let dir = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let heard = listen::run(
        &listen_args(&relay, "redirected", "start", dir.path(), 1),
        &stop,
        &mut Vec::new(),
    )
    .unwrap_or_else(|error| relay.fail(&format!("listen failed: {error}")));
    assert_eq!(heard[0].msg_id, report.msg_id);
    assert_same_packets(Path::new(FIXTURE), &heard[0].path);
}

#[test]
fn listen_follows_a_relay_restarted_on_another_port_and_says_where() {
    let mut relay = RelayProcess::start(&args(&[FAST_TALK, QUICK_COMMITS]));
    let dir = tempfile::tempdir().unwrap();
    let addr = Arc::new(Mutex::new(relay.addr().to_string()));
    let listen = listen_args(&relay, "restarted", "live", dir.path(), 2);
    let (mut listener_out, lines) = LineWriter::new();
    let listener = {
        let addr = Arc::clone(&addr);
        thread::spawn(move || {
            let mut source = move || vec![addr.lock().expect("no panic holds it").clone()];
            let stop = AtomicBool::new(false);
            listen::listen(&listen, &mut source, &stop, &mut listener_out)
        })
    };
    wait_for_line(&lines, "\"listening\"");
    let first = talk::run(
        &talk_args(&relay, "restarted", Path::new(FIXTURE), true),
        &mut Vec::new(),
    )
    .unwrap_or_else(|error| relay.fail(&format!("first talk failed: {error}")));
    wait_for_line(&lines, "\"message_ended\"");

    relay.kill9();
    relay.restart();
    let moved_to = relay.addr().to_string();
    *addr.lock().unwrap() = moved_to.clone();
    let reconnected = wait_for_line(&lines, "\"connection\":2");
    let reconnected: Value = serde_json::from_str(&reconnected).unwrap();
    assert_eq!(reconnected["event"], "connected");
    assert_eq!(reconnected["relay"], moved_to.as_str());
    wait_for_line(&lines, "\"listening\"");

    let second = talk::run(
        &talk_args(&relay, "restarted", Path::new(FIXTURE), true),
        &mut Vec::new(),
    )
    .unwrap_or_else(|error| relay.fail(&format!("second talk failed: {error}")));
    let heard = listener
        .join()
        .unwrap()
        .unwrap_or_else(|error| relay.fail(&format!("listen failed: {error}")));
    let ids: Vec<_> = heard.iter().map(|file| file.msg_id).collect();
    assert_eq!(ids, [first.msg_id, second.msg_id]);
    assert!(heard.iter().all(|file| file.complete));
    assert_same_packets(Path::new(FIXTURE), &heard[1].path);
}

#[test]
fn a_draining_relay_sends_the_listener_to_the_other_relay_listed() {
    let mut first = RelayProcess::start(&args(&[FAST_TALK, QUICK_COMMITS]));
    // The second relay verifies tokens with the first one's secret, so one token serves both.
    let secret = first.secret_path().to_str().unwrap().to_owned();
    let second = RelayProcess::start(
        &[
            FAST_TALK,
            QUICK_COMMITS,
            &["--secret-file", secret.as_str()],
        ]
        .concat(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut listen = listen_args(&first, "drained", "live", dir.path(), 1);
    listen.relay = vec![first.addr().to_string(), second.addr().to_string()];
    let (mut listener_out, lines) = LineWriter::new();
    let listener = thread::spawn(move || {
        let stop = AtomicBool::new(false);
        listen::run(&listen, &stop, &mut listener_out)
    });
    let connected: Value = serde_json::from_str(&wait_for_line(&lines, "\"connected\"")).unwrap();
    assert_eq!(connected["relay"], first.addr().to_string().as_str());
    wait_for_line(&lines, "\"listening\"");

    first.sigterm_and_wait();
    let left: Value = serde_json::from_str(&wait_for_line(&lines, "\"disconnected\"")).unwrap();
    let detail = left["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("going away (draining); reconnecting to any other relay"),
        "{detail}"
    );
    let moved: Value = serde_json::from_str(&wait_for_line(&lines, "\"connected\"")).unwrap();
    assert_eq!(moved["relay"], second.addr().to_string().as_str());
    assert_eq!(moved["connection"], 2);
    assert_eq!(moved["failed_attempts"], 0, "straight to the other relay");
    wait_for_line(&lines, "\"listening\"");

    let mut talk = talk_args(&first, "drained", Path::new(FIXTURE), true);
    talk.relay = vec![second.addr().to_string()];
    let report = talk::run(&talk, &mut Vec::new())
        .unwrap_or_else(|error| second.fail(&format!("talk failed: {error}")));
    let heard = listener
        .join()
        .unwrap()
        .unwrap_or_else(|error| second.fail(&format!("listen failed: {error}")));
    assert_eq!(heard.len(), 1);
    assert_eq!(heard[0].msg_id, report.msg_id);
    assert_same_packets(Path::new(FIXTURE), &heard[0].path);
}
