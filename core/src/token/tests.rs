//! Token tests: each way a token can be wrong is refused with its own error.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;

use super::*;

const NOW_S: u64 = 1_800_000_000;

fn conv(name: &str) -> ConvName {
    ConvName::new(name).unwrap()
}

fn keyring() -> Keyring {
    Keyring::generate(KeyId(1), [7; 32])
}

fn grant(ring: &Keyring) -> Grant {
    Grant {
        subject: Subject::new("alice").unwrap(),
        rights: Rights::of(&[Right::Talk, Right::Listen]),
        scope: Scope::Prefix(ConvPrefix::new("team/").unwrap()),
        expires_at_s: NOW_S + 3600,
        key_id: ring.minting_key_id(),
    }
}

/// Decodes a token's bytes, applies `edit`, re-encodes.
fn edit_bytes(token: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = URL_SAFE_NO_PAD
        .decode(token.strip_prefix(TOKEN_PREFIX).unwrap())
        .unwrap();
    edit(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[test]
fn a_minted_token_verifies_to_its_grant() {
    let ring = keyring();
    let grant = grant(&ring);
    let token = ring.mint(&grant).unwrap();
    assert!(token.starts_with("hk1."));
    assert_eq!(ring.verify(&token, NOW_S), Ok(grant.clone()));
    let one_conv = Grant {
        scope: Scope::Conversation(conv("général")),
        rights: Rights::ALL,
        ..grant
    };
    let token = ring.mint(&one_conv).unwrap();
    assert_eq!(ring.verify(&token, NOW_S), Ok(one_conv));
}

#[test]
fn a_tampered_token_is_refused() {
    let ring = keyring();
    let token = ring.mint(&grant(&ring)).unwrap();
    // Byte 17 is the rights byte: grant admin to ourselves.
    let tampered = edit_bytes(&token, |b| b[17] |= Right::Admin.bit());
    assert_eq!(
        ring.verify(&tampered, NOW_S),
        Err(TokenError::SignatureInvalid)
    );
    // Extend the expiry.
    let tampered = edit_bytes(&token, |b| b[9] ^= 0xff);
    assert_eq!(
        ring.verify(&tampered, NOW_S),
        Err(TokenError::SignatureInvalid)
    );
    // Flip a MAC bit.
    let tampered = edit_bytes(&token, |b| *b.last_mut().unwrap() ^= 1);
    assert_eq!(
        ring.verify(&tampered, NOW_S),
        Err(TokenError::SignatureInvalid)
    );
}

#[test]
fn an_expired_token_is_refused() {
    let ring = keyring();
    let grant = grant(&ring);
    let token = ring.mint(&grant).unwrap();
    assert!(ring.verify(&token, grant.expires_at_s - 1).is_ok());
    assert_eq!(
        ring.verify(&token, grant.expires_at_s),
        Err(TokenError::Expired {
            expires_at_s: grant.expires_at_s,
            now_s: grant.expires_at_s
        })
    );
    assert!(grant.check_expiry(grant.expires_at_s + 1).is_err());
}

#[test]
fn a_token_from_another_key_with_the_same_id_is_refused() {
    let ring = keyring();
    let other = Keyring::generate(KeyId(1), [8; 32]);
    let token = other.mint(&grant(&other)).unwrap();
    assert_eq!(
        ring.verify(&token, NOW_S),
        Err(TokenError::KeyMismatch { key_id: KeyId(1) })
    );
}

#[test]
fn a_token_with_an_unknown_key_id_is_refused() {
    let ring = keyring();
    let other = Keyring::generate(KeyId(9), [7; 32]);
    let token = other.mint(&grant(&other)).unwrap();
    assert_eq!(
        ring.verify(&token, NOW_S),
        Err(TokenError::KeyUnknown { key_id: KeyId(9) })
    );
    let mut g = grant(&ring);
    g.key_id = KeyId(9);
    assert_eq!(
        ring.mint(&g),
        Err(TokenError::KeyUnknown { key_id: KeyId(9) })
    );
}

#[test]
fn authorize_tells_a_missing_right_from_an_uncovered_conversation() {
    let ring = keyring();
    let grant = ring
        .verify(&ring.mint(&grant(&ring)).unwrap(), NOW_S)
        .unwrap();
    assert_eq!(grant.authorize(Right::Talk, &conv("team/ops")), Ok(()));
    assert_eq!(grant.authorize(Right::Listen, &conv("team/")), Ok(()));
    assert_eq!(
        grant.authorize(Right::History, &conv("team/ops")),
        Err(TokenError::RightMissing(Right::History))
    );
    assert_eq!(
        grant.authorize(Right::Talk, &conv("teamwork")),
        Err(TokenError::OutOfScope(conv("teamwork")))
    );
    let single = Scope::Conversation(conv("lobby"));
    assert!(single.covers(&conv("lobby")));
    assert!(!single.covers(&conv("lobby2")));
    let everything = Scope::Prefix(ConvPrefix::new("").unwrap());
    assert!(everything.covers(&conv("anything at all")));
}

#[test]
fn malformed_texts_are_refused() {
    let ring = keyring();
    assert_eq!(ring.verify("", NOW_S), Err(TokenError::NotAToken));
    assert_eq!(ring.verify("hk2.AAAA", NOW_S), Err(TokenError::NotAToken));
    assert_eq!(
        ring.verify("hk1.!!!!", NOW_S),
        Err(TokenError::Malformed("not base64url without padding"))
    );
    assert_eq!(
        ring.verify("hk1.AAAA", NOW_S),
        Err(TokenError::Malformed("too short"))
    );
    let token = ring.mint(&grant(&ring)).unwrap();
    assert!(matches!(
        ring.verify(&format!("{token}="), NOW_S),
        Err(TokenError::Malformed(_))
    ));
    let version_2 = edit_bytes(&token, |b| b[0] = 2);
    assert_eq!(
        ring.verify(&version_2, NOW_S),
        Err(TokenError::VersionUnsupported(2))
    );
}

#[test]
fn token_length_is_bounded() {
    let ring = keyring();
    let longest = Grant {
        subject: Subject::new("s".repeat(SUBJECT_LEN_MAX)).unwrap(),
        rights: Rights::ALL,
        scope: Scope::Conversation(conv(&"c".repeat(crate::ids::CONV_NAME_LEN_MAX))),
        expires_at_s: u64::MAX,
        key_id: ring.minting_key_id(),
    };
    let token = ring.mint(&longest).unwrap();
    assert_eq!(token.len(), TOKEN_TEXT_LEN_MINTED_MAX);
    const { assert!(TOKEN_TEXT_LEN_MINTED_MAX <= TOKEN_TEXT_LEN_MAX) };
    assert_eq!(ring.verify(&token, NOW_S), Ok(longest));
    let too_long = format!("hk1.{}", "A".repeat(TOKEN_TEXT_LEN_MAX));
    assert_eq!(
        ring.verify(&too_long, NOW_S),
        Err(TokenError::TooLong {
            len: TOKEN_TEXT_LEN_MAX + 4
        })
    );
}

#[test]
fn subjects_and_prefixes_are_validated() {
    assert_eq!(Subject::new(""), Err(TokenError::SubjectInvalid));
    assert_eq!(Subject::new("a\tb"), Err(TokenError::SubjectInvalid));
    assert_eq!(
        Subject::new("s".repeat(65)),
        Err(TokenError::SubjectInvalid)
    );
    assert!(Subject::new("s".repeat(64)).is_ok());
    assert_eq!(
        ConvPrefix::new("x".repeat(256)),
        Err(TokenError::PrefixInvalid)
    );
    assert_eq!(ConvPrefix::new("a\u{7f}"), Err(TokenError::PrefixInvalid));
    assert!(ConvPrefix::new("x".repeat(255)).is_ok());
}

#[test]
fn rights_parse_and_format() {
    assert_eq!("".parse::<Rights>(), Ok(Rights::NONE));
    assert_eq!(
        "admin, talk,talk".parse::<Rights>(),
        Ok(Rights::of(&[Right::Talk, Right::Admin]))
    );
    assert_eq!(Rights::ALL.to_string(), "talk,listen,history,admin");
    assert_eq!(
        "talk,listen,history,admin".parse::<Rights>(),
        Ok(Rights::ALL)
    );
    assert_eq!(
        "talk,shout".parse::<Rights>(),
        Err(TokenError::RightUnknown("shout".into()))
    );
    assert_eq!(Rights::from_bits(0x10), None);
    assert_eq!(Rights::from_bits(0x0f), Some(Rights::ALL));
    assert!(Rights::NONE.is_empty());
}

#[test]
fn rotation_keeps_old_tokens_valid_until_the_key_is_retired() {
    let mut ring = keyring();
    let old = ring.mint(&grant(&ring)).unwrap();
    ring.rotate(KeyId(2), SecretKey::from_entropy([9; 32]))
        .unwrap();
    assert_eq!(ring.minting_key_id(), KeyId(2));
    let new = ring.mint(&grant(&ring)).unwrap();
    assert_eq!(ring.verify(&new, NOW_S).unwrap().key_id, KeyId(2));
    assert_eq!(ring.verify(&old, NOW_S).unwrap().key_id, KeyId(1));
    assert_eq!(
        ring.rotate(KeyId(1), SecretKey::from_entropy([1; 32])),
        Err(KeyringError::KeyIdDuplicated { key_id: KeyId(1) })
    );
    ring.retire(KeyId(1)).unwrap();
    assert_eq!(
        ring.verify(&old, NOW_S),
        Err(TokenError::KeyUnknown { key_id: KeyId(1) })
    );
    assert_eq!(
        ring.retire(KeyId(1)),
        Err(KeyringError::KeyUnknown(KeyId(1)))
    );
    assert_eq!(ring.retire(KeyId(2)), Err(KeyringError::KeyLast(KeyId(2))));
}

#[test]
fn a_keyring_holds_at_most_its_limit() {
    let mut ring = keyring();
    for id in 2..=KEYRING_KEYS_MAX as u32 {
        ring.rotate(KeyId(id), SecretKey::from_entropy([id as u8; 32]))
            .unwrap();
    }
    assert_eq!(ring.key_ids().count(), KEYRING_KEYS_MAX);
    assert_eq!(
        ring.rotate(KeyId(100), SecretKey::from_entropy([0; 32])),
        Err(KeyringError::KeysTooMany)
    );
    let text = ring.render();
    assert_eq!(
        Keyring::parse(&text).unwrap().key_ids().count(),
        KEYRING_KEYS_MAX
    );
    let one_more = format!("{text}key 100 {}\n", "ab".repeat(32));
    assert_eq!(
        Keyring::parse(&one_more).unwrap_err(),
        KeyringError::KeysTooMany
    );
}

#[test]
fn the_secret_file_round_trips() {
    let mut ring = keyring();
    ring.rotate(KeyId(2), SecretKey::from_entropy([3; 32]))
        .unwrap();
    let text = ring.render();
    let back = Keyring::parse(&text).unwrap();
    assert_eq!(back.key_ids().collect::<Vec<_>>(), [KeyId(2), KeyId(1)]);
    let token = ring.mint(&grant(&ring)).unwrap();
    assert_eq!(back.verify(&token, NOW_S), ring.verify(&token, NOW_S));
    assert_eq!(back.mint(&grant(&back)), Ok(token));
}

#[test]
fn the_secret_file_format_is_exact() {
    let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    let text = format!(
        "# comment\n\n   key 42 {hex}  \r\n# another\nkey 7 {}\n",
        "0".repeat(64)
    );
    let ring = Keyring::parse(&text).unwrap();
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), [KeyId(42), KeyId(7)]);
    assert_eq!(ring.minting_key_id(), KeyId(42));
    let rendered = ring.render();
    assert!(rendered.contains(&format!("key 42 {}\n", hex.to_lowercase())));
    assert!(rendered.starts_with('#'));

    let cases: &[(&str, KeyringError)] = &[
        ("", KeyringError::KeysMissing),
        ("# only a comment\n", KeyringError::KeysMissing),
        ("secret 1 00\n", KeyringError::LineInvalid { line: 1 }),
        ("\nkey 1\n", KeyringError::LineInvalid { line: 2 }),
        ("key +1 x\n", KeyringError::KeyIdInvalid { line: 1 }),
        ("key 4294967296 x\n", KeyringError::KeyIdInvalid { line: 1 }),
        ("key 1 abcd\n", KeyringError::KeyHexInvalid { line: 1 }),
    ];
    for (text, error) in cases {
        assert_eq!(Keyring::parse(text).unwrap_err(), *error, "{text:?}");
    }
    let not_hex = format!("key 1 {}zz", "0".repeat(62));
    assert_eq!(
        Keyring::parse(&not_hex).unwrap_err(),
        KeyringError::KeyHexInvalid { line: 1 }
    );
    let extra = format!("key 1 {} extra", "0".repeat(64));
    assert_eq!(
        Keyring::parse(&extra).unwrap_err(),
        KeyringError::LineInvalid { line: 1 }
    );
    let twice = format!("key 1 {0}\nkey 1 {0}\n", "0".repeat(64));
    assert_eq!(
        Keyring::parse(&twice).unwrap_err(),
        KeyringError::KeyIdDuplicated { key_id: KeyId(1) }
    );
    let huge = "#".repeat(SECRET_FILE_LEN_MAX + 1);
    assert_eq!(
        Keyring::parse(&huge).unwrap_err(),
        KeyringError::FileTooLong {
            len: SECRET_FILE_LEN_MAX + 1
        }
    );
}

#[test]
fn secrets_never_reach_debug_output_or_errors() {
    let ring = keyring();
    let text = ring.render();
    let hex_line = text.lines().find(|l| l.starts_with("key")).unwrap();
    let hex = hex_line.split(' ').nth(2).unwrap();
    assert!(!format!("{ring:?}").contains(hex));
    let broken = format!("key 1 {hex} extra");
    assert!(
        !Keyring::parse(&broken)
            .unwrap_err()
            .to_string()
            .contains(hex)
    );
}

/// Reference token, also in docs/tokens.md: key id 1 with bytes 00 01 02 … 1f.
#[test]
fn reference_token() {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let ring = Keyring::new(KeyId(1), SecretKey::from_bytes(key));
    let grant = Grant {
        subject: Subject::new("alice").unwrap(),
        rights: Rights::of(&[Right::Talk, Right::Listen]),
        scope: Scope::Conversation(conv("general")),
        expires_at_s: 1_900_000_000,
        key_id: KeyId(1),
    };
    let token = ring.mint(&grant).unwrap();
    assert_eq!(token, REFERENCE_TOKEN);
    assert_eq!(ring.verify(REFERENCE_TOKEN, 1_800_000_000), Ok(grant));
}

const REFERENCE_TOKEN: &str =
    "hk1.AQEAAACfTG2cALM_cQAAAAADBWFsaWNlAAdnZW5lcmFsTEtuVP7tGTZmR6Vs9yMhqoKCFnbo9BMT9_l9HBD1kVk";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn verify_never_panics_on_any_string(text in ".{0,600}") {
        let ring = keyring();
        prop_assert!(ring.verify(&text, NOW_S).is_err());
        let _ = ring.verify(&format!("hk1.{text}"), NOW_S);
    }

    #[test]
    fn verify_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let ring = keyring();
        let text = format!("hk1.{}", URL_SAFE_NO_PAD.encode(&bytes));
        prop_assert!(ring.verify(&text, NOW_S).is_err());
    }

    #[test]
    fn any_single_bit_flip_is_refused(bit in 0usize..(8 * 80)) {
        let ring = keyring();
        let token = ring.mint(&grant(&ring)).unwrap();
        let flipped = edit_bytes(&token, |b| {
            let bit = bit % (8 * b.len());
            b[bit / 8] ^= 1 << (bit % 8);
        });
        prop_assert!(ring.verify(&flipped, NOW_S).is_err());
    }

    #[test]
    fn secret_file_parse_never_panics(text in "(key|#| |[0-9a-fA-F]{1,70}|\n|\r|\t|x){0,40}") {
        let _ = Keyring::parse(&text);
    }

    #[test]
    fn grants_round_trip(
        subject in "[a-z][a-z0-9@.]{0,63}",
        bits in 0u8..16,
        prefix in "[a-z/]{0,40}",
        expires_at_s in (NOW_S + 1)..u64::MAX,
    ) {
        let ring = keyring();
        let grant = Grant {
            subject: Subject::new(subject).unwrap(),
            rights: Rights::from_bits(bits).unwrap(),
            scope: Scope::Prefix(ConvPrefix::new(prefix).unwrap()),
            expires_at_s,
            key_id: KeyId(1),
        };
        let token = ring.mint(&grant).unwrap();
        prop_assert!(token.len() <= TOKEN_TEXT_LEN_MINTED_MAX);
        prop_assert_eq!(ring.verify(&token, NOW_S), Ok(grant));
    }
}
