//! Limits of encoders and the error code table.

use bytes::{Bytes, BytesMut};

use crate::ids::{ConvName, MsgId};
use crate::protocol::*;

#[test]
fn decode_errors_map_to_closing_wire_codes() {
    let cases = [
        (DecodeError::FrameEmpty, ErrorCode::FRAME_TOO_LONG),
        (
            DecodeError::FrameTooLong { len: 9, max: 8 },
            ErrorCode::FRAME_TOO_LONG,
        ),
        (
            DecodeError::UnknownType { type_code: 0 },
            ErrorCode::UNKNOWN_TYPE,
        ),
        (
            DecodeError::InvalidUtf8 { field: "sender" },
            ErrorCode::MALFORMED,
        ),
    ];
    for (error, code) in cases {
        assert_eq!(error.error_code(), code);
        assert!(code.closes_connection());
    }
}

#[test]
fn error_codes_have_unique_numbers_and_names() {
    let known = ErrorCode::KNOWN;
    assert!(known.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    let mut names: Vec<_> = known.iter().map(|c| c.name().unwrap()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), known.len());
    assert_eq!(ErrorCode::TOKEN_EXPIRED.name(), Some("token_expired"));
    assert!(!ErrorCode::OUT_OF_SCOPE.closes_connection());
    // A code from a later version decodes and prints, and is not assumed to close.
    let later = ErrorCode(777);
    assert_eq!(later.name(), None);
    assert_eq!(later.to_string(), "error 777");
    assert!(!later.closes_connection());
}

#[test]
fn encoders_refuse_fields_over_their_limits_and_leave_the_buffer_alone() {
    let mut buf = BytesMut::from(&b"keep"[..]);
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
        token: Bytes::from(vec![0u8; TOKEN_LEN_MAX + 1]),
        client_name: String::new(),
    };
    assert_eq!(
        encode_request(&hello, &mut buf),
        Err(EncodeError::FieldTooLong {
            field: "token",
            len: TOKEN_LEN_MAX + 1,
            max: TOKEN_LEN_MAX
        })
    );
    let payload = vec![0u8; AUDIO_PAYLOAD_LEN_MAX + 1];
    assert!(matches!(
        write_talk_frame(&mut buf, 1, 0, &payload),
        Err(EncodeError::FrameTooLong { .. })
    ));
    assert_eq!(&buf[..], b"keep");
    // The largest payload fits exactly.
    let frame = encode_frame_event(1, 0, FrameKind::Live, &payload[1..]).unwrap();
    assert_eq!(frame.len(), 4 + FRAME_LEN_MAX as usize);
    let entry = HistoryEntry {
        msg_id: MsgId(1),
        sender: "s".repeat(SENDER_LEN_MAX),
        duration_ms: 0,
        frame_count: 0,
        outcome: MessageOutcome::Complete,
    };
    let too_many = Event::HistoryPage {
        request: 1,
        entries: vec![entry.clone(); HISTORY_ENTRIES_MAX + 1],
        more: false,
    };
    assert!(matches!(
        encode_event(&too_many),
        Err(EncodeError::FieldTooLong {
            field: "entries",
            ..
        })
    ));
    // Fewer entries, but too many bytes for one frame: the relay must split the page.
    let too_big = Event::HistoryPage {
        request: 1,
        entries: vec![entry; 300],
        more: true,
    };
    assert!(matches!(
        write_event(&too_big, &mut buf),
        Err(EncodeError::FrameTooLong { .. })
    ));
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn every_length_prefixed_field_is_bounded_at_its_limit() {
    let name = ConvName::new("c").unwrap();
    let text_at = |len: usize| "x".repeat(len);
    let blob_at = |len: usize| Bytes::from(vec![0u8; len]);
    type Build = Box<dyn Fn(usize) -> Result<Bytes, EncodeError>>;
    let request = |build: Box<dyn Fn(usize) -> Request>| -> Build {
        Box::new(move |len| {
            let mut buf = BytesMut::new();
            encode_request(&build(len), &mut buf).map(|()| buf.freeze())
        })
    };
    let event = |build: Box<dyn Fn(usize) -> Event>| -> Build {
        Box::new(move |len| encode_event(&build(len)))
    };
    let cases: Vec<(&str, usize, Build)> = vec![
        (
            "token",
            TOKEN_LEN_MAX,
            request(Box::new(move |len| Request::Hello {
                version: 1,
                token: blob_at(len),
                client_name: String::new(),
            })),
        ),
        (
            "client name",
            CLIENT_NAME_LEN_MAX,
            request(Box::new(move |len| Request::Hello {
                version: 1,
                token: Bytes::new(),
                client_name: text_at(len),
            })),
        ),
        (
            "codec",
            CODEC_LEN_MAX,
            request({
                let name = name.clone();
                Box::new(move |len| Request::TalkStart {
                    stream: 1,
                    conversation: name.clone(),
                    codec: blob_at(len),
                    resume: None,
                })
            }),
        ),
        (
            "sender",
            SENDER_LEN_MAX,
            event(Box::new(move |len| Event::MessageStarted {
                sub: 1,
                stream: 1,
                msg_id: MsgId(1),
                conversation: name.clone(),
                sender: text_at(len),
                codec: Bytes::new(),
            })),
        ),
        (
            "reconnect address",
            ADDRESS_LEN_MAX,
            event(Box::new(move |len| Event::GoAway {
                reason: GoAwayReason::DRAINING,
                reconnect_to: text_at(len),
            })),
        ),
        (
            "error text",
            ERROR_TEXT_LEN_MAX,
            event(Box::new(move |len| Event::Error {
                code: ErrorCode::INTERNAL,
                about: ErrorSubject::Connection,
                text: text_at(len),
            })),
        ),
    ];
    for (field, max, build) in cases {
        let wire = build(max).unwrap_or_else(|e| panic!("{field} at its limit: {e}"));
        // At the limit it also decodes.
        let mut buf = BytesMut::from(&wire[..]);
        let mut decoder = Decoder::new();
        let decoded = if wire[4] < 0x40 {
            decoder.decode_request(&mut buf).map(|m| m.is_some())
        } else {
            decoder.decode_event(&mut buf).map(|m| m.is_some())
        };
        assert_eq!(decoded, Ok(true), "{field}");
        assert_eq!(
            build(max + 1),
            Err(EncodeError::FieldTooLong {
                field,
                len: max + 1,
                max
            })
        );
    }
}
