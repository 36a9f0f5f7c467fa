//! Processes waiting for a key to appear (`wait_for`) or to go away
//! (`wait_for_release`). The core only knows waiter ids; the adapter maps
//! them to whom to answer.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use crate::Micros;

/// Identifies a waiter; chosen by the adapter, unique among live waiters.
pub type WaiterId = u64;

/// What a waiter waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitKind {
    /// The key to get a value (`wait_for`).
    Value,
    /// The key to be released or to expire (`wait_for_release`).
    Release,
}

/// A waiter to answer now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake<V> {
    /// Answer `{ok, Value}`.
    Value(WaiterId, V),
    /// Answer `{ok, released}`.
    Released(WaiterId),
}

/// The result of registering a waiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitOutcome<V> {
    /// The condition already holds: answer `{ok, Value}` now.
    Value(V),
    /// The condition already holds: answer `{ok, released}` now.
    Released,
    /// Registered; the answer comes with a later [`Wake`].
    Pending,
}

pub(crate) struct Waiters<K> {
    by_key: HashMap<K, Vec<(WaiterId, WaitKind, Micros)>, ahash::RandomState>,
    by_deadline: BTreeMap<(Micros, WaiterId), K>,
}

impl<K: Hash + Eq + Clone> Waiters<K> {
    pub(crate) fn new() -> Self {
        Self {
            by_key: HashMap::default(),
            by_deadline: BTreeMap::new(),
        }
    }

    pub(crate) fn add(&mut self, key: K, id: WaiterId, kind: WaitKind, deadline: Micros) {
        self.by_deadline.insert((deadline, id), key.clone());
        self.by_key
            .entry(key)
            .or_default()
            .push((id, kind, deadline));
    }

    /// Whether anybody waits on `key` (cheap check before building wakes).
    #[inline]
    pub(crate) fn has(&self, key: &K) -> bool {
        !self.by_key.is_empty() && self.by_key.contains_key(key)
    }

    /// Removes and returns, in arrival order, the waiters of `kind` on `key`.
    pub(crate) fn take(&mut self, key: &K, kind: WaitKind) -> Vec<WaiterId> {
        let Some(list) = self.by_key.get_mut(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        list.retain(|&(id, k, deadline)| {
            if k == kind {
                out.push((id, deadline));
                false
            } else {
                true
            }
        });
        if list.is_empty() {
            self.by_key.remove(key);
        }
        for &(id, deadline) in &out {
            self.by_deadline.remove(&(deadline, id));
        }
        out.into_iter().map(|(id, _)| id).collect()
    }

    /// Removes waiters whose deadline is at or before `now`; returns them.
    pub(crate) fn expire(&mut self, now: Micros, budget: usize) -> Vec<WaiterId> {
        let mut out = Vec::new();
        while out.len() < budget {
            let Some(entry) = self.by_deadline.first_entry() else {
                break;
            };
            let (deadline, id) = *entry.key();
            if deadline > now {
                break;
            }
            let key = entry.remove();
            if let Some(list) = self.by_key.get_mut(&key) {
                list.retain(|&(i, _, _)| i != id);
                if list.is_empty() {
                    self.by_key.remove(&key);
                }
            }
            out.push(id);
        }
        out
    }

    /// Keys that have release waiters.
    pub(crate) fn release_keys(&self) -> impl Iterator<Item = &K> {
        self.by_key
            .iter()
            .filter(|(_, l)| l.iter().any(|&(_, k, _)| k == WaitKind::Release))
            .map(|(k, _)| k)
    }

    /// The earliest waiter deadline.
    pub(crate) fn next_deadline(&self) -> Option<Micros> {
        self.by_deadline.keys().next().map(|&(d, _)| d)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_deadline.len()
    }

    pub(crate) fn clear(&mut self) {
        self.by_key.clear();
        self.by_deadline.clear();
    }
}
