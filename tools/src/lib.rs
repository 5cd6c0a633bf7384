//! hark-tools: the library half of the `hark` command line.
//!
//! What it is: [`client`], a blocking client of hark's wire protocol over a plain
//! `std::net::TcpStream`, used by the `hark` CLI and by the relay's integration tests. What it
//! is not: an async or pooled client for applications, or a relay; it holds one connection and
//! no state beyond it.
//!
//! ```text
//!   Client::send(&Request) ──► encode_request ──► TcpStream::write_all ──► relay
//!   relay ──► TcpStream::read ──► BytesMut ──► Decoder::decode_event ──► Client::next_event
//! ```

pub mod client;
