//! What both decoder targets check on arbitrary input.
//!
//! The input's first byte picks how the rest is split into socket reads (1 to 32 bytes,
//! cycling), so libFuzzer explores message boundaries as well as contents. For every read the
//! harness decodes until the decoder wants more or fails, and checks:
//! * no panic (libFuzzer reports one as a crash);
//! * the decoder never grows a fresh, exactly sized buffer past twice one maximal frame, and
//!   reserves nothing for a refused length;
//! * every decoded message encodes back to exactly the bytes it was decoded from (the
//!   encoding is canonical, so a decoder that accepts something the encoder would not write,
//!   or loses a field, is caught).

use bytes::BytesMut;
use hark_core::protocol::{DecodeError, Decoder, FRAME_LEN_MAX_MIN};

/// A small limit, so oversized lengths are reachable with short inputs.
const FRAME_LEN_MAX: u32 = FRAME_LEN_MAX_MIN;

/// Runs the checks; `decode` decodes one message and returns its re-encoding.
pub fn check(
    data: &[u8],
    mut decode: impl FnMut(&mut Decoder, &mut BytesMut) -> Result<Option<Vec<u8>>, DecodeError>,
) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::with_frame_len_max(FRAME_LEN_MAX);
    let reserve_bound = 2 * (4 + FRAME_LEN_MAX as usize);
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
            let result = decode(&mut decoder, &mut buf);
            assert!(buf.capacity() <= before.max(reserve_bound));
            match result {
                Ok(Some(reencoded)) => {
                    let consumed = before - buf.len();
                    assert_eq!(&pending[..consumed], &reencoded[..], "not canonical");
                    pending.drain(..consumed);
                }
                Ok(None) => break,
                Err(DecodeError::FrameTooLong { .. } | DecodeError::FrameEmpty) => {
                    assert_eq!((buf.len(), buf.capacity()), (before, before));
                    return;
                }
                Err(_) => return,
            }
        }
    }
}
