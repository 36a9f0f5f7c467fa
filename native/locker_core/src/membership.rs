//! Configuration epochs: the rules a node applies to votes and to
//! configurations (see `docs/protocol.md`, "Configurations and epochs").
//!
//! A configuration is set through epochs (`Mode::Epoch`, by
//! `locker_membership` on a BEAM node) or by the original requests
//! `set_nodes` and `set_w` (`Mode::Legacy`, the original semantics). The
//! rules are generic over the epoch type `E` (totally ordered as Erlang
//! orders `{Counter, Proposer}`): `lockerd` applies them to its terms; the
//! BEAM node applies the same rules in Erlang (`locker_store`,
//! `locker_server`).

/// A configuration epoch `{Counter, Proposer}`, ordered as Erlang orders
/// that tuple (the counter, then the proposer's node name, an atom,
/// compared by its text). Its term form (`{Counter, Proposer}`) is read
/// and built once, by the `locker_terms` crate, for `lockerd` and the Rust
/// client; the rules below are generic over the epoch type and are applied
/// to this one by both.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch {
    /// The counter.
    pub counter: u64,
    /// The proposer's node name (`none` for the initial epoch).
    pub proposer: String,
}

impl Epoch {
    /// `{0, none}`: a configuration never set through epochs.
    pub fn initial() -> Self {
        Epoch {
            counter: 0,
            proposer: "none".to_string(),
        }
    }
}

/// How a node's configuration was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Through epochs: votes and configurations are checked.
    Epoch,
    /// By the original requests (or never): nothing is checked.
    Legacy,
}

/// Whether a master refuses a vote or a phase two whose tag carries
/// `tag_epoch` (`None`: no epoch, an original coordinator): only in
/// `Mode::Epoch`, and only an epoch other than its own.
pub fn refuses_vote<E: PartialEq>(mode: Mode, own: &E, tag_epoch: Option<&E>) -> bool {
    mode == Mode::Epoch && tag_epoch.is_some_and(|e| e != own)
}

/// Whether a node refuses phase one from a coordinator whose tags carry no
/// epoch (an original coordinator, `lockerd`'s Rust client): only in
/// `Mode::Epoch`, and only when this node is not a voter of its own
/// configuration (a master the cluster removed, which such a coordinator
/// may still count in its old view).
pub fn refuses_untagged_vote(mode: Mode, is_voter: bool) -> bool {
    refuses_untagged(mode, is_voter, false, true)
}

/// Whether a node refuses a vote (`phase_one`) or a phase two (`write`,
/// `update`, `extend_lease`) whose tag carries no epoch (an original
/// coordinator): only in `Mode::Epoch`; phase one when this node is not a
/// voter of its own configuration (`refuses_untagged_vote`), and both
/// phases while its configuration is `joint` (between two epochs of a
/// change). An untagged coordinator counts only its old view's W: a lease
/// it stored on the old masters after they took the joint epoch would be
/// outside the horizon they noted, and the change could complete while it
/// lives (see docs/protocol.md, "Votes carry the epoch"). `release` is
/// never refused.
pub fn refuses_untagged(mode: Mode, is_voter: bool, joint: bool, phase_one: bool) -> bool {
    mode == Mode::Epoch && (joint || (phase_one && !is_voter))
}

/// What a node does with a configuration sent to be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// It is this node's configuration already: `ok`, nothing changes.
    Unchanged,
    /// Taken.
    Take,
    /// Refused: not newer than this node's epoch.
    Stale,
    /// Refused: made from another configuration than this node's.
    Conflict,
}

/// The install rule: a configuration `new` made from epoch `base` is taken
/// if it is newer than this node's epoch `own` and, when this node's
/// configuration was set through epochs, if `base` is `own`. `unchanged`
/// says whether `new` is this node's configuration already.
pub fn install<E: Ord>(mode: Mode, own: &E, unchanged: bool, base: &E, new: &E) -> Install {
    if unchanged {
        Install::Unchanged
    } else if new <= own {
        Install::Stale
    } else if mode == Mode::Epoch && own != base {
        Install::Conflict
    } else {
        Install::Take
    }
}

/// The fallback for clusters with original masters overwrites a node's
/// configuration unless it was set through epochs from another
/// configuration than the sender's (`base`).
pub fn accepts_overwrite<E: PartialEq>(mode: Mode, own: &E, base: &E) -> bool {
    mode == Mode::Legacy || own == base
}

/// A node that missed a change takes a newer configuration (set through
/// epochs) only from a node that is a master in its own configuration.
pub fn catches_up<E: Ord>(own: &E, new: &E, new_mode: Mode, from_is_master: bool) -> bool {
    from_is_master && new_mode == Mode::Epoch && new > own
}

/// Whether a quorum `w` of `n` masters can work, as `change/3` requires
/// of a new configuration: at least one master, `w <= n`, and `w` a
/// majority (`2 * w > n`, so that two quorums always meet).
pub fn quorum_fits(n: usize, w: i64) -> bool {
    let n = n as i64;
    n > 0 && w <= n && 2 * w > n
}

/// Whether a configuration set through epochs can be installed: its
/// quorum fits (`quorum_fits`), and so does its joint old side, if any
/// (`old_n` masters with `old_w`, as the previous configuration had;
/// one that was set by the original requests may have had a `w` that is
/// not a majority, so only `1 <= old_w <= old_n` is required there).
pub fn config_fits(n: usize, w: i64, joint: Option<(usize, i64)>) -> bool {
    quorum_fits(n, w)
        && joint.is_none_or(|(old_n, old_w)| old_n > 0 && old_w >= 1 && old_w <= old_n as i64)
}

/// Until when a master reports that leases of the configuration it left
/// may still live (its horizon, see docs/protocol.md, "The old leases"):
/// the instant `noted` when it took the new epoch (its longest live lease
/// then), or sooner if its longest live lease now (`longest_live`) ends
/// sooner (every lease of the old configuration that still lives is in
/// its store, so those it held were released or ran out); and, while it
/// abstains in safe mode (until `abstain_until`), not before then: it may
/// have forgotten leases that still live. Instants on one clock.
pub fn horizon_until<I: Ord>(noted: I, longest_live: I, abstain_until: I) -> I {
    noted.min(longest_live).max(abstain_until)
}

/// The expiry a master gives a lease that a phase two stores again with
/// the value it already holds (an `extend_lease`, or a `write` of the same
/// value): `requested` (counted from now), except while this master's
/// configuration is joint (between epochs), where a live lease (`live`:
/// its expiry, if the key holds that value and it lives) is never made to
/// end sooner: the later of the two is kept.
///
/// Why: under a joint configuration an extension can apply on the old
/// masters and fail on the new side; its caller then keeps counting on
/// the lease it had, while the change waits only for what the old
/// masters' stores hold (`horizon_until`). A master keeping a lease longer
/// than its holder believes is always safe. See docs/protocol.md, "The
/// holder under a joint configuration".
pub fn stored_expiry<I: Ord>(joint: bool, live: Option<I>, requested: I) -> I {
    match live {
        Some(live) if joint => live.max(requested),
        _ => requested,
    }
}

/// A configuration reported during a catch-up (a node asked its masters
/// `{'$locker_config', get}`): who reported it, its epoch, and whether it
/// may be taken at all (set through epochs, it fits, and, on a master,
/// its change was not aborted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report<N, E> {
    /// The master that reported it.
    pub from: N,
    /// Its epoch.
    pub epoch: E,
    /// Whether it may be taken.
    pub eligible: bool,
}

/// Whether `epoch` is backed by a quorum of this node's configuration:
/// for some `(masters, w)` of `quorums` (one, or the old and the new side
/// of a joint configuration), `w` of those masters report an epoch at
/// least as new. A real change past this node's epoch was taken by such
/// a quorum (see docs/protocol.md, "Catch-up"); one master alone (one
/// restarted with a wrong view, which made itself a newer epoch) is not
/// believed.
pub fn backed<N: PartialEq, E: Ord>(
    quorums: &[(Vec<N>, usize)],
    reports: &[Report<N, E>],
    epoch: &E,
) -> bool {
    quorums.iter().any(|(set, w)| {
        let at_least = set
            .iter()
            .filter(|n| reports.iter().any(|r| r.from == **n && r.epoch >= *epoch))
            .count();
        *w > 0 && at_least >= *w
    })
}

/// The catch-up rule: of the configurations `reports` holds, the index of
/// the one to take, if any: the newest that may be taken, is newer than
/// this node's epoch `own`, and is [`backed`] by a quorum of its own
/// configuration (`quorums`).
pub fn catch_up_choice<N: PartialEq, E: Ord>(
    own: &E,
    quorums: &[(Vec<N>, usize)],
    reports: &[Report<N, E>],
) -> Option<usize> {
    reports
        .iter()
        .enumerate()
        .filter(|(_, r)| r.eligible && r.epoch > *own && backed(quorums, reports, &r.epoch))
        .max_by(|(_, a), (_, b)| a.epoch.cmp(&b.epoch))
        .map(|(i, _)| i)
}

/// The way back from an aborted joint configuration, for a coordinator
/// that caught up to it (the Rust client: it is no node of the change, so
/// the abort does not reach it, and its masters, back at the previous
/// epoch, refuse its votes with an epoch older than its own). Its view is
/// joint at `own`, with old side `old` (`(masters, w)`): the index in
/// `reports` of the configuration to go back to, if any: one that may be
/// taken, older than `own`, reported at that very epoch by `w` of the old
/// masters, the newest such. A joint configuration in force was taken by
/// `w` of the old masters, which only move forward unless it is aborted;
/// `w` of them reporting an older epoch means it was rolled back. (Going
/// back is never unsafe anyway: masters check every vote's epoch; the
/// quorum keeps the coordinator from following one master.)
pub fn rollback_choice<N: PartialEq, E: Ord>(
    own: &E,
    old: &(Vec<N>, usize),
    reports: &[Report<N, E>],
) -> Option<usize> {
    let (set, w) = old;
    reports
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.eligible
                && r.epoch < *own
                && *w > 0
                && set
                    .iter()
                    .filter(|n| reports.iter().any(|o| o.from == **n && o.epoch == r.epoch))
                    .count()
                    >= *w
        })
        .max_by(|(_, a), (_, b)| a.epoch.cmp(&b.epoch))
        .map(|(i, _)| i)
}

/// The holder's operations, which keep a lease its caller holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderOp {
    /// `extend_lease`.
    Extend,
    /// `release`.
    Release,
}

/// How a coordinator counts, on the new masters' side of a joint
/// configuration, an answer `{error, Reason}` to the holder's
/// `extend_lease` or `release` (`phase_two`: an answer to phase two, else
/// to phase one): whether it counts as `ok`. A new master that does not
/// hold the lease yet (it was stored under the old configuration) answers
/// phase one `not_expected_value`: that does not block, as the old
/// masters' W_old promises prove the caller holds the key and phase two
/// decides on the new masters (`extend_lease` stores the lease where
/// nothing conflicts, `release` finds the key absent, `not_found`, which
/// counts as done). On the old side, and for other operations, answers
/// count as they are. See docs/protocol.md, "The holder under a joint
/// configuration".
pub fn holder_new_side_ok(op: HolderOp, phase_two: bool, reason: &str) -> bool {
    match (phase_two, op) {
        (false, _) => reason == "not_expected_value",
        (true, HolderOp::Release) => reason == "not_found",
        (true, HolderOp::Extend) => false,
    }
}

/// Whether an original `set_nodes` or `set_w` request is taken: always
/// in `Mode::Legacy`; in `Mode::Epoch` only if it changes nothing (it is
/// answered `ok` then).
pub fn takes_legacy_request(mode: Mode, unchanged: bool) -> bool {
    mode == Mode::Legacy || unchanged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_up_needs_a_quorum_of_own_masters() {
        let r = |from: &'static str, c: u64, eligible| Report {
            from,
            epoch: (c, "x"),
            eligible,
        };
        let own = (1, "x");
        let q = vec![(vec!["a", "b", "c"], 2)];
        // One master alone (a wrong view) is not believed.
        assert_eq!(catch_up_choice(&own, &q, &[r("c", 9, true)]), None);
        // Two of three report at least epoch 3: the newest backed one.
        let reports = [r("a", 3, true), r("b", 4, true), r("c", 9, true)];
        assert_eq!(catch_up_choice(&own, &q, &reports), Some(1));
        let reports = [r("a", 4, true), r("b", 4, true), r("c", 9, true)];
        assert_eq!(
            catch_up_choice(&own, &q, &reports).map(|i| reports[i].epoch),
            Some((4, "x"))
        );
        // Not eligible (legacy, unfit) or not newer: nothing.
        let reports = [r("a", 4, false), r("b", 4, false)];
        assert_eq!(catch_up_choice(&own, &q, &reports), None);
        let reports = [r("a", 1, true), r("b", 1, true)];
        assert_eq!(catch_up_choice(&own, &q, &reports), None);
        // Joint: either side's W.
        let joint = vec![(vec!["a", "b", "c"], 2), (vec!["d", "e"], 2)];
        let reports = [r("d", 5, true), r("e", 5, true)];
        assert_eq!(catch_up_choice(&own, &joint, &reports), Some(1));
        // Reporters that are not masters of this node do not count.
        let reports = [r("y", 5, true), r("z", 5, true), r("a", 5, true)];
        assert_eq!(catch_up_choice(&own, &q, &reports), None);
    }

    #[test]
    fn holder_counts_absent_keys_on_the_new_side() {
        assert!(holder_new_side_ok(
            HolderOp::Extend,
            false,
            "not_expected_value"
        ));
        assert!(holder_new_side_ok(
            HolderOp::Release,
            false,
            "not_expected_value"
        ));
        assert!(!holder_new_side_ok(
            HolderOp::Extend,
            false,
            "already_locked"
        ));
        assert!(!holder_new_side_ok(HolderOp::Extend, true, "no_promise"));
        assert!(holder_new_side_ok(HolderOp::Release, true, "not_found"));
        assert!(!holder_new_side_ok(HolderOp::Release, true, "not_owner"));
        assert!(!holder_new_side_ok(HolderOp::Release, true, "no_promise"));
    }

    #[test]
    fn rollback_from_an_aborted_joint() {
        let r = |from, epoch, eligible| Report {
            from,
            epoch,
            eligible,
        };
        let old = (vec!["a", "b", "c"], 2);
        // Two old masters back at epoch 1: go back to it.
        let reports = [r("a", 1, true), r("b", 1, true), r("d", 2, true)];
        let i = rollback_choice(&2, &old, &reports);
        assert_eq!(i.map(|i| reports[i].epoch), Some(1));
        // One is no quorum; another master's word does not count.
        let reports = [r("a", 1, true), r("b", 2, true), r("d", 1, true)];
        assert_eq!(rollback_choice(&2, &old, &reports), None);
        // Not eligible (legacy), or not older: nothing.
        let reports = [r("a", 1, false), r("b", 1, false)];
        assert_eq!(rollback_choice(&2, &old, &reports), None);
        let reports = [r("a", 3, true), r("b", 3, true)];
        assert_eq!(rollback_choice(&2, &old, &reports), None);
    }

    #[test]
    fn untagged_requests_refused_while_joint() {
        use Mode::*;
        // Legacy: never.
        assert!(!refuses_untagged(Legacy, false, true, true));
        assert!(!refuses_untagged(Legacy, true, true, false));
        // Epoch, not joint: phase one on a removed master only.
        assert!(refuses_untagged(Epoch, false, false, true));
        assert!(!refuses_untagged(Epoch, false, false, false));
        assert!(!refuses_untagged(Epoch, true, false, true));
        assert!(!refuses_untagged(Epoch, true, false, false));
        // Epoch, joint: both phases, voter or not.
        for voter in [true, false] {
            for phase_one in [true, false] {
                assert!(refuses_untagged(Epoch, voter, true, phase_one));
            }
        }
        assert!(refuses_untagged_vote(Epoch, false));
        assert!(!refuses_untagged_vote(Epoch, true));
    }

    #[test]
    fn joint_extensions_never_shorten() {
        // Not joint: the extension sets the expiry, shorter or not.
        assert_eq!(stored_expiry(false, Some(60_000), 200), 200);
        assert_eq!(stored_expiry(false, None, 200), 200);
        // Joint: the later of the two.
        assert_eq!(stored_expiry(true, Some(60_000), 200), 60_000);
        assert_eq!(stored_expiry(true, Some(100), 200), 200);
        assert_eq!(stored_expiry(true, None, 200), 200);
    }

    #[test]
    fn horizons_shrink_when_leases_go() {
        // Noted 60 s, the lease released since: nothing left.
        assert_eq!(horizon_until(60_000, 10, 0), 10);
        // A lease stored after the epoch lives longer: the noted one.
        assert_eq!(horizon_until(60_000, 90_000, 0), 60_000);
        // Safe mode: at least its window.
        assert_eq!(horizon_until(60_000, 10, 120_000), 120_000);
    }

    #[test]
    fn untagged_votes() {
        assert!(refuses_untagged_vote(Mode::Epoch, false));
        assert!(!refuses_untagged_vote(Mode::Epoch, true));
        assert!(!refuses_untagged_vote(Mode::Legacy, false));
    }

    #[test]
    fn fitting_quorums() {
        assert!(quorum_fits(1, 1));
        assert!(quorum_fits(3, 2));
        assert!(quorum_fits(3, 3));
        assert!(!quorum_fits(0, 1));
        assert!(!quorum_fits(3, 1));
        assert!(!quorum_fits(3, 4));
        assert!(!quorum_fits(4, 2));
        assert!(config_fits(2, 2, Some((3, 2))));
        assert!(config_fits(2, 2, Some((3, 1))));
        assert!(!config_fits(2, 2, Some((0, 1))));
        assert!(!config_fits(2, 2, Some((1, 3))));
        assert!(!config_fits(0, 1, None));
    }

    type E = (u64, &'static str);

    #[test]
    fn votes_are_checked_only_under_epochs() {
        let own: E = (3, "a");
        assert!(!refuses_vote(Mode::Epoch, &own, Some(&(3, "a"))));
        assert!(refuses_vote(Mode::Epoch, &own, Some(&(2, "a"))));
        assert!(refuses_vote(Mode::Epoch, &own, Some(&(4, "b"))));
        assert!(!refuses_vote(Mode::Epoch, &own, None));
        assert!(!refuses_vote(Mode::Legacy, &own, Some(&(2, "a"))));
    }

    #[test]
    fn install_rules() {
        let own: E = (3, "a");
        assert_eq!(
            install(Mode::Epoch, &own, true, &(0, "x"), &own),
            Install::Unchanged
        );
        assert_eq!(
            install(Mode::Epoch, &own, false, &own, &(4, "b")),
            Install::Take
        );
        assert_eq!(
            install(Mode::Epoch, &own, false, &own, &(3, "a")),
            Install::Stale
        );
        assert_eq!(
            install(Mode::Epoch, &own, false, &(2, "a"), &(2, "z")),
            Install::Stale
        );
        assert_eq!(
            install(Mode::Epoch, &own, false, &(0, "m"), &(9, "m")),
            Install::Conflict
        );
        assert_eq!(
            install(Mode::Legacy, &own, false, &(0, "m"), &(9, "m")),
            Install::Take
        );
        // Two joint configurations made from one epoch: a node takes one.
        let after_first: E = (4, "a");
        assert_eq!(
            install(Mode::Epoch, &after_first, false, &own, &(4, "b")),
            Install::Conflict
        );
    }

    #[test]
    fn overwrite_catch_up_and_legacy_requests() {
        let own: E = (3, "a");
        assert!(accepts_overwrite(Mode::Epoch, &own, &(3, "a")));
        assert!(!accepts_overwrite(Mode::Epoch, &own, &(1, "m")));
        assert!(accepts_overwrite(Mode::Legacy, &own, &(1, "m")));
        assert!(catches_up(&own, &(5, "b"), Mode::Epoch, true));
        assert!(!catches_up(&own, &(5, "b"), Mode::Epoch, false));
        assert!(!catches_up(&own, &(5, "b"), Mode::Legacy, true));
        assert!(!catches_up(&own, &(2, "b"), Mode::Epoch, true));
        assert!(takes_legacy_request(Mode::Legacy, false));
        assert!(takes_legacy_request(Mode::Epoch, true));
        assert!(!takes_legacy_request(Mode::Epoch, false));
    }
}
