//! Write promises (phase one of a two-phase write): at most one per key.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::Micros;

pub(crate) struct Promises<K, T> {
    by_key: HashMap<K, (T, Micros, u64), ahash::RandomState>,
    by_tag: HashMap<T, K, ahash::RandomState>,
    /// Promises whose tag was already in use for another key (a caller
    /// reusing a tag); scanned only when not empty.
    shared_tags: Vec<(T, K)>,
    /// Deadlines in deadline order (creation order while the TTL stays
    /// the same); entries may be stale.
    queue: VecDeque<(Micros, K, T)>,
}

impl<K: Hash + Eq + Clone, T: Hash + Eq + Clone> Promises<K, T> {
    pub(crate) fn new() -> Self {
        Self {
            by_key: HashMap::default(),
            by_tag: HashMap::default(),
            shared_tags: Vec::new(),
            queue: VecDeque::new(),
        }
    }

    /// Whether a live promise holds `key`; drops it first if it expired.
    pub(crate) fn is_held(&mut self, key: &K, now: Micros) -> bool {
        match self.by_key.get(key) {
            Some((_, deadline, _)) if *deadline > now => true,
            Some((tag, _, _)) => {
                let tag = tag.clone();
                self.remove_pair(key, &tag);
                false
            }
            None => false,
        }
    }

    /// The fencing token of the promise held on `key`, if any.
    pub(crate) fn token_of(&self, key: &K) -> Option<u64> {
        self.by_key.get(key).map(|(_, _, t)| *t)
    }

    /// Who holds `key` at `now`: `Some((true, token))` when `tag` holds a
    /// live promise on it, `Some((false, _))` when another tag does, `None`
    /// when no live promise does (an expired one is ignored, not dropped).
    pub(crate) fn live_holder(&self, key: &K, tag: &T, now: Micros) -> Option<(bool, u64)> {
        match self.by_key.get(key) {
            Some((t, deadline, token)) if *deadline > now => Some((t == tag, *token)),
            _ => None,
        }
    }

    pub(crate) fn insert(&mut self, key: K, tag: T, deadline: Micros, token: u64) {
        if self.by_tag.contains_key(&tag) {
            self.shared_tags.push((tag.clone(), key.clone()));
        } else {
            self.by_tag.insert(tag.clone(), key.clone());
        }
        // A TTL lowered since older promises were granted puts this
        // deadline before theirs: keep the queue sorted, or `expire` stops
        // at an older, later front and leaves this one past its deadline.
        // Usually the newest deadline is the latest: append.
        if self.queue.back().is_none_or(|(d, _, _)| *d <= deadline) {
            self.queue.push_back((deadline, key.clone(), tag.clone()));
        } else {
            let at = self.queue.partition_point(|(d, _, _)| *d <= deadline);
            self.queue.insert(at, (deadline, key.clone(), tag.clone()));
        }
        self.by_key.insert(key, (tag, deadline, token));
    }

    /// Drops every promise held by `tag`; returns the highest fencing
    /// token among them (0 if none).
    pub(crate) fn remove_tag(&mut self, tag: &T) -> u64 {
        let mut max = 0;
        if let Some(key) = self.by_tag.remove(tag) {
            max = max.max(self.remove_key_if_tag(&key, tag));
        }
        if !self.shared_tags.is_empty() {
            let mut i = 0;
            while i < self.shared_tags.len() {
                if self.shared_tags[i].0 == *tag {
                    let (_, key) = self.shared_tags.swap_remove(i);
                    max = max.max(self.remove_key_if_tag(&key, tag));
                } else {
                    i += 1;
                }
            }
        }
        max
    }

    fn remove_key_if_tag(&mut self, key: &K, tag: &T) -> u64 {
        match self.by_key.get(key) {
            Some((t, _, token)) if t == tag => {
                let token = *token;
                self.by_key.remove(key);
                token
            }
            _ => 0,
        }
    }

    fn remove_pair(&mut self, key: &K, tag: &T) {
        self.by_key.remove(key);
        if self.by_tag.get(tag) == Some(key) {
            self.by_tag.remove(tag);
        }
        self.shared_tags.retain(|(t, k)| !(t == tag && k == key));
    }

    /// Drops promises whose deadline is at or before `now`, up to `budget`;
    /// returns how many, and the highest fencing token among them.
    pub(crate) fn expire(&mut self, now: Micros, budget: usize) -> (usize, u64) {
        let mut n = 0;
        let mut max_token = 0;
        while n < budget {
            match self.queue.front() {
                Some((deadline, _, _)) if *deadline <= now => {}
                _ => break,
            }
            let (deadline, key, tag) = self.queue.pop_front().expect("front checked");
            let current = match self.by_key.get(&key) {
                Some((t, d, token)) if *t == tag && *d == deadline => Some(*token),
                _ => None,
            };
            if let Some(token) = current {
                self.remove_pair(&key, &tag);
                max_token = max_token.max(token);
                n += 1;
            }
        }
        // Stale queue entries (promises already used) are skipped lazily;
        // keep the queue from growing without bound under heavy traffic.
        if self.queue.len() > 4 * self.by_key.len() + 1024 {
            let by_key = &self.by_key;
            self.queue.retain(
                |(d, k, t)| matches!(by_key.get(k), Some((t2, d2, _)) if t2 == t && d2 == d),
            );
        }
        (n, max_token)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &T, Micros)> {
        self.by_key.iter().map(|(k, (t, d, _))| (k, t, *d))
    }

    pub(crate) fn clear(&mut self) {
        self.by_key.clear();
        self.by_tag.clear();
        self.shared_tags.clear();
        self.queue.clear();
    }
}
