//! Round trips of every message, under any split of the input.

use bytes::BytesMut;
use proptest::prelude::*;

use super::strategies::{event, request};
use crate::protocol::*;

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
