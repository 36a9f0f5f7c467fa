//! lockerd's configuration: the terms of configuration epochs (read and
//! built here) under the rules of [`locker_core::membership`].
//!
//! A configuration travels as the BEAM node builds it:
//! `#{epoch => {Counter, Proposer}, masters => [Node], replicas => [Node],
//! w => W, joint => none | {[Node], W}, mode => epoch | legacy}`.
//! Votes carry the epoch in their tag: `{'$locker_epoch', Epoch, Ref}`, or
//! `{'$locker_token', {'$locker_epoch', Epoch, Ref}, Token}`.

use erl_node::term::{Atom, Term};
pub use locker_core::membership::Epoch;
use locker_core::membership::Mode;
use locker_terms::{config_of, epoch_of, EpochTerm};

/// The epoch a request's tag carries, if any.
pub fn tag_epoch(tag: &Term) -> Option<Epoch> {
    match tag.as_tuple()? {
        [marker, inner, _] if marker.is_atom("$locker_token") => tag_epoch(inner),
        [marker, epoch, _] if marker.is_atom("$locker_epoch") => epoch_of(epoch),
        _ => None,
    }
}

/// The tag of a request that the epoch rule checks (votes, phase two
/// but `release`, and one-round requests but `undo`).
pub fn checked_tag(req: &Term) -> Option<&Term> {
    let items = req.as_tuple()?;
    let op = items.first()?.as_atom()?.as_str();
    match (op, items.len()) {
        ("get_write_lock", 4) => Some(&items[3]),
        ("write", 5) | ("update", 4) | ("extend_lease", 5) => Some(&items[1]),
        // One-round requests (`undo` gives back, like `release`).
        ("cond_write", 5) | ("cond_update", 5) | ("cond_extend", 5) | ("cond_release", 4) => {
            Some(&items[1])
        }
        _ => None,
    }
}

/// A configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Configuration {
    /// Its epoch.
    pub epoch: Epoch,
    /// Masters (sorted as the BEAM node sends them).
    pub masters: Vec<Term>,
    /// Replicas.
    pub replicas: Vec<Term>,
    /// Write quorum.
    pub w: i64,
    /// During a transition: the previous masters and W.
    pub joint: Option<(Vec<Term>, i64)>,
    /// How it was set.
    pub mode: Mode,
}

impl Configuration {
    /// Whether it can work (`locker_core::membership::config_fits`, the
    /// rule `change/3` applies): a configuration set through epochs
    /// without masters, with W larger than its masters or not a majority,
    /// or with an impossible joint old side is refused. One set by the
    /// original requests is taken as it is (the original semantics).
    pub fn fits(&self) -> bool {
        self.mode == Mode::Legacy
            || locker_core::membership::config_fits(
                self.masters.len(),
                self.w,
                self.joint.as_ref().map(|(m, w)| (m.len(), *w)),
            )
    }
}

impl Configuration {
    /// Reads a configuration map (`None`: malformed, bad input).
    pub fn of(t: &Term) -> Option<Self> {
        let c = config_of(t)?;
        if c.keys != 6 {
            return None;
        }
        let mode = match c.mode {
            m if m.is_atom("epoch") => Mode::Epoch,
            m if m.is_atom("legacy") => Mode::Legacy,
            _ => return None,
        };
        let terms = |v: Vec<Atom>| v.into_iter().map(Term::Atom).collect::<Vec<_>>();
        Some(Configuration {
            epoch: c.epoch,
            masters: terms(c.masters),
            replicas: terms(c.replicas),
            w: c.w,
            joint: c.joint.map(|(old, w)| (terms(old), w)),
            mode,
        })
    }

    /// As a term (the map the BEAM node builds).
    pub fn term(&self) -> Term {
        let joint = match &self.joint {
            None => Term::static_atom("none"),
            Some((old, w)) => Term::tuple(vec![Term::List(old.clone()), Term::Int(*w)]),
        };
        let mode = match self.mode {
            Mode::Epoch => Term::static_atom("epoch"),
            Mode::Legacy => Term::static_atom("legacy"),
        };
        Term::map(vec![
            (Term::static_atom("epoch"), self.epoch.term()),
            (
                Term::static_atom("masters"),
                Term::List(self.masters.clone()),
            ),
            (
                Term::static_atom("replicas"),
                Term::List(self.replicas.clone()),
            ),
            (Term::static_atom("w"), Term::Int(self.w)),
            (Term::static_atom("joint"), joint),
            (Term::static_atom("mode"), mode),
        ])
    }

    /// Every master that votes: the new and, during a transition, the old.
    pub fn voters(&self) -> Vec<Term> {
        let mut v = self.masters.clone();
        if let Some((old, _)) = &self.joint {
            for n in old {
                if !v.contains(n) {
                    v.push(n.clone());
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_carry_epochs() {
        let epoch = Term::tuple(vec![Term::Int(4), Term::atom("a@h")]);
        let plain = Term::tuple(vec![
            Term::atom("$locker_epoch"),
            epoch.clone(),
            Term::Int(1),
        ]);
        let token = Term::tuple(vec![
            Term::atom("$locker_token"),
            plain.clone(),
            Term::Int(9),
        ]);
        let want = Some(Epoch {
            counter: 4,
            proposer: "a@h".to_string(),
        });
        assert_eq!(tag_epoch(&plain), want);
        assert_eq!(tag_epoch(&token), want);
        assert_eq!(tag_epoch(&Term::Int(1)), None);
    }

    #[test]
    fn configurations_round_trip() {
        let c = Configuration {
            epoch: Epoch {
                counter: 2,
                proposer: "a@h".to_string(),
            },
            masters: vec![Term::atom("a@h"), Term::atom("b@h")],
            replicas: vec![],
            w: 2,
            joint: Some((vec![Term::atom("a@h")], 1)),
            mode: Mode::Epoch,
        };
        assert_eq!(Configuration::of(&c.term()), Some(c.clone()));
        assert_eq!(c.voters().len(), 2);
        assert_eq!(Configuration::of(&Term::Int(1)), None);
    }
}
