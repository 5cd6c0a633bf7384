//! History: message headers oldest first, with sender, frame count and outcome, in pages
//! that say when there is more; served for conversations of either shard; refused without
//! the right or outside the scope.

mod support;

use hark_core::protocol::MessageOutcome;
use hark_core::protocol::{ErrorCode, ErrorSubject, Event, HistoryEntry, ListenFrom};
use hark_core::{ConvName, MsgId};
use hark_tools::client::Client;

use support::heard::Heard;
use support::names::names_on_distinct_shards;
use support::process::RelayProcess;
use support::talk::{
    OPUS_HEAD, TalkProgress, expect_error, expect_pong, payloads, read_talk_until, send_frames,
    talk_message,
};
use support::{FAST_TALK, TWO_SHARDS, WAIT, args};

/// Asks for a page and returns its entries and `more`.
fn page(
    client: &mut Client,
    request: u32,
    conversation: &ConvName,
    since_us: u64,
    limit: u16,
) -> (Vec<HistoryEntry>, bool) {
    client
        .history(request, conversation, since_us, limit)
        .expect("history sent");
    match client.next_event(WAIT) {
        Ok(Event::HistoryPage {
            request: answered,
            entries,
            more,
        }) if answered == request => (entries, more),
        other => panic!("expected history page {request}, got {other:?}"),
    }
}

fn summary(entries: &[HistoryEntry]) -> Vec<(MsgId, &str, u32, MessageOutcome)> {
    entries
        .iter()
        .map(|entry| {
            (
                entry.msg_id,
                entry.sender.as_str(),
                entry.frame_count,
                entry.outcome,
            )
        })
        .collect()
}

#[test]
fn history_lists_messages_oldest_first_in_pages_with_counts_and_outcomes() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS, FAST_TALK]));
    let (conversation, other) = names_on_distinct_shards("history");
    let mut talker = relay.session("alice");
    let first = talk_message(&mut talker, 1, &conversation, &payloads(1, 10));
    let mut bob = relay.session("bob");
    let second = talk_message(&mut bob, 1, &conversation, &payloads(2, 5));
    // Three frames, but the end claims four: the relay stores three, truncated.
    talker
        .talk_start(2, &conversation, OPUS_HEAD, None)
        .expect("talk_start sent");
    send_frames(&mut talker, 2, 0, &payloads(3, 3));
    talker.talk_end(2, 4).expect("talk_end sent");
    let mut third = TalkProgress::default();
    read_talk_until(&mut talker, 2, &mut third, "ended", |p| {
        p.ended_with.is_some()
    });
    assert_eq!(
        third.ended_with,
        Some(3),
        "talk_ended counts the frames stored"
    );
    let third = third.msg_id();

    let all = vec![
        (first, "alice", 10, MessageOutcome::Complete),
        (second, "bob", 5, MessageOutcome::Complete),
        (third, "alice", 3, MessageOutcome::Truncated),
    ];
    let mut reader = relay.session("reader");
    let (entries, more) = page(&mut reader, 1, &conversation, 0, 100);
    assert_eq!((summary(&entries), more), (all.clone(), false));
    assert!(first.start_us() < second.start_us() && second.start_us() < third.start_us());

    // Pages: two, then the rest from the last start + 1 µs.
    let (entries, more) = page(&mut reader, 2, &conversation, 0, 2);
    assert_eq!((summary(&entries), more), (all[..2].to_vec(), true));
    let next = entries[1].msg_id.start_us() + 1;
    let (entries, more) = page(&mut reader, 3, &conversation, next, 2);
    assert_eq!((summary(&entries), more), (all[2..].to_vec(), false));
    // From a time: the second message on.
    let (entries, _) = page(&mut reader, 4, &conversation, second.start_us(), 100);
    assert_eq!(summary(&entries), all[1..].to_vec());
    // A conversation nobody talked in.
    let (entries, more) = page(&mut reader, 5, &other, 0, 100);
    assert_eq!((entries.len(), more), (0, false));

    // Asked from a connection that lives on the other shard (it listens there first).
    let mut elsewhere = relay.session("elsewhere");
    let mut heard = Heard::new();
    elsewhere
        .listen(1, &other, ListenFrom::Live)
        .expect("listen sent");
    heard.read_until(&mut elsewhere, WAIT, "listen", |h| h.is_live(1));
    let (entries, more) = page(&mut elsewhere, 6, &conversation, 0, 100);
    assert_eq!((summary(&entries), more), (all, false));
}

#[test]
fn history_needs_the_right_and_the_scope() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS]));
    let (conversation, other) = names_on_distinct_shards("history-auth");
    let (mut no_right, _) =
        relay.session_with(&relay.token_for("talker", "talk,listen", &conversation));
    no_right
        .history(1, &conversation, 0, 10)
        .expect("history sent");
    expect_error(
        &mut no_right,
        ErrorCode::RIGHT_MISSING,
        ErrorSubject::HistoryRequest(1),
    );
    expect_pong(&mut no_right, 1);

    let (mut scoped, _) = relay.session_with(&relay.token_for("reader", "history", &conversation));
    scoped.history(2, &other, 0, 10).expect("history sent");
    expect_error(
        &mut scoped,
        ErrorCode::OUT_OF_SCOPE,
        ErrorSubject::HistoryRequest(2),
    );
    let (entries, more) = page(&mut scoped, 3, &conversation, 0, 10);
    assert_eq!((entries.len(), more), (0, false));
}
