//! Map announcements ride on foca's custom broadcasts; this is foca's handler for them.
//!
//! foca owns the handler and offers no way back to it, so the handler hands each new
//! announcement to the node through a bounded channel the node drains after every call into
//! foca (one way: foca → handler → channel → node).

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use foca::{BroadcastHandler, Invalidates};
use thiserror::Error;

use super::card::HostCard;
use super::codec::{ANNOUNCEMENT_LEN, MapAnnouncement};
use super::error::CodecError;
use crate::ids::HostId;

/// Why a gossiped announcement was not taken. foca still handles the rest of the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum GossipError {
    /// The item does not decode.
    #[error("map announcement: {0}")]
    Malformed(#[from] CodecError),
    /// The node has not drained the channel: more new announcements in one datagram than
    /// the channel holds. The item is not recorded, so a later copy is taken.
    #[error("map announcement inbox is full")]
    InboxFull,
}

/// The dissemination key of an announcement: a newer one from the same host replaces the
/// older in foca's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnouncementKey {
    host: HostId,
    generation: u64,
    seq: u64,
}

impl Invalidates for AnnouncementKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.host == other.host && (self.generation, self.seq) >= (other.generation, other.seq)
    }
}

/// Keeps the newest `(generation, seq)` seen per host: an announcement is new (passed to the
/// node and spread further) only if it is newer. One entry per [`HostId`], so at most 65,536.
#[derive(Debug)]
pub struct MapGossip {
    newest: BTreeMap<HostId, (u64, u64)>,
    inbox: SyncSender<MapAnnouncement>,
}

impl MapGossip {
    /// A handler and the node's end of its channel, which holds `inbox_len` announcements.
    pub fn new(inbox_len: usize) -> (Self, Receiver<MapAnnouncement>) {
        let (inbox, receiver) = sync_channel(inbox_len);
        let gossip = Self {
            newest: BTreeMap::new(),
            inbox,
        };
        (gossip, receiver)
    }

    /// Channel length for a datagram limit: every announcement one datagram can carry, plus
    /// the node's own.
    pub fn inbox_len_for(datagram_bytes_max: usize) -> usize {
        datagram_bytes_max / (ANNOUNCEMENT_LEN + 2) + 1
    }
}

impl BroadcastHandler<HostCard> for MapGossip {
    type Key = AnnouncementKey;
    type Error = GossipError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&HostCard>,
    ) -> Result<Option<AnnouncementKey>, GossipError> {
        let item = MapAnnouncement::decode(data)?;
        let version = (item.generation, item.seq);
        if self
            .newest
            .get(&item.host)
            .is_some_and(|newest| *newest >= version)
        {
            return Ok(None);
        }
        match self.inbox.try_send(item) {
            Ok(()) => {}
            // The node owns the receiver for as long as foca (and so this handler) lives.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                return Err(GossipError::InboxFull);
            }
        }
        self.newest.insert(item.host, version);
        Ok(Some(AnnouncementKey {
            host: item.host,
            generation: item.generation,
            seq: item.seq,
        }))
    }
}
