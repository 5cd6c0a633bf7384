//! The `hark` CLI on a three-host cluster (127.0.0.1, .2 and .3): `hark talk` hands its message
//! over to the new owner when the owner host is killed mid-message, and a listener on another
//! host hears the message whole.

#[path = "support/cli.rs"]
// The helpers other cli_* tests use are unused here.
#[allow(dead_code)]
mod cli_support;
mod support;

use std::path::Path;
use std::thread;
use std::time::Duration;

use cli_support::{FIXTURE, LineWriter, wait_for_line};
use hark_core::protocol::MessageOutcome;
use hark_core::{HostId, MsgId};
use hark_tools::cli::talk::{self, TalkArgs};
use hark_tools::opus::OpusFile;
use serde_json::Value;

use support::WAIT;
use support::cluster::{Cluster, listen_live, owned_by};
use support::heard::Heard;

/// `hark talk` arguments for the fixture, paced in real time, with every host listed.
fn talk_args(cluster: &Cluster, relays: Vec<String>, conv: &str, file: &Path) -> TalkArgs {
    TalkArgs {
        relay: relays,
        conv: conv.to_owned(),
        file: file.to_path_buf(),
        fast: false,
        json: true,
        token: None,
        data_dir: cluster.secret_dir().to_path_buf(),
        subject: Some("cli-talker".into()),
        reconnect_patience: Duration::from_secs(30),
    }
}

#[test]
fn hark_talk_hands_its_message_to_the_new_owner_when_the_owner_is_killed() {
    let mut cluster = Cluster::start();
    let conversation = owned_by("cli-handover", 3, &[1, 2, 3]);
    let mut listener = cluster.session(2, "listener");
    let mut heard = Heard::new();
    listen_live(&mut listener, &mut heard, 1, &conversation);

    let relays: Vec<String> = [1, 2]
        .iter()
        .map(|h| cluster.host(*h).addr().to_string())
        .collect();
    let args = talk_args(&cluster, relays, conversation.as_str(), Path::new(FIXTURE));
    let (writer, lines) = LineWriter::new();
    let talker = thread::spawn(move || {
        let mut writer = writer;
        talk::run(&args, &mut writer)
    });
    let started = wait_for_line(&lines, "talk_started");
    let started: Value = serde_json::from_str(&started).expect("a JSON line");
    let first: MsgId = started["msg_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("talk_started names the message");
    assert_eq!(first.shard().host, HostId(3));

    cluster.hosts[2].kill9();
    let report = talker
        .join()
        .expect("the talk thread")
        .unwrap_or_else(|error| cluster.host(1).fail(&format!("hark talk failed: {error}")));
    let output: Vec<String> = lines.try_iter().collect();
    let packets = OpusFile::read(Path::new(FIXTURE))
        .expect("the fixture")
        .packets;
    assert_eq!(
        report.msg_id, first,
        "the same message, handed over: {output:?}"
    );
    assert!(report.handovers >= 1, "{output:?}");
    assert!(report.abandoned.is_empty(), "{output:?}");
    assert_eq!(report.frame_count as usize, packets.len());
    assert!(
        output.iter().any(|line| line.contains("\"handover\"")),
        "{output:?}"
    );

    heard.read_until(&mut listener, WAIT * 3, "the handed-over message", |h| {
        h.has_ended(1, first)
    });
    let message = heard.message(1, first);
    assert_eq!(message.payloads(), packets, "every frame once, in order");
    assert_eq!(
        message.end,
        Some((packets.len() as u32, MessageOutcome::Complete))
    );
}
