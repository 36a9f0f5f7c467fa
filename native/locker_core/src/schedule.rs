//! The timer schedule of one server shell: when the lease sweep, the
//! promise sweep and the log push are next due, and when a waiter needs
//! an answer ([`crate::Engine::next_wakeup`]).
//!
//! A shell (the BEAM `locker_server`, lockerd) arms exactly one timer, to
//! [`Schedule::next_at`]; when it fires, [`Schedule::take_due`] says what
//! to do (sweep, push, both or nothing) and moves the periodic tasks on,
//! and the shell arms its timer again. Time is injected, as everywhere in
//! the core.
//!
//! Periodic tasks run at a fixed rate from when they were (re)started, as
//! the original's `timer:send_interval/2`; a shell that falls behind by
//! more than one period skips the missed runs instead of running them in
//! a burst. A paused task is never due (tests drive time by hand, as the
//! original's suite did by cancelling its interval timers); waiters are
//! still woken when they need an answer.

use crate::engine::WAKEUP_MARGIN;
use crate::Micros;

/// A periodic task of a server shell, named after the message that also
/// runs it by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    /// `expire_leases`: the lease sweep, every `lease_expire_interval`.
    ExpireLeases,
    /// `expire_locks`: the promise sweep, every `lock_expire_interval`.
    ExpireLocks,
    /// `push_trans_log`: the log push to replicas, every `push_trans_interval`.
    PushTransLog,
}

impl Task {
    /// Every task, in the order of `get_debug_state`'s timer slots.
    pub const ALL: [Task; 3] = [Task::ExpireLeases, Task::ExpireLocks, Task::PushTransLog];

    /// The task's name on the wire (the message that runs it by hand).
    pub fn name(self) -> &'static str {
        match self {
            Task::ExpireLeases => "expire_leases",
            Task::ExpireLocks => "expire_locks",
            Task::PushTransLog => "push_trans_log",
        }
    }

    /// The task named `name` (see [`Task::name`]).
    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The periods of the three tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    /// Lease sweep period (`lease_expire_interval`).
    pub expire_leases: Micros,
    /// Promise sweep period (`lock_expire_interval`).
    pub expire_locks: Micros,
    /// Log push period (`push_trans_interval`).
    pub push_trans_log: Micros,
}

impl Intervals {
    fn of(&self, task: Task) -> Micros {
        match task {
            Task::ExpireLeases => self.expire_leases,
            Task::ExpireLocks => self.expire_locks,
            Task::PushTransLog => self.push_trans_log,
        }
    }
}

impl Default for Intervals {
    /// The original's defaults: 1 s, 1 s, 100 ms.
    fn default() -> Self {
        Self {
            expire_leases: crate::ms(1_000),
            expire_locks: crate::ms(1_000),
            push_trans_log: crate::ms(100),
        }
    }
}

/// What a shell does when its timer fires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Sweep ([`crate::Engine::sweep`], until done): a sweep period ended
    /// or a waiter needs an answer.
    pub sweep: bool,
    /// Push the transaction log to the replicas.
    pub push: bool,
}

impl Due {
    /// Whether anything is due.
    pub fn any(&self) -> bool {
        self.sweep || self.push
    }
}

/// When each periodic task is next due; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    every: [Micros; 3],
    /// Next due instant of each task; `None` while paused.
    next: [Option<Micros>; 3],
}

impl Schedule {
    /// Every task running, first due one period after `now`. A zero
    /// period counts as 1 µs (shells refuse zero intervals).
    pub fn new(intervals: Intervals, now: Micros) -> Self {
        let every = Task::ALL.map(|t| intervals.of(t).max(1));
        Self {
            every,
            next: every.map(|e| Some(now.saturating_add(e))),
        }
    }

    /// The period of `task`.
    pub fn interval(&self, task: Task) -> Micros {
        self.every[task.index()]
    }

    /// Stops `task` until [`Schedule::resume`]: it is never due meanwhile.
    pub fn pause(&mut self, task: Task) {
        self.next[task.index()] = None;
    }

    /// Runs `task` again, first due one period after `now`. A running
    /// task is left as it is.
    pub fn resume(&mut self, task: Task, now: Micros) {
        let i = task.index();
        if self.next[i].is_none() {
            self.next[i] = Some(now.saturating_add(self.every[i]));
        }
    }

    /// Whether `task` is paused.
    pub fn is_paused(&self, task: Task) -> bool {
        self.next[task.index()].is_none()
    }

    /// When `task` is next due (`None`: paused).
    pub fn due_at(&self, task: Task) -> Option<Micros> {
        self.next[task.index()]
    }

    /// The one moment a shell's timer should fire: the earliest running
    /// task's due instant, or the wake-up `wakeup` (the engine's
    /// [`crate::Engine::next_wakeup`]) plus [`WAKEUP_MARGIN`] if earlier
    /// (a shell's timer and the core's clock may disagree by up to a
    /// millisecond). `None`: nothing will ever be due (every task paused,
    /// no waiter).
    pub fn next_at(&self, wakeup: Option<Micros>) -> Option<Micros> {
        let periodic = self.next.iter().flatten().copied().min();
        let wake = wakeup.map(|w| w.saturating_add(WAKEUP_MARGIN));
        match (periodic, wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How long from `now` until [`Schedule::next_at`] (0 if past).
    pub fn next_in(&self, now: Micros, wakeup: Option<Micros>) -> Option<Micros> {
        self.next_at(wakeup).map(|at| at.saturating_sub(now))
    }

    /// What is due at `now` (the shell's timer fired): a sweep if a sweep
    /// task's period ended or the wake-up `wakeup` is reached, a push if
    /// the push task's period ended. The periodic tasks due are moved on
    /// by one period (to one period after `now` if the shell fell further
    /// behind). Nothing is due before its time: a timer that fired early
    /// gets nothing, and the shell arms it again.
    pub fn take_due(&mut self, now: Micros, wakeup: Option<Micros>) -> Due {
        let mut ran = [false; 3];
        for (i, slot) in self.next.iter_mut().enumerate() {
            if let Some(at) = *slot {
                if at <= now {
                    let mut next = at.saturating_add(self.every[i]);
                    if next <= now {
                        next = now.saturating_add(self.every[i]);
                    }
                    *slot = Some(next);
                    ran[i] = true;
                }
            }
        }
        let woken = wakeup.is_some_and(|w| w <= now);
        Due {
            sweep: ran[Task::ExpireLeases.index()] || ran[Task::ExpireLocks.index()] || woken,
            push: ran[Task::PushTransLog.index()],
        }
    }
}
