//! A cluster of `hark-relay` processes for the tests: hosts 1, 2 and 3 on 127.0.0.1, .2 and .3
//! sharing one secret, joined through the first; waiting for a common map; conversation names
//! owned by a given host; talk and listen helpers for handovers.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hark_core::map::{HostSpec, Membership};
use hark_core::protocol::{ErrorCode, Event, ListenFrom, MessageOutcome};
use hark_core::{ConvName, HostId, MsgId};
use hark_tools::client::Client;
use tempfile::TempDir;

use super::heard::Heard;
use super::process::{RelayOptions, RelayProcess};
use super::talk::OPUS_HEAD;
use super::{FAST_TALK, QUICK_COMMITS, WAIT, admin};

/// Each host's shards (the relay's default weight per core is the same on every host).
pub const CORES: [u16; 2] = [0, 1];
/// How long the hosts may take to agree on a map (SWIM joins in well under a second; the
/// rest is a safety net on a loaded machine).
pub const CONVERGE_WAIT: Duration = Duration::from_secs(30);
/// How often the admin endpoints are polled while waiting for the map.
pub const POLL: Duration = Duration::from_millis(20);

/// Three relays sharing one secret, joined through the first.
pub struct Cluster {
    pub hosts: Vec<RelayProcess>,
    secret_dir: TempDir,
    /// Flags every host gets beyond the cluster's own.
    extra: Vec<String>,
}

pub fn write_secret(dir: &Path) -> PathBuf {
    let path = dir.join("secret");
    let key: String = (0..32u8).map(|i| format!("{:02x}", i * 7 + 3)).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("create the shared secret");
    writeln!(file, "key 1 {key}").expect("write the shared secret");
    path
}

pub fn host_ip(host: u16) -> IpAddr {
    IpAddr::from([127, 0, 0, host as u8])
}

pub fn host_args(host: u16, secret: &Path, seeds: Option<String>, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--host-id",
        &host.to_string(),
        "--cluster-listen",
        &format!("{}:0", host_ip(host)),
        "--secret-file",
        &secret.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(seeds) = seeds {
        args.push("--seeds".into());
        args.push(seeds);
    }
    args.extend(
        FAST_TALK
            .iter()
            .chain(QUICK_COMMITS)
            .map(|s| (*s).to_owned()),
    );
    args.extend(extra.iter().cloned());
    args
}

pub fn start_host(
    host: u16,
    secret: &Path,
    seeds: Option<String>,
    extra: &[String],
) -> RelayProcess {
    let args = host_args(host, secret, seeds, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    RelayProcess::start_with(
        &args,
        RelayOptions {
            ip: Some(host_ip(host)),
            ..RelayOptions::default()
        },
    )
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    /// [`Cluster::start`] with more flags for every host (kept for restarts).
    pub fn start_with(extra: &[&str]) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let secret_dir = tempfile::tempdir().expect("a temp dir for the secret");
        let secret = write_secret(secret_dir.path());
        let first = start_host(1, &secret, None, &extra);
        let seed = first.cluster_addr().to_string();
        let mut hosts = vec![first];
        for host in [2, 3] {
            hosts.push(start_host(host, &secret, Some(seed.clone()), &extra));
        }
        let cluster = Cluster {
            hosts,
            secret_dir,
            extra,
        };
        cluster.wait_converged(&[1, 2, 3]);
        cluster
    }

    /// The directory holding the shared secret (`secret`), the `data_dir` a `hark` command
    /// mints its token from.
    pub fn secret_dir(&self) -> &Path {
        self.secret_dir.path()
    }

    /// Starts host `host` again (stopped by a drain or kill -9) on its data dir, joining
    /// through host `seed`; it gets new ports.
    pub fn restart_host(&mut self, host: u16, seed: u16) {
        let seeds = self.host(seed).cluster_addr().to_string();
        let secret = self.secret_dir.path().join("secret");
        let args = host_args(host, &secret, Some(seeds), &self.extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.hosts[usize::from(host - 1)].restart_with(&args);
    }

    pub fn host(&self, host: u16) -> &RelayProcess {
        &self.hosts[usize::from(host - 1)]
    }

    /// Waits until every host in `live` has a map of exactly `live` with one checksum.
    pub fn wait_converged(&self, live: &[u16]) {
        let deadline = Instant::now() + CONVERGE_WAIT;
        loop {
            let views: Vec<(u64, String)> =
                live.iter().map(|h| cluster_view(self.host(*h))).collect();
            let agreed = views
                .iter()
                .all(|(hosts, sum)| *hosts == live.len() as u64 && *sum == views[0].1);
            if agreed {
                return;
            }
            if Instant::now() > deadline {
                self.host(live[0])
                    .fail(&format!("no common map of {live:?} in time: {views:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn session(&self, host: u16, subject: &str) -> Client {
        self.host(host).session(subject)
    }

    /// Bytes host `host` wrote to its peer links so far.
    pub fn peer_bytes_sent(&self, host: u16) -> u64 {
        metric_sum(self.host(host), "hark_peer_link_sent_bytes_total")
    }
}

/// A host's view of the map from its admin endpoint: live hosts and the checksum label, and
/// whether every shard routes by that map's epoch already (else hosts count as 0).
pub fn cluster_view(relay: &RelayProcess) -> (u64, String) {
    let body = admin::get(relay.admin_addr(), "/metrics").body;
    let value = |name: &str| -> Option<u64> {
        body.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse().ok())
    };
    let epoch = value("hark_cluster_epoch ");
    let applied = body
        .lines()
        .filter(|line| line.starts_with("hark_shard_map_epoch{"))
        .all(|line| line.rsplit(' ').next().and_then(|v| v.parse().ok()) == epoch);
    let hosts = if applied {
        value("hark_cluster_hosts ").unwrap_or(0)
    } else {
        0
    };
    let checksum = body
        .lines()
        .find_map(|line| line.strip_prefix("hark_cluster_map_info{checksum=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned();
    (hosts, format!("{checksum}@{}", epoch.unwrap_or(0)))
}

/// The sum over shards of a counter family.
pub fn metric_sum(relay: &RelayProcess, name: &str) -> u64 {
    admin::get(relay.admin_addr(), "/metrics")
        .body
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The map the hosts in `live` agree on (what every host computes).
pub fn map_of(live: &[u16]) -> Membership {
    Membership::from_hosts(
        1,
        live.iter().map(|&host| HostSpec {
            host: HostId(host),
            cores: CORES.to_vec(),
            weight_per_core: 100,
        }),
    )
    .expect("a valid map")
}

/// A conversation name owned by `host` under the map of `live`.
pub fn owned_by(prefix: &str, host: u16, live: &[u16]) -> ConvName {
    let map = map_of(live);
    (0..10_000)
        .map(|i| ConvName::new(format!("{prefix}-{i}")).expect("a valid name"))
        .find(|name| map.owner(name.id()).is_some_and(|s| s.host == HostId(host)))
        .expect("some name hashes to each host")
}

pub fn listen_live(client: &mut Client, heard: &mut Heard, sub: u32, conversation: &ConvName) {
    client
        .listen(sub, conversation, ListenFrom::Live)
        .expect("listen sent");
    heard.read_until(client, WAIT, "listen live", |h| h.is_live(sub));
}

pub fn assert_heard(
    listener: &mut Client,
    heard: &mut Heard,
    sub: u32,
    msg: MsgId,
    sent: &[Bytes],
    what: &str,
) {
    heard.read_until(listener, WAIT, what, |h| h.has_ended(sub, msg));
    let message = heard.message(sub, msg);
    assert_eq!(
        message.payloads(),
        sent,
        "{what}: every frame once, in order"
    );
    assert_eq!(
        message.end,
        Some((sent.len() as u32, MessageOutcome::Complete)),
        "{what}"
    );
}

/// Resumes `msg` on talk stream `stream` until a new owner takes it over (the talker's host
/// may still route to the dead owner for a moment); the `next_seq` it asks for.
pub fn resume_until_taken_over(
    talker: &mut Client,
    stream: u32,
    conversation: &ConvName,
    msg: MsgId,
) -> u32 {
    let deadline = Instant::now() + WAIT;
    loop {
        talker
            .talk_start(stream, conversation, OPUS_HEAD, Some(msg))
            .expect("talk_start sent");
        loop {
            match talker.next_event(WAIT).expect("an answer to the resume") {
                Event::TalkStarted {
                    stream: s,
                    msg_id,
                    next_seq,
                } if s == stream => {
                    assert_eq!(msg_id, msg, "the same message goes on");
                    return next_seq;
                }
                Event::Error { code, text, .. }
                    if code == ErrorCode::OWNER_UNAVAILABLE || code == ErrorCode::MAP_CHANGED =>
                {
                    assert!(Instant::now() < deadline, "never taken over: {text}");
                    // Retry after a pause, as the client library does with its backoff.
                    std::thread::sleep(POLL);
                    break;
                }
                Event::Stored { .. } => {}
                other => panic!("resume of {msg}: unexpected {other:?}"),
            }
        }
    }
}
/// Reads a talker's events until `talk_ended` for `stream`, which must count `frames`.
pub fn read_until_talk_ended(talker: &mut Client, stream: u32, frames: u32) {
    loop {
        match talker.next_event(WAIT).expect("talk_ended") {
            Event::TalkEnded {
                stream: s,
                frame_count,
            } if s == stream => {
                assert_eq!(frame_count, frames);
                return;
            }
            Event::Stored { .. } => {}
            other => panic!("waiting for talk_ended: unexpected {other:?}"),
        }
    }
}
/// Reads `client`'s events until a `go_away`; its reconnect address.
pub fn read_go_away(relay: &RelayProcess, client: &mut Client) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match client.next_event(remaining) {
            Ok(Event::GoAway { reconnect_to, .. }) => return reconnect_to,
            Ok(_) => {}
            Err(error) => relay.fail(&format!("no go_away before {error}")),
        }
    }
}
