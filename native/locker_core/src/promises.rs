//! Write promises (phase one of a two-phase write): at most one per key.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::Micros;

pub(crate) struct Promises<K, T> {
    by_key: HashMap<K, (T, Micros), ahash::RandomState>,
    by_tag: HashMap<T, K, ahash::RandomState>,
    /// Promises whose tag was already in use for another key (a caller
    /// reusing a tag); scanned only when not empty.
    shared_tags: Vec<(T, K)>,
    /// Deadlines in creation order (TTL is constant, so also in deadline
    /// order); entries may be stale.
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
            Some((_, deadline)) if *deadline > now => true,
            Some((tag, _)) => {
                let tag = tag.clone();
                self.remove_pair(key, &tag);
                false
            }
            None => false,
        }
    }

    pub(crate) fn insert(&mut self, key: K, tag: T, deadline: Micros) {
        if self.by_tag.contains_key(&tag) {
            self.shared_tags.push((tag.clone(), key.clone()));
        } else {
            self.by_tag.insert(tag.clone(), key.clone());
        }
        self.queue.push_back((deadline, key.clone(), tag.clone()));
        self.by_key.insert(key, (tag, deadline));
    }

    /// Drops every promise held by `tag`; returns how many.
    pub(crate) fn remove_tag(&mut self, tag: &T) -> usize {
        let mut n = 0;
        if let Some(key) = self.by_tag.remove(tag) {
            n += usize::from(self.remove_key_if_tag(&key, tag));
        }
        if !self.shared_tags.is_empty() {
            let mut i = 0;
            while i < self.shared_tags.len() {
                if self.shared_tags[i].0 == *tag {
                    let (_, key) = self.shared_tags.swap_remove(i);
                    n += usize::from(self.remove_key_if_tag(&key, tag));
                } else {
                    i += 1;
                }
            }
        }
        n
    }

    fn remove_key_if_tag(&mut self, key: &K, tag: &T) -> bool {
        match self.by_key.get(key) {
            Some((t, _)) if t == tag => {
                self.by_key.remove(key);
                true
            }
            _ => false,
        }
    }

    fn remove_pair(&mut self, key: &K, tag: &T) {
        self.by_key.remove(key);
        if self.by_tag.get(tag) == Some(key) {
            self.by_tag.remove(tag);
        }
        self.shared_tags.retain(|(t, k)| !(t == tag && k == key));
    }

    /// Drops promises whose deadline is at or before `now`, up to `budget`.
    pub(crate) fn expire(&mut self, now: Micros, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            match self.queue.front() {
                Some((deadline, _, _)) if *deadline <= now => {}
                _ => break,
            }
            let (deadline, key, tag) = self.queue.pop_front().expect("front checked");
            let current =
                matches!(self.by_key.get(&key), Some((t, d)) if *t == tag && *d == deadline);
            if current {
                self.remove_pair(&key, &tag);
                n += 1;
            }
        }
        // Stale queue entries (promises already used) are skipped lazily;
        // keep the queue from growing without bound under heavy traffic.
        if self.queue.len() > 4 * self.by_key.len() + 1024 {
            let by_key = &self.by_key;
            self.queue
                .retain(|(d, k, t)| matches!(by_key.get(k), Some((t2, d2)) if t2 == t && d2 == d));
        }
        n
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &T, Micros)> {
        self.by_key.iter().map(|(k, (t, d))| (k, t, *d))
    }

    pub(crate) fn clear(&mut self) {
        self.by_key.clear();
        self.by_tag.clear();
        self.shared_tags.clear();
        self.queue.clear();
    }
}
