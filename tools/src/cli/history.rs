//! `hark history`: a conversation's stored messages, page by page.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hark_core::ConvName;
use hark_core::client::ClientSession;
use hark_core::protocol::{ErrorSubject, Event, HistoryEntry, MessageOutcome};

use super::conn::{CONNECT_TIMEOUT, Driver, now_us, reconnect};
use super::token::command_token;
use super::{CLIENT_NAME, CliError};

/// Entries asked per page.
const PAGE_LIMIT: u16 = 256;

/// Entries listed at most in one run (`--limit` may lower it).
pub const HISTORY_ENTRIES_LISTED_MAX: usize = 100_000;

/// Times one run reconnects (to another host of `--relay` when there is one) after the
/// connection broke or a page did not come, asking for the page again each time.
pub const HISTORY_RECONNECTS_MAX: usize = 3;

/// How long one of those reconnects may take.
pub const HISTORY_RECONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// What `hark history` needs.
#[derive(Debug, Clone)]
pub struct HistoryArgs {
    /// Relay addresses (`host:port`): the host pool, tried first in this order, then
    /// avoiding hosts that failed.
    pub relay: Vec<String>,
    /// The conversation.
    pub conv: String,
    /// Messages that started at or after this time (µs).
    pub since_us: u64,
    /// One JSON object per message.
    pub json: bool,
    /// A token; otherwise minted from `data_dir`.
    pub token: Option<String>,
    /// The relay's data directory.
    pub data_dir: PathBuf,
    /// The subject of a minted token.
    pub subject: Option<String>,
}

/// Runs `hark history`; returns the entries listed.
pub fn run(args: &HistoryArgs, out: &mut dyn Write) -> Result<Vec<HistoryEntry>, CliError> {
    let conversation =
        ConvName::new(&args.conv).map_err(|error| CliError::Usage(format!("--conv: {error}")))?;
    let token = command_token(
        args.token.as_deref(),
        &args.data_dir,
        args.subject.as_deref(),
        "history",
        &conversation,
    )?;
    let mut driver = Driver::new(ClientSession::new(token, CLIENT_NAME));
    driver.connect(&args.relay)?;
    let mut entries: Vec<HistoryEntry> = Vec::new();
    let mut since_us = args.since_us;
    let mut reconnects = 0;
    // Bounded by HISTORY_ENTRIES_LISTED_MAX (every page with `more` adds entries) and by
    // HISTORY_RECONNECTS_MAX (every other pass reconnects).
    for request in 1u32.. {
        let (page, more) = match fetch_page(&mut driver, request, &conversation, since_us) {
            Ok(page) => page,
            Err(CliError::Disconnected(_)) if reconnects < HISTORY_RECONNECTS_MAX => {
                reconnects += 1;
                let relays = args.relay.clone();
                reconnect(
                    &mut driver,
                    &mut move || relays.clone(),
                    HISTORY_RECONNECT_PATIENCE,
                )?;
                continue;
            }
            Err(error) => return Err(error),
        };
        let last_start = page.last().map(|entry| entry.msg_id.start_us());
        entries.extend(page);
        match last_start {
            Some(start) if more && entries.len() < HISTORY_ENTRIES_LISTED_MAX => {
                since_us = start + 1
            }
            _ => break,
        }
    }
    entries.truncate(HISTORY_ENTRIES_LISTED_MAX);
    if args.json {
        for entry in &entries {
            let line = serde_json::json!({
                "msg_id": entry.msg_id.to_string(),
                "start": super::time::format_us(entry.msg_id.start_us()),
                "sender": entry.sender,
                "duration_ms": entry.duration_ms,
                "frame_count": entry.frame_count,
                "complete": entry.outcome == MessageOutcome::Complete,
            });
            writeln!(out, "{line}")?;
        }
    } else {
        writeln!(
            out,
            "{:<32}  {:<24}  {:<16}  {:>9}  {:>6}  OUTCOME",
            "MSGID", "START", "SENDER", "DURATION", "FRAMES"
        )?;
        for entry in &entries {
            let outcome = match entry.outcome {
                MessageOutcome::Complete => "complete",
                MessageOutcome::Truncated => "truncated",
            };
            writeln!(
                out,
                "{:<32}  {:<24}  {:<16}  {:>8.1}s  {:>6}  {outcome}",
                entry.msg_id.to_string(),
                super::time::format_us(entry.msg_id.start_us()),
                entry.sender,
                f64::from(entry.duration_ms) / 1000.0,
                entry.frame_count,
            )?;
        }
    }
    Ok(entries)
}

/// Asks for one page of history since `since_us` and waits for it.
fn fetch_page(
    driver: &mut Driver,
    request: u32,
    conversation: &ConvName,
    since_us: u64,
) -> Result<(Vec<HistoryEntry>, bool), CliError> {
    driver
        .session
        .history(
            request,
            conversation.clone(),
            since_us,
            PAGE_LIMIT,
            now_us(),
            &mut driver.out,
        )
        .map_err(|error| CliError::Protocol(error.to_string()))?;
    driver.flush()?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(CliError::Disconnected(
                "no history page from the relay".into(),
            ));
        }
        match driver.next_event(remaining.min(Duration::from_secs(1)))? {
            Some(Event::HistoryPage { entries, more, .. }) => return Ok((entries, more)),
            Some(Event::Error {
                code,
                about: ErrorSubject::HistoryRequest(_) | ErrorSubject::Connection,
                text,
            }) => {
                return Err(CliError::refused(
                    format!("history of {conversation}"),
                    code,
                    &text,
                ));
            }
            _ => {}
        }
    }
}
