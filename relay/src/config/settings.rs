//! The settings as an operator writes them: the command line and the TOML file share one
//! struct, so every flag `--some-key` is the TOML key `some_key` by construction. Every field
//! is optional; [`Settings::over`] layers flags over the file, and `resolve` fills the rest
//! with defaults and checks bounds.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::cores::CoreList;

/// `hark-relay`'s command line: `--config FILE` plus every setting.
#[derive(Debug, Parser)]
#[command(
    name = "hark-relay",
    version,
    about = "hark's thread-per-core live voice relay",
    long_about = "hark's thread-per-core live voice relay.\n\n\
        With no options it serves clients on 127.0.0.1:7400 and metrics on 127.0.0.1:7401, \
        keeps its store in ./hark-data and runs one shard per CPU it may use. On first start \
        it creates a token secret in the data dir; `hark` given the same data dir mints \
        tokens with it.\n\n\
        Every option can also be set in a TOML file (--config) under the same name with `_` \
        for `-`. A flag beats the file; the file beats the default."
)]
pub(crate) struct Cli {
    /// TOML file with settings (a flat table, keys as the flags with `_` for `-`); flags given
    /// on the command line override it. [default: none]
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) settings: Settings,
}

/// One value per setting, each `None` when not given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Address clients connect to (IP:PORT); every shard accepts on it (SO_REUSEPORT). A
    /// non-loopback address needs --secret-file. [default: 127.0.0.1:7400]
    #[arg(long, value_name = "IP:PORT")]
    pub(crate) listen: Option<SocketAddr>,

    /// Address of the admin endpoint: Prometheus metrics, health and readiness (IP:PORT).
    /// [default: 127.0.0.1:7401]
    #[arg(long, value_name = "IP:PORT")]
    pub(crate) admin: Option<SocketAddr>,

    /// Directory of the body store (one subdirectory per shard) and of the generated token
    /// secret; created with mode 0700 if missing. [default: ./hark-data]
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// CPUs to run shards on, like 0-3,6: one shard per CPU, shard i pinned to the i-th
    /// smallest. Each must be a CPU this process may run on. [default: every allowed CPU]
    #[arg(long, value_name = "LIST")]
    pub(crate) cores: Option<CoreList>,

    /// This host's id in a cluster, 0..=65535; it is part of every message id.
    /// [default: 0]
    #[arg(long, value_name = "ID")]
    pub(crate) host_id: Option<u64>,

    /// This host's cluster address (IP:PORT): UDP for membership gossip (SWIM) and TCP for
    /// peer links between shards of different hosts, on the same port. Setting it makes this
    /// relay a cluster host; it then needs --host-id and --secret-file (every host shares the
    /// token secret, which also authenticates the peer links). [default: none, a single host]
    #[arg(long, value_name = "IP:PORT", help_heading = "Cluster")]
    pub(crate) cluster_listen: Option<SocketAddr>,

    /// Cluster addresses of other hosts to join through, comma-separated (IP:PORT,…); at most
    /// 64. Any one live host is enough; this host's own address is skipped.
    /// [default: none: wait for others to join this host]
    #[arg(
        long,
        value_name = "IP:PORT,...",
        value_delimiter = ',',
        help_heading = "Cluster"
    )]
    pub(crate) seeds: Option<Vec<SocketAddr>>,

    /// The client address other hosts name when they send clients here (redirects, drain).
    /// Must be a concrete address (not 0.0.0.0). [default: --listen]
    #[arg(long, value_name = "IP:PORT", help_heading = "Cluster")]
    pub(crate) advertise: Option<SocketAddr>,

    /// Weight of each of this host's shards in the ownership map, 1..=1000000: a host's
    /// share of conversations is its shards' weight over the cluster's total. [default: 100]
    #[arg(long, value_name = "WEIGHT", help_heading = "Cluster")]
    pub(crate) weight_per_core: Option<u64>,

    /// Token secret file (`key <id> <64 hex digits>` lines, mode 0600 or stricter); it must
    /// exist. Required when --listen is not a loopback address. [default: <data-dir>/secret,
    /// created on first start]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) secret_file: Option<PathBuf>,

    /// Accept an empty token (every right) on loopback connections. For development only.
    /// [default: false]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub(crate) dev_mode: Option<bool>,

    /// Log filter in tracing's EnvFilter syntax, like info,hark_relay=debug.
    /// [default: info]
    #[arg(long, value_name = "FILTER")]
    pub(crate) log: Option<String>,

    /// Entries each queue between two shards holds, 16..=1048576; when one is full a
    /// listener on the far shard falls back to replay from the store. [default: 65536]
    #[arg(long, value_name = "ENTRIES")]
    pub(crate) mesh_lane_capacity: Option<u64>,

    /// Largest protocol frame accepted (its length prefix), in bytes, 4096..=65536; a larger
    /// one closes the connection (frame_too_long). [default: 65536]
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub(crate) frame_len_max: Option<u64>,

    /// Largest audio payload of one talk frame, in bytes, 1..=frame-len-max - 9; the store
    /// accepts the same size (payload_too_large). [default: 1500]
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub(crate) audio_payload_len_max: Option<u64>,

    /// Sustained talk frames per second per talker (per open message), 1..=1000; faster
    /// sending ends the message (rate_limited). [default: 100]
    #[arg(long, value_name = "FRAMES", help_heading = "Limits")]
    pub(crate) talk_frames_per_second_max: Option<u64>,

    /// Frames a talker may send at once above the sustained rate (the token bucket's size),
    /// in frames, 1..=10000. [default: 50]
    #[arg(long, value_name = "FRAMES", help_heading = "Limits")]
    pub(crate) talk_burst_frames: Option<u64>,

    /// Conversations one connection may listen to at once, 1..=10000
    /// (too_many_conversations). [default: 64]
    #[arg(long, value_name = "COUNT", help_heading = "Limits")]
    pub(crate) conversations_per_connection_max: Option<u64>,

    /// Messages one connection may be talking at once, 1..=1024 (too_many_open_messages).
    /// [default: 4]
    #[arg(long, value_name = "COUNT", help_heading = "Limits")]
    pub(crate) open_messages_per_connection_max: Option<u64>,

    /// Messages open at once in one conversation, 1..=10000 (too_many_open_messages).
    /// [default: 64]
    #[arg(long, value_name = "COUNT", help_heading = "Limits")]
    pub(crate) open_messages_per_conversation_max: Option<u64>,

    /// Connections one shard serves at once, 1..=1000000; the next one is refused
    /// (too_many_connections). [default: 10000]
    #[arg(long, value_name = "COUNT", help_heading = "Limits")]
    pub(crate) connections_per_shard_max: Option<u64>,

    /// Conversations one shard keeps state for at once, 1..=10000000
    /// (too_many_conversations). [default: 100000]
    #[arg(long, value_name = "COUNT", help_heading = "Limits")]
    pub(crate) conversations_per_shard_max: Option<u64>,

    /// A connection silent this long is closed (idle_timeout); a ping goes out at half of
    /// it. In milliseconds, 1000..=3600000. [default: 30000]
    #[arg(long, value_name = "MS", help_heading = "Limits")]
    pub(crate) idle_timeout_ms: Option<u64>,

    /// Unwritten bytes per connection beyond which a listener falls back to replay from the
    /// store, in bytes, 1024..=1073741824 and at least audio-payload-len-max + 13.
    /// [default: 262144]
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub(crate) send_queue_bytes_max: Option<u64>,

    /// Unwritten bytes per connection, control events included, beyond which it is closed,
    /// in bytes, up to 2147483648 and at least send-queue-bytes-max + frame-len-max + 4.
    /// [default: 1048576]
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub(crate) send_queue_bytes_hard_max: Option<u64>,

    /// How long a message whose talker's connection broke stays open for a resume, in
    /// milliseconds, 0..=600000. [default: 10000]
    #[arg(long, value_name = "MS", help_heading = "Limits")]
    pub(crate) talk_resume_grace_ms: Option<u64>,

    /// How long connections stay open after shutdown begins, in milliseconds, 0..=600000.
    /// [default: 5000]
    #[arg(long, value_name = "MS", help_heading = "Limits")]
    pub(crate) shutdown_linger_ms: Option<u64>,

    /// Longest time a frame waits for the store's group commit (one fdatasync), in
    /// milliseconds, 1..=1000. [default: 5]
    #[arg(long, value_name = "MS", help_heading = "Store")]
    pub(crate) commit_interval_ms: Option<u64>,

    /// Commit as soon as this many record bytes pend, before the interval, in bytes,
    /// 4096..=67108864. [default: 262144]
    #[arg(long, value_name = "BYTES", help_heading = "Store")]
    pub(crate) commit_bytes: Option<u64>,

    /// Longest time one message's frames gather into one record before it is committed, in
    /// milliseconds, 1..=1000. [default: 100]
    #[arg(long, value_name = "MS", help_heading = "Store")]
    pub(crate) record_flush_ms: Option<u64>,

    /// Size at which a shard's segment file is sealed and the next one begun, in bytes,
    /// 1048576..=1073741824. [default: 67108864]
    #[arg(long, value_name = "BYTES", help_heading = "Store")]
    pub(crate) segment_bytes_max: Option<u64>,

    /// Delete sealed segments older than this, in milliseconds (60000..=3155760000000), or
    /// `off` to keep them. [default: off]
    #[arg(long, value_name = "MS|off", help_heading = "Store")]
    pub(crate) retention_age_ms: Option<LimitOrOff>,

    /// Delete a shard's oldest sealed segments while its store is larger than this, in
    /// bytes (2 × segment-bytes-max..=1125899906842624), or `off`. [default: off]
    #[arg(long, value_name = "BYTES|off", help_heading = "Store")]
    pub(crate) retention_bytes_max: Option<LimitOrOff>,
}

/// Merges two settings field by field; naming every field makes a new one a compile error
/// until it is merged too.
macro_rules! merged {
    ($upper:expr, $lower:expr, { $($field:ident),* $(,)? }) => {
        Settings { $($field: $upper.$field.or($lower.$field)),* }
    };
}

impl Settings {
    /// These settings where given, `lower`'s elsewhere (flags over the file).
    pub(crate) fn over(self, lower: Settings) -> Settings {
        merged!(self, lower, {
            listen, admin, data_dir, cores, host_id, cluster_listen, seeds, advertise,
            weight_per_core, secret_file, dev_mode, log,
            mesh_lane_capacity, frame_len_max, audio_payload_len_max,
            talk_frames_per_second_max, talk_burst_frames, conversations_per_connection_max,
            open_messages_per_connection_max, open_messages_per_conversation_max,
            connections_per_shard_max, conversations_per_shard_max, idle_timeout_ms,
            send_queue_bytes_max, send_queue_bytes_hard_max, talk_resume_grace_ms,
            shutdown_linger_ms, commit_interval_ms, commit_bytes, record_flush_ms,
            segment_bytes_max, retention_age_ms, retention_bytes_max,
        })
    }
}

/// A limit that can be switched off: a number, or `off` (a TOML integer or the string
/// `"off"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitOrOff {
    /// No limit.
    Off,
    /// This limit.
    Limit(u64),
}

impl LimitOrOff {
    pub(crate) fn from_option(limit: Option<u64>) -> Self {
        limit.map_or(LimitOrOff::Off, LimitOrOff::Limit)
    }
}

/// A [`LimitOrOff`] that is neither a number nor `off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a whole number or `off`")]
pub(crate) struct LimitOrOffInvalid;

impl std::str::FromStr for LimitOrOff {
    type Err = LimitOrOffInvalid;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "off" {
            return Ok(LimitOrOff::Off);
        }
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(LimitOrOffInvalid);
        }
        text.parse()
            .map(LimitOrOff::Limit)
            .map_err(|_| LimitOrOffInvalid)
    }
}

impl Serialize for LimitOrOff {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LimitOrOff::Off => serializer.serialize_str("off"),
            LimitOrOff::Limit(limit) => serializer.serialize_u64(*limit),
        }
    }
}

impl<'de> Deserialize<'de> for LimitOrOff {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LimitOrOffVisitor)
    }
}

struct LimitOrOffVisitor;

impl Visitor<'_> for LimitOrOffVisitor {
    type Value = LimitOrOff;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number or \"off\"")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<LimitOrOff, E> {
        Ok(LimitOrOff::Limit(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<LimitOrOff, E> {
        u64::try_from(value)
            .map(LimitOrOff::Limit)
            .map_err(|_| E::custom("expected a whole number or \"off\", found a negative number"))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<LimitOrOff, E> {
        if text == "off" {
            Ok(LimitOrOff::Off)
        } else {
            Err(E::custom("expected a whole number or \"off\""))
        }
    }
}
