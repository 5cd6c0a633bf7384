//! TEMPORARY compile stub (replaced by the metrics branch).
#![allow(missing_docs, dead_code)]
use std::sync::Arc;
#[derive(Debug, Clone, Default)]
pub struct ShardCounters {
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub handoffs_out: u64,
    pub handoffs_in: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub send_queue_bytes: u64,
    pub mesh_queue_depth: u64,
    pub slow_listener_fallbacks: u64,
    pub messages_started: u64,
    pub messages_ended: u64,
    pub commits: u64,
    pub commit_errors: u64,
    pub commit_bytes: u64,
    pub store_pending_bytes: u64,
    pub decode_errors: u64,
}
#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    pub counters: ShardCounters,
}
impl ShardStats {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn record_commit_latency_us(&mut self, _us: u64) {}
    pub fn record_relay_latency_us(&mut self, _us: u64) {}
}
#[derive(Debug)]
pub struct Registry;
impl Registry {
    pub fn new(_s: &[hark_core::ShardId]) -> Arc<Self> {
        Arc::new(Self)
    }
    pub fn publish(&self, _i: usize, _s: &ShardStats) {}
    pub fn set_ready(&self, _r: bool) {}
    pub fn set_draining(&self, _r: bool) {}
}
