//! The configuration the client coordinates under (its view of the
//! cluster), and the terms of configuration epochs (docs/protocol.md,
//! "Configurations and epochs").
//!
//! The client starts with the masters, replicas and W it was built with,
//! at the initial epoch `{0, none}`, and tags every vote with its epoch:
//! `{'$locker_epoch', Epoch, Ref}` (and `{'$locker_token',
//! {'$locker_epoch', Epoch, Ref}, Token}` for acquisitions). Masters that
//! do not know epochs (original ones, or set by the original requests)
//! take the tag as an opaque term; a master set through epochs refuses
//! it with `{error, {config_epoch, Its}}` until the client has the
//! configuration of that epoch, which it then asks for (only such a
//! master is ever sent `{'$locker_config', get}`: an original server
//! crashes on requests it does not know).

use erl_node::term::{Atom, Term};
pub(crate) use locker_core::membership::Epoch;
use locker_terms::{config_of, epoch_of, EpochTerm};

/// The epoch of a refusal `{error, {config_epoch, Epoch}}`, if `reply` is
/// one.
pub(crate) fn refused_epoch(reply: &Term) -> Option<Epoch> {
    match reply.as_tuple()? {
        [e, inner] if e.is_atom("error") => match inner.as_tuple()? {
            [c, epoch] if c.is_atom("config_epoch") => epoch_of(epoch),
            _ => None,
        },
        _ => None,
    }
}

/// The reason of a refusal `{error, Reason}` whose reason is an atom.
pub(crate) fn refusal_atom(reply: &Term) -> Option<&str> {
    match reply.as_tuple()? {
        [e, Term::Atom(r)] if e.is_atom("error") => Some(r.as_str()),
        _ => None,
    }
}

/// A configuration: what the client coordinates under.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct View {
    /// Its epoch (`{0, none}` until one is learnt from the masters).
    pub epoch: Epoch,
    /// The masters (sorted).
    pub masters: Vec<Atom>,
    /// The replicas (sorted).
    pub replicas: Vec<Atom>,
    /// The write quorum.
    pub w: usize,
    /// During a transition: the previous masters and W.
    pub joint: Option<(Vec<Atom>, usize)>,
    /// Learnt from the masters (set through epochs): every voter knows
    /// epochs and may be asked for its configuration.
    pub learnt: bool,
}

/// Sorted, without repeats.
fn sorted(mut v: Vec<Atom>) -> Vec<Atom> {
    v.sort();
    v.dedup();
    v
}

impl View {
    /// The view a client is built with.
    pub fn initial(masters: Vec<Atom>, replicas: Vec<Atom>, w: usize) -> Self {
        View {
            epoch: Epoch::initial(),
            masters,
            replicas,
            w,
            joint: None,
            learnt: false,
        }
    }

    /// A configuration map a master reported (`{'$locker_config', get}`):
    /// `None` unless well formed; `Some((view, eligible))` where `eligible`
    /// says whether it may be taken (set through epochs, and it fits:
    /// `locker_core::membership::config_fits`).
    pub fn of(t: &Term) -> Option<(Self, bool)> {
        let c = config_of(t)?;
        let epoch_mode = c.mode.is_atom("epoch");
        let view = View {
            epoch: c.epoch,
            masters: sorted(c.masters),
            replicas: sorted(c.replicas),
            w: usize::try_from(c.w).ok()?,
            joint: match c.joint {
                None => None,
                Some((old, w)) => Some((sorted(old), usize::try_from(w).ok()?)),
            },
            learnt: true,
        };
        let fits = locker_core::membership::config_fits(
            view.masters.len(),
            view.w as i64,
            view.joint.as_ref().map(|(m, w)| (m.len(), *w as i64)),
        );
        Some((view, epoch_mode && fits))
    }

    /// Every master that votes: the new and, during a transition, the old.
    pub fn voters(&self) -> Vec<Atom> {
        let mut v = self.masters.clone();
        if let Some((old, _)) = &self.joint {
            v.extend(old.iter().cloned());
        }
        v.sort();
        v.dedup();
        v
    }

    /// What a success needs: `w` of each set (the old side first during a
    /// transition, then the new one).
    pub fn quorums(&self) -> Vec<(Vec<Atom>, usize)> {
        match &self.joint {
            None => vec![(self.masters.clone(), self.w)],
            Some((old, old_w)) => vec![(old.clone(), *old_w), (self.masters.clone(), self.w)],
        }
    }

    /// The voters, then the replicas that are not voters.
    pub fn everyone(&self) -> Vec<Atom> {
        let mut all = self.voters();
        let extra: Vec<Atom> = self
            .replicas
            .iter()
            .filter(|r| !all.contains(r))
            .cloned()
            .collect();
        all.extend(extra);
        all
    }

    /// The tag of a vote made under this view: `{'$locker_epoch', Epoch,
    /// Ref}`.
    pub fn tag(&self, r: Term) -> Term {
        Term::tuple(vec![
            Term::static_atom("$locker_epoch"),
            self.epoch.term(),
            r,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        epoch: u64,
        masters: &[&str],
        w: i64,
        joint: Option<(&[&str], i64)>,
        mode: &str,
    ) -> Term {
        let list = |ns: &[&str]| Term::List(ns.iter().map(|n| Term::atom(n)).collect());
        Term::map(vec![
            (
                Term::atom("epoch"),
                Term::tuple(vec![Term::Int(epoch as i64), Term::atom("a@h")]),
            ),
            (Term::atom("masters"), list(masters)),
            (Term::atom("replicas"), list(&[])),
            (Term::atom("w"), Term::Int(w)),
            (
                Term::atom("joint"),
                match joint {
                    None => Term::atom("none"),
                    Some((old, ow)) => Term::tuple(vec![list(old), Term::Int(ow)]),
                },
            ),
            (Term::atom("mode"), Term::atom(mode)),
        ])
    }

    #[test]
    fn reported_configurations() {
        let (v, ok) =
            View::of(&config(3, &["b@h", "a@h"], 2, Some((&["c@h"], 1)), "epoch")).unwrap();
        assert!(ok);
        assert_eq!(v.epoch.counter, 3);
        assert_eq!(v.voters().len(), 3);
        assert_eq!(v.quorums().len(), 2);
        assert_eq!(v.quorums()[1].1, 2);
        // Legacy, or a W that is no majority: not taken.
        assert!(!View::of(&config(3, &["a@h"], 1, None, "legacy")).unwrap().1);
        assert!(
            !View::of(&config(3, &["a@h", "b@h", "c@h"], 1, None, "epoch"))
                .unwrap()
                .1
        );
        assert!(View::of(&Term::Int(1)).is_none());
    }

    #[test]
    fn refusals_and_epochs() {
        let e = Term::tuple(vec![Term::Int(4), Term::atom("b@h")]);
        let r = Term::tuple(vec![
            Term::atom("error"),
            Term::tuple(vec![Term::atom("config_epoch"), e]),
        ]);
        let got = refused_epoch(&r).unwrap();
        assert!(got > Epoch::initial());
        assert_eq!(got.counter, 4);
        assert_eq!(refused_epoch(&Term::atom("ok")), None);
        let nf = Term::tuple(vec![Term::atom("error"), Term::atom("not_found")]);
        assert_eq!(refusal_atom(&nf), Some("not_found"));
    }
}
