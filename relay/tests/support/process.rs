//! Starting, signalling and reaping real `hark-relay` processes.
//!
//! The relay's contract with this harness:
//! - flags `--listen ADDR --admin ADDR --data-dir DIR --cores LIST` (the harness passes the
//!   first three; `--cores 0,1` unless the test gives `--cores`), plus the test's own flags;
//! - once every shard accepts, one line on stdout, flushed:
//!   `hark-relay listening client=127.0.0.1:PORT admin=127.0.0.1:PORT shards=N`;
//! - `<data-dir>/secret` exists by then unless `--secret-file` is given;
//! - SIGTERM: stop accepting, end live messages truncated, finish the last commit, exit 0.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{SystemTime, UNIX_EPOCH};

use hark_core::ConvName;
use hark_core::token::{ConvPrefix, Grant, Keyring, Rights, Scope, Subject};
use hark_tools::client::{Client, HelloInfo};
use tempfile::TempDir;

use super::{EXIT_WAIT, STARTUP_WAIT, WAIT};

/// The relay binary Cargo built for this test run.
const RELAY_BIN: &str = env!("CARGO_BIN_EXE_hark-relay");

/// Environment variable naming another relay binary to test instead of [`RELAY_BIN`] (a
/// release build, an installed relay, a build from another branch).
pub const RELAY_BIN_ENV: &str = "HARK_RELAY_BIN";

/// The binary the harness starts.
fn relay_bin() -> OsString {
    std::env::var_os(RELAY_BIN_ENV).unwrap_or_else(|| OsString::from(RELAY_BIN))
}

/// What the relay prints once it accepts, before the `key=value` fields.
const LISTENING_PREFIX: &str = "hark-relay listening ";

/// Bytes of the relay's stderr (and of its other stdout lines) kept for a failure report;
/// older output is dropped first.
const OUTPUT_KEPT_BYTES_MAX: usize = 256 * 1024;

/// Longest stdout line read as one line; a longer one is cut (the relay's lines are short).
const STDOUT_LINE_BYTES_MAX: u64 = 64 * 1024;

/// How long the tokens minted by [`RelayProcess::token`] stay valid.
const TOKEN_LIFETIME_S: u64 = 3600;

/// The client name tests announce in their hello.
pub const CLIENT_NAME: &str = "hark-relay-tests";

/// One `hark-relay` process (and its restarts) on one data directory.
///
/// Dropping it kills and reaps the process, so no test leaves a relay behind; if the test is
/// failing, the relay's stderr and stdout are printed first.
#[derive(Debug)]
pub struct RelayProcess {
    args: Vec<String>,
    env: Vec<(OsString, OsString)>,
    data_dir: PathBuf,
    /// Owns the data directory when the harness made it.
    _temp_dir: Option<TempDir>,
    running: Option<Running>,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    /// The cluster address from the listening line, on a cluster host.
    cluster_addr: Option<SocketAddr>,
    /// The loopback address the relay listens on (127.0.0.x for several hosts).
    ip: IpAddr,
    shards: usize,
    output: Arc<Mutex<Output>>,
    /// The output was printed by [`RelayProcess::fail`] already.
    reported: AtomicBool,
}

/// A live process and the threads that read its pipes.
#[derive(Debug)]
struct Running {
    child: Child,
    /// Receives once the process has exited (it is then a zombie until reaped, so its pid
    /// cannot be reused while a signal may still be sent to it). In a mutex so the relay can
    /// be shared with client threads.
    exited: Mutex<Receiver<()>>,
    readers: Vec<JoinHandle<()>>,
}

/// The relay's output kept for failure reports: the tail of stderr and of stdout.
#[derive(Debug, Default)]
struct Output {
    stderr: Vec<u8>,
    stdout: Vec<u8>,
}

impl Output {
    fn keep(buffer: &mut Vec<u8>, bytes: &[u8]) {
        keep_tail(buffer, bytes, OUTPUT_KEPT_BYTES_MAX);
    }
}

/// Appends `bytes` to `buffer` and drops its oldest bytes beyond `max`.
pub fn keep_tail(buffer: &mut Vec<u8>, bytes: &[u8], max: usize) {
    buffer.extend_from_slice(bytes);
    if buffer.len() > max {
        let cut = buffer.len() - max;
        buffer.drain(..cut);
    }
}

/// How to start a relay beyond its flags.
#[derive(Debug, Default)]
pub struct RelayOptions {
    /// Environment variables for the process (on top of the inherited ones, so
    /// `MONOIO_FORCE_LEGACY_DRIVER=1` of the test run reaches the relay anyway).
    pub env: Vec<(OsString, OsString)>,
    /// Use this directory instead of a fresh temporary one (which the caller then owns).
    pub data_dir: Option<PathBuf>,
    /// Listen (clients and admin) on this address instead of 127.0.0.1.
    pub ip: Option<IpAddr>,
}

impl RelayProcess {
    /// Starts a relay with `args` (its own flags beyond `--listen`, `--admin`, `--data-dir`;
    /// `--cores 0,1` is added unless `args` has `--cores`) on a fresh temporary data dir, and
    /// waits for its listening line. Panics, with the relay's stderr, if it does not come.
    pub fn start(args: &[&str]) -> RelayProcess {
        Self::start_with(args, RelayOptions::default())
    }

    /// [`RelayProcess::start`] with an environment or a given data directory.
    pub fn start_with(args: &[&str], options: RelayOptions) -> RelayProcess {
        let (data_dir, temp_dir) = match options.data_dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("hark-relay-test-")
                    .tempdir()
                    .unwrap_or_else(|error| panic!("cannot create a temp data dir: {error}"));
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let mut relay = RelayProcess {
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            env: options.env,
            data_dir,
            _temp_dir: temp_dir,
            running: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cluster_addr: None,
            ip: options.ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
            shards: 0,
            output: Arc::default(),
            reported: AtomicBool::new(false),
        };
        relay.spawn();
        relay
    }

    /// The address clients connect to (changes with every restart: port 0 each time).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster address (gossip and peer links) of a cluster host; changes with every
    /// restart when it was given with port 0.
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster_addr
            .unwrap_or_else(|| self.fail("the listening line named no cluster address"))
    }

    /// The admin endpoint's address (/metrics, /health, /ready).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// How many shards the relay said it runs.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The relay's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The relay's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|running| running.child.id())
    }

    /// The relay's stderr so far (the last [`OUTPUT_KEPT_BYTES_MAX`] bytes).
    pub fn stderr_text(&self) -> String {
        let output = lock(&self.output);
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// The secret file the relay verifies tokens with.
    pub fn secret_path(&self) -> PathBuf {
        match self.args.iter().position(|arg| arg == "--secret-file") {
            Some(at) if at + 1 < self.args.len() => PathBuf::from(&self.args[at + 1]),
            _ => self.data_dir.join("secret"),
        }
    }

    /// The relay's keyring, read from its secret file.
    pub fn keyring(&self) -> Keyring {
        hark_core::token::read_secret_file(&self.secret_path())
            .unwrap_or_else(|error| self.fail(&error.to_string()))
    }

    /// Mints `grant` exactly as given (its key id included) with the relay's keyring.
    pub fn mint(&self, grant: &Grant) -> String {
        self.keyring()
            .mint(grant)
            .unwrap_or_else(|error| panic!("cannot mint {grant:?}: {error}"))
    }

    /// A token for `subject` with `rights` (e.g. "talk,listen,history") on `scope`, valid for
    /// an hour, signed with the relay's minting key.
    pub fn token(&self, subject: &str, rights: &str, scope: Scope) -> String {
        let keyring = self.keyring();
        let grant = Grant {
            subject: Subject::new(subject).expect("test subjects are valid"),
            rights: rights.parse::<Rights>().expect("test rights are valid"),
            scope,
            expires_at_s: now_s() + TOKEN_LIFETIME_S,
            key_id: keyring.minting_key_id(),
        };
        keyring
            .mint(&grant)
            .unwrap_or_else(|error| panic!("cannot mint {grant:?}: {error}"))
    }

    /// A token with talk, listen and history on every conversation.
    pub fn token_for_all(&self, subject: &str) -> String {
        let every = ConvPrefix::new("").expect("the empty prefix is valid");
        self.token(subject, "talk,listen,history", Scope::Prefix(every))
    }

    /// A token with `rights` on exactly `conversation`.
    pub fn token_for(&self, subject: &str, rights: &str, conversation: &ConvName) -> String {
        self.token(subject, rights, Scope::Conversation(conversation.clone()))
    }

    /// A connection without a hello.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr, WAIT)
            .unwrap_or_else(|error| self.fail(&format!("cannot connect to {}: {error}", self.addr)))
    }

    /// A connection whose hello with `token` was accepted.
    pub fn session_with(&self, token: &str) -> (Client, HelloInfo) {
        let mut client = self.connect();
        match client.hello(token, CLIENT_NAME) {
            Ok(info) => (client, info),
            Err(error) => self.fail(&format!("hello refused: {error}")),
        }
    }

    /// A connection of `subject` with every right on every conversation.
    pub fn session(&self, subject: &str) -> Client {
        self.session_with(&self.token_for_all(subject)).0
    }

    /// Sends SIGTERM and waits (at most [`EXIT_WAIT`]) for the exit.
    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        self.signal_and_reap(libc::SIGTERM)
    }

    /// Waits (at most [`EXIT_WAIT`]) for a relay told to exit some other way (e.g. `POST
    /// /drain`) and reaps it.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let Some(running) = self.running.as_ref() else {
            panic!("the relay is not running");
        };
        let waited = lock(&running.exited).recv_timeout(EXIT_WAIT);
        if let Err(RecvTimeoutError::Timeout) = waited {
            let status = self.stop_after_failure();
            self.fail(&format!(
                "hark-relay did not exit within {EXIT_WAIT:?} (killed: {status:?})"
            ));
        }
        self.reap()
    }

    /// Sends SIGKILL (a crash: no shutdown, no last commit) and reaps the process.
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal_and_reap(libc::SIGKILL)
    }

    /// Starts the relay again with the same flags on the same data dir, after it was stopped
    /// with [`RelayProcess::sigterm_and_wait`] or [`RelayProcess::kill9`].
    pub fn restart(&mut self) {
        assert!(
            self.running.is_none(),
            "restart() needs a stopped relay: stop it with sigterm_and_wait() or kill9()"
        );
        self.spawn();
    }

    /// Starts the relay again on the same data dir with other flags (e.g. another `--cores`).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|arg| (*arg).to_owned()).collect();
        self.restart();
    }

    /// Panics with `message` and the relay's output.
    pub fn fail(&self, message: &str) -> ! {
        self.reported.store(true, Ordering::Relaxed);
        let output = lock(&self.output);
        panic!(
            "{message}\n--- hark-relay stderr ---\n{}\n--- hark-relay stdout ---\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout),
        );
    }

    fn spawn(&mut self) {
        let mut command = Command::new(relay_bin());
        command
            .arg("--listen")
            .arg(SocketAddr::new(self.ip, 0).to_string())
            .arg("--admin")
            .arg(SocketAddr::new(self.ip, 0).to_string())
            .arg("--data-dir")
            .arg(&self.data_dir);
        if !self.args.iter().any(|arg| arg == "--cores") {
            command.args(["--cores", "0,1"]);
        }
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {:?}: {error}", relay_bin()));
        let exited = Mutex::new(watch_exit(child.id()));
        let stdout = child.stdout.take().expect("stdout was piped above");
        let stderr = child.stderr.take().expect("stderr was piped above");
        let (line_tx, line_rx) = mpsc::channel();
        let readers = vec![
            read_stdout(stdout, line_tx, Arc::clone(&self.output)),
            read_stderr(stderr, Arc::clone(&self.output)),
        ];
        self.running = Some(Running {
            child,
            exited,
            readers,
        });
        let line = match line_rx.recv_timeout(STARTUP_WAIT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                self.stop_after_failure();
                self.fail(&format!(
                    "hark-relay printed no listening line within {STARTUP_WAIT:?}"
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.stop_after_failure();
                self.fail(&format!(
                    "hark-relay closed its stdout without a listening line (exit: {status:?})"
                ))
            }
        };
        match parse_listening_line(&line) {
            Ok((addr, admin_addr, shards)) => {
                self.addr = addr;
                self.admin_addr = admin_addr;
                self.shards = shards;
                self.cluster_addr = line
                    .split_whitespace()
                    .find_map(|field| field.strip_prefix("cluster="))
                    .and_then(|addr| addr.parse().ok());
            }
            Err(problem) => {
                self.stop_after_failure();
                self.fail(&format!("bad listening line {line:?}: {problem}"))
            }
        }
        let cores = self
            .args
            .iter()
            .position(|arg| arg == "--cores")
            .and_then(|at| self.args.get(at + 1))
            .map_or(2, |list| list.split(',').count());
        if self.shards != cores {
            self.stop_after_failure();
            self.fail(&format!(
                "hark-relay runs {} shards for {cores} cores",
                self.shards
            ));
        }
    }

    /// Sends `signal`, waits for the exit and reaps the process and its pipe readers.
    fn signal_and_reap(&mut self, signal: libc::c_int) -> ExitStatus {
        let Some(running) = self.running.as_ref() else {
            panic!("the relay is not running");
        };
        send_signal(running, signal);
        let waited = lock(&running.exited).recv_timeout(EXIT_WAIT);
        match waited {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {}
            Err(RecvTimeoutError::Timeout) => {
                let status = self.stop_after_failure();
                self.fail(&format!(
                    "hark-relay did not exit within {EXIT_WAIT:?} of signal {signal} \
                     (killed: {status:?})"
                ));
            }
        }
        self.reap()
    }

    /// Kills the process if it runs and reaps it; for failure paths and Drop.
    fn stop_after_failure(&mut self) -> Option<ExitStatus> {
        let running = self.running.as_ref()?;
        let exited = lock(&running.exited);
        if exited.try_recv().is_err() {
            send_signal(running, libc::SIGKILL);
            // SIGKILL cannot be caught; the bound only guards against a kernel stuck in I/O.
            let _ = exited.recv_timeout(EXIT_WAIT);
        }
        drop(exited);
        Some(self.reap())
    }

    fn reap(&mut self) -> ExitStatus {
        let mut running = self.running.take().expect("callers check that it runs");
        let status = running
            .child
            .wait()
            .unwrap_or_else(|error| panic!("cannot reap hark-relay: {error}"));
        for reader in running.readers.drain(..) {
            // The pipes closed with the process; a reader that panicked lost only output.
            let _ = reader.join();
        }
        status
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let status = self.stop_after_failure();
        if thread::panicking() && !self.reported.load(Ordering::Relaxed) {
            let output = lock(&self.output);
            eprintln!(
                "--- hark-relay (exit {status:?}) stderr ---\n{}\n--- hark-relay stdout ---\n{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout),
            );
        }
    }
}

/// Locks `mutex`, also after a thread panicked while holding it (the data is plain output or
/// a receiver, still usable).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `status` is the clean exit the contract promises after SIGTERM.
pub fn exited_cleanly(status: ExitStatus) -> bool {
    status.code() == Some(0) && status.signal().is_none()
}

/// Seconds since the Unix epoch, for token expiries.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_micros()).expect("µs since 1970 fit in u64 until the year 586912")
}

fn send_signal(running: &Running, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(running.child.id()).expect("Linux pids fit in pid_t");
    // SAFETY: kill(2) has no memory effects. The pid is our unreaped child (reaping happens
    // only in `reap`, after which `running` is gone), so it cannot name another process.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        result,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// A thread that waits for `pid` to exit without reaping it, and then reports.
fn watch_exit(pid: u32) -> Receiver<()> {
    let (exited_tx, exited_rx) = mpsc::channel();
    let pid = libc::id_t::from(pid);
    thread::spawn(move || {
        loop {
            // SAFETY: waitid writes only into `info`, a zeroed siginfo_t we own. WNOWAIT
            // leaves the child a zombie, so its pid stays ours until `reap` collects it.
            let result = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT)
            };
            if result == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        // The receiver is gone only when the relay was already reaped.
        let _ = exited_tx.send(());
    });
    exited_rx
}

/// A thread that sends the listening line to `line_tx` and keeps every other stdout line.
fn read_stdout(
    stdout: ChildStdout,
    line_tx: mpsc::Sender<String>,
    output: Arc<Mutex<Output>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader
                .by_ref()
                .take(STDOUT_LINE_BYTES_MAX)
                .read_until(b'\n', &mut line)
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            {
                let mut output = lock(&output);
                Output::keep(&mut output.stdout, &line);
            }
            if text.starts_with(LISTENING_PREFIX) {
                // The test stopped waiting only if it failed already.
                let _ = line_tx.send(text.trim_end().to_owned());
            }
        }
    })
}

/// A thread that keeps the tail of stderr.
fn read_stderr(mut stderr: ChildStderr, output: Arc<Mutex<Output>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match stderr.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut output = lock(&output);
                    Output::keep(&mut output.stderr, &chunk[..n]);
                }
            }
        }
    })
}

/// Parses `hark-relay listening client=ADDR admin=ADDR shards=N` (fields in any order; unknown
/// fields are ignored so the relay may add some).
pub fn parse_listening_line(line: &str) -> Result<(SocketAddr, SocketAddr, usize), String> {
    let fields = line
        .strip_prefix(LISTENING_PREFIX)
        .ok_or("no listening prefix")?;
    let (mut client, mut admin, mut shards) = (None, None, None);
    for field in fields.split_whitespace() {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?} is not key=value"))?;
        match key {
            "client" => client = Some(value.parse().map_err(|e| format!("client: {e}"))?),
            "admin" => admin = Some(value.parse().map_err(|e| format!("admin: {e}"))?),
            "shards" => shards = Some(value.parse().map_err(|e| format!("shards: {e}"))?),
            // Later fields are allowed; this harness does not need them.
            _ => {}
        }
    }
    Ok((
        client.ok_or("no client=")?,
        admin.ok_or("no admin=")?,
        shards.ok_or("no shards=")?,
    ))
}
