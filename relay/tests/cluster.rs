//! A cluster of three `hark-relay` processes on 127.0.0.1, 127.0.0.2 and 127.0.0.3: talk
//! through one host and listen through the others, to conversations owned by each host in
//! turn, checked frame by frame; a conversation's frames cross to a host once, whatever its
//! number of listeners there; kill -9 of the owner moves its conversations; `hark drain` of a
//! host sends its clients to a live host and moves its conversations.

mod support;

use std::ffi::OsString;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use hark_core::HostId;
use hark_core::protocol::ErrorCode;
use hark_tools::cli::run;
use hark_tools::client::Client;

use support::WAIT;
use support::cluster::{
    Cluster, POLL, assert_heard, listen_live, map_of, owned_by, read_go_away,
    read_until_talk_ended, resume_until_taken_over,
};
use support::heard::Heard;
use support::process::exited_cleanly;
use support::talk::{payloads, read_talk_until_error, send_frames, start_message, talk_message};

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
