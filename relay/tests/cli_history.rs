//! `hark history` through a real relay: two messages talked are both listed, oldest first,
//! as a table and as one JSON object per line; `--since` after the first leaves the second.

#[path = "support/cli.rs"]
// The helpers other cli_* tests use are unused here.
#[allow(dead_code)]
mod cli_support;
mod support;

use std::path::Path;

use cli_support::{FIXTURE, talk_args};
use hark_tools::cli::history::{self, HistoryArgs};
use hark_tools::cli::talk;
use support::process::RelayProcess;
use support::{FAST_TALK, QUICK_COMMITS, args};

fn history_args(relay: &RelayProcess, since_us: u64, json: bool) -> HistoryArgs {
    HistoryArgs {
        relay: vec![relay.addr().to_string()],
        conv: "cli-history".into(),
        since_us,
        json,
        token: None,
        data_dir: relay.data_dir().to_path_buf(),
        subject: Some("cli-test".into()),
    }
}

#[test]
fn history_lists_both_messages_talked_as_a_table_and_as_json() {
    let relay = RelayProcess::start(&args(&[FAST_TALK, QUICK_COMMITS]));
    let mut talked = Vec::new();
    for _ in 0..2 {
        let report = talk::run(
            &talk_args(&relay, "cli-history", Path::new(FIXTURE), true),
            &mut Vec::new(),
        )
        .unwrap_or_else(|error| relay.fail(&format!("talk failed: {error}")));
        talked.push(report);
    }

    let mut out = Vec::new();
    let entries = history::run(&history_args(&relay, 0, false), &mut out)
        .unwrap_or_else(|error| relay.fail(&format!("history failed: {error}")));
    let ids: Vec<_> = entries.iter().map(|e| e.msg_id).collect();
    assert_eq!(ids, vec![talked[0].msg_id, talked[1].msg_id]);
    for (entry, report) in entries.iter().zip(&talked) {
        assert_eq!(entry.frame_count, report.frame_count);
        assert_eq!(entry.sender, "cli-test");
    }
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 3, "a header and two rows: {text}");
    for report in &talked {
        let row = text
            .lines()
            .find(|line| line.starts_with(&report.msg_id.to_string()))
            .unwrap_or_else(|| panic!("{} in {text}", report.msg_id));
        assert!(row.ends_with("complete"), "{row}");
    }

    let mut out = Vec::new();
    history::run(&history_args(&relay, 0, true), &mut out).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, report) in lines.iter().zip(&talked) {
        assert_eq!(line["msg_id"], report.msg_id.to_string());
        assert_eq!(line["frame_count"], report.frame_count);
        assert_eq!(line["complete"], true);
        assert_eq!(line["sender"], "cli-test");
    }

    let since = talked[0].msg_id.start_us() + 1;
    let later = history::run(&history_args(&relay, since, false), &mut Vec::new()).unwrap();
    let later: Vec<_> = later.iter().map(|e| e.msg_id).collect();
    assert_eq!(later, vec![talked[1].msg_id]);
}
