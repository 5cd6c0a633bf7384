//! Fuzzes the peer link handshake with untrusted bytes. The first input byte picks the mode
//! and how the rest is split into socket reads:
//! * mode 0: an acceptor is fed the bytes from the start (hello parsing, version and target
//!   checks);
//! * mode 1: an acceptor gets a valid hello from a real dialer first, then the bytes (the
//!   proof check, with a known or an unknown key id);
//! * mode 2: a dialer is fed the bytes as the acceptor's answer (welcome parsing and MAC).
//!
//! Checks: no panic; a handshake never establishes on bytes the fuzzer made up (it cannot
//! forge a BLAKE3 keyed MAC); the acceptor answers at most one welcome, of the version 1 size;
//! after an error or an establishment every further input is refused with `HandshakeOver`.
#![no_main]

use bytes::BytesMut;
use hark_core::ids::{HostId, ShardId};
use hark_core::shard::MapVersion;
use hark_core::shard::peer_wire::{
    AcceptorHandshake, DialerHandshake, HostState, LinkKeys, PeerWireError,
};
use hark_core::token::{KeyId, Keyring, SecretKey};
use libfuzzer_sys::fuzz_target;

/// Bytes of a version 1 welcome frame.
const WELCOME_FRAME_LEN: usize = 77;

fn host(generation: u64) -> HostState {
    HostState {
        generation,
        map: MapVersion {
            epoch: 5,
            checksum: 6,
        },
    }
}

/// Feeds `input` in reads picked by `split` until the handshake ends; returns whether it
/// established.
fn feed(
    input: &[u8],
    split: u8,
    mut step: impl FnMut(&mut BytesMut, &mut BytesMut) -> Result<Option<()>, PeerWireError>,
    out: &mut BytesMut,
) -> bool {
    let read_lens = [1usize, 2, 3, 5, 8, 13, 21, 32];
    let mut read = usize::from(split) % read_lens.len();
    let mut buf = BytesMut::new();
    let mut at = 0;
    while at < input.len() {
        let len = read_lens[read].min(input.len() - at);
        read = (read + 1) % read_lens.len();
        buf.extend_from_slice(&input[at..at + len]);
        at += len;
        match step(&mut buf, out) {
            Ok(None) => {}
            Ok(Some(())) => return true,
            Err(_) => {
                assert_eq!(
                    step(&mut buf, out),
                    Err(PeerWireError::HandshakeOver),
                    "a failed handshake stays failed"
                );
                return false;
            }
        }
    }
    false
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let mut keyring = Keyring::new(KeyId(1), SecretKey::from_bytes([7; 32]));
    keyring
        .rotate(KeyId(2), SecretKey::from_bytes([8; 32]))
        .expect("room for a second key");
    let keys = LinkKeys::derive(&keyring);
    let mode = selector % 3;
    let split = selector / 3;
    match mode {
        0 | 1 => {
            let mut acceptor = AcceptorHandshake::new(&keys, HostId(2), host(9), [0x5a; 16]);
            let mut welcome = BytesMut::new();
            if mode == 1 {
                // A real hello (key 1, or a key id the acceptor lacks), accepted.
                let key_id = KeyId(if split & 1 == 0 { 1 } else { 3 });
                let stranger = Keyring::new(key_id, SecretKey::from_bytes([7; 32]));
                let mut hello = BytesMut::new();
                DialerHandshake::start(
                    &LinkKeys::derive(&stranger),
                    key_id,
                    ShardId::new(1, 0),
                    ShardId::new(2, 3),
                    host(2),
                    [0x11; 16],
                    &mut hello,
                )
                .expect("the keyring holds the key");
                let answer = acceptor.handle_input(&mut hello, &mut welcome);
                assert_eq!(answer, Ok(None));
                assert_eq!(welcome.len(), WELCOME_FRAME_LEN);
            }
            let established = feed(
                input,
                split,
                |buf, out| acceptor.handle_input(buf, out).map(|e| e.map(|_| ())),
                &mut welcome,
            );
            assert!(!established, "the fuzzer forged a proof");
            assert!(welcome.is_empty() || welcome.len() == WELCOME_FRAME_LEN);
        }
        _ => {
            let mut hello = BytesMut::new();
            let mut dialer = DialerHandshake::start(
                &keys,
                KeyId(1),
                ShardId::new(1, 0),
                ShardId::new(2, 3),
                host(2),
                [0x11; 16],
                &mut hello,
            )
            .expect("the keyring holds key 1");
            let mut proof = BytesMut::new();
            let established = feed(
                input,
                split,
                |buf, out| dialer.handle_input(buf, out).map(|e| e.map(|_| ())),
                &mut proof,
            );
            assert!(!established, "the fuzzer forged a welcome");
            assert!(proof.is_empty());
        }
    }
});
