//! History pages: the headers of a conversation's stored messages since a time.

use super::store::{BodyStore, EndState, MessageState, TimelineFrom};
use super::{ConnId, Shard};
use crate::ids::ConvName;
use crate::protocol::{
    ErrorSubject, Event, FRAME_LEN_MAX, HISTORY_ENTRIES_MAX, HistoryEntry, MessageOutcome, Request,
};
use crate::token::Right;

/// Bytes of a history page around its entries: length, type, request, count, more.
const HISTORY_PAGE_OVERHEAD: usize = 4 + 1 + 4 + 2 + 1;
/// Bytes of one history entry besides its sender: id, sender length, duration, count, outcome.
const HISTORY_ENTRY_OVERHEAD: usize = 16 + 2 + 4 + 4 + 1;

impl<S: BodyStore> Shard<S> {
    pub(super) fn history(
        &mut self,
        conn: ConnId,
        request: u32,
        conversation: ConvName,
        since_us: u64,
        limit: u16,
    ) {
        let about = ErrorSubject::HistoryRequest(request);
        if !self.authorize(conn, &[Right::History], &conversation, about) {
            return;
        }
        let owner = self.owner_of(conversation.id());
        if owner != self.shard {
            let request = Request::History {
                request,
                conversation,
                since_us,
                limit,
            };
            return self.route_to_owner(conn, owner, request, about);
        }
        let limit = usize::from(limit.min(self.config.history_limit_max)).min(HISTORY_ENTRIES_MAX);
        let headers =
            self.store
                .timeline(conversation.id(), TimelineFrom::Since(since_us), limit + 1);
        let mut more = headers.len() > limit;
        let mut size = HISTORY_PAGE_OVERHEAD;
        let mut entries = Vec::with_capacity(headers.len().min(limit));
        for header in headers.into_iter().take(limit) {
            let mut sender = String::from_utf8_lossy(&header.sender).into_owned();
            if sender.len() > crate::protocol::SENDER_LEN_MAX {
                sender.clear();
            }
            let entry_size = HISTORY_ENTRY_OVERHEAD + sender.len();
            if size + entry_size > FRAME_LEN_MAX as usize + 4 {
                more = true;
                break;
            }
            size += entry_size;
            let (outcome, duration_us) = match header.state {
                MessageState::Ended(EndState::Complete) => {
                    (MessageOutcome::Complete, header.duration_us.unwrap_or(0))
                }
                MessageState::Ended(EndState::Truncated) => {
                    (MessageOutcome::Truncated, header.duration_us.unwrap_or(0))
                }
                MessageState::Open => (
                    MessageOutcome::Truncated,
                    self.now_us.saturating_sub(header.msg.start_us()),
                ),
            };
            entries.push(HistoryEntry {
                msg_id: header.msg,
                sender,
                duration_ms: u32::try_from(duration_us / 1000).unwrap_or(u32::MAX),
                frame_count: header.frame_count,
                outcome,
            });
        }
        self.send_event(
            conn,
            &Event::HistoryPage {
                request,
                entries,
                more,
            },
        );
    }
}
