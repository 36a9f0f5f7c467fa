//! A sharded hash map of leases that any thread can read while one writer
//! changes it.

use std::borrow::Borrow;
use std::hash::Hash;

use hashbrown::HashTable;
use parking_lot::RwLock;

use crate::Micros;

const SHARDS: usize = 64;

/// A stored value and the instant it stops being valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease<V> {
    /// The value (for a lock: usually the owner's pid).
    pub value: V,
    /// The lease is valid strictly before this instant.
    pub expires_at: Micros,
    /// The fencing token of the acquisition that stored it (0: unknown, e.g.
    /// learned through the replication log or from an original node).
    pub token: u64,
}

impl<V> Lease<V> {
    /// Whether the lease still holds at `now`.
    #[inline]
    pub fn is_valid_at(&self, now: Micros) -> bool {
        now < self.expires_at
    }
}

type Shard<K, V> = RwLock<HashTable<(K, Lease<V>)>>;

/// Leases by key, split over shards so that readers on different keys do
/// not touch the same lock word.
///
/// Reads take a shard's read lock; the entry may be expired, so callers
/// check [`Lease::is_valid_at`] (or use [`LeaseMap::get_valid`]).
pub struct LeaseMap<K, V> {
    shards: Box<[Shard<K, V>]>,
    hasher: ahash::RandomState,
}

impl<K: Hash + Eq, V> Default for LeaseMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V> LeaseMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        let shards = (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect();
        Self {
            shards,
            hasher: ahash::RandomState::new(),
        }
    }

    #[inline]
    fn locate<Q: Hash + ?Sized>(&self, key: &Q) -> (u64, &Shard<K, V>) {
        let hash = self.hasher.hash_one(key);
        // High bits pick the shard; hashbrown uses the low and top-7 bits.
        let shard = ((hash >> 40) as usize) % SHARDS;
        (hash, &self.shards[shard])
    }

    /// Runs `f` on the lease stored under `key`, expired or not.
    #[inline]
    pub fn read<Q, R>(&self, key: &Q, f: impl FnOnce(&Lease<V>) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        let guard = shard.read();
        guard
            .find(hash, |(k, _)| k.borrow() == key)
            .map(|(_, lease)| f(lease))
    }

    /// The value under `key` if its lease is valid at `now`.
    pub fn get_valid<Q>(&self, key: &Q, now: Micros) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        self.read(key, |l| l.is_valid_at(now).then(|| l.value.clone()))
            .flatten()
    }

    /// Stores a lease, replacing any previous one for `key`.
    pub fn insert(&self, key: K, lease: Lease<V>) {
        let (hash, shard) = self.locate(&key);
        let mut guard = shard.write();
        match guard.find_mut(hash, |(k, _)| *k == key) {
            Some(slot) => slot.1 = lease,
            None => {
                guard.insert_unique(hash, (key, lease), |(k, _)| self.hasher.hash_one(k));
            }
        }
    }

    /// Changes the value under `key` in place if `f` says so; returns what
    /// `f` returned, or `None` when the key is absent.
    pub fn modify<Q, R>(&self, key: &Q, f: impl FnOnce(&mut Lease<V>) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        let mut guard = shard.write();
        guard
            .find_mut(hash, |(k, _)| k.borrow() == key)
            .map(|(_, lease)| f(lease))
    }

    /// Removes `key` if `pred` holds for its lease; returns the removed lease.
    pub fn remove_if<Q>(&self, key: &Q, pred: impl FnOnce(&Lease<V>) -> bool) -> Option<Lease<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        let mut guard = shard.write();
        match guard.find_entry(hash, |(k, _)| k.borrow() == key) {
            Ok(entry) if pred(&entry.get().1) => Some(entry.remove().0 .1),
            _ => None,
        }
    }

    /// Number of stored leases, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether no lease is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every stored lease (shard by shard, not a snapshot).
    pub fn for_each(&self, mut f: impl FnMut(&K, &Lease<V>)) {
        for shard in self.shards.iter() {
            for (k, l) in shard.read().iter() {
                f(k, l);
            }
        }
    }

    /// Drops every lease.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            *shard.write() = HashTable::new();
        }
    }
}
