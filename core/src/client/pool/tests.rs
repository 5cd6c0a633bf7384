//! HostPool: the order of choice, backoff, redirects and bounds, by example and by seeded
//! random runs.

use proptest::prelude::*;

use super::*;
use crate::client::{BACKOFF_MAX_US, BACKOFF_MIN_US};

const A: &str = "10.0.0.1:7400";
const B: &str = "10.0.0.2:7400";
const C: &str = "relay-c.example:7400";

fn connect(addr: &str) -> Choice {
    Choice::Connect(addr.to_owned())
}

fn addrs(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("10.1.{}.{}:7400", i / 256, i % 256))
        .collect()
}

#[test]
fn a_list_must_hold_one_to_max_well_formed_addresses() {
    let none: [&str; 0] = [];
    assert_eq!(HostPool::new(&none, 1).unwrap_err(), HostPoolError::Empty);
    let too_many = addrs(HOST_POOL_ADDRESSES_MAX + 1);
    assert_eq!(
        HostPool::new(&too_many, 1).unwrap_err(),
        HostPoolError::TooMany {
            max: HOST_POOL_ADDRESSES_MAX
        }
    );
    let full = HostPool::new(&addrs(HOST_POOL_ADDRESSES_MAX), 1).unwrap();
    assert_eq!(full.len(), HOST_POOL_ADDRESSES_MAX);
    for bad in [
        "",
        "relay",
        ":7400",
        "relay:",
        "relay:port",
        "relay:65536",
        "relay:-1",
        "::1:7400",
        "re lay:7400",
    ] {
        assert!(
            matches!(
                HostPool::new(&[bad], 1),
                Err(HostPoolError::BadAddress { .. })
            ),
            "{bad:?} is refused"
        );
    }
    let long = format!("{}:7400", "h".repeat(ADDRESS_LEN_MAX));
    assert!(matches!(
        HostPool::new(&[long], 1),
        Err(HostPoolError::BadAddress { .. })
    ));
    let pool = HostPool::new(&["[::1]:7400", "localhost:0", A, A], 1).unwrap();
    assert_eq!(
        pool.addresses().collect::<Vec<_>>(),
        ["[::1]:7400", "localhost:0", A],
        "kept as given, a duplicate once"
    );
}

#[test]
fn a_dead_first_host_is_passed_over_for_the_next_one() {
    let mut pool = HostPool::new(&[A, B], 3).unwrap();
    assert_eq!(pool.health(A), Some(HostHealth::Untried));
    assert_eq!(pool.next(0), connect(A), "the given order first");
    let retry_at_us = pool.failed(A, 0).unwrap();
    assert!((BACKOFF_MIN_US..=2 * BACKOFF_MIN_US).contains(&retry_at_us));
    assert_eq!(pool.next(10), connect(B), "no wait while B is untried");
    pool.connected(B, 20);
    assert_eq!(pool.health(B), Some(HostHealth::Up { since_us: 20 }));
    assert_eq!(
        pool.health(A),
        Some(HostHealth::Down {
            failures: 1,
            retry_at_us
        })
    );
    assert_eq!(pool.health("10.9.9.9:1"), None);
}

#[test]
fn when_every_host_is_down_the_pool_names_the_earliest_retry() {
    let mut pool = HostPool::new(&[A, B], 4).unwrap();
    assert_eq!(pool.next(0), connect(A));
    let a_at = pool.failed(A, 0).unwrap();
    assert_eq!(pool.next(0), connect(B));
    let b_at = pool.failed(B, 1_000).unwrap();
    let earliest = a_at.min(b_at);
    assert_eq!(pool.next(2_000), Choice::WaitUntil(earliest));
    assert_eq!(pool.next(earliest - 1), Choice::WaitUntil(earliest));
    let first = if a_at <= b_at { A } else { B };
    assert_eq!(pool.next(earliest), connect(first));
}

#[test]
fn a_failing_host_is_not_chosen_twice_in_a_row_while_another_is_due() {
    let mut pool = HostPool::new(&[A, B], 5).unwrap();
    assert_eq!(pool.next(0), connect(A));
    pool.failed(A, 0);
    assert_eq!(pool.next(0), connect(B));
    pool.failed(B, 0);
    // Both are due long after; B was the last choice, so A goes first, then B.
    assert_eq!(pool.next(BACKOFF_MAX_US), connect(A));
    pool.failed(A, BACKOFF_MAX_US);
    assert_eq!(pool.next(BACKOFF_MAX_US), connect(B));
}

#[test]
fn the_host_that_failed_least_recently_is_preferred_then_round_robin() {
    let mut pool = HostPool::new(&[A, B, C], 6).unwrap();
    for (addr, at) in [(A, 100), (B, 50)] {
        while pool.next(at) != connect(addr) {}
        pool.failed(addr, at);
        pool.connected(addr, at + 1);
    }
    // C never failed; then B (failed at 50) before A (failed at 100).
    assert_eq!(pool.next(1_000), connect(C));
    pool.failed(C, 1_000);
    assert_eq!(pool.next(1_000), connect(B));
    // Equal standing: round-robin after the last choice.
    let mut even = HostPool::new(&[A, B, C], 6).unwrap();
    let order: Vec<Choice> = (0..6).map(|_| even.next(0)).collect();
    assert_eq!(
        order,
        [
            connect(A),
            connect(B),
            connect(C),
            connect(A),
            connect(B),
            connect(C)
        ]
    );
}

#[test]
fn connected_resets_the_backoff() {
    let mut pool = HostPool::new(&[A], 7).unwrap();
    let mut now = 0;
    for _ in 0..10 {
        assert_eq!(pool.next(now), connect(A));
        now = pool.failed(A, now).unwrap();
    }
    assert!(matches!(
        pool.health(A),
        Some(HostHealth::Down { failures: 10, .. })
    ));
    pool.connected(A, now);
    let retry_at = pool.failed(A, now).unwrap();
    assert!(
        retry_at - now <= 2 * BACKOFF_MIN_US,
        "back to the first step"
    );
}

#[test]
fn a_redirect_is_the_next_choice_once() {
    let mut pool = HostPool::new(&[A, B], 8).unwrap();
    assert_eq!(pool.next(0), connect(A));
    pool.connected(A, 0);
    pool.redirect(C).unwrap();
    assert_eq!(pool.len(), 3);
    assert_eq!(pool.next(1), connect(C));
    pool.connected(C, 1);
    assert_ne!(pool.next(2), connect(C), "a redirect is used once");

    // A redirect to a host that is down is followed anyway; its failure forgets it.
    pool.failed(B, 3);
    pool.redirect(B).unwrap();
    assert_eq!(pool.len(), 3, "a known address is not added again");
    assert_eq!(pool.next(4), connect(B));
    pool.redirect(A).unwrap();
    pool.failed(A, 5);
    assert_ne!(pool.next(6), connect(A), "the failed redirect is forgotten");

    assert!(matches!(
        pool.redirect("no port"),
        Err(HostPoolError::BadAddress { .. })
    ));
    assert_eq!(pool.len(), 3, "a bad redirect changes nothing");
}

#[test]
fn a_full_pool_makes_room_by_dropping_the_most_failed_down_host() {
    let given = addrs(HOST_POOL_ADDRESSES_MAX);
    let mut pool = HostPool::new(&given, 9).unwrap();
    assert_eq!(
        pool.redirect(A),
        Err(HostPoolError::TooMany {
            max: HOST_POOL_ADDRESSES_MAX
        }),
        "no host is down: nothing to drop"
    );
    assert_eq!(pool.health(A), None);
    pool.failed(&given[3], 0);
    pool.failed(&given[7], 0);
    pool.failed(&given[7], 10);
    pool.redirect(A).unwrap();
    assert_eq!(pool.len(), HOST_POOL_ADDRESSES_MAX);
    assert_eq!(pool.health(&given[7]), None, "two failures: dropped");
    assert!(pool.health(&given[3]).is_some());
    assert_eq!(pool.next(20), connect(A));
    assert_eq!(pool.merge(&[B]), Ok(1));
    assert_eq!(pool.health(&given[3]), None);
    assert_eq!(pool.health(B), Some(HostHealth::Untried));
    assert_eq!(
        pool.merge(&[C]),
        Err(HostPoolError::TooMany {
            max: HOST_POOL_ADDRESSES_MAX
        })
    );
}

#[test]
fn merge_adds_new_addresses_and_keeps_known_health() {
    let mut pool = HostPool::new(&[A], 10).unwrap();
    assert_eq!(pool.next(0), connect(A));
    let retry_at_us = pool.failed(A, 0).unwrap();
    assert_eq!(pool.merge(&[A, B, B]), Ok(1));
    assert_eq!(
        pool.health(A),
        Some(HostHealth::Down {
            failures: 1,
            retry_at_us
        })
    );
    assert_eq!(pool.next(1), connect(B), "the new address, without a wait");
    assert!(matches!(
        pool.merge(&["bad"]),
        Err(HostPoolError::BadAddress { .. })
    ));
}

#[test]
fn the_same_seed_makes_the_same_choices() {
    let run = |seed| {
        let mut pool = HostPool::new(&[A, B, C], seed).unwrap();
        let mut now = 0;
        let mut log = Vec::new();
        for _ in 0..30 {
            match pool.next(now) {
                Choice::Connect(addr) => {
                    pool.failed(&addr, now);
                    log.push((now, addr));
                }
                Choice::WaitUntil(at) => now = at,
            }
        }
        log
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

/// One step of a random client's life.
#[derive(Debug, Clone)]
enum Step {
    /// Ask `next`; a chosen host answers when its bit in the alive mask is set.
    Next,
    /// Time passes.
    Advance(u64),
    /// An open connection breaks: the last choice fails.
    Lost,
    /// A relay redirects to address number n of a wider universe.
    Redirect(usize),
    /// A host comes back or dies.
    Flip(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::Next),
        3 => (0u64..3 * BACKOFF_MAX_US).prop_map(Step::Advance),
        1 => Just(Step::Lost),
        1 => (0usize..100).prop_map(Step::Redirect),
        1 => (0usize..100).prop_map(Step::Flip),
    ]
}

fn universe(n: usize) -> String {
    format!("10.2.0.{n}:7400")
}

proptest! {
    #[test]
    fn random_runs_keep_the_pool_invariants(
        seed in any::<u64>(),
        hosts in 1usize..8,
        alive_mask in any::<u128>(),
        steps in proptest::collection::vec(step(), 1..300),
    ) {
        let given: Vec<String> = (0..hosts).map(universe).collect();
        let mut pool = HostPool::new(&given, seed).unwrap();
        let mut alive = alive_mask;
        let mut now: u64 = 0;
        let mut pending: Option<String> = None;
        let mut last: Option<String> = None;
        for step in steps {
            match step {
                Step::Next => {
                    let any_not_down = pool.addresses().any(|addr| {
                        !matches!(pool.health(addr), Some(HostHealth::Down { .. }))
                    });
                    let before: Vec<(String, Option<HostHealth>)> = pool
                        .addresses()
                        .map(|addr| (addr.to_owned(), pool.health(addr)))
                        .collect();
                    let due = |addr: &str| {
                        before.iter().any(|(other, health)| {
                            other == addr
                                && !matches!(health, Some(HostHealth::Down { retry_at_us, .. }) if *retry_at_us > now)
                        })
                    };
                    match pool.next(now) {
                        Choice::Connect(addr) => {
                            if let Some(redirected) = pending.take() {
                                // A pending redirect is the next choice.
                                prop_assert_eq!(&addr, &redirected);
                            } else {
                                // Retried no more often than its backoff allows.
                                prop_assert!(due(&addr), "{addr} chosen before its retry time");
                                // Never the same failing host twice in a row when another is due.
                                let was_down = before.iter().any(|(other, health)| {
                                    other == &addr && matches!(health, Some(HostHealth::Down { .. }))
                                });
                                if was_down && last.as_deref() == Some(addr.as_str()) {
                                    let other_due = before
                                        .iter()
                                        .any(|(other, _)| other != &addr && due(other));
                                    prop_assert!(!other_due, "{addr} again while another host was due");
                                }
                            }
                            let index: usize = addr
                                .trim_end_matches(":7400")
                                .rsplit('.')
                                .next()
                                .and_then(|n| n.parse().ok())
                                .unwrap();
                            if alive & (1 << index) != 0 {
                                pool.connected(&addr, now);
                            } else {
                                let retry_at = pool.failed(&addr, now).unwrap();
                                // Delays always within [min, max].
                                prop_assert!(retry_at - now >= BACKOFF_MIN_US);
                                prop_assert!(retry_at - now <= BACKOFF_MAX_US);
                            }
                            last = Some(addr);
                        }
                        Choice::WaitUntil(at) => {
                            // With a host not down, the pool never waits.
                            prop_assert!(!any_not_down, "waited while a host was not down");
                            prop_assert!(pending.is_none());
                            prop_assert!(at > now);
                        }
                    }
                }
                Step::Advance(us) => now += us,
                Step::Lost => {
                    if let Some(addr) = &last
                        && pool.failed(addr, now).is_some()
                        && pending.as_ref() == Some(addr)
                    {
                        pending = None;
                    }
                }
                Step::Redirect(n) => {
                    let addr = universe(n);
                    match pool.redirect(&addr) {
                        Ok(()) => pending = Some(addr),
                        Err(HostPoolError::TooMany { .. }) => {
                            // Only when every host is up or untried.
                            prop_assert_eq!(pool.len(), HOST_POOL_ADDRESSES_MAX);
                        }
                        Err(error) => prop_assert!(false, "unexpected {error}"),
                    }
                }
                Step::Flip(n) => alive ^= 1 << n,
            }
            // Redirects are bounded.
            prop_assert!(pool.len() <= HOST_POOL_ADDRESSES_MAX);
            prop_assert!(!pool.is_empty());
        }
    }
}
