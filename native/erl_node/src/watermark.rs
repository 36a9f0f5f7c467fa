//! A count with a high and a low mark, for backpressure: whoever feeds the
//! count stops while it is above the high mark and resumes once it is down
//! to the low mark. Used for the signals queued in a mailbox
//! ([`crate::process`]) and the bytes queued for a connection's writer
//! ([`crate::connection`]); in both, a connection's reader is what stops,
//! so TCP pushes back on the peer (as a busy distribution port does on
//! the BEAM).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// See the module docs.
pub(crate) struct Watermark {
    count: AtomicUsize,
    drained: Notify,
    high: usize,
    low: usize,
}

impl Watermark {
    /// A zero count with these marks (`low <= high`).
    pub fn new(high: usize, low: usize) -> Self {
        Watermark {
            count: AtomicUsize::new(0),
            drained: Notify::new(),
            high,
            low,
        }
    }

    /// Counts `n` more.
    pub fn add(&self, n: usize) {
        self.count.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts `n` fewer; wakes the waiters of [`Watermark::drained`] when
    /// this brings the count down to the low mark.
    pub fn sub(&self, n: usize) {
        let before = self.count.fetch_sub(n, Ordering::AcqRel);
        if before > self.low && before - n <= self.low {
            self.drained.notify_waiters();
        }
    }

    /// The count.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether the count is above the high mark.
    pub fn is_high(&self) -> bool {
        self.count.load(Ordering::Relaxed) > self.high
    }

    /// Returns once the count is down to the low mark.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) <= self.low {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Counts of any size: a waiter wakes when one subtraction crosses the
    /// low mark, not before.
    #[tokio::test]
    async fn wakes_when_a_subtraction_crosses_the_low_mark() {
        let w = Arc::new(Watermark::new(8, 4));
        w.add(10);
        assert!(w.is_high());
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.drained().await }
        });
        w.sub(5); // 5: above the low mark
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(!w.is_high());
        w.sub(3); // 2: crossed
        waiter.await.unwrap();
    }
}
