//! Model tests of `locker_core::Schedule`: a server shell that arms one
//! timer to `next_at` and asks `take_due` when it fires, against a naive
//! model of three interval timers and a wake-up timer (what the shells ran
//! before). Time is injected in microseconds.

use locker_core::{
    ms, Config, Due, Engine, Expect, Intervals, Micros, Schedule, Task, Wake, WAKEUP_MARGIN,
};
use proptest::prelude::*;

/// An arbitrary, non-aligned starting instant.
const T0: Micros = 7_000_000_321;

fn intervals(leases_ms: u64, locks_ms: u64, push_ms: u64) -> Intervals {
    Intervals {
        expire_leases: ms(leases_ms),
        expire_locks: ms(locks_ms),
        push_trans_log: ms(push_ms),
    }
}

/// Fires the one timer until `until`, exactly on time; returns the instant
/// and what was due at each firing.
fn run(s: &mut Schedule, wakeup: Option<Micros>, until: Micros) -> Vec<(Micros, Due)> {
    let mut fired = Vec::new();
    while let Some(at) = s.next_at(wakeup) {
        if at > until {
            break;
        }
        let due = s.take_due(at, wakeup);
        assert!(due.any() || wakeup.is_some(), "fired for nothing at {at}");
        fired.push((at, due));
        assert!(s.next_at(None).is_none_or(|n| n > at), "no busy loop");
    }
    fired
}

#[test]
fn the_defaults_are_the_originals() {
    let s = Schedule::new(Intervals::default(), T0);
    assert_eq!(s.interval(Task::ExpireLeases), ms(1_000));
    assert_eq!(s.interval(Task::ExpireLocks), ms(1_000));
    assert_eq!(s.interval(Task::PushTransLog), ms(100));
    for t in Task::ALL {
        assert_eq!(Task::from_name(t.name()), Some(t));
        assert_eq!(s.due_at(t), Some(T0 + s.interval(t)));
    }
    assert_eq!(Task::from_name("wakeup"), None);
}

#[test]
fn one_timer_runs_the_three_intervals() {
    let mut s = Schedule::new(intervals(1_000, 700, 100), T0);
    let fired = run(&mut s, None, T0 + ms(10_000));
    let pushes: Vec<Micros> = fired.iter().filter(|(_, d)| d.push).map(|f| f.0).collect();
    let sweeps: Vec<Micros> = fired.iter().filter(|(_, d)| d.sweep).map(|f| f.0).collect();
    assert_eq!(
        pushes,
        (1..=100).map(|i| T0 + ms(100 * i)).collect::<Vec<_>>()
    );
    // Sweeps on both periods' instants, once where they coincide.
    let mut expected: Vec<Micros> = (1..=10)
        .map(|i| T0 + ms(1_000 * i))
        .chain((1..=14).map(|i| T0 + ms(700 * i)))
        .collect();
    expected.sort();
    expected.dedup();
    assert_eq!(sweeps, expected);
    // The timer fires only when something is due.
    assert!(fired.iter().all(|(_, d)| d.any()));
}

#[test]
fn an_early_timer_gets_nothing_and_a_late_one_skips_missed_periods() {
    let mut s = Schedule::new(intervals(1_000, 1_000, 100), T0);
    assert_eq!(s.take_due(T0 + ms(100) - 1, None), Due::default());
    assert_eq!(s.next_at(None), Some(T0 + ms(100)));
    // Five push periods late (a descheduled VM): one push, not five.
    let late = T0 + ms(550);
    assert_eq!(
        s.take_due(late, None),
        Due {
            sweep: false,
            push: true
        }
    );
    assert_eq!(s.due_at(Task::PushTransLog), Some(late + ms(100)));
    // Less than a period late: the fixed rate is kept.
    let mut s = Schedule::new(intervals(1_000, 1_000, 100), T0);
    s.take_due(T0 + ms(130), None);
    assert_eq!(s.due_at(Task::PushTransLog), Some(T0 + ms(200)));
}

#[test]
fn paused_tasks_are_never_due_and_waiters_still_are() {
    let mut s = Schedule::new(intervals(1_000, 1_000, 100), T0);
    for t in Task::ALL {
        s.pause(t);
        assert!(s.is_paused(t));
    }
    assert_eq!(s.next_at(None), None, "nothing to arm");
    assert_eq!(s.take_due(T0 + ms(60_000), None), Due::default());
    let w = T0 + ms(2_500);
    assert_eq!(s.next_at(Some(w)), Some(w + WAKEUP_MARGIN));
    assert_eq!(s.take_due(w - 1, Some(w)), Due::default());
    assert_eq!(
        s.take_due(w, Some(w)),
        Due {
            sweep: true,
            push: false
        }
    );
    // Resumed: due one period after the resume, a running task untouched.
    let now = T0 + ms(70_000);
    s.resume(Task::PushTransLog, now);
    assert_eq!(s.next_at(None), Some(now + ms(100)));
    s.resume(Task::PushTransLog, now + ms(50));
    assert_eq!(s.due_at(Task::PushTransLog), Some(now + ms(100)));
    assert!(s.is_paused(Task::ExpireLeases));
}

#[test]
fn a_shell_with_one_timer_serves_the_engine() {
    // A master with replicas: a lease a waiter watches, a promise never
    // used, a logged write; the shell has one timer.
    let mut e: Engine<&str, &str, u32> = Engine::new(Config {
        log_enabled: true,
        ..Config::default()
    });
    let mut s = Schedule::new(intervals(1_000, 1_000, 100), T0);
    e.get_write_lock("k", Expect::Absent, 1, T0).unwrap();
    e.write(&1, "k", "v", 2_500, T0).unwrap();
    e.get_write_lock("p", Expect::Absent, 2, T0).unwrap();
    e.wait_for_release("k", 7, 60_000, T0);
    let mut now = T0;
    let mut woken_at = None;
    let mut promise_gone_at = None;
    let mut pushes = 0;
    let mut pushed_entries = 0;
    while now < T0 + ms(12_000) {
        now = s.next_at(e.next_wakeup()).expect("tasks run");
        let due = s.take_due(now, e.next_wakeup());
        if due.push {
            pushes += 1;
            pushed_entries += e.take_log(100).len();
        }
        if due.sweep {
            let r = e.sweep(now, 1_000);
            assert!(r.done);
            if r.wakes.contains(&Wake::Released(7)) {
                woken_at = Some(now);
            }
            if r.promises_expired == 1 {
                promise_gone_at = Some(now);
            }
        }
    }
    let expiry = T0 + ms(2_500);
    let woken_at = woken_at.expect("the waiter was answered");
    assert!(
        (expiry..=expiry + ms(1) + WAKEUP_MARGIN).contains(&woken_at),
        "woken at expiry to the millisecond, not at the next sweep tick: {}",
        woken_at - T0
    );
    // The promise lives its 10 s and is swept at the next sweep tick.
    let gone = promise_gone_at.expect("the promise expired");
    assert!((T0 + ms(10_000)..=T0 + ms(11_000)).contains(&gone));
    assert_eq!(pushed_entries, 1, "the write went out with the first push");
    assert!(pushes >= 119, "a push every 100 ms: {pushes}");
}

#[derive(Clone, Debug)]
enum Ev {
    /// The timer fires this late after the instant it was armed for.
    Fire(Micros),
    /// A call arrives this long after the last event.
    Wait(Micros),
    Pause(usize),
    Resume(usize),
    /// A waiter needs an answer this long from now (or none).
    Wakeup(Option<Micros>),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0..ms(30)).prop_map(Ev::Fire),
        2 => (0..ms(3_000)).prop_map(Ev::Wait),
        1 => (0..3usize).prop_map(Ev::Pause),
        1 => (0..3usize).prop_map(Ev::Resume),
        1 => proptest::option::of(0..ms(2_000)).prop_map(Ev::Wakeup),
    ]
}

/// The model: three interval timers (fixed rate, missed ticks skipped)
/// and a wake-up timer, each checked on its own.
struct Model {
    every: [Micros; 3],
    next: [Option<Micros>; 3],
}

impl Model {
    fn due(&mut self, now: Micros) -> [bool; 3] {
        let mut out = [false; 3];
        for ((next, every), ran) in self.next.iter_mut().zip(self.every).zip(&mut out) {
            if let Some(at) = *next {
                if at <= now {
                    *ran = true;
                    // Skipped, not bursted: one period after now at most.
                    let n = at + every;
                    *next = Some(if n <= now { now + every } else { n });
                }
            }
        }
        out
    }
}

proptest! {
    #[test]
    fn one_timer_does_what_four_timers_did(
        periods in [1..2_000u64, 1..2_000u64, 1..500u64],
        events in proptest::collection::vec(ev(), 1..200),
    ) {
        let [a, b, c] = periods;
        let mut s = Schedule::new(intervals(a, b, c), T0);
        let mut m = Model { every: [ms(a), ms(b), ms(c)], next: [ms(a), ms(b), ms(c)].map(|p| Some(T0 + p)) };
        let mut now = T0;
        let mut wakeup: Option<Micros> = None;
        for e in events {
            match e {
                Ev::Wait(d) => now += d,
                Ev::Pause(i) => { s.pause(Task::ALL[i]); m.next[i] = None; }
                Ev::Resume(i) => {
                    s.resume(Task::ALL[i], now);
                    if m.next[i].is_none() { m.next[i] = Some(now + m.every[i]); }
                }
                Ev::Wakeup(w) => wakeup = w.map(|d| now + d),
                Ev::Fire(late) => {
                    let Some(at) = s.next_at(wakeup) else {
                        // Nothing armed: every task paused, no waiter.
                        prop_assert!(m.next.iter().all(Option::is_none) && wakeup.is_none());
                        continue;
                    };
                    // The one timer is armed to the earliest of the four.
                    let earliest = m.next.iter().flatten().copied()
                        .chain(wakeup.map(|w| w + WAKEUP_MARGIN)).min();
                    prop_assert_eq!(Some(at), earliest);
                    // Armed while time went on: it fires at once if past.
                    now = now.max(at) + late;
                    let due = s.take_due(now, wakeup);
                    let [l, p, push] = m.due(now);
                    let woken = wakeup.is_some_and(|w| w <= now);
                    prop_assert_eq!(due, Due { sweep: l || p || woken, push });
                    for (i, t) in Task::ALL.into_iter().enumerate() {
                        prop_assert_eq!(s.due_at(t), m.next[i]);
                        prop_assert!(s.due_at(t).is_none_or(|n| n > now), "no busy loop");
                    }
                    if woken { wakeup = None; } // the sweep answered the waiter
                }
            }
        }
    }
}
