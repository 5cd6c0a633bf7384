//! `hark talk`: an Ogg Opus file as one message, paced at real time, resumed after a break
//! and handed over to a new owner when its owner host is lost or drains.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hark_core::client::{Backoff, ClientSession, JitterRng};
use hark_core::protocol::{ErrorCode, ErrorSubject, Event};
use hark_core::{ConvName, MsgId};

use super::conn::{Driver, RelaySource, now_us, reconnect};
use super::token::command_token;
use super::{CLIENT_NAME, CliError};
use crate::opus::OpusFile;

/// The talk stream handle the CLI uses (one message per run).
const STREAM: u32 = 1;

/// Times one run talks the file again after the relay lost the open message.
pub const MESSAGE_RESTARTS_MAX: usize = 3;

/// First pause before a refused start is tried again (µs); it doubles up to
/// [`START_RETRY_MAX_US`], with full jitter.
pub const START_RETRY_MIN_US: u64 = 50_000;

/// Longest pause before a refused start is tried again (µs).
pub const START_RETRY_MAX_US: u64 = 1_000_000;

/// Longest wait for the relay's `talk_ended` after the last frame.
pub const END_WAIT: Duration = Duration::from_secs(30);

/// What `hark talk` needs.
#[derive(Debug, Clone)]
pub struct TalkArgs {
    /// Relay addresses (`host:port`): the host pool, tried first in this order, then
    /// avoiding hosts that failed.
    pub relay: Vec<String>,
    /// The conversation.
    pub conv: String,
    /// The Ogg Opus file.
    pub file: PathBuf,
    /// Send as fast as the relay's announced frame rate allows instead of in real time.
    pub fast: bool,
    /// One JSON object per event.
    pub json: bool,
    /// A token; otherwise one is minted from `data_dir`'s secret.
    pub token: Option<String>,
    /// The relay's data directory (for its secret).
    pub data_dir: PathBuf,
    /// The subject of a minted token.
    pub subject: Option<String>,
    /// How long to keep trying to reconnect after the connection breaks.
    pub reconnect_patience: Duration,
}

/// How a talk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TalkReport {
    /// The message.
    pub msg_id: MsgId,
    /// Frames in the stored message.
    pub frame_count: u32,
    /// Connections beyond the first (resumes).
    pub resumes: u32,
    /// Times the message's owner was lost and the message resumed on (or waited for) a new
    /// owner on the same connection.
    pub handovers: u32,
    /// Messages the relay lost (it restarted before their end), talked again as new ones.
    pub abandoned: Vec<String>,
}

/// Runs `hark talk` with the addresses `--relay` gives.
pub fn run(args: &TalkArgs, out: &mut dyn Write) -> Result<TalkReport, CliError> {
    let relays = args.relay.clone();
    talk(args, &mut move || relays.clone(), out)
}

/// Runs `hark talk`, asking `source` for the relay's addresses before every connection (a
/// test's relay that restarts on a new port; a DNS name that moved).
pub fn talk(
    args: &TalkArgs,
    source: &mut RelaySource<'_>,
    out: &mut dyn Write,
) -> Result<TalkReport, CliError> {
    let conversation =
        ConvName::new(&args.conv).map_err(|error| CliError::Usage(format!("--conv: {error}")))?;
    let file = OpusFile::read(&args.file)?;
    let token = command_token(
        args.token.as_deref(),
        &args.data_dir,
        args.subject.as_deref(),
        "talk",
        &conversation,
    )?;
    let mut session = ClientSession::new(token, CLIENT_NAME);
    // Talkers that lost the same owner together spread their resumes.
    session.set_jitter_seed(now_us() ^ u64::from(std::process::id()).rotate_left(17));
    let mut driver = Driver::new(session);
    driver.connect(&source())?.report(args.json, out)?;
    let frame_interval = match driver.session.hello_state() {
        hark_core::client::HelloState::Accepted(terms) if args.fast => Some(Duration::from_micros(
            1_000_000 / u64::from(terms.limits.frames_per_second_max.max(1)),
        )),
        _ => None,
    };
    let mut abandoned = Vec::new();
    let mut handovers = 0;
    // A start the relay refused before naming the message (its owner is unreachable or
    // draining, or the map is moving) stored nothing: it is tried again after a pause that
    // grows with full jitter, for as long as the reconnect patience.
    let mut start_backoff = Backoff::new(START_RETRY_MIN_US, START_RETRY_MAX_US);
    let mut jitter = JitterRng::new(u64::from(std::process::id()) ^ now_us());
    let mut start_deadline: Option<Instant> = None;
    let sending = Sending {
        file: &file,
        conversation: &conversation,
        frame_interval,
        args,
    };
    // Bounded by MESSAGE_RESTARTS_MAX: each pass either returns or restarts the message.
    let (msg_id, frame_count) = loop {
        match send_message(&mut driver, &sending, source, out, &mut handovers) {
            Ok(done) => break done,
            Err((CliError::Refused { code, .. }, None)) if start_retryable(ErrorCode(code)) => {
                let deadline =
                    *start_deadline.get_or_insert_with(|| Instant::now() + args.reconnect_patience);
                let pause = Duration::from_micros(start_backoff.fail(&mut jitter));
                if Instant::now() + pause > deadline {
                    return Err(CliError::refused(
                        format!("talk to {conversation}"),
                        ErrorCode(code),
                        "no relay took the message within the reconnect patience",
                    ));
                }
                if args.json {
                    let line = serde_json::json!({
                        "event": "start_retry", "reason": ErrorCode(code).to_string(),
                        "pause_ms": pause.as_millis() as u64,
                    });
                    writeln!(out, "{line}")?;
                }
                std::thread::sleep(pause);
            }
            Err((CliError::Refused { code, text, .. }, lost))
                if restartable(ErrorCode(code), driver.connections() > 1 || handovers > 0)
                    && abandoned.len() < MESSAGE_RESTARTS_MAX =>
            {
                // The relay restarted and forgot the open message, or no new owner took it
                // over in time, or it asks for frames no longer kept, or the message never
                // got an id to hand over (what was stored stays, ended truncated): talk the
                // whole file again as a new message.
                let lost =
                    lost.map_or_else(|| "an unnamed message".to_owned(), |id| id.to_string());
                if args.json {
                    let line = serde_json::json!({
                        "event": "restarted", "abandoned_msg_id": lost, "reason": ErrorCode(code).to_string(),
                        "detail": text,
                    });
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(
                        out,
                        "the relay lost {lost} ({}); talking the file again as a new message",
                        ErrorCode(code)
                    )?;
                }
                abandoned.push(lost);
            }
            Err((error, _)) => return Err(error),
        }
    };
    let resumes = driver.connections().saturating_sub(1);
    if args.json {
        let line = serde_json::json!({
            "event": "stored", "msg_id": msg_id.to_string(), "frame_count": frame_count,
            "complete": frame_count as usize == file.packets.len(), "resumes": resumes,
            "handovers": handovers,
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "stored {msg_id}: {frame_count} of {} frames durable ({resumes} resumes, {handovers} handovers)",
            file.packets.len()
        )?;
    }
    Ok(TalkReport {
        msg_id,
        frame_count,
        resumes,
        handovers,
        abandoned,
    })
}

/// Whether a start refused before the message had an id is tried again: its owner is
/// unreachable or drains, or the map moves (all pass within seconds).
fn start_retryable(code: ErrorCode) -> bool {
    code == ErrorCode::OWNER_UNAVAILABLE
        || code == ErrorCode::MAP_CHANGED
        || code == ErrorCode::SHUTTING_DOWN
}

/// Whether a message cut by `code` is talked again as a new one. A lost owner is handed over
/// by the session and reaches here only when that failed, so these are: the relay forgot the
/// message after a restart or a new owner asks for frames no longer kept
/// (`message_unavailable`, only once the message was `resumed`: before, an unknown message
/// is the caller's mistake); no new owner took it within the handover patience
/// (`owner_unavailable`). A start refused before the message had an id is retried instead
/// ([`start_retryable`]).
fn restartable(code: ErrorCode, resumed: bool) -> bool {
    (code == ErrorCode::MESSAGE_UNAVAILABLE && resumed)
        || code == ErrorCode::OWNER_UNAVAILABLE
        || code == ErrorCode::MAP_CHANGED
}

/// Talks `file` as one message on the driver's session; a failure comes with the message id
/// the relay had given, if any. `handovers` counts the handovers of the run.
fn send_message(
    driver: &mut Driver,
    sending: &Sending<'_>,
    source: &mut RelaySource<'_>,
    out: &mut dyn Write,
    handovers: &mut u32,
) -> Result<(MsgId, u32), (CliError, Option<MsgId>)> {
    let mut state = TalkState {
        what: format!("talk to {}", sending.conversation),
        json: sending.args.json,
        announced: false,
        ended: None,
        msg_id: None,
        handovers_seen: 0,
    };
    let result = send_frames(driver, sending, source, out, &mut state);
    *handovers += state.handovers_seen;
    match result {
        Ok(()) => match (state.msg_id, state.ended) {
            (Some(msg_id), Some(frame_count)) => Ok((msg_id, frame_count)),
            _ => Err((
                CliError::Protocol("talk_ended before talk_started".into()),
                state.msg_id,
            )),
        },
        Err(error) => Err((error, state.msg_id)),
    }
}

/// What one pass of [`send_frames`] sends, and how.
struct Sending<'a> {
    file: &'a OpusFile,
    conversation: &'a ConvName,
    frame_interval: Option<Duration>,
    args: &'a TalkArgs,
}

fn send_frames(
    driver: &mut Driver,
    sending: &Sending<'_>,
    source: &mut RelaySource<'_>,
    out: &mut dyn Write,
    state: &mut TalkState,
) -> Result<(), CliError> {
    let Sending {
        file,
        conversation,
        frame_interval,
        args,
    } = *sending;
    driver
        .session
        .talk_start(
            STREAM,
            conversation.clone(),
            file.head_bytes.clone(),
            now_us(),
            &mut driver.out,
        )
        .map_err(|error| CliError::Protocol(error.to_string()))?;
    let start = Instant::now();
    let mut elapsed_samples: u64 = 0;
    for (index, packet) in file.packets.iter().enumerate() {
        let due = match frame_interval {
            Some(interval) => start + interval * index as u32,
            None => start + Duration::from_micros(elapsed_samples * 1000 / 48),
        };
        elapsed_samples += u64::from(file.packet_samples[index]);
        // Wait for the frame's time (and for room among the frames kept for a resume),
        // handling events meanwhile. Bounded: each pass waits or handles an event.
        loop {
            let remaining = due.saturating_duration_since(Instant::now());
            let room = driver.session.can_send_frame(STREAM, packet.len());
            if remaining.is_zero() && room {
                break;
            }
            let wait = if remaining.is_zero() {
                Duration::from_millis(100)
            } else {
                remaining
            };
            step(driver, state, source, args.reconnect_patience, wait, out)?;
        }
        let sent = driver
            .session
            .talk_frame(STREAM, packet.clone(), now_us(), &mut driver.out)
            .map_err(|error| CliError::Protocol(error.to_string()));
        sent?;
        if let Err(CliError::Disconnected(_)) = driver.flush() {
            reconnect(driver, source, args.reconnect_patience)?.report(args.json, out)?;
        }
    }
    driver
        .session
        .talk_end(STREAM, now_us(), &mut driver.out)
        .map_err(|error| CliError::Protocol(error.to_string()))?;
    if let Err(CliError::Disconnected(_)) = driver.flush() {
        reconnect(driver, source, args.reconnect_patience)?.report(args.json, out)?;
    }
    let deadline = Instant::now() + END_WAIT + args.reconnect_patience;
    while state.ended.is_none() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(CliError::Disconnected(
                "no talk_ended from the relay".into(),
            ));
        }
        step(
            driver,
            state,
            source,
            args.reconnect_patience,
            remaining.min(Duration::from_secs(1)),
            out,
        )?;
    }
    Ok(())
}

struct TalkState {
    what: String,
    json: bool,
    announced: bool,
    ended: Option<u32>,
    msg_id: Option<MsgId>,
    /// Handovers of this message reported so far (the session's count for the stream).
    handovers_seen: u32,
}

/// Waits at most `wait` for one event and handles it; reconnects when the connection broke.
fn step(
    driver: &mut Driver,
    state: &mut TalkState,
    source: &mut RelaySource<'_>,
    patience: Duration,
    wait: Duration,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let event = match driver.next_event(wait) {
        Ok(event) => event,
        Err(CliError::Disconnected(detail)) => {
            if state.json {
                let line = serde_json::json!({"event": "disconnected", "detail": detail});
                writeln!(out, "{line}")?;
            }
            return reconnect(driver, source, patience)?.report(state.json, out);
        }
        Err(error) => return Err(error),
    };
    match event {
        Some(Event::TalkStarted {
            msg_id, next_seq, ..
        }) => {
            state.msg_id = Some(msg_id);
            if state.json {
                let line = serde_json::json!({"event": "talk_started", "msg_id": msg_id.to_string(), "next_seq": next_seq});
                writeln!(out, "{line}")?;
            } else if !state.announced {
                writeln!(out, "message {msg_id}")?;
            } else {
                writeln!(out, "resumed {msg_id} from frame {next_seq}")?;
            }
            state.announced = true;
        }
        Some(Event::Stored { frames_stored, .. }) if state.json => {
            let line = serde_json::json!({"event": "stored_ack", "frames_stored": frames_stored});
            writeln!(out, "{line}")?;
        }
        Some(Event::TalkEnded { frame_count, .. }) => state.ended = Some(frame_count),
        Some(Event::Error {
            code,
            about: ErrorSubject::TalkStream(_),
            text,
        }) => match driver.session.talk(STREAM) {
            // The session hands the message over (it resumes it with backoff): keep going.
            Some(status) if status.handover_since_us.is_some() => {
                let msg_id = status.msg_id.map(|id| id.to_string()).unwrap_or_default();
                let new = status.handovers > state.handovers_seen;
                state.handovers_seen = status.handovers;
                report_handover(state.json, new, &msg_id, code, out)?;
            }
            _ => return Err(CliError::refused(state.what.clone(), code, &text)),
        },
        Some(Event::Error {
            code,
            about: ErrorSubject::Connection,
            text,
        }) if state.msg_id.is_none() => {
            return Err(CliError::refused(state.what.clone(), code, &text));
        }
        _ => {}
    }
    Ok(())
}

/// Says that the message's owner was lost and the session resumes it on a new owner: a
/// line per handover in text, a `handover` event (and a `handover_retry` per refused resume)
/// in JSON.
fn report_handover(
    json: bool,
    new: bool,
    msg_id: &str,
    code: ErrorCode,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if json {
        let event = if new { "handover" } else { "handover_retry" };
        let line = serde_json::json!({
            "event": event, "msg_id": msg_id, "reason": code.to_string(),
        });
        writeln!(out, "{line}")?;
    } else if new {
        writeln!(out, "handover {msg_id}: resuming on a new owner")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
