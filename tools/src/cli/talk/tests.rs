//! `hark talk` against a scripted relay on a loopback socket: a lost owner is handed over
//! on the same connection and every frame is resent to the new owner.

use std::net::TcpListener;
use std::path::PathBuf;
use std::thread;

use bytes::BytesMut;
use hark_core::ShardId;
use hark_core::protocol::{Decoder, Request, SessionLimits};

use super::*;
use crate::cli::test_relay::{next_request, send};

#[test]
fn messages_cut_by_a_failed_handover_a_gap_or_a_lost_message_are_talked_again() {
    // A handover the session gave up, or a start refused before the message had an id.
    assert!(restartable(ErrorCode::OWNER_UNAVAILABLE, false));
    assert!(restartable(ErrorCode::MAP_CHANGED, false));
    // A relay that forgot the message, or a new owner asking for frames no longer kept:
    // only once the message was resumed (reconnect or handover).
    assert!(restartable(ErrorCode::MESSAGE_UNAVAILABLE, true));
    assert!(!restartable(ErrorCode::MESSAGE_UNAVAILABLE, false));
    assert!(!restartable(ErrorCode::RATE_LIMITED, true));
    assert!(!restartable(ErrorCode::SHUTTING_DOWN, true));
}

#[test]
fn a_handover_is_one_line_in_text_and_an_event_per_refusal_in_json() {
    let mut text = Vec::new();
    report_handover(false, true, "m1", ErrorCode::OWNER_UNAVAILABLE, &mut text).unwrap();
    report_handover(false, false, "m1", ErrorCode::MAP_CHANGED, &mut text).unwrap();
    assert_eq!(
        String::from_utf8(text).unwrap(),
        "handover m1: resuming on a new owner\n"
    );
    let mut json = Vec::new();
    report_handover(true, true, "m1", ErrorCode::OWNER_UNAVAILABLE, &mut json).unwrap();
    report_handover(true, false, "m1", ErrorCode::MAP_CHANGED, &mut json).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(json)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"event": "handover", "msg_id": "m1", "reason": "owner_unavailable"}),
            serde_json::json!({"event": "handover_retry", "msg_id": "m1", "reason": "map_changed"}),
        ]
    );
}

/// Frames the scripted relay lets the first owner receive before it is lost.
const FRAMES_BEFORE_LOSS: u32 = 5;

/// What the scripted relay saw.
#[derive(Debug, Default)]
struct Seen {
    /// Frames the new owner received, in arrival order (seqs).
    adopted_seqs: Vec<u32>,
    /// Their payloads.
    adopted: Vec<Vec<u8>>,
    /// Resume `talk_start`s received.
    resumes: u32,
    frame_count: Option<u32>,
}

/// One connection: a message whose owner is lost after [`FRAMES_BEFORE_LOSS`] frames, a
/// resume refused once (`map_changed`, the map has not moved yet), then a new owner that
/// adopts the message from frame 0.
fn scripted_relay(listener: TcpListener, msg_id: MsgId) -> Seen {
    let (mut socket, _) = listener.accept().expect("the client connects");
    let mut decoder = Decoder::new();
    let mut input = BytesMut::new();
    let mut seen = Seen::default();
    let mut owner_frames = 0;
    let mut adopted = false;
    // Bounded by the client's message: it ends with talk_end.
    loop {
        match next_request(&mut socket, &mut decoder, &mut input) {
            Request::Hello { .. } => send(
                &mut socket,
                &Event::HelloAccepted {
                    version: 1,
                    host: hark_core::HostId(1),
                    session: 1,
                    server_time_us: 0,
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
            ),
            Request::TalkStart {
                stream,
                resume: None,
                ..
            } => send(
                &mut socket,
                &Event::TalkStarted {
                    stream,
                    msg_id,
                    next_seq: 0,
                },
            ),
            Request::TalkStart {
                stream,
                resume: Some(resumed),
                ..
            } => {
                assert_eq!(resumed, msg_id);
                seen.resumes += 1;
                if seen.resumes == 1 {
                    send(
                        &mut socket,
                        &Event::Error {
                            code: ErrorCode::MAP_CHANGED,
                            about: ErrorSubject::TalkStream(stream),
                            text: "routed under map 3, now 4".into(),
                        },
                    );
                } else {
                    adopted = true;
                    send(
                        &mut socket,
                        &Event::TalkStarted {
                            stream,
                            msg_id,
                            next_seq: 0,
                        },
                    );
                }
            }
            Request::TalkFrame {
                stream,
                seq,
                payload,
            } => {
                if adopted {
                    seen.adopted_seqs.push(seq);
                    seen.adopted.push(payload.to_vec());
                } else if owner_frames < FRAMES_BEFORE_LOSS {
                    owner_frames += 1;
                    if owner_frames == FRAMES_BEFORE_LOSS {
                        send(
                            &mut socket,
                            &Event::Stored {
                                stream,
                                frames_stored: FRAMES_BEFORE_LOSS,
                            },
                        );
                        send(
                            &mut socket,
                            &Event::Error {
                                code: ErrorCode::OWNER_UNAVAILABLE,
                                about: ErrorSubject::TalkStream(stream),
                                text: "owner host 2 is unreachable".into(),
                            },
                        );
                    }
                }
                // Frames written before the client heard of the loss reach an idle handle
                // and are dropped, as a relay does.
            }
            Request::TalkEnd {
                stream,
                frame_count,
            } => {
                if !adopted {
                    // Written before the client heard of the loss (a slow client sends
                    // every frame first): an idle handle's end is dropped too.
                    continue;
                }
                seen.frame_count = Some(frame_count);
                send(
                    &mut socket,
                    &Event::TalkEnded {
                        stream,
                        frame_count,
                    },
                );
                return seen;
            }
            Request::Ping { nonce } => send(&mut socket, &Event::Pong { nonce }),
            other => panic!("unexpected request {other:?}"),
        }
    }
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tone-1s.opus")
}

#[test]
fn a_lost_owner_is_handed_over_and_the_new_owner_gets_every_frame_from_frame_0() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let msg_id = MsgId::from_parts(1_000, ShardId::new(2, 0), 7);
    let relay = thread::spawn(move || scripted_relay(listener, msg_id));
    let data_dir = tempfile::tempdir().unwrap();
    let args = TalkArgs {
        relay: vec![addr],
        conv: "general".into(),
        file: fixture(),
        fast: true,
        json: false,
        token: Some(String::new()),
        data_dir: data_dir.path().to_path_buf(),
        subject: None,
        reconnect_patience: Duration::from_secs(5),
    };
    let mut out = Vec::new();
    let report = run(&args, &mut out).expect("the talk completes");
    let seen = relay.join().expect("the relay script held");
    let file = OpusFile::read(&fixture()).unwrap();
    let packets = file.packets.len();
    assert_eq!(seen.resumes, 2, "one refused resume, then the new owner");
    assert_eq!(
        seen.adopted_seqs,
        (0..packets as u32).collect::<Vec<_>>(),
        "every frame from frame 0, once, in order"
    );
    assert!(
        seen.adopted
            .iter()
            .zip(&file.packets)
            .all(|(got, sent)| got[..] == sent[..])
    );
    assert_eq!(seen.frame_count, Some(packets as u32));
    assert_eq!(
        report,
        TalkReport {
            msg_id,
            frame_count: packets as u32,
            resumes: 0,
            handovers: 1,
            abandoned: Vec::new(),
        }
    );
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1..],
        [
            format!("message {msg_id}"),
            format!("handover {msg_id}: resuming on a new owner"),
            format!("resumed {msg_id} from frame 0"),
            format!(
                "stored {msg_id}: {packets} of {packets} frames durable (0 resumes, 1 handovers)"
            ),
        ]
    );
}

/// What the scripted relay saw of a talk whose first start was refused.
#[derive(Debug, Default)]
struct StartsSeen {
    /// The `resume` of every `talk_start`, in order.
    starts: Vec<Option<MsgId>>,
    /// Frames received after the accepted start (seqs, in arrival order).
    seqs: Vec<u32>,
    /// Their payloads.
    payloads: Vec<Vec<u8>>,
    frame_count: Option<u32>,
}

/// One connection: the first `talk_start` is refused (`owner_unavailable`) before the message
/// has an id; the next is accepted and the message stored to its end.
fn refusing_first_start_relay(listener: TcpListener, msg_id: MsgId) -> StartsSeen {
    let (mut socket, _) = listener.accept().expect("the client connects");
    // Safety net: a step the client never takes fails the test instead of hanging it.
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a socket option");
    let mut decoder = Decoder::new();
    let mut input = BytesMut::new();
    let mut seen = StartsSeen::default();
    // Bounded by the client's message: it ends with talk_end.
    loop {
        match next_request(&mut socket, &mut decoder, &mut input) {
            Request::Hello { .. } => send(
                &mut socket,
                &Event::HelloAccepted {
                    version: 1,
                    host: hark_core::HostId(1),
                    session: 1,
                    server_time_us: 0,
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
            ),
            Request::TalkStart { stream, resume, .. } => {
                seen.starts.push(resume);
                if seen.starts.len() == 1 {
                    send(
                        &mut socket,
                        &Event::Error {
                            code: ErrorCode::OWNER_UNAVAILABLE,
                            about: ErrorSubject::TalkStream(stream),
                            text: "owner host 2 is unreachable".into(),
                        },
                    );
                } else {
                    send(
                        &mut socket,
                        &Event::TalkStarted {
                            stream,
                            msg_id,
                            next_seq: 0,
                        },
                    );
                }
            }
            // Frames and an end written before the client heard of the refusal reach an idle
            // handle and are dropped, as a relay does.
            Request::TalkFrame { .. } | Request::TalkEnd { .. } if seen.starts.len() < 2 => {}
            Request::TalkFrame {
                stream,
                seq,
                payload,
            } => {
                seen.seqs.push(seq);
                seen.payloads.push(payload.to_vec());
                send(
                    &mut socket,
                    &Event::Stored {
                        stream,
                        frames_stored: seq + 1,
                    },
                );
            }
            Request::TalkEnd {
                stream,
                frame_count,
            } => {
                seen.frame_count = Some(frame_count);
                send(
                    &mut socket,
                    &Event::TalkEnded {
                        stream,
                        frame_count,
                    },
                );
                return seen;
            }
            Request::Ping { nonce } => send(&mut socket, &Event::Pong { nonce }),
            other => panic!("unexpected request {other:?}"),
        }
    }
}

#[test]
fn a_start_refused_before_the_message_had_an_id_is_retried_and_not_counted_as_abandoned() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let msg_id = MsgId::from_parts(1_000, ShardId::new(3, 0), 9);
    let relay = thread::spawn(move || refusing_first_start_relay(listener, msg_id));
    let data_dir = tempfile::tempdir().unwrap();
    let args = TalkArgs {
        relay: vec![addr],
        conv: "general".into(),
        file: fixture(),
        fast: true,
        json: true,
        token: Some(String::new()),
        data_dir: data_dir.path().to_path_buf(),
        subject: None,
        reconnect_patience: Duration::from_secs(5),
    };
    let mut out = Vec::new();
    let report = run(&args, &mut out).expect("the talk completes");
    let seen = relay.join().expect("the relay script held");
    let file = OpusFile::read(&fixture()).unwrap();
    let packets = file.packets.len();
    assert_eq!(seen.starts, [None, None], "a new start, not a resume");
    assert_eq!(
        seen.seqs,
        (0..packets as u32).collect::<Vec<_>>(),
        "every frame from frame 0, once, in order, on the accepted start"
    );
    assert!(
        seen.payloads
            .iter()
            .zip(&file.packets)
            .all(|(got, sent)| got[..] == sent[..])
    );
    assert_eq!(seen.frame_count, Some(packets as u32));
    assert_eq!(
        report,
        TalkReport {
            msg_id,
            frame_count: packets as u32,
            resumes: 0,
            handovers: 0,
            abandoned: Vec::new(),
        }
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let retries: Vec<_> = lines
        .iter()
        .filter(|line| line["event"] == "start_retry")
        .collect();
    assert_eq!(retries.len(), 1, "{lines:?}");
    assert_eq!(retries[0]["reason"], "owner_unavailable");
    let pause_ms = retries[0]["pause_ms"].as_u64().expect("a number");
    assert!(
        (START_RETRY_MIN_US / 1000..=2 * START_RETRY_MIN_US / 1000).contains(&pause_ms),
        "{pause_ms}"
    );
    assert!(
        lines.iter().all(|line| line["event"] != "restarted"),
        "{lines:?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|line| line["event"] == "talk_started")
            .count(),
        1
    );
}
