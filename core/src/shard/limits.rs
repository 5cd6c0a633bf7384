//! The shard's configuration: every limit it enforces has a name, a default and an error code.

use crate::protocol::{FRAME_LEN_MAX, HISTORY_ENTRIES_MAX, SessionLimits};

/// Limits and knobs of one shard. `Default` gives production values; the relay fills it from
/// its TOML config. Each limit's error code is named on the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    /// Largest frame (length prefix) accepted; announced in `hello_accepted`. The glue builds
    /// its `protocol::Decoder` with it (`frame_too_long`).
    pub frame_len_max: u32,
    /// Largest audio payload of a talk frame (`payload_too_large`, the message ends truncated).
    pub audio_payload_len_max: u32,
    /// Sustained frames per second per talk stream (`rate_limited`, the message ends truncated).
    pub frames_per_second_max: u16,
    /// Frames a talk stream may send at once above the sustained rate (a token bucket of this
    /// many frames refilled at `frames_per_second_max`): network jitter bunches frames up,
    /// but sustained faster-than-real-time sending is refused.
    pub rate_burst_frames: u32,
    /// Talk streams open at once per connection (`too_many_open_messages`).
    pub talk_streams_max: u16,
    /// Messages open at once in one conversation (`too_many_open_messages`).
    pub open_messages_per_conversation_max: usize,
    /// Subscriptions open at once per connection (`too_many_conversations`).
    pub subs_max: u16,
    /// Largest number of entries one history page is served with.
    pub history_limit_max: u16,
    /// Connections one shard serves at once (`too_many_connections`, then close).
    pub connections_max: usize,
    /// Conversations one shard keeps state for at once (talk and listen get
    /// `too_many_conversations` beyond it).
    pub conversations_max: usize,
    /// A connection silent this long is closed (`idle_timeout`). At half of it the relay
    /// sends a `ping`, which a live client answers.
    pub idle_timeout_ms: u32,
    /// Bytes handed to the glue for a connection and not yet written. A live frame that would
    /// go over it is not queued: the subscription falls back to replay from the store.
    pub send_queue_bytes_max: usize,
    /// Hard cap on a connection's unwritten bytes, control events included: a client that
    /// stops reading but keeps sending requests is closed beyond it.
    pub send_queue_bytes_hard_max: usize,
    /// An open message whose talker's connection broke stays open this long for a resume,
    /// then ends truncated.
    pub talk_resume_grace_ms: u64,
    /// Frames read from the store per replay step.
    pub replay_batch_frames: usize,
    /// Messages listed from the store's timeline per replay page (bounds a subscription's
    /// backlog).
    pub replay_page_messages: usize,
    /// How often `handle_timeout` wants to run while there is anything to time out.
    pub timer_tick_ms: u64,
    /// After `begin_shutdown`, connections are closed this long later.
    pub shutdown_linger_ms: u64,
    /// Accept an empty token (all rights on every conversation) on connections the glue marks
    /// as loopback. For development only.
    pub dev_mode: bool,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            frame_len_max: FRAME_LEN_MAX,
            audio_payload_len_max: 1500,
            frames_per_second_max: 100,
            rate_burst_frames: 50,
            talk_streams_max: 4,
            open_messages_per_conversation_max: 64,
            subs_max: 64,
            history_limit_max: 256,
            connections_max: 10_000,
            conversations_max: 100_000,
            idle_timeout_ms: 30_000,
            send_queue_bytes_max: 256 * 1024,
            send_queue_bytes_hard_max: 1024 * 1024,
            talk_resume_grace_ms: 10_000,
            replay_batch_frames: 64,
            replay_page_messages: 64,
            timer_tick_ms: 250,
            shutdown_linger_ms: 5_000,
            dev_mode: false,
        }
    }
}

impl ShardConfig {
    /// The terms announced to a client in `hello_accepted`.
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            frame_len_max: self.frame_len_max,
            audio_payload_len_max: self.audio_payload_len_max,
            frames_per_second_max: self.frames_per_second_max,
            talk_streams_max: self.talk_streams_max,
            subs_max: self.subs_max,
            history_limit_max: self.history_limit_max.min(HISTORY_ENTRIES_MAX as u16),
            idle_timeout_ms: self.idle_timeout_ms,
        }
    }
}

/// A token bucket counted in microseconds of credit: each frame costs one frame interval
/// (`1 s / frames_per_second_max`); credit accrues with time up to `rate_burst_frames`
/// intervals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameRate {
    credit_us: u64,
    last_us: u64,
}

impl FrameRate {
    /// A full bucket at `now_us`.
    pub(crate) fn new(config: &ShardConfig, now_us: u64) -> Self {
        Self {
            credit_us: Self::capacity_us(config),
            last_us: now_us,
        }
    }

    fn interval_us(config: &ShardConfig) -> u64 {
        1_000_000 / u64::from(config.frames_per_second_max.max(1))
    }

    fn capacity_us(config: &ShardConfig) -> u64 {
        Self::interval_us(config).saturating_mul(u64::from(config.rate_burst_frames.max(1)))
    }

    /// Takes one frame's credit; false when the stream is over its rate.
    pub(crate) fn admit(&mut self, config: &ShardConfig, now_us: u64) -> bool {
        let elapsed = now_us.saturating_sub(self.last_us);
        self.last_us = self.last_us.max(now_us);
        self.credit_us = self
            .credit_us
            .saturating_add(elapsed)
            .min(Self::capacity_us(config));
        let cost = Self::interval_us(config);
        if self.credit_us < cost {
            return false;
        }
        self.credit_us -= cost;
        true
    }
}
