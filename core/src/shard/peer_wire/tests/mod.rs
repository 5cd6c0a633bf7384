//! Tests of the peer link, by concern.

mod doc_examples;
mod handshake;
mod malformed;
mod round_trip;
mod strategies;
