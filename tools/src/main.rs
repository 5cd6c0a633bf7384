//! hark: the client and operator command line.
//!
//! What it is: talk, listen, history and tokens through hark-core's client library over
//! plain sockets, and the operator commands ring, store verify/dump and status
//! ([`hark_tools::cli::run`] does the work). What it is not: a relay; it holds
//! no state between runs beyond what is on disk.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM: a running `listen` closes its files and exits.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
        // function pointer has the C ABI signal() expects.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = hark_tools::cli::run(std::env::args_os().collect(), &STOP, &mut out);
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hark: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
