//! The membership's timings and sizes, and the foca configuration they make.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use super::codec::{ENVELOPE_LEN, I_AM_LEN_MAX};
use super::error::ClusterError;

/// Largest datagram the node writes or reads: fits a 1500-byte Ethernet MTU with IP and UDP
/// headers and room to spare for tunnels.
pub const DATAGRAM_BYTES_MAX: u16 = 1400;
/// Smallest datagram limit accepted: a SWIM header (three cards) plus a few updates.
pub const DATAGRAM_BYTES_MIN: u16 = 512;

/// How fast the membership notices a crash, and how much it sends to do so.
///
/// The defaults declare a crashed host down, and change the map on every live host, within
/// 3 s on a healthy network (arithmetic in `docs/cluster.md`):
///
/// ```text
///   first probe of the dead host      ≤ ~1 probe period with several probers   250 ms
/// + the probe's own period (it fails when the next one starts)                 250 ms
/// + suspect_to_down_ms                                                         750 ms
/// + spreading the verdict (a few gossip intervals)                            ~200 ms
/// ≈ 1.45 s typical; 2.4 s when the first probe comes four periods late
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// How often each host pings one other host (round robin over a shuffled list). Shorter
    /// detects faster and sends more.
    pub probe_period_ms: u32,
    /// How long a direct ping may take before `indirect_probes` other hosts are asked to ping
    /// too. Must be below `probe_period_ms` (the indirect round fits in the rest of it); set
    /// it above the network's p99 round trip plus the gossip thread's scheduling delay.
    pub probe_rtt_ms: u32,
    /// How many hosts are asked to ping a host that did not answer directly, so one lossy
    /// link does not make a healthy host suspect.
    pub indirect_probes: u8,
    /// How long a suspect host has to refute the suspicion before it is declared down.
    pub suspect_to_down_ms: u32,
    /// How long a down host's last boot is remembered (refusing that same boot back). Boots
    /// are renewed with a new generation, so this only bounds memory; hours are fine.
    pub remove_down_after_ms: u64,
    /// How often updates (and map announcements) are pushed to `gossip_fanout` random hosts,
    /// on top of riding along with probes.
    pub gossip_interval_ms: u32,
    /// How many hosts each periodic gossip goes to.
    pub gossip_fanout: u8,
    /// How many times each update is sent on by each host that learns it.
    pub max_transmissions: u8,
    /// How often a host asks one live host for its member list (finds hosts it missed).
    pub announce_interval_ms: u32,
    /// How often a host announces itself to two hosts it believes down: how split halves of
    /// a healed partition find each other again.
    pub announce_to_down_interval_ms: u32,
    /// How often a host that knows no live peer asks its seeds again (at start-up, and when
    /// cut off from everyone).
    pub join_retry_interval_ms: u32,
    /// How often a host re-announces its map's `(epoch, checksum)`, so hosts that missed the
    /// first announcement (late joiners, healed partitions) still converge.
    pub epoch_rebroadcast_interval_ms: u32,
    /// Largest datagram written or accepted, envelope included
    /// ([`DATAGRAM_BYTES_MIN`]..=[`DATAGRAM_BYTES_MAX`]).
    pub datagram_bytes_max: u16,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            probe_period_ms: 250,
            probe_rtt_ms: 80,
            indirect_probes: 3,
            suspect_to_down_ms: 750,
            remove_down_after_ms: 24 * 3600 * 1000,
            gossip_interval_ms: 100,
            gossip_fanout: 3,
            max_transmissions: 6,
            announce_interval_ms: 10_000,
            announce_to_down_interval_ms: 2_000,
            join_retry_interval_ms: 1_000,
            epoch_rebroadcast_interval_ms: 1_000,
            datagram_bytes_max: DATAGRAM_BYTES_MAX,
        }
    }
}

impl ClusterConfig {
    /// Checks every field; the error names the first bad one and what is allowed.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let nonzero: [(&'static str, u64); 12] = [
            ("probe_period_ms", self.probe_period_ms.into()),
            ("probe_rtt_ms", self.probe_rtt_ms.into()),
            ("indirect_probes", self.indirect_probes.into()),
            ("suspect_to_down_ms", self.suspect_to_down_ms.into()),
            ("remove_down_after_ms", self.remove_down_after_ms),
            ("gossip_interval_ms", self.gossip_interval_ms.into()),
            ("gossip_fanout", self.gossip_fanout.into()),
            ("max_transmissions", self.max_transmissions.into()),
            ("announce_interval_ms", self.announce_interval_ms.into()),
            (
                "announce_to_down_interval_ms",
                self.announce_to_down_interval_ms.into(),
            ),
            ("join_retry_interval_ms", self.join_retry_interval_ms.into()),
            (
                "epoch_rebroadcast_interval_ms",
                self.epoch_rebroadcast_interval_ms.into(),
            ),
        ];
        if let Some((field, _)) = nonzero.iter().find(|(_, value)| *value == 0) {
            return Err(ClusterError::Config {
                field,
                reason: "must not be zero".into(),
            });
        }
        if self.probe_rtt_ms >= self.probe_period_ms {
            return Err(ClusterError::Config {
                field: "probe_rtt_ms",
                reason: format!(
                    "{} must be below probe_period_ms ({}) so the indirect probes fit in the period",
                    self.probe_rtt_ms, self.probe_period_ms
                ),
            });
        }
        if !(DATAGRAM_BYTES_MIN..=DATAGRAM_BYTES_MAX).contains(&self.datagram_bytes_max) {
            return Err(ClusterError::Config {
                field: "datagram_bytes_max",
                reason: format!(
                    "{} is outside {DATAGRAM_BYTES_MIN}..={DATAGRAM_BYTES_MAX}",
                    self.datagram_bytes_max
                ),
            });
        }
        Ok(())
    }

    /// foca's configuration for these settings. Call on a validated config.
    pub(crate) fn foca_config(&self) -> foca::Config {
        let ms = |value: u32| Duration::from_millis(value.into());
        let count = |value: u8| NonZeroUsize::new(value.into()).unwrap_or(NonZeroUsize::MIN);
        let packet = usize::from(self.datagram_bytes_max) - ENVELOPE_LEN;
        foca::Config {
            probe_period: ms(self.probe_period_ms),
            probe_rtt: ms(self.probe_rtt_ms),
            num_indirect_probes: count(self.indirect_probes),
            max_transmissions: NonZeroU8::new(self.max_transmissions).unwrap_or(NonZeroU8::MIN),
            suspect_to_down_after: ms(self.suspect_to_down_ms),
            remove_down_after: Some(Duration::from_millis(self.remove_down_after_ms)),
            max_packet_size: NonZeroUsize::new(packet.max(I_AM_LEN_MAX))
                .unwrap_or(NonZeroUsize::MIN),
            notify_down_members: true,
            periodic_announce: Some(foca::PeriodicParams {
                frequency: ms(self.announce_interval_ms),
                num_members: NonZeroUsize::MIN,
            }),
            periodic_announce_to_down_members: Some(foca::PeriodicParams {
                frequency: ms(self.announce_to_down_interval_ms),
                num_members: count(2),
            }),
            periodic_gossip: Some(foca::PeriodicParams {
                frequency: ms(self.gossip_interval_ms),
                num_members: count(self.gossip_fanout),
            }),
        }
    }
}
