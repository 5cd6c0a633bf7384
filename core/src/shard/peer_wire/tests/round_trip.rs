//! Round trips of every frame under any split of the input, zero-copy payloads, and the
//! Deliver size bound.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::doc_examples::link_examples;
use super::strategies::{decode_in_chunks, link_frame};
use crate::protocol::{FRAME_LEN_MAX, Request, write_talk_frame};
use crate::shard::peer_wire::*;
use crate::shard::{ConnId, MapVersion, PeerMessage};

proptest! {
    #[test]
    fn link_frames_round_trip_under_any_split(
        frames in proptest::collection::vec(link_frame(), 1..6),
        chunk_lens in proptest::collection::vec(1usize..48, 1..8),
    ) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            encode_link_frame(frame, &mut wire).unwrap();
        }
        prop_assert_eq!(decode_in_chunks(&wire, &chunk_lens), Ok(frames));
    }

    #[test]
    fn one_frame_round_trips_split_at_every_byte(frame in link_frame()) {
        let mut wire = BytesMut::new();
        encode_link_frame(&frame, &mut wire).unwrap();
        for cut in 0..=wire.len() {
            let mut decoder = LinkDecoder::new();
            let mut buf = BytesMut::from(&wire[..cut]);
            let first = decoder.decode(&mut buf).unwrap();
            if cut < wire.len() {
                prop_assert_eq!(first, None, "decoded from {} of {} bytes", cut, wire.len());
                buf.extend_from_slice(&wire[cut..]);
                prop_assert_eq!(decoder.decode(&mut buf).unwrap(), Some(frame.clone()));
            } else {
                prop_assert_eq!(first, Some(frame.clone()));
            }
            prop_assert!(buf.is_empty());
        }
    }
}

#[test]
fn every_variant_round_trips_split_at_every_byte() {
    let frames: Vec<LinkFrame> = link_examples().into_iter().map(|(_, f)| f).collect();
    let mut wire = BytesMut::new();
    for frame in &frames {
        encode_link_frame(frame, &mut wire).unwrap();
    }
    for cut in 0..=wire.len() {
        // Two reads: the first `cut` bytes, then the rest.
        let decoded = decode_in_chunks(&wire, &[cut.max(1), wire.len()]);
        assert_eq!(decoded.as_ref(), Ok(&frames), "split at {cut}");
    }
    // And one byte at a time.
    assert_eq!(decode_in_chunks(&wire, &[1]), Ok(frames));
}

/// Whether `inner` lies entirely inside `outer`'s memory.
fn points_into(inner: &[u8], outer: &std::ops::Range<*const u8>) -> bool {
    let range = inner.as_ptr_range();
    outer.start <= range.start && range.end <= outer.end
}

#[test]
fn deliver_bytes_and_talk_payloads_are_slices_of_the_input() {
    let conn = ConnId {
        index: 1,
        generation: 2,
    };
    let mut event = BytesMut::new();
    event.put_u32_le(6);
    event.put_u8(0x4c);
    event.put_slice(&[0xaa; 5]);
    let payload = Bytes::from_static(&[0xfc, 0xff, 0xfe, 0x01]);
    let mut wire = BytesMut::new();
    let deliver = LinkFrame::Peer(PeerMessage::Deliver {
        conn,
        bytes: event.freeze(),
    });
    let forwarded = LinkFrame::Peer(PeerMessage::Request {
        conn,
        map: MapVersion {
            epoch: 3,
            checksum: 4,
        },
        request: Request::TalkFrame {
            stream: 7,
            seq: 8,
            payload: payload.clone(),
        },
    });
    encode_link_frame(&deliver, &mut wire).unwrap();
    encode_link_frame(&forwarded, &mut wire).unwrap();

    let input = wire.as_ptr_range();
    let mut decoder = LinkDecoder::new();
    let Some(LinkFrame::Peer(PeerMessage::Deliver { bytes, .. })) =
        decoder.decode(&mut wire).unwrap()
    else {
        panic!("the first frame is a deliver");
    };
    assert_eq!(bytes.len(), 10);
    assert!(points_into(&bytes, &input), "deliver bytes were copied");
    let Some(LinkFrame::Peer(PeerMessage::Request {
        request: Request::TalkFrame { payload: got, .. },
        ..
    })) = decoder.decode(&mut wire).unwrap()
    else {
        panic!("the second frame is a forwarded talk frame");
    };
    assert_eq!(got, payload);
    assert!(points_into(&got, &input), "talk payload was copied");
}

/// Client events filling exactly `len` bytes (`len` >= 5).
fn events_of_len(mut len: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(len);
    while len > 0 {
        // The largest event, unless what is left needs a smaller one (at least 5 bytes; a
        // remainder below 5 is avoided by shortening the previous event).
        let mut event_len = len.min(4 + FRAME_LEN_MAX as usize);
        if len - event_len != 0 && len - event_len < 5 {
            event_len -= 5;
        }
        buf.put_u32_le((event_len - 4) as u32);
        buf.put_u8(0x47);
        buf.put_bytes(0x5a, event_len - 5);
        len -= event_len;
    }
    buf.freeze()
}

#[test]
fn a_deliver_of_exactly_the_limit_round_trips_and_one_byte_more_is_refused() {
    let conn = ConnId {
        index: 0,
        generation: 0,
    };
    let largest = LinkFrame::Peer(PeerMessage::Deliver {
        conn,
        bytes: events_of_len(PEER_DELIVER_LEN_MAX),
    });
    let mut wire = BytesMut::new();
    encode_link_frame(&largest, &mut wire).unwrap();
    assert_eq!(wire.len(), 4 + PEER_FRAME_LEN_MAX as usize);
    assert_eq!(decode_in_chunks(&wire, &[4096]), Ok(vec![largest]));

    let over = LinkFrame::Peer(PeerMessage::Deliver {
        conn,
        bytes: events_of_len(PEER_DELIVER_LEN_MAX + 1),
    });
    let mut out = BytesMut::from(&b"queued"[..]);
    assert_eq!(
        encode_link_frame(&over, &mut out),
        Err(PeerWireError::DeliverTooLong {
            len: PEER_DELIVER_LEN_MAX + 1,
            max: PEER_DELIVER_LEN_MAX
        })
    );
    assert_eq!(&out[..], b"queued", "the output is left as it was");
}

#[test]
fn split_deliver_cuts_at_event_boundaries_without_copying() {
    let len = 2 * PEER_DELIVER_LEN_MAX + PEER_DELIVER_LEN_MAX / 2;
    let bytes = events_of_len(len);
    let whole = bytes.as_ptr_range();
    let pieces = split_deliver(bytes.clone()).unwrap();
    assert_eq!(pieces.len(), 3);
    let conn = ConnId {
        index: 9,
        generation: 9,
    };
    let mut joined = Vec::with_capacity(len);
    for piece in &pieces {
        assert!(piece.len() <= PEER_DELIVER_LEN_MAX);
        assert!(points_into(piece, &whole), "a piece was copied");
        // Every piece is a valid Deliver on its own.
        let frame = LinkFrame::Peer(PeerMessage::Deliver {
            conn,
            bytes: piece.clone(),
        });
        encode_link_frame(&frame, &mut BytesMut::new()).unwrap();
        joined.extend_from_slice(piece);
    }
    assert_eq!(joined, bytes);

    // Small deliveries stay whole; bytes that are not events are refused.
    let small = events_of_len(100);
    assert_eq!(split_deliver(small.clone()), Ok(vec![small]));
    assert_eq!(split_deliver(Bytes::new()), Ok(vec![Bytes::new()]));
    assert_eq!(
        split_deliver(Bytes::from_static(&[9, 0, 0, 0, 0x4c])),
        Err(PeerWireError::DeliverNotWholeEvents { at: 0 })
    );
}

#[test]
fn a_forwarded_talk_frame_of_the_client_maximum_fits_a_link_frame() {
    let mut client = BytesMut::new();
    let payload = vec![0u8; crate::protocol::AUDIO_PAYLOAD_LEN_MAX];
    write_talk_frame(&mut client, 1, 2, &payload).unwrap();
    let frame = LinkFrame::Peer(PeerMessage::Request {
        conn: ConnId {
            index: 1,
            generation: 1,
        },
        map: MapVersion {
            epoch: 1,
            checksum: 1,
        },
        request: Request::TalkFrame {
            stream: 1,
            seq: 2,
            payload: Bytes::from(payload),
        },
    });
    let mut wire = BytesMut::new();
    encode_link_frame(&frame, &mut wire).unwrap();
    assert_eq!(wire.len(), 4 + 1 + 8 + 16 + client.len());
    assert_eq!(decode_in_chunks(&wire, &[1000]), Ok(vec![frame]));
}
