//! The `hark` binary's exit codes and one-line errors: never a panic or a backtrace.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hark"))
        .args(args)
        // A panic would print a backtrace with this set: the checks below would see it.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the hark binary runs")
}

/// Asserts `output` failed with `code` and exactly one stderr line containing `needle`.
fn assert_one_line_error(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("hark: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tone-1s.opus")
}

/// A port nothing listens on: bound, then closed.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A data dir whose secret mints tokens (mode 600, as the relay writes it).
fn data_dir_with_secret() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("key 1 {}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

fn talk(file: &Path, relay: &str, data_dir: &Path) -> Output {
    hark(&[
        "talk",
        "--relay",
        relay,
        "--conv",
        "general",
        "--data-dir",
        data_dir.to_str().unwrap(),
        file.to_str().unwrap(),
    ])
}

#[test]
fn a_file_that_is_not_ogg_is_one_line() {
    let data = data_dir_with_secret();
    let file = data.path().join("notes.opus");
    std::fs::write(&file, b"this is plain text, not an Ogg stream\n").unwrap();
    let output = talk(&file, "127.0.0.1:1", data.path());
    assert_one_line_error(&output, 1, "notes.opus: not an Ogg file");
}

#[test]
fn a_truncated_ogg_file_is_one_line() {
    let data = data_dir_with_secret();
    let whole = std::fs::read(fixture()).unwrap();
    let file = data.path().join("cut.opus");
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    let output = talk(&file, "127.0.0.1:1", data.path());
    assert_one_line_error(&output, 1, "cut.opus: truncated");
}

#[test]
fn a_relay_that_is_down_is_one_line() {
    let data = data_dir_with_secret();
    let relay = format!("127.0.0.1:{}", closed_port());
    let output = talk(&fixture(), &relay, data.path());
    assert_one_line_error(
        &output,
        1,
        &format!("cannot connect to the relay at {relay}"),
    );
}

#[test]
fn bad_tokens_and_secrets_are_one_line() {
    let output = hark(&["token", "inspect", "not-a-token"]);
    assert_one_line_error(&output, 1, "not a hark token");

    let data = data_dir_with_secret();
    let secret = data.path().join("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = talk(&fixture(), "127.0.0.1:1", data.path());
    assert_one_line_error(&output, 1, "chmod 600");

    let missing = tempfile::tempdir().unwrap();
    let output = talk(&fixture(), "127.0.0.1:1", missing.path());
    assert_one_line_error(&output, 1, "secret");
}

#[test]
fn an_unknown_subcommand_is_a_usage_error() {
    let output = hark(&["shout"]);
    assert_one_line_error(&output, 2, "see hark --help");
    let output = hark(&["talk", "--conv", "general"]);
    assert_one_line_error(&output, 2, "see hark --help");
}

#[test]
fn a_minted_token_inspects_and_verifies_with_its_secret_only() {
    let data = data_dir_with_secret();
    let secret = data.path().join("secret");
    let minted = hark(&[
        "token",
        "mint",
        "--secret-file",
        secret.to_str().unwrap(),
        "--rights",
        "talk,listen",
        "--conv",
        "general",
        "--ttl",
        "15m",
        "--as",
        "carol",
    ]);
    assert_eq!(minted.status.code(), Some(0), "{minted:?}");
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();

    let inspected = hark(&[
        "token",
        "inspect",
        &token,
        "--secret-file",
        secret.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(inspected.status.code(), Some(0), "{inspected:?}");
    let value: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(value["subject"], "carol");
    assert_eq!(value["rights"], "talk,listen");
    assert_eq!(value["scope"], "conversation general");
    assert_eq!(value["verified"], "valid");
    assert_eq!(value["expired"], false);

    let other = data_dir_with_secret();
    let other_secret = other.path().join("secret");
    std::fs::write(&other_secret, format!("key 1 {}\n", "cd".repeat(32))).unwrap();
    let inspected = hark(&[
        "token",
        "inspect",
        &token,
        "--secret-file",
        other_secret.to_str().unwrap(),
    ]);
    let text = String::from_utf8(inspected.stdout).unwrap();
    assert!(text.contains("verified: invalid"), "{text}");
}

#[test]
fn ring_prints_shares_owner_and_keys_moved() {
    let output = hark(&[
        "ring",
        "--hosts",
        "1:0-1,2:0-1",
        "--conv",
        "general",
        "--add",
        "3:0-3",
        "--keys",
        "20000",
    ]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{text}");
    for shard in ["1/0", "1/1", "2/0", "2/1"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(shard))
            .unwrap_or_else(|| panic!("{shard} in {text}"));
        assert!(row.contains("25.000%"), "weight share of {shard}: {row}");
    }
    assert!(text.contains("conversation \"general\""), "{text}");
    assert!(text.contains("owner "), "{text}");
    assert!(
        text.contains("keys moved: ") && text.contains("expected from weights 50.000%"),
        "{text}"
    );
    let output = hark(&["ring", "--hosts", "1:0-1,1:2"]);
    assert_one_line_error(&output, 2, "listed more than once");
    let output = hark(&["ring", "--hosts", "1:zero"]);
    assert_one_line_error(&output, 2, "host spec");
}
