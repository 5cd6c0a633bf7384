//! `hark-perf micro`: in-process timings of the hot path's building blocks.
//!
//! Each benchmark runs `--rounds` rounds of a calibrated number of iterations (about
//! `--round-ms` each) and reports the median, fastest and slowest round in nanoseconds per
//! operation. The median is the number to quote; the spread shows how noisy the machine was.
//! For a noise-free figure run one benchmark under callgrind with a fixed `--iterations` and
//! compare two iteration counts (see docs/benchmarks.md).

mod fanout;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use hark_core::ids::{ConvId, HostId, ShardId};
use hark_core::map::{HostSpec, Membership, OwnerCache};
use hark_core::protocol::{
    Decoder, FrameKind, Request, encode_frame_event, write_frame_event, write_talk_frame,
};

/// Audio payload of the codec benchmarks: a typical voice frame.
const FRAME_PAYLOAD_BYTES: usize = 100;
/// Talk frames per refill of the decode benchmark's input (about one large socket read).
const DECODE_CHUNK_FRAMES: usize = 512;
/// Bytes the encode benchmark's shared buffer grows by when it runs low.
const ENCODE_BUFFER_BYTES: usize = 64 * 1024;
/// Keys cycled through by the map benchmarks; a power of two.
const KEYS: usize = 4096;
/// Live conversations in the cached-lookup benchmark: a quarter of the default cache.
const CACHED_KEYS: usize = 1024;
/// Upper bound on calibrated iterations per round, so a mis-measured fast op cannot run away.
const ITERATIONS_MAX: u64 = 1 << 32;

#[derive(Debug, Args)]
pub struct MicroArgs {
    /// Benchmarks to run (default: all).
    #[arg(long = "bench", value_enum)]
    benches: Vec<Bench>,
    /// Rounds per benchmark; the median round is reported.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,
    /// Target duration of one round, in milliseconds (ignored with --iterations).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    round_ms: u64,
    /// Fixed iterations per round instead of calibrating (for callgrind runs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=ITERATIONS_MAX))]
    iterations: Option<u64>,
    /// Pin the benchmark thread to the first core of this list (e.g. `1`).
    #[arg(long, value_parser = parse_first_core)]
    cores: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bench {
    /// Decode one 100-byte talk frame from a connection's input buffer (zero-copy payload),
    /// including copying its bytes into the buffer as a socket read would.
    FrameDecode,
    /// Encode one 100-byte frame event into a shard's reused buffer and freeze it to `Bytes`.
    FrameEncode,
    /// Encode one 100-byte frame event into its own exactly sized allocation.
    FrameEncodeAlloc,
    /// Owner of a key over 128 equal shards, no cache.
    MapUncached128,
    /// Owner of a key over 128 shards of three different weights, no cache.
    MapUncachedWeighted128,
    /// Owner of a key through a shard's default `OwnerCache`, 1,024 live keys.
    MapCached,
    /// One talk frame through the shard logic to four live listeners, writes reported back
    /// (hark-core's `Shard` over its in-memory store; commits every 64 frames).
    ShardFanout4,
}

impl Bench {
    const ALL: [Bench; 7] = [
        Bench::FrameDecode,
        Bench::FrameEncode,
        Bench::FrameEncodeAlloc,
        Bench::MapUncached128,
        Bench::MapUncachedWeighted128,
        Bench::MapCached,
        Bench::ShardFanout4,
    ];

    fn name(self) -> &'static str {
        match self {
            Bench::FrameDecode => "frame-decode-100B",
            Bench::FrameEncode => "frame-encode-100B",
            Bench::FrameEncodeAlloc => "frame-encode-alloc-100B",
            Bench::MapUncached128 => "map-uncached-128",
            Bench::MapUncachedWeighted128 => "map-uncached-weighted-128",
            Bench::MapCached => "map-cached",
            Bench::ShardFanout4 => "shard-fanout-4",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MicroError {
    #[error("could not pin to core {0}: it is not among this process's allowed cores")]
    Pin(usize),
    #[error("benchmark setup failed: {0}")]
    Setup(String),
}

fn parse_first_core(list: &str) -> Result<usize, String> {
    let first = list.split([',', '-']).next().unwrap_or_default().trim();
    first
        .parse::<usize>()
        .map_err(|_| format!("expected a core list like `1` or `0-3`, got {list:?}"))
}

/// One benchmark body: runs `iterations` operations and returns a value to keep alive.
type Body<'a> = Box<dyn FnMut(u64) -> u64 + 'a>;

pub fn run(args: &MicroArgs) -> Result<(), MicroError> {
    if let Some(core) = args.cores {
        let allowed = core_affinity::get_core_ids().unwrap_or_default();
        let id = allowed
            .into_iter()
            .find(|c| c.id == core)
            .ok_or(MicroError::Pin(core))?;
        if !core_affinity::set_for_current(id) {
            return Err(MicroError::Pin(core));
        }
    }
    let benches: Vec<Bench> = if args.benches.is_empty() {
        Bench::ALL.to_vec()
    } else {
        args.benches.clone()
    };
    println!(
        "{:<28} {:>12} {:>7} {:>10} {:>10} {:>10}",
        "benchmark", "iter/round", "rounds", "median ns", "min ns", "max ns"
    );
    for bench in benches {
        let mut body = setup(bench)?;
        let iterations = match args.iterations {
            Some(n) => n,
            None => calibrate(&mut body, Duration::from_millis(args.round_ms)),
        };
        let mut per_op_ns: Vec<f64> = (0..args.rounds)
            .map(|_| {
                let start = Instant::now();
                black_box(body(iterations));
                start.elapsed().as_nanos() as f64 / iterations as f64
            })
            .collect();
        per_op_ns.sort_by(f64::total_cmp);
        let median = per_op_ns[per_op_ns.len() / 2];
        println!(
            "{:<28} {:>12} {:>7} {:>10.1} {:>10.1} {:>10.1}",
            bench.name(),
            iterations,
            args.rounds,
            median,
            per_op_ns[0],
            per_op_ns[per_op_ns.len() - 1]
        );
    }
    Ok(())
}

/// Doubles the iteration count until one batch takes a tenth of a round, then scales up.
fn calibrate(body: &mut Body<'_>, round: Duration) -> u64 {
    let mut n = 16u64;
    loop {
        let start = Instant::now();
        black_box(body(n));
        let took = start.elapsed();
        if took >= round / 10 || n >= ITERATIONS_MAX / 2 {
            let scaled = n as f64 * round.as_secs_f64() / took.as_secs_f64().max(1e-9);
            return (scaled as u64).clamp(1, ITERATIONS_MAX);
        }
        n *= 2;
    }
}

fn keys() -> Vec<ConvId> {
    (0..KEYS)
        .map(|i| ConvId::of_name(&format!("conversation-{i}")))
        .collect()
}

fn membership_128(weights: &[u32]) -> Result<Membership, MicroError> {
    // 8 hosts x 16 cores, weights cycling over `weights` by host.
    let hosts = (0..8u16).map(|h| HostSpec {
        host: HostId(h + 1),
        cores: (0..16).collect(),
        weight_per_core: weights[h as usize % weights.len()],
    });
    Membership::from_hosts(1, hosts).map_err(|e| MicroError::Setup(e.to_string()))
}

fn setup(bench: Bench) -> Result<Body<'static>, MicroError> {
    let keys = keys();
    let payload = [0x5au8; FRAME_PAYLOAD_BYTES];
    Ok(match bench {
        Bench::FrameDecode => {
            // A socket read's worth of back-to-back talk frames, refilled when consumed.
            let mut chunk = BytesMut::new();
            for seq in 0..DECODE_CHUNK_FRAMES {
                write_talk_frame(&mut chunk, 1, seq as u32, &payload).map_err(setup_error)?;
            }
            let mut input = BytesMut::with_capacity(chunk.len());
            let mut decoder = Decoder::new();
            Box::new(move |n| {
                let mut acc = 0u64;
                for _ in 0..n {
                    if input.is_empty() {
                        input.extend_from_slice(&chunk);
                    }
                    if let Ok(Some(Request::TalkFrame { seq, payload, .. })) =
                        decoder.decode_request(&mut input)
                    {
                        acc = acc.wrapping_add(u64::from(seq) + payload.len() as u64);
                    }
                }
                acc
            })
        }
        Bench::FrameEncode => {
            let mut out = BytesMut::with_capacity(ENCODE_BUFFER_BYTES);
            Box::new(move |n| {
                let mut acc = 0u64;
                for seq in 0..n {
                    if out.capacity() < FRAME_PAYLOAD_BYTES + 13 {
                        out.reserve(ENCODE_BUFFER_BYTES);
                    }
                    if write_frame_event(
                        &mut out,
                        9,
                        seq as u32,
                        FrameKind::Live,
                        black_box(&payload),
                    )
                    .is_ok()
                    {
                        let frame: Bytes = out.split().freeze();
                        acc = acc.wrapping_add(frame.len() as u64);
                    }
                }
                acc
            })
        }
        Bench::FrameEncodeAlloc => Box::new(move |n| {
            let mut acc = 0u64;
            for seq in 0..n {
                if let Ok(frame) =
                    encode_frame_event(9, seq as u32, FrameKind::Live, black_box(&payload))
                {
                    acc = acc.wrapping_add(frame.len() as u64);
                }
            }
            acc
        }),
        Bench::MapUncached128 | Bench::MapUncachedWeighted128 => {
            let weights: &[u32] = if bench == Bench::MapUncached128 {
                &[100]
            } else {
                &[100, 200, 50]
            };
            let map = membership_128(weights)?;
            Box::new(move |n| {
                let mut acc = 0u64;
                for i in 0..n {
                    let key = black_box(keys[i as usize & (KEYS - 1)]);
                    acc = acc.wrapping_add(owner_bits(map.owner(key)));
                }
                acc
            })
        }
        Bench::MapCached => {
            let map = membership_128(&[100])?;
            // A shard's default cache with a working set of a quarter of its slots.
            let mut cache = OwnerCache::default();
            let keys: Vec<ConvId> = keys[..CACHED_KEYS].to_vec();
            for &key in &keys {
                cache.owner(&map, key);
            }
            Box::new(move |n| {
                let mut acc = 0u64;
                for i in 0..n {
                    let key = black_box(keys[i as usize & (CACHED_KEYS - 1)]);
                    acc = acc.wrapping_add(owner_bits(cache.owner(&map, key)));
                }
                acc
            })
        }
        Bench::ShardFanout4 => {
            let mut bench = fanout::Fanout::new()?;
            Box::new(move |n| {
                let mut acc = 0u64;
                for _ in 0..n {
                    // Setup of a fresh shard cannot fail after it succeeded once; a failure
                    // would show as zero bytes delivered.
                    acc = acc.wrapping_add(bench.frame().unwrap_or(0));
                }
                acc
            })
        }
    })
}

fn setup_error(e: impl std::fmt::Display) -> MicroError {
    MicroError::Setup(e.to_string())
}

fn owner_bits(owner: Option<ShardId>) -> u64 {
    owner.map_or(0, |s| u64::from(s.host.0) << 16 | u64::from(s.core))
}
