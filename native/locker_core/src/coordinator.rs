//! The two-phase coordinator as a state machine without I/O: the adapter
//! sends the requests and feeds in what comes back; this type decides when
//! phase one is over, whether phase two may start, and what the operation
//! answers. `lockerd`'s Rust client runs it; `locker_coord.erl` is the
//! same machine for the Erlang coordinator, and both are checked against
//! one table of scenarios (`tests/coordinator_scenarios.txt`).
//!
//! ```
//! use locker_core::coordinator::{Outcome, Step, TwoPhase, Vote};
//! let mut op = TwoPhase::new(2, 3, 0);
//! op.vote(Vote::Ok);
//! assert!(!op.phase_one_decided());
//! op.vote(Vote::Ok);
//! assert!(op.phase_one_decided());
//! assert_eq!(op.after_phase_one(1_000), Step::PhaseTwo);
//! op.commit(true, true);
//! op.commit(true, true);
//! op.late_vote(Vote::Ok);
//! assert_eq!(op.outcome(), Outcome::Ok { w: 2, votes: 3, commits: 2 });
//! ```

use crate::quorum::{phase_one_decided, PHASE_TWO_BUDGET_MS};
use crate::{ms, Micros};

/// A master's answer to phase one, as the adapter decoded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vote {
    /// `ok`: a promise.
    Ok,
    /// `{error, {stale_token, Floor}}`: the token was not above `Floor`.
    StaleToken(u64),
    /// Any other answer (`already_locked`, `not_expected_value`, ...).
    Refused,
    /// No answer: the master is down or did not answer in time.
    Missing,
}

/// What to do once phase one is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send phase two to every master (`release`: and every replica).
    PhaseTwo,
    /// Drop the promises (`release_write_lock` to every master) and fail.
    Abort,
}

/// What the operation answers its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `{ok, W, Votes, Commits}`.
    Ok {
        /// The quorum.
        w: usize,
        /// Masters that promised (late promises included).
        votes: usize,
        /// Nodes that applied phase two (replicas included for `release`).
        commits: usize,
    },
    /// `{error, no_quorum}`; an acquisition may try once more with a token
    /// above `retry_above` when a master reported a stale token.
    NoQuorum {
        /// The highest token floor a master reported, if any.
        retry_above: Option<u64>,
    },
}

/// One two-phase operation.
#[derive(Clone, Debug)]
pub struct TwoPhase {
    w: usize,
    masters: usize,
    started: Micros,
    votes: usize,
    answered: usize,
    floor: Option<u64>,
    phase_two: bool,
    late_votes: usize,
    master_commits: usize,
    commits: usize,
}

impl TwoPhase {
    /// An operation with quorum `w` over `masters` masters, whose phase
    /// one is sent at `now` (monotonic).
    pub fn new(w: usize, masters: usize, now: Micros) -> Self {
        Self {
            w,
            masters,
            started: now,
            votes: 0,
            answered: 0,
            floor: None,
            phase_two: false,
            late_votes: 0,
            master_commits: 0,
            commits: 0,
        }
    }

    /// Records one master's phase-one answer.
    pub fn vote(&mut self, vote: Vote) {
        self.answered += 1;
        match vote {
            Vote::Ok => self.votes += 1,
            Vote::StaleToken(f) => self.floor = Some(self.floor.map_or(f, |g| g.max(f))),
            Vote::Refused | Vote::Missing => {}
        }
    }

    /// Whether phase one's outcome is known: W promised, or W can no
    /// longer promise. Stop waiting for the other masters then.
    pub fn phase_one_decided(&self) -> bool {
        let pending = self.masters.saturating_sub(self.answered);
        phase_one_decided(self.votes, pending, self.w)
    }

    /// What to do when phase one is over (decided, or its wait timed out):
    /// phase two only with W promises and within the phase-two budget
    /// counted from when phase one was sent.
    pub fn after_phase_one(&mut self, now: Micros) -> Step {
        let in_time = now.saturating_sub(self.started) < ms(PHASE_TWO_BUDGET_MS);
        self.phase_two = self.w > 0 && self.votes >= self.w && in_time;
        if self.phase_two {
            Step::PhaseTwo
        } else {
            Step::Abort
        }
    }

    /// A phase-one answer that arrived after phase one was over: counted
    /// in the reported votes, and its stale-token floor in the retry.
    pub fn late_vote(&mut self, vote: Vote) {
        match vote {
            Vote::Ok => self.late_votes += 1,
            Vote::StaleToken(f) => self.floor = Some(self.floor.map_or(f, |g| g.max(f))),
            Vote::Refused | Vote::Missing => {}
        }
    }

    /// Records one phase-two answer: from a master or a replica, `ok` or
    /// not (`{error, no_promise}`, `not_owner`, no answer, ...).
    pub fn commit(&mut self, from_master: bool, ok: bool) {
        if ok {
            self.commits += 1;
            if from_master {
                self.master_commits += 1;
            }
        }
    }

    /// The answer: a success needs W masters that applied phase two.
    /// After a failed phase two, drop the promises and (for `lock`) give
    /// back the lease on the masters that stored it.
    pub fn outcome(&self) -> Outcome {
        if self.phase_two && self.master_commits >= self.w {
            Outcome::Ok {
                w: self.w,
                votes: self.votes + self.late_votes,
                commits: self.commits,
            }
        } else {
            // A retry helps only when phase one was refused for its token.
            Outcome::NoQuorum {
                retry_above: if self.phase_two { None } else { self.floor },
            }
        }
    }
}
