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

/// Whether an original `set_nodes` or `set_w` request is taken: always
/// in `Mode::Legacy`; in `Mode::Epoch` only if it changes nothing (it is
/// answered `ok` then).
pub fn takes_legacy_request(mode: Mode, unchanged: bool) -> bool {
    mode == Mode::Legacy || unchanged
}

#[cfg(test)]
mod tests {
    use super::*;

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
