//! `--target redis://HOST:PORT`: the same workload over Redis Streams, for comparing on one's
//! own hardware. Talkers `XADD` one entry per frame (the payload is the same header + padding);
//! listeners `XREAD BLOCK` the conversations' streams. The report has the same keys as a hark
//! run.
//!
//! Differences that follow from Redis's model, documented in docs/perf.md:
//! - Redis has no push: listeners poll with a blocking `XREAD` over several streams, so a
//!   listener connection serves many (listener, conversation) subscriptions. There are
//!   [`LISTENER_CONNECTIONS_MAX`] listener threads at most, each one blocking connection.
//! - Talkers run on one std thread per `--cores` entry (default one); each thread pipelines the
//!   `XADD`s of every frame due at once in one round trip.
//! - "stored" is the `XADD` reply: in Redis's memory (durable only with `appendfsync always`).
//! - Messages are the payload's message number; there is no message start or end on the wire.
//! - Each run uses fresh stream keys (`<prefix><run id>/<conversation>`) and deletes them after.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::Value;

use super::payload::PayloadHeader;
use super::procstat;
use super::report::Report;
use super::run::{RunArgs, RunError, parameters, unix_now_s, validate};
use super::schedule::{Schedule, SendTiming, classify_send};
use super::stats::{LoadStats, record_latency};
use super::tracker::MessageTracker;
use super::wire::mono_now_us;

/// Listener connections (threads) at most; subscriptions are spread over them.
pub const LISTENER_CONNECTIONS_MAX: usize = 64;
/// `XREAD BLOCK` timeout, ms: how often a listener checks whether the run is over.
const XREAD_BLOCK_MS: u64 = 100;
/// Entries one `XREAD` returns per stream at most.
const XREAD_COUNT: usize = 1_000;
/// Stream length kept by `XADD MAXLEN ~` (a listener more than this behind loses frames,
/// which the report shows as loss).
const STREAM_LEN_MAX: u64 = 100_000;
/// Keys deleted per `DEL` at cleanup.
const DELETE_BATCH: usize = 512;

/// A Redis error as text.
fn redis_error(error: redis::RedisError) -> String {
    error.to_string()
}

/// What the threads share.
#[derive(Debug)]
struct Shared {
    client: redis::Client,
    keys: Vec<String>,
    frame_bytes: usize,
    interval_us: u64,
    duration_us: u64,
    ramp_us: u64,
    message_frames: u32,
    late_bound_us: u64,
    early_release_us: u64,
    start_us: u64,
    drain_deadline_us: u64,
    /// Frames each conversation's talker sent, once all talkers are done.
    sent_per_conversation: Vec<AtomicU64>,
    talkers_done: AtomicBool,
}

/// Runs `args`' workload against the Redis at `url`.
pub fn run(args: &RunArgs, url: &str) -> Result<Report, RunError> {
    validate(args)?;
    let client = redis::Client::open(url).map_err(|e| RunError::Usage(format!("{url}: {e}")))?;
    let mut probe = client
        .get_connection()
        .map_err(|e| RunError::Setup(format!("{url}: {e}")))?;
    let run_id = format!(
        "{:x}",
        unix_now_s() * 1_000 + u64::from(std::process::id() % 1_000)
    );
    let keys: Vec<String> = (0..args.conversations)
        .map(|i| format!("{}{run_id}/{i}", args.conversation_prefix))
        .collect();
    let started_unix_s = unix_now_s();
    let start_us = mono_now_us() + 200_000;
    let duration_us = (args.duration * 1e6) as u64;
    let shared = Arc::new(Shared {
        client,
        keys,
        frame_bytes: args.frame_bytes as usize,
        interval_us: args.interval_ms * 1_000,
        duration_us,
        ramp_us: (args.ramp * 1e6) as u64,
        message_frames: args.message_frames,
        late_bound_us: args.late_bound_ms * 1_000,
        early_release_us: args.early_release_us,
        start_us,
        drain_deadline_us: start_us + duration_us + args.drain_ms * 1_000,
        sent_per_conversation: (0..args.conversations).map(|_| AtomicU64::new(0)).collect(),
        talkers_done: AtomicBool::new(false),
    });
    let cpu_before = args.relay_pid.map(procstat::cpu_time_us).transpose()?;

    // Listener subscriptions: (conversation, listener) pairs, listener-major, spread over
    // the listener connections so one connection never reads a stream twice.
    let subscriptions = args.conversations * args.listeners;
    let connections = (subscriptions as usize)
        .div_ceil(args.subs_per_connection as usize)
        .clamp(usize::from(subscriptions > 0), LISTENER_CONNECTIONS_MAX)
        .max(args.listeners as usize)
        .min(subscriptions as usize);
    let mut plans: Vec<Vec<u32>> = vec![Vec::new(); connections];
    let mut index = 0usize;
    for _ in 0..args.listeners {
        for conversation in 0..args.conversations as u32 {
            plans[index % connections].push(conversation);
            index += 1;
        }
    }
    let listener_threads: Vec<_> = plans
        .into_iter()
        .map(|conversations| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || listen(&shared, conversations))
        })
        .collect();
    let cores: Vec<Option<usize>> = match &args.cores {
        Some(cores) => cores.0.iter().map(|c| Some(*c)).collect(),
        None => vec![None],
    };
    let talker_threads: Vec<_> = cores
        .iter()
        .enumerate()
        .map(|(thread, cpu)| {
            let shared = Arc::clone(&shared);
            let mine: Vec<u32> = (0..args.conversations as u32)
                .filter(|c| *c as usize % cores.len() == thread)
                .collect();
            let cpu = *cpu;
            std::thread::spawn(move || talk(&shared, mine, cpu))
        })
        .collect();
    let mut stats = LoadStats::default();
    let mut first_error = None;
    for thread in talker_threads {
        match thread.join() {
            Ok(Ok(talker_stats)) => stats.merge(&talker_stats),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(_) => {
                first_error.get_or_insert("a talker thread panicked".into());
            }
        }
    }
    shared.talkers_done.store(true, Ordering::Release);
    for thread in listener_threads {
        match thread.join() {
            Ok(Ok(listener_stats)) => stats.merge(&listener_stats),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(_) => {
                first_error.get_or_insert("a listener thread panicked".into());
            }
        }
    }
    for keys in shared.keys.chunks(DELETE_BATCH) {
        let _: Result<Value, _> = redis::cmd("DEL").arg(keys).query(&mut probe);
    }
    if let Some(error) = first_error {
        return Err(RunError::Thread(error));
    }
    let relay_cpu_us = match (args.relay_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(procstat::cpu_time_us(pid)?.saturating_sub(before)),
        _ => None,
    };
    Ok(Report::new(
        parameters(args, "redis", url.to_owned()),
        started_unix_s,
        &stats,
        args.overload_max_percent,
        relay_cpu_us,
    ))
}

/// One talker thread: every frame of its conversations at its intended time, the frames due
/// together pipelined into one round trip.
fn talk(shared: &Shared, conversations: Vec<u32>, cpu: Option<usize>) -> Result<LoadStats, String> {
    if let Some(cpu) = cpu
        && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
    {
        return Err(format!("cannot pin a talker thread to CPU {cpu}"));
    }
    let mut connection = shared.client.get_connection().map_err(redis_error)?;
    let mut stats = LoadStats::default();
    let talkers = shared.keys.len() as u64;
    // (next intended time, conversation, frame number k, schedule)
    let mut due: BinaryHeap<Reverse<(u64, u32, u64)>> = BinaryHeap::new();
    let mut schedules = Vec::with_capacity(conversations.len());
    for (slot, &conversation) in conversations.iter().enumerate() {
        let schedule = Schedule::for_talker(
            u64::from(conversation),
            talkers,
            shared.start_us,
            shared.ramp_us,
            shared.interval_us,
            shared.duration_us,
        );
        if let Some(first) = schedule.intended_us(0) {
            due.push(Reverse((first, slot as u32, 0)));
        }
        schedules.push(schedule);
    }
    let mut sent = vec![0u64; conversations.len()];
    let mut payload = vec![0xa5u8; shared.frame_bytes];
    let mut previous_write_done_us = 0;
    let mut batch: Vec<(u32, u64, u64)> = Vec::new();
    while let Some(Reverse((next_us, _, _))) = due.peek().copied() {
        let now_us = mono_now_us();
        let wake_us = next_us.saturating_sub(shared.early_release_us);
        if wake_us > now_us {
            std::thread::sleep(Duration::from_micros(wake_us - now_us));
            continue;
        }
        let now_us = mono_now_us();
        let mut pipe = redis::pipe();
        batch.clear();
        while let Some(Reverse((intended_us, slot, k))) = due.peek().copied() {
            if intended_us > now_us + shared.early_release_us {
                break;
            }
            due.pop();
            let conversation = conversations[slot as usize];
            match classify_send(
                intended_us,
                now_us,
                previous_write_done_us,
                shared.late_bound_us,
            ) {
                SendTiming::OnTime => {}
                SendTiming::HeldBackBySocket => stats.socket_held_back_frames += 1,
                SendTiming::GeneratorLate => stats.generator_late_frames += 1,
            }
            record_latency(&mut stats.send_lag_us, now_us.saturating_sub(intended_us));
            let frames = u64::from(shared.message_frames);
            PayloadHeader {
                conversation,
                message: (k / frames) as u32,
                seq: (k % frames) as u32,
                intended_send_us: intended_us,
                sent_us: now_us,
            }
            .write_into(&mut payload);
            pipe.cmd("XADD")
                .arg(&shared.keys[conversation as usize])
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_LEN_MAX)
                .arg("*")
                .arg("f")
                .arg(&payload[..]);
            batch.push((slot, k, intended_us.min(now_us)));
            if let Some(next) = schedules[slot as usize].intended_us(k + 1) {
                due.push(Reverse((next, slot, k + 1)));
            }
        }
        let reply: Result<Vec<Value>, _> = pipe.query(&mut connection);
        let done_us = mono_now_us();
        previous_write_done_us = done_us;
        if let Err(error) = reply {
            stats.connection_errors += 1;
            return Err(format!("XADD: {error}"));
        }
        for &(slot, _, intended_us) in &batch {
            sent[slot as usize] += 1;
            stats.frames_sent += 1;
            stats.stored_acked_frames += 1;
            record_latency(
                &mut stats.stored_ack_us,
                done_us.saturating_sub(intended_us),
            );
        }
    }
    for (slot, &conversation) in conversations.iter().enumerate() {
        shared.sent_per_conversation[conversation as usize].store(sent[slot], Ordering::Release);
    }
    Ok(stats)
}

/// One listener subscription's state.
#[derive(Debug)]
struct Subscription {
    conversation: u32,
    last_id: String,
    message: Option<(u32, MessageTracker)>,
    unique: u64,
}

/// One listener connection: `XREAD BLOCK` over its subscriptions' streams until each has every
/// frame its talker sent, or the drain deadline.
fn listen(shared: &Shared, conversations: Vec<u32>) -> Result<LoadStats, String> {
    let mut stats = LoadStats::default();
    if conversations.is_empty() {
        return Ok(stats);
    }
    let mut connection = shared.client.get_connection().map_err(redis_error)?;
    let mut subs: Vec<Subscription> = conversations
        .iter()
        .map(|&conversation| Subscription {
            conversation,
            last_id: "0-0".into(),
            message: None,
            unique: 0,
        })
        .collect();
    let by_key: std::collections::HashMap<&str, usize> = subs
        .iter()
        .enumerate()
        .map(|(i, s)| (shared.keys[s.conversation as usize].as_str(), i))
        .collect();
    loop {
        let now_us = mono_now_us();
        if now_us >= shared.drain_deadline_us {
            break;
        }
        if shared.talkers_done.load(Ordering::Acquire)
            && subs.iter().all(|s| {
                s.unique
                    >= shared.sent_per_conversation[s.conversation as usize].load(Ordering::Acquire)
            })
        {
            break;
        }
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(XREAD_COUNT)
            .arg("BLOCK")
            .arg(XREAD_BLOCK_MS)
            .arg("STREAMS");
        for sub in &subs {
            command.arg(&shared.keys[sub.conversation as usize]);
        }
        for sub in &subs {
            command.arg(&sub.last_id);
        }
        let reply: Value = match command.query(&mut connection) {
            Ok(reply) => reply,
            Err(error) => {
                stats.connection_errors += 1;
                return Err(format!("XREAD: {error}"));
            }
        };
        let received_us = mono_now_us();
        for (key, entries) in stream_entries(reply) {
            let Some(&index) = by_key.get(key.as_str()) else {
                stats.foreign_frames += entries.len() as u64;
                continue;
            };
            let sub = &mut subs[index];
            for (id, payload) in entries {
                sub.last_id = id;
                stats.frames_received += 1;
                let Ok(header) = PayloadHeader::read(&payload) else {
                    stats.foreign_frames += 1;
                    continue;
                };
                if header.conversation != sub.conversation {
                    stats.foreign_frames += 1;
                    continue;
                }
                let tracker = match &mut sub.message {
                    Some((message, tracker)) if *message == header.message => tracker,
                    _ => {
                        sub.message =
                            Some((header.message, MessageTracker::new(shared.message_frames)));
                        // Set on the line above.
                        &mut sub.message.as_mut().expect("the message was just set").1
                    }
                };
                if !stats.count_arrival(tracker, header.seq) {
                    continue;
                }
                sub.unique += 1;
                let from_us = header.intended_send_us.min(header.sent_us);
                record_latency(&mut stats.latency_us, received_us.saturating_sub(from_us));
                record_latency(
                    &mut stats.latency_from_send_us,
                    received_us.saturating_sub(header.sent_us),
                );
            }
        }
    }
    Ok(stats)
}

/// One stream entry: its id and its field `f`.
pub type StreamEntry = (String, Vec<u8>);

/// The (stream key, [(entry id, field `f`)]) pairs of an `XREAD` reply (RESP2 arrays or
/// RESP3 maps); anything else in it is skipped.
pub fn stream_entries(reply: Value) -> Vec<(String, Vec<StreamEntry>)> {
    let streams: Vec<(Value, Value)> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let entries = pair.pop()?;
                    let key = pair.pop()?;
                    Some((key, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams,
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .filter_map(|(key, entries)| {
            let key = text(key)?;
            let Value::Array(entries) = entries else {
                return None;
            };
            let entries = entries
                .into_iter()
                .filter_map(|entry| {
                    let Value::Array(mut pair) = entry else {
                        return None;
                    };
                    if pair.len() != 2 {
                        return None;
                    }
                    let fields = pair.pop()?;
                    let id = text(pair.pop()?)?;
                    let Value::Array(fields) = fields else {
                        return None;
                    };
                    let mut fields = fields.into_iter();
                    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                        if text(name).as_deref() == Some("f")
                            && let Value::BulkString(bytes) = value
                        {
                            return Some((id, bytes));
                        }
                    }
                    None
                })
                .collect();
            Some((key, entries))
        })
        .collect()
}

/// A bulk or simple string's text.
fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn xread_replies_are_parsed() {
        let entry = |id: &str, payload: &str| {
            Value::Array(vec![bulk(id), Value::Array(vec![bulk("f"), bulk(payload)])])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("k1"),
                Value::Array(vec![entry("1-0", "a"), entry("2-0", "b")]),
            ]),
            Value::Array(vec![bulk("k2"), Value::Array(vec![entry("3-0", "c")])]),
            Value::Int(7),
        ]);
        let parsed = stream_entries(reply);
        assert_eq!(
            parsed,
            vec![
                (
                    "k1".to_string(),
                    vec![
                        ("1-0".to_string(), b"a".to_vec()),
                        ("2-0".to_string(), b"b".to_vec())
                    ]
                ),
                ("k2".to_string(), vec![("3-0".to_string(), b"c".to_vec())]),
            ]
        );
        assert!(stream_entries(Value::Nil).is_empty());
        let map = Value::Map(vec![(bulk("k3"), Value::Array(vec![entry("4-0", "d")]))]);
        assert_eq!(stream_entries(map)[0].1[0].0, "4-0");
    }
}
