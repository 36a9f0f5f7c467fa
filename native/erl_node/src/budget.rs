//! One memory budget for the partial frames of all connections.
//!
//! A connection reads into a buffer of [`crate::connection`]'s base size;
//! a frame longer than that is read into a buffer sized for the whole
//! frame, and the bytes beyond the base size are claimed from the node's
//! [`ByteBudget`] first. When the budget lacks them the connection stops
//! reading (TCP pushes back on its peer) until other connections' frames
//! complete, or gives up and closes after a while. So `N` peers that each
//! start a frame of `--max-frame` bytes hold at most the budget between
//! them, not `N` times the largest frame.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// Bytes that partial frames may hold, over all connections.
pub(crate) struct ByteBudget {
    sem: Semaphore,
    total: usize,
    metrics: Arc<Metrics>,
}

impl ByteBudget {
    /// A budget of `total` bytes (at most [`Semaphore::MAX_PERMITS`]);
    /// what is held is mirrored in `metrics.partial_frame_bytes`.
    pub fn new(total: usize, metrics: Arc<Metrics>) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        ByteBudget {
            sem: Semaphore::new(total),
            total,
            metrics,
        }
    }

    /// The budget.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes claimed now.
    pub fn held(&self) -> usize {
        self.total - self.sem.available_permits()
    }

    fn publish(&self) {
        self.metrics
            .partial_frame_bytes
            .store(self.held() as u64, Ordering::Relaxed);
    }
}

/// One connection's share of a [`ByteBudget`]; given back when dropped.
pub(crate) struct Claim {
    budget: Arc<ByteBudget>,
    held: usize,
}

impl Claim {
    /// An empty claim.
    pub fn new(budget: Arc<ByteBudget>) -> Self {
        Claim { budget, held: 0 }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }

    /// Raises the claim to `n` bytes if the budget has them now.
    pub fn try_grow_to(&mut self, n: usize) -> bool {
        if n <= self.held {
            return true;
        }
        let Ok(more) = u32::try_from(n - self.held) else {
            return false;
        };
        match self.budget.sem.try_acquire_many(more) {
            Ok(p) => {
                p.forget();
                self.held = n;
                self.budget.publish();
                true
            }
            Err(_) => false,
        }
    }

    /// Raises the claim to `n` bytes, waiting for other claims to shrink
    /// (first come, first served). Never completes if `n` is more than the
    /// whole budget. Dropping the future gives back what it had gathered.
    pub async fn grow_to(&mut self, n: usize) {
        if n <= self.held {
            return;
        }
        let Ok(more) = u32::try_from(n - self.held) else {
            return std::future::pending().await;
        };
        if let Ok(p) = self.budget.sem.acquire_many(more).await {
            p.forget();
            self.held = n;
            self.budget.publish();
        }
    }

    /// Lowers the claim to `n` bytes (nothing if it holds no more).
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.held {
            self.budget.sem.add_permits(self.held - n);
            self.held = n;
            self.budget.publish();
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(total: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget::new(total, Arc::new(Metrics::default())))
    }

    fn gauge(b: &ByteBudget) -> u64 {
        b.metrics.partial_frame_bytes.load(Ordering::Relaxed)
    }

    #[test]
    fn claims_never_exceed_the_budget() {
        let b = budget(100);
        let mut c1 = Claim::new(b.clone());
        let mut c2 = Claim::new(b.clone());
        assert!(c1.try_grow_to(60));
        assert!(!c2.try_grow_to(41), "60 + 41 > 100");
        assert_eq!(c2.held(), 0);
        assert!(c2.try_grow_to(40));
        assert_eq!((b.held(), gauge(&b)), (100, 100));
        // Growing by what one already holds costs only the difference.
        c1.shrink_to(10);
        assert!(c2.try_grow_to(90));
        assert_eq!(b.held(), 100);
        assert!(c1.try_grow_to(10), "already held");
        drop(c2);
        assert_eq!((b.held(), gauge(&b)), (10, 10));
        drop(c1);
        assert_eq!((b.held(), gauge(&b)), (0, 0));
    }

    #[tokio::test]
    async fn a_waiting_claim_gets_what_another_gives_back() {
        let b = budget(100);
        let mut holder = Claim::new(b.clone());
        assert!(holder.try_grow_to(80));
        let waiter = tokio::spawn({
            let b = b.clone();
            async move {
                let mut c = Claim::new(b);
                c.grow_to(50).await;
                c.held()
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        holder.shrink_to(40);
        assert_eq!(waiter.await.unwrap(), 50);
        // The waiter's claim was dropped with its task.
        assert_eq!(b.held(), 40);
    }

    #[tokio::test]
    async fn an_abandoned_wait_gives_back_what_it_gathered() {
        let b = budget(100);
        let mut holder = Claim::new(b.clone());
        assert!(holder.try_grow_to(70));
        let mut c = Claim::new(b.clone());
        let gave_up = tokio::time::timeout(Duration::from_millis(20), c.grow_to(60)).await;
        assert!(gave_up.is_err());
        assert_eq!(c.held(), 0);
        assert_eq!(b.held(), 70);
        let mut c3 = Claim::new(b.clone());
        assert!(c3.try_grow_to(30), "the abandoned wait kept nothing");
    }

    #[test]
    fn a_budget_above_the_semaphore_maximum_is_clamped() {
        let b = budget(usize::MAX);
        assert_eq!(b.total(), Semaphore::MAX_PERMITS);
        let mut c = Claim::new(b);
        assert!(!c.try_grow_to(u32::MAX as usize + 1), "over one acquire");
        assert!(c.try_grow_to(64 << 20));
    }
}
