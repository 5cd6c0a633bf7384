//! Every kind of malformed input gives its typed error, and no input panics or makes the
//! decoder reserve more than one maximal frame.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::doc_examples::link_examples;
use super::strategies::link_frame;
use crate::protocol::{DecodeError, EncodeError, FRAME_LEN_MAX, Request, TOKEN_LEN_MAX};
use crate::shard::peer_wire::*;
use crate::shard::{ConnId, MapVersion, PeerMessage};

const CONN: ConnId = ConnId {
    index: 3,
    generation: 1,
};

/// A whole frame of `type_code` around `body`.
fn frame(type_code: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32_le(1 + body.len() as u32);
    buf.put_u8(type_code);
    buf.put_slice(body);
    buf
}

fn decode_one(mut wire: BytesMut) -> Result<Option<LinkFrame>, PeerWireError> {
    LinkDecoder::new().decode(&mut wire)
}

fn encoded(frame: &LinkFrame) -> BytesMut {
    let mut wire = BytesMut::new();
    encode_link_frame(frame, &mut wire).expect("within every limit");
    wire
}

#[test]
fn a_length_over_the_limit_is_refused_before_the_body_arrives() {
    let mut buf = BytesMut::with_capacity(4);
    buf.put_u32_le(PEER_FRAME_LEN_MAX + 1);
    let capacity = buf.capacity();
    assert_eq!(
        LinkDecoder::new().decode(&mut buf),
        Err(PeerWireError::FrameTooLong {
            len: PEER_FRAME_LEN_MAX + 1,
            max: PEER_FRAME_LEN_MAX
        })
    );
    assert_eq!(
        (buf.len(), buf.capacity()),
        (4, capacity),
        "nothing reserved or consumed"
    );

    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        LinkDecoder::new().decode(&mut buf),
        Err(PeerWireError::FrameTooLong { len: u32::MAX, .. })
    ));
    assert_eq!(buf.capacity(), 4);
}

#[test]
fn a_length_at_the_limit_waits_for_its_body() {
    let mut buf = BytesMut::new();
    buf.put_u32_le(PEER_FRAME_LEN_MAX);
    buf.put_u8(0xa4);
    assert_eq!(LinkDecoder::new().decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 5);
}

#[test]
fn a_zero_length_is_refused() {
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 0x80][..]);
    assert_eq!(
        LinkDecoder::new().decode(&mut buf),
        Err(PeerWireError::FrameEmpty)
    );
    assert_eq!(buf.len(), 5);
}

#[test]
fn unknown_and_handshake_types_are_refused_after_the_handshake() {
    for type_code in [0x00, 0x01, 0x47, 0x83, 0x90, 0x91, 0x92, 0xa7, 0xff] {
        assert_eq!(
            decode_one(frame(type_code, &[0; 8])),
            Err(PeerWireError::UnknownType { type_code }),
            "type 0x{type_code:02x}"
        );
    }
}

#[test]
fn every_fixed_layout_frame_cut_short_is_truncated() {
    for (title, example) in link_examples() {
        let wire = encoded(&example);
        let body = &wire[5..];
        for cut in 0..body.len() {
            let result = decode_one(frame(wire[4], &body[..cut]));
            match title {
                // A deliver cut inside its event holds a cut event; a request cut after its
                // map holds a cut client frame.
                "deliver" if cut == 8 => {
                    // Just the conn: a delivery of no event, which is valid.
                    assert!(result.is_ok(), "{title} cut at {cut}");
                    continue;
                }
                "deliver" if cut > 8 => {
                    assert_eq!(
                        result,
                        Err(PeerWireError::DeliverNotWholeEvents { at: 0 }),
                        "{title} cut at {cut}"
                    );
                    continue;
                }
                "request" if cut > 24 => {
                    assert!(
                        matches!(
                            result,
                            Err(PeerWireError::Truncated {
                                message: "request",
                                field: "client_request"
                            })
                        ),
                        "{title} cut at {cut}: {result:?}"
                    );
                    continue;
                }
                _ => {}
            }
            assert!(
                matches!(result, Err(PeerWireError::Truncated { .. })),
                "{title} cut at {cut}: {result:?}"
            );
        }
    }
}

#[test]
fn every_frame_with_a_byte_too_many_is_refused() {
    for (title, example) in link_examples() {
        let wire = encoded(&example);
        let mut body = wire[5..].to_vec();
        body.push(0);
        let result = decode_one(frame(wire[4], &body));
        match title {
            "deliver" => assert_eq!(
                result,
                Err(PeerWireError::DeliverNotWholeEvents { at: 16 }),
                "{title}"
            ),
            _ => assert!(
                matches!(result, Err(PeerWireError::TrailingBytes { extra: 1, .. })),
                "{title}: {result:?}"
            ),
        }
    }
}

/// An attach body around a grant's raw fields.
fn attach(subject: &[u8], rights: u8, kind: u8, scope: &[u8]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u32_le(CONN.index);
    body.put_u32_le(CONN.generation);
    body.put_u64_le(42);
    body.put_u16_le(subject.len() as u16);
    body.put_slice(subject);
    body.put_u8(rights);
    body.put_u8(kind);
    body.put_u16_le(scope.len() as u16);
    body.put_slice(scope);
    body.put_u64_le(1_900_000_000);
    body.put_u32_le(1);
    frame(0xa0, &body)
}

#[test]
fn bad_grant_fields_are_named() {
    let grant_invalid = |field| move |result: Result<Option<LinkFrame>, PeerWireError>| matches!(result, Err(PeerWireError::GrantInvalid { field: f, .. }) if f == field);
    let subject = grant_invalid("subject");
    assert!(subject(decode_one(attach(b"", 3, 1, b"team/"))));
    assert!(subject(decode_one(attach(b"al\x07ice", 3, 1, b"team/"))));
    assert!(subject(decode_one(attach(b"\xff\xfe", 3, 1, b"team/"))));
    assert_eq!(
        decode_one(attach(&[b'a'; 65], 3, 1, b"team/")),
        Err(PeerWireError::FieldTooLong {
            field: "grant_subject",
            len: 65,
            max: 64
        })
    );
    assert!(grant_invalid("rights")(decode_one(attach(
        b"alice", 0x10, 1, b""
    ))));
    assert_eq!(
        decode_one(attach(b"alice", 3, 2, b"team/")),
        Err(PeerWireError::InvalidTag {
            field: "grant_scope_kind",
            value: 2
        })
    );
    let scope = grant_invalid("scope");
    assert!(scope(decode_one(attach(b"alice", 3, 0, b""))), "empty name");
    assert!(scope(decode_one(attach(b"alice", 3, 0, b"gen\neral"))));
    assert!(
        scope(decode_one(attach(b"alice", 3, 0, b"\xc3"))),
        "not UTF-8"
    );
    assert!(scope(decode_one(attach(b"alice", 3, 1, b"team\x7f"))));
    assert_eq!(
        decode_one(attach(b"alice", 3, 1, &[b'a'; 256])),
        Err(PeerWireError::FieldTooLong {
            field: "grant_scope",
            len: 256,
            max: 255
        })
    );
    // The same fields, valid: an empty prefix and every right.
    assert!(matches!(
        decode_one(attach(b"alice", 15, 1, b"")),
        Ok(Some(LinkFrame::Peer(PeerMessage::Attach { .. })))
    ));
}

#[test]
fn released_tags_outside_their_range_are_refused() {
    let released = |route: u8, refused: u8| {
        let mut body = vec![3, 0, 0, 0, 1, 0, 0, 0, route];
        body.extend_from_slice(&7u32.to_le_bytes());
        body.push(refused);
        decode_one(frame(0xa5, &body))
    };
    assert_eq!(
        released(2, 0),
        Err(PeerWireError::InvalidTag {
            field: "route",
            value: 2
        })
    );
    assert_eq!(
        released(1, 2),
        Err(PeerWireError::InvalidTag {
            field: "refused",
            value: 2
        })
    );
    assert!(released(1, 0).is_ok());
}

/// A request body around raw client-frame bytes.
fn request(client_frame: &[u8]) -> BytesMut {
    let mut body = vec![3, 0, 0, 0, 1, 0, 0, 0];
    body.extend_from_slice(&[0; 16]);
    body.extend_from_slice(client_frame);
    frame(0xa1, &body)
}

#[test]
fn bad_forwarded_requests_carry_the_client_decoder_error() {
    assert_eq!(
        decode_one(request(&[])),
        Err(PeerWireError::Truncated {
            message: "request",
            field: "client_request"
        })
    );
    // A client talk end whose body stops inside frame_count.
    assert!(matches!(
        decode_one(request(&[5, 0, 0, 0, 0x04, 1, 0, 0, 0])),
        Err(PeerWireError::Request(DecodeError::Truncated { .. }))
    ));
    // An event type is not a request.
    assert_eq!(
        decode_one(request(&[1, 0, 0, 0, 0x4c])),
        Err(PeerWireError::Request(DecodeError::UnknownType {
            type_code: 0x4c
        }))
    );
    assert_eq!(
        decode_one(request(&[0, 0, 0, 0])),
        Err(PeerWireError::Request(DecodeError::FrameEmpty))
    );
    let mut over = (FRAME_LEN_MAX + 1).to_le_bytes().to_vec();
    over.push(0x03);
    assert_eq!(
        decode_one(request(&over)),
        Err(PeerWireError::Request(DecodeError::FrameTooLong {
            len: FRAME_LEN_MAX + 1,
            max: FRAME_LEN_MAX
        }))
    );
    // A client frame announcing more than the link frame holds.
    assert_eq!(
        decode_one(request(&[9, 0, 0, 0, 0x03, 1, 0, 0, 0])),
        Err(PeerWireError::Truncated {
            message: "request",
            field: "client_request"
        })
    );
    // Two client frames where one belongs.
    let ping = [9, 0, 0, 0, 0x08, 1, 0, 0, 0, 0, 0, 0, 0];
    let mut two = ping.to_vec();
    two.extend_from_slice(&ping);
    assert_eq!(
        decode_one(request(&two)),
        Err(PeerWireError::TrailingBytes {
            message: "request",
            extra: ping.len()
        })
    );
    assert!(decode_one(request(&ping)).is_ok());
}

#[test]
fn deliver_bytes_that_are_not_whole_events_are_refused() {
    let deliver = |events: &[u8]| {
        let mut body = vec![3, 0, 0, 0, 1, 0, 0, 0];
        body.extend_from_slice(events);
        decode_one(frame(0xa4, &body))
    };
    let ping_event = [9, 0, 0, 0, 0x4c, 1, 0, 0, 0, 0, 0, 0, 0];
    let mut two = ping_event.to_vec();
    two.extend_from_slice(&ping_event);
    assert!(deliver(&two).is_ok());
    assert!(deliver(&[]).is_ok(), "no event at all is allowed");
    // Cut inside the second event, a zero-length event, an event above the client limit.
    assert_eq!(
        deliver(&two[..20]),
        Err(PeerWireError::DeliverNotWholeEvents { at: 13 })
    );
    assert_eq!(
        deliver(&[0, 0, 0, 0]),
        Err(PeerWireError::DeliverNotWholeEvents { at: 0 })
    );
    let mut over = (FRAME_LEN_MAX + 1).to_le_bytes().to_vec();
    over.resize(4 + FRAME_LEN_MAX as usize + 1, 0);
    assert_eq!(
        deliver(&over),
        Err(PeerWireError::DeliverNotWholeEvents { at: 0 })
    );
}

#[test]
fn encoding_errors_leave_the_output_as_it_was() {
    let mut out = BytesMut::from(&b"queued"[..]);
    let not_events = LinkFrame::Peer(PeerMessage::Deliver {
        conn: CONN,
        bytes: Bytes::from_static(&[1, 2, 3]),
    });
    assert_eq!(
        encode_link_frame(&not_events, &mut out),
        Err(PeerWireError::DeliverNotWholeEvents { at: 0 })
    );
    let token_too_long = LinkFrame::Peer(PeerMessage::Request {
        conn: CONN,
        map: MapVersion {
            epoch: 1,
            checksum: 2,
        },
        request: Request::Hello {
            version: 1,
            token: Bytes::from(vec![0; TOKEN_LEN_MAX + 1]),
            client_name: String::new(),
        },
    });
    assert_eq!(
        encode_link_frame(&token_too_long, &mut out),
        Err(PeerWireError::RequestEncode(EncodeError::FieldTooLong {
            field: "token",
            len: TOKEN_LEN_MAX + 1,
            max: TOKEN_LEN_MAX
        }))
    );
    assert_eq!(&out[..], b"queued");
}

/// Decodes `input` in reads of the given sizes until the end or the first error, checking
/// that the decoder never grows a fresh, exactly sized buffer past twice one maximal frame and
/// reserves nothing for a refused length.
fn assert_decoder_is_robust(input: &[u8], chunk_lens: &[usize]) {
    let mut decoder = LinkDecoder::new();
    let reserve_bound = 2 * (4 + PEER_FRAME_LEN_MAX as usize);
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
            let mut buf = BytesMut::from(&pending[..]);
            let before = buf.len();
            let result = decoder.decode(&mut buf);
            assert!(buf.capacity() <= before.max(reserve_bound));
            match result {
                Ok(Some(frame)) => {
                    let consumed = before - buf.len();
                    // Canonical: what was decoded encodes to the same bytes.
                    assert_eq!(&encoded(&frame)[..], &pending[..consumed]);
                    pending.drain(..consumed);
                }
                Ok(None) => break,
                Err(PeerWireError::FrameTooLong { .. } | PeerWireError::FrameEmpty) => {
                    assert_eq!((buf.len(), buf.capacity()), (before, before));
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_nor_over_reserve(
        input in proptest::collection::vec(any::<u8>(), 0..600),
        chunk_lens in proptest::collection::vec(1usize..64, 1..8),
    ) {
        assert_decoder_is_robust(&input, &chunk_lens);
    }

    #[test]
    fn mutated_valid_frames_never_panic_nor_over_reserve(
        frames in proptest::collection::vec(link_frame(), 1..4),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        chunk_lens in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend_from_slice(&encoded(frame));
        }
        for (at, value) in flips {
            let at = at.index(wire.len());
            wire[at] = value;
        }
        wire.truncate(cut.index(wire.len() + 1));
        assert_decoder_is_robust(&wire, &chunk_lens);
    }
}
