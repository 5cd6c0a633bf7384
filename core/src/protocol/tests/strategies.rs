//! proptest strategies for every request and event.

use bytes::Bytes;
use proptest::prelude::*;

use crate::ids::{ConvName, HostId, MsgId};
use crate::protocol::*;

fn msg_id() -> impl Strategy<Value = MsgId> {
    any::<u128>().prop_map(MsgId)
}

fn conv_name() -> impl Strategy<Value = ConvName> {
    // Any non-control character, including multi-byte ones, up to the byte limit.
    "[^\\x00-\\x1f\\x7f]{1,60}".prop_filter_map("name over 255 bytes", |s| ConvName::new(s).ok())
}

fn text(max_chars: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max_chars).prop_map(|c| c.into_iter().collect())
}

fn blob(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn listen_from() -> impl Strategy<Value = ListenFrom> {
    prop_oneof![
        Just(ListenFrom::Live),
        msg_id().prop_map(ListenFrom::Message),
        any::<u64>().prop_map(ListenFrom::Since),
    ]
}

pub(crate) fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), blob(300), text(60)).prop_map(|(version, token, client_name)| {
            Request::Hello {
                version,
                token,
                client_name,
            }
        }),
        (
            any::<u32>(),
            conv_name(),
            blob(40),
            proptest::option::of(msg_id())
        )
            .prop_map(|(stream, conversation, codec, resume)| Request::TalkStart {
                stream,
                conversation,
                codec,
                resume,
            }),
        (any::<u32>(), any::<u32>(), blob(300)).prop_map(|(stream, seq, payload)| {
            Request::TalkFrame {
                stream,
                seq,
                payload,
            }
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(stream, frame_count)| Request::TalkEnd {
            stream,
            frame_count
        }),
        (any::<u32>(), conv_name(), listen_from()).prop_map(|(sub, conversation, from)| {
            Request::Listen {
                sub,
                conversation,
                from,
            }
        }),
        any::<u32>().prop_map(|sub| Request::Unlisten { sub }),
        (any::<u32>(), conv_name(), any::<u64>(), any::<u16>()).prop_map(
            |(request, conversation, since_us, limit)| Request::History {
                request,
                conversation,
                since_us,
                limit,
            }
        ),
        any::<u64>().prop_map(|nonce| Request::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Request::Pong { nonce }),
    ]
}

fn outcome() -> impl Strategy<Value = MessageOutcome> {
    prop_oneof![
        Just(MessageOutcome::Complete),
        Just(MessageOutcome::Truncated)
    ]
}

fn limits() -> impl Strategy<Value = SessionLimits> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
    )
        .prop_map(|(a, b, c, d, e, f, g)| SessionLimits {
            frame_len_max: a,
            audio_payload_len_max: b,
            frames_per_second_max: c,
            talk_streams_max: d,
            subs_max: e,
            history_limit_max: f,
            idle_timeout_ms: g,
        })
}

fn history_entry() -> impl Strategy<Value = HistoryEntry> {
    (msg_id(), text(20), any::<u32>(), any::<u32>(), outcome()).prop_map(
        |(msg_id, sender, duration_ms, frame_count, outcome)| HistoryEntry {
            msg_id,
            sender,
            duration_ms,
            frame_count,
            outcome,
        },
    )
}

fn error_subject() -> impl Strategy<Value = ErrorSubject> {
    prop_oneof![
        Just(ErrorSubject::Connection),
        any::<u32>().prop_map(ErrorSubject::TalkStream),
        any::<u32>().prop_map(ErrorSubject::Sub),
        any::<u32>().prop_map(ErrorSubject::HistoryRequest),
    ]
}

pub(crate) fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            any::<u64>(),
            limits()
        )
            .prop_map(|(version, host, session, server_time_us, limits)| {
                Event::HelloAccepted {
                    version,
                    host: HostId(host),
                    session,
                    server_time_us,
                    limits,
                }
            }),
        (any::<u32>(), msg_id(), any::<u32>()).prop_map(|(stream, msg_id, next_seq)| {
            Event::TalkStarted {
                stream,
                msg_id,
                next_seq,
            }
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(stream, frames_stored)| Event::Stored {
            stream,
            frames_stored
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(stream, frame_count)| Event::TalkEnded {
            stream,
            frame_count
        }),
        any::<u32>().prop_map(|sub| Event::Listening { sub }),
        any::<u32>().prop_map(|sub| Event::Unlistened { sub }),
        (
            any::<u32>(),
            any::<u32>(),
            msg_id(),
            conv_name(),
            text(30),
            blob(40)
        )
            .prop_map(|(sub, stream, msg_id, conversation, sender, codec)| {
                Event::MessageStarted {
                    sub,
                    stream,
                    msg_id,
                    conversation,
                    sender,
                    codec,
                }
            }),
        (any::<u32>(), any::<u32>(), any::<bool>(), blob(300)).prop_map(
            |(stream, seq, live, payload)| Event::Frame {
                stream,
                seq,
                kind: if live {
                    FrameKind::Live
                } else {
                    FrameKind::Replay
                },
                payload,
            }
        ),
        (any::<u32>(), any::<u32>(), outcome()).prop_map(|(stream, frame_count, outcome)| {
            Event::MessageEnded {
                stream,
                frame_count,
                outcome,
            }
        }),
        any::<u32>().prop_map(|sub| Event::CaughtUp { sub }),
        (
            any::<u32>(),
            proptest::collection::vec(history_entry(), 0..20),
            any::<bool>()
        )
            .prop_map(|(request, entries, more)| Event::HistoryPage {
                request,
                entries,
                more,
            }),
        any::<u64>().prop_map(|nonce| Event::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Event::Pong { nonce }),
        (any::<u16>(), text(40)).prop_map(|(reason, reconnect_to)| Event::GoAway {
            reason: GoAwayReason(reason),
            reconnect_to,
        }),
        (any::<u16>(), error_subject(), text(60)).prop_map(|(code, about, text)| Event::Error {
            code: ErrorCode(code),
            about,
            text,
        }),
    ]
}
