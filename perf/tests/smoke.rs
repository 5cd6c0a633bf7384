//! Smoke test: a short `hark-perf run` against a real hark-relay. It asserts that nothing is
//! lost or duplicated and that the reports are well formed, never a timing (the machine is
//! shared and noisy).
//!
//! The relay binary is not part of this package: it is looked up next to the test executable's
//! directory (`target/<profile>/hark-relay`), which `cargo test --workspace` builds first. Run
//! `cargo build -p hark-relay` before `cargo test -p hark-perf`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Longest wait for the relay's listening line (a debug relay on a loaded machine).
const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// What the relay prints once every shard accepts.
const LISTENING_PREFIX: &str = "hark-relay listening ";

/// A relay process, killed and reaped when dropped.
struct Relay {
    child: Child,
    client_addr: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relay_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/smoke-… → target/<profile>/hark-relay
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("hark-relay"))
        .expect("the test executable lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p hark-relay` first (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

fn start_relay(data_dir: &std::path::Path) -> Relay {
    let mut child = Command::new(relay_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--cores",
            "0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("hark-relay starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut relay = Relay {
        child,
        client_addr: String::new(),
    };
    loop {
        let line = lines_rx
            .recv_timeout(STARTUP_WAIT)
            .expect("hark-relay prints its listening line");
        if let Some(fields) = line.strip_prefix(LISTENING_PREFIX) {
            relay.client_addr = fields
                .split_whitespace()
                .find_map(|field| field.strip_prefix("client="))
                .expect("the listening line names the client address")
                .to_owned();
            return relay;
        }
    }
}

#[test]
fn a_short_run_loses_nothing_and_reports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("relay");
    let relay = start_relay(&data_dir);
    let json_path = dir.path().join("report.json");
    let html_path = dir.path().join("report.html");
    let output = Command::new(env!("CARGO_BIN_EXE_hark-perf"))
        .args(["run", "--relay", &relay.client_addr])
        .args([
            "--conversations",
            "6",
            "--listeners",
            "2",
            "--subs-per-connection",
            "3",
        ])
        .args(["--duration", "2", "--message-frames", "40", "--quiet"])
        // A loaded CI machine may starve the generator now and then; that is not what this
        // test is about.
        .args(["--overload-max-percent", "100"])
        .arg("--secret-file")
        .arg(data_dir.join("secret"))
        .arg("--relay-pid")
        .arg(relay.child.id().to_string())
        .arg("--json")
        .arg(&json_path)
        .arg("--html")
        .arg(&html_path)
        .output()
        .expect("hark-perf runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "hark-perf failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let text = std::fs::read_to_string(&json_path).expect("the JSON report is written");
    let report: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    for key in [
        "deliveries_per_sec",
        "frames_sent",
        "frames_delivered",
        "lost",
        "duplicated",
        "relay_cpu_us_per_delivery",
    ] {
        assert!(report.get(key).is_some(), "the report lacks {key}:\n{text}");
    }
    for histogram in ["latency_us", "stored_ack_us"] {
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(
                report[histogram][key].is_u64(),
                "the report lacks {histogram}.{key}:\n{text}"
            );
        }
    }
    let sent = report["frames_sent"]
        .as_u64()
        .expect("frames_sent is a count");
    assert!(sent > 0, "nothing was sent:\n{text}");
    assert_eq!(report["lost"], 0, "{text}");
    assert_eq!(report["frames_not_sent"], 0, "{text}");
    assert_eq!(report["duplicated"], 0, "{text}");
    assert_eq!(report["reordered"], 0, "{text}");
    assert_eq!(report["connection_errors"], 0, "{text}");
    assert_eq!(
        report["frames_delivered"].as_u64(),
        Some(sent * 2),
        "{text}"
    );
    assert_eq!(
        report["latency_us"]["count"].as_u64(),
        Some(sent * 2),
        "{text}"
    );
    assert!(report["relay_cpu_us_per_delivery"].is_f64(), "{text}");
    let html = std::fs::read_to_string(&html_path).expect("the HTML report is written");
    assert!(
        html.contains("<svg") && html.contains("<polyline"),
        "{html}"
    );
}
