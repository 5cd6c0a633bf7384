//! The hex examples of docs/protocol.md, produced by the real encoder: if the doc and the
//! encoder ever disagree, this test fails and prints the bytes the doc must show.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::ids::{ConvName, MsgId, ShardId};

const PROTOCOL_DOC: &str = include_str!("../../../docs/protocol.md");

/// A minimal OpusHead (RFC 7845): mono, pre-skip 312, 48 kHz, no gain, mapping family 0.
const OPUS_HEAD: [u8; 19] = [
    b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 1, 1, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0,
];

/// 2026-01-01T00:00:00Z in µs since the Unix epoch.
const NEW_YEAR_2026_US: u64 = 1_767_225_600_000_000;

fn general() -> ConvName {
    ConvName::new("general").expect("a valid literal name")
}

/// Each example: its title in the doc and the message it shows.
fn examples() -> Vec<(&'static str, Bytes)> {
    let request = |r: Request| {
        let mut buf = BytesMut::new();
        encode_request(&r, &mut buf).expect("the examples are within every limit");
        buf.freeze()
    };
    let event = |e: Event| encode_event(&e).expect("the examples are within every limit");
    vec![
        (
            "hello",
            request(Request::Hello {
                version: PROTOCOL_VERSION,
                token: Bytes::from_static(b"dev"),
                client_name: "hark-cli/0.1".to_owned(),
            }),
        ),
        (
            "talk start",
            request(Request::TalkStart {
                stream: 1,
                conversation: general(),
                codec: Bytes::from_static(&OPUS_HEAD),
                resume: None,
            }),
        ),
        (
            "talk frame",
            request(Request::TalkFrame {
                stream: 1,
                seq: 0,
                payload: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
            }),
        ),
        (
            "listen",
            request(Request::Listen {
                sub: 2,
                conversation: general(),
                from: ListenFrom::Since(NEW_YEAR_2026_US),
            }),
        ),
        (
            "talk started",
            event(Event::TalkStarted {
                stream: 1,
                msg_id: MsgId::from_parts(NEW_YEAR_2026_US, ShardId::new(1, 0), 0),
                next_seq: 0,
            }),
        ),
        (
            "frame (live)",
            event(Event::Frame {
                stream: 9,
                seq: 0,
                kind: FrameKind::Live,
                payload: Bytes::from_static(&[0xfc, 0xff, 0xfe]),
            }),
        ),
    ]
}

/// Lines of 16 lowercase hex bytes separated by spaces.
fn hex_lines(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn doc_hex_examples_match_the_encoder() {
    let mut stale = Vec::new();
    for (title, wire) in examples() {
        let block = format!("```text\n{}\n```", hex_lines(&wire));
        if !PROTOCOL_DOC.contains(&block) {
            stale.push(format!("{title}:\n{block}"));
        }
    }
    assert!(
        stale.is_empty(),
        "docs/protocol.md must show these blocks:\n\n{}",
        stale.join("\n\n")
    );
}

#[test]
fn doc_hex_examples_decode_back() {
    let mut decoder = Decoder::new();
    for (title, wire) in examples() {
        let mut buf = BytesMut::from(&wire[..]);
        let is_event = !matches!(title, "hello" | "talk start" | "talk frame" | "listen");
        let decoded_one = if is_event {
            decoder.decode_event(&mut buf).map(|e| e.is_some())
        } else {
            decoder.decode_request(&mut buf).map(|r| r.is_some())
        };
        assert_eq!(decoded_one, Ok(true), "{title}");
        assert!(buf.is_empty(), "{title}");
    }
}

#[test]
fn doc_error_table_matches_the_code_table() {
    for code in ErrorCode::KNOWN {
        let name = code.name().expect("known codes have names");
        let closes = if code.closes_connection() {
            "yes"
        } else {
            "no"
        };
        let row_start = format!("| {} | `{name}` |", code.0);
        let row = PROTOCOL_DOC
            .lines()
            .find(|line| line.starts_with(&row_start))
            .unwrap_or_else(|| panic!("docs/protocol.md has no error table row {row_start}"));
        assert!(
            row.ends_with(&format!("| {closes} |")),
            "docs/protocol.md row for {name} must say the relay closes: {closes}"
        );
    }
    let documented_rows = PROTOCOL_DOC
        .lines()
        .filter(|line| {
            line.starts_with("| ") && line.contains(" | `") && {
                let number = line[2..].split(' ').next().unwrap_or("");
                number.parse::<u16>().is_ok()
            }
        })
        .count();
    assert_eq!(
        documented_rows,
        ErrorCode::KNOWN.len(),
        "no undocumented or extra codes"
    );
}
