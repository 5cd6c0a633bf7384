//! Which relay host a client connects to next: health, backoff with jitter, redirects.
//!
//! What it is: [`HostPool`] keeps a client's list of relay addresses (`host:port`, compared
//! as given) and what it learned about each: never tried, up (the hello was accepted), or
//! down (a connect or a hello failed) with the time its backoff allows the next try. The
//! caller asks [`HostPool::next`] where to connect and reports what happened with
//! [`HostPool::connected`] and [`HostPool::failed`]; a relay's `go_away` with an address
//! becomes [`HostPool::redirect`], and addresses learned later join with [`HostPool::merge`]
//! (neither depends on time, so neither takes `now_us`). Any host serves any conversation, so every host is as good
//! as another for correctness: the pool only avoids the ones that fail.
//!
//! What it is not: a connector. It opens no socket, reads no clock and sleeps nowhere; every
//! call takes `now_us` (any monotonic µs count, the same for every call) and the jitter comes
//! from a generator seeded by the caller, so a test replays exactly.
//!
//! ```text
//!  next(now) ──► Connect(addr) ──► caller connects, says hello
//!      │              ├── hello accepted ──► connected(addr, now)   (backoff reset)
//!      │              └── refused / timeout ──► failed(addr, now)   (down until now + delay)
//!      └──► WaitUntil(t): every host is down; the earliest may be tried at t
//!  go_away{reconnect_to} ──► redirect(addr): addr is the next choice
//! ```
//!
//! The order of choice: a pending redirect first; then hosts not down (never tried or up),
//! the one that failed least recently first, ties taken round-robin after the last choice;
//! then down hosts whose retry time has come, the longest-waiting first, and the last choice
//! only when no other is due.

#[cfg(test)]
mod tests;

use thiserror::Error;

use super::backoff::{Backoff, JitterRng};
use crate::protocol::ADDRESS_LEN_MAX;

/// Most addresses one pool holds (given, merged and redirected together). A client lists a
/// few relays; a cluster that redirects a client through more than this is misbehaving.
pub const HOST_POOL_ADDRESSES_MAX: usize = 64;

/// Why the pool refused an address list or an address. The pool is unchanged by the call
/// that failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HostPoolError {
    /// No address was given: give at least one relay.
    #[error("no relay address given")]
    Empty,
    /// More addresses than [`HOST_POOL_ADDRESSES_MAX`] (and none of the known hosts is down,
    /// so none can make room): give fewer.
    #[error("more than {max} relay addresses")]
    TooMany {
        /// The bound.
        max: usize,
    },
    /// The address is not `host:port` (empty host, port not a number from 0 to 65535, longer
    /// than the protocol's [`ADDRESS_LEN_MAX`]): fix it.
    #[error("relay address {addr:?} is not host:port ({why})")]
    BadAddress {
        /// The address as given (cut to [`ADDRESS_LEN_MAX`] bytes).
        addr: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// What [`HostPool::next`] says to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Connect to this address now.
    Connect(String),
    /// Every host is down: nothing may be tried before this time (µs, on the caller's clock).
    WaitUntil(u64),
}

/// What the pool knows about one host, for reports and for the order of choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostHealth {
    /// Never tried: as good as an up host.
    Untried,
    /// The last try got the hello accepted at `since_us`.
    Up {
        /// When.
        since_us: u64,
    },
    /// The last `failures` tries failed; the next may come at `retry_at_us`.
    Down {
        /// Failures in a row.
        failures: u32,
        /// The earliest time of the next try (the backoff's delay after the last failure).
        retry_at_us: u64,
    },
}

#[derive(Debug, Clone)]
struct Host {
    addr: String,
    health: HostHealth,
    backoff: Backoff,
    last_failure_us: Option<u64>,
}

impl Host {
    fn new(addr: String, backoff: Backoff) -> Self {
        Self {
            addr,
            health: HostHealth::Untried,
            backoff,
            last_failure_us: None,
        }
    }

    /// When the host may be tried (0: now).
    fn retry_at_us(&self) -> u64 {
        match self.health {
            HostHealth::Down { retry_at_us, .. } => retry_at_us,
            HostHealth::Untried | HostHealth::Up { .. } => 0,
        }
    }

    fn is_down(&self) -> bool {
        matches!(self.health, HostHealth::Down { .. })
    }
}

/// A client's relay hosts: see the module documentation.
#[derive(Debug, Clone)]
pub struct HostPool {
    hosts: Vec<Host>,
    /// The backoff every new host starts with.
    backoff: Backoff,
    rng: JitterRng,
    /// Index of the last host [`HostPool::next`] chose.
    last_choice: Option<usize>,
    /// Index of the host a relay redirected to, until it is chosen or fails.
    redirect: Option<usize>,
}

impl HostPool {
    /// A pool of `addrs` (kept as given, duplicates once), tried first in the given order,
    /// with the default backoff ([`super::BACKOFF_MIN_US`] .. [`super::BACKOFF_MAX_US`]) and
    /// jitter from `seed` (tests fix it; a client takes something that differs between
    /// clients, such as the time and its process id).
    pub fn new<S: AsRef<str>>(addrs: &[S], seed: u64) -> Result<Self, HostPoolError> {
        Self::with_backoff(addrs, seed, Backoff::default())
    }

    /// [`HostPool::new`] with another backoff range (`backoff`'s failure count is ignored).
    pub fn with_backoff<S: AsRef<str>>(
        addrs: &[S],
        seed: u64,
        backoff: Backoff,
    ) -> Result<Self, HostPoolError> {
        if addrs.is_empty() {
            return Err(HostPoolError::Empty);
        }
        let mut backoff = backoff;
        backoff.reset();
        let mut hosts: Vec<Host> = Vec::new();
        for addr in addrs {
            let addr = parse_address(addr.as_ref())?;
            if hosts.iter().any(|host| host.addr == addr) {
                continue;
            }
            if hosts.len() >= HOST_POOL_ADDRESSES_MAX {
                return Err(HostPoolError::TooMany {
                    max: HOST_POOL_ADDRESSES_MAX,
                });
            }
            hosts.push(Host::new(addr.to_owned(), backoff));
        }
        Ok(Self {
            hosts,
            backoff,
            rng: JitterRng::new(seed),
            last_choice: None,
            redirect: None,
        })
    }

    /// Where to connect now, or until when to wait (see the module documentation for the
    /// order). With any host not down, this never waits. A `Connect` counts as a try: report
    /// its outcome with [`HostPool::connected`] or [`HostPool::failed`].
    pub fn next(&mut self, now_us: u64) -> Choice {
        if let Some(index) = self.redirect.take() {
            self.last_choice = Some(index);
            return Choice::Connect(self.hosts[index].addr.clone());
        }
        let count = self.hosts.len();
        let start = self.last_choice.map_or(0, |last| last + 1);
        // (down, the last choice again, failed-at or retry-at): smaller is better; the scan
        // starts after the last choice, and a strict `<` keeps the first of equals, which
        // makes ties round-robin.
        let mut best: Option<((bool, bool, u64), usize)> = None;
        for step in 0..count {
            let index = (start + step) % count;
            let host = &self.hosts[index];
            if host.retry_at_us() > now_us {
                continue;
            }
            let rank = if host.is_down() {
                (true, self.last_choice == Some(index), host.retry_at_us())
            } else {
                (false, false, host.last_failure_us.unwrap_or(0))
            };
            if best.is_none_or(|(best_rank, _)| rank < best_rank) {
                best = Some((rank, index));
            }
        }
        match best {
            Some((_, index)) => {
                self.last_choice = Some(index);
                Choice::Connect(self.hosts[index].addr.clone())
            }
            None => Choice::WaitUntil(
                self.hosts
                    .iter()
                    .map(Host::retry_at_us)
                    .min()
                    .unwrap_or(now_us),
            ),
        }
    }

    /// The hello at `addr` was accepted: the host is up and its backoff starts over. An
    /// address not in the pool (dropped to make room) is ignored.
    pub fn connected(&mut self, addr: &str, now_us: u64) {
        if let Some(host) = self.host_mut(addr) {
            host.backoff.reset();
            host.health = HostHealth::Up { since_us: now_us };
        }
    }

    /// A connect, a hello or an open connection to `addr` failed (refused, timed out, closed,
    /// the relay is leaving): the host is down until its backoff's next delay has passed, and
    /// a redirect to it is forgotten. Returns the time of its next try, or `None` for an
    /// address not in the pool (which is ignored).
    pub fn failed(&mut self, addr: &str, now_us: u64) -> Option<u64> {
        let index = self.index_of(addr)?;
        if self.redirect == Some(index) {
            self.redirect = None;
        }
        let host = &mut self.hosts[index];
        let delay_us = host.backoff.fail(&mut self.rng);
        let retry_at_us = now_us.saturating_add(delay_us);
        host.health = HostHealth::Down {
            failures: host.backoff.failures(),
            retry_at_us,
        };
        host.last_failure_us = Some(now_us);
        Some(retry_at_us)
    }

    /// A relay said to reconnect to `addr` (a `go_away` naming where): it joins the pool if
    /// new (making room by dropping the down host with the most failures when the pool is
    /// full) and is the next choice, whatever its backoff says — the relay knows it is there.
    pub fn redirect(&mut self, addr: &str) -> Result<(), HostPoolError> {
        let index = self.insert(addr)?;
        self.redirect = Some(index);
        Ok(())
    }

    /// Adds the addresses a relay source gives now (a relay restarted on another port, a
    /// name that resolves elsewhere) that the pool does not know; known ones keep their
    /// health. Room is made as for [`HostPool::redirect`]. Returns how many were added; on an
    /// error the addresses before the bad one are added already.
    pub fn merge<S: AsRef<str>>(&mut self, addrs: &[S]) -> Result<usize, HostPoolError> {
        let mut added = 0;
        for addr in addrs {
            let addr = parse_address(addr.as_ref())?;
            if self.index_of(addr).is_none() {
                self.insert(addr)?;
                added += 1;
            }
        }
        Ok(added)
    }

    /// What the pool knows about `addr`; `None` when it is not in the pool.
    pub fn health(&self, addr: &str) -> Option<HostHealth> {
        self.index_of(addr).map(|index| self.hosts[index].health)
    }

    /// Every address, in the pool's order (given ones first, then merged and redirected).
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().map(|host| host.addr.as_str())
    }

    /// How many hosts the pool holds (at most [`HOST_POOL_ADDRESSES_MAX`]).
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Always false: a pool holds at least one host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    fn index_of(&self, addr: &str) -> Option<usize> {
        self.hosts.iter().position(|host| host.addr == addr)
    }

    fn host_mut(&mut self, addr: &str) -> Option<&mut Host> {
        self.hosts.iter_mut().find(|host| host.addr == addr)
    }

    /// The index of `addr`, added if new. A full pool gives the slot of the down host with
    /// the most failures (the earliest-failed of equals, never a pending redirect) to it.
    fn insert(&mut self, addr: &str) -> Result<usize, HostPoolError> {
        let addr = parse_address(addr)?;
        if let Some(index) = self.index_of(addr) {
            return Ok(index);
        }
        let host = Host::new(addr.to_owned(), self.backoff);
        if self.hosts.len() < HOST_POOL_ADDRESSES_MAX {
            self.hosts.push(host);
            return Ok(self.hosts.len() - 1);
        }
        let victim = self
            .hosts
            .iter()
            .enumerate()
            .filter(|&(index, host)| host.is_down() && self.redirect != Some(index))
            .max_by_key(|&(index, host)| {
                (
                    host.backoff.failures(),
                    std::cmp::Reverse(host.last_failure_us),
                    std::cmp::Reverse(index),
                )
            })
            .map(|(index, _)| index)
            .ok_or(HostPoolError::TooMany {
                max: HOST_POOL_ADDRESSES_MAX,
            })?;
        self.hosts[victim] = host;
        if self.last_choice == Some(victim) {
            self.last_choice = None;
        }
        Ok(victim)
    }
}

/// Checks that `addr` reads as `host:port` (an IPv6 host in brackets) within the protocol's
/// address length, and returns it unchanged.
fn parse_address(addr: &str) -> Result<&str, HostPoolError> {
    let bad = |why| HostPoolError::BadAddress {
        addr: addr.chars().take(ADDRESS_LEN_MAX).collect(),
        why,
    };
    if addr.len() > ADDRESS_LEN_MAX {
        return Err(bad("longer than 255 bytes"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad("no :port"));
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 host needs brackets"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("a space or control character in the host"));
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err()
    {
        return Err(bad("the port is not a number from 0 to 65535"));
    }
    Ok(addr)
}
