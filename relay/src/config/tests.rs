use super::resolve::{BOUNDS, Host, resolve};
use super::*;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use clap::CommandFactory;
use clap::error::ErrorKind;
use proptest::prelude::*;

/// A machine that lets the process run on CPUs 0..=3, whatever the test machine has.
fn four_cores() -> Host {
    Host {
        allowed_cores: vec![0, 1, 2, 3],
    }
}

/// `text` as a config file on a four-core machine.
fn resolve_toml(text: &str) -> Result<RelayConfig, ConfigError> {
    resolve(settings_from_toml(text, None)?, &four_cores())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

fn out_of_range_key(result: Result<RelayConfig, ConfigError>) -> &'static str {
    match result {
        Err(ConfigError::OutOfRange { key, .. }) => key,
        other => panic!("expected OutOfRange, got {other:?}"),
    }
}

fn inconsistent_key(result: Result<RelayConfig, ConfigError>) -> &'static str {
    match result {
        Err(ConfigError::Inconsistent { key, .. }) => key,
        other => panic!("expected Inconsistent, got {other:?}"),
    }
}

#[test]
fn defaults_are_the_issues() {
    let config = RelayConfig::from_args(["hark-relay"]).unwrap();
    assert_eq!(config.listen, loopback(7400));
    assert_eq!(config.admin, loopback(7401));
    assert_eq!(config.data_dir, PathBuf::from("./hark-data"));
    assert_eq!(config.cores, Host::current().unwrap().allowed_cores);
    assert!(!config.cores.is_empty());
    assert_eq!(config.host_id, 0);
    assert_eq!(config.secret_file, None);
    assert!(!config.dev_mode);
    assert_eq!(config.mesh_lane_capacity, 65_536);
    assert_eq!(config.shard, ShardConfig::default());
    assert_eq!(
        config.store,
        StoreConfig {
            frame_bytes_max: 1500,
            ..StoreConfig::default()
        }
    );
    assert_eq!(config.log, "info");
    assert_eq!(config.secret_path(), PathBuf::from("./hark-data/secret"));
    // An empty file is the defaults too.
    assert_eq!(RelayConfig::from_toml_str("").unwrap(), config);
}

#[test]
fn flag_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\nidle_timeout_ms = 5000\ncommit_interval_ms = 7\n\
         dev_mode = true\n",
    )
    .unwrap();
    let config = RelayConfig::from_args([
        "hark-relay".as_ref(),
        "--idle-timeout-ms".as_ref(),
        "6000".as_ref(),
        "--config".as_ref(),
        file.as_os_str(),
        "--dev-mode=false".as_ref(),
    ])
    .unwrap();
    assert_eq!(config.shard.idle_timeout_ms, 6000, "flag over file");
    assert!(!config.dev_mode && !config.shard.dev_mode, "flag over file");
    assert_eq!(config.store.commit_interval_ms, 7, "file over default");
    assert_eq!(config.listen, loopback(9000), "file over default");
    assert_eq!(config.shard.frames_per_second_max, 100, "default");
    assert_eq!(config.admin, loopback(7401), "default");
}

#[test]
fn a_bare_dev_mode_flag_turns_it_on() {
    let config = RelayConfig::from_args(["hark-relay", "--dev-mode"]).unwrap();
    assert!(config.dev_mode && config.shard.dev_mode);
}

/// A config that sets every key away from its default.
const EVERY_KEY: &str = r#"
listen = "127.0.0.1:9400"
admin = "[::1]:9401"
data_dir = "/nonexistent/hark-test-data"
cores = [3, 1]
host_id = 7
secret_file = "/nonexistent/secret"
dev_mode = true
log = "debug,hark_relay=trace"
mesh_lane_capacity = 1024
frame_len_max = 8192
audio_payload_len_max = 4000
talk_frames_per_second_max = 50
talk_burst_frames = 20
conversations_per_connection_max = 10
open_messages_per_connection_max = 2
open_messages_per_conversation_max = 8
connections_per_shard_max = 500
conversations_per_shard_max = 1000
idle_timeout_ms = 15000
send_queue_bytes_max = 65536
send_queue_bytes_hard_max = 131072
talk_resume_grace_ms = 0
shutdown_linger_ms = 100
commit_interval_ms = 2
commit_bytes = 65536
record_flush_ms = 50
segment_bytes_max = 16777216
retention_age_ms = 86400000
retention_bytes_max = "off"
"#;

#[test]
fn every_key_reaches_its_field() {
    let config = resolve_toml(EVERY_KEY).unwrap();
    assert_eq!(config.listen, loopback(9400));
    assert_eq!(config.admin, "[::1]:9401".parse::<SocketAddr>().unwrap());
    assert_eq!(
        config.data_dir,
        PathBuf::from("/nonexistent/hark-test-data")
    );
    assert_eq!(config.cores, vec![1, 3]);
    assert_eq!(config.host_id, 7);
    assert_eq!(
        config.secret_file,
        Some(PathBuf::from("/nonexistent/secret"))
    );
    assert_eq!(config.secret_path(), PathBuf::from("/nonexistent/secret"));
    assert!(config.dev_mode);
    assert_eq!(config.log, "debug,hark_relay=trace");
    assert_eq!(config.mesh_lane_capacity, 1024);
    let expected_shard = ShardConfig {
        frame_len_max: 8192,
        audio_payload_len_max: 4000,
        frames_per_second_max: 50,
        rate_burst_frames: 20,
        subs_max: 10,
        talk_streams_max: 2,
        open_messages_per_conversation_max: 8,
        connections_max: 500,
        conversations_max: 1000,
        idle_timeout_ms: 15000,
        send_queue_bytes_max: 65536,
        send_queue_bytes_hard_max: 131072,
        talk_resume_grace_ms: 0,
        shutdown_linger_ms: 100,
        dev_mode: true,
        ..ShardConfig::default()
    };
    assert_eq!(config.shard, expected_shard);
    let expected_store = StoreConfig {
        commit_interval_ms: 2,
        commit_bytes: 65536,
        record_flush_ms: 50,
        frame_bytes_max: 4000,
        segment_bytes_max: 16 << 20,
        retention_age_ms: Some(86_400_000),
        retention_bytes_max: None,
        ..StoreConfig::default()
    };
    assert_eq!(config.store, expected_store);
}

#[test]
fn rendered_config_reads_back_equal() {
    for text in [
        "",
        EVERY_KEY,
        "retention_bytes_max = 1073741824\nretention_age_ms = \"off\"",
    ] {
        let config = resolve_toml(text).unwrap();
        let rendered = config.to_toml();
        assert_eq!(resolve_toml(&rendered).unwrap(), config, "{rendered}");
    }
}

#[test]
fn store_accepts_every_payload_the_shard_accepts() {
    let config = resolve_toml("audio_payload_len_max = 65527").unwrap();
    assert_eq!(config.store.frame_bytes_max, 65527);
    // The record grows to hold one largest frame: header 28 + prefix 8 + length 2.
    assert_eq!(config.store.record_bytes_max, 65527 + 38);
    config.store.validate().unwrap();
}

#[test]
fn each_bound_refuses_values_just_outside() {
    for bound in BOUNDS {
        let above = format!("{} = {}", bound.key, bound.max + 1);
        assert_eq!(out_of_range_key(resolve_toml(&above)), bound.key, "{above}");
        if bound.min > 0 {
            let below = format!("{} = {}", bound.key, bound.min - 1);
            assert_eq!(out_of_range_key(resolve_toml(&below)), bound.key, "{below}");
        }
    }
    // And the error says the bounds.
    let text = resolve_toml("idle_timeout_ms = 999")
        .unwrap_err()
        .to_string();
    assert_eq!(
        text,
        "idle_timeout_ms = 999 is out of range: it must be 1000..=3600000 (milliseconds)"
    );
}

#[test]
fn bounds_themselves_are_accepted() {
    for text in [
        "frame_len_max = 4096\naudio_payload_len_max = 4087\nsend_queue_bytes_max = 4100",
        "frame_len_max = 65536\naudio_payload_len_max = 65527\nsend_queue_bytes_max = 65540",
        "idle_timeout_ms = 1000\ncommit_interval_ms = 1000\nrecord_flush_ms = 1",
        "talk_frames_per_second_max = 65535\ntalk_burst_frames = 1000000\nhost_id = 65535",
        "mesh_lane_capacity = 16\nconversations_per_connection_max = 1",
        "mesh_lane_capacity = 1048576\nconnections_per_shard_max = 1000000",
        "segment_bytes_max = 1048576\nretention_bytes_max = 2097152\nretention_age_ms = 60000",
        "segment_bytes_max = 1073741824\ncommit_bytes = 67108864",
        "send_queue_bytes_max = 1024\naudio_payload_len_max = 1011",
        "send_queue_bytes_max = 1073741824\nsend_queue_bytes_hard_max = 2147483648",
    ] {
        if let Err(error) = resolve_toml(text) {
            panic!("{text}: {error}");
        }
    }
}

#[test]
fn inconsistent_limits_are_refused_naming_both() {
    let error = resolve_toml("frame_len_max = 4096\naudio_payload_len_max = 4088");
    assert_eq!(inconsistent_key(error), "audio_payload_len_max");
    let error = resolve_toml("send_queue_bytes_max = 1512");
    assert_eq!(inconsistent_key(error), "send_queue_bytes_max");
    let error = resolve_toml("send_queue_bytes_max = 1048576");
    assert_eq!(inconsistent_key(error), "send_queue_bytes_hard_max");
    let error = resolve_toml("send_queue_bytes_max = 4096\nsend_queue_bytes_hard_max = 69635");
    assert_eq!(inconsistent_key(error), "send_queue_bytes_hard_max");
    resolve_toml("send_queue_bytes_max = 4096\nsend_queue_bytes_hard_max = 69636").unwrap();
    let error = resolve_toml("segment_bytes_max = 4194304\nretention_bytes_max = 8388607");
    assert_eq!(inconsistent_key(error), "retention_bytes_max");
    let text = resolve_toml("frame_len_max = 4096\naudio_payload_len_max = 4088")
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("frame_len_max = 4096") && text.contains("4087"),
        "{text}"
    );
}

#[test]
fn command_line_mistakes_and_help_are_clap_errors() {
    let kind = |args: &[&str]| match RelayConfig::from_args(args) {
        Err(ConfigError::Clap(error)) => error.kind(),
        other => panic!("{args:?}: expected a clap error, got {other:?}"),
    };
    assert_eq!(kind(&["hark-relay", "--help"]), ErrorKind::DisplayHelp);
    assert_eq!(kind(&["hark-relay", "-h"]), ErrorKind::DisplayHelp);
    assert_eq!(
        kind(&["hark-relay", "--version"]),
        ErrorKind::DisplayVersion
    );
    assert_eq!(
        kind(&["hark-relay", "--listen-on", "x"]),
        ErrorKind::UnknownArgument
    );
    assert_eq!(
        kind(&["hark-relay", "--listen", "localhost"]),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        kind(&["hark-relay", "--idle-timeout-ms", "-5"]),
        ErrorKind::UnknownArgument
    );
    assert_eq!(
        kind(&["hark-relay", "--idle-timeout-ms", "5s"]),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        kind(&["hark-relay", "--cores", "5-2"]),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        kind(&["hark-relay", "--retention-age-ms", "never"]),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        kind(&["hark-relay", "--dev-mode=maybe"]),
        ErrorKind::InvalidValue
    );
    assert_eq!(kind(&["hark-relay", "stray"]), ErrorKind::UnknownArgument);
}

#[test]
fn config_file_mistakes_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let result = RelayConfig::from_args([
        "hark-relay".as_ref(),
        "--config".as_ref(),
        missing.as_os_str(),
    ]);
    assert!(
        matches!(result, Err(ConfigError::ConfigFileUnreadable { path, .. }) if path == missing)
    );

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "idle_timeout = 5000\n").unwrap();
    let result =
        RelayConfig::from_args(["hark-relay".as_ref(), "--config".as_ref(), typo.as_os_str()]);
    let error = result.unwrap_err();
    assert!(
        matches!(&error, ConfigError::ConfigFileInvalid { path: Some(path), .. } if *path == typo)
    );
    let text = error.to_string();
    assert!(
        text.contains("typo.toml") && text.contains("`idle_timeout`"),
        "{text}"
    );

    let huge = dir.path().join("huge.toml");
    let mut text = "#".repeat(CONFIG_FILE_LEN_MAX as usize);
    std::fs::write(&huge, &text).unwrap();
    let result =
        RelayConfig::from_args(["hark-relay".as_ref(), "--config".as_ref(), huge.as_os_str()]);
    assert!(
        result.is_ok(),
        "a file exactly at the limit is read: {result:?}"
    );
    text.push('\n');
    std::fs::write(&huge, &text).unwrap();
    let result =
        RelayConfig::from_args(["hark-relay".as_ref(), "--config".as_ref(), huge.as_os_str()]);
    assert!(
        matches!(result, Err(ConfigError::ConfigFileTooLong { path: Some(path) }) if path == huge)
    );
    assert!(matches!(
        RelayConfig::from_toml_str(&text),
        Err(ConfigError::ConfigFileTooLong { path: None })
    ));

    for bad in [
        "idle_timeout_ms = \"5000\"",
        "idle_timeout_ms = -1",
        "idle_timeout_ms = 1.5",
        "listen = \"localhost:7400\"",
        "cores = []",
        "cores = \"\"",
        "cores = [1024]",
        "cores = [-1]",
        "cores = \"0-\"",
        "retention_age_ms = \"never\"",
        "retention_age_ms = -5",
        "dev_mode = \"yes\"",
        "config = \"other.toml\"",
        "[limits]\nframe_len_max = 4096",
        "frame_len_max = 4096\nframe_len_max = 8192",
        "not toml at all",
    ] {
        assert!(
            matches!(
                resolve_toml(bad),
                Err(ConfigError::ConfigFileInvalid { path: None, .. })
            ),
            "{bad}: {:?}",
            resolve_toml(bad)
        );
    }
}

#[test]
fn cores_must_be_allowed() {
    assert_eq!(
        resolve_toml("cores = \"0-3\"").unwrap().cores,
        vec![0, 1, 2, 3]
    );
    assert_eq!(resolve_toml("cores = [2, 0, 2]").unwrap().cores, vec![0, 2]);
    match resolve_toml("cores = \"2-5\"") {
        Err(ConfigError::CoreNotAllowed { core, allowed }) => {
            assert_eq!((core, allowed.as_str()), (4, "0-3"));
        }
        other => panic!("expected CoreNotAllowed, got {other:?}"),
    }
    // The real machine: a CPU above any this test machine has is refused, not pinned.
    let result = RelayConfig::from_args(["hark-relay", "--cores", "1023"]);
    assert!(
        matches!(result, Err(ConfigError::CoreNotAllowed { core: 1023, .. })),
        "{result:?}"
    );
}

#[test]
fn default_cores_are_every_allowed_core() {
    let config = resolve(Settings::default(), &four_cores()).unwrap();
    assert_eq!(config.cores, vec![0, 1, 2, 3]);
    let every_pinnable = Host {
        allowed_cores: (0..=CORE_ID_MAX).collect(),
    };
    let config = resolve(Settings::default(), &every_pinnable).unwrap();
    assert_eq!(config.cores.len(), crate::mesh::MESH_SHARDS_MAX);
}

#[test]
fn data_dir_must_be_a_directory_or_absent() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let settings = |path: &Path| Settings {
        data_dir: Some(path.to_owned()),
        ..Settings::default()
    };
    assert!(resolve(settings(dir.path()), &four_cores()).is_ok());
    assert!(resolve(settings(&dir.path().join("absent")), &four_cores()).is_ok());
    assert!(matches!(
        resolve(settings(&file), &four_cores()),
        Err(ConfigError::DataDirNotDirectory { path }) if path == file
    ));
    assert!(matches!(
        resolve(settings(&file.join("below")), &four_cores()),
        Err(ConfigError::DataDirUnusable { .. })
    ));
    assert!(matches!(
        resolve_toml("data_dir = \"\""),
        Err(ConfigError::PathEmpty { key: "data_dir" })
    ));
    assert!(matches!(
        resolve_toml("secret_file = \"\""),
        Err(ConfigError::PathEmpty { key: "secret_file" })
    ));
}

#[test]
fn log_filter_is_checked() {
    for bad in ["", "  ", "info,=[", "hark=loud"] {
        let text = format!("log = {bad:?}");
        assert!(
            matches!(
                resolve_toml(&text),
                Err(ConfigError::LogFilterInvalid { .. })
            ),
            "{text}"
        );
    }
    let long = format!("log = \"{}\"", "a".repeat(LOG_FILTER_LEN_MAX + 1));
    assert!(matches!(
        resolve_toml(&long),
        Err(ConfigError::LogFilterInvalid { .. })
    ));
    assert_eq!(
        resolve_toml("log = \"warn,hark_core=debug\"").unwrap().log,
        "warn,hark_core=debug"
    );
}

#[test]
fn every_flag_is_a_toml_key_with_help_naming_its_default() {
    let defaults: toml::Table = toml::from_str(&resolve_toml("").unwrap().to_toml()).unwrap();
    let command = super::settings::Cli::command();
    let mut seen = 0;
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        let long = arg.get_long().unwrap();
        assert_eq!(
            long.replace('-', "_"),
            id,
            "--{long} must be the TOML key {id}"
        );
        let help = arg
            .get_help()
            .map(|help| help.to_string())
            .unwrap_or_default();
        let expected = match (id, defaults.get(id)) {
            ("config", _) => "[default: none]".to_owned(),
            ("cores", _) => "[default: every allowed CPU]".to_owned(),
            ("secret_file", _) => "[default: <data-dir>/secret".to_owned(),
            // Cluster keys exist only on a cluster host; their defaults are explained.
            ("cluster_listen", _) => "[default: none, a single host]".to_owned(),
            ("seeds", _) => "[default: none: wait for others".to_owned(),
            ("advertise", _) => "[default: --listen]".to_owned(),
            ("weight_per_core", _) => "[default: 100]".to_owned(),
            (_, Some(toml::Value::String(text))) => format!("[default: {text}]"),
            (_, Some(value)) => format!("[default: {value}]"),
            (_, None) => panic!("{id} is not rendered by to_toml"),
        };
        assert!(
            help.contains(&expected),
            "--{long}: {help:?} lacks {expected:?}"
        );
        seen += 1;
    }
    // --config plus every key to_toml writes, plus secret_file and the four cluster keys
    // (unset on a single host).
    assert_eq!(seen, 1 + defaults.len() + 1 + 4);
}

fn any_setting_line() -> impl Strategy<Value = String> {
    let keys: Vec<&'static str> = BOUNDS.iter().map(|bound| bound.key).collect();
    let value = prop_oneof![
        0u64..70_000,
        any::<u64>().prop_map(|value| value >> 1),
        (0u32..64).prop_map(|shift| 1u64 << shift),
    ];
    (proptest::sample::select(keys), value).prop_map(|(key, value)| format!("{key} = {value}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any mix of numeric settings is either refused with an error or yields a config whose
    /// store accepts it and which renders and reads back equal; never a panic.
    #[test]
    fn any_numbers_give_a_config_or_an_error(lines in proptest::collection::vec(any_setting_line(), 0..8)) {
        let mut keys = BTreeSet::new();
        let text: Vec<String> = lines
            .into_iter()
            .filter(|line| keys.insert(line.split(' ').next().unwrap_or_default().to_owned()))
            .collect();
        if let Ok(config) = resolve_toml(&text.join("\n")) {
            prop_assert!(config.store.validate().is_ok());
            prop_assert!(config.shard.audio_payload_len_max + 9 <= config.shard.frame_len_max);
            prop_assert_eq!(config.store.frame_bytes_max, config.shard.audio_payload_len_max as usize);
            prop_assert_eq!(resolve_toml(&config.to_toml()).unwrap(), config);
        }
    }
}

fn cluster_toml(extra: &str) -> String {
    format!(
        "host_id = 2\ncluster_listen = \"127.0.0.2:7402\"\nsecret_file = \"/etc/hark/secret\"\n{extra}"
    )
}

#[test]
fn a_cluster_host_is_configured_with_its_seeds_and_round_trips() {
    let config = resolve_toml(&cluster_toml(
        "seeds = [\"127.0.0.1:7402\", \"127.0.0.2:7402\", \"127.0.0.3:7402\"]\nweight_per_core = 50",
    ))
    .unwrap();
    let cluster = config.cluster.clone().unwrap();
    assert_eq!(
        cluster.listen,
        "127.0.0.2:7402".parse::<std::net::SocketAddr>().unwrap()
    );
    // The host's own address is left out of its seeds.
    assert_eq!(
        cluster.seeds,
        vec![
            "127.0.0.1:7402".parse::<std::net::SocketAddr>().unwrap(),
            "127.0.0.3:7402".parse().unwrap()
        ]
    );
    assert_eq!(cluster.advertise, None);
    assert_eq!(cluster.weight_per_core, 50);
    assert_eq!(resolve_toml(&config.to_toml()).unwrap(), config);
    assert!(resolve_toml("").unwrap().cluster.is_none());
}

#[test]
fn a_cluster_host_needs_a_host_id_a_shared_secret_and_reachable_addresses() {
    let no_id = "cluster_listen = \"127.0.0.2:7402\"\nsecret_file = \"/etc/hark/secret\"";
    assert_eq!(inconsistent_key(resolve_toml(no_id)), "host_id");
    let no_secret = "host_id = 1\ncluster_listen = \"127.0.0.2:7402\"";
    assert_eq!(inconsistent_key(resolve_toml(no_secret)), "secret_file");
    let any = "host_id = 1\ncluster_listen = \"0.0.0.0:7402\"\nsecret_file = \"/s\"";
    let port_zero = cluster_toml("listen = \"127.0.0.2:0\"\nadvertise = \"127.0.0.2:0\"");
    assert_eq!(inconsistent_key(resolve_toml(&port_zero)), "advertise");
    assert_eq!(inconsistent_key(resolve_toml(any)), "cluster_listen");
    let same = cluster_toml("listen = \"127.0.0.2:7402\"");
    assert_eq!(inconsistent_key(resolve_toml(&same)), "cluster_listen");
    let unspecified = cluster_toml("listen = \"0.0.0.0:7400\"");
    assert_eq!(inconsistent_key(resolve_toml(&unspecified)), "advertise");
    for key in [
        "seeds = []",
        "advertise = \"127.0.0.1:1\"",
        "weight_per_core = 5",
    ] {
        let expected = key.split(' ').next().unwrap();
        assert_eq!(inconsistent_key(resolve_toml(key)), expected, "{key} alone");
    }
    let weight = cluster_toml("weight_per_core = 0");
    assert!(matches!(
        resolve_toml(&weight),
        Err(ConfigError::OutOfRange {
            key: "weight_per_core",
            ..
        })
    ));
    let seeds: Vec<String> = (0..65).map(|i| format!("\"127.0.1.{i}:1\"")).collect();
    let many = cluster_toml(&format!("seeds = [{}]", seeds.join(",")));
    assert_eq!(inconsistent_key(resolve_toml(&many)), "seeds");
}

#[test]
fn seeds_on_the_command_line_are_comma_separated() {
    let config = RelayConfig::from_args([
        "hark-relay",
        "--host-id=3",
        "--cluster-listen=127.0.0.3:7402",
        "--secret-file=/s",
        "--seeds=127.0.0.1:7402,127.0.0.2:7402",
    ])
    .unwrap();
    assert_eq!(config.cluster.unwrap().seeds.len(), 2);
}
