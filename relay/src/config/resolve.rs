//! From merged [`Settings`] to a [`RelayConfig`]: defaults for what was not given, every bound
//! checked, the shard's and the store's configurations derived consistently.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use hark_core::protocol::{
    AUDIO_FRAME_HEADER_LEN, AUDIO_PAYLOAD_LEN_MAX, FRAME_LEN_MAX, FRAME_LEN_MAX_MIN,
};
use hark_core::shard::ShardConfig;
use hark_storage::StoreConfig;
use hark_storage::config::SEGMENT_BYTES_LIMIT;
use hark_storage::format::{FRAME_LEN_BYTES, FRAMES_PREFIX_BYTES, RECORD_HEADER_BYTES};

use super::cores::{CORE_ID_MAX, CoreList, render_core_list};
use super::settings::{LimitOrOff, Settings};
use super::{ClusterSettings, ConfigError, LOG_FILTER_LEN_MAX, RelayConfig, SEEDS_MAX};
use crate::mesh::{LANE_CAPACITY_MAX, MESH_SHARDS_MAX};

/// Default client address: loopback, so a first start exposes nothing.
pub(crate) const LISTEN_DEFAULT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7400);
/// Default admin address.
pub(crate) const ADMIN_DEFAULT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7401);
/// Default data dir, relative to the working directory.
pub(crate) const DATA_DIR_DEFAULT: &str = "./hark-data";
/// Default log filter.
pub(crate) const LOG_DEFAULT: &str = "info";
/// Default entries per cross-shard queue.
pub(crate) const MESH_LANE_CAPACITY_DEFAULT: usize = 65_536;

/// Bytes of a frame's length prefix: a whole frame on the wire is this plus its length.
const FRAME_PREFIX_BYTES: u64 = 4;
/// Bytes of a talk frame's body ahead of its payload (type, stream handle, sequence number):
/// `audio_payload_len_max` + this must fit in `frame_len_max`.
const TALK_FRAME_OVERHEAD_BYTES: u64 = AUDIO_FRAME_HEADER_LEN as u64 - FRAME_PREFIX_BYTES;
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// The inclusive range a setting must lie in, and what it counts.
pub(crate) struct Bound {
    pub(crate) key: &'static str,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) unit: &'static str,
}

impl Bound {
    /// `value` converted to the field's type, or the error naming the bound.
    fn check<T: TryFrom<u64>>(&self, value: u64) -> Result<T, ConfigError> {
        let out_of_range = || ConfigError::OutOfRange {
            key: self.key,
            value,
            min: self.min,
            max: self.max,
            unit: self.unit,
        };
        if value < self.min || value > self.max {
            return Err(out_of_range());
        }
        // Every bound's max fits its field's type, so this only fails on a wrong table.
        T::try_from(value).map_err(|_| out_of_range())
    }
}

const fn bound(key: &'static str, min: u64, max: u64, unit: &'static str) -> Bound {
    Bound {
        key,
        min,
        max,
        unit,
    }
}

const HOST_ID: Bound = bound("host_id", 0, u16::MAX as u64, "host id");
const WEIGHT_PER_CORE: Bound = bound("weight_per_core", 1, 1_000_000, "weight");
const WEIGHT_PER_CORE_DEFAULT: u64 = 100;
const MESH_LANE_CAPACITY: Bound = bound(
    "mesh_lane_capacity",
    16,
    LANE_CAPACITY_MAX as u64,
    "entries",
);
const FRAME_LEN: Bound = bound(
    "frame_len_max",
    FRAME_LEN_MAX_MIN as u64,
    FRAME_LEN_MAX as u64,
    "bytes",
);
const AUDIO_PAYLOAD_LEN: Bound = bound(
    "audio_payload_len_max",
    1,
    AUDIO_PAYLOAD_LEN_MAX as u64,
    "bytes",
);
const TALK_FRAMES_PER_SECOND: Bound =
    bound("talk_frames_per_second_max", 1, 65_535, "frames per second");
const TALK_BURST: Bound = bound("talk_burst_frames", 1, 1_000_000, "frames");
const CONVERSATIONS_PER_CONNECTION: Bound = bound(
    "conversations_per_connection_max",
    1,
    10_000,
    "conversations",
);
const OPEN_MESSAGES_PER_CONNECTION: Bound =
    bound("open_messages_per_connection_max", 1, 1024, "messages");
const OPEN_MESSAGES_PER_CONVERSATION: Bound =
    bound("open_messages_per_conversation_max", 1, 10_000, "messages");
const CONNECTIONS_PER_SHARD: Bound =
    bound("connections_per_shard_max", 1, 1_000_000, "connections");
const CONVERSATIONS_PER_SHARD: Bound = bound(
    "conversations_per_shard_max",
    1,
    10_000_000,
    "conversations",
);
const IDLE_TIMEOUT: Bound = bound("idle_timeout_ms", 1000, 3_600_000, "milliseconds");
const SEND_QUEUE: Bound = bound("send_queue_bytes_max", 1024, GIB, "bytes");
/// Twice the soft cap's range, so the soft cap's largest value still has room for one frame.
const SEND_QUEUE_HARD: Bound = bound("send_queue_bytes_hard_max", 1024, 2 * GIB, "bytes");
const TALK_RESUME_GRACE: Bound = bound("talk_resume_grace_ms", 0, 600_000, "milliseconds");
const SHUTDOWN_LINGER: Bound = bound("shutdown_linger_ms", 0, 600_000, "milliseconds");
const COMMIT_INTERVAL: Bound = bound("commit_interval_ms", 1, 1000, "milliseconds");
/// At most the store's default `pending_bytes_max` (64 MiB), which is not configurable.
const COMMIT_BYTES: Bound = bound("commit_bytes", 4096, 64 * MIB, "bytes");
const RECORD_FLUSH: Bound = bound("record_flush_ms", 1, 1000, "milliseconds");
const SEGMENT_BYTES: Bound = bound("segment_bytes_max", MIB, SEGMENT_BYTES_LIMIT, "bytes");
/// One minute to 100 years (of 365.25 days).
const RETENTION_AGE: Bound = bound(
    "retention_age_ms",
    60_000,
    3_155_760_000_000,
    "milliseconds",
);
/// Two of the smallest segments to 1 PiB, per shard.
const RETENTION_BYTES: Bound = bound("retention_bytes_max", 2 * MIB, 1 << 50, "bytes");

/// Every bounded setting, for tests that walk them all.
#[cfg(test)]
pub(crate) const BOUNDS: [&Bound; 22] = [
    &HOST_ID,
    &MESH_LANE_CAPACITY,
    &FRAME_LEN,
    &AUDIO_PAYLOAD_LEN,
    &TALK_FRAMES_PER_SECOND,
    &TALK_BURST,
    &CONVERSATIONS_PER_CONNECTION,
    &OPEN_MESSAGES_PER_CONNECTION,
    &OPEN_MESSAGES_PER_CONVERSATION,
    &CONNECTIONS_PER_SHARD,
    &CONVERSATIONS_PER_SHARD,
    &IDLE_TIMEOUT,
    &SEND_QUEUE,
    &SEND_QUEUE_HARD,
    &TALK_RESUME_GRACE,
    &SHUTDOWN_LINGER,
    &COMMIT_INTERVAL,
    &COMMIT_BYTES,
    &RECORD_FLUSH,
    &SEGMENT_BYTES,
    &RETENTION_AGE,
    &RETENTION_BYTES,
];

/// What the configuration needs to know about the machine.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// CPUs this process may run on, sorted and distinct, each at most [`CORE_ID_MAX`].
    pub(crate) allowed_cores: Vec<usize>,
}

impl Host {
    /// This process's CPU affinity.
    pub(crate) fn current() -> Result<Self, ConfigError> {
        let ids = core_affinity::get_core_ids().ok_or(ConfigError::CoresUnknown)?;
        let mut allowed_cores: Vec<usize> = ids
            .into_iter()
            .map(|core| core.id)
            .filter(|&id| id <= CORE_ID_MAX)
            .collect();
        allowed_cores.sort_unstable();
        allowed_cores.dedup();
        if allowed_cores.is_empty() {
            return Err(ConfigError::CoresUnknown);
        }
        Ok(Self { allowed_cores })
    }
}

/// Fills defaults, checks bounds and derives the shard's and store's configurations.
pub(crate) fn resolve(settings: Settings, host: &Host) -> Result<RelayConfig, ConfigError> {
    let shard = shard_config(&settings)?;
    let store = store_config(&settings, &shard)?;
    let listen = settings.listen.unwrap_or(LISTEN_DEFAULT);
    let cluster = cluster_settings(&settings, listen)?;

    let data_dir = settings
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT));
    check_data_dir(&data_dir)?;
    if settings
        .secret_file
        .as_ref()
        .is_some_and(|path| path.as_os_str().is_empty())
    {
        return Err(ConfigError::PathEmpty { key: "secret_file" });
    }
    let cores = match settings.cores {
        Some(CoreList(cores)) => allowed(cores, host)?,
        // CORE_ID_MAX + 1 == MESH_SHARDS_MAX: the mesh takes every CPU core_affinity can pin.
        None => host
            .allowed_cores
            .iter()
            .copied()
            .take(MESH_SHARDS_MAX)
            .collect(),
    };
    let log = settings.log.unwrap_or_else(|| LOG_DEFAULT.to_owned());
    check_log_filter(&log)?;

    Ok(RelayConfig {
        listen,
        admin: settings.admin.unwrap_or(ADMIN_DEFAULT),
        data_dir,
        cores,
        host_id: HOST_ID.check(settings.host_id.unwrap_or(0))?,
        cluster,
        secret_file: settings.secret_file,
        dev_mode: shard.dev_mode,
        mesh_lane_capacity: MESH_LANE_CAPACITY.check(
            settings
                .mesh_lane_capacity
                .unwrap_or(MESH_LANE_CAPACITY_DEFAULT as u64),
        )?,
        shard,
        store,
        log,
    })
}

/// The cluster part: only with `cluster_listen`; then a host id and a shared secret file
/// are required, and the other cluster keys are checked.
fn cluster_settings(
    settings: &Settings,
    listen: SocketAddr,
) -> Result<Option<ClusterSettings>, ConfigError> {
    let Some(cluster_listen) = settings.cluster_listen else {
        for (key, given) in [
            ("seeds", settings.seeds.is_some()),
            ("advertise", settings.advertise.is_some()),
            ("weight_per_core", settings.weight_per_core.is_some()),
        ] {
            if given {
                return Err(ConfigError::Inconsistent {
                    key,
                    reason: "it only applies to a cluster host; set cluster_listen too".into(),
                });
            }
        }
        return Ok(None);
    };
    if settings.host_id.is_none() {
        return Err(ConfigError::Inconsistent {
            key: "host_id",
            reason: "a cluster host needs an explicit host id, distinct on every host".into(),
        });
    }
    if settings.secret_file.is_none() {
        return Err(ConfigError::Inconsistent {
            key: "secret_file",
            reason: "every host of a cluster must share one token secret file (it also \
                     authenticates the peer links); give it with secret_file"
                .into(),
        });
    }
    if cluster_listen.ip().is_unspecified() {
        return Err(ConfigError::Inconsistent {
            key: "cluster_listen",
            reason: format!(
                "{cluster_listen} is not an address other hosts can reach; give this host's \
                 IP (port 0 picks a free port, printed at start)"
            ),
        });
    }
    if cluster_listen == listen && listen.port() != 0 {
        return Err(ConfigError::Inconsistent {
            key: "cluster_listen",
            reason: "it must differ from listen (clients and peers use separate ports)".into(),
        });
    }
    let seeds: Vec<SocketAddr> = settings
        .seeds
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|seed| *seed != cluster_listen)
        .collect();
    if seeds.len() > SEEDS_MAX {
        return Err(ConfigError::Inconsistent {
            key: "seeds",
            reason: format!("{} addresses; at most {SEEDS_MAX}", seeds.len()),
        });
    }
    // Without `advertise`, the bound client address (its port resolved when 0) is used.
    let advertise = settings.advertise;
    let reachable = |addr: SocketAddr| !addr.ip().is_unspecified();
    let bad = match advertise {
        Some(addr) => (!reachable(addr) || addr.port() == 0).then_some(addr),
        None => (!reachable(listen)).then_some(listen),
    };
    if let Some(addr) = bad {
        return Err(ConfigError::Inconsistent {
            key: "advertise",
            reason: format!(
                "{addr} is not an address a client can reach; set advertise to this host's \
                 client address"
            ),
        });
    }
    let weight_per_core =
        WEIGHT_PER_CORE.check(settings.weight_per_core.unwrap_or(WEIGHT_PER_CORE_DEFAULT))?;
    Ok(Some(ClusterSettings {
        listen: cluster_listen,
        seeds,
        advertise,
        weight_per_core,
    }))
}

fn shard_config(settings: &Settings) -> Result<ShardConfig, ConfigError> {
    let default = ShardConfig::default();
    let frame_len_max: u32 = FRAME_LEN.check(
        settings
            .frame_len_max
            .unwrap_or(default.frame_len_max.into()),
    )?;
    let audio_payload_len_max: u32 = AUDIO_PAYLOAD_LEN.check(
        settings
            .audio_payload_len_max
            .unwrap_or(default.audio_payload_len_max.into()),
    )?;
    let payload_room = u64::from(frame_len_max) - TALK_FRAME_OVERHEAD_BYTES;
    if u64::from(audio_payload_len_max) > payload_room {
        return Err(ConfigError::Inconsistent {
            key: AUDIO_PAYLOAD_LEN.key,
            reason: format!(
                "{audio_payload_len_max} bytes does not fit in a frame of frame_len_max = \
                 {frame_len_max} bytes with its {TALK_FRAME_OVERHEAD_BYTES}-byte talk header; \
                 the most is {payload_room}"
            ),
        });
    }
    let send_queue_bytes_max: usize = SEND_QUEUE.check(
        settings
            .send_queue_bytes_max
            .unwrap_or(default.send_queue_bytes_max as u64),
    )?;
    let live_frame_event = AUDIO_FRAME_HEADER_LEN as u64 + u64::from(audio_payload_len_max);
    if (send_queue_bytes_max as u64) < live_frame_event {
        return Err(ConfigError::Inconsistent {
            key: SEND_QUEUE.key,
            reason: format!(
                "{send_queue_bytes_max} bytes cannot hold one live frame of \
                 audio_payload_len_max = {audio_payload_len_max} bytes with its \
                 {AUDIO_FRAME_HEADER_LEN}-byte header, so such frames could never go out live; \
                 the least is {live_frame_event}"
            ),
        });
    }
    let send_queue_bytes_hard_max: usize = SEND_QUEUE_HARD.check(
        settings
            .send_queue_bytes_hard_max
            .unwrap_or(default.send_queue_bytes_hard_max as u64),
    )?;
    // Replay fills the queue up to the soft limit and may then add one more event, at most one
    // largest frame: a client that keeps reading must never cross the hard cap.
    let hard_least = send_queue_bytes_max as u64 + u64::from(frame_len_max) + FRAME_PREFIX_BYTES;
    if (send_queue_bytes_hard_max as u64) < hard_least {
        return Err(ConfigError::Inconsistent {
            key: SEND_QUEUE_HARD.key,
            reason: format!(
                "{send_queue_bytes_hard_max} bytes is less than send_queue_bytes_max + one \
                 largest frame (frame_len_max + 4) = {hard_least} bytes, so a client that \
                 reads could be closed"
            ),
        });
    }
    Ok(ShardConfig {
        frame_len_max,
        audio_payload_len_max,
        frames_per_second_max: TALK_FRAMES_PER_SECOND.check(
            settings
                .talk_frames_per_second_max
                .unwrap_or(default.frames_per_second_max.into()),
        )?,
        rate_burst_frames: TALK_BURST.check(
            settings
                .talk_burst_frames
                .unwrap_or(default.rate_burst_frames.into()),
        )?,
        talk_streams_max: OPEN_MESSAGES_PER_CONNECTION.check(
            settings
                .open_messages_per_connection_max
                .unwrap_or(default.talk_streams_max.into()),
        )?,
        open_messages_per_conversation_max: OPEN_MESSAGES_PER_CONVERSATION.check(
            settings
                .open_messages_per_conversation_max
                .unwrap_or(default.open_messages_per_conversation_max as u64),
        )?,
        subs_max: CONVERSATIONS_PER_CONNECTION.check(
            settings
                .conversations_per_connection_max
                .unwrap_or(default.subs_max.into()),
        )?,
        connections_max: CONNECTIONS_PER_SHARD.check(
            settings
                .connections_per_shard_max
                .unwrap_or(default.connections_max as u64),
        )?,
        conversations_max: CONVERSATIONS_PER_SHARD.check(
            settings
                .conversations_per_shard_max
                .unwrap_or(default.conversations_max as u64),
        )?,
        idle_timeout_ms: IDLE_TIMEOUT.check(
            settings
                .idle_timeout_ms
                .unwrap_or(default.idle_timeout_ms.into()),
        )?,
        send_queue_bytes_max,
        send_queue_bytes_hard_max,
        talk_resume_grace_ms: TALK_RESUME_GRACE.check(
            settings
                .talk_resume_grace_ms
                .unwrap_or(default.talk_resume_grace_ms),
        )?,
        shutdown_linger_ms: SHUTDOWN_LINGER.check(
            settings
                .shutdown_linger_ms
                .unwrap_or(default.shutdown_linger_ms),
        )?,
        dev_mode: settings.dev_mode.unwrap_or(default.dev_mode),
        ..default
    })
}

fn store_config(settings: &Settings, shard: &ShardConfig) -> Result<StoreConfig, ConfigError> {
    let default = StoreConfig::default();
    let segment_bytes_max: u64 = SEGMENT_BYTES.check(
        settings
            .segment_bytes_max
            .unwrap_or(default.segment_bytes_max),
    )?;
    let retention_age_ms = match settings
        .retention_age_ms
        .unwrap_or(LimitOrOff::from_option(default.retention_age_ms))
    {
        LimitOrOff::Off => None,
        LimitOrOff::Limit(age_ms) => Some(RETENTION_AGE.check(age_ms)?),
    };
    let retention_bytes_max = match settings
        .retention_bytes_max
        .unwrap_or(LimitOrOff::from_option(default.retention_bytes_max))
    {
        LimitOrOff::Off => None,
        LimitOrOff::Limit(bytes) => {
            let bytes: u64 = RETENTION_BYTES.check(bytes)?;
            if bytes < 2 * segment_bytes_max {
                return Err(ConfigError::Inconsistent {
                    key: RETENTION_BYTES.key,
                    reason: format!(
                        "{bytes} bytes is less than two segments of segment_bytes_max = \
                         {segment_bytes_max} bytes; retention would delete every segment as \
                         soon as it is sealed"
                    ),
                });
            }
            Some(bytes)
        }
    };
    // The store must accept every payload the shard accepts, and a record must hold one.
    let frame_bytes_max = shard.audio_payload_len_max as usize;
    let one_frame_record =
        RECORD_HEADER_BYTES + FRAMES_PREFIX_BYTES + FRAME_LEN_BYTES + frame_bytes_max;
    let store = StoreConfig {
        commit_interval_ms: COMMIT_INTERVAL.check(
            settings
                .commit_interval_ms
                .unwrap_or(default.commit_interval_ms),
        )?,
        commit_bytes: COMMIT_BYTES
            .check(settings.commit_bytes.unwrap_or(default.commit_bytes as u64))?,
        record_flush_ms: RECORD_FLUSH
            .check(settings.record_flush_ms.unwrap_or(default.record_flush_ms))?,
        frame_bytes_max,
        record_bytes_max: default.record_bytes_max.max(one_frame_record),
        segment_bytes_max,
        retention_age_ms,
        retention_bytes_max,
        ..default
    };
    store.validate().map_err(ConfigError::Store)?;
    Ok(store)
}

fn check_data_dir(path: &Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(ConfigError::PathEmpty { key: "data_dir" });
    }
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(ConfigError::DataDirNotDirectory {
            path: path.to_owned(),
        }),
        // Created on first start.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ConfigError::DataDirUnusable {
            path: path.to_owned(),
            source,
        }),
    }
}

fn allowed(cores: Vec<usize>, host: &Host) -> Result<Vec<usize>, ConfigError> {
    if let Some(&core) = cores
        .iter()
        .find(|core| host.allowed_cores.binary_search(core).is_err())
    {
        return Err(ConfigError::CoreNotAllowed {
            core,
            allowed: render_core_list(&host.allowed_cores),
        });
    }
    Ok(cores)
}

fn check_log_filter(filter: &str) -> Result<(), ConfigError> {
    if filter.len() > LOG_FILTER_LEN_MAX {
        return Err(ConfigError::LogFilterInvalid {
            reason: format!(
                "{} bytes long, the limit is {LOG_FILTER_LEN_MAX}",
                filter.len()
            ),
        });
    }
    if filter.trim().is_empty() {
        return Err(ConfigError::LogFilterInvalid {
            reason: "empty; use `info` or `off`".to_owned(),
        });
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|error| ConfigError::LogFilterInvalid {
            reason: error.to_string(),
        })
}

/// The settings that [`resolve`] turns back into `config` (every key given).
pub(crate) fn settings_of(config: &RelayConfig) -> Settings {
    let shard = &config.shard;
    let store = &config.store;
    let lossy = |path: &Path| PathBuf::from(path.to_string_lossy().into_owned());
    Settings {
        listen: Some(config.listen),
        admin: Some(config.admin),
        data_dir: Some(lossy(&config.data_dir)),
        cores: Some(CoreList(config.cores.clone())),
        host_id: Some(config.host_id.into()),
        cluster_listen: config.cluster.as_ref().map(|c| c.listen),
        seeds: config.cluster.as_ref().map(|c| c.seeds.clone()),
        advertise: config.cluster.as_ref().and_then(|c| c.advertise),
        weight_per_core: config.cluster.as_ref().map(|c| c.weight_per_core.into()),
        secret_file: config.secret_file.as_deref().map(lossy),
        dev_mode: Some(config.dev_mode),
        log: Some(config.log.clone()),
        mesh_lane_capacity: Some(config.mesh_lane_capacity as u64),
        frame_len_max: Some(shard.frame_len_max.into()),
        audio_payload_len_max: Some(shard.audio_payload_len_max.into()),
        talk_frames_per_second_max: Some(shard.frames_per_second_max.into()),
        talk_burst_frames: Some(shard.rate_burst_frames.into()),
        conversations_per_connection_max: Some(shard.subs_max.into()),
        open_messages_per_connection_max: Some(shard.talk_streams_max.into()),
        open_messages_per_conversation_max: Some(shard.open_messages_per_conversation_max as u64),
        connections_per_shard_max: Some(shard.connections_max as u64),
        conversations_per_shard_max: Some(shard.conversations_max as u64),
        idle_timeout_ms: Some(shard.idle_timeout_ms.into()),
        send_queue_bytes_max: Some(shard.send_queue_bytes_max as u64),
        send_queue_bytes_hard_max: Some(shard.send_queue_bytes_hard_max as u64),
        talk_resume_grace_ms: Some(shard.talk_resume_grace_ms),
        shutdown_linger_ms: Some(shard.shutdown_linger_ms),
        commit_interval_ms: Some(store.commit_interval_ms),
        commit_bytes: Some(store.commit_bytes as u64),
        record_flush_ms: Some(store.record_flush_ms),
        segment_bytes_max: Some(store.segment_bytes_max),
        retention_age_ms: Some(LimitOrOff::from_option(store.retention_age_ms)),
        retention_bytes_max: Some(LimitOrOff::from_option(store.retention_bytes_max)),
    }
}
