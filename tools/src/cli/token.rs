//! Tokens: minted from a secret file (the relay's `<data-dir>/secret`), and inspected.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use hark_core::ConvName;
use hark_core::token::{
    ConvPrefix, Grant, Keyring, Rights, Scope, Subject, TOKEN_PREFIX, TOKEN_TEXT_LEN_MAX,
};

use super::CliError;
use super::conn::now_us;

/// How long a token minted for one command lives (the relay checks it at each hello, so a
/// reconnect within this time works).
pub const COMMAND_TOKEN_TTL_S: u64 = 3600;

/// Reads a keyring with the rules every reader of the secret file shares (hark-core's
/// `read_secret_file`: a regular file no group or other may access, a valid keyring).
pub fn read_keyring(path: &Path) -> Result<Keyring, CliError> {
    Ok(hark_core::token::read_secret_file(path)?)
}

/// The subject a minted token names: `--as`, else `$USER`, else "hark-cli".
pub fn default_subject(given: Option<&str>) -> String {
    given
        .map(str::to_owned)
        .or_else(|| std::env::var("USER").ok().filter(|user| !user.is_empty()))
        .unwrap_or_else(|| "hark-cli".to_owned())
}

/// The token a command presents: `--token`, else one minted from `<data_dir>/secret` with
/// `rights` on exactly `conversation`.
pub fn command_token(
    token: Option<&str>,
    data_dir: &Path,
    subject: Option<&str>,
    rights: &str,
    conversation: &ConvName,
) -> Result<String, CliError> {
    if let Some(token) = token {
        return Ok(token.to_owned());
    }
    let keyring = read_keyring(&data_dir.join("secret"))?;
    mint(
        &keyring,
        &default_subject(subject),
        rights,
        Scope::Conversation(conversation.clone()),
        COMMAND_TOKEN_TTL_S,
    )
}

/// Mints a grant of `rights` on `scope` for `ttl_s` seconds with the keyring's minting key.
pub fn mint(
    keyring: &Keyring,
    subject: &str,
    rights: &str,
    scope: Scope,
    ttl_s: u64,
) -> Result<String, CliError> {
    let grant = Grant {
        subject: Subject::new(subject).map_err(|error| CliError::Token(error.to_string()))?,
        rights: rights
            .parse::<Rights>()
            .map_err(|error| CliError::Usage(format!("--rights {rights:?}: {error}")))?,
        scope,
        expires_at_s: now_us() / 1_000_000 + ttl_s,
        key_id: keyring.minting_key_id(),
    };
    keyring
        .mint(&grant)
        .map_err(|error| CliError::Token(error.to_string()))
}

/// `hark token mint`.
pub fn run_mint(
    secret_file: &Path,
    rights: &str,
    conv: Option<&str>,
    prefix: Option<&str>,
    ttl: &str,
    subject: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let keyring = read_keyring(secret_file)?;
    let scope = match (conv, prefix) {
        (Some(name), None) => Scope::Conversation(
            ConvName::new(name).map_err(|error| CliError::Usage(format!("--conv: {error}")))?,
        ),
        (None, Some(prefix)) => Scope::Prefix(
            ConvPrefix::new(prefix)
                .map_err(|error| CliError::Usage(format!("--prefix: {error}")))?,
        ),
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --conv and --prefix".into(),
            ));
        }
    };
    let ttl_s = super::time::parse_duration_s(ttl)?;
    let token = mint(&keyring, &default_subject(subject), rights, scope, ttl_s)?;
    writeln!(out, "{token}")?;
    Ok(())
}

/// A token's fields, read without checking its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFields {
    /// The key id it claims.
    pub key_id: u32,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at_s: u64,
    /// Rights, as text.
    pub rights: String,
    /// The subject.
    pub subject: String,
    /// `conversation NAME` or `prefix P`.
    pub scope: String,
}

/// Reads a token's payload (docs/tokens.md) without verifying it.
pub fn read_fields(token: &str) -> Result<TokenFields, CliError> {
    let bad = |what: &str| CliError::Token(format!("not a hark token: {what}"));
    if token.len() > TOKEN_TEXT_LEN_MAX {
        return Err(bad("too long"));
    }
    let body = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or_else(|| bad("no hk1. prefix"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| bad("bad base64url"))?;
    let payload = bytes
        .len()
        .checked_sub(32)
        .map(|len| &bytes[..len])
        .filter(|payload| payload.len() >= 21)
        .ok_or_else(|| bad("too short"))?;
    if payload[0] != 1 {
        return Err(bad("unsupported version"));
    }
    let key_id = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
    let mut expiry = [0u8; 8];
    expiry.copy_from_slice(&payload[9..17]);
    let rights = Rights::from_bits(payload[17]).ok_or_else(|| bad("unknown rights bits"))?;
    let subject_len = usize::from(payload[18]);
    let subject = payload
        .get(19..19 + subject_len)
        .ok_or_else(|| bad("short subject"))?;
    let kind = *payload
        .get(19 + subject_len)
        .ok_or_else(|| bad("no scope"))?;
    let scope_len = usize::from(
        *payload
            .get(20 + subject_len)
            .ok_or_else(|| bad("no scope"))?,
    );
    let scope = payload
        .get(21 + subject_len..21 + subject_len + scope_len)
        .ok_or_else(|| bad("short scope"))?;
    let scope = String::from_utf8_lossy(scope);
    Ok(TokenFields {
        key_id,
        expires_at_s: u64::from_le_bytes(expiry),
        rights: rights.to_string(),
        subject: String::from_utf8_lossy(subject).into_owned(),
        scope: match kind {
            0 => format!("conversation {scope}"),
            1 => format!("prefix {scope:?}"),
            _ => return Err(bad("unknown scope kind")),
        },
    })
}

/// `hark token inspect`: the fields, and the verdict when a secret file is given.
pub fn run_inspect(
    token: &str,
    secret_file: Option<&Path>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let fields = read_fields(token)?;
    let now_s = now_us() / 1_000_000;
    let verdict = match secret_file {
        Some(path) => Some(match read_keyring(path)?.verify(token, now_s) {
            Ok(_) => "valid".to_owned(),
            Err(error) => format!("invalid: {error}"),
        }),
        None => None,
    };
    let expires = super::time::format_us(fields.expires_at_s.saturating_mul(1_000_000));
    let state = if now_s >= fields.expires_at_s {
        "expired"
    } else {
        "not expired"
    };
    if json {
        let value = serde_json::json!({
            "key_id": fields.key_id,
            "subject": fields.subject,
            "rights": fields.rights,
            "scope": fields.scope,
            "expires_at_s": fields.expires_at_s,
            "expires_at": expires,
            "expired": now_s >= fields.expires_at_s,
            "verified": verdict,
        });
        writeln!(out, "{value}")?;
    } else {
        writeln!(out, "subject:  {}", fields.subject)?;
        writeln!(out, "rights:   {}", fields.rights)?;
        writeln!(out, "scope:    {}", fields.scope)?;
        writeln!(out, "expires:  {expires} ({state})")?;
        writeln!(out, "key id:   {}", fields.key_id)?;
        match verdict {
            Some(verdict) => writeln!(out, "verified: {verdict}")?,
            None => writeln!(out, "verified: not checked (give --secret-file)")?,
        }
    }
    Ok(())
}
