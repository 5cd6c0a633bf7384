//! Fuzzes `Keyring::parse`, the reader of the secret file the relay and the CLI share.
#![no_main]

use hark_core::token::Keyring;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ring) = Keyring::parse(text) {
        // Whatever parses renders to a file that parses to the same keys.
        let again = Keyring::parse(&ring.render()).expect("a rendered keyring parses");
        assert!(again.key_ids().eq(ring.key_ids()));
        assert_eq!(again.minting_key_id(), ring.minting_key_id());
    }
});
