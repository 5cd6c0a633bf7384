//! Subscriptions of a client session: what each listens to, where it resumes after a
//! reconnect, the message streams it hears, and history requests.

use bytes::BytesMut;

use super::{ClientSession, ClientSessionError, HISTORY_IN_FLIGHT_MAX, SUBS_MAX};
use crate::ids::{ConvName, MsgId};
use crate::protocol::{ListenFrom, Request, encode_request};

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

/// Open message stream of a subscription.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeardStream {
    pub(super) sub: u32,
    pub(super) msg_id: MsgId,
}

impl ClientSession {
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
}
