//! What one listener connection heard, checked event by event against the protocol's
//! promises (docs/protocol.md 5.3): each message of a subscription starts once, its frames
//! come in `seq` order with no gap and no duplicate, its end counts exactly the frames
//! delivered, and frames before a subscription's `caught_up` are replay frames (0x48), after
//! it live ones (0x47) until it falls back to replay.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hark_core::protocol::{Event, FrameKind, MessageOutcome};
use hark_core::{ConvName, MsgId};
use hark_tools::client::Client;

/// Events kept in [`Heard::others`] before the transcript refuses more: a relay that floods a
/// connection with unexpected events fails the test instead of filling memory.
pub const OTHER_EVENTS_MAX: usize = 4096;

/// One frame as the listener received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardFrame {
    /// The payload, byte for byte.
    pub payload: Bytes,
    /// Live (0x47) or replay (0x48).
    pub kind: FrameKind,
}

/// One message as a subscription received it.
#[derive(Debug, Clone)]
pub struct HeardMessage {
    /// The subscription it came on.
    pub sub: u32,
    /// The relay's stream handle while it was open.
    pub stream: u32,
    /// The message.
    pub msg_id: MsgId,
    /// Its conversation, as `message_started` named it.
    pub conversation: ConvName,
    /// Its talker, as `message_started` named them.
    pub sender: String,
    /// The talker's codec bytes.
    pub codec: Bytes,
    /// Frames `0..len`, in order.
    pub frames: Vec<HeardFrame>,
    /// `message_ended`'s frame count and outcome, once it came.
    pub end: Option<(u32, MessageOutcome)>,
}

impl HeardMessage {
    /// The payloads in `seq` order.
    pub fn payloads(&self) -> Vec<Bytes> {
        self.frames
            .iter()
            .map(|frame| frame.payload.clone())
            .collect()
    }

    /// How many frames came as `kind`.
    pub fn count_of(&self, kind: FrameKind) -> usize {
        self.frames
            .iter()
            .filter(|frame| frame.kind == kind)
            .count()
    }
}

/// A subscription's state as its events tell it.
#[derive(Debug, Clone, Default)]
pub struct SubState {
    /// `unlistened` came.
    pub closed: bool,
    /// Between a `caught_up` and the next replay frame.
    pub live: bool,
    /// `caught_up` events received.
    pub caught_up_count: u32,
    /// Times a replay frame came while live: the relay moved the subscription back to
    /// replay (a slow listener).
    pub fallbacks: u32,
}

/// The checked transcript of one listener connection.
#[derive(Debug, Default)]
pub struct Heard {
    subs: BTreeMap<u32, SubState>,
    /// Open message stream handle → index in `messages`.
    streams: HashMap<u32, usize>,
    messages: Vec<HeardMessage>,
    /// Every event that is not about a subscription (pongs, errors, history pages …), in
    /// order.
    pub others: Vec<Event>,
}

impl Heard {
    /// An empty transcript.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks `event` against the transcript so far and records it; an error names the broken
    /// promise.
    pub fn record(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Listening { sub } => {
                if self.subs.get(&sub).is_some_and(|state| !state.closed) {
                    return Err(format!("listening for sub {sub}, which is open already"));
                }
                self.subs.insert(sub, SubState::default());
            }
            Event::MessageStarted {
                sub,
                stream,
                msg_id,
                conversation,
                sender,
                codec,
            } => {
                self.open_sub(sub, "message_started")?;
                if self.streams.contains_key(&stream) {
                    return Err(format!("message_started on stream {stream}, which is open"));
                }
                if self.find(sub, msg_id).is_some() {
                    return Err(format!("message {msg_id} started twice on sub {sub}"));
                }
                self.streams.insert(stream, self.messages.len());
                self.messages.push(HeardMessage {
                    sub,
                    stream,
                    msg_id,
                    conversation,
                    sender,
                    codec,
                    frames: Vec::new(),
                    end: None,
                });
            }
            Event::Frame {
                stream,
                seq,
                kind,
                payload,
            } => {
                let &index = self
                    .streams
                    .get(&stream)
                    .ok_or_else(|| format!("frame {seq} on stream {stream}, which is not open"))?;
                let message = &mut self.messages[index];
                let expected = message.frames.len();
                if seq as usize != expected {
                    return Err(format!(
                        "message {} frame {seq} came when {expected} was next (gap, duplicate \
                         or reorder)",
                        message.msg_id
                    ));
                }
                let msg_id = message.msg_id;
                let sub = message.sub;
                let state = self
                    .subs
                    .get_mut(&sub)
                    .expect("a message's sub is recorded when the message starts");
                match (kind, state.live) {
                    (FrameKind::Live, false) => {
                        return Err(format!(
                            "live frame {seq} of {msg_id} on sub {sub} before its caught_up"
                        ));
                    }
                    (FrameKind::Replay, true) => {
                        state.live = false;
                        state.fallbacks += 1;
                    }
                    _ => {}
                }
                self.messages[index]
                    .frames
                    .push(HeardFrame { payload, kind });
            }
            Event::MessageEnded {
                stream,
                frame_count,
                outcome,
            } => {
                let index = self.streams.remove(&stream).ok_or_else(|| {
                    format!("message_ended on stream {stream}, which is not open")
                })?;
                let message = &mut self.messages[index];
                if frame_count as usize != message.frames.len() {
                    return Err(format!(
                        "message {} ended with {frame_count} frames after {} were delivered",
                        message.msg_id,
                        message.frames.len()
                    ));
                }
                message.end = Some((frame_count, outcome));
            }
            Event::CaughtUp { sub } => {
                let state = self.open_sub(sub, "caught_up")?;
                if state.live {
                    return Err(format!("caught_up on sub {sub}, which is live already"));
                }
                state.live = true;
                state.caught_up_count += 1;
            }
            Event::Unlistened { sub } => {
                self.open_sub(sub, "unlistened")?.closed = true;
                let messages = &self.messages;
                self.streams.retain(|_, index| messages[*index].sub != sub);
            }
            other => {
                if self.others.len() >= OTHER_EVENTS_MAX {
                    return Err(format!("more than {OTHER_EVENTS_MAX} other events"));
                }
                self.others.push(other);
            }
        }
        Ok(())
    }

    /// Reads events from `client` into the transcript until `done` holds, for at most
    /// `timeout`. Panics (with `what` and the transcript) on a broken promise, an error from
    /// the client or the timeout.
    pub fn read_until(
        &mut self,
        client: &mut Client,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Heard) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                panic!("{what}: not reached within {timeout:?}; heard so far: {self:#?}");
            }
            match client.next_event(remaining) {
                Ok(event) => {
                    if let Err(problem) = self.record(event) {
                        panic!("{what}: {problem}; heard so far: {self:#?}");
                    }
                }
                Err(error) => panic!("{what}: {error}; heard so far: {self:#?}"),
            }
        }
    }

    /// The state of subscription `sub` (default if it never opened).
    pub fn sub(&self, sub: u32) -> SubState {
        self.subs.get(&sub).cloned().unwrap_or_default()
    }

    /// Whether `sub` is open and live.
    pub fn is_live(&self, sub: u32) -> bool {
        self.subs
            .get(&sub)
            .is_some_and(|state| state.live && !state.closed)
    }

    /// Whether `listening` came for `sub`.
    pub fn is_listening(&self, sub: u32) -> bool {
        self.subs.get(&sub).is_some_and(|state| !state.closed)
    }

    /// The message `msg_id` of subscription `sub`, if it started.
    pub fn find(&self, sub: u32, msg_id: MsgId) -> Option<&HeardMessage> {
        self.messages
            .iter()
            .find(|message| message.sub == sub && message.msg_id == msg_id)
    }

    /// The message `msg_id` of subscription `sub`; panics if it never started.
    pub fn message(&self, sub: u32, msg_id: MsgId) -> &HeardMessage {
        self.find(sub, msg_id)
            .unwrap_or_else(|| panic!("sub {sub} never heard message {msg_id}: {self:#?}"))
    }

    /// Whether message `msg_id` of `sub` has ended.
    pub fn has_ended(&self, sub: u32, msg_id: MsgId) -> bool {
        self.find(sub, msg_id)
            .is_some_and(|message| message.end.is_some())
    }

    /// Frames heard so far of message `msg_id` on `sub` (0 if it has not started).
    pub fn frames_of(&self, sub: u32, msg_id: MsgId) -> usize {
        self.find(sub, msg_id)
            .map_or(0, |message| message.frames.len())
    }

    /// Every message heard, in the order they started.
    pub fn messages(&self) -> &[HeardMessage] {
        &self.messages
    }

    /// The messages of `sub`, in the order they started.
    pub fn messages_of(&self, sub: u32) -> Vec<&HeardMessage> {
        self.messages
            .iter()
            .filter(|message| message.sub == sub)
            .collect()
    }

    fn open_sub(&mut self, sub: u32, what: &str) -> Result<&mut SubState, String> {
        match self.subs.get_mut(&sub) {
            Some(state) if !state.closed => Ok(state),
            _ => Err(format!("{what} for sub {sub}, which is not open")),
        }
    }
}
