//! Talking: seeded frame payloads and a talker that checks the relay's answers.

use std::time::Instant;

use bytes::Bytes;
use hark_core::protocol::{ErrorCode, ErrorSubject, Event};
use hark_core::{ConvName, MsgId};
use hark_tools::client::Client;

use super::WAIT;

/// A 19-byte OpusHead (mono, pre-skip 312, 48 kHz), the codec bytes of test messages.
pub const OPUS_HEAD: &[u8] = &[
    b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 0x01, 0x01, 0x38, 0x01, 0x80, 0xbb, 0x00, 0x00,
    0x00, 0x00, 0x00,
];

/// Shortest and longest generated payload, in bytes: the range of an Opus voice packet.
pub const PAYLOAD_LEN_MIN: usize = 20;
/// See [`PAYLOAD_LEN_MIN`].
pub const PAYLOAD_LEN_MAX: usize = 200;

/// SplitMix64: a tiny seeded generator, enough for distinct, reproducible payloads.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `low..=high`.
    pub fn in_range(&mut self, low: usize, high: usize) -> usize {
        let span = (high - low + 1) as u64;
        low + (self.next_u64() % span) as usize
    }
}

/// Frame `seq` of talker `seed`'s message: 20–200 bytes, different for every (seed, seq), the
/// first 8 bytes naming both so a misrouted frame is easy to spot in a failure.
pub fn payload(seed: u64, seq: u32) -> Bytes {
    let mut random = SplitMix64::new(seed.rotate_left(32) ^ u64::from(seq));
    let len = random.in_range(PAYLOAD_LEN_MIN, PAYLOAD_LEN_MAX);
    sized_payload(seed, seq, len)
}

/// Frame `seq` of talker `seed`'s message with exactly `len` bytes (at least 8).
pub fn sized_payload(seed: u64, seq: u32, len: usize) -> Bytes {
    let mut random = SplitMix64::new(seed ^ (u64::from(seq) << 40) ^ 0x5eed);
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&(seed as u32).to_le_bytes());
    bytes.extend_from_slice(&seq.to_le_bytes());
    while bytes.len() < len {
        bytes.extend_from_slice(&random.next_u64().to_le_bytes());
    }
    bytes.truncate(len);
    Bytes::from(bytes)
}

/// `count` payloads of talker `seed`.
pub fn payloads(seed: u64, count: u32) -> Vec<Bytes> {
    (0..count).map(|seq| payload(seed, seq)).collect()
}

/// What a talker learnt about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TalkProgress {
    /// From `talk_started`.
    pub msg_id: Option<MsgId>,
    /// From `talk_started`: the first seq the relay has not accepted.
    pub next_seq: Option<u32>,
    /// The highest `stored.frames_stored` seen.
    pub frames_stored: u32,
    /// From `talk_ended`.
    pub ended_with: Option<u32>,
}

impl TalkProgress {
    /// Records one event of talk stream `stream`; anything else is an error naming it.
    /// `frames_stored` must never decrease.
    pub fn record(&mut self, stream: u32, event: Event) -> Result<(), String> {
        match event {
            Event::TalkStarted {
                stream: s,
                msg_id,
                next_seq,
            } if s == stream && self.msg_id.is_none() => {
                self.msg_id = Some(msg_id);
                self.next_seq = Some(next_seq);
            }
            Event::Stored {
                stream: s,
                frames_stored,
            } if s == stream && self.msg_id.is_some() => {
                if frames_stored < self.frames_stored {
                    return Err(format!(
                        "stored went back from {} to {frames_stored}",
                        self.frames_stored
                    ));
                }
                self.frames_stored = frames_stored;
            }
            Event::TalkEnded {
                stream: s,
                frame_count,
            } if s == stream && self.msg_id.is_some() => self.ended_with = Some(frame_count),
            other => return Err(format!("talk stream {stream}: unexpected {other:?}")),
        }
        Ok(())
    }

    /// The message id; panics if `talk_started` has not come.
    pub fn msg_id(&self) -> MsgId {
        self.msg_id.expect("talk_started came")
    }
}

/// Reads `client`'s events into `progress` until `done` holds; panics on anything else, an
/// error or [`WAIT`].
pub fn read_talk_until(
    client: &mut Client,
    stream: u32,
    progress: &mut TalkProgress,
    what: &str,
    done: impl Fn(&TalkProgress) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !done(progress) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            panic!("{what}: not reached within {WAIT:?}: {progress:?}");
        }
        let event = client
            .next_event(remaining)
            .unwrap_or_else(|error| panic!("{what}: {error} ({progress:?})"));
        if let Err(problem) = progress.record(stream, event) {
            panic!("{what}: {problem}");
        }
    }
}

/// Reads `client`'s events into `progress` until the error that cuts talk stream `stream`,
/// and asserts its code; panics on anything `progress` refuses, or after [`WAIT`].
pub fn read_talk_until_error(
    client: &mut Client,
    stream: u32,
    progress: &mut TalkProgress,
    expected: ErrorCode,
) {
    loop {
        match client.next_event(WAIT).expect("an event") {
            Event::Error { code, about, text } => {
                assert_eq!(
                    (code, about),
                    (expected, ErrorSubject::TalkStream(stream)),
                    "{text}"
                );
                return;
            }
            event => progress
                .record(stream, event)
                .unwrap_or_else(|problem| panic!("{problem}")),
        }
    }
}

/// Talks a whole message: start, every payload, end; waits for `talk_ended` (and so for its
/// durability). Returns the message id. Panics on any other event.
pub fn talk_message(
    client: &mut Client,
    stream: u32,
    conversation: &ConvName,
    payloads: &[Bytes],
) -> MsgId {
    client
        .talk_start(stream, conversation, OPUS_HEAD, None)
        .expect("talk_start sent");
    for (seq, payload) in payloads.iter().enumerate() {
        client
            .talk_frame(stream, seq as u32, payload)
            .expect("talk_frame sent");
    }
    let count = payloads.len() as u32;
    client.talk_end(stream, count).expect("talk_end sent");
    let mut progress = TalkProgress::default();
    read_talk_until(client, stream, &mut progress, "talk a message", |p| {
        p.ended_with.is_some()
    });
    assert_eq!(progress.next_seq, Some(0), "a new message starts at seq 0");
    assert_eq!(
        progress.ended_with,
        Some(count),
        "talk_ended counts every frame"
    );
    progress.msg_id()
}

/// Starts a message and waits for `talk_started`; returns the talk's progress (its id in
/// `msg_id`).
pub fn start_message(client: &mut Client, stream: u32, conversation: &ConvName) -> TalkProgress {
    client
        .talk_start(stream, conversation, OPUS_HEAD, None)
        .expect("talk_start sent");
    let mut progress = TalkProgress::default();
    read_talk_until(client, stream, &mut progress, "start a message", |p| {
        p.msg_id.is_some()
    });
    assert_eq!(progress.next_seq, Some(0), "a new message starts at seq 0");
    progress
}

/// Sends frames `from..from + payloads.len()` of an open stream.
pub fn send_frames(client: &mut Client, stream: u32, from: u32, payloads: &[Bytes]) {
    for (offset, payload) in payloads.iter().enumerate() {
        client
            .talk_frame(stream, from + offset as u32, payload)
            .expect("talk_frame sent");
    }
}

/// Reads the next event and asserts it is an `error` with `code` about `about`.
pub fn expect_error(client: &mut Client, code: ErrorCode, about: ErrorSubject) {
    match client.next_event(WAIT) {
        Ok(Event::Error {
            code: got,
            about: got_about,
            text,
        }) => assert_eq!(
            (got, got_about),
            (code, about),
            "error {got} about {got_about:?} ({text})"
        ),
        other => panic!("expected error {code} about {about:?}, got {other:?}"),
    }
}

/// Asserts the connection is open and in step: a ping is answered by its pong, with nothing
/// in between.
pub fn expect_pong(client: &mut Client, nonce: u64) {
    client.ping(nonce).expect("ping sent");
    match client.next_event(WAIT) {
        Ok(Event::Pong { nonce: got }) if got == nonce => {}
        other => panic!("expected pong {nonce}, got {other:?}"),
    }
}

/// Asserts the relay closes `client` within [`WAIT`] with nothing more sent.
pub fn expect_closed(client: &mut Client) {
    if let Err(error) = client.expect_closed(WAIT) {
        panic!("expected the relay to close the connection: {error:?}");
    }
}
