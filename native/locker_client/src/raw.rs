//! [`RawTerm`]: an Erlang term passed through serde as it is.

use std::cell::RefCell;

use erl_node::term::Term;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// The newtype name by which this crate's serializer and deserializer
/// recognise a [`RawTerm`].
pub(crate) const RAW_TERM_TOKEN: &str = "$locker_client::RawTerm";

thread_local! {
    /// The term a `RawTerm` hands to this crate's (de)serializer: set and
    /// taken within one synchronous call on one thread.
    static STASH: RefCell<Option<Term>> = const { RefCell::new(None) };
}

/// Any Erlang term, passed through [`crate::to_term`] and
/// [`crate::from_term`] unchanged: for pids, references, or terms that
/// have no Rust type. It serializes only to an Erlang term (other serde
/// formats get an error).
///
/// ```
/// use locker_client::{from_term, to_term, RawTerm, Term};
/// let t = Term::tuple(vec![Term::atom("node_local"), Term::Int(7)]);
/// assert_eq!(to_term(&RawTerm(t.clone())).unwrap(), t);
/// assert_eq!(from_term::<RawTerm>(&t).unwrap(), RawTerm(t));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawTerm(pub Term);

impl RawTerm {
    pub(crate) fn stash(t: Term) {
        STASH.with(|s| *s.borrow_mut() = Some(t));
    }

    pub(crate) fn take_stashed() -> Result<Term, Error> {
        STASH
            .with(|s| s.borrow_mut().take())
            .ok_or_else(|| Error::Encode("a RawTerm outside locker_client's serializer".into()))
    }
}

impl From<Term> for RawTerm {
    fn from(t: Term) -> Self {
        RawTerm(t)
    }
}

impl Serialize for RawTerm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RawTerm::stash(self.0.clone());
        let r = s.serialize_newtype_struct(RAW_TERM_TOKEN, &());
        // Another format leaves the stash full: empty it.
        STASH.with(|st| st.borrow_mut().take());
        r
    }
}

impl<'de> Deserialize<'de> for RawTerm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawTerm;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an Erlang term (only from locker_client's deserializer)")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                _d: D,
            ) -> Result<RawTerm, D::Error> {
                STASH
                    .with(|s| s.borrow_mut().take())
                    .map(RawTerm)
                    .ok_or_else(|| serde::de::Error::custom("no Erlang term to read"))
            }
        }
        d.deserialize_newtype_struct(RAW_TERM_TOKEN, V)
    }
}
