//! One talk stream of a client session: what was sent, what is durable, what a resume resends.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{ClientSession, ClientSessionError, TALK_STREAMS_MAX};
use crate::ids::{ConvName, MsgId};
use crate::protocol::{Request, encode_request, write_talk_frame};

/// Frames of one talk stream kept for a resume (sent, not yet acknowledged as stored). At
/// 50 frames per second this is almost three minutes of speech without a `stored` ack; a
/// talker that reaches it must wait for acks ([`super::ClientSessionError::UnackedFull`]).
pub const UNACKED_FRAMES_MAX: usize = 8192;

/// Payload bytes of one talk stream kept for a resume.
pub const UNACKED_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Where a talk stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TalkPhase {
    /// Frames may be sent.
    Open,
    /// `talk_end` was sent with this frame count; waiting for `talk_ended`.
    Ending(u32),
}

/// What the session knows of one talk stream, for the caller to show or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TalkStatus {
    /// The conversation talked to.
    pub conversation: ConvName,
    /// The message id, once `talk_started` has named it.
    pub msg_id: Option<MsgId>,
    /// Frames handed to the session (the next frame's seq).
    pub frames_sent: u32,
    /// Frames `0 .. frames_stored` are durable at the relay.
    pub frames_stored: u32,
    /// Open or ending.
    pub phase: TalkPhase,
    /// How many times the stream was resumed on a new connection.
    pub resumes: u32,
}

/// A talk stream's state: its status plus the frames a resume would resend.
#[derive(Debug, Clone)]
pub(super) struct TalkStream {
    pub(super) status: TalkStatus,
    pub(super) codec: Bytes,
    /// Frames `first_unacked_seq ..` that were sent and are not known to be stored.
    pub(super) unacked: VecDeque<Bytes>,
    pub(super) unacked_bytes: usize,
    /// `talk_started` arrived on the current connection.
    pub(super) started_here: bool,
}

impl TalkStream {
    pub(super) fn new(conversation: ConvName, codec: Bytes) -> Self {
        Self {
            status: TalkStatus {
                conversation,
                msg_id: None,
                frames_sent: 0,
                frames_stored: 0,
                phase: TalkPhase::Open,
                resumes: 0,
            },
            codec,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            started_here: false,
        }
    }

    /// A resume `talk_start` was sent on this connection and its `talk_started` has not come.
    pub(super) fn resume_pending(&self) -> bool {
        self.status.msg_id.is_some() && !self.started_here
    }

    /// The seq of the oldest kept frame.
    pub(super) fn first_unacked_seq(&self) -> u32 {
        // The deque holds frames `frames_sent - len .. frames_sent`; its length is bounded by
        // UNACKED_FRAMES_MAX, far below u32::MAX.
        self.status.frames_sent - self.unacked.len() as u32
    }

    /// Whether one more frame of `len` bytes may be kept.
    pub(super) fn has_room(&self, len: usize) -> bool {
        self.unacked.len() < UNACKED_FRAMES_MAX && self.unacked_bytes + len <= UNACKED_BYTES_MAX
    }

    pub(super) fn keep(&mut self, payload: Bytes) {
        self.unacked_bytes += payload.len();
        self.unacked.push_back(payload);
        self.status.frames_sent += 1;
    }

    /// Drops kept frames below `seq` (they are durable).
    pub(super) fn release_below(&mut self, seq: u32) {
        // Bounded by the deque's length.
        while self.first_unacked_seq() < seq {
            match self.unacked.pop_front() {
                Some(payload) => self.unacked_bytes -= payload.len(),
                None => break,
            }
        }
    }

    /// Kept frames from `seq` on, with their seqs.
    pub(super) fn frames_from(&self, seq: u32) -> impl Iterator<Item = (u32, &Bytes)> {
        let first = self.first_unacked_seq();
        let skip = seq.saturating_sub(first) as usize;
        self.unacked
            .iter()
            .enumerate()
            .skip(skip)
            .map(move |(at, payload)| (first + at as u32, payload))
    }
}

impl ClientSession {
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

    pub(super) fn talk_started(
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
}
