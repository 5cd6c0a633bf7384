//! `hark listen`: each message heard becomes `DIR/MSGID.opus`, packets exactly as sent.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hark_core::client::{Backoff, ClientSession, JitterRng, MESSAGE_STREAMS_MAX};
use hark_core::protocol::{ErrorCode, ErrorSubject, Event, ListenFrom, MessageOutcome};
use hark_core::{ConvName, MsgId};

use super::conn::{Driver, RelaySource, now_us, reconnect};
use super::token::command_token;
use super::{CLIENT_NAME, CliError};
use crate::opus::OpusFileWriter;

/// The subscription id the CLI uses.
const SUB: u32 = 1;

/// How often the loop looks at Ctrl-C and the idle clock while no event comes.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// First pause before listening again after the relay ended the subscription because the
/// conversation's owner is unreachable, drains or moved (µs); doubles up to
/// [`RELISTEN_MAX_US`] with full jitter, for as long as the reconnect patience.
pub const RELISTEN_MIN_US: u64 = 50_000;

/// Longest pause before listening again (µs).
pub const RELISTEN_MAX_US: u64 = 1_000_000;

/// Whether a subscription the relay ended is listened to again: its owner is unreachable
/// or drains, or the map moved it (all pass within seconds).
fn relistenable(code: ErrorCode) -> bool {
    code == ErrorCode::OWNER_UNAVAILABLE
        || code == ErrorCode::MAP_CHANGED
        || code == ErrorCode::SHUTTING_DOWN
}

/// What `hark listen` needs.
#[derive(Debug, Clone)]
pub struct ListenArgs {
    /// Relay addresses (`host:port`): the host pool, tried first in this order, then
    /// avoiding hosts that failed.
    pub relay: Vec<String>,
    /// The conversation.
    pub conv: String,
    /// `live`, `start`, a message id, or a time.
    pub from: String,
    /// Where the files go.
    pub out_dir: PathBuf,
    /// Stop after this many messages ended.
    pub messages: Option<u64>,
    /// Stop after this long without an event.
    pub idle_exit: Option<Duration>,
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

/// One message written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardFile {
    /// The message.
    pub msg_id: MsgId,
    /// Its file.
    pub path: PathBuf,
    /// Packets written.
    pub frames: u32,
    /// Whether the talker ended it (false: truncated, or cut by the stop).
    pub complete: bool,
}

/// Parses `--from`.
pub fn parse_from(text: &str) -> Result<ListenFrom, CliError> {
    match text {
        "live" => Ok(ListenFrom::Live),
        "start" => Ok(ListenFrom::Since(0)),
        _ if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) => text
            .parse::<MsgId>()
            .map(ListenFrom::Message)
            .map_err(|error| CliError::Usage(format!("--from: {error}"))),
        _ => Ok(ListenFrom::Since(super::time::parse_time_us(text)?)),
    }
}

/// Where subscription [`SUB`] resumes on a new connection, if the session still has it.
fn where_sub_resumes(session: &ClientSession) -> Option<ListenFrom> {
    session
        .subscription(SUB)
        .map(|status| status.resume_from(session.oldest_open_message(SUB)))
}

struct OpenFile {
    msg_id: MsgId,
    path: PathBuf,
    writer: OpusFileWriter,
    next_seq: u32,
}

/// Runs `hark listen` with the `--relay` addresses, stopping on `stop` too (Ctrl-C).
pub fn run(
    args: &ListenArgs,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> Result<Vec<HeardFile>, CliError> {
    let relays = args.relay.clone();
    listen(args, &mut move || relays.clone(), stop, out)
}

/// Runs `hark listen`, asking `source` for the relay's addresses before every connection.
pub fn listen(
    args: &ListenArgs,
    source: &mut RelaySource<'_>,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> Result<Vec<HeardFile>, CliError> {
    let conversation =
        ConvName::new(&args.conv).map_err(|error| CliError::Usage(format!("--conv: {error}")))?;
    let from = parse_from(&args.from)?;
    std::fs::create_dir_all(&args.out_dir).map_err(|error| CliError::file(&args.out_dir, error))?;
    let token = command_token(
        args.token.as_deref(),
        &args.data_dir,
        args.subject.as_deref(),
        // Listening from a past message or time replays history.
        "listen,history",
        &conversation,
    )?;
    let mut driver = Driver::new(ClientSession::new(token, CLIENT_NAME));
    driver
        .session
        .listen(SUB, conversation.clone(), from, now_us(), &mut driver.out)
        .map_err(|error| CliError::Protocol(error.to_string()))?;
    // The listen is queued behind the hello that connect writes.
    driver.connect(&source())?.report(args.json, out)?;
    // Where the subscription resumes, as of the last event: the session forgets a
    // subscription the relay refuses before `listening`, so a relisten after such a refusal
    // listens again from here itself.
    let mut resume_point = where_sub_resumes(&driver.session).unwrap_or(from);
    let what = format!("listen to {conversation}");
    let mut open: BTreeMap<u32, OpenFile> = BTreeMap::new();
    let mut done = Vec::new();
    let mut last_event = Instant::now();
    let mut relisten = Backoff::new(RELISTEN_MIN_US, RELISTEN_MAX_US);
    let mut jitter = JitterRng::new(u64::from(std::process::id()) ^ now_us());
    let mut relisten_deadline: Option<Instant> = None;
    let result = (|| -> Result<(), CliError> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if args
                .messages
                .is_some_and(|count| done.len() as u64 >= count)
            {
                return Ok(());
            }
            if args
                .idle_exit
                .is_some_and(|idle| last_event.elapsed() >= idle)
            {
                return Ok(());
            }
            let event = match driver.next_event(STOP_CHECK_INTERVAL) {
                Ok(Some(event)) => event,
                Ok(None) => continue,
                Err(CliError::Disconnected(detail)) => {
                    if args.json {
                        writeln!(
                            out,
                            "{}",
                            serde_json::json!({"event": "disconnected", "detail": detail})
                        )?;
                    }
                    reconnect(&mut driver, source, args.reconnect_patience)?
                        .report(args.json, out)?;
                    continue;
                }
                Err(error) => return Err(error),
            };
            last_event = Instant::now();
            if let Some(point) = where_sub_resumes(&driver.session) {
                resume_point = point;
            }
            match event {
                Event::Listening { .. } => {
                    if args.json {
                        writeln!(
                            out,
                            "{}",
                            serde_json::json!({"event": "listening", "conversation": conversation.as_str()})
                        )?;
                    } else {
                        writeln!(out, "listening to {conversation}")?;
                    }
                }
                Event::CaughtUp { .. } => {
                    relisten.reset();
                    relisten_deadline = None;
                    if args.json {
                        writeln!(out, "{}", serde_json::json!({"event": "caught_up"}))?;
                    }
                }
                Event::MessageStarted {
                    stream,
                    msg_id,
                    sender,
                    codec,
                    ..
                } => {
                    if open.len() >= MESSAGE_STREAMS_MAX {
                        return Err(CliError::Protocol("too many messages open at once".into()));
                    }
                    // A message heard again after a resume starts its file again.
                    open.retain(|_, file| file.msg_id != msg_id);
                    let path = args.out_dir.join(format!("{msg_id}.opus"));
                    let serial = (msg_id.counter() ^ msg_id.start_us() as u32) | 1;
                    let writer = OpusFileWriter::create(&path, serial, &codec, "hark")?;
                    if args.json {
                        writeln!(
                            out,
                            "{}",
                            serde_json::json!({"event": "message_started", "msg_id": msg_id.to_string(), "sender": sender, "path": path.display().to_string()})
                        )?;
                    } else {
                        writeln!(out, "{msg_id} from {sender} -> {}", path.display())?;
                    }
                    open.insert(
                        stream,
                        OpenFile {
                            msg_id,
                            path,
                            writer,
                            next_seq: 0,
                        },
                    );
                }
                Event::Frame {
                    stream,
                    seq,
                    payload,
                    ..
                } => {
                    let Some(file) = open.get_mut(&stream) else {
                        continue;
                    };
                    if seq != file.next_seq {
                        return Err(CliError::Protocol(format!(
                            "{}: frame {seq} where {} was next",
                            file.msg_id, file.next_seq
                        )));
                    }
                    file.writer.write_packet(&payload, u64::from(seq))?;
                    file.next_seq += 1;
                }
                Event::MessageEnded {
                    stream,
                    frame_count,
                    outcome,
                } => {
                    let Some(file) = open.remove(&stream) else {
                        continue;
                    };
                    file.writer.finish()?;
                    let complete = outcome == MessageOutcome::Complete;
                    if args.json {
                        writeln!(
                            out,
                            "{}",
                            serde_json::json!({"event": "message_ended", "msg_id": file.msg_id.to_string(), "frame_count": frame_count, "complete": complete, "path": file.path.display().to_string()})
                        )?;
                    } else {
                        let how = if complete { "complete" } else { "truncated" };
                        writeln!(out, "{} ended: {frame_count} frames, {how}", file.msg_id)?;
                    }
                    done.push(HeardFile {
                        msg_id: file.msg_id,
                        path: file.path,
                        frames: file.next_seq,
                        complete,
                    });
                }
                Event::Error {
                    code,
                    about: ErrorSubject::Sub(_),
                    text,
                } if relistenable(code) => {
                    // Listen again where this subscription left off (a reconnect resumes
                    // every subscription from its oldest unfinished message).
                    let deadline = *relisten_deadline
                        .get_or_insert_with(|| Instant::now() + args.reconnect_patience);
                    let pause = Duration::from_micros(relisten.fail(&mut jitter));
                    if Instant::now() + pause > deadline {
                        return Err(CliError::refused(what.clone(), code, &text));
                    }
                    if args.json {
                        let line = serde_json::json!({
                            "event": "relisten", "reason": code.to_string(),
                            "pause_ms": pause.as_millis() as u64,
                        });
                        writeln!(out, "{line}")?;
                    }
                    std::thread::sleep(pause);
                    reconnect(&mut driver, source, args.reconnect_patience)?
                        .report(args.json, out)?;
                    if driver.session.subscription(SUB).is_none() {
                        // Refused before `listening`: the new connection's hello went
                        // without it. A write that fails shows as a break at the next
                        // event, and that reconnect sends the listen with the hello.
                        driver
                            .session
                            .listen(
                                SUB,
                                conversation.clone(),
                                resume_point,
                                now_us(),
                                &mut driver.out,
                            )
                            .map_err(|error| CliError::Protocol(error.to_string()))?;
                        match driver.flush() {
                            Ok(()) | Err(CliError::Disconnected(_)) => {}
                            Err(error) => return Err(error),
                        }
                    }
                }
                Event::Error {
                    code,
                    about: ErrorSubject::Sub(_),
                    text,
                } => {
                    return Err(CliError::refused(what.clone(), code, &text));
                }
                _ => {}
            }
        }
    })();
    // Close every file cleanly, whatever stopped the loop.
    for (_, file) in std::mem::take(&mut open) {
        let frames = file.next_seq;
        file.writer.finish()?;
        done.push(HeardFile {
            msg_id: file.msg_id,
            path: file.path,
            frames,
            complete: false,
        });
    }
    result.map(|()| done)
}

#[cfg(test)]
mod tests;
