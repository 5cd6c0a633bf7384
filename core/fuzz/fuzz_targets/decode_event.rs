//! Fuzzes `Decoder::decode_event`: a client's parser of relay bytes.
#![no_main]

mod common;

use hark_core::protocol::encode_event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::check(data, |decoder, buf| {
        Ok(decoder.decode_event(buf)?.map(|event| {
            // A decoded event is within every limit, so it must encode.
            encode_event(&event)
                .expect("decoded events re-encode")
                .to_vec()
        }))
    });
});
