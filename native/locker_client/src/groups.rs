//! Cluster mode: routing keys over quorum groups, as `locker_groups.erl`
//! does (docs/protocol.md, "Groups").
//!
//! A key belongs to the group of highest score under rendezvous hashing:
//! the score of group `id` is the MD5 digest of `id` as a 64-bit
//! big-endian integer followed by the key's external term format as
//! `term_to_binary(Key, [{minor_version, 2}])` writes it ([`key_bytes`]),
//! compared as 16-byte big-endian numbers; on a tie the lower id. Adding a
//! group moves only the keys whose highest score becomes the new group's.
//!
//! [`Groups`] holds one [`Client`] per group (each a node of its own,
//! started with that group's masters and W) and routes every operation by
//! key. The function and `locker_groups.erl` are checked against the same
//! vectors (`tests/group_vectors.txt`).

use std::time::Duration;

use erl_node::codec;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{to_term, Client, Error, Quorum, Term};

/// The bytes a key is hashed by: its external term format (version byte
/// included) as Erlang's `term_to_binary(Key, [{minor_version, 2}])`
/// writes it. The one difference from this crate's encoder: a proper
/// list of integers 0..=255 shorter than 65536 elements is a `STRING_EXT`,
/// as in Erlang. Keys made of maps, pids, references or funs may be
/// encoded differently by the two sides: route such keys from one side.
pub fn key_bytes(key: &Term) -> Vec<u8> {
    let mut out = vec![131];
    encode(key, &mut out);
    out
}

fn encode(t: &Term, out: &mut Vec<u8>) {
    match t {
        Term::List(items)
            if !items.is_empty() && items.len() < 65536 && items.iter().all(is_byte) =>
        {
            out.push(107); // STRING_EXT
            out.extend_from_slice(&(items.len() as u16).to_be_bytes());
            out.extend(items.iter().filter_map(|i| i.as_int()).map(|i| i as u8));
        }
        Term::List(items) if !items.is_empty() => {
            out.push(108); // LIST_EXT
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for i in items {
                encode(i, out);
            }
            out.push(106); // NIL_EXT
        }
        Term::Tuple(items) => {
            if let Ok(small) = u8::try_from(items.len()) {
                out.push(104); // SMALL_TUPLE_EXT
                out.push(small);
            } else {
                out.push(105); // LARGE_TUPLE_EXT
                out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            }
            for i in items.iter() {
                encode(i, out);
            }
        }
        other => codec::encode(other, out),
    }
}

fn is_byte(t: &Term) -> bool {
    matches!(t, Term::Int(i) if (0..=255).contains(i))
}

/// The score of group `id` for a key's bytes.
pub fn score(id: u64, bytes: &[u8]) -> [u8; 16] {
    let mut ctx = md5::Context::new();
    ctx.consume(id.to_be_bytes());
    ctx.consume(bytes);
    ctx.finalize().0
}

/// The index in `ids` of the group `key` belongs to (`None` when `ids` is
/// empty).
pub fn pick(ids: &[u64], key: &Term) -> Option<usize> {
    if ids.len() == 1 {
        return Some(0);
    }
    let bytes = key_bytes(key);
    let mut best: Option<(usize, [u8; 16], u64)> = None;
    for (i, &id) in ids.iter().enumerate() {
        let s = score(id, &bytes);
        let better = match &best {
            None => true,
            Some((_, top, top_id)) => s > *top || (s == *top && id < *top_id),
        };
        if better {
            best = Some((i, s, id));
        }
    }
    best.map(|(i, _, _)| i)
}

/// Clients of several quorum groups, one per group, routing each
/// operation by key (see the module documentation). The groups and their
/// ids must be those the cluster's nodes have in their `groups`
/// application environment.
#[derive(Clone, Debug)]
pub struct Groups {
    ids: Vec<u64>,
    clients: Vec<Client>,
}

impl Groups {
    /// Groups from `(id, client)` pairs, each client started with its
    /// group's masters and W. Ids must be distinct.
    pub fn new(groups: Vec<(u64, Client)>) -> Result<Self, Error> {
        let mut ids: Vec<u64> = groups.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        if groups.is_empty() || ids.len() != groups.len() {
            return Err(Error::invalid(
                "groups",
                "at least one group, with distinct ids".to_string(),
            ));
        }
        let (ids, clients) = groups.into_iter().unzip();
        Ok(Groups { ids, clients })
    }

    /// The id of the group of `key`.
    pub fn group_of<K: Serialize + ?Sized>(&self, key: &K) -> Result<u64, Error> {
        Ok(self.ids[self.index(key)?])
    }

    /// The client of the group of `key`.
    pub fn client_for<K: Serialize + ?Sized>(&self, key: &K) -> Result<&Client, Error> {
        Ok(&self.clients[self.index(key)?])
    }

    fn index<K: Serialize + ?Sized>(&self, key: &K) -> Result<usize, Error> {
        let term = to_term(key)?;
        Ok(pick(&self.ids, &term).unwrap_or(0))
    }

    /// [`Client::lock`] on the key's group.
    pub async fn lock<K, V>(
        &self,
        key: &K,
        value: &V,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Quorum, Error>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
    {
        self.client_for(key)?.lock(key, value, lease, timeout).await
    }

    /// [`Client::lock_with_token`] on the key's group (tokens increase
    /// per key: a key's tokens all come from its group's masters).
    pub async fn lock_with_token<K, V>(
        &self,
        key: &K,
        value: &V,
        lease: Duration,
        timeout: Duration,
    ) -> Result<u64, Error>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
    {
        self.client_for(key)?
            .lock_with_token(key, value, lease, timeout)
            .await
    }

    /// [`Client::update`] on the key's group.
    pub async fn update<K, V, N>(
        &self,
        key: &K,
        value: &V,
        new_value: &N,
        timeout: Duration,
    ) -> Result<Quorum, Error>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
        N: Serialize + ?Sized,
    {
        self.client_for(key)?
            .update(key, value, new_value, timeout)
            .await
    }

    /// [`Client::extend_lease`] on the key's group.
    pub async fn extend_lease<K, V>(
        &self,
        key: &K,
        value: &V,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Quorum, Error>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
    {
        self.client_for(key)?
            .extend_lease(key, value, lease, timeout)
            .await
    }

    /// [`Client::release`] on the key's group.
    pub async fn release<K, V>(
        &self,
        key: &K,
        value: &V,
        timeout: Duration,
    ) -> Result<Quorum, Error>
    where
        K: Serialize + ?Sized,
        V: Serialize + ?Sized,
    {
        self.client_for(key)?.release(key, value, timeout).await
    }

    /// [`Client::dirty_read`] on a master of the key's group.
    pub async fn dirty_read<T, K>(&self, key: &K, timeout: Duration) -> Result<Option<T>, Error>
    where
        T: DeserializeOwned,
        K: Serialize + ?Sized,
    {
        self.client_for(key)?.dirty_read(key, timeout).await
    }

    /// Stops every group's client.
    pub async fn stop(&self) {
        for c in &self.clients {
            c.stop().await;
        }
    }
}
