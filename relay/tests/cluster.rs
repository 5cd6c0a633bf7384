//! A cluster of three `hark-relay` processes on 127.0.0.1, 127.0.0.2 and 127.0.0.3: talk
//! through one host and listen through the others, to conversations owned by each host in
//! turn, checked frame by frame; a conversation's frames cross to a host once, whatever its
//! number of listeners there; kill -9 of the owner moves its conversations; `hark drain` of a
//! host sends its clients to a live host and moves its conversations.

mod support;

use std::ffi::OsString;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hark_core::map::{HostSpec, Membership};
use hark_core::protocol::{ErrorCode, Event, ListenFrom, MessageOutcome};
use hark_core::{ConvName, HostId, MsgId};
use hark_tools::cli::run;
use hark_tools::client::Client;
use tempfile::TempDir;

use support::heard::Heard;
use support::process::{RelayOptions, RelayProcess, exited_cleanly};
use support::talk::{payloads, read_talk_until_error, send_frames, start_message, talk_message};
use support::{FAST_TALK, QUICK_COMMITS, WAIT, admin};

/// Each host's shards (the relay's default weight per core is the same on every host).
const CORES: [u16; 2] = [0, 1];
/// How long the hosts may take to agree on a map (SWIM joins in well under a second; the
/// rest is a safety net on a loaded machine).
const CONVERGE_WAIT: Duration = Duration::from_secs(30);
/// How often the admin endpoints are polled while waiting for the map.
const POLL: Duration = Duration::from_millis(20);

/// Three relays sharing one secret, joined through the first.
struct Cluster {
    hosts: Vec<RelayProcess>,
    _secret_dir: TempDir,
}

fn write_secret(dir: &Path) -> PathBuf {
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

fn host_ip(host: u16) -> IpAddr {
    IpAddr::from([127, 0, 0, host as u8])
}

fn host_args(host: u16, secret: &Path, seeds: Option<String>) -> Vec<String> {
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
    args
}

fn start_host(host: u16, secret: &Path, seeds: Option<String>) -> RelayProcess {
    let args = host_args(host, secret, seeds);
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
    fn start() -> Cluster {
        let secret_dir = tempfile::tempdir().expect("a temp dir for the secret");
        let secret = write_secret(secret_dir.path());
        let first = start_host(1, &secret, None);
        let seed = first.cluster_addr().to_string();
        let mut hosts = vec![first];
        for host in [2, 3] {
            hosts.push(start_host(host, &secret, Some(seed.clone())));
        }
        let cluster = Cluster {
            hosts,
            _secret_dir: secret_dir,
        };
        cluster.wait_converged(&[1, 2, 3]);
        cluster
    }

    fn host(&self, host: u16) -> &RelayProcess {
        &self.hosts[usize::from(host - 1)]
    }

    /// Waits until every host in `live` has a map of exactly `live` with one checksum.
    fn wait_converged(&self, live: &[u16]) {
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

    fn session(&self, host: u16, subject: &str) -> Client {
        self.host(host).session(subject)
    }

    /// Bytes host `host` wrote to its peer links so far.
    fn peer_bytes_sent(&self, host: u16) -> u64 {
        metric_sum(self.host(host), "hark_peer_link_sent_bytes_total")
    }
}

/// A host's view of the map from its admin endpoint: live hosts and the checksum label, and
/// whether every shard routes by that map's epoch already (else hosts count as 0).
fn cluster_view(relay: &RelayProcess) -> (u64, String) {
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
fn metric_sum(relay: &RelayProcess, name: &str) -> u64 {
    admin::get(relay.admin_addr(), "/metrics")
        .body
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The map the hosts in `live` agree on (what every host computes).
fn map_of(live: &[u16]) -> Membership {
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
fn owned_by(prefix: &str, host: u16, live: &[u16]) -> ConvName {
    let map = map_of(live);
    (0..10_000)
        .map(|i| ConvName::new(format!("{prefix}-{i}")).expect("a valid name"))
        .find(|name| map.owner(name.id()).is_some_and(|s| s.host == HostId(host)))
        .expect("some name hashes to each host")
}

fn listen_live(client: &mut Client, heard: &mut Heard, sub: u32, conversation: &ConvName) {
    client
        .listen(sub, conversation, ListenFrom::Live)
        .expect("listen sent");
    heard.read_until(client, WAIT, "listen live", |h| h.is_live(sub));
}

fn assert_heard(
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

#[test]
fn talk_through_one_host_and_listen_through_the_other_two_for_each_owner() {
    let cluster = Cluster::start();
    for owner in 1..=3u16 {
        let conversation = owned_by("three-hosts", owner, &[1, 2, 3]);
        let talk_host = owner % 3 + 1;
        let listen_hosts: Vec<u16> = (1..=3).filter(|h| *h != talk_host).collect();
        let mut listeners: Vec<(Client, Heard)> = Vec::new();
        for (i, host) in listen_hosts.iter().enumerate() {
            let mut client = cluster.session(*host, &format!("listener-{i}"));
            let mut heard = Heard::new();
            listen_live(&mut client, &mut heard, 1, &conversation);
            listeners.push((client, heard));
        }
        let mut talker = cluster.session(talk_host, "talker");
        let sent = payloads(u64::from(owner), 60);
        let msg = talk_message(&mut talker, 1, &conversation, &sent);
        assert_eq!(msg.shard().host, HostId(owner), "stored by the owner host");
        for (client, heard) in &mut listeners {
            assert_heard(
                client,
                heard,
                1,
                msg,
                &sent,
                &format!("owner {owner}, talk via {talk_host}"),
            );
        }
    }
}

#[test]
fn a_conversations_frames_cross_to_a_host_once_however_many_listen_there() {
    let cluster = Cluster::start();
    let conversation = owned_by("once-per-host", 1, &[1, 2, 3]);
    let mut talker = cluster.session(1, "talker");
    let mut listeners: Vec<(Client, Heard)> = Vec::new();
    let mut bytes_per_message = Vec::new();
    for (round, wanted) in [1usize, 5].into_iter().enumerate() {
        while listeners.len() < wanted {
            let mut client = cluster.session(2, &format!("listener-{}", listeners.len()));
            let mut heard = Heard::new();
            listen_live(&mut client, &mut heard, 1, &conversation);
            listeners.push((client, heard));
        }
        let sent = payloads(round as u64 + 10, 100);
        let before = cluster.peer_bytes_sent(1);
        let msg = talk_message(&mut talker, round as u32 + 1, &conversation, &sent);
        for (client, heard) in &mut listeners {
            assert_heard(client, heard, 1, msg, &sent, "listeners on host 2");
        }
        // The shards publish their counters every 250 ms; wait until the message is in.
        let payload_bytes: u64 = sent.iter().map(|p| p.len() as u64).sum();
        let deadline = Instant::now() + WAIT;
        let crossed = loop {
            let crossed = cluster.peer_bytes_sent(1) - before;
            if crossed >= payload_bytes || Instant::now() > deadline {
                break crossed;
            }
            std::thread::sleep(POLL);
        };
        assert!(
            crossed >= payload_bytes,
            "the frames crossed: {crossed} of {payload_bytes} bytes"
        );
        bytes_per_message.push(crossed);
    }
    let (one, five) = (bytes_per_message[0], bytes_per_message[1]);
    assert!(
        five * 2 < one * 3,
        "five listeners on a host cost what one does on the peer links: {one} vs {five} bytes"
    );
}

#[test]
fn kill_9_of_the_owner_mid_talk_hands_the_message_to_the_new_owner_and_listeners_elsewhere_hear_it_whole()
 {
    let mut cluster = Cluster::start();
    let conversation = owned_by("failover", 3, &[1, 2, 3]);
    let mut listener = cluster.session(2, "listener");
    let mut heard = Heard::new();
    listen_live(&mut listener, &mut heard, 1, &conversation);
    let mut talker = cluster.session(1, "talker");
    let mut progress = start_message(&mut talker, 1, &conversation);
    let cut = progress.msg_id();
    assert_eq!(cut.shard().host, HostId(3));
    let whole = payloads(1, 40);
    send_frames(&mut talker, 1, 0, &whole[..10]);

    cluster.hosts[2].kill9();
    cluster.wait_converged(&[1, 2]);
    // The talker's stream died with its owner: it is told so, and resumes the same message.
    read_talk_until_error(&mut talker, 1, &mut progress, ErrorCode::OWNER_UNAVAILABLE);
    let next_seq = resume_until_taken_over(&mut talker, 1, &conversation, cut);
    assert!(
        next_seq <= 10,
        "the new owner asks for at most what was sent: {next_seq}"
    );
    send_frames(&mut talker, 1, next_seq, &whole[next_seq as usize..]);
    talker.talk_end(1, 40).expect("talk_end sent");
    read_until_talk_ended(&mut talker, 1, 40);
    assert_heard(
        &mut listener,
        &mut heard,
        1,
        cut,
        &whole,
        "the listener on host 2 hears the message go on at the new owner, every frame once",
    );

    // New messages of the conversation go to the new owner.
    let new_owner = map_of(&[1, 2]).owner(conversation.id()).expect("an owner");
    let sent = payloads(2, 30);
    let msg = talk_message(&mut talker, 2, &conversation, &sent);
    assert_eq!(msg.shard(), new_owner, "the fallback shard stores it");
    assert_heard(
        &mut listener,
        &mut heard,
        1,
        msg,
        &sent,
        "the listener on host 2 hears the new owner",
    );
}

/// Resumes `msg` on talk stream `stream` until a new owner takes it over (the talker's host
/// may still route to the dead owner for a moment); the `next_seq` it asks for.
fn resume_until_taken_over(
    talker: &mut Client,
    stream: u32,
    conversation: &ConvName,
    msg: MsgId,
) -> u32 {
    let deadline = Instant::now() + WAIT;
    loop {
        talker
            .talk_start(stream, conversation, support::talk::OPUS_HEAD, Some(msg))
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
fn read_until_talk_ended(talker: &mut Client, stream: u32, frames: u32) {
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
fn read_go_away(relay: &RelayProcess, client: &mut Client) -> String {
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

#[test]
fn hark_drain_of_a_host_hands_its_open_message_over_sends_its_clients_to_a_live_host_and_its_conversations_move()
 {
    let mut cluster = Cluster::start();
    let conversation = owned_by("drained", 3, &[1, 2, 3]);
    let mut listener = cluster.session(2, "listener");
    let mut heard = Heard::new();
    listen_live(&mut listener, &mut heard, 1, &conversation);
    let mut bystander = cluster.session(3, "bystander");
    // A message is being talked on the draining owner.
    let mut talker = cluster.session(3, "talker");
    let progress = start_message(&mut talker, 1, &conversation);
    let open = progress.msg_id();
    let whole = payloads(4, 30);
    send_frames(&mut talker, 1, 0, &whole[..12]);

    let admin = cluster.host(3).admin_addr().to_string();
    let command: Vec<OsString> = ["hark", "drain", "--admin", &admin, "--wait"]
        .iter()
        .map(OsString::from)
        .collect();
    let mut out = Vec::new();
    if let Err(error) = run(command, &AtomicBool::new(false), &mut out) {
        cluster.host(3).fail(&format!("hark drain failed: {error}"));
    }
    let printed = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed}");
    assert_eq!(lines[0], format!("relay at {admin}: draining started"));
    assert!(
        lines[1].starts_with(&format!("relay at {admin}: exited ")),
        "{printed}"
    );
    let status = cluster.hosts[2].wait_exit();
    assert!(exited_cleanly(status), "host 3 exited {status:?}");
    cluster.wait_converged(&[1, 2]);

    let reconnect_to = read_go_away(cluster.host(3), &mut bystander);
    let live: Vec<String> = [1, 2]
        .iter()
        .map(|h| cluster.host(*h).addr().to_string())
        .collect();
    let next = live
        .iter()
        .position(|addr| *addr == reconnect_to)
        .unwrap_or_else(|| panic!("go_away named {reconnect_to:?}, not a live host of {live:?}"));

    // The talker follows its own go_away and resumes the message there: a handover.
    let moved_to = read_go_away(cluster.host(3), &mut talker);
    let host = live
        .iter()
        .position(|addr| *addr == moved_to)
        .unwrap_or_else(|| panic!("go_away named {moved_to:?}, not a live host of {live:?}"));
    let mut resumed = cluster.session(host as u16 + 1, "talker");
    let next_seq = resume_until_taken_over(&mut resumed, 1, &conversation, open);
    assert!(next_seq <= 12, "at most what was sent: {next_seq}");
    send_frames(&mut resumed, 1, next_seq, &whole[next_seq as usize..]);
    resumed.talk_end(1, 30).expect("talk_end sent");
    read_until_talk_ended(&mut resumed, 1, 30);
    assert_heard(
        &mut listener,
        &mut heard,
        1,
        open,
        &whole,
        "the listener on host 2 hears the handed-over message whole, every frame once",
    );

    // The client goes where it was told, and talks to the conversation host 3 owned.
    let mut talker = cluster.session(next as u16 + 1, "bystander");
    let sent = payloads(3, 40);
    let msg = talk_message(&mut talker, 1, &conversation, &sent);
    let new_owner = map_of(&[1, 2]).owner(conversation.id()).expect("an owner");
    assert_eq!(msg.shard(), new_owner, "the fallback shard stores it");
    assert_heard(
        &mut listener,
        &mut heard,
        1,
        msg,
        &sent,
        "the listener on host 2 hears the conversation's new owner",
    );
}

#[test]
fn hark_drain_of_a_dead_admin_address_fails_with_one_line() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback");
        listener.local_addr().expect("a bound address").to_string()
    };
    let command: Vec<OsString> = ["hark", "drain", "--admin", &dead, "--wait"]
        .iter()
        .map(OsString::from)
        .collect();
    let mut out = Vec::new();
    let error = run(command, &AtomicBool::new(false), &mut out)
        .expect_err("nothing to drain at a closed port");
    let line = error.to_string();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.starts_with(&format!("admin endpoint {dead}: cannot connect")),
        "{line}"
    );
    assert_ne!(error.exit_code(), 0);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}
