//! Fuzzes `Decoder::decode_request`: the relay's parser of untrusted client bytes.
#![no_main]

mod common;

use bytes::BytesMut;
use hark_core::protocol::encode_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::check(data, |decoder, buf| {
        Ok(decoder.decode_request(buf)?.map(|request| {
            let mut out = BytesMut::new();
            // A decoded request is within every limit, so it must encode.
            encode_request(&request, &mut out).expect("decoded requests re-encode");
            out.to_vec()
        }))
    });
});
