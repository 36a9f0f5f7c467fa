//! `lockerd`'s terms in the typed protocol layer
//! ([`locker_core::protocol`]): reading them ([`Wire`]), and the store's
//! codec as the protocol's [`Decode`] and [`Encode`].

use locker_core::protocol::{Decode, Encode, Integer, Name, WireTerm};

use erl_node::term::{BigInt, Term};

use crate::stored::{StoreCodec, Stored};

/// A [`Term`] as the protocol reads it (the same memory: a view).
#[repr(transparent)]
pub struct Wire(Term);

impl Wire {
    /// The view of a term.
    pub fn of(t: &Term) -> &Wire {
        // SAFETY: `Wire` is a transparent wrapper of `Term`.
        unsafe { &*(t as *const Term as *const Wire) }
    }

    /// The view of a slice of terms.
    pub fn slice(ts: &[Term]) -> &[Wire] {
        // SAFETY: `Wire` is a transparent wrapper of `Term`, so the slices
        // have the same layout.
        unsafe { &*(ts as *const [Term] as *const [Wire]) }
    }

    /// The term.
    pub fn term(&self) -> &Term {
        &self.0
    }
}

/// A big integer that fits `u64`.
fn big_u64(b: &BigInt) -> Option<u64> {
    let mut x = [0u8; 8];
    if b.negative || b.magnitude.len() > x.len() {
        return None;
    }
    x[..b.magnitude.len()].copy_from_slice(&b.magnitude);
    Some(u64::from_le_bytes(x))
}

impl WireTerm for Wire {
    fn is_atom(&self, name: Name) -> bool {
        self.0.is_atom(name.as_str())
    }

    fn integer(&self) -> Option<Integer> {
        match &self.0 {
            Term::Int(i) if *i < 0 => Some(Integer::Negative),
            Term::Int(i) => Some(Integer::Unsigned(*i as u64)),
            Term::Big(b) => Some(big_u64(b).map_or(Integer::Huge, Integer::Unsigned)),
            _ => None,
        }
    }

    fn float(&self) -> Option<f64> {
        match &self.0 {
            Term::Float(f) => Some(f.get()),
            _ => None,
        }
    }

    fn with_tuple<R>(&self, f: impl FnOnce(&[Self]) -> R) -> Option<R> {
        self.0.as_tuple().map(|items| f(Wire::slice(items)))
    }
}

impl Decode<Wire> for StoreCodec {
    type Key = Stored;
    type Value = Stored;
    /// Promise tags stay terms (they are shown by `get_debug_state`).
    type Tag = Term;

    fn key(&self, t: &Wire) -> Stored {
        self.encode(&t.0)
    }

    fn value(&self, t: &Wire) -> Stored {
        self.encode(&t.0)
    }

    fn tag(&self, t: &Wire) -> Term {
        t.0.clone()
    }
}

/// An unsigned integer term (big when above `i64::MAX`).
pub fn u64_term(n: u64) -> Term {
    match i64::try_from(n) {
        Ok(i) => Term::Int(i),
        Err(_) => {
            let b = n.to_le_bytes();
            let used = b.iter().rposition(|x| *x != 0).map_or(0, |i| i + 1);
            Term::Big(Box::new(BigInt {
                negative: false,
                magnitude: b[..used].into(),
            }))
        }
    }
}

impl Encode for StoreCodec {
    type Term = Term;
    type Key = Stored;
    type Value = Stored;

    fn atom(&self, name: Name) -> Term {
        Term::static_atom(name.as_str())
    }

    fn tuple(&self, items: &[Term]) -> Term {
        Term::tuple(items.to_vec())
    }

    fn uint(&self, n: u64) -> Term {
        u64_term(n)
    }

    fn key(&self, k: &Stored) -> Term {
        self.decode(k)
    }

    fn value(&self, v: &Stored) -> Term {
        self.decode(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locker_core::protocol::millis;

    #[test]
    fn integers() {
        let big = |negative, magnitude: &[u8]| {
            Wire(Term::Big(Box::new(BigInt {
                negative,
                magnitude: magnitude.into(),
            })))
        };
        assert_eq!(Wire(Term::Int(-1)).integer(), Some(Integer::Negative));
        assert_eq!(Wire(Term::Int(5)).integer(), Some(Integer::Unsigned(5)));
        assert_eq!(
            big(false, &[0xff; 8]).integer(),
            Some(Integer::Unsigned(u64::MAX))
        );
        assert_eq!(big(false, &[1; 9]).integer(), Some(Integer::Huge));
        assert_eq!(big(true, &[1; 9]).integer(), Some(Integer::Huge));
        assert_eq!(Wire(Term::atom("x")).integer(), None);
        assert_eq!(u64_term(u64::MAX), big(false, &[0xff; 8]).0);
        assert_eq!(millis(&Wire(Term::atom("infinity"))), Some(u64::MAX / 2000));
    }
}
