//! Bad input: garbage, oversized lengths, requests before hello, bad or expired tokens, talk
//! outside a token's scope, a talker faster than its rate. Each gets its error code and,
//! where the protocol says so, a closed connection; the bystanders notice nothing.

mod support;

use bytes::Bytes;
use hark_core::protocol::{
    ErrorCode, ErrorSubject, Event, ListenFrom, MessageOutcome, Request, encode_request,
};
use hark_core::token::{Grant, KeyId, Keyring, Rights, Scope, Subject};
use hark_tools::client::ClientError;

use support::bystanders::Bystanders;
use support::heard::Heard;
use support::names::{conv, names_on_distinct_shards};
use support::process::{CLIENT_NAME, RelayProcess, now_s};
use support::talk::{
    OPUS_HEAD, SplitMix64, TalkProgress, expect_closed, expect_error, expect_pong, payloads,
    read_talk_until_error, send_frames,
};
use support::{TWO_SHARDS, WAIT, args};

/// Sends `bytes` on a fresh connection (after a hello when `hello` is given) and expects
/// `code` about the connection, then the close.
fn expect_refused(relay: &RelayProcess, hello: Option<&str>, bytes: &[u8], code: ErrorCode) {
    let mut client = match hello {
        Some(token) => relay.session_with(token).0,
        None => relay.connect(),
    };
    client.send_raw(bytes).expect("bytes sent");
    expect_error(&mut client, code, ErrorSubject::Connection);
    expect_closed(&mut client);
}

/// A hello with `token` is refused with `code`, and the connection closes.
fn expect_hello_refused(relay: &RelayProcess, token: &str, code: ErrorCode) {
    let mut client = relay.connect();
    match client.hello(token, CLIENT_NAME) {
        Err(ClientError::Refused { code: got, text }) => {
            assert_eq!(got, code, "token {token:?}: {text}");
        }
        other => panic!("token {token:?}: expected refusal {code}, got {other:?}"),
    }
    expect_closed(&mut client);
}

fn encoded(request: &Request) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    encode_request(request, &mut buf).expect("test requests are within limits");
    buf.to_vec()
}

#[test]
fn garbage_bytes_get_their_error_code_and_a_close() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS]));
    let mut bystanders = Bystanders::join(&relay);
    let token = relay.token_for_all("garbage");

    // Someone speaks HTTP to the port: "GET " is a length far above the limit.
    expect_refused(
        &relay,
        None,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ErrorCode::FRAME_TOO_LONG,
    );
    // Seeded noise in a well-formed frame with a reserved type byte.
    let mut random = SplitMix64::new(0xbad);
    let mut noise = vec![60, 0, 0, 0, 0x80 | (random.next_u64() as u8)];
    noise.extend((0..59).map(|_| random.next_u64() as u8));
    expect_refused(&relay, None, &noise, ErrorCode::UNKNOWN_TYPE);
    expect_refused(&relay, Some(&token), &noise, ErrorCode::UNKNOWN_TYPE);
    // An event type sent as a request (a misdirected frame).
    expect_refused(
        &relay,
        Some(&token),
        &[9, 0, 0, 0, 0x4c, 1, 2, 3, 4, 5, 6, 7, 8],
        ErrorCode::UNKNOWN_TYPE,
    );
    // A listen whose `from` tag is undefined; a hello cut short; a ping with trailing bytes.
    let mut listen = encoded(&Request::Listen {
        sub: 1,
        conversation: conv("general"),
        from: ListenFrom::Live,
    });
    *listen.last_mut().expect("a listen has a body") = 9;
    expect_refused(&relay, Some(&token), &listen, ErrorCode::MALFORMED);
    expect_refused(
        &relay,
        None,
        &[3, 0, 0, 0, 0x01, 1, 0],
        ErrorCode::MALFORMED,
    );
    expect_refused(
        &relay,
        Some(&token),
        &[10, 0, 0, 0, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        ErrorCode::MALFORMED,
    );
    bystanders.check();
}

#[test]
fn an_oversized_or_empty_length_is_refused_before_its_body_arrives() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS, &["--frame-len-max", "8192"]]));
    let mut bystanders = Bystanders::join(&relay);
    let (_, info) = relay.session_with(&relay.token_for_all("probe"));
    assert_eq!(
        info.limits.frame_len_max, 8192,
        "the relay announces its limit"
    );
    let token = relay.token_for_all("oversized");

    // Only the length prefix and the type are sent: the relay must not wait for the body.
    let over = 8193u32.to_le_bytes();
    expect_refused(
        &relay,
        Some(&token),
        &[over[0], over[1], over[2], over[3], 0x03],
        ErrorCode::FRAME_TOO_LONG,
    );
    let far_over = (64 * 1024 + 1u32).to_le_bytes();
    expect_refused(&relay, None, &far_over, ErrorCode::FRAME_TOO_LONG);
    expect_refused(
        &relay,
        Some(&token),
        &[0, 0, 0, 0],
        ErrorCode::FRAME_TOO_LONG,
    );
    bystanders.check();
}

#[test]
fn a_request_before_hello_is_refused_with_hello_required() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS]));
    let mut bystanders = Bystanders::join(&relay);
    let general = conv("general");
    for request in [
        Request::TalkFrame {
            stream: 1,
            seq: 0,
            payload: Bytes::from_static(b"early"),
        },
        Request::TalkStart {
            stream: 1,
            conversation: general.clone(),
            codec: Bytes::new(),
            resume: None,
        },
        Request::Listen {
            sub: 1,
            conversation: general.clone(),
            from: ListenFrom::Live,
        },
        Request::Ping { nonce: 1 },
    ] {
        expect_refused(&relay, None, &encoded(&request), ErrorCode::HELLO_REQUIRED);
    }
    // A second hello on an open session.
    let token = relay.token_for_all("twice");
    let hello = encoded(&Request::Hello {
        version: 1,
        token: Bytes::copy_from_slice(token.as_bytes()),
        client_name: CLIENT_NAME.to_owned(),
    });
    expect_refused(&relay, Some(&token), &hello, ErrorCode::UNEXPECTED_REQUEST);
    // A version the relay does not speak.
    let version_zero = encoded(&Request::Hello {
        version: 0,
        token: Bytes::copy_from_slice(token.as_bytes()),
        client_name: CLIENT_NAME.to_owned(),
    });
    expect_refused(&relay, None, &version_zero, ErrorCode::UNSUPPORTED_VERSION);
    bystanders.check();
}

#[test]
fn a_bad_or_expired_token_is_refused_and_closed() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS]));
    let mut bystanders = Bystanders::join(&relay);
    let keyring = relay.keyring();
    let grant = |expires_at_s| Grant {
        subject: Subject::new("mallory").expect("valid"),
        rights: Rights::ALL,
        scope: Scope::Conversation(conv("general")),
        expires_at_s,
        key_id: keyring.minting_key_id(),
    };

    expect_hello_refused(&relay, "", ErrorCode::TOKEN_MISSING);
    expect_hello_refused(&relay, "not a token", ErrorCode::TOKEN_INVALID);
    expect_hello_refused(&relay, "hk1.AAAA", ErrorCode::TOKEN_INVALID);
    // Signed by another secret, with the relay's key id and with an unknown one.
    let stranger = Keyring::generate(keyring.minting_key_id(), [7; 32]);
    let forged = stranger.mint(&grant(now_s() + 3600)).expect("mint");
    expect_hello_refused(&relay, &forged, ErrorCode::TOKEN_INVALID);
    let unknown_key = Keyring::generate(KeyId(keyring.minting_key_id().0 ^ 0xffff), [8; 32]);
    let mut unknown_grant = grant(now_s() + 3600);
    unknown_grant.key_id = unknown_key.minting_key_id();
    let unknown = unknown_key.mint(&unknown_grant).expect("mint");
    expect_hello_refused(&relay, &unknown, ErrorCode::TOKEN_INVALID);
    // A valid token with one character changed.
    let valid = relay.mint(&grant(now_s() + 3600));
    let mut tampered = valid.clone().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("base64url stays ASCII");
    expect_hello_refused(&relay, &tampered, ErrorCode::TOKEN_INVALID);
    // Expired a minute ago.
    let expired = relay.mint(&grant(now_s() - 60));
    expect_hello_refused(&relay, &expired, ErrorCode::TOKEN_EXPIRED);
    // The untouched token works.
    relay.session_with(&valid);
    bystanders.check();
}

#[test]
fn talk_outside_the_tokens_scope_or_rights_is_refused_and_the_session_goes_on() {
    let relay = RelayProcess::start(&args(&[TWO_SHARDS]));
    let mut bystanders = Bystanders::join(&relay);
    let (allowed, forbidden) = names_on_distinct_shards("team");
    let token = relay.token_for("scoped", "talk,listen", &allowed);
    let (mut client, _) = relay.session_with(&token);

    client
        .talk_start(1, &forbidden, OPUS_HEAD, None)
        .expect("talk_start sent");
    expect_error(
        &mut client,
        ErrorCode::OUT_OF_SCOPE,
        ErrorSubject::TalkStream(1),
    );
    // The refused handle's frames and end are dropped silently.
    send_frames(&mut client, 1, 0, &payloads(1, 3));
    client.talk_end(1, 3).expect("talk_end sent");
    expect_pong(&mut client, 1);
    client
        .listen(2, &forbidden, ListenFrom::Live)
        .expect("listen sent");
    expect_error(&mut client, ErrorCode::OUT_OF_SCOPE, ErrorSubject::Sub(2));
    client.history(3, &allowed, 0, 10).expect("history sent");
    expect_error(
        &mut client,
        ErrorCode::RIGHT_MISSING,
        ErrorSubject::HistoryRequest(3),
    );
    // In scope it works.
    client
        .talk_start(4, &allowed, OPUS_HEAD, None)
        .expect("talk_start sent");
    let mut progress = TalkProgress::default();
    progress
        .record(4, client.next_event(WAIT).expect("talk_started"))
        .expect("talk_started");

    let (mut listen_only, _) = relay.session_with(&relay.token_for("ears", "listen", &allowed));
    listen_only
        .talk_start(1, &allowed, OPUS_HEAD, None)
        .expect("talk_start sent");
    expect_error(
        &mut listen_only,
        ErrorCode::RIGHT_MISSING,
        ErrorSubject::TalkStream(1),
    );
    expect_pong(&mut listen_only, 2);

    // Nothing was talked into the forbidden conversation.
    let mut auditor = relay.session("auditor");
    auditor.history(1, &forbidden, 0, 10).expect("history sent");
    match auditor.next_event(WAIT) {
        Ok(Event::HistoryPage {
            request: 1,
            entries,
            more: false,
        }) => assert!(entries.is_empty(), "{entries:?}"),
        other => panic!("expected an empty page, got {other:?}"),
    }
    bystanders.check();
}

#[test]
fn a_talker_faster_than_its_rate_is_cut_off_truncated_and_others_go_on() {
    let relay = RelayProcess::start(&args(&[
        TWO_SHARDS,
        &[
            "--talk-frames-per-second-max",
            "50",
            "--talk-burst-frames",
            "10",
        ],
    ]));
    let mut bystanders = Bystanders::join(&relay);
    let (conversation, _) = names_on_distinct_shards("rate");
    let mut listener = relay.session("listener");
    let mut heard = Heard::new();
    listener
        .listen(1, &conversation, ListenFrom::Live)
        .expect("listen sent");
    heard.read_until(&mut listener, WAIT, "listen", |h| h.is_live(1));

    let (mut talker, info) = relay.session_with(&relay.token_for_all("talker"));
    assert_eq!(info.limits.frames_per_second_max, 50);
    let sent = payloads(3, 40);
    talker
        .talk_start(1, &conversation, OPUS_HEAD, None)
        .expect("talk_start sent");
    // 40 frames at once: 10 fit the burst, the rest come far faster than 50 per second.
    send_frames(&mut talker, 1, 0, &sent);
    let mut progress = TalkProgress::default();
    read_talk_until_error(&mut talker, 1, &mut progress, ErrorCode::RATE_LIMITED);
    let msg_id = progress.msg_id();

    heard.read_until(&mut listener, WAIT, "the truncated message", |h| {
        h.has_ended(1, msg_id)
    });
    let message = heard.message(1, msg_id);
    let count = message.frames.len();
    assert!(
        (10..40).contains(&count),
        "{count} frames passed a burst of 10 at 50 per second"
    );
    assert_eq!(message.payloads(), sent[..count].to_vec());
    assert_eq!(message.end, Some((count as u32, MessageOutcome::Truncated)));

    // The talker's connection stays open; only its stream was ended. Events about the ended
    // stream (acks, the frames it sent after the cut reported once) may still come first.
    talker.ping(9).expect("ping sent");
    loop {
        match talker.next_event(WAIT).expect("an event") {
            Event::Pong { nonce: 9 } => break,
            Event::Stored { stream: 1, .. } | Event::TalkEnded { stream: 1, .. } => {}
            Event::Error {
                code: ErrorCode::UNKNOWN_STREAM,
                about: ErrorSubject::TalkStream(1),
                ..
            } => {}
            other => panic!("expected the pong, got {other:?}"),
        }
    }
    expect_pong(&mut listener, 10);
    bystanders.check();
}
