//! proptest strategies for every link frame, and helpers shared by the tests.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::ids::ConvName;
use crate::protocol::tests::strategies::{event, request};
use crate::protocol::write_event;
use crate::shard::peer_wire::{GoodbyeReason, LinkDecoder, LinkFrame, PeerWireError};
use crate::shard::{ConnId, MapVersion, PeerMessage, RouteReleased};
use crate::token::{ConvPrefix, Grant, KeyId, Rights, Scope, Subject};

pub(super) fn conn() -> impl Strategy<Value = ConnId> {
    (any::<u32>(), any::<u32>()).prop_map(|(index, generation)| ConnId { index, generation })
}

pub(super) fn map() -> impl Strategy<Value = MapVersion> {
    (any::<u64>(), any::<u64>()).prop_map(|(epoch, checksum)| MapVersion { epoch, checksum })
}

fn grant() -> impl Strategy<Value = Grant> {
    let subject = "[^\\x00-\\x1f\\x7f]{1,24}"
        .prop_filter_map("subject over 64 bytes", |s| Subject::new(s).ok());
    let scope = prop_oneof![
        "[^\\x00-\\x1f\\x7f]{1,40}"
            .prop_filter_map("name over 255 bytes", |s| ConvName::new(s).ok())
            .prop_map(Scope::Conversation),
        "[^\\x00-\\x1f\\x7f]{0,40}"
            .prop_filter_map("prefix over 255 bytes", |s| ConvPrefix::new(s).ok())
            .prop_map(Scope::Prefix),
    ];
    (subject, 0u8..16, scope, any::<u64>(), any::<u32>()).prop_map(
        |(subject, rights, scope, expires_at_s, key_id)| Grant {
            subject,
            // 0..16 are exactly the known bits.
            rights: Rights::from_bits(rights).expect("bits below 16 are known rights"),
            scope,
            expires_at_s,
            key_id: KeyId(key_id),
        },
    )
}

/// Whole encoded client events, as an owner shard delivers them.
fn events() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(event(), 0..4).prop_map(|events| {
        let mut buf = BytesMut::new();
        for event in &events {
            write_event(event, &mut buf).expect("generated events are within every limit");
        }
        buf.freeze()
    })
}

fn peer_message() -> impl Strategy<Value = PeerMessage> {
    prop_oneof![
        (conn(), any::<u64>(), grant()).prop_map(|(conn, session_id, grant)| {
            PeerMessage::Attach {
                conn,
                session_id,
                grant,
            }
        }),
        (conn(), map(), request()).prop_map(|(conn, map, request)| PeerMessage::Request {
            conn,
            map,
            request
        }),
        (conn(), any::<usize>()).prop_map(|(conn, n)| PeerMessage::Written { conn, n }),
        conn().prop_map(|conn| PeerMessage::Detach { conn }),
        (conn(), events()).prop_map(|(conn, bytes)| PeerMessage::Deliver { conn, bytes }),
        (conn(), any::<bool>(), any::<u32>(), any::<bool>()).prop_map(
            |(conn, talk, handle, refused)| PeerMessage::Released {
                conn,
                route: if talk {
                    RouteReleased::TalkStream(handle)
                } else {
                    RouteReleased::Sub(handle)
                },
                refused,
            }
        ),
        conn().prop_map(|conn| PeerMessage::Close { conn }),
    ]
}

pub(super) fn link_frame() -> impl Strategy<Value = LinkFrame> {
    prop_oneof![
        4 => peer_message().prop_map(LinkFrame::Peer),
        1 => (map(), any::<u64>()).prop_map(|(map, sent_us)| LinkFrame::Ping { map, sent_us }),
        1 => (map(), any::<u64>()).prop_map(|(map, echo_us)| LinkFrame::Pong { map, echo_us }),
        1 => any::<u16>().prop_map(|r| LinkFrame::Goodbye { reason: GoodbyeReason(r) }),
    ]
}

/// Feeds `wire` to a fresh decoder in chunks of the given sizes (cycled), collecting every
/// frame; the input must be used up.
pub(super) fn decode_in_chunks(
    wire: &[u8],
    chunk_lens: &[usize],
) -> Result<Vec<LinkFrame>, PeerWireError> {
    let mut decoder = LinkDecoder::new();
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
        while let Some(frame) = decoder.decode(&mut buf)? {
            out.push(frame);
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    Ok(out)
}
