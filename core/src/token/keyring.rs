//! Keys that mint and verify tokens, and the secret file that holds them.

use std::fmt;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use thiserror::Error;

use super::{Grant, TOKEN_PREFIX, TOKEN_TEXT_LEN_MAX, TokenError, payload};

/// Most keys a keyring holds: a current key and the retired ones still being honoured. A
/// rotation that would exceed it must retire an old key first.
pub const KEYRING_KEYS_MAX: usize = 16;

/// Largest secret file accepted by [`Keyring::parse`], in bytes (a full keyring is ~1.3 KiB;
/// the rest is room for comments).
pub const SECRET_FILE_LEN_MAX: usize = 64 * 1024;

/// Length of a token's MAC, in bytes.
const MAC_LEN: usize = 32;

/// Domain tag hashed before the payload, so a hark token MAC can never be confused with a
/// BLAKE3 keyed hash of the same key used for anything else.
const MAC_DOMAIN: &[u8] = b"hark token mac v1\0";

/// BLAKE3 `derive_key` context for a key's check value.
const KEY_CHECK_CONTEXT: &str = "hark 2026 capability token key check v1";

/// BLAKE3 `derive_key` context that turns caller entropy into a key.
const KEY_FROM_ENTROPY_CONTEXT: &str = "hark 2026 capability token secret key v1";

/// Names a key in the keyring and in every token it signed, so keys can rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A 32-byte MAC key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// A key from exactly these bytes (e.g. read from the secret file).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh key from 32 bytes of the caller's randomness (hark-core reads none itself),
    /// passed through BLAKE3 `derive_key` so the key never equals the raw entropy.
    pub fn from_entropy(entropy: [u8; 32]) -> Self {
        Self(blake3::derive_key(KEY_FROM_ENTROPY_CONTEXT, &entropy))
    }

    /// The key bytes, for writing the secret file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Four bytes derived from the key, carried in tokens so a verifier can tell "minted with
    /// another key of the same id" from "tampered". Reveals nothing usable about the key.
    fn check(&self) -> [u8; 4] {
        let derived = blake3::derive_key(KEY_CHECK_CONTEXT, &self.0);
        [derived[0], derived[1], derived[2], derived[3]]
    }

    fn mac(&self, payload: &[u8]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(MAC_DOMAIN);
        hasher.update(payload);
        hasher.finalize()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Why a keyring or its secret file was refused. Nothing is changed on error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// The secret file is larger than [`SECRET_FILE_LEN_MAX`]; it is probably not a secret
    /// file. Check the path.
    #[error("secret file is {len} bytes, the limit is {SECRET_FILE_LEN_MAX}")]
    FileTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A line is neither blank, a `#` comment, nor `key <id> <64 hex digits>`. The error names
    /// the line but never echoes it (it may hold key material).
    #[error("secret file line {line}: expected `key <id> <64 hex digits>`")]
    LineInvalid {
        /// 1-based line number.
        line: usize,
    },
    /// A key id is not a decimal number from 0 to 4294967295.
    #[error("secret file line {line}: key id is not a number from 0 to 4294967295")]
    KeyIdInvalid {
        /// 1-based line number.
        line: usize,
    },
    /// A key is not exactly 64 hexadecimal digits.
    #[error("secret file line {line}: key must be exactly 64 hex digits")]
    KeyHexInvalid {
        /// 1-based line number.
        line: usize,
    },
    /// A key id appears twice; give each key its own id.
    #[error("key id {key_id} appears twice")]
    KeyIdDuplicated {
        /// The repeated id.
        key_id: super::KeyId,
    },
    /// The secret file holds no key; generate one with `hark token keygen`.
    #[error("no key: the keyring needs at least one")]
    KeysMissing,
    /// More than [`KEYRING_KEYS_MAX`] keys; retire old keys first.
    #[error("more than {KEYRING_KEYS_MAX} keys")]
    KeysTooMany,
    /// The key id is not in the keyring.
    #[error("key id {0} is not in the keyring")]
    KeyUnknown(KeyId),
    /// Retiring the key would leave the keyring empty; rotate in a new key first.
    #[error("key id {0} is the last key and cannot be retired")]
    KeyLast(KeyId),
}

/// The keys a relay verifies tokens with and a `hark` CLI mints them with. The first key
/// mints; every key verifies, so a key can be rotated without invalidating live tokens.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// 1..=KEYRING_KEYS_MAX keys, unique ids; `keys[0]` mints.
    keys: Vec<(KeyId, SecretKey)>,
}

impl Keyring {
    /// A keyring holding one key, which mints.
    pub fn new(key_id: KeyId, key: SecretKey) -> Self {
        Self {
            keys: vec![(key_id, key)],
        }
    }

    /// A keyring with one fresh key made from the caller's 32 bytes of randomness.
    pub fn generate(key_id: KeyId, entropy: [u8; 32]) -> Self {
        Self::new(key_id, SecretKey::from_entropy(entropy))
    }

    /// Adds `key` as the new minting key; the older keys keep verifying until retired.
    pub fn rotate(&mut self, key_id: KeyId, key: SecretKey) -> Result<(), KeyringError> {
        if self.key(key_id).is_some() {
            return Err(KeyringError::KeyIdDuplicated { key_id });
        }
        if self.keys.len() >= KEYRING_KEYS_MAX {
            return Err(KeyringError::KeysTooMany);
        }
        self.keys.insert(0, (key_id, key));
        Ok(())
    }

    /// Removes a key: tokens it signed stop verifying. Retiring the minting key makes the
    /// next key mint.
    pub fn retire(&mut self, key_id: KeyId) -> Result<(), KeyringError> {
        let index = self
            .keys
            .iter()
            .position(|(id, _)| *id == key_id)
            .ok_or(KeyringError::KeyUnknown(key_id))?;
        if self.keys.len() == 1 {
            return Err(KeyringError::KeyLast(key_id));
        }
        self.keys.remove(index);
        Ok(())
    }

    /// The id of the key that mints; put it in [`Grant::key_id`].
    pub fn minting_key_id(&self) -> KeyId {
        self.keys[0].0
    }

    /// The key ids, minting key first.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    /// Signs `grant` with the key named by `grant.key_id`, giving the token text (at most
    /// [`super::TOKEN_TEXT_LEN_MINTED_MAX`] bytes). Fails only when the keyring lacks that key.
    pub fn mint(&self, grant: &Grant) -> Result<String, TokenError> {
        let key = self.key(grant.key_id).ok_or(TokenError::KeyUnknown {
            key_id: grant.key_id,
        })?;
        let mut bytes = payload::encode(grant, key.check());
        let mac = key.mac(&bytes);
        bytes.extend_from_slice(mac.as_bytes());
        let mut text = String::with_capacity(TOKEN_PREFIX.len() + bytes.len().div_ceil(3) * 4);
        text.push_str(TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&bytes, &mut text);
        Ok(text)
    }

    /// Checks a token's text and returns its grant, refusing it if it is too long, damaged,
    /// signed by an unknown or different key, tampered with, or expired at `now_s` (seconds
    /// since the Unix epoch). Never panics, whatever the text.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Grant, TokenError> {
        if token.len() > TOKEN_TEXT_LEN_MAX {
            return Err(TokenError::TooLong { len: token.len() });
        }
        let encoded = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::NotAToken)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| TokenError::Malformed("not base64url without padding"))?;
        if bytes.len() < payload::HEADER_LEN + MAC_LEN {
            return Err(TokenError::Malformed("too short"));
        }
        let (body, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        // `body` holds at least HEADER_LEN bytes (checked above).
        if body[0] != payload::VERSION {
            return Err(TokenError::VersionUnsupported(body[0]));
        }
        let (key_id, key_check) =
            payload::key_of(body).ok_or(TokenError::Malformed("too short"))?;
        let key = self.key(key_id).ok_or(TokenError::KeyUnknown { key_id })?;
        if key.check() != key_check {
            return Err(TokenError::KeyMismatch { key_id });
        }
        // blake3::Hash compares in constant time.
        if key.mac(body) != *mac {
            return Err(TokenError::SignatureInvalid);
        }
        let grant = payload::decode(body)?;
        grant.check_expiry(now_s)?;
        Ok(grant)
    }

    /// Reads a secret file: lines `key <id> <64 hex digits>`, the first key mints; blank
    /// lines and lines starting with `#` are ignored. See `docs/tokens.md`.
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        if text.len() > SECRET_FILE_LEN_MAX {
            return Err(KeyringError::FileTooLong { len: text.len() });
        }
        let mut keys: Vec<(KeyId, SecretKey)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key_id, key) = parse_key_line(line, line_number)?;
            if keys.iter().any(|(id, _)| *id == key_id) {
                return Err(KeyringError::KeyIdDuplicated { key_id });
            }
            if keys.len() == KEYRING_KEYS_MAX {
                return Err(KeyringError::KeysTooMany);
            }
            keys.push((key_id, key));
        }
        if keys.is_empty() {
            return Err(KeyringError::KeysMissing);
        }
        Ok(Self { keys })
    }

    /// Writes the secret file that [`Keyring::parse`] reads back: a comment header, then one
    /// line per key, minting key first. The caller stores it with mode 0600.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# hark token keys: `key <id> <64 hex digits>`. The first key mints new tokens;\n\
             # every key verifies them. Keep this file secret (mode 0600).\n",
        );
        for (id, key) in &self.keys {
            out.push_str("key ");
            // Writing to a String cannot fail.
            let _ = write!(out, "{id} ");
            for byte in key.as_bytes() {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('\n');
        }
        out
    }

    /// The key named `key_id`, for the peer link's key derivation.
    pub(crate) fn key(&self, key_id: KeyId) -> Option<&SecretKey> {
        self.keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .map(|(_, key)| key)
    }
}

fn parse_key_line(line: &str, line_number: usize) -> Result<(KeyId, SecretKey), KeyringError> {
    let mut fields = line.split_ascii_whitespace();
    let (Some("key"), Some(id), Some(hex), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(KeyringError::LineInvalid { line: line_number });
    };
    // `u32::from_str` accepts a leading `+`; the format is digits only.
    if !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(KeyringError::KeyIdInvalid { line: line_number });
    }
    let id = id
        .parse::<u32>()
        .map_err(|_| KeyringError::KeyIdInvalid { line: line_number })?;
    let key = parse_hex_key(hex).ok_or(KeyringError::KeyHexInvalid { line: line_number })?;
    Ok((KeyId(id), SecretKey::from_bytes(key)))
}

fn parse_hex_key(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        // Two hex digits are at most 0xff.
        *byte = (high * 16 + low) as u8;
    }
    Some(key)
}
