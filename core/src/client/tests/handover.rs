//! Handover of a talk stream to a new owner: backoff, resend from a lower `next_seq`,
//! patience, and how it meets a broken connection.

use super::*;

const T0_US: u64 = 1_000_000_000;

fn owner_lost(code: ErrorCode) -> Event {
    Event::Error {
        code,
        about: ErrorSubject::TalkStream(1),
        text: "owner host 2 is unreachable".into(),
    }
}

fn frame(seq: u32) -> Request {
    Request::TalkFrame {
        stream: 1,
        seq,
        payload: Bytes::from(vec![seq as u8]),
    }
}

fn resume() -> Request {
    Request::TalkStart {
        stream: 1,
        conversation: conv(),
        codec: Bytes::new(),
        resume: Some(msg(1)),
    }
}

/// A session with an accepted hello at `T0_US` and stream 1 talking message 1: `frames`
/// frames sent, all stored; `out` is empty.
fn talking(frames: u8) -> (ClientSession, BytesMut) {
    let mut session = ClientSession::new(Bytes::new(), "t");
    session.set_jitter_seed(11);
    let mut out = BytesMut::new();
    session.connect(T0_US, &mut out).unwrap();
    session.apply(&hello_accepted(0), T0_US, &mut out).unwrap();
    session
        .talk_start(1, conv(), Bytes::new(), T0_US, &mut out)
        .unwrap();
    for n in 0..frames {
        session
            .talk_frame(1, Bytes::from(vec![n]), T0_US, &mut out)
            .unwrap();
    }
    let started = Event::TalkStarted {
        stream: 1,
        msg_id: msg(1),
        next_seq: 0,
    };
    session.apply(&started, T0_US, &mut out).unwrap();
    let stored = Event::Stored {
        stream: 1,
        frames_stored: u32::from(frames),
    };
    session.apply(&stored, T0_US, &mut out).unwrap();
    out.clear();
    (session, out)
}

/// The due time of the pending resume, checked against the backoff's bounds after
/// `failures` failures in a row since `error_us`.
fn resume_due_us(session: &ClientSession, error_us: u64, failures: u32) -> u64 {
    let due_us = session.next_poll_us().expect("a resume is due");
    let ceiling_us = (HANDOVER_BACKOFF_MIN_US << failures).min(HANDOVER_BACKOFF_MAX_US);
    assert!(
        due_us >= error_us + HANDOVER_BACKOFF_MIN_US && due_us <= error_us + ceiling_us,
        "resume due {} µs after the error, expected 50 ms ..= {ceiling_us} µs",
        due_us - error_us
    );
    due_us
}

#[test]
fn a_lost_owner_is_resumed_after_a_backoff_and_every_frame_is_resent_to_the_new_owner() {
    let (mut session, mut out) = talking(5);
    session
        .apply(&owner_lost(ErrorCode::OWNER_UNAVAILABLE), T0_US, &mut out)
        .unwrap();
    let status = session.talk(1).expect("kept for the handover");
    assert_eq!(
        (status.handovers, status.handover_since_us),
        (1, Some(T0_US))
    );
    // Frames handed over meanwhile are kept, not written: no owner takes them now.
    session
        .talk_frame(1, Bytes::from(vec![5]), T0_US, &mut out)
        .unwrap();
    assert!(out.is_empty());
    let due_us = resume_due_us(&session, T0_US, 1);
    assert!(!session.poll(due_us - 1, &mut out).unwrap());
    assert!(out.is_empty(), "nothing before the due time");
    assert!(session.poll(due_us, &mut out).unwrap());
    assert_eq!(requests(&mut out), vec![resume()]);
    // The new owner adopted the message and stores it from frame 0.
    let started = Event::TalkStarted {
        stream: 1,
        msg_id: msg(1),
        next_seq: 0,
    };
    session.apply(&started, due_us, &mut out).unwrap();
    assert_eq!(requests(&mut out), (0..6).map(frame).collect::<Vec<_>>());
    let status = session.talk(1).unwrap();
    assert_eq!(
        (
            status.frames_sent,
            status.frames_stored,
            status.handover_since_us
        ),
        (6, 0, None)
    );
    assert_eq!(status.handovers, 1);
    // Frames go straight out again.
    session
        .talk_frame(1, Bytes::from(vec![6]), due_us, &mut out)
        .unwrap();
    assert_eq!(requests(&mut out), vec![frame(6)]);
}

#[test]
fn refused_resumes_back_off_doubling_to_the_maximum_for_every_handover_code() {
    let (mut session, mut out) = talking(2);
    let mut now_us = T0_US;
    let codes = [
        ErrorCode::OWNER_UNAVAILABLE,
        ErrorCode::MAP_CHANGED,
        ErrorCode::SHUTTING_DOWN,
    ];
    for failures in 1..=8u32 {
        let code = codes[failures as usize % codes.len()];
        session.apply(&owner_lost(code), now_us, &mut out).unwrap();
        now_us = resume_due_us(&session, now_us, failures);
        assert!(session.poll(now_us, &mut out).unwrap());
        assert_eq!(requests(&mut out), vec![resume()]);
        assert_eq!(
            session.next_poll_us(),
            Some(now_us + 10_000_000),
            "only the ping is due while the resume is in flight"
        );
    }
    assert_eq!(
        session.talk(1).unwrap().handovers,
        1,
        "retries are one handover"
    );
}

#[test]
fn the_handover_is_given_up_after_the_patience_and_the_stream_dropped() {
    let (mut session, mut out) = talking(3);
    assert_eq!(session.handover_patience_us(), HANDOVER_PATIENCE_DEFAULT_US);
    session.set_handover_patience_us(2_000_000);
    session
        .apply(&owner_lost(ErrorCode::OWNER_UNAVAILABLE), T0_US, &mut out)
        .unwrap();
    let mut resumes = 0;
    // Bounded: the patience ends it; each round waits at least the backoff's minimum.
    let failed = loop {
        let now_us = session.next_poll_us().expect("something is due");
        match session.poll(now_us, &mut out) {
            Ok(_) => {
                assert!(now_us < T0_US + 2_000_000, "no resume after the patience");
                assert_eq!(requests(&mut out), vec![resume()]);
                resumes += 1;
                session
                    .apply(&owner_lost(ErrorCode::MAP_CHANGED), now_us, &mut out)
                    .unwrap();
            }
            Err(error) => break (now_us, error),
        }
    };
    assert_eq!(
        failed.0,
        T0_US + 2_000_000,
        "given up at the patience exactly"
    );
    assert!(matches!(
        failed.1,
        ClientSessionError::HandoverFailed {
            stream: 1,
            msg_id
        } if msg_id == msg(1)
    ));
    assert!(
        (2..=40).contains(&resumes),
        "{resumes} resumes in 2 s of 50 ms .. 1 s"
    );
    assert!(session.talk(1).is_none());
    assert!(!session.poll(failed.0, &mut out).unwrap());
    // The handle is free for a new message.
    session
        .talk_start(1, conv(), Bytes::new(), failed.0, &mut out)
        .unwrap();
}

#[test]
fn a_resume_in_flight_when_the_patience_ends_is_answered_first() {
    let (mut session, mut out) = talking(2);
    session.set_handover_patience_us(100_000);
    session
        .apply(&owner_lost(ErrorCode::OWNER_UNAVAILABLE), T0_US, &mut out)
        .unwrap();
    let due_us = resume_due_us(&session, T0_US, 1);
    assert!(session.poll(due_us, &mut out).unwrap());
    out.clear();
    let late_us = T0_US + 5_000_000;
    assert!(!session.poll(late_us, &mut out).unwrap());
    assert!(session.talk(1).is_some(), "waits for the resume's answer");
    let started = Event::TalkStarted {
        stream: 1,
        msg_id: msg(1),
        next_seq: 1,
    };
    session.apply(&started, late_us, &mut out).unwrap();
    assert_eq!(requests(&mut out), vec![frame(1)]);
    // The next handover: its resume in flight past the patience is refused, and the session
    // gives up at the next poll.
    session
        .apply(&owner_lost(ErrorCode::OWNER_UNAVAILABLE), late_us, &mut out)
        .unwrap();
    assert_eq!(session.talk(1).unwrap().handovers, 2);
    let due_us = resume_due_us(&session, late_us, 1);
    assert!(session.poll(due_us, &mut out).unwrap());
    out.clear();
    let refused_us = late_us + 3_000_000;
    session
        .apply(&owner_lost(ErrorCode::MAP_CHANGED), refused_us, &mut out)
        .unwrap();
    assert_eq!(
        session.next_poll_us(),
        Some(late_us + 100_000),
        "due at once"
    );
    assert!(matches!(
        session.poll(refused_us, &mut out),
        Err(ClientSessionError::HandoverFailed { stream: 1, .. })
    ));
    assert!(out.is_empty(), "no resume after giving up");
}

#[test]
fn a_new_connection_during_a_handover_sends_the_one_resume() {
    let (mut session, mut out) = talking(4);
    session
        .apply(&owner_lost(ErrorCode::OWNER_UNAVAILABLE), T0_US, &mut out)
        .unwrap();
    let due_us = resume_due_us(&session, T0_US, 1);
    session.connect(T0_US + 1, &mut out).unwrap();
    let sent = requests(&mut out);
    assert_eq!(sent.len(), 2);
    assert!(matches!(sent[0], Request::Hello { .. }));
    assert_eq!(sent[1], resume());
    session
        .apply(&hello_accepted(0), T0_US + 2, &mut out)
        .unwrap();
    assert!(!session.poll(due_us, &mut out).unwrap());
    assert!(out.is_empty(), "no second resume");
    let started = Event::TalkStarted {
        stream: 1,
        msg_id: msg(1),
        next_seq: 0,
    };
    session.apply(&started, due_us, &mut out).unwrap();
    assert_eq!(requests(&mut out), (0..4).map(frame).collect::<Vec<_>>());
    let status = session.talk(1).unwrap();
    assert_eq!((status.resumes, status.handovers), (1, 1));
}

#[test]
fn an_ending_stream_sends_its_end_after_the_frames_resent_to_the_new_owner() {
    let (mut session, mut out) = talking(3);
    session
        .apply(&owner_lost(ErrorCode::SHUTTING_DOWN), T0_US, &mut out)
        .unwrap();
    assert_eq!(session.talk_end(1, T0_US, &mut out).unwrap(), 3);
    assert!(out.is_empty(), "the end waits for the new owner");
    let due_us = resume_due_us(&session, T0_US, 1);
    session.poll(due_us, &mut out).unwrap();
    assert_eq!(requests(&mut out), vec![resume()]);
    let started = Event::TalkStarted {
        stream: 1,
        msg_id: msg(1),
        next_seq: 2,
    };
    session.apply(&started, due_us, &mut out).unwrap();
    assert_eq!(
        requests(&mut out),
        vec![
            frame(2),
            Request::TalkEnd {
                stream: 1,
                frame_count: 3
            }
        ]
    );
}

#[test]
fn other_codes_and_messages_without_an_id_drop_the_stream() {
    let (mut session, mut out) = talking(1);
    session
        .apply(&owner_lost(ErrorCode::RATE_LIMITED), T0_US, &mut out)
        .unwrap();
    assert!(session.talk(1).is_none());
    // No talk_started yet: no message id to resume, nothing to hand over.
    session
        .talk_start(1, conv(), Bytes::new(), T0_US, &mut out)
        .unwrap();
    session
        .apply(&owner_lost(ErrorCode::OWNER_UNAVAILABLE), T0_US, &mut out)
        .unwrap();
    assert!(session.talk(1).is_none());
    assert_eq!(session.next_poll_us(), Some(T0_US + 10_000_000));
}

#[test]
fn stored_frames_are_not_dropped_for_room_while_a_new_owner_may_ask_for_them() {
    let mut session = ClientSession::new(Bytes::new(), "t");
    let mut out = BytesMut::new();
    session.connect(T0_US, &mut out).unwrap();
    session.apply(&hello_accepted(0), T0_US, &mut out).unwrap();
    session
        .talk_start(1, conv(), Bytes::new(), T0_US, &mut out)
        .unwrap();
    for _ in 0..KEPT_FRAMES_MAX {
        session
            .talk_frame(1, Bytes::from_static(b"x"), T0_US, &mut out)
            .unwrap();
    }
    let started = Event::TalkStarted {
        stream: 1,
        msg_id: msg(1),
        next_seq: 0,
    };
    session.apply(&started, T0_US, &mut out).unwrap();
    let stored = Event::Stored {
        stream: 1,
        frames_stored: 100,
    };
    session.apply(&stored, T0_US, &mut out).unwrap();
    assert!(session.can_send_frame(1, 1), "stored frames make room");
    session
        .apply(&owner_lost(ErrorCode::OWNER_UNAVAILABLE), T0_US, &mut out)
        .unwrap();
    assert!(!session.can_send_frame(1, 1));
    assert!(matches!(
        session.talk_frame(1, Bytes::from_static(b"x"), T0_US, &mut out),
        Err(ClientSessionError::KeptFull(1))
    ));
    out.clear();
    let due_us = resume_due_us(&session, T0_US, 1);
    session.poll(due_us, &mut out).unwrap();
    out.clear();
    // The new owner has the first 40 frames: those may make room again.
    let started = Event::TalkStarted {
        stream: 1,
        msg_id: msg(1),
        next_seq: 40,
    };
    session.apply(&started, due_us, &mut out).unwrap();
    assert_eq!(session.talk(1).unwrap().frames_stored, 40);
    for _ in 0..40 {
        session
            .talk_frame(1, Bytes::from_static(b"x"), due_us, &mut out)
            .unwrap();
    }
    assert!(!session.can_send_frame(1, 1));
    assert_eq!(session.talks[&1].first_kept_seq(), 40);
}
