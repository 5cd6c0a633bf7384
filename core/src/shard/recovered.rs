//! Messages a crash left open: after a restart the store can keep them open (hark-storage's
//! `keep_cut_messages_open`), and the shard holds each as a message whose talker vanished at
//! the restart, so the talker's client resumes it (`talk_start{resume}`) from the first frame
//! not on disk, exactly as after a broken connection. Unresumed, it ends truncated when the
//! resume grace is over.

use bytes::Bytes;

use super::conversation::{Conversation, LiveMessage, Talker};
use super::{BodyStore, EndState, Shard};
use crate::ids::MsgId;

impl<S: BodyStore> Shard<S> {
    /// Takes over messages the store reopened after a crash (call once, before serving).
    /// A message of a conversation this shard does not own under its map (the host restarted
    /// with another number of shards) cannot be resumed here: it is ended truncated at once.
    /// Returns how many are resumable.
    pub fn recover_open_messages(&mut self, now_us: u64, msgs: &[MsgId]) -> usize {
        self.now_us = now_us;
        let mut resumable = 0;
        for &msg in msgs {
            let Some(info) = self.store.message_info(msg) else {
                continue;
            };
            let owned = self.local_shards.owner(info.conv) == Some(self.shard);
            let slot = owned
                .then(|| self.conversation_slot_of(info.conv))
                .flatten();
            let Some(conv_slot) = slot else {
                // Not ours, or no room: the end becomes durable with the next commit.
                let _ = self.store.end_message(msg, now_us, EndState::Truncated);
                continue;
            };
            let handle = self.allocate_handle();
            let message = LiveMessage::open(
                msg,
                conv_slot,
                handle,
                String::from_utf8_lossy(&info.sender).into_owned(),
                Bytes::from(info.codec),
                Talker::Vanished { since_us: now_us },
                info.frame_count,
            );
            self.insert_live_message(message);
            resumable += 1;
        }
        self.finish_input();
        resumable
    }

    /// The slot of conversation `id`, created if needed (`None` at `conversations_max`).
    pub(super) fn conversation_slot_of(&mut self, id: crate::ids::ConvId) -> Option<u32> {
        if let Some(slot) = self.conv_by_id.get(&id) {
            return Some(*slot);
        }
        if self.conversations.len() >= self.config.conversations_max {
            return None;
        }
        let slot = self.conversations.insert(Conversation::new(id));
        self.conv_by_id.insert(id, slot);
        Some(slot)
    }
}
