//! `term`: erl_node's external term format decoder and its canonical form.
//!
//! Invariants (see fuzz/README.md):
//! - `codec::decode` and `codec::decode_prefix` never panic, whatever the
//!   bytes, and agree with each other;
//! - a decoded term is canonical (the forms `term.rs` documents: integers
//!   that fit `i64` are `Int`, big magnitudes without trailing zero bytes,
//!   no `-0.0`, sorted maps without duplicate keys, flattened list tails,
//!   reference ids without trailing zero words, bitstrings with 1..=7
//!   bits and zeroed unused bits, atoms of at most 255 characters);
//! - re-encoding round-trips: `decode(to_bytes(t)) == t`, and encoding is
//!   a function of the canonical form (`to_bytes` of that is the same);
//! - two terms decoded from one input are equal exactly when their
//!   encodings are, and then hash alike; the order agrees with equality;
//! - the same holds for the store's encoding of keys and values
//!   (`lockerd::stored`: short pids), which decodes back to the term;
//! - `display` never panics and stays bounded.

#![no_main]

use std::hash::BuildHasher;

use libfuzzer_sys::fuzz_target;
use erl_node::codec::{self, MAX_DEPTH};
use lockerd::stored::StoreCodec;
use erl_node::term::Term;

fn canonical(t: &Term, depth: usize) {
    assert!(depth < MAX_DEPTH, "deeper than MAX_DEPTH");
    match t {
        Term::Int(_) | Term::Port(_) | Term::Pid(_) | Term::Export(_) => {}
        Term::Big(b) => {
            assert!(
                b.magnitude.last().is_some_and(|x| *x != 0),
                "big: trailing zero byte"
            );
            if b.magnitude.len() <= 8 {
                let mut buf = [0u8; 8];
                buf[..b.magnitude.len()].copy_from_slice(&b.magnitude);
                let m = u64::from_le_bytes(buf);
                let fits = if b.negative {
                    m <= 1 << 63
                } else {
                    m <= i64::MAX as u64
                };
                assert!(!fits, "big that fits i64");
            }
        }
        Term::Float(f) => assert!(f.get().to_bits() != (-0.0f64).to_bits(), "-0.0 kept"),
        Term::Atom(a) => assert!(a.as_str().chars().count() <= 255, "atom too long"),
        Term::Ref(r) => assert!(
            r.ids.last().is_none_or(|w| *w != 0),
            "ref: trailing zero id"
        ),
        Term::Fun(f) => {
            canonical(&f.old_index, depth + 1);
            canonical(&f.old_uniq, depth + 1);
            assert!(matches!(f.old_index, Term::Int(_) | Term::Big(_)));
            assert!(matches!(f.old_uniq, Term::Int(_) | Term::Big(_)));
            for x in &f.free {
                canonical(x, depth + 1);
            }
        }
        Term::Tuple(items) => items.iter().for_each(|x| canonical(x, depth + 1)),
        Term::List(items) => items.iter().for_each(|x| canonical(x, depth + 1)),
        Term::Improper(b) => {
            assert!(!b.0.is_empty(), "improper list without elements");
            assert!(
                !matches!(b.1, Term::List(_) | Term::Improper(_)),
                "improper tail is a list"
            );
            b.0.iter().for_each(|x| canonical(x, depth + 1));
            canonical(&b.1, depth + 1);
        }
        Term::Map(pairs) => {
            assert!(
                pairs.windows(2).all(|w| w[0].0 < w[1].0),
                "map not sorted/unique"
            );
            for (k, v) in pairs.iter() {
                canonical(k, depth + 1);
                canonical(v, depth + 1);
            }
        }
        Term::Binary(_) => {}
        Term::Bits(b) => {
            assert!((1..=7).contains(&b.1), "bits {}", b.1);
            let last = *b.0.last().expect("bits: no bytes");
            assert_eq!(last & (0xff >> b.1), 0, "bits: unused bits set");
        }
    }
}

fn check(t: &Term) {
    canonical(t, 0);
    let bytes = codec::to_bytes(t);
    let back = codec::decode(&bytes).expect("re-encoded term does not decode");
    assert_eq!(&back, t, "round trip");
    assert_eq!(codec::to_bytes(&back), bytes, "encoding not canonical");
    let c = StoreCodec::new();
    let stored = c.encode(t);
    assert_eq!(&c.decode(&stored), t, "stored form round trip");
    assert_eq!(c.encode_lookup(t), stored, "lookup form differs");
    let shown = t.display(200);
    assert!(
        shown.len() < 200 * 8 + 64,
        "display unbounded: {}",
        shown.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let whole = codec::decode(data);
    let prefix = codec::decode_prefix(data);
    match (&whole, &prefix) {
        (Ok(t), Ok((p, used))) => {
            assert_eq!(t, p);
            assert_eq!(*used, data.len());
        }
        (Ok(_), Err(e)) => panic!("decode ok but decode_prefix {e:?}"),
        (Err(_), _) => {}
    }
    if let Ok(t) = &whole {
        check(t);
    }
    // A second term after the first, as in a frame (control + payload).
    if let Ok((a, used)) = prefix {
        if used > data.len() {
            panic!("decode_prefix used {used} of {}", data.len());
        }
        check(&a);
        if let Ok(b) = codec::decode(&data[used..]) {
            check(&b);
            let same = a == b;
            assert_eq!(
                same,
                codec::to_bytes(&a) == codec::to_bytes(&b),
                "== vs encoding"
            );
            let c = StoreCodec::new();
            assert_eq!(same, c.encode(&a) == c.encode(&b), "== vs stored form");
            assert_eq!(same, a.cmp(&b) == std::cmp::Ordering::Equal, "== vs Ord");
            if same {
                let s = std::collections::hash_map::RandomState::new();
                assert_eq!(s.hash_one(&a), s.hash_one(&b), "equal terms hash apart");
            }
        }
    }
});
