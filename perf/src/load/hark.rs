//! The workload against a hark relay, on one generator thread: listener connections (each
//! subscribed to one or more conversations) and talker connections (one per conversation),
//! as a real client would use them.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hark_core::protocol::{
    ErrorSubject, Event, ListenFrom, MessageOutcome, Request, write_talk_frame,
};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, Splitable};
use monoio::net::TcpStream;

use super::payload::PayloadHeader;
use super::run::{RunShared, ThreadCtx};
use super::schedule::{Schedule, SendTiming, classify_send};
use super::stats::record_latency;
use super::tracker::MessageTracker;
use super::wire::{
    CLIENT_NAME, Wire, WireError, describe_error, mono_now_us, put_request, read_into,
};

/// How long connecting, the hello and the listens of one connection may take.
pub const SETUP_WAIT: Duration = Duration::from_secs(20);

/// Messages one subscription may have open at once before further ones are counted as
/// foreign (one talker per conversation has one open, two around a roll-over).
const OPEN_MESSAGES_PER_SUB_MAX: usize = 4;

/// Talk streams whose frames a talker keeps waiting for a `stored` ack; when a new message
/// starts with this many still unacknowledged, the oldest is given up (its frames simply get
/// no stored-ack sample: `stored_ack_us.count` < `frames_sent` shows it).
const UNACKED_STREAMS_MAX: usize = 8;

/// Poll period of a talker waiting for its last `talk_ended`.
const TALK_END_POLL: Duration = Duration::from_millis(10);

/// Encodes the hello with the run's token.
fn hello(shared: &RunShared, buf: &mut BytesMut) -> Result<(), WireError> {
    put_request(
        buf,
        &Request::Hello {
            version: 1,
            token: shared.token.clone(),
            client_name: CLIENT_NAME.to_owned(),
        },
    )
}

/// Connects, says hello and waits for `hello_accepted`.
async fn open_session(shared: &RunShared, extra: BytesMut) -> Result<Wire, WireError> {
    let mut wire = Wire::connect(shared.addr).await?;
    let mut out = BytesMut::new();
    hello(shared, &mut out)?;
    out.extend_from_slice(&extra);
    wire.send(out.freeze()).await?;
    Ok(wire)
}

/// A listener connection subscribed (live) to `conversations`, its subs numbered by position;
/// returns once the relay said `listening` for each.
pub async fn setup_listener(shared: &RunShared, conversations: &[u32]) -> Result<Wire, WireError> {
    let mut listens = BytesMut::new();
    for (sub, &conversation) in conversations.iter().enumerate() {
        put_request(
            &mut listens,
            &Request::Listen {
                sub: sub as u32,
                conversation: shared.conversations[conversation as usize].clone(),
                from: ListenFrom::Live,
            },
        )?;
    }
    let mut wire = open_session(shared, listens).await?;
    let mut accepted = false;
    let mut listening = 0usize;
    wire.read_until(SETUP_WAIT, |event| {
        match event {
            Event::HelloAccepted { .. } => accepted = true,
            Event::Listening { .. } => listening += 1,
            Event::Error { .. } | Event::GoAway { .. } => {
                return Err(WireError::Refused(describe_error(&event)));
            }
            _ => {}
        }
        Ok(accepted && listening == conversations.len())
    })
    .await?;
    Ok(wire)
}

/// A talker connection whose hello was accepted.
pub async fn setup_talker(shared: &RunShared) -> Result<Wire, WireError> {
    let mut wire = open_session(shared, BytesMut::new()).await?;
    wire.read_until(SETUP_WAIT, |event| match event {
        Event::HelloAccepted { .. } => Ok(true),
        Event::Error { .. } | Event::GoAway { .. } => {
            Err(WireError::Refused(describe_error(&event)))
        }
        _ => Ok(false),
    })
    .await?;
    Ok(wire)
}

/// A message a listener connection is hearing.
#[derive(Debug)]
struct OpenMessage {
    sub: usize,
    message: u32,
    tracker: MessageTracker,
}

/// Reads a listener connection until every subscription has heard its talker's last message
/// end, or the run's drain deadline shuts the socket.
pub async fn listen(ctx: Rc<ThreadCtx>, mut wire: Wire, conversations: Vec<u32>) {
    let shared = std::sync::Arc::clone(&ctx.shared);
    let mut open: HashMap<u32, OpenMessage> = HashMap::new();
    let mut ended = vec![0u32; conversations.len()];
    let open_max = OPEN_MESSAGES_PER_SUB_MAX * conversations.len();
    let mut pongs = BytesMut::new();
    loop {
        let now_us = mono_now_us();
        {
            let mut stats = ctx.stats.borrow_mut();
            let mut interval = ctx.interval_latency.borrow_mut();
            loop {
                let event = match wire.next_buffered() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(_) => {
                        stats.connection_errors += 1;
                        return;
                    }
                };
                match event {
                    Event::Frame {
                        stream,
                        seq,
                        kind,
                        payload,
                    } => {
                        stats.frames_received += 1;
                        if kind == hark_core::protocol::FrameKind::Replay {
                            stats.replayed_frames += 1;
                        }
                        let Some(message) = open.get_mut(&stream) else {
                            stats.foreign_frames += 1;
                            continue;
                        };
                        let Ok(header) = PayloadHeader::read(&payload) else {
                            stats.foreign_frames += 1;
                            continue;
                        };
                        if header.conversation != conversations[message.sub]
                            || header.message != message.message
                            || header.seq != seq
                        {
                            stats.foreign_frames += 1;
                            continue;
                        }
                        if !stats.count_arrival(&mut message.tracker, seq) {
                            continue;
                        }
                        // Late frames count from their intended time (no coordinated omission), frames
                        // released early (timer slack) from when they left.
                        let from_us = header.intended_send_us.min(header.sent_us);
                        let latency_us = now_us.saturating_sub(from_us);
                        record_latency(&mut stats.latency_us, latency_us);
                        record_latency(&mut interval, latency_us);
                        record_latency(
                            &mut stats.latency_from_send_us,
                            now_us.saturating_sub(header.sent_us),
                        );
                    }
                    Event::MessageStarted {
                        sub, stream, codec, ..
                    } => {
                        let sub = sub as usize;
                        let message = codec
                            .first_chunk::<4>()
                            .map(|bytes| u32::from_le_bytes(*bytes));
                        match message {
                            Some(message) if sub < conversations.len() && open.len() < open_max => {
                                open.insert(
                                    stream,
                                    OpenMessage {
                                        sub,
                                        message,
                                        tracker: MessageTracker::new(shared.message_frames),
                                    },
                                );
                            }
                            _ => stats.foreign_frames += 1,
                        }
                    }
                    Event::MessageEnded {
                        stream, outcome, ..
                    } => {
                        if let Some(message) = open.remove(&stream) {
                            ended[message.sub] += 1;
                            if outcome == MessageOutcome::Truncated {
                                stats.messages_truncated += 1;
                            }
                        }
                    }
                    Event::Ping { nonce }
                        if put_request(&mut pongs, &Request::Pong { nonce }).is_err() =>
                    {
                        stats.connection_errors += 1;
                        return;
                    }
                    Event::Error { .. } | Event::GoAway { .. } => stats.error_events += 1,
                    _ => {}
                }
            }
        }
        let all_heard = conversations
            .iter()
            .zip(&ended)
            .all(|(&conversation, &ended)| {
                ended >= shared.final_messages[conversation as usize].load(Ordering::Acquire)
            });
        if all_heard {
            return;
        }
        if !pongs.is_empty() && wire.send(pongs.split().freeze()).await.is_err() {
            ctx.stats.borrow_mut().connection_errors += 1;
            return;
        }
        if wire.read_more().await.is_err() {
            if !ctx.draining_done.get() {
                ctx.stats.borrow_mut().connection_errors += 1;
            }
            return;
        }
    }
}

/// A talker's bookkeeping shared between its sending loop and its event reader.
#[derive(Debug, Default)]
struct TalkerState {
    /// Per open talk stream: (seq, intended send time) of frames not yet acknowledged stored.
    unacked: RefCell<HashMap<u32, VecDeque<(u32, u64)>>>,
    /// Talk streams started and not yet ended by the relay.
    open_streams: Cell<u32>,
    /// A ping from the relay to answer with the next write.
    pong_due: Cell<Option<u64>>,
    /// The reader stopped (socket closed or broken).
    reader_done: Cell<bool>,
}

/// Sends conversation `conversation`'s frames on its schedule, rolling to a new message every
/// `message_frames`, then ends the last message and waits for its `talk_ended`.
pub async fn talk(ctx: Rc<ThreadCtx>, wire: Wire, conversation: u32) {
    let shared = std::sync::Arc::clone(&ctx.shared);
    let start_us = shared.start_us.load(Ordering::Acquire);
    let schedule = Schedule::for_talker(
        u64::from(conversation),
        shared.conversations.len() as u64,
        start_us,
        shared.ramp_us,
        shared.interval_us,
        shared.duration_us,
    );
    let Wire { stream, input, .. } = wire;
    let (reader, mut writer) = stream.into_split();
    let state = Rc::new(TalkerState::default());
    monoio::spawn(read_talker_events(
        Rc::clone(&ctx),
        Rc::clone(&state),
        reader,
        input,
    ));

    let conversation_name = shared.conversations[conversation as usize].clone();
    let mut payload = vec![0xa5u8; shared.frame_bytes];
    let mut out = BytesMut::with_capacity(4096);
    let mut message = 0u32;
    let mut seq = 0u32;
    let mut previous_write_done_us = 0u64;
    let mut frames_sent = 0u64;
    let mut broken = false;
    for k in 0.. {
        let Some(intended_us) = schedule.intended_us(k) else {
            break;
        };
        let now_us = mono_now_us();
        let wake_us = intended_us.saturating_sub(shared.early_release_us);
        if wake_us > now_us {
            monoio::time::sleep(Duration::from_micros(wake_us - now_us)).await;
        }
        let now_us = mono_now_us();
        {
            let mut stats = ctx.stats.borrow_mut();
            record_latency(&mut stats.send_lag_us, now_us.saturating_sub(intended_us));
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
        }
        let talk_stream = message + 1;
        let mut encoded = Ok(());
        if seq == 0 {
            encoded = put_request(
                &mut out,
                &Request::TalkStart {
                    stream: talk_stream,
                    conversation: conversation_name.clone(),
                    codec: Bytes::copy_from_slice(&message.to_le_bytes()),
                    resume: None,
                },
            );
            if start_unacked(&mut state.unacked.borrow_mut(), talk_stream) {
                // The oldest stream was given up: its talk_ended will not count.
                state
                    .open_streams
                    .set(state.open_streams.get().saturating_sub(1));
            }
            state.open_streams.set(state.open_streams.get() + 1);
        }
        if let Some(nonce) = state.pong_due.take() {
            encoded = encoded.and(put_request(&mut out, &Request::Pong { nonce }));
        }
        PayloadHeader {
            conversation,
            message,
            seq,
            intended_send_us: intended_us,
            sent_us: now_us,
        }
        .write_into(&mut payload);
        let framed = write_talk_frame(&mut out, talk_stream, seq, &payload);
        if encoded.is_err() || framed.is_err() {
            ctx.stats.borrow_mut().connection_errors += 1;
            broken = true;
            break;
        }
        if let Some(unacked) = state.unacked.borrow_mut().get_mut(&talk_stream) {
            unacked.push_back((seq, intended_us.min(now_us)));
        }
        seq += 1;
        if seq == shared.message_frames {
            if put_request(
                &mut out,
                &Request::TalkEnd {
                    stream: talk_stream,
                    frame_count: seq,
                },
            )
            .is_err()
            {
                broken = true;
            }
            message += 1;
            seq = 0;
        }
        let (result, _) = writer.write_all(out.split().freeze()).await;
        previous_write_done_us = mono_now_us();
        if result.is_err() || broken {
            // After the drain deadline the socket was shut down by us, not broken.
            if !ctx.draining_done.get() {
                ctx.stats.borrow_mut().connection_errors += 1;
            }
            broken = true;
            break;
        }
        ctx.stats.borrow_mut().frames_sent += 1;
        frames_sent += 1;
    }
    // Frames the schedule owed that never left: the socket held the talker back past the
    // drain deadline, or the connection broke.
    let scheduled = (0..).map_while(|k| schedule.intended_us(k)).count() as u64;
    ctx.stats.borrow_mut().frames_not_sent += scheduled.saturating_sub(frames_sent);
    // Listeners finish once they have heard this many messages end.
    let messages = message + u32::from(seq > 0);
    shared.final_messages[conversation as usize].store(messages, Ordering::Release);
    if broken {
        return;
    }
    if seq > 0 {
        let end = Request::TalkEnd {
            stream: message + 1,
            frame_count: seq,
        };
        if put_request(&mut out, &end).is_err()
            || writer.write_all(out.split().freeze()).await.0.is_err()
        {
            ctx.stats.borrow_mut().connection_errors += 1;
            return;
        }
    }
    while state.open_streams.get() > 0 && !state.reader_done.get() {
        monoio::time::sleep(TALK_END_POLL).await;
    }
    // Closing our side ends the reader (the relay answers the close with its own).
    let _ = writer.shutdown().await;
    while !state.reader_done.get() {
        monoio::time::sleep(TALK_END_POLL).await;
    }
}

/// Starts tracking talk stream `stream`'s unacknowledged frames; when
/// [`UNACKED_STREAMS_MAX`] streams are tracked already, gives up the oldest (lowest handle:
/// handles grow with every message) and returns true.
fn start_unacked(unacked: &mut HashMap<u32, VecDeque<(u32, u64)>>, stream: u32) -> bool {
    let mut evicted = false;
    if unacked.len() >= UNACKED_STREAMS_MAX
        && let Some(oldest) = unacked.keys().min().copied()
    {
        unacked.remove(&oldest);
        evicted = true;
    }
    unacked.insert(stream, VecDeque::new());
    evicted
}

/// Reads a talker connection's events: `stored` and `talk_ended` acks (stored-ack latency),
/// pings, errors.
async fn read_talker_events(
    ctx: Rc<ThreadCtx>,
    state: Rc<TalkerState>,
    mut reader: OwnedReadHalf<TcpStream>,
    mut input: BytesMut,
) {
    let mut decoder = hark_core::protocol::Decoder::new();
    loop {
        let now_us = mono_now_us();
        {
            let mut stats = ctx.stats.borrow_mut();
            let mut unacked = state.unacked.borrow_mut();
            loop {
                let event = match decoder.decode_event(&mut input) {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(_) => {
                        stats.connection_errors += 1;
                        state.reader_done.set(true);
                        return;
                    }
                };
                match event {
                    Event::Stored {
                        stream,
                        frames_stored,
                    } => {
                        if let Some(frames) = unacked.get_mut(&stream) {
                            while frames.front().is_some_and(|(seq, _)| *seq < frames_stored) {
                                if let Some((_, intended_us)) = frames.pop_front() {
                                    record_latency(
                                        &mut stats.stored_ack_us,
                                        now_us.saturating_sub(intended_us),
                                    );
                                    stats.stored_acked_frames += 1;
                                }
                            }
                        }
                    }
                    Event::TalkEnded {
                        stream,
                        frame_count,
                    } => {
                        if let Some(frames) = unacked.remove(&stream) {
                            for (seq, intended_us) in frames {
                                if seq < frame_count {
                                    record_latency(
                                        &mut stats.stored_ack_us,
                                        now_us.saturating_sub(intended_us),
                                    );
                                    stats.stored_acked_frames += 1;
                                }
                            }
                            state
                                .open_streams
                                .set(state.open_streams.get().saturating_sub(1));
                        }
                    }
                    Event::Ping { nonce } => state.pong_due.set(Some(nonce)),
                    Event::Error { about, .. } => {
                        stats.error_events += 1;
                        // A refused or ended talk stream gets no `talk_ended`.
                        if let ErrorSubject::TalkStream(stream) = about
                            && unacked.remove(&stream).is_some()
                        {
                            state
                                .open_streams
                                .set(state.open_streams.get().saturating_sub(1));
                        }
                    }
                    Event::GoAway { .. } => stats.error_events += 1,
                    _ => {}
                }
            }
        }
        if read_into(&mut reader, &mut input).await.is_err() {
            if !ctx.draining_done.get() && state.open_streams.get() > 0 {
                ctx.stats.borrow_mut().connection_errors += 1;
            }
            state.reader_done.set(true);
            return;
        }
    }
}

/// The raw fd of a connection, to shut it down at the drain deadline.
pub fn raw_fd(wire: &Wire) -> std::os::fd::RawFd {
    wire.stream.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacked_streams_are_bounded_oldest_first() {
        let mut unacked = HashMap::new();
        for stream in 1..=UNACKED_STREAMS_MAX as u32 {
            assert!(!start_unacked(&mut unacked, stream));
        }
        assert!(start_unacked(&mut unacked, 100));
        assert_eq!(unacked.len(), UNACKED_STREAMS_MAX);
        assert!(!unacked.contains_key(&1));
        assert!(unacked.contains_key(&100));
    }
}
