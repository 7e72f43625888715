//! One cancellation signal for every long operation: a collection run's tasks, the
//! client's attempts and backoff waits, compaction between months, the wait for
//! the compaction lock. Polled (`is_cancelled`) where work is synchronous, awaited
//! (`cancelled`) where it is not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// A cancellation signal shared by a run's tasks (SIGTERM, Ctrl-C).
#[derive(Clone, Default)]
pub struct Cancel(Arc<(AtomicBool, Notify)>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }
    pub fn is_cancelled(&self) -> bool {
        self.0 .0.load(Ordering::SeqCst)
    }
    /// Resolves once [`Cancel::cancel`] has been called.
    pub async fn cancelled(&self) {
        let notified = self.0 .1.notified();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_when_cancelled_and_later_waits_end_at_once() {
        let c = Cancel::new();
        assert!(!c.is_cancelled());
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.cancelled().await }
        });
        c.cancel();
        waiter.await.unwrap();
        assert!(c.is_cancelled());
        c.cancelled().await;
    }
}
