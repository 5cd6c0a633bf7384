//! `hark store dump`: the messages a store holds, and with `--msg` the sizes of its frames.

use std::io::Write;
use std::path::PathBuf;

use hark_core::{ConvId, ConvName, MsgId};
use hark_storage::replay::REPLAY_FRAMES_MAX;
use hark_storage::{
    EndState, FrameBatch, MessageHeader, MessageState, ReplayStatus, Store, TIMELINE_LIMIT_MAX,
    TimelineFrom,
};

use super::{CliError, open, store_dirs};
use crate::cli::time::format_us;

/// Messages listed at most in one dump.
pub const DUMP_MESSAGES_LISTED_MAX: usize = 1_000_000;

/// What `hark store dump` needs.
#[derive(Debug, Clone)]
pub struct DumpArgs {
    /// A shard store or a data dir.
    pub dir: PathBuf,
    /// Only this conversation.
    pub conv: Option<String>,
    /// Only this message, with its frames' sizes.
    pub msg: Option<MsgId>,
}

/// Runs `hark store dump`; returns the messages listed.
pub fn run_dump(args: &DumpArgs, out: &mut dyn Write) -> Result<usize, CliError> {
    let conv = match &args.conv {
        Some(name) => Some(
            ConvName::new(name.clone())
                .map_err(|e| CliError::Usage(format!("--conv {name:?}: {e}")))?
                .id(),
        ),
        None => None,
    };
    let mut listed = 0usize;
    writeln!(
        out,
        "{:<32}  {:<16}  {:<24}  {:<16}  {:>10}  {:<9}  {:>7}",
        "MESSAGE", "CONV", "START (UTC)", "SENDER", "DURATION", "STATE", "FRAMES"
    )?;
    for (shard, path) in store_dirs(&args.dir)? {
        let (store, _) = open(&path, shard)?;
        if let Some(msg) = args.msg {
            let Some(header) = store.message_info(msg) else {
                continue;
            };
            if conv.is_some_and(|c| c != header.conv) {
                continue;
            }
            write_row(&header, out)?;
            write_frames(&store, msg, out)?;
            return Ok(1);
        }
        let mut convs: Vec<ConvId> = match conv {
            Some(c) => vec![c],
            None => store.conversations().collect(),
        };
        convs.sort_unstable();
        for c in convs {
            let mut from = TimelineFrom::Since(0);
            // Each page is non-empty and moves `from` past its last message.
            loop {
                let page = store.timeline(c, from, TIMELINE_LIMIT_MAX);
                let Some(last) = page.last() else { break };
                from = TimelineFrom::After(last.msg);
                for header in &page {
                    if listed == DUMP_MESSAGES_LISTED_MAX {
                        writeln!(out, "… stopped at {DUMP_MESSAGES_LISTED_MAX} messages")?;
                        return Ok(listed);
                    }
                    write_row(header, out)?;
                    listed += 1;
                }
            }
        }
    }
    if let Some(msg) = args.msg {
        return Err(CliError::Store(format!(
            "message {msg} is not in {}",
            args.dir.display()
        )));
    }
    Ok(listed)
}

fn write_row(header: &MessageHeader, out: &mut dyn Write) -> Result<(), CliError> {
    let sender = String::from_utf8_lossy(&header.sender);
    let duration = header.duration_us.map_or("-".to_owned(), |us| {
        format!("{}.{:03}s", us / 1_000_000, us / 1000 % 1000)
    });
    let state = match header.state {
        MessageState::Open => "open",
        MessageState::Ended(EndState::Complete) => "complete",
        MessageState::Ended(EndState::Truncated) => "truncated",
    };
    writeln!(
        out,
        "{:<32}  {:<16}  {:<24}  {:<16}  {:>10}  {:<9}  {:>7}",
        header.msg.to_string(),
        header.conv.to_string(),
        format_us(header.msg.start_us()),
        sender,
        duration,
        state,
        header.frames_durable
    )?;
    Ok(())
}

fn write_frames(store: &Store, msg: MsgId, out: &mut dyn Write) -> Result<(), CliError> {
    let store_error = |e: hark_storage::StoreError| CliError::Store(e.to_string());
    let mut cursor = store.replay_from(msg, 0).map_err(store_error)?;
    let mut frames = FrameBatch::new();
    writeln!(out, "{:>8}  {:>6}", "SEQ", "BYTES")?;
    // Each round returns frames or a final status.
    loop {
        let status = store
            .replay_next(&mut cursor, REPLAY_FRAMES_MAX, &mut frames)
            .map_err(store_error)?;
        for (seq, bytes) in frames.iter() {
            writeln!(out, "{seq:>8}  {:>6}", bytes.len())?;
        }
        match status {
            ReplayStatus::More if !frames.is_empty() => {}
            _ => return Ok(()),
        }
    }
}
