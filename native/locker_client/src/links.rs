//! Connections to the masters and replicas: one keeper task per node
//! that reconnects with exponential backoff and jitter, and what each
//! last attempt said (for [`crate::ClientBuilder::start`]'s errors).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use erl_node::{Atom, ConnectError, Node};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Reconnection delays: the first retry after `min`, doubling up to
/// `max`, each delay drawn uniformly from its upper half.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

/// What is known of one node's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// No attempt finished yet.
    Pending,
    /// Connected (at the last look).
    Up,
    /// The last attempt failed.
    Failed(ConnectError),
}

#[derive(Default)]
pub(crate) struct Links {
    status: Mutex<HashMap<Atom, Status>>,
    /// Notified on every status change.
    pub changed: Notify,
    /// Connection attempts made, over all nodes.
    pub attempts: AtomicU64,
}

impl Links {
    pub fn status(&self, n: &Atom) -> Status {
        self.status
            .lock()
            .get(n)
            .cloned()
            .unwrap_or(Status::Pending)
    }

    fn set(&self, n: &Atom, s: Status) {
        let changed = self.status.lock().insert(n.clone(), s.clone()) != Some(s);
        if changed {
            self.changed.notify_waiters();
        }
    }
}

/// A small xorshift generator for jitter, seeded from the clock.
struct Jitter(u64);

impl Jitter {
    fn new(salt: usize) -> Jitter {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Jitter((t ^ (salt as u64).rotate_left(17)) | 1)
    }

    /// A delay drawn uniformly from `[d / 2, d]`.
    fn draw(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let half = d / 2;
        let span = (d - half).as_micros().max(1) as u64;
        half + Duration::from_micros(self.0 % span)
    }
}

/// How often a keeper looks whether its connection is still up.
const POLL: Duration = Duration::from_millis(100);

/// Keeps `peer` connected until the node stops: while it is down, one
/// attempt at a time, spaced by the backoff (reset once connected).
pub(crate) async fn keep(node: Node, peer: Atom, links: Arc<Links>, backoff: Backoff) {
    let mut jitter = Jitter::new(Arc::as_ptr(&links) as usize ^ peer.as_str().len());
    let mut delay = backoff.min;
    while !node.is_stopping() {
        if node.is_connected(&peer) {
            links.set(&peer, Status::Up);
            delay = backoff.min;
            tokio::time::sleep(POLL).await;
            continue;
        }
        links.attempts.fetch_add(1, Ordering::Relaxed);
        match node.connect_now(&peer).await {
            Ok(()) => links.set(&peer, Status::Up),
            Err(e) => {
                tracing::debug!(%peer, error = %e, ?delay, "cannot connect; retrying after a delay");
                links.set(&peer, Status::Failed(e));
                tokio::time::sleep(jitter.draw(delay)).await;
                delay = (delay * 2).min(backoff.max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let mut j = Jitter::new(7);
        let d = Duration::from_millis(400);
        let draws: Vec<Duration> = (0..1000).map(|_| j.draw(d)).collect();
        assert!(draws.iter().all(|x| *x >= d / 2 && *x <= d));
        // Not a constant.
        assert!(draws.iter().any(|x| *x != draws[0]));
    }
}
