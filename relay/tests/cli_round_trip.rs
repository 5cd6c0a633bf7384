//! `hark talk` and `hark listen` through a real relay: the listener's file carries the talker's
//! packets bit for bit, live and from the start, and a relay killed mid-talk loses nothing.

#[path = "support/cli.rs"]
mod cli_support;
mod support;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;

use cli_support::{
    FIXTURE, LineWriter, assert_packet_prefix, assert_same_packets, check_opusdec, listen_args,
    talk_args, wait_for_line,
};
use hark_tools::cli::{listen, talk};
use support::process::RelayProcess;
use support::{FAST_TALK, QUICK_COMMITS, args};

#[test]
fn a_file_talked_is_heard_packet_for_packet_live_and_from_the_start() {
    let relay = RelayProcess::start(&args(&[FAST_TALK, QUICK_COMMITS]));
    let dir = tempfile::tempdir().unwrap();
    let live_dir = dir.path().join("live");
    let live = listen_args(&relay, "cli-round-trip", "live", &live_dir, 1);
    let (mut listener_out, listener_lines) = LineWriter::new();
    let stop = Arc::new(AtomicBool::new(false));
    let listener = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || listen::run(&live, &stop, &mut listener_out))
    };
    wait_for_line(&listener_lines, "\"listening\"");

    let mut talk_out = Vec::new();
    let report = talk::run(
        &talk_args(&relay, "cli-round-trip", Path::new(FIXTURE), true),
        &mut talk_out,
    )
    .unwrap_or_else(|error| relay.fail(&format!("talk failed: {error}")));
    let heard = listener
        .join()
        .unwrap()
        .unwrap_or_else(|error| relay.fail(&format!("listen failed: {error}")));
    assert_eq!(heard.len(), 1);
    assert_eq!(heard[0].msg_id, report.msg_id);
    assert!(heard[0].complete);
    assert_same_packets(Path::new(FIXTURE), &heard[0].path);
    check_opusdec(&heard[0].path, dir.path());

    let start_dir = dir.path().join("start");
    let mut out = Vec::new();
    let from_start = listen::run(
        &listen_args(&relay, "cli-round-trip", "start", &start_dir, 1),
        &stop,
        &mut out,
    )
    .unwrap_or_else(|error| relay.fail(&format!("listen from start failed: {error}")));
    assert_eq!(from_start[0].msg_id, report.msg_id);
    assert_same_packets(Path::new(FIXTURE), &from_start[0].path);
    check_opusdec(&from_start[0].path, dir.path());
}

#[test]
fn a_relay_killed_mid_talk_is_resumed_and_the_message_completes() {
    let mut relay = RelayProcess::start(&args(&[QUICK_COMMITS]));
    let dir = tempfile::tempdir().unwrap();
    let addr = Arc::new(Mutex::new(relay.addr().to_string()));
    let talk_args = talk_args(&relay, "cli-resume", Path::new(FIXTURE), false);
    let (mut talk_out, talk_lines) = LineWriter::new();
    let talker = {
        let addr = Arc::clone(&addr);
        thread::spawn(move || {
            let mut source = move || vec![addr.lock().expect("no panic holds it").clone()];
            talk::talk(&talk_args, &mut source, &mut talk_out)
        })
    };
    // Real-time pacing: the talk lasts a second; the kill comes with the first durable frames.
    wait_for_line(&talk_lines, "\"stored_ack\"");
    relay.kill9();
    relay.restart();
    *addr.lock().unwrap() = relay.addr().to_string();
    let report = talker
        .join()
        .unwrap()
        .unwrap_or_else(|error| relay.fail(&format!("talk failed: {error}")));
    assert!(report.resumes >= 1, "the talk reconnected");
    // The restarted relay keeps the message open for its talker: the talk resumes it in
    // place, from its first frame not on disk, and no message is abandoned.
    assert!(
        report.abandoned.is_empty(),
        "resumed in place, not restarted as a new message: {:?}",
        report.abandoned
    );

    let stop = AtomicBool::new(false);
    let mut out = Vec::new();
    let expected = 1;
    let heard = listen::run(
        &listen_args(&relay, "cli-resume", "start", dir.path(), expected),
        &stop,
        &mut out,
    )
    .unwrap_or_else(|error| relay.fail(&format!("listen failed: {error}")));
    assert_eq!(heard.len() as u64, expected);
    for file in &heard {
        if file.msg_id == report.msg_id {
            assert!(file.complete, "the final message is complete");
            assert_same_packets(Path::new(FIXTURE), &file.path);
        } else {
            assert!(report.abandoned.contains(&file.msg_id.to_string()));
            assert_packet_prefix(Path::new(FIXTURE), &file.path);
        }
    }
}
