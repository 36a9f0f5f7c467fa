//! Expiry index: which keys may expire when, in millisecond buckets.
//!
//! Entries are never removed when a lease is extended or released; the
//! sweep checks each popped key against its current lease and skips stale
//! entries. Sweeping costs O(expired + stale), never O(leases).

use std::collections::BTreeMap;

use crate::Micros;

/// The first instant at which [`ExpiryIndex::pop_due`] hands out an entry
/// scheduled at `at`: the last microsecond of its millisecond bucket.
pub(crate) fn due_at(at: Micros) -> Micros {
    (at / 1_000).saturating_add(1).saturating_mul(1_000) - 1
}

pub(crate) struct ExpiryIndex<K> {
    buckets: BTreeMap<u64, Vec<K>>,
    entries: usize,
}

impl<K> ExpiryIndex<K> {
    pub(crate) fn new() -> Self {
        Self {
            buckets: BTreeMap::new(),
            entries: 0,
        }
    }

    /// Remembers that `key` may expire at `at`.
    pub(crate) fn schedule(&mut self, at: Micros, key: K) {
        self.buckets.entry(at / 1_000).or_default().push(key);
        self.entries += 1;
    }

    /// Pops up to `budget` keys from buckets whose whole millisecond is at
    /// or before `now`, oldest bucket first. Returns whether every due
    /// bucket was emptied.
    pub(crate) fn pop_due(&mut self, now: Micros, budget: usize, mut f: impl FnMut(K)) -> bool {
        let mut left = budget;
        while let Some(mut entry) = self.buckets.first_entry() {
            // Every instant in bucket b is < (b + 1) ms; the bucket is due
            // once all of them are <= now.
            if due_at(entry.key() * 1_000) > now {
                return true;
            }
            let keys = entry.get_mut();
            while let Some(k) = keys.pop() {
                self.entries -= 1;
                f(k);
                left -= 1;
                if left == 0 {
                    if keys.is_empty() {
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
            .filter(|b| due_at(b * 1_000) <= now)
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
