//! Wake-ups between the tasks of one shard thread: a [`Wakeup`] is a one-slot, thread-local
//! notification (like a binary semaphore), and [`sleep_or_wake`] waits for either a deadline
//! or a notification.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Poll, Waker};
use std::time::Duration;

/// A notification one task waits on and others give. A notification given while nobody waits
/// is kept until the next wait (never lost, never counted twice).
#[derive(Debug, Default)]
pub struct Wakeup {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Wakeup {
    /// Wakes the waiting task, or the next one to wait.
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits for a notification and consumes it.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.notified.replace(false) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// Waits until `wakeup` is notified or `delay` has passed, whichever first. Returns whether a
/// notification arrived.
pub async fn sleep_or_wake(wakeup: &Wakeup, delay: Duration) -> bool {
    let mut sleep = pin!(monoio::time::sleep(delay));
    let mut wait = pin!(wakeup.wait());
    poll_fn(move |cx| {
        if wait.as_mut().poll(cx).is_ready() {
            return Poll::Ready(true);
        }
        sleep.as_mut().poll(cx).map(|()| false)
    })
    .await
}

/// Microseconds since the Unix epoch: the clock the shard logic and the store run on.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Context;

    #[test]
    fn a_notification_before_the_wait_is_kept_once() {
        let wakeup = Wakeup::default();
        wakeup.notify();
        wakeup.notify();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(pin!(wakeup.wait()).poll(&mut cx).is_ready());
        assert!(pin!(wakeup.wait()).poll(&mut cx).is_pending());
    }

    #[test]
    fn sleep_or_wake_returns_on_either() {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let wakeup = Wakeup::default();
            assert!(!sleep_or_wake(&wakeup, Duration::from_millis(1)).await);
            wakeup.notify();
            assert!(sleep_or_wake(&wakeup, Duration::from_secs(3600)).await);
        });
    }
}

/// Many tasks waiting for one condition (e.g. room in the mesh); all are woken together and
/// check the condition again.
#[derive(Debug, Default)]
pub struct WaitList {
    wakers: RefCell<Vec<Waker>>,
    epoch: Cell<u64>,
}

impl WaitList {
    /// Wakes every waiting task.
    pub fn notify_all(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Waits for the next `notify_all`.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        let start = self.epoch.get();
        poll_fn(move |cx| {
            if self.epoch.get() != start {
                return Poll::Ready(());
            }
            self.wakers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
    }
}
