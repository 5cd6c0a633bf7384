//! The runtime in-process: real shard threads, real sockets on 127.0.0.1, the store on a temp
//! dir. (Process-level tests of the `hark-relay` binary are in `relay/tests/`.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hark_core::map::{Membership, ShardWeight};
use hark_core::protocol::{Decoder, Event, ListenFrom, Request, encode_request};
use hark_core::shard::ShardConfig;
use hark_core::token::Keyring;
use hark_core::{ConvName, HostId, ShardId};
use hark_storage::StoreConfig;

use super::*;
use crate::metrics::Registry;

const WAIT: Duration = Duration::from_secs(20);

fn config(dir: &std::path::Path, shards: usize) -> RuntimeConfig {
    RuntimeConfig {
        host: HostId(0),
        cpus: vec![None; shards],
        data_dir: dir.to_path_buf(),
        shard: ShardConfig {
            dev_mode: true,
            shutdown_linger_ms: 200,
            ..ShardConfig::default()
        },
        store: StoreConfig {
            preallocate_segments: false,
            commit_interval_ms: 2,
            record_flush_ms: 5,
            ..StoreConfig::default()
        },
        mesh_lane_capacity: 1024,
        cluster: None,
    }
}

fn start(dir: &std::path::Path, shards: usize) -> Relay {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("debug")
        .try_init();
    let keyring = Keyring::generate(hark_core::token::KeyId(1), [7; 32]);
    let cfg = config(dir, shards);
    let shard_ids: Vec<ShardId> = (0..shards).map(|i| ShardId::new(0, i as u16)).collect();
    Relay::start(
        &cfg,
        "127.0.0.1:0".parse().unwrap(),
        &keyring,
        Registry::new(&shard_ids),
    )
    .expect("the relay starts")
}

/// A conversation name whose owner in a `shards`-shard host is shard `core`.
fn conv_on(shards: usize, core: u16, tag: &str) -> ConvName {
    let map = Membership::from_shards(
        1,
        (0..shards).map(|i| ShardWeight {
            shard: ShardId::new(0, i as u16),
            weight: 100,
        }),
    )
    .unwrap();
    (0..10_000)
        .map(|i| ConvName::new(format!("{tag}-{i}")).unwrap())
        .find(|c| map.owner(c.id()) == Some(ShardId::new(0, core)))
        .expect("a name lands on every shard")
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl Client {
    fn connect(relay: &Relay) -> Self {
        let stream = TcpStream::connect(relay.client_addr()).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut client = Self {
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::default(),
        };
        client.send(&Request::Hello {
            version: 1,
            token: Bytes::new(),
            client_name: "runtime-test".into(),
        });
        match client.next() {
            Event::HelloAccepted { .. } => {}
            other => panic!("expected hello_accepted, got {other:?}"),
        }
        client
    }

    fn send(&mut self, request: &Request) {
        let mut out = BytesMut::new();
        encode_request(request, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    fn next(&mut self) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(event) = self.decoder.decode_event(&mut self.buf).unwrap() {
                return event;
            }
            assert!(Instant::now() < deadline, "no event in time");
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the relay closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next event that is not a `Stored` ack.
    fn next_skipping_acks(&mut self) -> Event {
        loop {
            match self.next() {
                Event::Stored { .. } => {}
                other => return other,
            }
        }
    }
}

fn payload(talker: u32, seq: u32) -> Bytes {
    Bytes::from(format!("talker {talker} frame {seq} ").repeat(3))
}

/// Talks `frames` frames on `conv` and returns the message's end ack frame count.
fn talk(client: &mut Client, talker: u32, conv: &ConvName, frames: u32) {
    client.send(&Request::TalkStart {
        stream: 1,
        conversation: conv.clone(),
        codec: Bytes::from_static(b"opus"),
        resume: None,
    });
    for seq in 0..frames {
        client.send(&Request::TalkFrame {
            stream: 1,
            seq,
            payload: payload(talker, seq),
        });
    }
    client.send(&Request::TalkEnd {
        stream: 1,
        frame_count: frames,
    });
    loop {
        match client.next() {
            Event::TalkEnded { frame_count, .. } => {
                assert_eq!(frame_count, frames);
                return;
            }
            Event::TalkStarted { .. } | Event::Stored { .. } => {}
            other => panic!("unexpected while talking: {other:?}"),
        }
    }
}

/// Reads one whole message of a subscription: started, frames in order, ended.
fn hear_message(client: &mut Client, talker: u32, frames: u32) {
    let stream = loop {
        match client.next_skipping_acks() {
            Event::MessageStarted { stream, .. } => break stream,
            Event::Listening { .. } | Event::CaughtUp { .. } => {}
            other => panic!("expected message_started, got {other:?}"),
        }
    };
    let mut next = 0;
    loop {
        match client.next_skipping_acks() {
            Event::Frame {
                stream: s,
                seq,
                payload: p,
                ..
            } if s == stream => {
                assert_eq!(seq, next, "frames in order, each once");
                assert_eq!(p, payload(talker, seq));
                next += 1;
            }
            Event::MessageEnded {
                stream: s,
                frame_count,
                ..
            } if s == stream => {
                assert_eq!(frame_count, frames);
                assert_eq!(next, frames);
                return;
            }
            Event::CaughtUp { .. } => {}
            other => panic!("unexpected while hearing: {other:?}"),
        }
    }
}

#[test]
fn a_listener_hears_a_talker_on_every_shard_and_the_relay_drains() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = start(dir.path(), 2);
    for core in 0..2 {
        let conv = conv_on(2, core, "fanout");
        let mut listener = Client::connect(&relay);
        listener.send(&Request::Listen {
            sub: 9,
            conversation: conv.clone(),
            from: ListenFrom::Live,
        });
        // Listening, then caught_up: the subscription is live before anyone talks.
        loop {
            if let Event::CaughtUp { sub: 9 } = listener.next() {
                break;
            }
        }
        let mut talker = Client::connect(&relay);
        talk(&mut talker, core.into(), &conv, 50);
        hear_message(&mut listener, core.into(), 50);
    }
    relay.drain();
    let mut exited = 0;
    while let Some((_, failure)) = relay.wait_exit() {
        assert_eq!(failure, None);
        exited += 1;
        if exited == 2 {
            break;
        }
    }
    relay.join();
}

#[test]
fn a_listener_of_two_shards_conversations_hears_both_through_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = start(dir.path(), 2);
    let convs = [conv_on(2, 0, "mesh"), conv_on(2, 1, "mesh")];
    let mut listener = Client::connect(&relay);
    for (sub, conv) in convs.iter().enumerate() {
        listener.send(&Request::Listen {
            sub: sub as u32,
            conversation: conv.clone(),
            from: ListenFrom::Live,
        });
    }
    let mut caught_up = 0;
    while caught_up < 2 {
        if let Event::CaughtUp { .. } = listener.next() {
            caught_up += 1;
        }
    }
    for (talker, conv) in convs.iter().enumerate() {
        let mut client = Client::connect(&relay);
        talk(&mut client, talker as u32, conv, 20);
        hear_message(&mut listener, talker as u32, 20);
    }
    relay.drain();
    relay.join();
}

#[test]
fn a_late_listener_replays_a_stored_message_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = start(dir.path(), 2);
    let conv = conv_on(2, 1, "late");
    let mut talker = Client::connect(&relay);
    talk(&mut talker, 7, &conv, 30);
    let mut listener = Client::connect(&relay);
    listener.send(&Request::Listen {
        sub: 1,
        conversation: conv.clone(),
        from: ListenFrom::Since(0),
    });
    hear_message(&mut listener, 7, 30);
    match listener.next() {
        Event::CaughtUp { sub: 1 } => {}
        other => panic!("expected caught_up, got {other:?}"),
    }
    relay.drain();
    relay.join();
}
