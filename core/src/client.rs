//! A sans-IO client session: the protocol state a hark client keeps, without sockets or clock.
//!
//! What it is: [`ClientSession`] encodes requests into a caller's `BytesMut`, decodes events
//! from the caller's input buffer and keeps what a client must remember to survive a broken
//! connection or a lost owner: the hello's terms, each talk stream (message id, frames sent,
//! frames stored, the message's frames from frame 0 within [`KEPT_FRAMES_MAX`]), each
//! subscription (where to resume listening) and the history requests in flight. After a
//! reconnect, [`ClientSession::connect`] writes the hello again, a `talk_start{resume}` per
//! open talk stream and a `listen` per subscription; when `talk_started` names the relay's
//! `next_seq`, the session resends the kept frames from there. When the relay says a
//! message's owner was lost ([`HANDOVER_CODES`]), the stream waits and
//! [`ClientSession::poll`] sends the resume with backoff until a new owner takes it (its
//! `next_seq` may be 0: every frame is resent) or the handover patience runs out.
//!
//! [`HostPool`] picks which relay to connect to (health, backoff with full jitter, redirects
//! from a relay's `go_away`), as sans-IO as the session.
//!
//! What it is not: a transport. The caller moves the bytes (a blocking socket in the `hark`
//! CLI, an async one elsewhere) and passes `now_us` wherever time matters.
//!
//! ```text
//!  caller ──talk_frame(stream, payload)──► ClientSession ──bytes──► out ──► socket
//!  socket ──► input ──receive(input)──► ClientSession ──► Event (state updated; pings answered)
//!  connection lost ──connect(out)──► hello + talk_start{resume} + listen ──► socket
//!                    talk_started{next_seq} ──► kept frames from next_seq resent into out
//!  error{owner_unavailable..} ──► waiting ──poll(now) when due──► talk_start{resume} ──► …
//! ```

mod backoff;
mod error;
mod handover;
mod pool;
mod subscriptions;
mod talk;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use xxhash_rust::xxh3::xxh3_64;

use crate::ids::{ConvName, HostId};
use crate::protocol::{
    Decoder, ErrorCode, ErrorSubject, Event, ListenFrom, PROTOCOL_VERSION, Request, SessionLimits,
    encode_request, write_talk_frame,
};

pub use backoff::{BACKOFF_MAX_US, BACKOFF_MIN_US, Backoff, JitterRng};
pub use error::ClientSessionError;
pub use handover::{
    HANDOVER_BACKOFF_MAX_US, HANDOVER_BACKOFF_MIN_US, HANDOVER_CODES, HANDOVER_PATIENCE_DEFAULT_US,
};
pub use pool::{Choice, HOST_POOL_ADDRESSES_MAX, HostHealth, HostPool, HostPoolError};
use subscriptions::HeardStream;
pub use subscriptions::SubStatus;
use talk::TalkStream;
pub use talk::{KEPT_BYTES_MAX, KEPT_FRAMES_MAX, TalkPhase, TalkStatus};

/// Talk streams one session keeps at once (the relay announces its own, usually lower, limit).
pub const TALK_STREAMS_MAX: usize = 64;

/// Subscriptions one session keeps at once.
pub const SUBS_MAX: usize = 256;

/// History requests in flight at once.
pub const HISTORY_IN_FLIGHT_MAX: usize = 64;

/// Message streams of subscriptions tracked at once (open messages being heard). The relay
/// bounds these too; a relay that opens more is a protocol error.
pub const MESSAGE_STREAMS_MAX: usize = 4096;

/// Whether the relay has accepted the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloState {
    /// No hello written on this connection yet: call [`ClientSession::connect`].
    NotSent,
    /// Hello written, no answer yet (requests may be pipelined behind it).
    Sent,
    /// The relay accepted; these are the session's terms.
    Accepted(SessionTerms),
    /// The relay refused the hello; it closes the connection.
    Refused {
        /// Why (e.g. `token_invalid`, `token_expired`).
        code: ErrorCode,
        /// The relay's detail text.
        text: String,
    },
}

/// The terms of a session, as `hello_accepted` announced them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTerms {
    /// The protocol version in use.
    pub version: u16,
    /// The host that accepted the connection.
    pub host: HostId,
    /// The session's id, for logs.
    pub session: u64,
    /// The relay's clock at the accept (µs since the Unix epoch).
    pub server_time_us: u64,
    /// Limits the client must respect.
    pub limits: SessionLimits,
}

/// The session: see the module documentation.
#[derive(Debug)]
pub struct ClientSession {
    token: Bytes,
    client_name: String,
    decoder: Decoder,
    hello: HelloState,
    first_server_time_us: Option<u64>,
    talks: BTreeMap<u32, TalkStream>,
    subs: BTreeMap<u32, SubStatus>,
    streams: BTreeMap<u32, HeardStream>,
    history: BTreeSet<u32>,
    connections: u32,
    last_sent_us: u64,
    handover_patience_us: u64,
    jitter: JitterRng,
}

impl ClientSession {
    /// A session that presents `token` (empty in the relay's loopback dev mode) and
    /// `client_name` in every hello.
    pub fn new(token: impl Into<Bytes>, client_name: impl Into<String>) -> Self {
        let token = token.into();
        let client_name = client_name.into();
        let seed = xxh3_64(&token) ^ xxh3_64(client_name.as_bytes()).rotate_left(32);
        Self {
            token,
            client_name,
            decoder: Decoder::new(),
            hello: HelloState::NotSent,
            first_server_time_us: None,
            talks: BTreeMap::new(),
            subs: BTreeMap::new(),
            streams: BTreeMap::new(),
            history: BTreeSet::new(),
            connections: 0,
            last_sent_us: 0,
            handover_patience_us: HANDOVER_PATIENCE_DEFAULT_US,
            jitter: JitterRng::new(seed),
        }
    }

    /// Begins a connection (the first, or a new one after a break): forgets what belonged to
    /// the old connection (its input, message streams, history requests) and writes the
    /// hello, then a resume `talk_start` for each open talk stream (a plain one when the
    /// message had no id yet) and a `listen` for each subscription (see
    /// [`SubStatus::resume_from`]). The caller must start the new connection with a fresh,
    /// empty input buffer.
    pub fn connect(&mut self, now_us: u64, out: &mut BytesMut) -> Result<(), ClientSessionError> {
        let resume_points: Vec<(u32, ListenFrom, ConvName)> = self
            .subs
            .iter()
            .map(|(&sub, status)| {
                let oldest_open = self.oldest_open_message(sub);
                (
                    sub,
                    status.resume_from(oldest_open),
                    status.conversation.clone(),
                )
            })
            .collect();
        self.decoder = Decoder::new();
        self.hello = HelloState::Sent;
        self.streams.clear();
        self.history.clear();
        let resumed = self.connections > 0;
        self.connections += 1;
        encode_request(
            &Request::Hello {
                version: PROTOCOL_VERSION,
                token: self.token.clone(),
                client_name: self.client_name.clone(),
            },
            out,
        )?;
        for (&stream, talk) in &mut self.talks {
            talk.started_here = false;
            if let Some(handover) = &mut talk.handover {
                // This resume is the handover's next one; poll must not send another.
                handover.resume_sent();
            }
            if resumed {
                talk.status.resumes += 1;
            }
            encode_request(
                &Request::TalkStart {
                    stream,
                    conversation: talk.status.conversation.clone(),
                    codec: talk.codec.clone(),
                    resume: talk.status.msg_id,
                },
                out,
            )?;
            if talk.status.msg_id.is_none() {
                // A new message: everything kept is resent from frame 0 right away.
                for (seq, payload) in talk.frames_from(0) {
                    write_talk_frame(out, stream, seq, payload)?;
                }
                if let TalkPhase::Ending(frame_count) = talk.status.phase {
                    encode_request(
                        &Request::TalkEnd {
                            stream,
                            frame_count,
                        },
                        out,
                    )?;
                }
            }
        }
        for status in self.subs.values_mut() {
            status.listening = false;
            status.caught_up = false;
        }
        for (sub, from, conversation) in resume_points {
            encode_request(
                &Request::Listen {
                    sub,
                    conversation,
                    from,
                },
                out,
            )?;
        }
        self.last_sent_us = now_us;
        Ok(())
    }

    /// How many connections [`ClientSession::connect`] began.
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// The hello's state on the current connection.
    pub fn hello_state(&self) -> &HelloState {
        &self.hello
    }

    /// Does what is due at `now_us`: gives up a handover whose patience ran out (the stream
    /// is dropped and named by [`ClientSessionError::HandoverFailed`]; call `poll` again for
    /// the rest), writes the resume `talk_start` of each handover that is due, and writes a
    /// `ping` when nothing was sent for a third of the relay's idle timeout. Returns whether
    /// it wrote anything. Call it by [`ClientSession::next_poll_us`].
    pub fn poll(&mut self, now_us: u64, out: &mut BytesMut) -> Result<bool, ClientSessionError> {
        if let Some((stream, msg_id)) = self.give_up_handover(now_us) {
            return Err(ClientSessionError::HandoverFailed { stream, msg_id });
        }
        let resumed = self.send_due_resumes(now_us, out)?;
        let HelloState::Accepted(terms) = &self.hello else {
            return Ok(resumed);
        };
        let interval_us = u64::from(terms.limits.idle_timeout_ms) * 1000 / 3;
        if now_us.saturating_sub(self.last_sent_us) < interval_us {
            return Ok(resumed);
        }
        encode_request(&Request::Ping { nonce: now_us }, out)?;
        self.last_sent_us = now_us;
        Ok(true)
    }

    /// When [`ClientSession::poll`] next has work (µs): a ping while the session is open, a
    /// handover's resume or give-up. `None` when nothing will be due.
    pub fn next_poll_us(&self) -> Option<u64> {
        let ping_us = match &self.hello {
            HelloState::Accepted(terms) => {
                Some(self.last_sent_us + u64::from(terms.limits.idle_timeout_ms) * 1000 / 3)
            }
            _ => None,
        };
        match (ping_us, self.next_handover_us()) {
            (Some(ping_us), Some(handover_us)) => Some(ping_us.min(handover_us)),
            (ping_us, handover_us) => ping_us.or(handover_us),
        }
    }

    /// Decodes the next event from `input` (`Ok(None)` until a whole one is there), updates
    /// the session with it and returns it. Pings are answered into `out` (and returned too);
    /// a resumed talk stream's kept frames are written into `out` when its `talk_started`
    /// arrives.
    pub fn receive(
        &mut self,
        input: &mut BytesMut,
        now_us: u64,
        out: &mut BytesMut,
    ) -> Result<Option<Event>, ClientSessionError> {
        let Some(event) = self.decoder.decode_event(input)? else {
            return Ok(None);
        };
        self.apply(&event, now_us, out)?;
        Ok(Some(event))
    }

    /// Updates the session with one event (what [`ClientSession::receive`] does after
    /// decoding), for callers that decode themselves.
    pub fn apply(
        &mut self,
        event: &Event,
        now_us: u64,
        out: &mut BytesMut,
    ) -> Result<(), ClientSessionError> {
        match event {
            Event::HelloAccepted {
                version,
                host,
                session,
                server_time_us,
                limits,
            } => {
                self.first_server_time_us.get_or_insert(*server_time_us);
                for sub in self.subs.values_mut() {
                    sub.first_server_time_us.get_or_insert(*server_time_us);
                }
                self.hello = HelloState::Accepted(SessionTerms {
                    version: *version,
                    host: *host,
                    session: *session,
                    server_time_us: *server_time_us,
                    limits: *limits,
                });
            }
            Event::TalkStarted {
                stream,
                msg_id,
                next_seq,
            } => self.talk_started(*stream, *msg_id, *next_seq, now_us, out)?,
            Event::Stored {
                stream,
                frames_stored,
            } => {
                // Raises what stored frames may be dropped when the kept ones reach a bound.
                if let Some(talk) = self.talks.get_mut(stream) {
                    talk.status.frames_stored = talk.status.frames_stored.max(*frames_stored);
                }
            }
            Event::TalkEnded { stream, .. } => {
                self.talks.remove(stream);
            }
            Event::Listening { sub } => {
                if let Some(status) = self.subs.get_mut(sub) {
                    status.listening = true;
                }
            }
            Event::Unlistened { sub } => {
                self.subs.remove(sub);
                self.streams.retain(|_, heard| heard.sub != *sub);
            }
            Event::CaughtUp { sub } => {
                if let Some(status) = self.subs.get_mut(sub) {
                    status.caught_up = true;
                }
            }
            Event::MessageStarted {
                sub,
                stream,
                msg_id,
                ..
            } => {
                if self.streams.len() >= MESSAGE_STREAMS_MAX && !self.streams.contains_key(stream) {
                    return Err(ClientSessionError::TooMany {
                        what: "open message streams",
                        max: MESSAGE_STREAMS_MAX,
                    });
                }
                self.streams.insert(
                    *stream,
                    HeardStream {
                        sub: *sub,
                        msg_id: *msg_id,
                    },
                );
            }
            Event::MessageEnded { stream, .. } => {
                if let Some(heard) = self.streams.remove(stream)
                    && let Some(status) = self.subs.get_mut(&heard.sub)
                {
                    status.last_ended = Some(match status.last_ended {
                        Some(last) if last > heard.msg_id => last,
                        _ => heard.msg_id,
                    });
                }
            }
            Event::HistoryPage { request, .. } => {
                self.history.remove(request);
            }
            Event::Ping { nonce } => {
                encode_request(&Request::Pong { nonce: *nonce }, out)?;
                self.last_sent_us = now_us;
            }
            Event::Error { code, about, text } => self.error(*code, *about, text, now_us),
            Event::Frame { .. } | Event::Pong { .. } | Event::GoAway { .. } => {}
        }
        Ok(())
    }

    fn error(&mut self, code: ErrorCode, about: ErrorSubject, text: &str, now_us: u64) {
        match about {
            ErrorSubject::Connection => {
                if self.hello == HelloState::Sent {
                    self.hello = HelloState::Refused {
                        code,
                        text: text.to_owned(),
                    };
                }
            }
            // Every talk-stream error either refuses the start or ends the message: the
            // handle is idle at the relay from now on (unknown_stream concerns a handle the
            // relay does not know, which is idle too). A lost owner leaves the message open
            // for a resume elsewhere: a stream whose message id is known waits for it.
            ErrorSubject::TalkStream(stream) => {
                if !(HANDOVER_CODES.contains(&code) && self.owner_lost(stream, now_us)) {
                    self.talks.remove(&stream);
                }
            }
            // The relay ended the subscription because its owner is unreachable, drains or
            // moved: it stays, to be listened to again (a reconnect does) from where it left
            // off. Any other error refuses a listen not yet `listening`.
            ErrorSubject::Sub(sub) if HANDOVER_CODES.contains(&code) => {
                if let Some(status) = self.subs.get_mut(&sub) {
                    status.listening = false;
                    status.caught_up = false;
                }
            }
            ErrorSubject::Sub(sub) => {
                if self.subs.get(&sub).is_some_and(|status| !status.listening) {
                    self.subs.remove(&sub);
                }
            }
            ErrorSubject::HistoryRequest(request) => {
                self.history.remove(&request);
            }
        }
    }
}
