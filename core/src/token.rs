//! Capability tokens: signed, expiring grants of rights on conversations.
//!
//! A client presents a token in its hello; the relay verifies it with the keys in its secret
//! file and then asks the [`Grant`] before every request whether it allows that right on that
//! conversation. No server-side session state: the token carries the grant, a keyed MAC
//! proves the relay's operator issued it.
//!
//! ```text
//!   operator: hark token mint ──► Keyring::mint(&Grant) ──► "hk1.<base64url>"  (≤ 1024 bytes)
//!   client hello ──► Keyring::verify(text, now_s) ──► Grant ──► Grant::authorize(right, conv)
//! ```
//!
//! The MAC is BLAKE3 in keyed mode over a domain tag and the payload, compared in constant
//! time. Key ids allow rotation: a keyring holds several keys, the first one mints, all of
//! them verify. `docs/tokens.md` specifies the format byte by byte and the secret file.
//!
//! hark-core reads no clock and no randomness: `now_s` and key entropy come from the caller.
//!
//! ```
//! use hark_core::ConvName;
//! use hark_core::token::{ConvPrefix, Grant, KeyId, Keyring, Right, Rights, Scope, Subject};
//!
//! let entropy = [42u8; 32]; // from the OS's random source in real use
//! let keyring = Keyring::generate(KeyId(1), entropy);
//! let grant = Grant {
//!     subject: Subject::new("alice").unwrap(),
//!     rights: "talk,listen".parse::<Rights>().unwrap(),
//!     scope: Scope::Prefix(ConvPrefix::new("team/").unwrap()),
//!     expires_at_s: 1_900_000_000,
//!     key_id: keyring.minting_key_id(),
//! };
//! let token = keyring.mint(&grant).unwrap();
//!
//! let verified = keyring.verify(&token, 1_800_000_000).unwrap();
//! let conv = ConvName::new("team/ops").unwrap();
//! assert!(verified.authorize(Right::Talk, &conv).is_ok());
//! assert!(verified.authorize(Right::Admin, &conv).is_err());
//! ```

mod keyring;
mod rights;
mod secret_file;
#[cfg(test)]
mod tests;

use std::fmt;

use thiserror::Error;

use crate::ids::{CONV_NAME_LEN_MAX, ConvName, IdError};

pub use keyring::{KEYRING_KEYS_MAX, KeyId, Keyring, KeyringError, SECRET_FILE_LEN_MAX, SecretKey};
pub use rights::{Right, Rights};
pub use secret_file::{SECRET_FILE_MODE_FORBIDDEN, SecretFileError, read_secret_file};

/// Longest token text accepted by [`Keyring::verify`], in bytes. A minted token is at most
/// [`TOKEN_TEXT_LEN_MINTED_MAX`] bytes, so it always fits; the slack is for future versions.
pub const TOKEN_TEXT_LEN_MAX: usize = 1024;

/// Longest token [`Keyring::mint`] can produce: `hk1.` plus the base64 of the largest payload
/// (340 bytes) and the 32-byte MAC.
pub const TOKEN_TEXT_LEN_MINTED_MAX: usize = 500;

/// Longest subject, in UTF-8 bytes.
pub const SUBJECT_LEN_MAX: usize = 64;

/// What a token's text starts with; the digit is the payload version.
pub const TOKEN_PREFIX: &str = "hk1.";

/// Why a token, a grant or one of its parts was refused. The token is never partly trusted:
/// on any error the caller must treat the client as unauthenticated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token text is longer than [`TOKEN_TEXT_LEN_MAX`]; it was not decoded. Mint a new
    /// token with `hark token`.
    #[error("token is {len} bytes, the limit is {TOKEN_TEXT_LEN_MAX}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The text does not start with `hk1.`: not a hark token, or one of a version this build
    /// does not know. Check what the client sends as its token.
    #[error("not a hark token (expected the prefix {TOKEN_PREFIX:?})")]
    NotAToken,
    /// The token's payload version is not 1; upgrade the relay or mint a version 1 token.
    #[error("token payload version {0} is not supported")]
    VersionUnsupported(u8),
    /// The token is damaged (bad base64, truncated, trailing bytes, invalid field); mint a new
    /// one. The text says which part.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// The token names a key id this keyring does not hold: minted with a key that was
    /// retired, or by another cluster. Mint a new token with a current key.
    #[error("token was signed with key id {key_id}, which this keyring does not hold")]
    KeyUnknown {
        /// The key id the token names.
        key_id: KeyId,
    },
    /// The keyring holds the token's key id but with different key bytes: the minting side
    /// and the verifying side have different secret files. Copy the relay's secret file to
    /// the minting host, or mint there.
    #[error("token was signed with a different key {key_id} than this keyring holds")]
    KeyMismatch {
        /// The key id both sides use for different keys.
        key_id: KeyId,
    },
    /// The MAC does not match the payload: the token was altered after minting. Refuse the
    /// client; mint a new token if it is legitimate.
    #[error("token signature does not match its contents (tampered)")]
    SignatureInvalid,
    /// The token's expiry has passed; mint a new one.
    #[error("token expired at {expires_at_s} s, now is {now_s} s")]
    Expired {
        /// The token's expiry, seconds since the Unix epoch.
        expires_at_s: u64,
        /// The time it was checked at.
        now_s: u64,
    },
    /// The grant does not include the right the request needs; mint a token with it.
    #[error("token does not grant {0}")]
    RightMissing(Right),
    /// The grant's scope does not cover the conversation; mint a token for it.
    #[error("token does not cover conversation {0}")]
    OutOfScope(ConvName),
    /// A rights list names no known right (known: talk, listen, history, admin).
    #[error("unknown right {0:?}; known: talk, listen, history, admin")]
    RightUnknown(String),
    /// A subject is empty, longer than [`SUBJECT_LEN_MAX`] bytes or holds a control
    /// character; pick a shorter, printable name.
    #[error("subject must be 1 to {SUBJECT_LEN_MAX} bytes without control characters")]
    SubjectInvalid,
    /// A conversation prefix is longer than a conversation name can be or holds a control
    /// character; it could never match.
    #[error("prefix must be at most {CONV_NAME_LEN_MAX} bytes without control characters")]
    PrefixInvalid,
}

/// Who a token was issued to: a user or service name, for logs and audit. 1 to 64 bytes of
/// UTF-8 without control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(String);

impl Subject {
    /// Validates `subject`.
    pub fn new(subject: impl Into<String>) -> Result<Self, TokenError> {
        let subject = subject.into();
        if subject.is_empty() || subject.len() > SUBJECT_LEN_MAX || has_control(&subject) {
            return Err(TokenError::SubjectInvalid);
        }
        Ok(Self(subject))
    }

    /// The subject as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A prefix of conversation names: 0 to 255 bytes without control characters. The empty
/// prefix covers every conversation. Matching is on bytes, so end a prefix with a separator
/// (`team/`) unless `team` should also cover `teamwork`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConvPrefix(String);

impl ConvPrefix {
    /// Validates `prefix`.
    pub fn new(prefix: impl Into<String>) -> Result<Self, TokenError> {
        let prefix = prefix.into();
        if prefix.len() > CONV_NAME_LEN_MAX || has_control(&prefix) {
            return Err(TokenError::PrefixInvalid);
        }
        Ok(Self(prefix))
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConvPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Which conversations a grant covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Exactly one conversation.
    Conversation(ConvName),
    /// Every conversation whose name starts with the prefix (all of them for the empty
    /// prefix).
    Prefix(ConvPrefix),
}

impl Scope {
    /// Whether the scope covers `conv`.
    pub fn covers(&self, conv: &ConvName) -> bool {
        match self {
            Scope::Conversation(name) => name == conv,
            Scope::Prefix(prefix) => conv.as_str().starts_with(prefix.as_str()),
        }
    }
}

/// What a verified token allows: `rights` on the conversations of `scope` until
/// `expires_at_s`, issued to `subject` under key `key_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who the token was issued to.
    pub subject: Subject,
    /// What the holder may do.
    pub rights: Rights,
    /// Where the holder may do it.
    pub scope: Scope,
    /// Seconds since the Unix epoch after which the token is refused.
    pub expires_at_s: u64,
    /// The key that signs (when minting) or signed (when verified) the token; use
    /// [`Keyring::minting_key_id`] to mint with the current key.
    pub key_id: KeyId,
}

impl Grant {
    /// Allows `right` on `conv`, or says why not: a missing right and an uncovered
    /// conversation are different errors so the client can be told which to ask for.
    pub fn authorize(&self, right: Right, conv: &ConvName) -> Result<(), TokenError> {
        if !self.rights.contains(right) {
            return Err(TokenError::RightMissing(right));
        }
        if !self.scope.covers(conv) {
            return Err(TokenError::OutOfScope(conv.clone()));
        }
        Ok(())
    }

    /// Refuses the grant once `now_s` has reached its expiry. [`Keyring::verify`] checks this
    /// at the hello; a long-lived session checks it again before later requests.
    pub fn check_expiry(&self, now_s: u64) -> Result<(), TokenError> {
        if now_s >= self.expires_at_s {
            return Err(TokenError::Expired {
                expires_at_s: self.expires_at_s,
                now_s,
            });
        }
        Ok(())
    }
}

fn has_control(text: &str) -> bool {
    text.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// The binary payload (version 1); see `docs/tokens.md`.
mod payload {
    use super::*;

    pub(super) const VERSION: u8 = 1;
    /// Bytes before the subject: version, key id, key check, expiry, rights, subject length.
    pub(super) const HEADER_LEN: usize = 1 + 4 + 4 + 8 + 1 + 1;
    pub(super) const SCOPE_CONVERSATION: u8 = 0;
    pub(super) const SCOPE_PREFIX: u8 = 1;

    /// Lays out `grant` with `key_check` (the signing key's check value).
    pub(super) fn encode(grant: &Grant, key_check: [u8; 4]) -> Vec<u8> {
        let (kind, scope) = match &grant.scope {
            Scope::Conversation(name) => (SCOPE_CONVERSATION, name.as_str()),
            Scope::Prefix(prefix) => (SCOPE_PREFIX, prefix.as_str()),
        };
        let subject = grant.subject.as_str();
        let mut out = Vec::with_capacity(HEADER_LEN + subject.len() + 2 + scope.len());
        out.push(VERSION);
        out.extend_from_slice(&grant.key_id.0.to_le_bytes());
        out.extend_from_slice(&key_check);
        out.extend_from_slice(&grant.expires_at_s.to_le_bytes());
        out.push(grant.rights.bits());
        // Lengths fit a byte: Subject is at most 64 bytes, names and prefixes at most 255.
        out.push(subject.len() as u8);
        out.extend_from_slice(subject.as_bytes());
        out.push(kind);
        out.push(scope.len() as u8);
        out.extend_from_slice(scope.as_bytes());
        out
    }

    /// The key id and key check of a payload of at least [`HEADER_LEN`] bytes.
    pub(super) fn key_of(payload: &[u8]) -> Option<(KeyId, [u8; 4])> {
        let id = payload.get(1..5)?.try_into().ok()?;
        let check = payload.get(5..9)?.try_into().ok()?;
        Some((KeyId(u32::from_le_bytes(id)), check))
    }

    /// Reads a whole payload whose MAC has been checked.
    pub(super) fn decode(payload: &[u8]) -> Result<Grant, TokenError> {
        let mut reader = Reader(payload);
        let version = reader.byte()?;
        if version != VERSION {
            return Err(TokenError::VersionUnsupported(version));
        }
        let key_id = KeyId(u32::from_le_bytes(reader.array()?));
        let _key_check: [u8; 4] = reader.array()?;
        let expires_at_s = u64::from_le_bytes(reader.array()?);
        let rights = Rights::from_bits(reader.byte()?)
            .ok_or(TokenError::Malformed("unknown rights bits"))?;
        let subject_len = usize::from(reader.byte()?);
        let subject = std::str::from_utf8(reader.take(subject_len)?)
            .map_err(|_| TokenError::Malformed("subject is not UTF-8"))?;
        let subject =
            Subject::new(subject).map_err(|_| TokenError::Malformed("invalid subject"))?;
        let kind = reader.byte()?;
        let scope_len = usize::from(reader.byte()?);
        let scope_bytes = reader.take(scope_len)?;
        let scope = match kind {
            SCOPE_CONVERSATION => Scope::Conversation(
                ConvName::from_utf8(scope_bytes)
                    .map_err(|_: IdError| TokenError::Malformed("invalid conversation"))?,
            ),
            SCOPE_PREFIX => {
                let text = std::str::from_utf8(scope_bytes)
                    .map_err(|_| TokenError::Malformed("prefix is not UTF-8"))?;
                Scope::Prefix(
                    ConvPrefix::new(text).map_err(|_| TokenError::Malformed("invalid prefix"))?,
                )
            }
            _ => return Err(TokenError::Malformed("unknown scope kind")),
        };
        if !reader.0.is_empty() {
            return Err(TokenError::Malformed("trailing bytes"));
        }
        Ok(Grant {
            subject,
            rights,
            scope,
            expires_at_s,
            key_id,
        })
    }

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, len: usize) -> Result<&'a [u8], TokenError> {
            if self.0.len() < len {
                return Err(TokenError::Malformed("truncated payload"));
            }
            let (head, rest) = self.0.split_at(len);
            self.0 = rest;
            Ok(head)
        }

        fn byte(&mut self) -> Result<u8, TokenError> {
            Ok(self.take(1)?[0])
        }

        fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
            let mut out = [0u8; N];
            out.copy_from_slice(self.take(N)?);
            Ok(out)
        }
    }
}
