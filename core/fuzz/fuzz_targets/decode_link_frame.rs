//! Fuzzes `LinkDecoder::decode`: a host's parser of the bytes another host sends on a peer
//! link after the handshake.
//!
//! The input's first byte picks how the rest is split into socket reads (1 to 32 bytes,
//! cycling). For every read the harness decodes until the decoder wants more or fails, and
//! checks: no panic; the decoder never grows a fresh, exactly sized buffer past twice one
//! maximal frame and reserves nothing for a refused length; every decoded frame encodes back
//! to exactly the bytes it was decoded from (the encoding is canonical).
#![no_main]

use bytes::BytesMut;
use hark_core::shard::peer_wire::{
    LinkDecoder, PEER_FRAME_LEN_MAX, PeerWireError, encode_link_frame,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let mut decoder = LinkDecoder::new();
    let reserve_bound = 2 * (4 + PEER_FRAME_LEN_MAX as usize);
    let read_lens = [1usize, 2, 3, 5, 8, 13, 21, 32];
    let mut read = (split as usize) % read_lens.len();
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let len = read_lens[read].min(input.len() - at);
        read = (read + 1 + (split as usize >> 3)) % read_lens.len();
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
                    let mut out = BytesMut::new();
                    // A decoded frame is within every limit, so it must encode.
                    encode_link_frame(&frame, &mut out).expect("decoded frames re-encode");
                    assert_eq!(&pending[..consumed], &out[..], "not canonical");
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
});
