//! Expiry index: which keys may expire when, in millisecond buckets.
//!
//! The index keeps the 8-byte hash the lease map files a key under, not
//! the key. Entries are never removed when a lease is extended or
//! released; the sweep removes whatever is expired under each popped hash
//! and skips stale entries. Sweeping costs O(expired + stale), never
//! O(leases).

use std::collections::BTreeMap;

use crate::Micros;

/// The first instant at which every lease of bucket `b` has expired: its
/// last microsecond (a lease is expired from its `expires_at` on).
fn bucket_due(b: u64) -> Micros {
    b.saturating_add(1).saturating_mul(1_000).saturating_sub(1)
}

/// The instant the sweep acts on a lease expiring at `at`: once its whole
/// millisecond bucket is past.
pub(crate) fn due_at(at: Micros) -> Micros {
    bucket_due(at / 1_000)
}

pub(crate) struct ExpiryIndex {
    buckets: BTreeMap<u64, Vec<u64>>,
    entries: usize,
}

impl ExpiryIndex {
    pub(crate) fn new() -> Self {
        Self {
            buckets: BTreeMap::new(),
            entries: 0,
        }
    }

    /// Remembers that the key filed under `hash` may expire at `at`.
    pub(crate) fn schedule(&mut self, at: Micros, hash: u64) {
        self.buckets.entry(at / 1_000).or_default().push(hash);
        self.entries += 1;
    }

    /// Pops up to `budget` hashes from buckets whose whole millisecond is
    /// at or before `now`, oldest bucket first. Returns whether every due
    /// bucket was emptied.
    pub(crate) fn pop_due(&mut self, now: Micros, budget: usize, mut f: impl FnMut(u64)) -> bool {
        let mut left = budget;
        while let Some(mut entry) = self.buckets.first_entry() {
            if bucket_due(*entry.key()) > now {
                return true;
            }
            let hashes = entry.get_mut();
            while let Some(h) = hashes.pop() {
                self.entries -= 1;
                f(h);
                left -= 1;
                if left == 0 {
                    if hashes.is_empty() {
                        entry.remove();
                    }
                    return self.next_due(now).is_none();
                }
            }
            entry.remove();
        }
        true
    }

    fn next_due(&self, now: Micros) -> Option<u64> {
        self.buckets
            .keys()
            .next()
            .copied()
            .filter(|&b| bucket_due(b) <= now)
    }

    /// Number of index entries (stale ones included).
    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.clear();
        self.entries = 0;
    }
}
