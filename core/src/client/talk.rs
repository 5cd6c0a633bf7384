//! One talk stream of a client session: what was sent, what is durable, what a resume resends.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::handover::Handover;
use super::{ClientSession, ClientSessionError, TALK_STREAMS_MAX};
use crate::ids::{ConvName, MsgId};
use crate::protocol::{Request, encode_request, write_talk_frame};

/// Frames of one talk stream kept for a resume. A stream keeps every frame of its message
/// from frame 0 while under this bound and [`KEPT_BYTES_MAX`], because a new owner that adopts
/// the message after a handover may ask for all of them again (`next_seq` 0). At 50 frames per
/// second 8192 frames are about 2.7 minutes of speech; beyond that the frames already
/// acknowledged as stored are dropped from the front to make room, and a resume asking below
/// the oldest kept frame fails with [`super::ClientSessionError::ResumeGap`]. A talker whose
/// kept frames are all unacknowledged must wait for acks ([`super::ClientSessionError::KeptFull`]).
pub const KEPT_FRAMES_MAX: usize = 8192;

/// Payload bytes of one talk stream kept for a resume (see [`KEPT_FRAMES_MAX`]).
pub const KEPT_BYTES_MAX: usize = 16 * 1024 * 1024;

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
    /// Frames `0 .. frames_stored` are durable at the message's current owner (a resume's
    /// `talk_started` sets it to the owner's `next_seq`, which a new owner may put lower).
    pub frames_stored: u32,
    /// Open or ending.
    pub phase: TalkPhase,
    /// How many times the stream was resumed on a new connection.
    pub resumes: u32,
    /// How many times the message's owner was lost (`owner_unavailable`, `map_changed`,
    /// `shutting_down`) and a handover to a new owner began; retries within one handover
    /// are not counted.
    pub handovers: u32,
    /// While the stream waits for a new owner: when (the caller's clock, µs) the handover
    /// began. `None` when no handover is under way. A stream given up is gone altogether
    /// ([`ClientSession::talk`] answers `None`).
    pub handover_since_us: Option<u64>,
}

/// A talk stream's state: its status plus the frames a resume would resend.
#[derive(Debug, Clone)]
pub(super) struct TalkStream {
    pub(super) status: TalkStatus,
    pub(super) codec: Bytes,
    /// Frames `first_kept_seq ..` of the message (from frame 0 until a bound drops stored ones).
    pub(super) kept: VecDeque<Bytes>,
    pub(super) kept_bytes: usize,
    /// `talk_started` arrived on the current connection (and no handover began since).
    pub(super) started_here: bool,
    /// The handover under way, if the owner was lost.
    pub(super) handover: Option<Handover>,
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
                handovers: 0,
                handover_since_us: None,
            },
            codec,
            kept: VecDeque::new(),
            kept_bytes: 0,
            started_here: false,
            handover: None,
        }
    }

    /// A resume `talk_start` was sent (or is scheduled, during a handover) and its
    /// `talk_started` has not come: frames are only kept, the relay's `next_seq` decides
    /// where the resent run begins.
    pub(super) fn resume_pending(&self) -> bool {
        self.status.msg_id.is_some() && !self.started_here
    }

    /// The seq of the oldest kept frame.
    pub(super) fn first_kept_seq(&self) -> u32 {
        // The deque holds frames `frames_sent - len .. frames_sent`; its length is bounded by
        // KEPT_FRAMES_MAX, far below u32::MAX.
        self.status.frames_sent - self.kept.len() as u32
    }

    /// How many kept frames at the front may be dropped to make room: those the current
    /// owner acknowledged as stored. None while a resume is pending: the owner answering it
    /// may be a new one that asks for frames the old one had stored.
    fn droppable_frames(&self) -> usize {
        if self.resume_pending() {
            return 0;
        }
        (self
            .status
            .frames_stored
            .saturating_sub(self.first_kept_seq()) as usize)
            .min(self.kept.len())
    }

    /// Whether one more frame of `len` bytes may be kept, dropping stored frames if needed.
    pub(super) fn has_room(&self, len: usize) -> bool {
        let fits = |frames: usize, bytes: usize| {
            frames < KEPT_FRAMES_MAX && bytes.saturating_add(len) <= KEPT_BYTES_MAX
        };
        let (mut frames, mut bytes) = (self.kept.len(), self.kept_bytes);
        // Bounded by the droppable frames, at most the deque's length.
        for payload in self.kept.iter().take(self.droppable_frames()) {
            if fits(frames, bytes) {
                break;
            }
            frames -= 1;
            bytes -= payload.len();
        }
        fits(frames, bytes)
    }

    /// Keeps the next frame, dropping stored frames from the front while the bounds need it
    /// (the caller checked [`TalkStream::has_room`]).
    pub(super) fn keep(&mut self, payload: Bytes) {
        // Bounded by the deque's length: each pass drops one frame or stops.
        while (self.kept.len() >= KEPT_FRAMES_MAX
            || self.kept_bytes.saturating_add(payload.len()) > KEPT_BYTES_MAX)
            && self.droppable_frames() > 0
        {
            match self.kept.pop_front() {
                Some(dropped) => self.kept_bytes -= dropped.len(),
                None => break,
            }
        }
        self.kept_bytes += payload.len();
        self.kept.push_back(payload);
        self.status.frames_sent += 1;
    }

    /// Kept frames from `seq` on, with their seqs.
    pub(super) fn frames_from(&self, seq: u32) -> impl Iterator<Item = (u32, &Bytes)> {
        let first = self.first_kept_seq();
        let skip = seq.saturating_sub(first) as usize;
        self.kept
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

    /// Sends the next frame of talk stream `stream` and keeps it for a resume (see
    /// [`KEPT_FRAMES_MAX`]); returns its seq. While a resume or a handover is pending the frame
    /// is only kept: it goes out with the resent run once `talk_started` names `next_seq`.
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
            return Err(ClientSessionError::KeptFull(stream));
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
        talk.handover = None;
        talk.status.handover_since_us = None;
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
        let kept_from = talk.first_kept_seq();
        if next_seq < kept_from {
            // The message cannot be completed: forget it so the caller may talk again.
            self.talks.remove(&stream);
            return Err(ClientSessionError::ResumeGap {
                msg_id,
                next_seq,
                kept_from,
            });
        }
        // The owner's count, lower than before when a new owner adopted the message: frames
        // from here are resent, and only its own `stored` acks make them droppable again.
        talk.status.frames_stored = next_seq;
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
