//! The wire side of a scripted relay for the CLI's loopback tests: read the client's next
//! request, send it an event.

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;
use hark_core::protocol::{Decoder, Event, Request, encode_event};

/// Reads requests from `socket` into `input` until one decodes.
pub(crate) fn next_request(
    socket: &mut TcpStream,
    decoder: &mut Decoder,
    input: &mut BytesMut,
) -> Request {
    let mut chunk = [0u8; 4096];
    // Bounded by the client's requests; a closed socket or the read timeout fails the test.
    loop {
        if let Some(request) = decoder.decode_request(input).expect("valid requests") {
            return request;
        }
        let n = socket.read(&mut chunk).expect("the client stays connected");
        assert!(n > 0, "the client closed the connection");
        input.extend_from_slice(&chunk[..n]);
    }
}

/// Sends one event to the client.
pub(crate) fn send(socket: &mut TcpStream, event: &Event) {
    socket
        .write_all(&encode_event(event).expect("a valid event"))
        .expect("the client reads");
}
