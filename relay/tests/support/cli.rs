//! Helpers for the `hark` CLI's end-to-end tests: argument structs, a line channel as the
//!
//! Not a module of support/mod.rs: test files include it with `#[path = "support/cli.rs"] mod cli_support;`.
//! commands' output, and Ogg Opus comparisons.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use hark_tools::cli::listen::ListenArgs;
use hark_tools::cli::talk::TalkArgs;
use hark_tools::opus::OpusFile;

use crate::support::WAIT;
use crate::support::process::RelayProcess;

/// The committed opusenc fixture (one second of a 440 Hz tone, mono).
pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tools/tests/fixtures/tone-1s.opus"
);

/// Set by CI: a missing opusdec fails the test instead of skipping its check.
pub const REQUIRE_OPUS_TOOLS_ENV: &str = "HARK_REQUIRE_OPUS_TOOLS";

/// A writer that sends each complete line to a channel, so a test waits for "listening" or a
/// stored ack instead of sleeping.
#[derive(Debug)]
pub struct LineWriter {
    partial: Vec<u8>,
    lines: Sender<String>,
}

impl LineWriter {
    /// A writer and the receiver of its lines.
    pub fn new() -> (Self, Receiver<String>) {
        let (lines, receiver) = channel();
        (
            Self {
                partial: Vec::new(),
                lines,
            },
            receiver,
        )
    }
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            // A receiver that is gone only means nobody waits for lines any more.
            let _ = self
                .lines
                .send(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits for a line containing `needle`, failing after [`WAIT`].
pub fn wait_for_line(lines: &Receiver<String>, needle: &str) -> String {
    loop {
        match lines.recv_timeout(WAIT) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(error) => panic!("no line with {needle:?}: {error}"),
        }
    }
}

/// `hark talk` arguments for `relay`, token minted from its data dir.
pub fn talk_args(relay: &RelayProcess, conv: &str, file: &Path, fast: bool) -> TalkArgs {
    TalkArgs {
        relay: vec![relay.addr().to_string()],
        conv: conv.to_owned(),
        file: file.to_path_buf(),
        fast,
        json: true,
        token: None,
        data_dir: relay.data_dir().to_path_buf(),
        subject: Some("cli-test".into()),
        reconnect_patience: Duration::from_secs(30),
    }
}

/// `hark listen` arguments for `relay` writing into `out_dir`, stopping after `messages`.
pub fn listen_args(
    relay: &RelayProcess,
    conv: &str,
    from: &str,
    out_dir: &Path,
    messages: u64,
) -> ListenArgs {
    ListenArgs {
        relay: vec![relay.addr().to_string()],
        conv: conv.to_owned(),
        from: from.to_owned(),
        out_dir: out_dir.to_path_buf(),
        messages: Some(messages),
        idle_exit: Some(Duration::from_secs(30)),
        json: true,
        token: None,
        data_dir: relay.data_dir().to_path_buf(),
        subject: Some("cli-test".into()),
        reconnect_patience: Duration::from_secs(30),
    }
}

/// Asserts the two files carry the same OpusHead and the same packets, bit for bit.
pub fn assert_same_packets(sent: &Path, heard: &Path) {
    let sent = OpusFile::read(sent).unwrap_or_else(|error| panic!("input: {error}"));
    let heard = OpusFile::read(heard).unwrap_or_else(|error| panic!("output: {error}"));
    assert_eq!(
        sent.head_bytes, heard.head_bytes,
        "the OpusHead travels unchanged"
    );
    assert_eq!(sent.packets.len(), heard.packets.len(), "packet count");
    for (index, (a, b)) in sent.packets.iter().zip(&heard.packets).enumerate() {
        assert_eq!(a, b, "packet {index} differs");
    }
}

/// Decodes `file` with opusdec when it is installed (required when CI says so).
pub fn check_opusdec(file: &Path, scratch: &Path) {
    let wav: PathBuf = scratch.join("decoded.wav");
    match Command::new("opusdec")
        .arg("--quiet")
        .arg(file)
        .arg(&wav)
        .output()
    {
        Ok(output) => assert!(
            output.status.success(),
            "opusdec failed on {}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os(REQUIRE_OPUS_TOOLS_ENV).is_none_or(|value| value != "1"),
                "{REQUIRE_OPUS_TOOLS_ENV}=1 but opusdec is not installed"
            );
            eprintln!("skipped: opusdec not installed");
        }
        Err(error) => panic!("cannot run opusdec: {error}"),
    }
}

/// Asserts `heard`'s packets are the first packets of `sent`, bit for bit (a message the relay
/// ended truncated holds its stored frames only).
pub fn assert_packet_prefix(sent: &Path, heard: &Path) {
    let sent = OpusFile::read(sent).unwrap_or_else(|error| panic!("input: {error}"));
    let heard = OpusFile::read(heard).unwrap_or_else(|error| panic!("output: {error}"));
    assert_eq!(
        sent.head_bytes, heard.head_bytes,
        "the OpusHead travels unchanged"
    );
    assert!(
        heard.packets.len() <= sent.packets.len(),
        "more packets heard than sent"
    );
    for (index, (a, b)) in sent.packets.iter().zip(&heard.packets).enumerate() {
        assert_eq!(a, b, "packet {index} differs");
    }
}
