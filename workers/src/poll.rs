//! When a queue worker looks for messages it was not woken for: a timer that keeps itself armed.
//!
//! apalis 1.0's interval strategies (`IntervalStrategy`, `BackoffStrategy`) replace the timer
//! that fired without polling the new one, so it registers no wake-up. When the timer fired while
//! a fetch was already under way and that fetch came back empty, nothing was armed any more: the
//! worker took no message until its next queue heartbeat (`worker.heartbeat_secs`) or a wake-up
//! from its own process. A lane pushed by another process, or by this one without a wake-up (a
//! lane left to its tenant's writer), waited up to that long — 56 s in
//! `reliability::a_worker_taken_for_dead_writes_nothing_until_it_beats_again` (heartbeats every
//! 60 s there). [`Ticker`] re-arms its timer in the same poll that sees it fire.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{PollSnapshot, PollStrategy};
use tokio::time::{Instant, Sleep};

/// A poll every `every`, always armed (see the module's docs). Steady rather than quicker while
/// there is work: the messages this process pushes wake its worker at once, so polls only find
/// what other processes push (and messages coming due), and each poll is a query of the queue —
/// on SQLite a write — whose cost a busy worker pays most.
pub struct Ticker {
    sleep: Pin<Box<Sleep>>,
    every: Duration,
}

impl Ticker {
    /// Polls every `every`.
    pub fn new(every: Duration) -> Ticker {
        Ticker {
            sleep: Box::pin(tokio::time::sleep(every)),
            every,
        }
    }
}

impl PollStrategy for Ticker {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut fired = false;
        // Re-armed and polled until it is pending: the next tick's wake-up is registered.
        while self.sleep.as_mut().poll(cx).is_ready() {
            fired = true;
            let next = Instant::now() + self.every;
            self.sleep.as_mut().reset(next);
        }
        if fired {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A tick that fired is followed by another one, woken by itself, with nothing else
    /// polling the worker in between — the case apalis's interval strategies left unarmed.
    #[tokio::test(start_paused = true)]
    async fn a_fired_tick_arms_the_next() {
        let mut ticker = Ticker::new(Duration::from_millis(20));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let snapshot = PollSnapshot::default();
        assert!(ticker.poll_drive(&mut cx, &snapshot).is_pending());
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the first tick woke the worker"
        );
        assert!(ticker.poll_drive(&mut cx, &snapshot).is_ready());
        // Nothing polls the ticker now; its next tick wakes the worker by itself.
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "the next tick was armed");
    }
}
