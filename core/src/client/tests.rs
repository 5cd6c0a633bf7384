//! ClientSession against a small model relay that stores a prefix of each message and forgets
//! the rest when the connection breaks.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::ids::{MsgId, ShardId};
use crate::protocol::{Decoder, MessageOutcome, Request, encode_event};

mod handover;
mod handover_model;
mod model;

fn conv() -> ConvName {
    ConvName::new("general").expect("a valid name")
}

fn limits() -> SessionLimits {
    SessionLimits {
        frame_len_max: 65536,
        audio_payload_len_max: 4096,
        frames_per_second_max: 100,
        talk_streams_max: 4,
        subs_max: 4,
        history_limit_max: 100,
        idle_timeout_ms: 30_000,
    }
}

fn hello_accepted(server_time_us: u64) -> Event {
    Event::HelloAccepted {
        version: 1,
        host: HostId(1),
        session: 7,
        server_time_us,
        limits: limits(),
    }
}

/// Every request in `out`, which is emptied.
fn requests(out: &mut BytesMut) -> Vec<Request> {
    let mut decoder = Decoder::new();
    let mut found = Vec::new();
    while let Some(request) = decoder
        .decode_request(out)
        .expect("the session encodes validly")
    {
        found.push(request);
    }
    assert!(out.is_empty(), "no partial request is left");
    found
}

/// Feeds `event` through the session's decoder, as the bytes a socket would deliver.
fn deliver(session: &mut ClientSession, event: &Event, out: &mut BytesMut) -> Event {
    let mut input = BytesMut::from(&encode_event(event).expect("valid event")[..]);
    let got = session
        .receive(&mut input, 0, out)
        .expect("a valid event")
        .expect("a whole event");
    assert!(input.is_empty());
    got
}

fn msg(counter: u32) -> MsgId {
    MsgId::from_parts(1_000 + u64::from(counter), ShardId::new(1, 0), counter)
}

#[test]
fn connect_writes_the_hello_and_the_terms_come_from_hello_accepted() {
    let mut session = ClientSession::new(Bytes::from_static(b"tok"), "test/1");
    let mut out = BytesMut::new();
    session.connect(0, &mut out).unwrap();
    assert_eq!(session.hello_state(), &HelloState::Sent);
    assert_eq!(
        requests(&mut out),
        vec![Request::Hello {
            version: PROTOCOL_VERSION,
            token: Bytes::from_static(b"tok"),
            client_name: "test/1".into(),
        }]
    );
    deliver(&mut session, &hello_accepted(5), &mut out);
    let HelloState::Accepted(terms) = session.hello_state() else {
        panic!("accepted expected, got {:?}", session.hello_state());
    };
    assert_eq!(terms.server_time_us, 5);
    assert_eq!(terms.limits, limits());
}

#[test]
fn a_refused_hello_is_remembered_with_its_code() {
    let mut session = ClientSession::new(Bytes::new(), "test/1");
    let mut out = BytesMut::new();
    session.connect(0, &mut out).unwrap();
    let refusal = Event::Error {
        code: ErrorCode::TOKEN_INVALID,
        about: ErrorSubject::Connection,
        text: "bad".into(),
    };
    deliver(&mut session, &refusal, &mut out);
    assert_eq!(
        session.hello_state(),
        &HelloState::Refused {
            code: ErrorCode::TOKEN_INVALID,
            text: "bad".into()
        }
    );
}

#[test]
fn stored_acks_count_durable_frames_and_talk_ended_forgets_the_stream() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    session.connect(0, &mut out).unwrap();
    session
        .talk_start(1, conv(), Bytes::new(), 0, &mut out)
        .unwrap();
    for n in 0..5u8 {
        assert_eq!(
            session
                .talk_frame(1, Bytes::from(vec![n]), 0, &mut out)
                .unwrap(),
            u32::from(n)
        );
    }
    let sent = requests(&mut out);
    assert_eq!(sent.len(), 1 + 1 + 5);
    deliver(
        &mut session,
        &Event::TalkStarted {
            stream: 1,
            msg_id: msg(1),
            next_seq: 0,
        },
        &mut out,
    );
    deliver(
        &mut session,
        &Event::Stored {
            stream: 1,
            frames_stored: 3,
        },
        &mut out,
    );
    let status = session.talk(1).unwrap();
    assert_eq!((status.frames_sent, status.frames_stored), (5, 3));
    // Every frame stays kept (a new owner may ask for all of them) while under the bounds.
    assert_eq!(session.talks[&1].kept.len(), 5);
    assert_eq!(session.talk_end(1, 0, &mut out).unwrap(), 5);
    assert!(matches!(
        session.talk_frame(1, Bytes::new(), 0, &mut out),
        Err(ClientSessionError::TalkStreamEnding(1))
    ));
    deliver(
        &mut session,
        &Event::TalkEnded {
            stream: 1,
            frame_count: 5,
        },
        &mut out,
    );
    assert!(session.talk(1).is_none());
}

#[test]
fn a_resume_resends_the_frames_from_the_relays_next_seq_then_the_end() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    session.connect(0, &mut out).unwrap();
    session
        .talk_start(3, conv(), Bytes::from_static(b"OpusHead"), 0, &mut out)
        .unwrap();
    for n in 0..6u8 {
        session
            .talk_frame(3, Bytes::from(vec![n]), 0, &mut out)
            .unwrap();
    }
    deliver(
        &mut session,
        &Event::TalkStarted {
            stream: 3,
            msg_id: msg(9),
            next_seq: 0,
        },
        &mut out,
    );
    deliver(
        &mut session,
        &Event::Stored {
            stream: 3,
            frames_stored: 2,
        },
        &mut out,
    );
    session.talk_end(3, 0, &mut out).unwrap();
    out.clear();

    session.connect(0, &mut out).unwrap();
    let sent = requests(&mut out);
    assert!(matches!(sent[0], Request::Hello { .. }));
    assert_eq!(
        sent[1],
        Request::TalkStart {
            stream: 3,
            conversation: conv(),
            codec: Bytes::from_static(b"OpusHead"),
            resume: Some(msg(9)),
        }
    );
    assert_eq!(sent.len(), 2, "frames wait for talk_started's next_seq");
    deliver(
        &mut session,
        &Event::TalkStarted {
            stream: 3,
            msg_id: msg(9),
            next_seq: 4,
        },
        &mut out,
    );
    let resent = requests(&mut out);
    assert_eq!(
        resent,
        vec![
            Request::TalkFrame {
                stream: 3,
                seq: 4,
                payload: Bytes::from(vec![4])
            },
            Request::TalkFrame {
                stream: 3,
                seq: 5,
                payload: Bytes::from(vec![5])
            },
            Request::TalkEnd {
                stream: 3,
                frame_count: 6
            },
        ]
    );
    assert_eq!(session.talk(3).unwrap().resumes, 1);
}

#[test]
fn a_message_without_an_id_starts_again_from_frame_zero_on_a_new_connection() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    session.connect(0, &mut out).unwrap();
    session
        .talk_start(1, conv(), Bytes::new(), 0, &mut out)
        .unwrap();
    session
        .talk_frame(1, Bytes::from_static(b"a"), 0, &mut out)
        .unwrap();
    out.clear();
    session.connect(0, &mut out).unwrap();
    let sent = requests(&mut out);
    assert_eq!(sent.len(), 3);
    assert!(matches!(sent[1], Request::TalkStart { resume: None, .. }));
    assert!(matches!(sent[2], Request::TalkFrame { seq: 0, .. }));
}

#[test]
fn a_resume_below_the_kept_frames_is_a_gap_and_drops_the_stream() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    session.connect(0, &mut out).unwrap();
    session
        .talk_start(1, conv(), Bytes::new(), 0, &mut out)
        .unwrap();
    for _ in 0..KEPT_FRAMES_MAX {
        session
            .talk_frame(1, Bytes::from_static(b"x"), 0, &mut out)
            .unwrap();
    }
    deliver(
        &mut session,
        &Event::TalkStarted {
            stream: 1,
            msg_id: msg(1),
            next_seq: 0,
        },
        &mut out,
    );
    deliver(
        &mut session,
        &Event::Stored {
            stream: 1,
            frames_stored: 3,
        },
        &mut out,
    );
    // Three more frames than the bound: the three stored ones are dropped from the front.
    for _ in 0..3 {
        session
            .talk_frame(1, Bytes::from_static(b"x"), 0, &mut out)
            .unwrap();
    }
    assert_eq!(session.talks[&1].first_kept_seq(), 3);
    assert_eq!(session.talks[&1].kept.len(), KEPT_FRAMES_MAX);
    session.connect(0, &mut out).unwrap();
    let mut input = BytesMut::from(
        &encode_event(&Event::TalkStarted {
            stream: 1,
            msg_id: msg(1),
            next_seq: 1,
        })
        .unwrap()[..],
    );
    assert!(matches!(
        session.receive(&mut input, 0, &mut out),
        Err(ClientSessionError::ResumeGap {
            next_seq: 1,
            kept_from: 3,
            ..
        })
    ));
    assert!(session.talk(1).is_none(), "the message cannot be completed");
}

#[test]
fn the_kept_frames_are_bounded_and_stored_acks_make_room() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    session.connect(0, &mut out).unwrap();
    session
        .talk_start(1, conv(), Bytes::new(), 0, &mut out)
        .unwrap();
    for _ in 0..KEPT_FRAMES_MAX {
        session
            .talk_frame(1, Bytes::from_static(b"x"), 0, &mut out)
            .unwrap();
    }
    assert!(!session.can_send_frame(1, 1));
    assert!(matches!(
        session.talk_frame(1, Bytes::from_static(b"x"), 0, &mut out),
        Err(ClientSessionError::KeptFull(1))
    ));
    deliver(
        &mut session,
        &Event::TalkStarted {
            stream: 1,
            msg_id: msg(1),
            next_seq: 0,
        },
        &mut out,
    );
    deliver(
        &mut session,
        &Event::Stored {
            stream: 1,
            frames_stored: 10,
        },
        &mut out,
    );
    assert!(session.can_send_frame(1, 1));
    let big = Bytes::from(vec![0; KEPT_BYTES_MAX]);
    assert!(!session.can_send_frame(1, big.len()));
}

#[test]
fn talk_streams_subscriptions_and_history_requests_are_bounded() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    for stream in 0..TALK_STREAMS_MAX as u32 {
        session
            .talk_start(stream, conv(), Bytes::new(), 0, &mut out)
            .unwrap();
    }
    assert!(matches!(
        session.talk_start(u32::MAX, conv(), Bytes::new(), 0, &mut out),
        Err(ClientSessionError::TooMany {
            max: TALK_STREAMS_MAX,
            ..
        })
    ));
    for sub in 0..SUBS_MAX as u32 {
        session
            .listen(sub, conv(), ListenFrom::Live, 0, &mut out)
            .unwrap();
    }
    assert!(matches!(
        session.listen(u32::MAX, conv(), ListenFrom::Live, 0, &mut out),
        Err(ClientSessionError::TooMany { max: SUBS_MAX, .. })
    ));
    for request in 0..HISTORY_IN_FLIGHT_MAX as u32 {
        session
            .history(request, conv(), 0, 10, 0, &mut out)
            .unwrap();
    }
    assert!(matches!(
        session.history(u32::MAX, conv(), 0, 10, 0, &mut out),
        Err(ClientSessionError::TooMany {
            max: HISTORY_IN_FLIGHT_MAX,
            ..
        })
    ));
    assert!(matches!(
        session.history(0, conv(), 0, 10, 0, &mut out),
        Err(ClientSessionError::HistoryInFlight(0))
    ));
}

#[test]
fn open_message_streams_are_bounded() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    session
        .listen(1, conv(), ListenFrom::Live, 0, &mut out)
        .unwrap();
    let started = |stream: u32| Event::MessageStarted {
        sub: 1,
        stream,
        msg_id: msg(stream),
        conversation: conv(),
        sender: "a".into(),
        codec: Bytes::new(),
    };
    for stream in 0..MESSAGE_STREAMS_MAX as u32 {
        session.apply(&started(stream), 0, &mut out).unwrap();
    }
    assert!(matches!(
        session.apply(&started(u32::MAX), 0, &mut out),
        Err(ClientSessionError::TooMany {
            max: MESSAGE_STREAMS_MAX,
            ..
        })
    ));
}

#[test]
fn a_subscription_resumes_from_its_oldest_open_message_else_after_the_last_ended() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    session.connect(0, &mut out).unwrap();
    session
        .listen(2, conv(), ListenFrom::Live, 0, &mut out)
        .unwrap();
    deliver(&mut session, &hello_accepted(500), &mut out);
    out.clear();
    // Nothing heard: a live subscription resumes from the first accept time.
    session.connect(0, &mut out).unwrap();
    let sent = requests(&mut out);
    assert_eq!(
        sent[1],
        Request::Listen {
            sub: 2,
            conversation: conv(),
            from: ListenFrom::Since(500)
        }
    );

    let started = |stream, msg_id| Event::MessageStarted {
        sub: 2,
        stream,
        msg_id,
        conversation: conv(),
        sender: "a".into(),
        codec: Bytes::new(),
    };
    deliver(&mut session, &started(10, msg(1)), &mut out);
    deliver(
        &mut session,
        &Event::MessageEnded {
            stream: 10,
            frame_count: 1,
            outcome: MessageOutcome::Complete,
        },
        &mut out,
    );
    deliver(&mut session, &started(11, msg(3)), &mut out);
    deliver(&mut session, &started(12, msg(2)), &mut out);
    session.connect(0, &mut out).unwrap();
    let sent = requests(&mut out);
    assert_eq!(
        sent[1],
        Request::Listen {
            sub: 2,
            conversation: conv(),
            from: ListenFrom::Message(msg(2))
        }
    );

    deliver(&mut session, &started(13, msg(4)), &mut out);
    deliver(
        &mut session,
        &Event::MessageEnded {
            stream: 13,
            frame_count: 1,
            outcome: MessageOutcome::Complete,
        },
        &mut out,
    );
    session.connect(0, &mut out).unwrap();
    let sent = requests(&mut out);
    let after = msg(4).start_us() + 1;
    assert_eq!(
        sent[1],
        Request::Listen {
            sub: 2,
            conversation: conv(),
            from: ListenFrom::Since(after)
        }
    );
}

#[test]
fn pings_are_answered_and_an_idle_session_pings() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    session.connect(0, &mut out).unwrap();
    assert!(
        !session.poll(1_000_000_000, &mut out).unwrap(),
        "no ping before the accept"
    );
    out.clear();
    deliver(&mut session, &hello_accepted(0), &mut out);
    deliver(&mut session, &Event::Ping { nonce: 42 }, &mut out);
    assert_eq!(requests(&mut out), vec![Request::Pong { nonce: 42 }]);
    assert_eq!(session.next_poll_us(), Some(10_000_000));
    assert!(!session.poll(9_999_999, &mut out).unwrap());
    assert!(session.poll(10_000_000, &mut out).unwrap());
    assert_eq!(
        requests(&mut out),
        vec![Request::Ping { nonce: 10_000_000 }]
    );
}

#[test]
fn errors_free_the_handles_they_concern() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    session
        .talk_start(1, conv(), Bytes::new(), 0, &mut out)
        .unwrap();
    session
        .listen(2, conv(), ListenFrom::Live, 0, &mut out)
        .unwrap();
    session.history(3, conv(), 0, 5, 0, &mut out).unwrap();
    for about in [
        ErrorSubject::TalkStream(1),
        ErrorSubject::Sub(2),
        ErrorSubject::HistoryRequest(3),
    ] {
        session
            .apply(
                &Event::Error {
                    code: ErrorCode::OUT_OF_SCOPE,
                    about,
                    text: String::new(),
                },
                0,
                &mut out,
            )
            .unwrap();
    }
    assert!(session.talk(1).is_none());
    assert!(session.subscription(2).is_none());
    session.history(3, conv(), 0, 5, 0, &mut out).unwrap();
}

#[test]
fn a_subscription_the_relay_ended_for_a_lost_owner_is_listened_to_again_on_reconnect() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    session.connect(0, &mut out).unwrap();
    session
        .listen(2, conv(), ListenFrom::Live, 0, &mut out)
        .unwrap();
    deliver(&mut session, &hello_accepted(500), &mut out);
    // The new connection's listen is refused before `listening`: the owner is unreachable.
    session.connect(0, &mut out).unwrap();
    out.clear();
    deliver(
        &mut session,
        &Event::Error {
            code: ErrorCode::OWNER_UNAVAILABLE,
            about: ErrorSubject::Sub(2),
            text: "the owner is unreachable".into(),
        },
        &mut out,
    );
    session.connect(0, &mut out).unwrap();
    let sent = requests(&mut out);
    assert_eq!(
        sent[1],
        Request::Listen {
            sub: 2,
            conversation: conv(),
            from: ListenFrom::Since(500)
        }
    );
    // Another refusal of a listen not yet `listening` drops it.
    out.clear();
    deliver(
        &mut session,
        &Event::Error {
            code: ErrorCode::TOO_MANY_CONVERSATIONS,
            about: ErrorSubject::Sub(2),
            text: "full".into(),
        },
        &mut out,
    );
    session.connect(0, &mut out).unwrap();
    assert_eq!(requests(&mut out).len(), 1, "only the hello");
}
