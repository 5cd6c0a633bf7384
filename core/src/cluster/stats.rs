//! Counters of a cluster node, for the relay's metrics.

/// Why a datagram (or an output) was dropped. Drops are normal on an open UDP port; a rising
/// count names what to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// Larger than `datagram_bytes_max`.
    TooBig,
    /// Not a hark cluster datagram (short or wrong magic): a stray sender on the port.
    NotHark,
    /// A hark datagram of another layout version: a host of another release.
    VersionUnknown,
    /// A datagram kind this version does not define.
    KindUnknown,
    /// A body that does not decode, or decodes to an invalid card (bad cores, zero weight,
    /// unreachable address, unknown tags, trailing bytes).
    Malformed,
    /// A SWIM message claiming to come from this host's id: another host configured with the
    /// same host id, or a forged packet.
    FromOurselves,
    /// A SWIM message foca refused (an indirect probe about ourselves, trailing garbage).
    Refused,
    /// A map announcement that does not decode (the rest of the datagram was handled).
    AnnouncementMalformed,
    /// A map announcement that found the node's inbox full (the rest was handled).
    AnnouncementInboxFull,
    /// An i-am whose nonce is not this node's: not an answer to our question.
    Unsolicited,
    /// Anything received after `leave`.
    AfterLeave,
    /// An outgoing datagram that found the output queue full (the caller did not drain
    /// `poll_output`); the protocol treats it as lost.
    OutputQueueFull,
}

impl DropReason {
    /// Every reason, in declaration order.
    pub const ALL: [DropReason; 12] = [
        DropReason::TooBig,
        DropReason::NotHark,
        DropReason::VersionUnknown,
        DropReason::KindUnknown,
        DropReason::Malformed,
        DropReason::FromOurselves,
        DropReason::Refused,
        DropReason::AnnouncementMalformed,
        DropReason::AnnouncementInboxFull,
        DropReason::Unsolicited,
        DropReason::AfterLeave,
        DropReason::OutputQueueFull,
    ];

    /// A metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::TooBig => "too_big",
            DropReason::NotHark => "not_hark",
            DropReason::VersionUnknown => "version_unknown",
            DropReason::KindUnknown => "kind_unknown",
            DropReason::Malformed => "malformed",
            DropReason::FromOurselves => "from_ourselves",
            DropReason::Refused => "refused",
            DropReason::AnnouncementMalformed => "announcement_malformed",
            DropReason::AnnouncementInboxFull => "announcement_inbox_full",
            DropReason::Unsolicited => "unsolicited",
            DropReason::AfterLeave => "after_leave",
            DropReason::OutputQueueFull => "output_queue_full",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A snapshot of a node's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Datagrams handed to `handle_datagram`.
    pub datagrams_in: u64,
    /// Datagrams queued for sending.
    pub datagrams_out: u64,
    dropped: [u64; DropReason::ALL.len()],
    /// Errors foca reported that are not about input (its own "must not happen" checks);
    /// non-zero means a bug worth a report, the node carries on.
    pub internal_errors: u64,
    /// Times this host was declared down and rejoined under a new generation.
    pub renewals: u64,
    /// Live hosts in the map, this one included (unless it left).
    pub members: usize,
    /// Live hosts left out of the map by the shard limit.
    pub hosts_left_out: usize,
    /// The map's epoch.
    pub epoch: u64,
    /// The map's checksum.
    pub checksum: u64,
    /// Pending timer events.
    pub timers: usize,
}

impl ClusterStats {
    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.dropped[reason.index()] += 1;
    }
}
