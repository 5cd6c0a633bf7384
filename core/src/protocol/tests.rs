//! Round trips of every message, decoding under arbitrary splits, and robustness on arbitrary,
//! truncated and oversized input.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::ids::{ConvName, HostId, MsgId};

fn msg_id() -> impl Strategy<Value = MsgId> {
    any::<u128>().prop_map(MsgId)
}

fn conv_name() -> impl Strategy<Value = ConvName> {
    // Any non-control character, including multi-byte ones, up to the byte limit.
    "[^\\x00-\\x1f\\x7f]{1,60}".prop_filter_map("name over 255 bytes", |s| ConvName::new(s).ok())
}

fn text(max_chars: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max_chars).prop_map(|c| c.into_iter().collect())
}

fn blob(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn listen_from() -> impl Strategy<Value = ListenFrom> {
    prop_oneof![
        Just(ListenFrom::Live),
        msg_id().prop_map(ListenFrom::Message),
        any::<u64>().prop_map(ListenFrom::Since),
    ]
}

pub(super) fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), blob(300), text(60)).prop_map(|(version, token, client_name)| {
            Request::Hello {
                version,
                token,
                client_name,
            }
        }),
        (
            any::<u32>(),
            conv_name(),
            blob(40),
            proptest::option::of(msg_id())
        )
            .prop_map(|(stream, conversation, codec, resume)| Request::TalkStart {
                stream,
                conversation,
                codec,
                resume,
            }),
        (any::<u32>(), any::<u32>(), blob(300)).prop_map(|(stream, seq, payload)| {
            Request::TalkFrame {
                stream,
                seq,
                payload,
            }
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(stream, frame_count)| Request::TalkEnd {
            stream,
            frame_count
        }),
        (any::<u32>(), conv_name(), listen_from()).prop_map(|(sub, conversation, from)| {
            Request::Listen {
                sub,
                conversation,
                from,
            }
        }),
        any::<u32>().prop_map(|sub| Request::Unlisten { sub }),
        (any::<u32>(), conv_name(), any::<u64>(), any::<u16>()).prop_map(
            |(request, conversation, since_us, limit)| Request::History {
                request,
                conversation,
                since_us,
                limit,
            }
        ),
        any::<u64>().prop_map(|nonce| Request::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Request::Pong { nonce }),
    ]
}

fn outcome() -> impl Strategy<Value = MessageOutcome> {
    prop_oneof![
        Just(MessageOutcome::Complete),
        Just(MessageOutcome::Truncated)
    ]
}

fn limits() -> impl Strategy<Value = SessionLimits> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
    )
        .prop_map(|(a, b, c, d, e, f, g)| SessionLimits {
            frame_len_max: a,
            audio_payload_len_max: b,
            frames_per_second_max: c,
            talk_streams_max: d,
            subs_max: e,
            history_limit_max: f,
            idle_timeout_ms: g,
        })
}

fn history_entry() -> impl Strategy<Value = HistoryEntry> {
    (msg_id(), text(20), any::<u32>(), any::<u32>(), outcome()).prop_map(
        |(msg_id, sender, duration_ms, frame_count, outcome)| HistoryEntry {
            msg_id,
            sender,
            duration_ms,
            frame_count,
            outcome,
        },
    )
}

fn error_subject() -> impl Strategy<Value = ErrorSubject> {
    prop_oneof![
        Just(ErrorSubject::Connection),
        any::<u32>().prop_map(ErrorSubject::TalkStream),
        any::<u32>().prop_map(ErrorSubject::Sub),
        any::<u32>().prop_map(ErrorSubject::HistoryRequest),
    ]
}

pub(super) fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            any::<u64>(),
            limits()
        )
            .prop_map(|(version, host, session, server_time_us, limits)| {
                Event::HelloAccepted {
                    version,
                    host: HostId(host),
                    session,
                    server_time_us,
                    limits,
                }
            }),
        (any::<u32>(), msg_id(), any::<u32>()).prop_map(|(stream, msg_id, next_seq)| {
            Event::TalkStarted {
                stream,
                msg_id,
                next_seq,
            }
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(stream, frames_stored)| Event::Stored {
            stream,
            frames_stored
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(stream, frame_count)| Event::TalkEnded {
            stream,
            frame_count
        }),
        any::<u32>().prop_map(|sub| Event::Listening { sub }),
        any::<u32>().prop_map(|sub| Event::Unlistened { sub }),
        (
            any::<u32>(),
            any::<u32>(),
            msg_id(),
            conv_name(),
            text(30),
            blob(40)
        )
            .prop_map(|(sub, stream, msg_id, conversation, sender, codec)| {
                Event::MessageStarted {
                    sub,
                    stream,
                    msg_id,
                    conversation,
                    sender,
                    codec,
                }
            }),
        (any::<u32>(), any::<u32>(), any::<bool>(), blob(300)).prop_map(
            |(stream, seq, live, payload)| Event::Frame {
                stream,
                seq,
                kind: if live {
                    FrameKind::Live
                } else {
                    FrameKind::Replay
                },
                payload,
            }
        ),
        (any::<u32>(), any::<u32>(), outcome()).prop_map(|(stream, frame_count, outcome)| {
            Event::MessageEnded {
                stream,
                frame_count,
                outcome,
            }
        }),
        any::<u32>().prop_map(|sub| Event::CaughtUp { sub }),
        (
            any::<u32>(),
            proptest::collection::vec(history_entry(), 0..20),
            any::<bool>()
        )
            .prop_map(|(request, entries, more)| Event::HistoryPage {
                request,
                entries,
                more,
            }),
        any::<u64>().prop_map(|nonce| Event::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Event::Pong { nonce }),
        (any::<u16>(), text(40)).prop_map(|(reason, reconnect_to)| Event::GoAway {
            reason: GoAwayReason(reason),
            reconnect_to,
        }),
        (any::<u16>(), error_subject(), text(60)).prop_map(|(code, about, text)| Event::Error {
            code: ErrorCode(code),
            about,
            text,
        }),
    ]
}

/// Feeds `wire` to `decode` in chunks of the given sizes (cycled), collecting every message.
fn decode_in_chunks<T>(
    wire: &[u8],
    chunk_lens: &[usize],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut lens = chunk_lens.iter().cycle();
    while at < wire.len() {
        let len = lens
            .next()
            .copied()
            .unwrap_or(1)
            .max(1)
            .min(wire.len() - at);
        buf.extend_from_slice(&wire[at..at + len]);
        at += len;
        while let Some(message) = decode(&mut buf)? {
            out.push(message);
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    Ok(out)
}

proptest! {
    #[test]
    fn requests_round_trip_under_any_split(
        requests in proptest::collection::vec(request(), 1..8),
        chunk_lens in proptest::collection::vec(1usize..40, 1..8),
    ) {
        let mut wire = BytesMut::new();
        for request in &requests {
            encode_request(request, &mut wire).unwrap();
        }
        let mut decoder = Decoder::new();
        let decoded = decode_in_chunks(&wire, &chunk_lens, |b| decoder.decode_request(b));
        prop_assert_eq!(decoded, Ok(requests));
    }

    #[test]
    fn events_round_trip_under_any_split(
        events in proptest::collection::vec(event(), 1..8),
        chunk_lens in proptest::collection::vec(1usize..40, 1..8),
    ) {
        let mut wire = BytesMut::new();
        for event in &events {
            // Both encoders must produce the same bytes.
            let shared = encode_event(event).unwrap();
            write_event(event, &mut wire).unwrap();
            prop_assert_eq!(&wire[wire.len() - shared.len()..], &shared[..]);
        }
        let mut decoder = Decoder::new();
        let decoded = decode_in_chunks(&wire, &chunk_lens, |b| decoder.decode_event(b));
        prop_assert_eq!(decoded, Ok(events));
    }

    #[test]
    fn byte_by_byte_decoding_yields_each_message_once_complete(request in request()) {
        let mut wire = BytesMut::new();
        encode_request(&request, &mut wire).unwrap();
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let decoded = decoder.decode_request(&mut buf).unwrap();
            if i + 1 < wire.len() {
                prop_assert_eq!(decoded, None);
            } else {
                prop_assert_eq!(decoded, Some(request.clone()));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_over_reserve(
        input in proptest::collection::vec(any::<u8>(), 0..600),
        chunk_lens in proptest::collection::vec(1usize..64, 1..8),
        as_events in any::<bool>(),
    ) {
        assert_decoder_is_robust(&input, &chunk_lens, as_events);
    }

    #[test]
    fn mutated_valid_frames_never_panic_nor_over_reserve(
        requests in proptest::collection::vec(request(), 1..4),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        chunk_lens in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let mut wire = BytesMut::new();
        for request in &requests {
            encode_request(request, &mut wire).unwrap();
        }
        let mut wire = wire.to_vec();
        for (at, value) in flips {
            let at = at.index(wire.len());
            wire[at] = value;
        }
        wire.truncate(cut.index(wire.len() + 1));
        assert_decoder_is_robust(&wire, &chunk_lens, false);
    }
}

/// The small limit used by robustness tests, so oversized lengths are easy to hit.
const ROBUST_FRAME_LEN_MAX: u32 = FRAME_LEN_MAX_MIN;

/// Decodes `input` chunk by chunk until the end or the first error, checking that the decoder
/// never reserves more than twice one maximal frame (the factor 2 is `BytesMut`'s amortised
/// growth) and never reserves anything for a refused length.
pub(super) fn assert_decoder_is_robust(input: &[u8], chunk_lens: &[usize], as_events: bool) {
    let mut decoder = Decoder::with_frame_len_max(ROBUST_FRAME_LEN_MAX);
    let reserve_bound = 2 * (4 + ROBUST_FRAME_LEN_MAX as usize);
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut lens = chunk_lens.iter().cycle();
    while at < input.len() {
        let len = lens
            .next()
            .copied()
            .unwrap_or(1)
            .max(1)
            .min(input.len() - at);
        pending.extend_from_slice(&input[at..at + len]);
        at += len;
        loop {
            // A fresh, exactly sized buffer, so any growth is the decoder's own doing.
            let mut buf = BytesMut::from(&pending[..]);
            let before = buf.len();
            let result = if as_events {
                decoder.decode_event(&mut buf).map(|e| e.is_some())
            } else {
                decoder.decode_request(&mut buf).map(|r| r.is_some())
            };
            assert!(
                buf.capacity() <= before.max(reserve_bound),
                "capacity {} after decoding {before} bytes",
                buf.capacity()
            );
            match result {
                Ok(true) => {
                    let consumed = before - buf.len();
                    assert!(consumed > 0);
                    pending.drain(..consumed);
                }
                Ok(false) => break,
                Err(DecodeError::FrameTooLong { .. } | DecodeError::FrameEmpty) => {
                    assert_eq!(buf.len(), before, "a refused frame must not be consumed");
                    assert_eq!(
                        buf.capacity(),
                        before,
                        "nothing reserved for a refused frame"
                    );
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

#[test]
fn oversized_length_is_refused_before_reserving() {
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::from(&(FRAME_LEN_MAX + 1).to_le_bytes()[..]);
    assert_eq!(
        decoder.decode_request(&mut buf),
        Err(DecodeError::FrameTooLong {
            len: FRAME_LEN_MAX + 1,
            max: FRAME_LEN_MAX
        })
    );
    assert_eq!(buf.capacity(), 4);
    let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
    assert!(matches!(
        decoder.decode_event(&mut buf),
        Err(DecodeError::FrameTooLong { len: u32::MAX, .. })
    ));
    assert_eq!(buf.len(), 4);
}

#[test]
fn length_at_the_limit_is_accepted_and_reserved_once() {
    let mut decoder = Decoder::with_frame_len_max(5000);
    assert_eq!(decoder.frame_len_max(), 5000);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&5000u32.to_le_bytes());
    buf.extend_from_slice(&[0x03, 1, 0, 0, 0, 2, 0, 0, 0]);
    assert_eq!(decoder.decode_request(&mut buf), Ok(None));
    assert!(buf.capacity() >= 5004);
    buf.extend_from_slice(&vec![7u8; 5000 - 9]);
    let Some(Request::TalkFrame {
        stream,
        seq,
        payload,
    }) = decoder.decode_request(&mut buf).unwrap()
    else {
        panic!("expected a talk frame");
    };
    assert_eq!((stream, seq, payload.len()), (1, 2, 4991));
    assert!(buf.is_empty());
    // One more byte of length is one too many.
    let mut buf = BytesMut::from(&5001u32.to_le_bytes()[..]);
    assert_eq!(
        decoder.decode_request(&mut buf),
        Err(DecodeError::FrameTooLong {
            len: 5001,
            max: 5000
        })
    );
}

#[test]
fn decoder_limit_is_clamped_to_the_protocol_range() {
    assert_eq!(
        Decoder::with_frame_len_max(0).frame_len_max(),
        FRAME_LEN_MAX_MIN
    );
    assert_eq!(
        Decoder::with_frame_len_max(u32::MAX).frame_len_max(),
        FRAME_LEN_MAX
    );
    assert_eq!(Decoder::default().frame_len_max(), FRAME_LEN_MAX);
}

#[test]
fn malformed_bodies_are_typed_errors_that_consume_the_frame() {
    let mut decoder = Decoder::new();
    let cases: &[(&[u8], DecodeError)] = &[
        (&[0, 0, 0, 0], DecodeError::FrameEmpty),
        (
            &[1, 0, 0, 0, 0x7f],
            DecodeError::UnknownType { type_code: 0x7f },
        ),
        // An event type sent as a request.
        (
            &[1, 0, 0, 0, 0x47],
            DecodeError::UnknownType { type_code: 0x47 },
        ),
        (
            &[3, 0, 0, 0, 0x03, 1, 2],
            DecodeError::Truncated {
                message: "talk frame",
                field: "stream",
            },
        ),
        (
            &[2, 0, 0, 0, 0x06, 1],
            DecodeError::Truncated {
                message: "unlisten",
                field: "sub",
            },
        ),
        (
            &[6, 0, 0, 0, 0x06, 1, 0, 0, 0, 9],
            DecodeError::TrailingBytes {
                message: "unlisten",
                extra: 1,
            },
        ),
        // Listen with an undefined `from` tag.
        (
            &[9, 0, 0, 0, 0x05, 1, 0, 0, 0, 1, 0, b'a', 3],
            DecodeError::InvalidTag {
                field: "from",
                value: 3,
            },
        ),
        // Listen with a conversation name holding a newline.
        (
            &[9, 0, 0, 0, 0x05, 1, 0, 0, 0, 1, 0, b'\n', 0],
            DecodeError::InvalidConvName(crate::ids::IdError::ConvNameControl { at: 0 }),
        ),
        // Hello whose token length is above the limit.
        (
            &[5, 0, 0, 0, 0x01, 1, 0, 0x01, 0x08],
            DecodeError::FieldTooLong {
                field: "token",
                len: 2049,
                max: TOKEN_LEN_MAX,
            },
        ),
        // Hello whose client name is not UTF-8.
        (
            &[8, 0, 0, 0, 0x01, 1, 0, 0, 0, 1, 0, 0xff],
            DecodeError::InvalidUtf8 {
                field: "client name",
            },
        ),
    ];
    for (wire, expected) in cases {
        let mut buf = BytesMut::from(*wire);
        assert_eq!(
            decoder.decode_request(&mut buf).as_ref(),
            Err(expected),
            "{wire:?}"
        );
        let consumed = wire.len() - buf.len();
        let refused = matches!(expected, DecodeError::FrameEmpty);
        assert_eq!(consumed, if refused { 0 } else { wire.len() }, "{wire:?}");
    }
}

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
fn history_page_count_above_the_limit_is_refused_before_allocating() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&7u32.to_le_bytes());
    buf.extend_from_slice(&[0x4b, 1, 0, 0, 0]);
    buf.extend_from_slice(&u16::MAX.to_le_bytes());
    assert_eq!(
        Decoder::new().decode_event(&mut buf),
        Err(DecodeError::FieldTooLong {
            field: "entries",
            len: usize::from(u16::MAX),
            max: HISTORY_ENTRIES_MAX
        })
    );
}

#[test]
fn audio_frames_have_a_13_byte_header_and_share_the_input() {
    let frame = encode_frame_event(7, 42, FrameKind::Replay, &[0xaa; 100]).unwrap();
    assert_eq!(frame.len(), AUDIO_FRAME_HEADER_LEN + 100);
    let mut buf = BytesMut::from(&frame[..]);
    let input_ptr = buf.as_ptr();
    let Some(Event::Frame {
        stream,
        seq,
        kind,
        payload,
    }) = Decoder::new().decode_event(&mut buf).unwrap()
    else {
        panic!("expected a frame event");
    };
    assert_eq!((stream, seq, kind), (7, 42, FrameKind::Replay));
    // The payload is a slice of the input buffer, not a copy.
    assert_eq!(
        payload.as_ptr(),
        input_ptr.wrapping_add(AUDIO_FRAME_HEADER_LEN)
    );
    assert_eq!(&payload[..], &[0xaa; 100][..]);
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
