//! A sans-IO client session: the protocol state a hark client keeps, without sockets or clock.
//!
//! What it is: [`ClientSession`] encodes requests into a caller's `BytesMut`, decodes events
//! from the caller's input buffer and keeps what a client must remember to survive a broken
//! connection: the hello's terms, each talk stream (message id, frames sent, frames stored,
//! the frames not yet acknowledged), each subscription (where to resume listening) and the
//! history requests in flight. After a reconnect, [`ClientSession::connect`] writes the hello
//! again, a `talk_start{resume}` per open talk stream and a `listen` per subscription; when
//! `talk_started` names the relay's `next_seq`, the session resends the kept frames from there.
//!
//! What it is not: a transport. The caller moves the bytes (a blocking socket in the `hark`
//! CLI, an async one elsewhere) and passes `now_us` wherever time matters.
//!
//! ```text
//!  caller ──talk_frame(stream, payload)──► ClientSession ──bytes──► out ──► socket
//!  socket ──► input ──receive(input)──► ClientSession ──► Event (state updated; pings answered)
//!  connection lost ──connect(out)──► hello + talk_start{resume} + listen ──► socket
//!                    talk_started{next_seq} ──► kept frames from next_seq resent into out
//! ```

mod talk;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::ids::{ConvName, HostId, MsgId};
use crate::protocol::{
    DecodeError, Decoder, EncodeError, ErrorCode, ErrorSubject, Event, ListenFrom,
    PROTOCOL_VERSION, Request, SessionLimits, encode_request, write_talk_frame,
};

use talk::TalkStream;
pub use talk::{TalkPhase, TalkStatus, UNACKED_BYTES_MAX, UNACKED_FRAMES_MAX};

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

/// What the session knows of one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubStatus {
    /// The conversation.
    pub conversation: ConvName,
    /// Where the subscription started.
    pub from: ListenFrom,
    /// `listening` arrived on the current connection.
    pub listening: bool,
    /// `caught_up` arrived and no fall-back to replay happened since.
    pub caught_up: bool,
    /// The newest message that ended for this subscription.
    pub last_ended: Option<MsgId>,
    /// The server time of the first accepted hello, the lower bound a resume of a `live`
    /// subscription that heard nothing listens from.
    pub first_server_time_us: Option<u64>,
}

impl SubStatus {
    /// Where a new connection resumes this subscription: from its oldest unfinished message,
    /// else after the last one that ended, else from where it started (a `live` subscription
    /// resumes from the session's first accept time so a message spoken during the outage is
    /// not missed).
    pub fn resume_from(&self, oldest_open: Option<MsgId>) -> ListenFrom {
        if let Some(open) = oldest_open {
            return ListenFrom::Message(open);
        }
        if let Some(ended) = self.last_ended {
            return ListenFrom::Since(ended.start_us().saturating_add(1));
        }
        match (self.from, self.first_server_time_us) {
            (ListenFrom::Live, Some(time_us)) => ListenFrom::Since(time_us),
            (from, _) => from,
        }
    }
}

/// Why a session call failed. Each says what the caller can do.
#[derive(Debug, Error)]
pub enum ClientSessionError {
    /// The stream handle is open already: pick another or wait for its `talk_ended`.
    #[error("talk stream {0} is open already")]
    TalkStreamOpen(u32),
    /// No open talk stream has this handle: start one first.
    #[error("talk stream {0} is not open")]
    TalkStreamUnknown(u32),
    /// The stream was ended already; no frame may follow.
    #[error("talk stream {0} is ending; no frame may follow")]
    TalkStreamEnding(u32),
    /// The subscription id is open already.
    #[error("subscription {0} is open already")]
    SubOpen(u32),
    /// No such subscription.
    #[error("subscription {0} is not open")]
    SubUnknown(u32),
    /// The history request id is in flight already.
    #[error("history request {0} is in flight already")]
    HistoryInFlight(u32),
    /// A session bound was reached ([`TALK_STREAMS_MAX`], [`SUBS_MAX`],
    /// [`HISTORY_IN_FLIGHT_MAX`], [`MESSAGE_STREAMS_MAX`]): finish something first.
    #[error("too many {what} (at most {max})")]
    TooMany {
        /// What is bounded.
        what: &'static str,
        /// The bound.
        max: usize,
    },
    /// The frames kept for a resume are at [`UNACKED_FRAMES_MAX`] / [`UNACKED_BYTES_MAX`]:
    /// read events until `stored` acks free room, then send again.
    #[error("talk stream {0} has too many frames not yet stored; wait for stored acks")]
    UnackedFull(u32),
    /// A resumed message's relay no longer has frames this client dropped as stored (the
    /// relay lost acknowledged data): the message cannot be completed.
    #[error(
        "resume of {msg_id} asks from frame {next_seq}, but frames from {kept_from} only are kept"
    )]
    ResumeGap {
        /// The message.
        msg_id: MsgId,
        /// What the relay asked for.
        next_seq: u32,
        /// The oldest frame still kept.
        kept_from: u32,
    },
    /// The relay sent something the protocol does not allow here: reconnect or give up.
    #[error("protocol violation by the relay: {0}")]
    Protocol(String),
    /// A request could not be encoded (a field over its limit): fix the argument.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The relay's bytes do not decode: the connection is unusable.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Open message stream of a subscription.
#[derive(Debug, Clone, Copy)]
struct HeardStream {
    sub: u32,
    msg_id: MsgId,
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
}

impl ClientSession {
    /// A session that presents `token` (empty in the relay's loopback dev mode) and
    /// `client_name` in every hello.
    pub fn new(token: impl Into<Bytes>, client_name: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            client_name: client_name.into(),
            decoder: Decoder::new(),
            hello: HelloState::NotSent,
            first_server_time_us: None,
            talks: BTreeMap::new(),
            subs: BTreeMap::new(),
            streams: BTreeMap::new(),
            history: BTreeSet::new(),
            connections: 0,
            last_sent_us: 0,
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

    /// Starts a message on talk stream `stream`; frames may follow at once.
    pub fn talk_start(
        &mut self,
        stream: u32,
        conversation: ConvName,
        codec: Bytes,
        now_us: u64,
        out: &mut BytesMut,
    ) -> Result<(), ClientSessionError> {
        if self.talks.contains_key(&stream) {
            return Err(ClientSessionError::TalkStreamOpen(stream));
        }
        if self.talks.len() >= TALK_STREAMS_MAX {
            return Err(ClientSessionError::TooMany {
                what: "talk streams",
                max: TALK_STREAMS_MAX,
            });
        }
        encode_request(
            &Request::TalkStart {
                stream,
                conversation: conversation.clone(),
                codec: codec.clone(),
                resume: None,
            },
            out,
        )?;
        self.talks
            .insert(stream, TalkStream::new(conversation, codec));
        self.last_sent_us = now_us;
        Ok(())
    }

    /// Whether talk stream `stream` has room to keep a frame of `len` bytes for a resume.
    pub fn can_send_frame(&self, stream: u32, len: usize) -> bool {
        self.talks
            .get(&stream)
            .is_some_and(|talk| talk.has_room(len))
    }

    /// Sends the next frame of talk stream `stream` and keeps it until it is stored; returns
    /// its seq.
    pub fn talk_frame(
        &mut self,
        stream: u32,
        payload: Bytes,
        now_us: u64,
        out: &mut BytesMut,
    ) -> Result<u32, ClientSessionError> {
        let talk = self
            .talks
            .get_mut(&stream)
            .ok_or(ClientSessionError::TalkStreamUnknown(stream))?;
        if talk.status.phase != TalkPhase::Open {
            return Err(ClientSessionError::TalkStreamEnding(stream));
        }
        if !talk.has_room(payload.len()) {
            return Err(ClientSessionError::UnackedFull(stream));
        }
        let seq = talk.status.frames_sent;
        // While a resume waits for its talk_started, frames are only kept: the relay's
        // next_seq decides where the resent run begins, and this frame is part of it.
        if !talk.resume_pending() {
            write_talk_frame(out, stream, seq, &payload)?;
        }
        talk.keep(payload);
        self.last_sent_us = now_us;
        Ok(seq)
    }

    /// Ends talk stream `stream` with every frame sent; returns the frame count.
    pub fn talk_end(
        &mut self,
        stream: u32,
        now_us: u64,
        out: &mut BytesMut,
    ) -> Result<u32, ClientSessionError> {
        let talk = self
            .talks
            .get_mut(&stream)
            .ok_or(ClientSessionError::TalkStreamUnknown(stream))?;
        if talk.status.phase != TalkPhase::Open {
            return Err(ClientSessionError::TalkStreamEnding(stream));
        }
        let frame_count = talk.status.frames_sent;
        // A pending resume sends the end after the resent frames (see talk_started).
        if !talk.resume_pending() {
            encode_request(
                &Request::TalkEnd {
                    stream,
                    frame_count,
                },
                out,
            )?;
        }
        talk.status.phase = TalkPhase::Ending(frame_count);
        self.last_sent_us = now_us;
        Ok(frame_count)
    }

    /// What the session knows of talk stream `stream` (until its `talk_ended` or error).
    pub fn talk(&self, stream: u32) -> Option<&TalkStatus> {
        self.talks.get(&stream).map(|talk| &talk.status)
    }

    /// Opens subscription `sub`.
    pub fn listen(
        &mut self,
        sub: u32,
        conversation: ConvName,
        from: ListenFrom,
        now_us: u64,
        out: &mut BytesMut,
    ) -> Result<(), ClientSessionError> {
        if self.subs.contains_key(&sub) {
            return Err(ClientSessionError::SubOpen(sub));
        }
        if self.subs.len() >= SUBS_MAX {
            return Err(ClientSessionError::TooMany {
                what: "subscriptions",
                max: SUBS_MAX,
            });
        }
        encode_request(
            &Request::Listen {
                sub,
                conversation: conversation.clone(),
                from,
            },
            out,
        )?;
        self.subs.insert(
            sub,
            SubStatus {
                conversation,
                from,
                listening: false,
                caught_up: false,
                last_ended: None,
                first_server_time_us: self.first_server_time_us,
            },
        );
        self.last_sent_us = now_us;
        Ok(())
    }

    /// Closes subscription `sub`; the session forgets it at once (events for it that are
    /// still in flight are returned as they come).
    pub fn unlisten(
        &mut self,
        sub: u32,
        now_us: u64,
        out: &mut BytesMut,
    ) -> Result<(), ClientSessionError> {
        if self.subs.remove(&sub).is_none() {
            return Err(ClientSessionError::SubUnknown(sub));
        }
        encode_request(&Request::Unlisten { sub }, out)?;
        self.streams.retain(|_, heard| heard.sub != sub);
        self.last_sent_us = now_us;
        Ok(())
    }

    /// What the session knows of subscription `sub`.
    pub fn subscription(&self, sub: u32) -> Option<&SubStatus> {
        self.subs.get(&sub)
    }

    /// Asks for a history page; the answer is an [`Event::HistoryPage`] with `request`.
    pub fn history(
        &mut self,
        request: u32,
        conversation: ConvName,
        since_us: u64,
        limit: u16,
        now_us: u64,
        out: &mut BytesMut,
    ) -> Result<(), ClientSessionError> {
        if self.history.contains(&request) {
            return Err(ClientSessionError::HistoryInFlight(request));
        }
        if self.history.len() >= HISTORY_IN_FLIGHT_MAX {
            return Err(ClientSessionError::TooMany {
                what: "history requests",
                max: HISTORY_IN_FLIGHT_MAX,
            });
        }
        encode_request(
            &Request::History {
                request,
                conversation,
                since_us,
                limit,
            },
            out,
        )?;
        self.history.insert(request);
        self.last_sent_us = now_us;
        Ok(())
    }

    /// Keeps an idle connection open: writes a `ping` when nothing was sent for a third of the
    /// relay's idle timeout. Returns whether it did.
    pub fn poll(&mut self, now_us: u64, out: &mut BytesMut) -> Result<bool, ClientSessionError> {
        let HelloState::Accepted(terms) = &self.hello else {
            return Ok(false);
        };
        let interval_us = u64::from(terms.limits.idle_timeout_ms) * 1000 / 3;
        if now_us.saturating_sub(self.last_sent_us) < interval_us {
            return Ok(false);
        }
        encode_request(&Request::Ping { nonce: now_us }, out)?;
        self.last_sent_us = now_us;
        Ok(true)
    }

    /// When [`ClientSession::poll`] will next want to ping (µs), if the session is open.
    pub fn next_poll_us(&self) -> Option<u64> {
        match &self.hello {
            HelloState::Accepted(terms) => {
                Some(self.last_sent_us + u64::from(terms.limits.idle_timeout_ms) * 1000 / 3)
            }
            _ => None,
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
                if let Some(talk) = self.talks.get_mut(stream) {
                    talk.status.frames_stored = talk.status.frames_stored.max(*frames_stored);
                    talk.release_below(talk.status.frames_stored);
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
            Event::Error { code, about, text } => self.error(*code, *about, text),
            Event::Frame { .. } | Event::Pong { .. } | Event::GoAway { .. } => {}
        }
        Ok(())
    }

    /// The oldest message of subscription `sub` that started and has not ended on this
    /// connection (where a resume of the subscription listens from).
    pub fn oldest_open_message(&self, sub: u32) -> Option<MsgId> {
        self.streams
            .values()
            .filter(|heard| heard.sub == sub)
            .map(|heard| heard.msg_id)
            .min()
    }

    /// The message a message stream of this connection carries.
    pub fn message_of_stream(&self, stream: u32) -> Option<(u32, MsgId)> {
        self.streams
            .get(&stream)
            .map(|heard| (heard.sub, heard.msg_id))
    }

    fn talk_started(
        &mut self,
        stream: u32,
        msg_id: MsgId,
        next_seq: u32,
        now_us: u64,
        out: &mut BytesMut,
    ) -> Result<(), ClientSessionError> {
        let Some(talk) = self.talks.get_mut(&stream) else {
            return Err(ClientSessionError::Protocol(format!(
                "talk_started for stream {stream}, which is not open"
            )));
        };
        let resumed = talk.status.msg_id == Some(msg_id);
        talk.status.msg_id = Some(msg_id);
        talk.started_here = true;
        if !resumed {
            // A new message: its frames were sent behind the talk_start already.
            return Ok(());
        }
        if next_seq > talk.status.frames_sent {
            return Err(ClientSessionError::Protocol(format!(
                "resume of {msg_id} says frame {next_seq} is next, but only {} were sent",
                talk.status.frames_sent
            )));
        }
        if next_seq < talk.first_unacked_seq() {
            return Err(ClientSessionError::ResumeGap {
                msg_id,
                next_seq,
                kept_from: talk.first_unacked_seq(),
            });
        }
        talk.status.frames_stored = talk.status.frames_stored.max(next_seq);
        talk.release_below(next_seq);
        for (seq, payload) in talk.frames_from(next_seq) {
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
        self.last_sent_us = now_us;
        Ok(())
    }

    fn error(&mut self, code: ErrorCode, about: ErrorSubject, text: &str) {
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
            // relay does not know, which is idle too).
            ErrorSubject::TalkStream(stream) => {
                self.talks.remove(&stream);
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
