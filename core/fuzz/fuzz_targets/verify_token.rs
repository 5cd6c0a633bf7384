//! Fuzzes `Keyring::verify` and the token payload parser behind the MAC: each input is used
//! once as raw token text, and once as a payload signed the way docs/tokens.md specifies, so
//! the fuzzer reaches the field parser that an attacker can only reach with a valid MAC.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hark_core::token::{KeyId, Keyring, SecretKey};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [7; 32];
const KEY_ID: u32 = 1;
const NOW_S: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let ring = Keyring::new(KeyId(KEY_ID), SecretKey::from_bytes(KEY));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ring.verify(text, NOW_S);
    }
    // Signed per the documented format: version, key id, key check, then the fuzzer's bytes.
    let check = blake3::derive_key("hark 2026 capability token key check v1", &KEY);
    let mut payload = vec![1u8];
    payload.extend_from_slice(&KEY_ID.to_le_bytes());
    payload.extend_from_slice(&check[..4]);
    payload.extend_from_slice(data);
    let mut keyed = blake3::Hasher::new_keyed(&KEY);
    keyed.update(b"hark token mac v1\0");
    keyed.update(&payload);
    payload.extend_from_slice(keyed.finalize().as_bytes());
    let token = format!("hk1.{}", URL_SAFE_NO_PAD.encode(&payload));
    if let Ok(grant) = ring.verify(&token, NOW_S) {
        // A payload that verifies is canonical: minting its grant gives the same token.
        assert_eq!(ring.mint(&grant).expect("a verified grant mints"), token);
    }
});
