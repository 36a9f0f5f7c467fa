//! A sharded map of leases that any thread can read while one writer
//! changes it.
//!
//! Each shard keeps its entries dense in a vector and finds them through a
//! hash table of 4-byte positions: a lease costs its entry plus about ten
//! bytes of index, instead of an entry-sized slot per bucket of a hash
//! table that is between half and seven eighths full.
//!
//! With the cargo feature `dashmap` the same API is served by
//! `dashmap::DashMap` instead (for the A/B of bench/README.md; removal by
//! the expiry index's hash goes through dashmap's raw API).

use std::borrow::Borrow;
use std::hash::Hash;

use crate::Micros;

#[cfg(feature = "dashmap")]
pub use dash::LeaseMap;
#[cfg(not(feature = "dashmap"))]
pub use dense::LeaseMap;

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

#[cfg(not(feature = "dashmap"))]
mod dense {
    use super::*;
    use hashbrown::HashTable;
    use parking_lot::RwLock;

    const SHARDS: usize = 64;

    struct Shard<K, V> {
        entries: Vec<(K, Lease<V>)>,
        index: HashTable<u32>,
    }

    impl<K, V> Shard<K, V> {
        const fn new() -> Self {
            Self {
                entries: Vec::new(),
                index: HashTable::new(),
            }
        }
    }

    /// Leases by key, split over shards so that readers on different keys do
    /// not touch the same lock word.
    ///
    /// Reads take a shard's read lock; the entry may be expired, so callers
    /// check [`Lease::is_valid_at`] (or use [`LeaseMap::get_valid`]).
    pub struct LeaseMap<K, V> {
        shards: Box<[RwLock<Shard<K, V>>]>,
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
            let shards = (0..SHARDS).map(|_| RwLock::new(Shard::new())).collect();
            Self {
                shards,
                hasher: ahash::RandomState::new(),
            }
        }

        /// The hash this map files `key` under (what the expiry index keeps).
        #[inline]
        pub fn hash_of<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
            self.hasher.hash_one(key)
        }

        #[inline]
        fn shard(&self, hash: u64) -> &RwLock<Shard<K, V>> {
            // High bits pick the shard; hashbrown uses the low and top-7 bits.
            &self.shards[((hash >> 40) as usize) % SHARDS]
        }

        /// Runs `f` on the lease stored under `key`, expired or not.
        #[inline]
        pub fn read<Q, R>(&self, key: &Q, f: impl FnOnce(&Lease<V>) -> R) -> Option<R>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            let hash = self.hash_of(key);
            let shard = self.shard(hash).read();
            let entries = &shard.entries;
            shard
                .index
                .find(hash, |&i| entries[i as usize].0.borrow() == key)
                .map(|&i| f(&entries[i as usize].1))
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
            let hash = self.hash_of(&key);
            let mut guard = self.shard(hash).write();
            let shard = &mut *guard;
            let entries = &mut shard.entries;
            if let Some(&i) = shard.index.find(hash, |&i| entries[i as usize].0 == key) {
                entries[i as usize].1 = lease;
                return;
            }
            if entries.len() == entries.capacity() {
                // Grow by a quarter, not double: less slack in a large map.
                entries.reserve_exact((entries.len() / 4).max(16));
            }
            let pos = u32::try_from(entries.len()).expect("fewer than 2^32 leases per shard");
            entries.push((key, lease));
            let hasher = &self.hasher;
            let entries = &shard.entries;
            shard
                .index
                .insert_unique(hash, pos, |&i| hasher.hash_one(&entries[i as usize].0));
        }

        /// Changes the lease under `key` in place; returns what `f` returned,
        /// or `None` when the key is absent.
        pub fn modify<Q, R>(&self, key: &Q, f: impl FnOnce(&mut Lease<V>) -> R) -> Option<R>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            let hash = self.hash_of(key);
            let mut guard = self.shard(hash).write();
            let shard = &mut *guard;
            let entries = &shard.entries;
            let i = *shard
                .index
                .find(hash, |&i| entries[i as usize].0.borrow() == key)?;
            Some(f(&mut shard.entries[i as usize].1))
        }

        /// Removes `key` if `pred` holds for its lease; returns the removed lease.
        pub fn remove_if<Q>(
            &self,
            key: &Q,
            pred: impl FnOnce(&Lease<V>) -> bool,
        ) -> Option<Lease<V>>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            let hash = self.hash_of(key);
            let mut guard = self.shard(hash).write();
            let shard = &mut *guard;
            let entries = &shard.entries;
            let i = *shard
                .index
                .find(hash, |&i| entries[i as usize].0.borrow() == key)?;
            if !pred(&shard.entries[i as usize].1) {
                return None;
            }
            Some(self.remove_at(shard, hash, i).1)
        }

        /// Removes every expired lease filed under `hash` (normally one key)
        /// and gives each removed key and lease to `f`. This is how the expiry
        /// index, which keeps hashes rather than keys, sweeps.
        pub fn remove_expired_by_hash(
            &self,
            hash: u64,
            now: Micros,
            mut f: impl FnMut(K, Lease<V>),
        ) {
            let mut guard = self.shard(hash).write();
            let shard = &mut *guard;
            loop {
                let entries = &shard.entries;
                let hasher = &self.hasher;
                let found = shard.index.find(hash, |&i| {
                    let (k, l) = &entries[i as usize];
                    !l.is_valid_at(now) && hasher.hash_one(k) == hash
                });
                let Some(&i) = found else { return };
                let (k, l) = self.remove_at(shard, hash, i);
                f(k, l);
            }
        }

        /// Removes the entry at position `i` (filed under `hash`), moving the
        /// last entry into its place.
        fn remove_at(&self, shard: &mut Shard<K, V>, hash: u64, i: u32) -> (K, Lease<V>) {
            if let Ok(slot) = shard.index.find_entry(hash, |&j| j == i) {
                slot.remove();
            }
            let last = (shard.entries.len() - 1) as u32;
            let removed = shard.entries.swap_remove(i as usize);
            if i != last {
                let moved_hash = self.hasher.hash_one(&shard.entries[i as usize].0);
                if let Some(slot) = shard.index.find_mut(moved_hash, |&j| j == last) {
                    *slot = i;
                }
            }
            removed
        }

        /// Number of stored leases, expired ones not yet swept included.
        pub fn len(&self) -> usize {
            self.shards.iter().map(|s| s.read().entries.len()).sum()
        }

        /// Whether no lease is stored.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Calls `f` on every stored lease (shard by shard, not a snapshot).
        pub fn for_each(&self, mut f: impl FnMut(&K, &Lease<V>)) {
            for shard in self.shards.iter() {
                for (k, l) in shard.read().entries.iter() {
                    f(k, l);
                }
            }
        }

        /// Drops every lease.
        pub fn clear(&self) {
            for shard in self.shards.iter() {
                *shard.write() = Shard::new();
            }
        }
    }
}

#[cfg(feature = "dashmap")]
mod dash {
    use super::*;
    use std::hash::{BuildHasher, Hasher};

    use dashmap::DashMap;

    /// Leases by key in a `DashMap` (dashmap's default shard count).
    pub struct LeaseMap<K, V> {
        map: DashMap<K, Lease<V>, ahash::RandomState>,
    }

    impl<K: Hash + Eq, V> Default for LeaseMap<K, V> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<K: Hash + Eq, V> LeaseMap<K, V> {
        /// An empty map.
        pub fn new() -> Self {
            Self {
                map: DashMap::with_hasher(ahash::RandomState::new()),
            }
        }

        /// The hash this map files `key` under (what the expiry index keeps):
        /// the one dashmap computes (spelled as dashmap does, which
        /// `hash_one` would match only without ahash's specialization).
        #[inline]
        #[allow(clippy::manual_hash_one)]
        pub fn hash_of<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
            let mut h = self.map.hasher().build_hasher();
            key.hash(&mut h);
            h.finish()
        }

        /// Runs `f` on the lease stored under `key`, expired or not.
        #[inline]
        pub fn read<Q, R>(&self, key: &Q, f: impl FnOnce(&Lease<V>) -> R) -> Option<R>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.map.get(key).map(|r| f(r.value()))
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
            self.map.insert(key, lease);
        }

        /// Changes the lease under `key` in place; returns what `f` returned,
        /// or `None` when the key is absent.
        pub fn modify<Q, R>(&self, key: &Q, f: impl FnOnce(&mut Lease<V>) -> R) -> Option<R>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.map.get_mut(key).map(|mut r| f(r.value_mut()))
        }

        /// Removes `key` if `pred` holds for its lease; returns the removed lease.
        pub fn remove_if<Q>(
            &self,
            key: &Q,
            pred: impl FnOnce(&Lease<V>) -> bool,
        ) -> Option<Lease<V>>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.map.remove_if(key, |_, l| pred(l)).map(|(_, l)| l)
        }

        /// Removes every expired lease filed under `hash` (normally one key)
        /// and gives each removed key and lease to `f`.
        pub fn remove_expired_by_hash(
            &self,
            hash: u64,
            now: Micros,
            mut f: impl FnMut(K, Lease<V>),
        ) {
            let shard = &self.map.shards()[self.map.determine_shard(hash as usize)];
            let mut table = shard.write();
            loop {
                let found = table.find(hash, |(k, l)| {
                    !l.get().is_valid_at(now) && self.hash_of(k) == hash
                });
                let Some(bucket) = found else { return };
                // SAFETY: the bucket was just found in this table, under
                // its write lock, and is removed once.
                let ((k, l), _) = unsafe { table.remove(bucket) };
                f(k, l.into_inner());
            }
        }

        /// Number of stored leases, expired ones not yet swept included.
        pub fn len(&self) -> usize {
            self.map.len()
        }

        /// Whether no lease is stored.
        pub fn is_empty(&self) -> bool {
            self.map.is_empty()
        }

        /// Calls `f` on every stored lease (shard by shard, not a snapshot).
        pub fn for_each(&self, mut f: impl FnMut(&K, &Lease<V>)) {
            for r in self.map.iter() {
                f(r.key(), r.value());
            }
        }

        /// Drops every lease (and the tables' memory).
        pub fn clear(&self) {
            for shard in self.map.shards() {
                drop(std::mem::take(&mut *shard.write()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(v: u32, at: Micros) -> Lease<u32> {
        Lease {
            value: v,
            expires_at: at,
            token: 0,
        }
    }

    #[test]
    fn dense_entries_survive_removals_in_any_order() {
        let m: LeaseMap<u32, u32> = LeaseMap::new();
        for k in 0..5_000 {
            m.insert(k, lease(k, 10));
        }
        for k in (0..5_000).step_by(3) {
            assert_eq!(m.remove_if(&k, |_| true).map(|l| l.value), Some(k));
        }
        for k in 0..5_000 {
            let expect = (k % 3 != 0).then_some(k);
            assert_eq!(m.get_valid(&k, 0), expect, "key {k}");
        }
        assert_eq!(m.len(), 5_000 - 1_667);
        m.insert(7, lease(70, 10));
        assert_eq!(m.get_valid(&7, 0), Some(70));
    }

    #[test]
    fn remove_expired_by_hash_only_takes_expired_leases_of_that_hash() {
        let m: LeaseMap<u32, u32> = LeaseMap::new();
        m.insert(1, lease(1, 5));
        m.insert(2, lease(2, 50));
        let mut got = Vec::new();
        m.remove_expired_by_hash(m.hash_of(&2), 10, |k, _| got.push(k));
        assert!(got.is_empty(), "key 2 is still valid");
        m.remove_expired_by_hash(m.hash_of(&1), 10, |k, _| got.push(k));
        assert_eq!(got, vec![1]);
        assert_eq!(m.len(), 1);
    }
}
