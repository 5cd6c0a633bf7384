//! Unit tests: the card codec, foca's codec, the config, the timer queue, the epoch rule and
//! the drop counters. The multi-node behaviour is in `sim.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use bytes::BufMut;
use foca::{BroadcastHandler, Codec, Header, Member, Message, State, Timer};
use proptest::prelude::*;

use super::codec::{
    ANNOUNCEMENT_LEN, CardCodec, Datagram, ENVELOPE_LEN, EnvelopeError, MapAnnouncement,
    decode_card, decode_datagram, encode_i_am, encode_who_are_you, put_card, swim_envelope,
};
use super::gossip::{GossipError, MapGossip};
use super::timers::TimerQueue;
use super::*;
use crate::ids::HostId;
use crate::map::MEMBERSHIP_SHARDS_MAX;

fn v4(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
}

fn card(host: u16, generation: u64) -> HostCard {
    HostCard::new(
        HostId(host),
        generation,
        v4(host as u8, 7000),
        v4(host as u8, 7100),
        2,
        100,
    )
    .expect("valid card")
}

fn encoded(card: &HostCard) -> Vec<u8> {
    let mut out = Vec::new();
    put_card(&mut out, card);
    out
}

fn addr_strategy() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (1u32.., 1u16..)
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (1u128.., 1u16.., any::<u32>(), any::<u32>()).prop_map(|(ip, port, flow, scope)| {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope))
        }),
    ]
}

fn card_strategy() -> impl Strategy<Value = HostCard> {
    (
        any::<u16>(),
        any::<u64>(),
        addr_strategy(),
        addr_strategy(),
        1..=MEMBERSHIP_SHARDS_MAX as u16,
        1u32..,
    )
        .prop_map(|(host, generation, cluster, client, cores, weight)| {
            HostCard::new(HostId(host), generation, cluster, client, cores, weight)
                .expect("strategy makes valid cards")
        })
}

proptest! {
    #[test]
    fn card_round_trips(card in card_strategy()) {
        let bytes = encoded(&card);
        prop_assert!(bytes.len() <= CARD_LEN_MAX);
        let mut rest = &bytes[..];
        prop_assert_eq!(decode_card(&mut rest), Ok(card));
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn every_prefix_of_a_card_is_truncated(card in card_strategy()) {
        let bytes = encoded(&card);
        for len in 0..bytes.len() {
            let mut rest = &bytes[..len];
            let result = decode_card(&mut rest);
            prop_assert!(matches!(result, Err(CodecError::Truncated { .. })), "{len}: {result:?}");
        }
    }

    #[test]
    fn datagram_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_datagram(&data);
        let mut node = ClusterNode::new(card(1, 1), ClusterConfig::default(), 1).unwrap();
        node.handle_datagram(0, v4(9, 9), &data);
        prop_assert_eq!(node.stats().datagrams_in, 1);
    }
}

/// Card bytes with one field patched.
fn patched(at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut out = encoded(&card(1, 5));
    out[at..at + bytes.len()].copy_from_slice(bytes);
    out
}

#[test]
fn bad_cards_are_refused_with_their_reason() {
    // Layout for a v4 card: host 0..2, generation 2..10, cluster addr 10..17 (tag, ip, port),
    // client addr 17..24, cores 24..26, weight 26..30.
    let cases: [(Vec<u8>, CodecError); 7] = [
        (patched(10, &[5]), CodecError::AddressFamilyUnknown(5)),
        (
            patched(24, &0u16.to_le_bytes()),
            CodecError::Card(CardError::CoresOutOfRange { cores: 0 }),
        ),
        (
            patched(24, &4097u16.to_le_bytes()),
            CodecError::Card(CardError::CoresOutOfRange { cores: 4097 }),
        ),
        (
            patched(26, &0u32.to_le_bytes()),
            CodecError::Card(CardError::WeightZero),
        ),
        (
            patched(11, &[0, 0, 0, 0]),
            CodecError::Card(CardError::AddressUnspecified(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                7000,
            ))),
        ),
        (
            patched(22, &0u16.to_le_bytes()),
            CodecError::Card(CardError::PortZero(v4(1, 0))),
        ),
        (
            encoded(&card(1, 5))[..29].to_vec(),
            CodecError::Truncated { needed: 1 },
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(decode_card(&mut &bytes[..]), Err(expected));
    }
}

#[test]
fn local_cards_are_checked_too() {
    let bad = |cores, weight, addr| HostCard::new(HostId(1), 1, addr, v4(1, 1), cores, weight);
    assert_eq!(
        bad(0, 1, v4(1, 1)),
        Err(CardError::CoresOutOfRange { cores: 0 })
    );
    assert_eq!(bad(1, 0, v4(1, 1)), Err(CardError::WeightZero));
    assert_eq!(bad(1, 1, v4(1, 0)), Err(CardError::PortZero(v4(1, 0))));
    let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 7000);
    assert_eq!(bad(1, 1, any), Err(CardError::AddressUnspecified(any)));
    assert_eq!(
        ClusterNode::new(card(1, 1), ClusterConfig::default(), 0).map(|n| n.card().clone()),
        Ok(card(1, 1))
    );
}

#[test]
fn renewal_wins_the_address_conflict() {
    use foca::Identity;
    let old = card(3, 10);
    let new = old.renewed().expect("below u64::MAX");
    assert_eq!(new.generation(), 11);
    assert!(new.win_addr_conflict(&old));
    assert!(!old.win_addr_conflict(&new));
    assert_eq!(card(3, u64::MAX).renewed(), None);
    // Same generation, different address: every node picks the same winner.
    let twin = HostCard::new(HostId(3), 10, v4(99, 7000), v4(3, 7100), 2, 100).unwrap();
    assert_ne!(twin.win_addr_conflict(&old), old.win_addr_conflict(&twin));
}

#[test]
fn envelopes_and_small_bodies() {
    assert_eq!(decode_datagram(b"hk"), Err(EnvelopeError::NotHark));
    assert_eq!(decode_datagram(b"xx\x01\x01"), Err(EnvelopeError::NotHark));
    assert_eq!(
        decode_datagram(b"hk\x02\x01"),
        Err(EnvelopeError::VersionUnknown(2))
    );
    assert_eq!(
        decode_datagram(b"hk\x01\x09"),
        Err(EnvelopeError::KindUnknown(9))
    );
    assert_eq!(
        decode_datagram(b"hk\x01\x01abc"),
        Ok(Datagram::Swim(b"abc"))
    );

    let question = encode_who_are_you(77);
    assert_eq!(question.len(), WHO_ARE_YOU_LEN);
    assert_eq!(
        decode_datagram(&question),
        Ok(Datagram::WhoAreYou { nonce: 77 })
    );
    assert_eq!(
        decode_datagram(&question[..question.len() - 1]),
        Err(EnvelopeError::Body(CodecError::LengthWrong {
            len: WHO_ARE_YOU_LEN - 1,
            expected: WHO_ARE_YOU_LEN
        }))
    );

    let answer = encode_i_am(77, &card(2, 9));
    assert!(answer.len() <= WHO_ARE_YOU_LEN, "no amplification");
    assert_eq!(
        decode_datagram(&answer),
        Ok(Datagram::IAm {
            nonce: 77,
            card: card(2, 9)
        })
    );
    let mut long = answer.clone();
    long.push(0);
    assert_eq!(
        decode_datagram(&long),
        Err(EnvelopeError::Body(CodecError::TrailingBytes(1)))
    );
}

#[test]
fn swim_headers_and_members_round_trip() {
    let messages = [
        Message::Ping(1),
        Message::Ack(2),
        Message::PingReq {
            target: card(4, 1),
            probe_number: 3,
        },
        Message::IndirectPing {
            origin: card(5, 1),
            probe_number: 4,
        },
        Message::IndirectAck {
            target: card(6, 1),
            probe_number: 5,
        },
        Message::ForwardedAck {
            origin: card(7, 1),
            probe_number: 6,
        },
        Message::Announce,
        Message::Feed,
        Message::Gossip,
        Message::Broadcast,
        Message::TurnUndead,
    ];
    for message in messages {
        let header = Header {
            src: card(1, 1),
            src_incarnation: 9,
            dst: card(2, 2),
            message,
        };
        let mut out = Vec::new();
        CardCodec.encode_header(&header, &mut out).unwrap();
        let mut rest = &out[..];
        assert_eq!(CardCodec.decode_header(&mut rest).unwrap(), header);
        assert!(rest.is_empty());
    }
    for state in [State::Alive, State::Suspect, State::Down] {
        let member = Member::new(card(3, 3), 4, state);
        let mut out = Vec::new();
        CardCodec.encode_member(&member, &mut out).unwrap();
        assert_eq!(CardCodec.decode_member(&mut &out[..]).unwrap(), member);
    }

    let mut bad_state = Vec::new();
    CardCodec
        .encode_member(&Member::alive(card(3, 3)), &mut bad_state)
        .unwrap();
    *bad_state.last_mut().unwrap() = 3;
    assert_eq!(
        CardCodec.decode_member(&mut &bad_state[..]),
        Err(CodecError::StateUnknown(3))
    );
    let mut bad_message = encoded(&card(1, 1));
    bad_message.put_u16_le(0);
    bad_message.extend(encoded(&card(2, 1)));
    bad_message.push(11);
    assert_eq!(
        CardCodec.decode_header(&mut &bad_message[..]),
        Err(CodecError::MessageUnknown(11))
    );

    // No room: an error and an untouched buffer.
    let mut small = Vec::new();
    let mut limited = (&mut small).limit(10);
    assert_eq!(
        CardCodec.encode_member(&Member::alive(card(1, 1)), &mut limited),
        Err(CodecError::BufferFull)
    );
    assert!(small.is_empty());
}

#[test]
fn announcements_round_trip_and_refuse_bad_bytes() {
    let item = MapAnnouncement {
        host: HostId(3),
        generation: 4,
        seq: 5,
        epoch: 6,
        checksum: 7,
    };
    let bytes = item.encode();
    assert_eq!(MapAnnouncement::decode(&bytes), Ok(item));
    assert_eq!(
        MapAnnouncement::decode(&bytes[1..]),
        Err(CodecError::LengthWrong {
            len: ANNOUNCEMENT_LEN - 1,
            expected: ANNOUNCEMENT_LEN
        })
    );
    let mut other = bytes;
    other[0] = 2;
    assert_eq!(
        MapAnnouncement::decode(&other),
        Err(CodecError::AnnouncementVersionUnknown(2))
    );
}

#[test]
fn gossip_takes_only_newer_announcements_and_bounds_its_inbox() {
    let (mut gossip, inbox) = MapGossip::new(1);
    let item = |seq, generation| MapAnnouncement {
        host: HostId(2),
        generation,
        seq,
        epoch: 1,
        checksum: 1,
    };
    assert!(
        gossip
            .receive_item(&item(2, 1).encode(), None)
            .unwrap()
            .is_some()
    );
    // The inbox (length 1) is full until the node drains it.
    assert_eq!(
        gossip.receive_item(&item(3, 1).encode(), None),
        Err(GossipError::InboxFull)
    );
    assert_eq!(inbox.try_recv(), Ok(item(2, 1)));
    // Older or equal from the same boot: not new. A newer boot with seq 1: new.
    assert_eq!(gossip.receive_item(&item(2, 1).encode(), None), Ok(None));
    assert_eq!(gossip.receive_item(&item(1, 1).encode(), None), Ok(None));
    assert!(
        gossip
            .receive_item(&item(1, 2).encode(), None)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        gossip.receive_item(b"junk", None),
        Err(GossipError::Malformed(CodecError::LengthWrong {
            len: 4,
            expected: ANNOUNCEMENT_LEN
        }))
    );
}

#[test]
fn config_defaults_are_valid_and_nonsense_is_named() {
    let config = ClusterConfig::default();
    assert_eq!(config.validate(), Ok(()));
    let field_of = |config: ClusterConfig| match config.validate() {
        Err(ClusterError::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(
        field_of(ClusterConfig {
            probe_period_ms: 0,
            ..ClusterConfig::default()
        }),
        "probe_period_ms"
    );
    assert_eq!(
        field_of(ClusterConfig {
            gossip_fanout: 0,
            ..ClusterConfig::default()
        }),
        "gossip_fanout"
    );
    assert_eq!(
        field_of(ClusterConfig {
            probe_rtt_ms: 250,
            ..ClusterConfig::default()
        }),
        "probe_rtt_ms"
    );
    for bytes in [DATAGRAM_BYTES_MIN - 1, DATAGRAM_BYTES_MAX + 1] {
        assert_eq!(
            field_of(ClusterConfig {
                datagram_bytes_max: bytes,
                ..ClusterConfig::default()
            }),
            "datagram_bytes_max"
        );
    }
    assert!(matches!(
        ClusterNode::new(
            card(1, 1),
            ClusterConfig {
                epoch_rebroadcast_interval_ms: 0,
                ..ClusterConfig::default()
            },
            0
        ),
        Err(ClusterError::Config {
            field: "epoch_rebroadcast_interval_ms",
            ..
        })
    ));
}

#[test]
fn timer_queue_keeps_one_event_per_slot_and_the_earliest_repeat() {
    let mut timers = TimerQueue::default();
    let suspect = |incarnation| Timer::ChangeSuspectToDown {
        member_id: card(2, 1),
        incarnation,
        token: 0,
    };
    timers.schedule(0, Duration::from_millis(750), suspect(0));
    // foca repeats the same suspicion on every failed probe: the first deadline stays.
    timers.schedule(250_000, Duration::from_millis(750), suspect(0));
    assert_eq!((timers.len(), timers.next_due_us()), (1, Some(750_000)));
    // A new incarnation replaces it.
    timers.schedule(300_000, Duration::from_millis(750), suspect(1));
    assert_eq!((timers.len(), timers.next_due_us()), (1, Some(1_050_000)));
    // Other hosts and kinds get their own slots.
    timers.schedule(0, Duration::from_millis(5), Timer::ProbeRandomMember(0));
    timers.schedule(0, Duration::from_millis(9), Timer::RemoveDown(card(2, 1)));
    timers.schedule(0, Duration::from_millis(9), Timer::RemoveDown(card(3, 1)));
    timers.schedule(0, Duration::from_millis(9), Timer::RemoveDown(card(3, 2)));
    assert_eq!(timers.len(), 4);
    assert_eq!(timers.pop_due(4_999), None);
    assert_eq!(timers.pop_due(5_000), Some(Timer::ProbeRandomMember(0)));
    assert_eq!(timers.pop_due(9_000), Some(Timer::RemoveDown(card(2, 1))));
    assert_eq!(timers.pop_due(9_000), Some(Timer::RemoveDown(card(3, 2))));
    assert_eq!(timers.pop_due(9_000), None);
}

#[test]
fn a_map_leaves_out_hosts_past_the_shard_limit() {
    let big = |host| {
        HostCard::new(
            HostId(host),
            1,
            v4(host as u8, 1),
            v4(host as u8, 2),
            MEMBERSHIP_SHARDS_MAX as u16,
            1,
        )
        .unwrap()
    };
    let live: BTreeMap<HostId, HostCard> = [big(1), card(2, 1)]
        .into_iter()
        .map(|c| (c.host(), c))
        .collect();
    let map = ClusterMap::build(3, &live);
    assert_eq!(map.hosts().keys().copied().collect::<Vec<_>>(), [HostId(1)]);
    assert_eq!(map.hosts_left_out(), 1);
    assert_eq!(map.membership().shards().len(), MEMBERSHIP_SHARDS_MAX);
    assert_eq!(map.version().epoch, 3);
}

/// A SWIM gossip datagram from `src` to `dst` carrying `items` as custom broadcasts.
fn gossip_datagram(src: &HostCard, dst: &HostCard, items: &[MapAnnouncement]) -> Vec<u8> {
    let mut out = Vec::new();
    swim_envelope(&mut out);
    let header = Header {
        src: src.clone(),
        src_incarnation: 0,
        dst: dst.clone(),
        message: Message::Gossip,
    };
    CardCodec.encode_header(&header, &mut out).unwrap();
    out.put_u16(0);
    for item in items {
        out.put_u16(ANNOUNCEMENT_LEN as u16);
        out.extend_from_slice(&item.encode());
    }
    out
}

fn drain_maps(node: &mut ClusterNode) -> Vec<crate::shard::MapVersion> {
    let mut maps = Vec::new();
    while let Some(output) = node.poll_output() {
        if let ClusterOutput::MapChanged(map) = output {
            maps.push(map.version());
        }
    }
    maps
}

#[test]
fn epoch_rule_counts_past_the_highest_epoch_seen_and_adopts_equal_checksums() {
    let a = card(1, 1);
    let b = card(2, 1);
    let c = card(3, 1);
    let mut node = ClusterNode::new(a.clone(), ClusterConfig::default(), 5).unwrap();
    assert_eq!(node.map().version().epoch, 1);
    assert_eq!(
        node.map().hosts().keys().copied().collect::<Vec<_>>(),
        [HostId(1)]
    );
    assert_eq!(node.map().membership().shards().len(), 2);

    let announce = |seq, epoch, checksum| MapAnnouncement {
        host: HostId(2),
        generation: 1,
        seq,
        epoch,
        checksum,
    };
    // B appears, having announced epoch 41 of some other map: the change goes past it.
    node.handle_datagram(
        10,
        b.cluster_addr(),
        &gossip_datagram(&b, &a, &[announce(1, 41, 99)]),
    );
    let both = node.map().version();
    assert_eq!(both.epoch, 42);
    assert_eq!(node.map().hosts().len(), 2);
    assert_eq!(drain_maps(&mut node), [both]);

    // Same checksum, higher epoch: adopted, same hosts.
    node.handle_datagram(
        20,
        b.cluster_addr(),
        &gossip_datagram(&b, &a, &[announce(2, 50, both.checksum)]),
    );
    assert_eq!(node.map().version().epoch, 50);
    assert_eq!(node.map().hosts().len(), 2);
    assert_eq!(drain_maps(&mut node).len(), 1);

    // Same checksum, lower epoch: nothing. An older announcement of B: ignored even with a
    // higher epoch.
    node.handle_datagram(
        30,
        b.cluster_addr(),
        &gossip_datagram(&b, &a, &[announce(3, 45, both.checksum)]),
    );
    node.handle_datagram(
        31,
        b.cluster_addr(),
        &gossip_datagram(&b, &a, &[announce(1, 70, both.checksum)]),
    );
    assert_eq!(node.map().version().epoch, 50);
    assert!(drain_maps(&mut node).is_empty());

    // Another checksum at 60 is not adopted, but the next change counts past it.
    node.handle_datagram(
        40,
        b.cluster_addr(),
        &gossip_datagram(&b, &a, &[announce(4, 60, 12345)]),
    );
    assert_eq!(node.map().version().epoch, 50);
    node.handle_datagram(50, c.cluster_addr(), &gossip_datagram(&c, &a, &[]));
    assert_eq!(node.map().version().epoch, 61);
    assert_eq!(node.map().hosts().len(), 3);
    assert_eq!(node.stats().dropped_total(), 0);
}

#[test]
fn bad_datagrams_are_dropped_and_counted() {
    let a = card(1, 1);
    let mut node = ClusterNode::new(a.clone(), ClusterConfig::default(), 5).unwrap();
    let from = v4(9, 9);
    let mut bad_card_answer = encode_i_am(1, &card(2, 1));
    let cores_at = ENVELOPE_LEN + 8 + 24;
    bad_card_answer[cores_at..cores_at + 2].copy_from_slice(&0u16.to_le_bytes());
    let mut bad_item = gossip_datagram(&card(2, 1), &a, &[]);
    bad_item.extend_from_slice(&[0, 3, 1, 2, 3]);
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![0; 1401], DropReason::TooBig),
        (b"GET / HTTP/1.1".to_vec(), DropReason::NotHark),
        (b"hk\x07\x01".to_vec(), DropReason::VersionUnknown),
        (b"hk\x01\x63".to_vec(), DropReason::KindUnknown),
        (bad_card_answer, DropReason::Malformed),
        (b"hk\x01\x01\x00".to_vec(), DropReason::Malformed),
        (encode_i_am(12345, &card(2, 1)), DropReason::Unsolicited),
        (
            gossip_datagram(&card(1, 7), &a, &[]),
            DropReason::FromOurselves,
        ),
        (bad_item, DropReason::AnnouncementMalformed),
    ];
    for (data, reason) in cases {
        let before = node.stats().dropped(reason);
        node.handle_datagram(1, from, &data);
        assert_eq!(node.stats().dropped(reason), before + 1, "{reason:?}");
    }
    assert_eq!(node.stats().internal_errors, 0);

    node.leave(2);
    node.handle_datagram(3, from, &encode_who_are_you(1));
    assert_eq!(node.stats().dropped(DropReason::AfterLeave), 1);
    for reason in DropReason::ALL {
        assert!(!reason.name().is_empty());
    }
}

#[test]
fn who_are_you_is_answered_with_our_card() {
    let mut node = ClusterNode::new(card(1, 4), ClusterConfig::default(), 5).unwrap();
    node.handle_datagram(0, v4(9, 9), &encode_who_are_you(31));
    match node.poll_output() {
        Some(ClusterOutput::Send { to, data }) => {
            assert_eq!(to, v4(9, 9));
            assert_eq!(
                decode_datagram(&data),
                Ok(Datagram::IAm {
                    nonce: 31,
                    card: card(1, 4)
                })
            );
        }
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn join_skips_our_address_and_bounds_seeds_and_output() {
    let mut node = ClusterNode::new(card(1, 1), ClusterConfig::default(), 5).unwrap();
    let own = node.card().cluster_addr();
    node.join(0, &[own, v4(2, 7000), v4(2, 7000)]).unwrap();
    let sends: Vec<SocketAddr> = std::iter::from_fn(|| node.poll_output())
        .filter_map(|o| match o {
            ClusterOutput::Send { to, .. } => Some(to),
            ClusterOutput::MapChanged(_) => None,
        })
        .collect();
    assert_eq!(sends, [v4(2, 7000)]);
    assert_eq!(node.next_wake_us(), Some(1_000_000));

    let many: Vec<SocketAddr> = (0..JOIN_SEEDS_MAX as u16).map(|p| v4(3, p + 1)).collect();
    let too_many: Vec<SocketAddr> = (0..=JOIN_SEEDS_MAX as u16).map(|p| v4(3, p + 1)).collect();
    assert_eq!(
        node.join(0, &too_many),
        Err(ClusterError::SeedsTooMany {
            count: JOIN_SEEDS_MAX + 1,
            max: JOIN_SEEDS_MAX
        })
    );
    // A caller that never drains: the queue stops at its bound and counts the rest.
    let rounds = OUTPUT_QUEUE_MAX / JOIN_SEEDS_MAX + 1;
    for _ in 0..rounds {
        node.join(0, &many).unwrap();
    }
    let stats = node.stats();
    assert_eq!(
        stats.dropped(DropReason::OutputQueueFull),
        (rounds * JOIN_SEEDS_MAX - OUTPUT_QUEUE_MAX) as u64
    );
    assert_eq!(
        std::iter::from_fn(|| node.poll_output()).count(),
        OUTPUT_QUEUE_MAX
    );
}

#[test]
fn seeds_are_asked_again_while_no_peer_is_live() {
    let mut node = ClusterNode::new(card(1, 1), ClusterConfig::default(), 5).unwrap();
    node.join(0, &[v4(2, 7000)]).unwrap();
    assert_eq!(std::iter::from_fn(|| node.poll_output()).count(), 1);
    node.handle_timeout(999_999);
    assert_eq!(std::iter::from_fn(|| node.poll_output()).count(), 0);
    node.handle_timeout(1_000_000);
    let again: Vec<_> = std::iter::from_fn(|| node.poll_output()).collect();
    assert!(matches!(&again[..], [ClusterOutput::Send { to, .. }] if *to == v4(2, 7000)));
}
