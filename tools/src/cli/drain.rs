//! `hark drain`: asks a relay to drain through its admin endpoint (`POST /drain`, the same
//! drain as SIGTERM), and with `--wait` watches `/health` until the relay is gone.
//!
//! ```text
//!  POST /drain ─► 202 "draining started" ─► (--wait) GET /health every 100 ms
//!                                               200 ─► still draining, ask again
//!                                               connection refused ─► exited: done
//! ```
//!
//! The admin endpoint answers `/health` while the relay drains and closes with the process,
//! so a refused connection means the relay has exited. Only the relay's own host can tell
//! its exit code; `hark drain` reports that it is gone.

use std::io::Write;
use std::time::{Duration, Instant};

use super::CliError;
use super::status::{AdminRequestError, admin_request};

/// Default `--timeout` of `--wait`, in seconds.
pub const DRAIN_WAIT_TIMEOUT_DEFAULT_S: u64 = 60;
/// Pause between two `/health` requests while waiting.
pub const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What `hark drain` was asked.
#[derive(Debug, Clone)]
pub struct DrainArgs {
    /// The relay's admin address `host:port`.
    pub admin: String,
    /// Wait until the relay has exited.
    pub wait: bool,
    /// How long to wait (each `/health` request may add up to its own 5 s timeout).
    pub timeout: Duration,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// The relay took the request (it may have been draining already); not waited for.
    Started,
    /// The relay drained and exited this long after the request.
    Exited(Duration),
}

/// Runs `hark drain --admin ADDR [--wait [--timeout S]]`, printing one line per step.
pub fn run(args: &DrainArgs, out: &mut dyn Write) -> Result<DrainOutcome, CliError> {
    let addr = args.admin.as_str();
    let started = Instant::now();
    let reply = admin_request(addr, "POST", "/drain").map_err(|e| e.at(addr))?;
    let said = reply.body.lines().next().unwrap_or("").trim();
    if reply.code != 202 {
        return Err(CliError::Admin {
            addr: addr.to_owned(),
            detail: format!("drain refused: {:?} {said}", reply.status_line),
        });
    }
    writeln!(out, "relay at {addr}: {said}")?;
    if !args.wait {
        return Ok(DrainOutcome::Started);
    }
    out.flush()?;
    let deadline = started + args.timeout;
    loop {
        match admin_request(addr, "GET", "/health") {
            Err(AdminRequestError::Refused(_)) => {
                let after = started.elapsed();
                writeln!(
                    out,
                    "relay at {addr}: exited {:.1} s after the drain began",
                    after.as_secs_f64()
                )?;
                return Ok(DrainOutcome::Exited(after));
            }
            // Alive (200), or closing mid-answer as it exits: ask again until the deadline.
            Ok(_) | Err(AdminRequestError::Failed(_)) => {}
        }
        if Instant::now() + DRAIN_POLL_INTERVAL > deadline {
            return Err(CliError::Admin {
                addr: addr.to_owned(),
                detail: format!(
                    "still running {} s after the drain began (a longer --timeout waits more)",
                    args.timeout.as_secs()
                ),
            });
        }
        std::thread::sleep(DRAIN_POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::{SocketAddr, TcpListener};
    use std::thread;

    /// An address nothing listens on: bound, then closed.
    fn dead_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    /// A fake admin endpoint answering each request line in `answers` in turn with
    /// `(status line, body)`, then closing its port. Returns the request lines it got.
    fn fake_admin(
        answers: Vec<(&'static str, &'static str)>,
    ) -> (String, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, body) in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                seen.push(line.trim_end().to_owned());
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim_end().is_empty() {
                        break;
                    }
                }
                let mut stream = reader.into_inner();
                write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            seen
        });
        (addr, server)
    }

    fn args(admin: &str, wait: bool) -> DrainArgs {
        DrainArgs {
            admin: admin.to_owned(),
            wait,
            timeout: Duration::from_secs(DRAIN_WAIT_TIMEOUT_DEFAULT_S),
        }
    }

    #[test]
    fn a_dead_address_fails_with_one_line() {
        let addr = dead_addr().to_string();
        let mut out = Vec::new();
        let error = run(&args(&addr, true), &mut out).unwrap_err();
        let line = error.to_string();
        assert!(
            line.starts_with(&format!("admin endpoint {addr}: cannot connect:")),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1, "{line}");
        assert_eq!(error.exit_code(), 1);
        assert!(out.is_empty(), "nothing claimed on stdout");
    }

    #[test]
    fn wait_returns_once_the_port_refuses() {
        let (addr, server) = fake_admin(vec![
            ("202 Accepted", "draining started\n"),
            ("200 OK", "ok\n"),
            ("200 OK", "ok\n"),
        ]);
        let mut out = Vec::new();
        let outcome = run(&args(&addr, true), &mut out).unwrap();
        assert!(matches!(outcome, DrainOutcome::Exited(_)), "{outcome:?}");
        assert_eq!(
            server.join().unwrap(),
            vec![
                "POST /drain HTTP/1.1".to_owned(),
                "GET /health HTTP/1.1".to_owned(),
                "GET /health HTTP/1.1".to_owned(),
            ]
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], format!("relay at {addr}: draining started"));
        assert!(
            lines[1].starts_with(&format!("relay at {addr}: exited ")),
            "{text}"
        );
    }

    #[test]
    fn without_wait_it_returns_after_the_request() {
        let (addr, server) = fake_admin(vec![("202 Accepted", "draining already\n")]);
        let mut out = Vec::new();
        assert_eq!(
            run(&args(&addr, false), &mut out).unwrap(),
            DrainOutcome::Started
        );
        assert_eq!(
            server.join().unwrap(),
            vec!["POST /drain HTTP/1.1".to_owned()]
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("relay at {addr}: draining already\n")
        );
    }

    #[test]
    fn a_refused_drain_is_an_error_naming_the_answer() {
        let (addr, server) = fake_admin(vec![(
            "503 Service Unavailable",
            "the relay is still starting; nothing to drain yet\n",
        )]);
        let error = run(&args(&addr, true), &mut Vec::new()).unwrap_err();
        server.join().unwrap();
        let line = error.to_string();
        assert!(
            line.contains("503") && line.contains("still starting"),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn wait_gives_up_at_its_timeout() {
        // Keeps answering /health: the relay never exits.
        let (addr, server) = fake_admin(vec![
            ("202 Accepted", "draining started\n"),
            ("200 OK", "ok\n"),
        ]);
        let waited = DrainArgs {
            timeout: Duration::ZERO,
            ..args(&addr, true)
        };
        let error = run(&waited, &mut Vec::new()).unwrap_err();
        server.join().unwrap();
        assert!(
            error.to_string().contains("still running 0 s after"),
            "{error}"
        );
    }
}
