//! Background tasks tied to the step that started them.

/// A background task that stops when its owner goes away: a lease renewal, a reader running
/// ahead, a status watch. Dropping it aborts the task.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
