//! The transaction log a master buffers for its replicas.

use std::collections::VecDeque;

/// One replicated change, in the shape of the wire protocol's log entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEntry<K, V> {
    /// `{write, Key, Value, LeaseMs}`
    Write {
        /// The key.
        key: K,
        /// The new value.
        value: V,
        /// Lease length in milliseconds, as the coordinator sent it.
        lease_ms: u64,
    },
    /// `{extend_lease, Key, Value, LeaseMs}`
    ExtendLease {
        /// The key.
        key: K,
        /// The value (unchanged by an extension).
        value: V,
        /// New lease length in milliseconds from now.
        lease_ms: u64,
    },
    /// `{release, Key}`
    Release {
        /// The key.
        key: K,
    },
    /// `{update, Key, Value}`
    Update {
        /// The key.
        key: K,
        /// The new value; the expiry is kept.
        value: V,
    },
}

pub(crate) struct TransLog<K, V> {
    entries: VecDeque<LogEntry<K, V>>,
    limit: usize,
    dropped: u64,
}

impl<K, V> TransLog<K, V> {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            limit,
            dropped: 0,
        }
    }

    /// Appends an entry; past the limit the oldest entry is dropped (the
    /// replicas then catch up through later writes and extensions).
    pub(crate) fn push(&mut self, e: LogEntry<K, V>) {
        if self.entries.len() >= self.limit {
            self.dropped += 1;
            if self.entries.pop_front().is_none() {
                return; // limit 0: keep nothing
            }
        }
        self.entries.push_back(e);
    }

    /// Takes up to `max` entries, oldest first.
    pub(crate) fn take(&mut self, max: usize) -> Vec<LogEntry<K, V>> {
        let n = max.min(self.entries.len());
        self.entries.drain(..n).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}
