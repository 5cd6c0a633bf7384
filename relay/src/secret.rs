//! The token secret: which keys verify the capability tokens in every hello.
//!
//! Out of the box nobody has configured a secret, and a newcomer's first try must still work
//! and still be authenticated: the relay creates `<data_dir>/secret` (mode 0600) on its first
//! start, and the `hark` CLI, given the same data dir, mints tokens with it. A relay reachable
//! from other machines must have a secret the operator manages (backed up, shared with the
//! minting hosts, rotated), so with a non-loopback `listen` and no `secret_file` it refuses to
//! start instead of inventing one.
//!
//! ```text
//!  secret_file set? ──yes──► read it (must exist, no group/other permission) ─► Configured
//!        │no
//!  listen loopback? ──no───► NonLoopbackWithoutSecret
//!        │yes
//!  <data_dir>/secret exists? ──yes──► read it (same checks) ─► Existing
//!        │no
//!  write a temp file (0600, fsync) ─► hard-link it to `secret` ─► fsync dir ─► Created
//! ```
//!
//! The new file appears whole or not at all: it is written under a temporary name and linked
//! into place, so a `hark` reading it concurrently, or a second relay starting on the same
//! data dir, never sees a partial file; if two relays race, the loser loads the winner's.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hark_core::token::{KeyId, Keyring, SecretFileError};

use crate::config::{RelayConfig, SECRET_FILE_NAME};

/// Key id of the key in a generated secret file.
pub const GENERATED_KEY_ID: KeyId = KeyId(1);
/// Mode of a generated secret file: read and write for the owner only.
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Mode of a data dir the relay creates: it holds the secret.
pub const DATA_DIR_MODE: u32 = 0o700;

/// Where the keyring came from, for the startup log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The operator's `secret_file`.
    Configured(PathBuf),
    /// `<data_dir>/secret`, created by this start.
    Created(PathBuf),
    /// `<data_dir>/secret`, created by an earlier start (or a `hark` run).
    Existing(PathBuf),
}

impl SecretSource {
    /// The secret file's path.
    pub fn path(&self) -> &Path {
        match self {
            SecretSource::Configured(path)
            | SecretSource::Created(path)
            | SecretSource::Existing(path) => path,
        }
    }
}

/// Why no keyring could be loaded. When creating failed, a half-written temporary file may
/// remain next to the secret (mode 0600); nothing else has changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// `listen` is reachable from other machines and no `secret_file` is configured: a relay
    /// exposed to the network must use a secret the operator manages. Configure
    /// `--secret-file` (it may be `<data_dir>/secret` once created on loopback), or listen
    /// on a loopback address.
    #[error(
        "listen address {listen} is not a loopback address and no secret file is configured: \
         a relay reachable from other machines needs a token secret you manage. Pass \
         --secret-file FILE (`hark` can create one; {default} is used if you name it), or \
         listen on 127.0.0.1",
        default = default_path.display()
    )]
    NonLoopbackWithoutSecret {
        /// The configured client address.
        listen: SocketAddr,
        /// `<data_dir>/secret`, which would have been generated on loopback.
        default_path: PathBuf,
    },
    /// The secret file exists but cannot be used, or a configured one is missing (it is
    /// never generated, so a typo cannot silently start a relay with a key nobody else has).
    #[error(transparent)]
    File(#[from] SecretFileError),
    /// The OS gave no randomness for a new key; nothing was written. Retry, or configure
    /// `secret_file`.
    #[error("no randomness for a new secret key: {reason}")]
    Entropy {
        /// getrandom's description.
        reason: String,
    },
    /// Creating the data dir or writing the new secret file failed (read-only or full disk,
    /// permissions).
    #[error("creating secret file {}: {source}", path.display())]
    CreateFailed {
        /// The file or directory that could not be written.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// Loads the keyring: the configured secret file (must exist, must not be group/world
/// readable; refuse with a clear error otherwise), or `<data_dir>/secret`, created if missing
/// (mode 0600, 32 bytes of OS randomness, key id 1, written with `Keyring::render`, fsynced,
/// dir fsynced). Refuses (`SecretError::NonLoopbackWithoutSecret`) when `listen` is not
/// loopback and no secret is configured.
pub fn load_keyring(config: &RelayConfig) -> Result<(Keyring, SecretSource), SecretError> {
    if let Some(path) = &config.secret_file {
        let keyring = read_secret_file(path)?;
        return Ok((keyring, SecretSource::Configured(path.clone())));
    }
    if !config.listen.ip().to_canonical().is_loopback() {
        return Err(SecretError::NonLoopbackWithoutSecret {
            listen: config.listen,
            default_path: config.secret_path(),
        });
    }
    load_or_create_in(&config.data_dir)
}

/// Loads `<data_dir>/secret`, creating it (and the data dir, mode 0700) if missing, with the
/// same checks and the same atomic creation as [`load_keyring`]. For `hark`, so a newcomer can
/// mint a token for a data dir before or after the relay first started there. It does no
/// loopback check: the caller decides whether a generated secret is acceptable.
pub fn load_or_create_in(data_dir: &Path) -> Result<(Keyring, SecretSource), SecretError> {
    let path = data_dir.join(SECRET_FILE_NAME);
    match read_secret_file(&path) {
        Ok(keyring) => Ok((keyring, SecretSource::Existing(path))),
        Err(SecretError::File(SecretFileError::Missing { .. })) => {
            create_secret_file(data_dir, &path)
        }
        Err(error) => Err(error),
    }
}

/// Reads a secret file with the checks [`load_keyring`] applies (hark-core's
/// [`read_secret_file`]: it exists, is a regular file, grants group and others nothing, and
/// parses as a keyring).
pub fn read_secret_file(path: &Path) -> Result<Keyring, SecretError> {
    Ok(hark_core::token::read_secret_file(path)?)
}

/// Creates `path` (inside `data_dir`) with a new key, or loads the file another process
/// created first.
fn create_secret_file(
    data_dir: &Path,
    path: &Path,
) -> Result<(Keyring, SecretSource), SecretError> {
    let create_failed = |path: &Path| {
        let path = path.to_owned();
        move |source| SecretError::CreateFailed { path, source }
    };
    DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(data_dir)
        .map_err(create_failed(data_dir))?;

    let mut entropy = [0u8; 32];
    getrandom::fill(&mut entropy).map_err(|error| SecretError::Entropy {
        reason: error.to_string(),
    })?;
    let keyring = Keyring::generate(GENERATED_KEY_ID, entropy);

    let temp_path = temp_path_for(path);
    write_new_file(&temp_path, keyring.render().as_bytes()).map_err(create_failed(&temp_path))?;
    let linked = fs::hard_link(&temp_path, path);
    // The temporary name is ours alone (it holds our pid); remove it whether or not the link
    // was made. A failure here leaves only a 0600 file holding an unused key.
    let _ = fs::remove_file(&temp_path);
    match linked {
        Ok(()) => {
            sync_dir(data_dir).map_err(create_failed(data_dir))?;
            Ok((keyring, SecretSource::Created(path.to_owned())))
        }
        // Another relay or `hark` created it between our read and our link: use theirs.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            read_secret_file(path).map(|keyring| (keyring, SecretSource::Existing(path.to_owned())))
        }
        Err(source) => Err(SecretError::CreateFailed {
            path: path.to_owned(),
            source,
        }),
    }
}

/// `.<name>.tmp.<pid>` next to `path`.
fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Writes `bytes` to a file that must not exist yet, mode exactly [`SECRET_FILE_MODE`]
/// whatever the umask, and makes it durable.
fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SECRET_FILE_MODE)
            .open(path)
    };
    let mut file = match open() {
        Ok(file) => file,
        // Left by an earlier process with our pid that died mid-write: it is not in use.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open()?
        }
        Err(error) => return Err(error),
    };
    file.set_permissions(fs::Permissions::from_mode(SECRET_FILE_MODE))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a new directory entry durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
