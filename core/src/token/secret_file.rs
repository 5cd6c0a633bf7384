//! Reading the secret file from disk, with the rules every reader shares (the relay, the
//! `hark` CLI, hark-perf): it must be a regular file, grant group and others nothing (whoever
//! can read it can mint any token), stay within [`SECRET_FILE_LEN_MAX`] and parse as a
//! [`Keyring`]. The checks run on the opened file, so a swap of the path between the check and
//! the read is harmless.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{Keyring, KeyringError, SECRET_FILE_LEN_MAX};

/// Permission bits a secret file may not have: any access by group or others.
pub const SECRET_FILE_MODE_FORBIDDEN: u32 = 0o077;

/// Why a secret file cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// The file does not exist. Create it (the relay does so in its data dir on a loopback
    /// start) or fix the path.
    #[error("secret file {} does not exist", path.display())]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// The secret file could not be opened or read (permissions, I/O error).
    #[error("secret file {}: {source}", path.display())]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The path names a directory, a device or another non-regular file.
    #[error("secret file {} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Group or others have some access to the secret file; anyone who can read it can mint
    /// any token. `chmod 600` it.
    #[error(
        "secret file {} has mode {mode:04o}: group and others must have no access (chmod 600)",
        path.display()
    )]
    PermissionsTooOpen {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not UTF-8 text, so not a secret file.
    #[error("secret file {} is not UTF-8 text", path.display())]
    NotText {
        /// The path.
        path: PathBuf,
    },
    /// The file's content is not a keyring (the message names the line, never its content).
    #[error("secret file {}: {source}", path.display())]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What the keyring parser refused.
        source: KeyringError,
    },
}

/// Reads and parses the secret file at `path`; see the module docs for the rules.
pub fn read_secret_file(path: &Path) -> Result<Keyring, SecretFileError> {
    let file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => SecretFileError::Missing {
            path: path.to_owned(),
        },
        _ => SecretFileError::Unreadable {
            path: path.to_owned(),
            source,
        },
    })?;
    let metadata = file
        .metadata()
        .map_err(|source| SecretFileError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
    if !metadata.is_file() {
        return Err(SecretFileError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & SECRET_FILE_MODE_FORBIDDEN != 0 {
        return Err(SecretFileError::PermissionsTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    // One byte over the limit lets the parser report the file as too long.
    file.take(SECRET_FILE_LEN_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SecretFileError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
    let text = String::from_utf8(bytes).map_err(|_| SecretFileError::NotText {
        path: path.to_owned(),
    })?;
    Keyring::parse(&text).map_err(|source| SecretFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}
