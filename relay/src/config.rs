//! hark-relay's configuration: command-line flags, a TOML file, embedded defaults.
//!
//! What it is: the one place that turns what an operator typed into a [`RelayConfig`] whose
//! every value is in range and consistent with the others (the shard's and the store's limits
//! included), so the runtime never checks a setting again. What it is not: no I/O beyond
//! reading the `--config` file, asking which CPUs this process may use and looking at the data
//! dir; the token secret is [`crate::secret`]'s.
//!
//! ```text
//!  argv ──clap──► Settings (flags) ─┐
//!                                   ├─ over ─► Settings ─resolve─► RelayConfig
//!  --config FILE ──toml──► Settings ┘            (defaults, bounds, consistency)
//! ```
//!
//! A flag beats the file; the file beats the default. `docs/relay-config.md` lists every key.

mod cores;
mod resolve;
mod settings;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use hark_core::shard::ShardConfig;
use hark_storage::{StoreConfig, StoreError};

pub use cores::{CORE_ID_MAX, CORE_LIST_TEXT_LEN_MAX, CoreListError, render_core_list};

use resolve::Host;
use settings::{Cli, Settings};

/// Largest `--config` file read, in bytes; a config file is a few KiB.
pub const CONFIG_FILE_LEN_MAX: u64 = 1024 * 1024;
/// Longest `log` filter accepted, in bytes.
pub const LOG_FILTER_LEN_MAX: usize = 1024;
/// Name of the generated secret file inside the data dir.
pub const SECRET_FILE_NAME: &str = "secret";

/// Most seed addresses accepted.
pub const SEEDS_MAX: usize = 64;

/// How this host takes part in a cluster (docs/cluster.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// UDP gossip and TCP peer links.
    pub listen: SocketAddr,
    /// Other hosts' cluster addresses to join through (this host's own is left out).
    pub seeds: Vec<SocketAddr>,
    /// The client address other hosts hand to clients for this host; `None`: the bound
    /// client address.
    pub advertise: Option<SocketAddr>,
    /// Each shard's weight in the ownership map.
    pub weight_per_core: u32,
}

/// Everything hark-relay runs with, validated: every limit in its documented range and the
/// shard's and the store's limits consistent with each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Where clients connect; every shard accepts on it (SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Where the admin endpoint (metrics, health, readiness) listens.
    pub admin: SocketAddr,
    /// The store's root (one directory per shard) and the generated secret's home. Not
    /// created by configuration; [`crate::secret::load_keyring`] creates it when it makes the
    /// secret, the store when it opens.
    pub data_dir: PathBuf,
    /// CPU ids, sorted and distinct: shard `i`'s thread is pinned to `cores[i]`, and its
    /// store directory is named by `i`, not by the CPU id (see `docs/relay-config.md`).
    pub cores: Vec<usize>,
    /// This host's id in the cluster; part of every `MsgId`.
    pub host_id: u16,
    /// Cluster membership, `Some` when this relay is one host of a cluster.
    pub cluster: Option<ClusterSettings>,
    /// The secret file, `Some` only when configured explicitly; see [`Self::secret_path`].
    pub secret_file: Option<PathBuf>,
    /// Accept an empty token on loopback connections; equal to `shard.dev_mode`.
    pub dev_mode: bool,
    /// Entries per cross-shard queue, 16..=`mesh::LANE_CAPACITY_MAX`.
    pub mesh_lane_capacity: usize,
    /// The shard's limits, filled from the settings (the rest at `ShardConfig::default()`).
    pub shard: ShardConfig,
    /// Each shard's store configuration; `frame_bytes_max` equals
    /// `shard.audio_payload_len_max`, so the store accepts every payload the shard accepts.
    pub store: StoreConfig,
    /// tracing filter (EnvFilter syntax), already checked to parse.
    pub log: String,
}

impl RelayConfig {
    /// Parses argv (flags, then `--config FILE` merged under them: flag > file > default) and
    /// validates. `args` starts with the program name, as `std::env::args_os()` does.
    pub fn from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        let file = match &cli.config {
            Some(path) => settings_from_file(path)?,
            None => Settings::default(),
        };
        resolve::resolve(cli.settings.over(file), &Host::current()?)
    }

    /// Parses a TOML config (the `--config` file's format) over the defaults and validates;
    /// for tests, and for `hark` reading the relay's config to find its data dir and secret.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let settings = settings_from_toml(text, None)?;
        resolve::resolve(settings, &Host::current()?)
    }

    /// The secret file path in force: `secret_file` or `<data_dir>/secret`.
    pub fn secret_path(&self) -> PathBuf {
        match &self.secret_file {
            Some(path) => path.clone(),
            None => self.data_dir.join(SECRET_FILE_NAME),
        }
    }

    /// Every setting as a TOML config that [`Self::from_toml_str`] reads back to an equal
    /// config (on a host allowing the same CPUs). For logging the configuration in force and
    /// for writing a starting config file. A path that is not UTF-8 is written lossily.
    pub fn to_toml(&self) -> String {
        let settings = resolve::settings_of(self);
        // Settings holds only strings, integers and booleans in a flat table, all of which
        // TOML represents: serializing cannot fail.
        toml::to_string(&settings).unwrap_or_default()
    }
}

/// Why the configuration was refused. Nothing has been started or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The command line was not understood, or `--help` / `--version` was asked for. Call
    /// `.exit()` on the inner error: it prints help or version to stdout and exits 0, or the
    /// usage error to stderr and exits 2.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The `--config` file could not be opened or read; check the path and its permissions.
    #[error("config file {}: {source}", path.display())]
    ConfigFileUnreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The config is larger than [`CONFIG_FILE_LEN_MAX`]; it is not a config file.
    #[error("{} is larger than {CONFIG_FILE_LEN_MAX} bytes", origin(path.as_deref()))]
    ConfigFileTooLong {
        /// The file, `None` for [`RelayConfig::from_toml_str`].
        path: Option<PathBuf>,
    },
    /// The config is not valid TOML, has a key that is not a setting (typo), or a value of
    /// the wrong type; the message names the key and the line.
    #[error("{}: {source}", origin(path.as_deref()))]
    ConfigFileInvalid {
        /// The file, `None` for [`RelayConfig::from_toml_str`].
        path: Option<PathBuf>,
        /// toml's description.
        source: toml::de::Error,
    },
    /// `cores` is not a valid core list.
    #[error("cores: {0}")]
    CoreList(#[from] CoreListError),
    /// `cores` names a CPU this process may not run on (not online, or outside its
    /// affinity mask, e.g. a container's cpuset); pick from the allowed ones.
    #[error("cores: this process may not run on CPU {core}; it may run on {allowed}")]
    CoreNotAllowed {
        /// The CPU.
        core: usize,
        /// The allowed CPUs as a core list.
        allowed: String,
    },
    /// The OS did not say which CPUs this process may run on (core_affinity found none);
    /// nothing can be pinned on this platform.
    #[error("could not read which CPUs this process may run on")]
    CoresUnknown,
    /// A setting is outside its bounds; the message gives them.
    #[error("{key} = {value} is out of range: it must be {min}..={max} ({unit})")]
    OutOfRange {
        /// The TOML key (the flag is `--` and the key with `-` for `_`).
        key: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
        /// What the value counts.
        unit: &'static str,
    },
    /// A setting contradicts another one (the reason names both); change either.
    #[error("{key}: {reason}")]
    Inconsistent {
        /// The TOML key refused.
        key: &'static str,
        /// Which other setting it contradicts and how.
        reason: String,
    },
    /// A path setting is empty; give a path or leave the setting out.
    #[error("{key} is an empty path")]
    PathEmpty {
        /// The TOML key.
        key: &'static str,
    },
    /// The data dir exists but is not a directory; point `data_dir` elsewhere.
    #[error("data_dir {} exists and is not a directory", path.display())]
    DataDirNotDirectory {
        /// The path.
        path: PathBuf,
    },
    /// The data dir could not be looked at (permissions, a file in the middle of the path).
    #[error("data_dir {}: {source}", path.display())]
    DataDirUnusable {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// `log` is not a valid tracing filter (or longer than [`LOG_FILTER_LEN_MAX`]).
    #[error("log: {reason}")]
    LogFilterInvalid {
        /// What is wrong with it.
        reason: String,
    },
    /// The store refused its derived configuration (`StoreConfig::validate`); the reason
    /// names the store's field.
    #[error("store configuration: {0}")]
    Store(StoreError),
}

/// Parses a core list like "0-3,6" (ranges inclusive, no duplicates after merge, bounded
/// length): the CPU ids sorted and distinct, each at most [`CORE_ID_MAX`].
pub fn parse_core_list(text: &str) -> Result<Vec<usize>, ConfigError> {
    Ok(cores::parse_cores(text)?)
}

fn origin(path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("config file {}", path.display()),
        None => "config".to_owned(),
    }
}

fn settings_from_file(path: &Path) -> Result<Settings, ConfigError> {
    let unreadable = |source| ConfigError::ConfigFileUnreadable {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut text = String::new();
    // One byte over the limit tells "too long" from "exactly at the limit".
    let read = file
        .take(CONFIG_FILE_LEN_MAX + 1)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    if read as u64 > CONFIG_FILE_LEN_MAX {
        return Err(ConfigError::ConfigFileTooLong {
            path: Some(path.to_owned()),
        });
    }
    settings_from_toml(&text, Some(path))
}

fn settings_from_toml(text: &str, path: Option<&Path>) -> Result<Settings, ConfigError> {
    if text.len() as u64 > CONFIG_FILE_LEN_MAX {
        return Err(ConfigError::ConfigFileTooLong {
            path: path.map(Path::to_owned),
        });
    }
    toml::from_str(text).map_err(|source| ConfigError::ConfigFileInvalid {
        path: path.map(Path::to_owned),
        source,
    })
}
