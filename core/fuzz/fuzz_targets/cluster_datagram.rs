//! Fuzzes `ClusterNode::handle_datagram`: the membership node's parser of UDP datagrams from
//! anyone on the cluster port.
//!
//! The input is a sequence of datagrams, each `len u8 ‖ mode u8 ‖ bytes`. Mode 0 hands the
//! bytes over as they are (envelope, who-are-you, i-am, raw SWIM); mode 1 puts them after a
//! valid envelope and a SWIM header from a peer addressed to this node (the layout in
//! docs/cluster.md), so the fuzzer reaches foca's update list and the map announcements
//! that an attacker reaches by knowing one card. Between datagrams virtual time advances and
//! due timers run. Checks: no panic; every datagram sent fits `DATAGRAM_BYTES_MAX`; the
//! node's map always holds this host.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hark_core::HostId;
use hark_core::cluster::{ClusterConfig, ClusterNode, ClusterOutput, DATAGRAM_BYTES_MAX, HostCard};
use libfuzzer_sys::fuzz_target;

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
}

fn card(host: u16) -> HostCard {
    HostCard::new(HostId(host), 1, addr(host as u8, 7000), addr(host as u8, 7100), 2, 100)
        .expect("valid card")
}

/// A card in the documented little-endian layout.
fn put_card(out: &mut Vec<u8>, card: &HostCard) {
    out.extend_from_slice(&card.host().0.to_le_bytes());
    out.extend_from_slice(&card.generation().to_le_bytes());
    for addr in [card.cluster_addr(), card.client_addr()] {
        let SocketAddr::V4(v4) = addr else {
            unreachable!("the harness uses IPv4 cards")
        };
        out.push(4);
        out.extend_from_slice(&v4.ip().octets());
        out.extend_from_slice(&v4.port().to_le_bytes());
    }
    out.extend_from_slice(&card.cores().to_le_bytes());
    out.extend_from_slice(&card.weight_per_core().to_le_bytes());
}

fn drain(node: &mut ClusterNode) {
    while let Some(output) = node.poll_output() {
        match output {
            ClusterOutput::Send { data, .. } => {
                assert!(data.len() <= usize::from(DATAGRAM_BYTES_MAX));
            }
            ClusterOutput::MapChanged(map) => assert!(map.host(HostId(1)).is_some()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let me = card(1);
    let peer = card(2);
    let mut node = ClusterNode::new(me.clone(), ClusterConfig::default(), 7).expect("defaults");
    node.join(0, &[peer.cluster_addr()]).expect("one seed");
    drain(&mut node);
    let mut now_us = 0u64;
    let mut rest = data;
    while let [len, mode, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, after) = tail.split_at(len);
        rest = after;
        let datagram = if mode & 1 == 0 {
            body.to_vec()
        } else {
            let mut out = b"hk\x01\x01".to_vec();
            put_card(&mut out, &peer);
            out.extend_from_slice(&0u16.to_le_bytes());
            put_card(&mut out, &me);
            out.extend_from_slice(body);
            out
        };
        node.handle_datagram(now_us, peer.cluster_addr(), &datagram);
        drain(&mut node);
        now_us += u64::from(*mode >> 1) * 10_000;
        node.handle_timeout(now_us);
        drain(&mut node);
        assert!(node.map().host(HostId(1)).is_some());
    }
});
