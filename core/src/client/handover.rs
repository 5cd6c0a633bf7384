//! Handover: a talk stream whose owner was lost resumes its message on a new owner.
//!
//! When the host that owns a message dies or drains, the relay tells the talker with a
//! talk-stream error whose code is one of [`HANDOVER_CODES`]. The message is then open for a
//! resume elsewhere, but the cluster's map may take a few seconds to move, so the first
//! resumes may be refused the same way. The session keeps the stream (and every kept frame),
//! and sends a `talk_start{resume}` after a backoff with full jitter, again after each
//! refusal, until a `talk_started` names the new owner's `next_seq` or the handover patience
//! runs out.
//!
//! ```text
//!  error{owner_unavailable | map_changed | shutting_down}   (msg_id known)
//!     └─► waiting ──due (50 ms .. 1 s, doubling)──► poll writes talk_start{resume} ──► in flight
//!            ▲                                                                          │
//!            └────────────── the same codes again ◄──────────────────────────────────────┤
//!                                     talk_started{next_seq} ──► frames from next_seq ◄──┘
//!  patience passed while waiting ──► poll: Err(HandoverFailed), stream dropped
//!  connection broken ──► connect sends the resume (the one in flight is the new one)
//! ```
//!
//! A resume in flight is always answered before the session gives up, so a late
//! `talk_started` never names a stream the session forgot.

use bytes::BytesMut;

use super::{Backoff, ClientSession, ClientSessionError, HelloState, JitterRng};
use crate::ids::MsgId;
use crate::protocol::{ErrorCode, Request, encode_request};

/// The talk-stream error codes after which the message is open for a resume on a new owner:
/// the owner host is unreachable (`owner_unavailable`), the request was routed under a map
/// that moved (`map_changed`), or the owner drains (`shutting_down`).
pub const HANDOVER_CODES: [ErrorCode; 3] = [
    ErrorCode::OWNER_UNAVAILABLE,
    ErrorCode::MAP_CHANGED,
    ErrorCode::SHUTTING_DOWN,
];

/// How long a talk stream waits for a new owner by default (10 s): detecting a dead host
/// takes up to about 3 s, moving the map a little more; a talker waits no longer than a
/// person would hold a push-to-talk button on a silent line.
pub const HANDOVER_PATIENCE_DEFAULT_US: u64 = 10_000_000;

/// Shortest delay before a resume after the owner was lost (50 ms): the relay's other
/// hosts need a moment to learn of the loss.
pub const HANDOVER_BACKOFF_MIN_US: u64 = 50_000;

/// Longest delay between resumes of one handover (1 s): a map that moved is found within
/// a second of moving.
pub const HANDOVER_BACKOFF_MAX_US: u64 = 1_000_000;

/// A handover under way for one talk stream.
#[derive(Debug, Clone)]
pub(super) struct Handover {
    backoff: Backoff,
    /// When the next resume `talk_start` is due; `None` while one is in flight.
    resume_due_us: Option<u64>,
    /// After this the session gives up (once no resume is in flight).
    give_up_us: u64,
}

impl Handover {
    /// A handover that begins at `now_us`, its first resume due after one backoff delay.
    pub(super) fn begin(now_us: u64, patience_us: u64, rng: &mut JitterRng) -> Self {
        let mut handover = Self {
            backoff: Backoff::new(HANDOVER_BACKOFF_MIN_US, HANDOVER_BACKOFF_MAX_US),
            resume_due_us: None,
            give_up_us: now_us.saturating_add(patience_us),
        };
        handover.refused(now_us, rng);
        handover
    }

    /// The resume was refused with a handover code again: the next one after a longer delay.
    pub(super) fn refused(&mut self, now_us: u64, rng: &mut JitterRng) {
        let delay_us = self.backoff.fail(rng);
        self.resume_due_us = Some(now_us.saturating_add(delay_us));
    }

    /// A resume was written (by `poll` or by a new connection's `connect`).
    pub(super) fn resume_sent(&mut self) {
        self.resume_due_us = None;
    }

    /// When `poll` next has something to do for this handover (resume or give up).
    pub(super) fn due_us(&self) -> Option<u64> {
        self.resume_due_us.map(|due| due.min(self.give_up_us))
    }

    /// Whether the handover is over at `now_us`: patience ran out and no resume is in flight.
    fn given_up(&self, now_us: u64) -> bool {
        self.resume_due_us.is_some() && now_us >= self.give_up_us
    }

    /// Whether a resume is due at `now_us`.
    fn resume_due(&self, now_us: u64) -> bool {
        self.resume_due_us.is_some_and(|due| now_us >= due)
    }
}

impl ClientSession {
    /// Sets how long a talk stream waits for a new owner after its owner was lost before
    /// [`ClientSession::poll`] gives it up ([`ClientSessionError::HandoverFailed`]); the
    /// default is [`HANDOVER_PATIENCE_DEFAULT_US`]. Applies to handovers that begin later.
    pub fn set_handover_patience_us(&mut self, patience_us: u64) {
        self.handover_patience_us = patience_us;
    }

    /// How long a talk stream waits for a new owner (see
    /// [`ClientSession::set_handover_patience_us`]).
    pub fn handover_patience_us(&self) -> u64 {
        self.handover_patience_us
    }

    /// Seeds the jitter of handover resumes. Sessions that lost the same owner at the same
    /// moment should differ in seed so their resumes spread out; the default seed comes
    /// from the token and client name, which a dev-mode fleet may share.
    pub fn set_jitter_seed(&mut self, seed: u64) {
        self.jitter = JitterRng::new(seed);
    }

    /// A talk-stream error with one of [`HANDOVER_CODES`]: begin (or continue) the handover
    /// of a stream whose message id is known. Returns whether the stream was kept.
    pub(super) fn owner_lost(&mut self, stream: u32, now_us: u64) -> bool {
        let Some(talk) = self.talks.get_mut(&stream) else {
            return false;
        };
        if talk.status.msg_id.is_none() {
            return false;
        }
        talk.started_here = false;
        match &mut talk.handover {
            Some(handover) => handover.refused(now_us, &mut self.jitter),
            None => {
                talk.handover = Some(Handover::begin(
                    now_us,
                    self.handover_patience_us,
                    &mut self.jitter,
                ));
                talk.status.handovers += 1;
                talk.status.handover_since_us = Some(now_us);
            }
        }
        true
    }

    /// Gives up a handover whose patience ran out, if any: drops the stream and names it.
    pub(super) fn give_up_handover(&mut self, now_us: u64) -> Option<(u32, MsgId)> {
        let (stream, msg_id) = self.talks.iter().find_map(|(&stream, talk)| {
            let over = talk
                .handover
                .as_ref()
                .is_some_and(|handover| handover.given_up(now_us));
            match talk.status.msg_id {
                Some(msg_id) if over => Some((stream, msg_id)),
                _ => None,
            }
        })?;
        self.talks.remove(&stream);
        Some((stream, msg_id))
    }

    /// Writes the resume `talk_start` of every handover that is due; returns whether any.
    pub(super) fn send_due_resumes(
        &mut self,
        now_us: u64,
        out: &mut BytesMut,
    ) -> Result<bool, ClientSessionError> {
        if !matches!(self.hello, HelloState::Accepted(_)) {
            // A new connection's `connect` sends every resume.
            return Ok(false);
        }
        let mut wrote = false;
        // Bounded by TALK_STREAMS_MAX.
        for (&stream, talk) in &mut self.talks {
            let Some(handover) = talk.handover.as_mut() else {
                continue;
            };
            if !handover.resume_due(now_us) {
                continue;
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
            handover.resume_sent();
            wrote = true;
        }
        if wrote {
            self.last_sent_us = now_us;
        }
        Ok(wrote)
    }

    /// The earliest time a handover needs [`ClientSession::poll`], if any.
    pub(super) fn next_handover_us(&self) -> Option<u64> {
        let accepted = matches!(self.hello, HelloState::Accepted(_));
        self.talks
            .values()
            .filter_map(|talk| talk.handover.as_ref())
            .filter_map(|handover| {
                if accepted {
                    handover.due_us()
                } else {
                    // Not connected: only giving up is left to poll.
                    handover.resume_due_us.map(|_| handover.give_up_us)
                }
            })
            .min()
    }
}
