//! `shard-fanout-4`: the relay's hot path in the shard logic, on a fixed scenario: one talker
//! and four live listeners of one conversation on one shard (hark-core's `Shard` over its
//! in-memory store). One operation is one talk frame: decoded request in, four frame events
//! out, their writes reported back; a commit every 64 frames; a new message every 10,000.
//! Under callgrind it gives a noise-free instruction count per frame (docs/benchmarks.md).

use bytes::Bytes;
use hark_core::ids::{ConvName, ShardId};
use hark_core::map::{Membership, ShardWeight};
use hark_core::protocol::{ListenFrom, Request};
use hark_core::shard::{Action, ConnId, MemoryStore, Opened, Shard, ShardConfig};
use hark_core::token::{KeyId, Keyring};

use super::{FRAME_PAYLOAD_BYTES, MicroError, setup_error};

/// Live listeners of the conversation.
const FANOUT_LISTENERS: usize = 4;
/// Frames per message before the talker starts the next one.
const MESSAGE_FRAMES: u32 = 10_000;
/// Frames between two commits of the in-memory store.
const COMMIT_EVERY_FRAMES: u32 = 64;
/// Frames after which the shard and its store start over (bounds the store's memory).
const RESET_FRAMES: u64 = 200_000;
/// The shard's clock advances this much per frame (a 20 ms voice cadence).
const FRAME_INTERVAL_US: u64 = 20_000;
/// The clock the benchmark starts at (µs since the Unix epoch, late 2027).
const START_US: u64 = 1_820_000_000_000_000;

/// One shard with a talker and its listeners, ready to take frames.
pub(super) struct Fanout {
    shard: Shard<MemoryStore>,
    talker: ConnId,
    conversation: ConvName,
    payload: Bytes,
    stream: u32,
    seq: u32,
    frames: u64,
    now_us: u64,
    written: Vec<(ConnId, usize)>,
}

impl Fanout {
    pub(super) fn new() -> Result<Self, MicroError> {
        let conversation = ConvName::new("bench/fanout").map_err(setup_error)?;
        let mut fanout = Self {
            shard: new_shard()?,
            talker: ConnId {
                index: 0,
                generation: 0,
            },
            conversation,
            payload: Bytes::from(vec![0x5a; FRAME_PAYLOAD_BYTES]),
            stream: 1,
            seq: 0,
            frames: 0,
            now_us: START_US,
            written: Vec::new(),
        };
        fanout.reset()?;
        Ok(fanout)
    }

    /// A fresh shard: listeners subscribed live, the talker's first message started.
    fn reset(&mut self) -> Result<(), MicroError> {
        self.shard = new_shard()?;
        for _ in 0..FANOUT_LISTENERS {
            let conn = self.open()?;
            let listen = Request::Listen {
                sub: 1,
                conversation: self.conversation.clone(),
                from: ListenFrom::Live,
            };
            self.request(conn, listen);
        }
        self.talker = self.open()?;
        self.stream = 1;
        self.start_message();
        self.frames = 0;
        Ok(())
    }

    fn open(&mut self) -> Result<ConnId, MicroError> {
        let Opened::Accepted(conn) = self.shard.connection_opened(self.now_us, true) else {
            return Err(MicroError::Setup("the shard refused a connection".into()));
        };
        let hello = Request::Hello {
            version: 1,
            token: Bytes::new(),
            client_name: "hark-perf micro".into(),
        };
        self.request(conn, hello);
        Ok(conn)
    }

    fn start_message(&mut self) {
        self.seq = 0;
        let request = Request::TalkStart {
            stream: self.stream,
            conversation: self.conversation.clone(),
            codec: Bytes::new(),
            resume: None,
        };
        self.request(self.talker, request);
    }

    /// One talk frame through the shard, its deliveries written. Returns bytes delivered.
    pub(super) fn frame(&mut self) -> Result<u64, MicroError> {
        if self.frames >= RESET_FRAMES {
            self.reset()?;
        }
        self.now_us += FRAME_INTERVAL_US;
        let request = Request::TalkFrame {
            stream: self.stream,
            seq: self.seq,
            payload: self.payload.clone(),
        };
        let delivered = self.request(self.talker, request);
        self.seq += 1;
        self.frames += 1;
        if self.seq.is_multiple_of(COMMIT_EVERY_FRAMES) {
            self.commit();
        }
        if self.seq == MESSAGE_FRAMES {
            let end = Request::TalkEnd {
                stream: self.stream,
                frame_count: self.seq,
            };
            self.request(self.talker, end);
            self.commit();
            self.stream += 1;
            self.start_message();
        }
        Ok(delivered)
    }

    fn commit(&mut self) {
        let acks = self.shard.store_mut().commit();
        self.shard.store_acks(self.now_us, &acks);
        self.drain();
    }

    fn request(&mut self, conn: ConnId, request: Request) -> u64 {
        self.shard.handle_request(self.now_us, conn, request);
        self.drain()
    }

    /// Carries out the shard's actions as the relay would: every send is written at once
    /// and reported back. Returns the bytes written.
    fn drain(&mut self) -> u64 {
        let mut total = 0;
        loop {
            self.written.clear();
            while let Some(action) = self.shard.poll_action() {
                if let Action::Send { conn, bytes } = action {
                    self.written.push((conn, bytes.len()));
                }
            }
            if self.written.is_empty() {
                return total;
            }
            for i in 0..self.written.len() {
                let (conn, n) = self.written[i];
                total += n as u64;
                self.shard.bytes_written(self.now_us, conn, n);
            }
        }
    }
}

fn new_shard() -> Result<Shard<MemoryStore>, MicroError> {
    let shard = ShardId::new(0, 0);
    let map =
        Membership::from_shards(1, [ShardWeight { shard, weight: 100 }]).map_err(setup_error)?;
    let config = ShardConfig {
        dev_mode: true,
        frames_per_second_max: u16::MAX,
        rate_burst_frames: u32::MAX,
        idle_timeout_ms: u32::MAX,
        ..ShardConfig::default()
    };
    Ok(Shard::new(
        config,
        shard,
        map,
        Keyring::generate(KeyId(1), [7; 32]),
        MemoryStore::default(),
        START_US,
    ))
}
