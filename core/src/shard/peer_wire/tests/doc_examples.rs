//! The hex examples of docs/peer-links.md, produced by the real encoder and handshake: if the
//! doc and the code ever disagree, these tests fail and print the bytes the doc must show.

use bytes::{Bytes, BytesMut};

use crate::ids::{ConvName, HostId, ShardId};
use crate::protocol::Request;
use crate::shard::peer_wire::*;
use crate::shard::{ConnId, MapVersion, PeerMessage, RouteReleased};
use crate::token::{ConvPrefix, Grant, KeyId, Keyring, Right, Rights, Scope, SecretKey, Subject};

const DOC: &str = include_str!("../../../../../docs/peer-links.md");

/// The example keyring's only key: 32 bytes of 0x07, id 1.
pub(super) const EXAMPLE_KEY: [u8; 32] = [7; 32];

pub(super) fn example_keyring() -> Keyring {
    Keyring::new(KeyId(1), SecretKey::from_bytes(EXAMPLE_KEY))
}

pub(super) const EXAMPLE_MAP: MapVersion = MapVersion {
    epoch: 5,
    checksum: 0x1122_3344_5566_7788,
};

const CONN: ConnId = ConnId {
    index: 3,
    generation: 1,
};

/// One frame of each kind, titled as in the doc.
pub(super) fn link_examples() -> Vec<(&'static str, LinkFrame)> {
    let peer = LinkFrame::Peer;
    vec![
        (
            "ping",
            LinkFrame::Ping {
                map: EXAMPLE_MAP,
                sent_us: 1_767_225_600_000_000,
            },
        ),
        (
            "pong",
            LinkFrame::Pong {
                map: EXAMPLE_MAP,
                echo_us: 1_767_225_600_000_000,
            },
        ),
        (
            "goodbye",
            LinkFrame::Goodbye {
                reason: GoodbyeReason::DRAINING,
            },
        ),
        (
            "attach",
            peer(PeerMessage::Attach {
                conn: CONN,
                session_id: 42,
                grant: Grant {
                    subject: Subject::new("alice").expect("a valid literal subject"),
                    rights: Rights::of(&[Right::Talk, Right::Listen]),
                    scope: Scope::Prefix(ConvPrefix::new("team/").expect("a valid prefix")),
                    expires_at_s: 1_900_000_000,
                    key_id: KeyId(1),
                },
            }),
        ),
        (
            "request",
            peer(PeerMessage::Request {
                conn: CONN,
                map: EXAMPLE_MAP,
                request: Request::TalkFrame {
                    stream: 1,
                    seq: 0,
                    payload: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
                },
            }),
        ),
        ("written", peer(PeerMessage::Written { conn: CONN, n: 16 })),
        ("detach", peer(PeerMessage::Detach { conn: CONN })),
        (
            "deliver",
            peer(PeerMessage::Deliver {
                conn: CONN,
                // The client event `frame (live)` of docs/protocol.md.
                bytes: Bytes::from_static(&[
                    0x0c, 0, 0, 0, 0x47, 9, 0, 0, 0, 0, 0, 0, 0, 0xfc, 0xff, 0xfe,
                ]),
            }),
        ),
        (
            "released",
            peer(PeerMessage::Released {
                conn: CONN,
                route: RouteReleased::TalkStream(1),
                refused: true,
            }),
        ),
        ("close", peer(PeerMessage::Close { conn: CONN })),
    ]
}

/// The dialer of the example handshake: shard 1/0 dials shard 2/3.
pub(super) fn example_dialer(out: &mut BytesMut) -> DialerHandshake {
    DialerHandshake::start(
        &LinkKeys::derive(&example_keyring()),
        KeyId(1),
        ShardId::new(1, 0),
        ShardId::new(2, 3),
        HostState {
            generation: 2,
            map: EXAMPLE_MAP,
        },
        [0x11; LINK_NONCE_LEN],
        out,
    )
    .expect("the example keyring holds key 1")
}

/// The acceptor of the example handshake: host 2.
pub(super) fn example_acceptor() -> AcceptorHandshake {
    AcceptorHandshake::new(
        &LinkKeys::derive(&example_keyring()),
        HostId(2),
        HostState {
            generation: 9,
            map: EXAMPLE_MAP,
        },
        [0x22; LINK_NONCE_LEN],
    )
}

/// The three handshake messages of the example, in order.
fn handshake_examples() -> Vec<(&'static str, Bytes)> {
    let mut hello = BytesMut::new();
    let mut dialer = example_dialer(&mut hello);
    let mut acceptor = example_acceptor();
    let mut welcome = BytesMut::new();
    let none = acceptor
        .handle_input(&mut hello.clone(), &mut welcome)
        .expect("the example hello is accepted");
    assert_eq!(none, None);
    let mut proof = BytesMut::new();
    dialer
        .handle_input(&mut welcome.clone(), &mut proof)
        .expect("the example welcome checks out")
        .expect("the welcome is whole");
    acceptor
        .handle_input(&mut proof.clone(), &mut BytesMut::new())
        .expect("the example proof checks out")
        .expect("the proof is whole");
    vec![
        ("link_hello", hello.freeze()),
        ("link_welcome", welcome.freeze()),
        ("link_proof", proof.freeze()),
    ]
}

/// Lines of 16 lowercase hex bytes separated by spaces.
fn hex_lines(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn all_examples() -> Vec<(&'static str, Bytes)> {
    let mut examples: Vec<(&'static str, Bytes)> = link_examples()
        .into_iter()
        .map(|(title, frame)| {
            let mut buf = BytesMut::new();
            encode_link_frame(&frame, &mut buf).expect("the examples are within every limit");
            (title, buf.freeze())
        })
        .collect();
    examples.extend(handshake_examples());
    let link_key = blake3::derive_key(LINK_KEY_CONTEXT, &EXAMPLE_KEY);
    examples.push(("link key", Bytes::copy_from_slice(&link_key)));
    examples
}

#[test]
fn doc_hex_examples_match_the_code() {
    let mut stale = Vec::new();
    for (title, wire) in all_examples() {
        let block = format!("```text\n{}\n```", hex_lines(&wire));
        if !DOC.contains(&block) {
            stale.push(format!("{title}:\n{block}"));
        }
    }
    assert!(
        stale.is_empty(),
        "docs/peer-links.md must show these blocks:\n\n{}",
        stale.join("\n\n")
    );
}

#[test]
fn doc_link_examples_decode_back() {
    for (title, frame) in link_examples() {
        let mut wire = BytesMut::new();
        encode_link_frame(&frame, &mut wire).expect("the examples are within every limit");
        let decoded = LinkDecoder::new().decode(&mut wire);
        assert_eq!(decoded, Ok(Some(frame)), "{title}");
        assert!(wire.is_empty(), "{title}");
    }
}

#[test]
fn doc_grant_example_is_a_valid_conversation_scope_too() {
    // The doc's attach uses a prefix scope; a conversation scope differs only in its kind byte.
    let name = ConvName::new("team/ops").expect("a valid literal name");
    let grant = Grant {
        subject: Subject::new("alice").expect("a valid literal subject"),
        rights: Rights::of(&[Right::Talk]),
        scope: Scope::Conversation(name),
        expires_at_s: 1,
        key_id: KeyId(1),
    };
    let frame = LinkFrame::Peer(PeerMessage::Attach {
        conn: CONN,
        session_id: 1,
        grant,
    });
    let mut wire = BytesMut::new();
    encode_link_frame(&frame, &mut wire).expect("within every limit");
    // len, type, conn, session, subject (2 + 5), rights, kind: the kind byte is at 29.
    assert_eq!(wire[29], 0);
    assert_eq!(LinkDecoder::new().decode(&mut wire), Ok(Some(frame)));
}
