//! SIGTERM and SIGINT as ordinary events: blocked in every thread (the mask is inherited by
//! threads started later, so call [`block_termination`] first) and received by one thread
//! with `sigwait`, which starts the drain.

use std::io;

fn termination_set() -> libc::sigset_t {
    // SAFETY: `sigemptyset` initialises the set before `sigaddset` touches it; both only
    // write to the local value.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it starts afterwards.
pub fn block_termination() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: a valid, initialised set; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Starts a thread that calls `on_signal` with the signal number for every SIGTERM or SIGINT
/// (the first starts the drain; later ones are reported again, e.g. to log them).
pub fn watch_termination(mut on_signal: impl FnMut(i32) + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("hark-signals".into())
        .spawn(move || {
            let set = termination_set();
            loop {
                let mut signal: libc::c_int = 0;
                // SAFETY: a valid set with both signals blocked in this thread (inherited).
                let rc = unsafe { libc::sigwait(&set, &mut signal) };
                if rc == 0 {
                    on_signal(signal);
                }
            }
        })
        .map(|_| ())
}
