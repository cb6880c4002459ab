//! Background tasks tied to the step that started them.

/// A background task that stops when its owner goes away: a lease renewal, a reader running
/// ahead, a status watch. Dropping it aborts the task.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often [`unless_stopped`] looks at its stop flag: a stopping worker leaves a read it
/// waits for within this long.
pub const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Resolves once `stop` is raised, looked at every `every`.
pub async fn raised(stop: &std::sync::atomic::AtomicBool, every: std::time::Duration) {
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        tokio::time::sleep(every).await;
    }
}

/// `work`'s output, or `None` once `stop` is raised before it is done (looked at every
/// [`STOP_POLL`]; a result ready at the same time wins). `work` is dropped unfinished then: use
/// it for reads whose result the caller can do without (a page of members the next step reads
/// again), never for a write.
pub async fn unless_stopped<F: std::future::Future>(
    stop: &std::sync::atomic::AtomicBool,
    work: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = work => Some(out),
        () = raised(stop, STOP_POLL) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_read_is_left_once_the_stop_is_raised() {
        let stop = Arc::new(AtomicBool::new(false));
        let raise = {
            let stop = stop.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                stop.store(true, Ordering::Relaxed);
            }
        };
        let started = tokio::time::Instant::now();
        let slow = tokio::time::sleep(Duration::from_secs(60));
        let (out, ()) = tokio::join!(unless_stopped(&stop, slow), raise);
        assert_eq!(out, None);
        assert!(started.elapsed() <= Duration::from_secs(2) + STOP_POLL);
        // A raised flag leaves a read that is not ready at once, and keeps one that is.
        assert_eq!(unless_stopped(&stop, std::future::ready(7)).await, Some(7));
        assert_eq!(
            unless_stopped(&stop, tokio::time::sleep(Duration::from_millis(1))).await,
            None
        );
        // Not raised: the read's own answer.
        let calm = AtomicBool::new(false);
        assert_eq!(unless_stopped(&calm, async { 3 }).await, Some(3));
    }
}
