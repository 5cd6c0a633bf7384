//! hark-tools: the library half of the `hark` command line.
//!
//! What it is: [`client`], a blocking client of hark's wire protocol over a plain
//! `std::net::TcpStream` (used by the relay's integration tests); [`opus`], Ogg Opus files in
//! and out; and [`cli`], every `hark` command as a function with an output writer, which the
//! `hark` binary's `main` calls and tests call directly. What it is not: an async or pooled
//! client for applications (embed `hark_core::client::ClientSession` for that), or a relay.
//!
//! ```text
//!   hark talk FILE ──► opus::OpusFile ──► ClientSession (hark-core) ──► TcpStream ──► relay
//!   relay ──► TcpStream ──► ClientSession ──► opus::OpusFileWriter ──► DIR/MSGID.opus
//! ```

pub mod cli;
pub mod client;
pub mod opus;
