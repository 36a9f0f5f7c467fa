//! locker's protocol terms on [`erl_node::term::Term`], read and built in
//! one place for the two crates that speak them on `erl_node`: `lockerd`
//! (the C-node master) and `locker_client` (the Rust client).
//!
//! The types and rules are in the pure `locker_core` (it knows no term
//! type); this crate only converts between them and `erl_node`'s terms.

use erl_node::term::{Atom, Term};
use locker_core::membership::Epoch;

/// The epoch of a term `{Counter, Proposer}` (a non-negative small
/// integer and an atom); `None` for anything else.
pub fn epoch_of(t: &Term) -> Option<Epoch> {
    match t.as_tuple()? {
        [Term::Int(c), Term::Atom(p)] if *c >= 0 => Some(Epoch {
            counter: *c as u64,
            proposer: p.as_str().to_string(),
        }),
        _ => None,
    }
}

/// An epoch as a term.
pub trait EpochTerm {
    /// `{Counter, Proposer}` (a counter beyond `i64::MAX`, which
    /// [`epoch_of`] never reads, is written as `i64::MAX`).
    fn term(&self) -> Term;
}

impl EpochTerm for Epoch {
    fn term(&self) -> Term {
        Term::tuple(vec![
            Term::Int(self.counter.min(i64::MAX as u64) as i64),
            Term::atom(&self.proposer),
        ])
    }
}

/// The fields of a configuration map as the BEAM node builds it:
/// `#{epoch => {Counter, Proposer}, masters => [Node], replicas => [Node],
/// w => W, joint => none | {[Node], W}, mode => Mode}`. The lists are as
/// they came (order and repeats kept); the mode is left to the reader.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigTerms<'a> {
    /// `epoch`.
    pub epoch: Epoch,
    /// `masters`.
    pub masters: Vec<Atom>,
    /// `replicas`.
    pub replicas: Vec<Atom>,
    /// `w` (positive).
    pub w: i64,
    /// `joint`: `none`, or the previous masters and their W (positive).
    pub joint: Option<(Vec<Atom>, i64)>,
    /// `mode` (`epoch` or `legacy` from a well-behaved node), unread.
    pub mode: &'a Term,
    /// How many keys the map has.
    pub keys: usize,
}

/// A list of atoms.
fn atoms(t: &Term) -> Option<Vec<Atom>> {
    t.as_list()?.iter().map(|n| n.as_atom().cloned()).collect()
}

/// A positive small integer.
fn positive(t: &Term) -> Option<i64> {
    match t {
        Term::Int(w) if *w > 0 => Some(*w),
        _ => None,
    }
}

/// Reads a configuration map (`None`: not a map, a key missing, or a field
/// malformed: bad input).
pub fn config_of(t: &Term) -> Option<ConfigTerms<'_>> {
    let Term::Map(pairs) = t else { return None };
    let get = |k: &str| pairs.iter().find(|(key, _)| key.is_atom(k)).map(|(_, v)| v);
    let joint = match get("joint")? {
        j if j.is_atom("none") => None,
        j => match j.as_tuple()? {
            [old, w] => Some((atoms(old)?, positive(w)?)),
            _ => return None,
        },
    };
    Some(ConfigTerms {
        epoch: epoch_of(get("epoch")?)?,
        masters: atoms(get("masters")?)?,
        replicas: atoms(get("replicas")?)?,
        w: positive(get("w")?)?,
        joint,
        mode: get("mode")?,
        keys: pairs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_round_trip_and_order_as_erlang_tuples() {
        let e = |c, p: &str| Epoch {
            counter: c,
            proposer: p.to_string(),
        };
        assert!(e(1, "z") < e(2, "a"));
        assert!(e(2, "a@h") < e(2, "b@h"));
        assert!(Epoch::initial() < e(1, "a"));
        let t = Term::tuple(vec![Term::Int(4), Term::atom("a@h")]);
        assert_eq!(epoch_of(&t), Some(e(4, "a@h")));
        assert_eq!(e(4, "a@h").term(), t);
        assert_eq!(epoch_of(&Epoch::initial().term()), Some(Epoch::initial()));
        let negative = Term::tuple(vec![Term::Int(-1), Term::atom("a@h")]);
        assert_eq!(epoch_of(&negative), None);
        assert_eq!(epoch_of(&Term::Int(1)), None);
    }

    #[test]
    fn configuration_maps() {
        let list = |ns: &[&str]| Term::List(ns.iter().map(|n| Term::atom(n)).collect());
        let map = |w: Term, joint: Term| {
            Term::map(vec![
                (
                    Term::atom("epoch"),
                    Term::tuple(vec![Term::Int(2), Term::atom("a@h")]),
                ),
                (Term::atom("masters"), list(&["b@h", "a@h", "b@h"])),
                (Term::atom("replicas"), list(&[])),
                (Term::atom("w"), w),
                (Term::atom("joint"), joint),
                (Term::atom("mode"), Term::atom("epoch")),
            ])
        };
        let joint = Term::tuple(vec![list(&["c@h"]), Term::Int(1)]);
        let m = map(Term::Int(2), joint.clone());
        let c = config_of(&m).unwrap();
        assert_eq!(c.epoch.counter, 2);
        assert_eq!(c.masters.len(), 3);
        assert_eq!(c.w, 2);
        assert_eq!(
            c.joint.as_ref().map(|(old, w)| (old.len(), *w)),
            Some((1, 1))
        );
        assert!(c.mode.is_atom("epoch"));
        assert_eq!(c.keys, 6);
        assert!(config_of(&map(Term::Int(2), Term::atom("none")))
            .unwrap()
            .joint
            .is_none());
        assert!(config_of(&map(Term::Int(0), joint)).is_none());
        assert!(config_of(&map(Term::Int(1), Term::Int(3))).is_none());
        assert!(config_of(&Term::Int(1)).is_none());
    }
}
