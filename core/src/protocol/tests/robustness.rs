//! The decoder on arbitrary, mutated, truncated and oversized input: typed errors, no panic,
//! no reservation beyond one maximal frame.

use bytes::BytesMut;
use proptest::prelude::*;

use super::strategies::request;
use crate::protocol::*;

proptest! {
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
