//! How keys and values sit in the store: a canonical encoding of the term
//! in a [`CompactBytes`] (24 bytes, inline up to 22), whose byte equality
//! is `=:=`. A typical lease (a 16-byte binary key, a pid value) then costs
//! its entry and nothing else: no allocation for either.
//!
//! A [`Term`] is already canonical (see [`erl_node::term`]); its encoding is
//! its external format without the version byte ([`codec::encode`]), which
//! `codec::decode_bare` turns back into the same term, so equal bytes mean
//! equal terms and equal terms encode alike. One exception: a pid that is
//! the whole key or value takes a short form when its node's name is in
//! the store's node table: [`PID_TAG`] (no external-format tag is below
//! 70), the node's index in the table (u32) and the pid's id, serial and
//! creation (u32 each, big-endian): 17 bytes instead of 15 plus the node
//! name (43 bytes for a pid of `locker_bench_1234@127.0.0.1`).
//!
//! The node table is append-only and bounded ([`MAX_NODES`] names,
//! [`MAX_NODE_BYTES`] bytes of name text): a name is added when a key or
//! value holding a pid of that node is encoded and the table has room for
//! it. The room left only shrinks, so a name refused once is refused for
//! good: every pid of a node encodes the same way for the life of the
//! store (short once its name is in the table, external format if it never
//! can be), which keeps the encoding a function of the term.
//!
//! [`StoreCodec::encode_lookup`] never adds a name (for readers outside
//! the `locker` task): a pid of a node not in the table takes the external
//! format, which is right whether the name was refused (then that is its
//! stored form) or never seen (then no stored key or value holds a pid of
//! that node in any form).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use locker_core::CompactBytes;
use parking_lot::RwLock;

use erl_node::codec;
use erl_node::term::{Atom, Pid, Term};

/// A stored key or value: the canonical encoding of a term.
pub type Stored = CompactBytes;

/// First byte of the short form of a pid (external-format tags are 70 and
/// above).
pub const PID_TAG: u8 = 1;

/// Length of the short form of a pid.
pub const PID_LEN: usize = 17;

/// Most node names the table holds.
pub const MAX_NODES: usize = 16_384;

/// Most bytes of node name text the table holds (names are at most 255
/// characters: this is what bounds hostile input, [`MAX_NODES`] what
/// bounds a real cluster).
pub const MAX_NODE_BYTES: usize = 1 << 20;

/// Scratch buffers above this are not kept for the next encoding.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

struct NodeTable {
    names: Vec<Atom>,
    index: HashMap<Atom, u32, ahash::RandomState>,
    bytes: usize,
    max_nodes: usize,
    max_bytes: usize,
}

impl NodeTable {
    /// Whether `name` may be added now. Both counts only grow, so once
    /// this is false for a name it stays false.
    fn admits(&self, name: &Atom) -> bool {
        self.names.len() < self.max_nodes
            && self.bytes.saturating_add(name.as_str().len()) <= self.max_bytes
    }
}

/// Encodes terms for the store and decodes them back; holds the node table
/// (shared by clones: the `locker` task and the dirty readers).
#[derive(Clone)]
pub struct StoreCodec(Arc<RwLock<NodeTable>>);

impl Default for StoreCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for StoreCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCodec")
            .field("nodes", &self.nodes())
            .finish()
    }
}

impl StoreCodec {
    /// A codec with an empty node table of the default bounds.
    pub fn new() -> Self {
        Self::with_limits(MAX_NODES, MAX_NODE_BYTES)
    }

    /// A codec whose node table holds at most `max_nodes` names and
    /// `max_bytes` bytes of name text.
    pub fn with_limits(max_nodes: usize, max_bytes: usize) -> Self {
        let max_nodes = max_nodes.min(u32::MAX as usize);
        Self(Arc::new(RwLock::new(NodeTable {
            names: Vec::new(),
            index: HashMap::default(),
            bytes: 0,
            max_nodes,
            max_bytes,
        })))
    }

    /// Names in the node table.
    pub fn nodes(&self) -> usize {
        self.0.read().names.len()
    }

    /// The encoding of `t` for storing, adding the node of a pid to the
    /// table if it has room.
    pub fn encode(&self, t: &Term) -> Stored {
        self.encode_with(t, true)
    }

    /// The encoding of `t` for a lookup only: the same bytes as
    /// [`Self::encode`] gives any key or value already stored, without
    /// changing the node table.
    pub fn encode_lookup(&self, t: &Term) -> Stored {
        self.encode_with(t, false)
    }

    fn node_index(&self, node: &Atom, admit: bool) -> Option<u32> {
        if let Some(i) = self.0.read().index.get(node) {
            return Some(*i);
        }
        if !admit {
            return None;
        }
        let mut table = self.0.write();
        if let Some(i) = table.index.get(node) {
            return Some(*i);
        }
        if !table.admits(node) {
            return None;
        }
        let i = table.names.len() as u32;
        table.names.push(node.clone());
        table.index.insert(node.clone(), i);
        table.bytes += node.as_str().len();
        Some(i)
    }

    fn encode_with(&self, t: &Term, admit: bool) -> Stored {
        if let Term::Pid(p) = t {
            if let Some(i) = self.node_index(&p.node, admit) {
                let mut b = [0u8; PID_LEN];
                b[0] = PID_TAG;
                b[1..5].copy_from_slice(&i.to_be_bytes());
                b[5..9].copy_from_slice(&p.id.to_be_bytes());
                b[9..13].copy_from_slice(&p.serial.to_be_bytes());
                b[13..17].copy_from_slice(&p.creation.to_be_bytes());
                return CompactBytes::new(&b);
            }
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.clear();
            codec::encode(t, &mut s);
            let c = CompactBytes::new(&s);
            if s.capacity() > SCRATCH_KEEP {
                *s = Vec::new();
            }
            c
        })
    }

    /// The term stored as `bytes`, or `None` if they are not an encoding
    /// this codec made.
    pub fn try_decode(&self, bytes: &[u8]) -> Option<Term> {
        if bytes.first() == Some(&PID_TAG) {
            if bytes.len() != PID_LEN {
                return None;
            }
            let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4"));
            let node = self.0.read().names.get(u32_at(1) as usize)?.clone();
            return Some(Term::pid(Pid {
                node,
                id: u32_at(5),
                serial: u32_at(9),
                creation: u32_at(13),
            }));
        }
        codec::decode_bare(bytes).ok()
    }

    /// The term stored as `bytes`. Only this codec writes stored bytes: a
    /// failure would be a bug, answered with the atom
    /// `locker_corrupt_term` (and a log line) rather than a crash.
    pub fn decode(&self, bytes: &[u8]) -> Term {
        self.try_decode(bytes).unwrap_or_else(|| {
            tracing::error!(?bytes, "stored bytes do not decode");
            if cfg!(debug_assertions) {
                panic!("stored bytes do not decode: {bytes:?}");
            }
            Term::static_atom("locker_corrupt_term")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use erl_node::term::Ref;

    fn pid(node: &str, id: u32) -> Term {
        Term::pid(Pid {
            node: Atom::new(node),
            id,
            serial: 3,
            creation: 0x6543_2100,
        })
    }

    fn samples() -> Vec<Term> {
        vec![
            Term::binary(&[7; 16]),
            Term::binary(b""),
            Term::binary(&[1; 300]),
            pid("a@h", 1),
            pid("a@h", 2),
            pid("b@h", 1),
            Term::tuple(vec![pid("a@h", 1), Term::NIL]),
            Term::List(vec![pid("c@h", 1)]),
            Term::atom("a@h"),
            Term::Int(1),
            Term::Int(-1 << 40),
            Term::reference(Ref::new(Atom::new("a@h"), 1, &[1, 2, 3])),
            Term::map(vec![(Term::Int(1), pid("a@h", 1))]),
        ]
    }

    #[test]
    fn bytes_are_equal_exactly_when_terms_are() {
        let c = StoreCodec::new();
        let ts = samples();
        for a in &ts {
            let ea = c.encode(a);
            assert_eq!(&c.decode(&ea), a);
            assert_eq!(c.encode(a), ea, "encoding is a function of the term");
            assert_eq!(c.encode_lookup(a), ea);
            for b in &ts {
                assert_eq!(c.encode(b) == ea, a == b, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn a_lease_of_a_16_byte_key_and_a_pid_needs_no_allocation() {
        let c = StoreCodec::new();
        let key = c.encode(&Term::binary(&[0xab; 16]));
        assert_eq!(key.len(), 21);
        assert!(key.is_inline());
        let node = "locker_bench_12345@some.rather.long.host.name";
        let value = c.encode(&pid(node, 77));
        assert_eq!(value.len(), PID_LEN);
        assert!(value.is_inline());
        assert_eq!(c.decode(&value), pid(node, 77));
        // Nested pids keep the external format.
        let t = Term::tuple(vec![pid(node, 77)]);
        assert_eq!(&*c.encode(&t), &codec::to_bytes(&t)[1..]);
    }

    #[test]
    fn lookups_do_not_grow_the_table() {
        let c = StoreCodec::new();
        let p = pid("x@h", 1);
        let looked = c.encode_lookup(&p);
        assert_eq!(c.nodes(), 0);
        assert_eq!(&*looked, &codec::to_bytes(&p)[1..]);
        let stored = c.encode(&p);
        assert_eq!(c.nodes(), 1);
        assert_eq!(stored.len(), PID_LEN);
        assert_eq!(c.encode_lookup(&p), stored);
        assert_eq!(c.decode(&looked), p);
    }

    #[test]
    fn a_full_table_keeps_every_encoding_stable() {
        // Room for two names of at most 8 bytes in all.
        let c = StoreCodec::with_limits(2, 8);
        let a1 = c.encode(&pid("a@h", 1));
        assert_eq!(a1.len(), PID_LEN);
        // Too long for the bytes left: refused, and for good.
        let long = c.encode(&pid("long@host", 1));
        assert!(long.len() > PID_LEN);
        let b1 = c.encode(&pid("b@h", 1));
        assert_eq!(b1.len(), PID_LEN);
        assert_eq!(c.nodes(), 2);
        // Full: a new node takes the external format, now and later.
        let z = c.encode(&pid("z@h", 1));
        assert!(z.len() > PID_LEN);
        for _ in 0..3 {
            assert_eq!(c.encode(&pid("a@h", 1)), a1);
            assert_eq!(c.encode(&pid("b@h", 1)), b1);
            assert_eq!(c.encode(&pid("z@h", 1)), z);
            assert_eq!(c.encode(&pid("long@host", 1)), long);
            assert_eq!(c.encode_lookup(&pid("z@h", 1)), z);
        }
        for (b, t) in [
            (&a1, pid("a@h", 1)),
            (&z, pid("z@h", 1)),
            (&long, pid("long@host", 1)),
        ] {
            assert_eq!(c.decode(b), t);
        }
        assert_ne!(c.encode(&pid("a@h", 2)), a1);
    }

    #[test]
    fn foreign_bytes_are_refused() {
        let c = StoreCodec::new();
        assert_eq!(c.try_decode(&[]), None);
        assert_eq!(
            c.try_decode(&[PID_TAG; PID_LEN]),
            None,
            "unknown node index"
        );
        assert_eq!(c.try_decode(&[PID_TAG, 0, 0]), None);
        assert_eq!(c.try_decode(&[131, 97, 1]), None, "a version byte");
        assert_eq!(c.try_decode(&[97, 1]), Some(Term::Int(1)));
        assert_eq!(c.try_decode(&[97, 1, 0]), None);
    }
}
