//! The relay process as /proc shows it: CPU time and resident memory, for the per-delivery
//! CPU cost and the idle memory per connection. The admin endpoint does not publish a pid, so
//! the pid comes from the user (`--relay-pid`, e.g. `$(pgrep -n hark-relay)`).

use std::path::PathBuf;

/// Why /proc could not be read for the relay.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file is missing or unreadable: the pid is wrong or the process has exited.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file's layout is not what Linux writes: not a Linux /proc.
    #[error("cannot parse {path}")]
    Parse { path: PathBuf },
}

/// User + system CPU time of process `pid`, µs.
pub fn cpu_time_us(pid: u32) -> Result<u64, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = std::fs::read_to_string(&path).map_err(|source| ProcError::Read {
        path: path.clone(),
        source,
    })?;
    let ticks = parse_stat_cpu_ticks(&text).ok_or(ProcError::Parse { path })?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_s = if ticks_per_s > 0 {
        ticks_per_s as u64
    } else {
        100
    };
    Ok(ticks * 1_000_000 / ticks_per_s)
}

/// utime + stime (fields 14 and 15) of a /proc/<pid>/stat line, in clock ticks. The command
/// name (field 2) may contain spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // Field 3 (state) is the first after the name; utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of process `pid`, bytes (VmRSS).
pub fn resident_bytes(pid: u32) -> Result<u64, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = std::fs::read_to_string(&path).map_err(|source| ProcError::Read {
        path: path.clone(),
        source,
    })?;
    parse_status_rss_bytes(&text).ok_or(ProcError::Parse { path })
}

/// The `VmRSS:` line of /proc/<pid>/status, in bytes.
pub fn parse_status_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let kib: u64 = fields.next()?.parse().ok()?;
    (fields.next()? == "kB").then_some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (hark (relay) x) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\thark-relay\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t4\n";
        assert_eq!(parse_status_rss_bytes(status), Some(1234 * 1024));
        assert_eq!(parse_status_rss_bytes("VmRSS: lots"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        assert!(resident_bytes(pid).is_ok_and(|bytes| bytes > 0));
        assert!(cpu_time_us(pid).is_ok());
        assert!(cpu_time_us(u32::MAX).is_err());
    }
}
