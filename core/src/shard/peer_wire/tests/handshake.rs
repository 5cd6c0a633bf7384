//! The link handshake: success both ways and in any split, and every refusal.

use bytes::{BufMut, BytesMut};

use super::doc_examples::{EXAMPLE_MAP, example_acceptor, example_dialer, example_keyring};
use crate::ids::{HostId, ShardId};
use crate::shard::peer_wire::*;
use crate::shard::{ConnId, MapVersion, PeerMessage};
use crate::token::{KeyId, Keyring, SecretKey};

/// What one run of the three messages produced.
struct Run {
    hello: BytesMut,
    welcome: BytesMut,
    dialer: Result<Option<Established>, PeerWireError>,
    proof: BytesMut,
    acceptor: Result<Option<Established>, PeerWireError>,
}

/// Runs a handshake, letting `tamper` change each message in flight (0 hello, 1 welcome,
/// 2 proof). Stops at the first side that refuses.
fn run(
    mut dialer: DialerHandshake,
    mut hello: BytesMut,
    mut acceptor: AcceptorHandshake,
    mut tamper: impl FnMut(usize, &mut BytesMut),
) -> Run {
    tamper(0, &mut hello);
    let mut welcome = BytesMut::new();
    let accepted = acceptor.handle_input(&mut hello.clone(), &mut welcome);
    let mut run = Run {
        hello,
        welcome: BytesMut::new(),
        dialer: Ok(None),
        proof: BytesMut::new(),
        acceptor: accepted,
    };
    if run.acceptor.is_err() {
        return run;
    }
    assert_eq!(run.acceptor, Ok(None), "the acceptor waits for the proof");
    tamper(1, &mut welcome);
    let mut proof = BytesMut::new();
    run.dialer = dialer.handle_input(&mut welcome.clone(), &mut proof);
    run.welcome = welcome;
    if run.dialer.is_err() {
        return run;
    }
    tamper(2, &mut proof);
    run.acceptor = acceptor.handle_input(&mut proof.clone(), &mut BytesMut::new());
    run.proof = proof;
    run
}

fn example_run(tamper: impl FnMut(usize, &mut BytesMut)) -> Run {
    let mut hello = BytesMut::new();
    let dialer = example_dialer(&mut hello);
    run(dialer, hello, example_acceptor(), tamper)
}

#[test]
fn both_sides_establish_with_each_others_identity() {
    let run = example_run(|_, _| {});
    assert_eq!(
        run.dialer,
        Ok(Some(Established {
            local: ShardId::new(1, 0),
            peer: ShardId::new(2, 3),
            peer_generation: 9,
            peer_map: EXAMPLE_MAP,
            key_id: KeyId(1),
        }))
    );
    assert_eq!(
        run.acceptor,
        Ok(Some(Established {
            local: ShardId::new(2, 3),
            peer: ShardId::new(1, 0),
            peer_generation: 2,
            peer_map: EXAMPLE_MAP,
            key_id: KeyId(1),
        }))
    );
    assert_eq!(
        (run.hello.len(), run.welcome.len(), run.proof.len()),
        (59, 77, 37)
    );
}

#[test]
fn the_other_host_dials_back_with_a_rotated_keyring() {
    // Host 2 holds a second key and mints with it; host 1 verifies with both.
    let mut keyring_2 = example_keyring();
    keyring_2
        .rotate(KeyId(2), SecretKey::from_bytes([9; 32]))
        .expect("room for a second key");
    let mut keyring_1 = example_keyring();
    keyring_1
        .rotate(KeyId(2), SecretKey::from_bytes([9; 32]))
        .expect("room for a second key");
    let map = MapVersion {
        epoch: 6,
        checksum: 1,
    };
    let mut hello = BytesMut::new();
    let dialer = DialerHandshake::start(
        &LinkKeys::derive(&keyring_2),
        keyring_2.minting_key_id(),
        ShardId::new(2, 1),
        ShardId::new(1, 0),
        HostState { generation: 9, map },
        [0x33; LINK_NONCE_LEN],
        &mut hello,
    )
    .expect("the keyring holds its minting key");
    let acceptor = AcceptorHandshake::new(
        &LinkKeys::derive(&keyring_1),
        HostId(1),
        HostState { generation: 2, map },
        [0x44; LINK_NONCE_LEN],
    );
    let run = run(dialer, hello, acceptor, |_, _| {});
    assert!(matches!(
        run.dialer,
        Ok(Some(Established {
            peer_generation: 2,
            key_id: KeyId(2),
            ..
        }))
    ));
    assert!(matches!(
        run.acceptor,
        Ok(Some(Established {
            peer: ShardId {
                host: HostId(2),
                core: 1
            },
            key_id: KeyId(2),
            ..
        }))
    ));
}

#[test]
fn any_split_of_the_input_gives_the_same_handshake_and_leaves_what_follows() {
    let reference = example_run(|_, _| {});
    let mut link_frame = BytesMut::new();
    let ping = LinkFrame::Peer(PeerMessage::Detach {
        conn: ConnId {
            index: 1,
            generation: 1,
        },
    });
    encode_link_frame(&ping, &mut link_frame).expect("within every limit");
    for chunk in 1..=8 {
        let mut hello = BytesMut::new();
        let mut dialer = example_dialer(&mut hello);
        let mut acceptor = example_acceptor();
        // Acceptor: the hello in chunks.
        let mut input = BytesMut::new();
        let mut welcome = BytesMut::new();
        for piece in hello.chunks(chunk) {
            input.extend_from_slice(piece);
            assert_eq!(acceptor.handle_input(&mut input, &mut welcome), Ok(None));
        }
        assert_eq!(welcome, reference.welcome);
        // Dialer: the welcome in chunks.
        let mut input = BytesMut::new();
        let mut proof = BytesMut::new();
        let mut established = None;
        for piece in welcome.chunks(chunk) {
            input.extend_from_slice(piece);
            established = dialer.handle_input(&mut input, &mut proof).unwrap();
        }
        assert_eq!(established, reference.dialer.clone().unwrap());
        // Acceptor: the proof and a pipelined link frame in chunks.
        let mut wire = proof.clone();
        wire.extend_from_slice(&link_frame);
        let mut input = BytesMut::new();
        let mut established = None;
        for piece in wire.chunks(chunk) {
            input.extend_from_slice(piece);
            if established.is_none() {
                established = acceptor
                    .handle_input(&mut input, &mut BytesMut::new())
                    .unwrap();
            }
        }
        assert_eq!(established, reference.acceptor.clone().unwrap());
        assert_eq!(
            LinkDecoder::new().decode(&mut input),
            Ok(Some(ping.clone())),
            "the frame after the proof stays for the link decoder"
        );
    }
}

#[test]
fn a_different_key_under_the_same_id_fails_the_welcome() {
    let mut hello = BytesMut::new();
    let dialer = example_dialer(&mut hello);
    let other = Keyring::new(KeyId(1), SecretKey::from_bytes([8; 32]));
    let acceptor = AcceptorHandshake::new(
        &LinkKeys::derive(&other),
        HostId(2),
        HostState {
            generation: 9,
            map: EXAMPLE_MAP,
        },
        [0x22; LINK_NONCE_LEN],
    );
    let run = run(dialer, hello, acceptor, |_, _| {});
    assert_eq!(run.dialer, Err(PeerWireError::MacInvalid));
}

/// The proof a dialer holding `key` would send for `hello` and the welcome's nonce.
fn proof_with(key: &[u8; 32], hello: &[u8], welcome: &[u8]) -> BytesMut {
    let link_key = blake3::derive_key(LINK_KEY_CONTEXT, key);
    let mut mac = blake3::Hasher::new_keyed(&link_key);
    mac.update(b"dialer");
    mac.update(hello);
    mac.update(&welcome[5..5 + LINK_NONCE_LEN]);
    let mut proof = BytesMut::new();
    proof.put_u32_le(33);
    proof.put_u8(0x92);
    proof.put_slice(mac.finalize().as_bytes());
    proof
}

#[test]
fn an_unknown_key_id_is_answered_like_a_known_one_and_refused_at_the_proof() {
    let stranger = Keyring::new(KeyId(77), SecretKey::from_bytes([5; 32]));
    let mut hello = BytesMut::new();
    let mut dialer = DialerHandshake::start(
        &LinkKeys::derive(&stranger),
        KeyId(77),
        ShardId::new(1, 0),
        ShardId::new(2, 3),
        HostState {
            generation: 2,
            map: EXAMPLE_MAP,
        },
        [0x11; LINK_NONCE_LEN],
        &mut hello,
    )
    .expect("the stranger holds key 77");
    let mut acceptor = example_acceptor();
    let mut welcome = BytesMut::new();
    assert_eq!(
        acceptor.handle_input(&mut hello.clone(), &mut welcome),
        Ok(None),
        "no refusal before the proof"
    );
    assert_eq!(
        (welcome.len(), welcome[4]),
        (77, 0x91),
        "a welcome like any other"
    );
    assert_eq!(
        dialer.handle_input(&mut welcome.clone(), &mut BytesMut::new()),
        Err(PeerWireError::MacInvalid),
        "the decoy MAC is not the stranger's"
    );
    // Whatever proof comes, the acceptor refuses it naming the key id.
    let mut proof = proof_with(&[5; 32], &hello, &welcome);
    assert_eq!(
        acceptor.handle_input(&mut proof, &mut BytesMut::new()),
        Err(PeerWireError::KeyUnknown { key_id: KeyId(77) })
    );
}

#[test]
fn a_dialer_cannot_start_with_a_key_it_does_not_hold() {
    let result = DialerHandshake::start(
        &LinkKeys::derive(&example_keyring()),
        KeyId(2),
        ShardId::new(1, 0),
        ShardId::new(2, 0),
        HostState {
            generation: 1,
            map: EXAMPLE_MAP,
        },
        [0; LINK_NONCE_LEN],
        &mut BytesMut::new(),
    );
    assert_eq!(
        result.err(),
        Some(PeerWireError::KeyUnknown { key_id: KeyId(2) })
    );
}

#[test]
fn a_changed_hello_byte_never_establishes() {
    let hello_len = example_run(|_, _| {}).hello.len();
    for at in 5..hello_len {
        let run = example_run(|step, bytes| {
            if step == 0 {
                bytes[at] ^= 0x01;
            }
        });
        let expected = match at {
            // version
            5 | 6 => Err(PeerWireError::VersionUnsupported {
                version: if at == 5 { 0 } else { 0x0101 },
                supported: 1,
            }),
            // the target host
            15 | 16 => Err(PeerWireError::TargetWrong {
                to: ShardId::new(if at == 15 { 3 } else { 0x0102 }, 3),
                host: HostId(2),
            }),
            // key id, from, to.core, map, generation, nonce: the acceptor's MAC covers the
            // hello it received, which is not the one the dialer sent.
            _ => {
                assert_eq!(run.acceptor, Ok(None), "byte {at}");
                Err(PeerWireError::MacInvalid)
            }
        };
        let outcome = if run.acceptor.is_err() {
            run.acceptor
        } else {
            run.dialer
        };
        assert_eq!(outcome, expected, "hello byte {at}");
    }
}

#[test]
fn a_changed_welcome_byte_fails_its_mac() {
    for at in 5..77 {
        let run = example_run(|step, bytes| {
            if step == 1 {
                bytes[at] ^= 0x80;
            }
        });
        assert_eq!(
            run.dialer,
            Err(PeerWireError::MacInvalid),
            "welcome byte {at}"
        );
    }
}

#[test]
fn a_changed_proof_byte_fails_its_mac() {
    for at in 5..37 {
        let run = example_run(|step, bytes| {
            if step == 2 {
                bytes[at] ^= 0x04;
            }
        });
        assert!(run.dialer.is_ok());
        assert_eq!(
            run.acceptor,
            Err(PeerWireError::MacInvalid),
            "proof byte {at}"
        );
    }
}

#[test]
fn the_welcome_mac_cannot_serve_as_the_proof() {
    let run = example_run(|step, bytes| {
        if step == 2 {
            let mut reflected = BytesMut::new();
            reflected.put_u32_le(33);
            reflected.put_u8(0x92);
            // The welcome's MAC is its last 32 bytes; recompute it for this run.
            let mut hello = BytesMut::new();
            let _ = example_dialer(&mut hello);
            let mut welcome = BytesMut::new();
            let _ = example_acceptor().handle_input(&mut hello, &mut welcome);
            reflected.put_slice(&welcome[welcome.len() - 32..]);
            *bytes = reflected;
        }
    });
    assert_eq!(run.acceptor, Err(PeerWireError::MacInvalid));
}

#[test]
fn a_welcome_of_another_handshake_is_refused() {
    // A welcome recorded for one hello, replayed to a dialer with a fresh nonce.
    let recorded = example_run(|_, _| {}).welcome;
    let mut hello = BytesMut::new();
    let mut dialer = DialerHandshake::start(
        &LinkKeys::derive(&example_keyring()),
        KeyId(1),
        ShardId::new(1, 0),
        ShardId::new(2, 3),
        HostState {
            generation: 2,
            map: EXAMPLE_MAP,
        },
        [0x12; LINK_NONCE_LEN],
        &mut hello,
    )
    .expect("the keyring holds key 1");
    assert_eq!(
        dialer.handle_input(&mut recorded.clone(), &mut BytesMut::new()),
        Err(PeerWireError::MacInvalid)
    );
}

#[test]
fn a_later_version_hello_is_refused_by_version_even_when_longer() {
    let mut body = vec![2, 0];
    body.extend_from_slice(&[0; 100]);
    let mut hello = BytesMut::new();
    hello.put_u32_le(1 + body.len() as u32);
    hello.put_u8(0x90);
    hello.put_slice(&body);
    assert_eq!(
        example_acceptor().handle_input(&mut hello, &mut BytesMut::new()),
        Err(PeerWireError::VersionUnsupported {
            version: 2,
            supported: 1
        })
    );
}

#[test]
fn out_of_order_oversized_and_late_input_is_refused() {
    let mut acceptor = example_acceptor();
    let mut proof_first = BytesMut::from(&[33, 0, 0, 0, 0x92][..]);
    proof_first.put_bytes(0, 32);
    assert_eq!(
        acceptor.handle_input(&mut proof_first, &mut BytesMut::new()),
        Err(PeerWireError::UnknownType { type_code: 0x92 })
    );
    assert_eq!(
        acceptor.handle_input(&mut BytesMut::new(), &mut BytesMut::new()),
        Err(PeerWireError::HandshakeOver),
        "a failed handshake stays failed"
    );

    let mut too_long = BytesMut::from(&(HANDSHAKE_FRAME_LEN_MAX + 1).to_le_bytes()[..]);
    assert_eq!(
        example_acceptor().handle_input(&mut too_long, &mut BytesMut::new()),
        Err(PeerWireError::FrameTooLong {
            len: HANDSHAKE_FRAME_LEN_MAX + 1,
            max: HANDSHAKE_FRAME_LEN_MAX
        })
    );
    assert_eq!(
        too_long.capacity(),
        4,
        "nothing reserved for a refused length"
    );

    let mut short_hello = BytesMut::from(&[3, 0, 0, 0, 0x90, 1, 0][..]);
    assert_eq!(
        example_acceptor().handle_input(&mut short_hello, &mut BytesMut::new()),
        Err(PeerWireError::Truncated {
            message: "link_hello",
            field: "key_id"
        })
    );

    let mut hello = BytesMut::new();
    let mut dialer = example_dialer(&mut hello);
    let mut hello_back = hello.clone();
    assert_eq!(
        dialer.handle_input(&mut hello_back, &mut BytesMut::new()),
        Err(PeerWireError::UnknownType { type_code: 0x90 })
    );
    assert_eq!(
        dialer.handle_input(&mut BytesMut::new(), &mut BytesMut::new()),
        Err(PeerWireError::HandshakeOver)
    );

    let run = example_run(|_, _| {});
    assert!(run.acceptor.is_ok());
    let mut acceptor = example_acceptor();
    let _ = acceptor.handle_input(&mut run.hello.clone(), &mut BytesMut::new());
    let _ = acceptor.handle_input(&mut run.proof.clone(), &mut BytesMut::new());
    assert_eq!(
        acceptor.handle_input(&mut run.proof.clone(), &mut BytesMut::new()),
        Err(PeerWireError::HandshakeOver),
        "an established handshake takes no more input"
    );
}

#[test]
fn debug_output_never_shows_key_bytes() {
    let mut hello = BytesMut::new();
    let dialer = example_dialer(&mut hello);
    let mut acceptor = example_acceptor();
    let _ = acceptor.handle_input(&mut hello, &mut BytesMut::new());
    let keys = LinkKeys::derive(&example_keyring());
    // The example link key starts f7 82 e8 (docs/peer-links.md).
    for text in [
        format!("{dialer:?}"),
        format!("{acceptor:?}"),
        format!("{keys:?}"),
    ] {
        assert!(text.contains("redacted"), "{text}");
        assert!(!text.contains("247, 130, 232"), "{text}");
    }
}
