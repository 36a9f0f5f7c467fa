//! Unit tests of `locker_core::Engine`, one rule of the wire protocol at a
//! time. Time is injected in microseconds.

use std::collections::BTreeMap;

use locker_core::{
    ms, CommitError, Config, Engine, Expect, LockError, LogEntry, Micros, ReleaseError,
    WaitOutcome, Wake,
};

type E = Engine<&'static str, &'static str, u32>;

/// An arbitrary, non-aligned starting instant.
const T0: Micros = 5_000_000_123;

fn engine() -> E {
    Engine::new(Config::default())
}

fn with(config: Config) -> E {
    Engine::new(config)
}

fn logging() -> E {
    with(Config {
        log_enabled: true,
        ..Config::default()
    })
}

fn ttl(promise_ms: u64) -> E {
    with(Config {
        promise_ttl: ms(promise_ms),
        ..Config::default()
    })
}

/// Writes `key => value` through a full two-phase lock.
fn put(e: &mut E, key: &'static str, value: &'static str, lease_ms: u64, now: Micros) {
    e.get_write_lock(key, Expect::Absent, 999, now).unwrap();
    assert!(e.write(&999, key, value, lease_ms, now).unwrap().is_empty());
}

fn get(e: &E, key: &str, now: Micros) -> Option<&'static str> {
    e.leases().get_valid(key, now)
}

fn expires_at(e: &E, key: &str) -> Option<Micros> {
    e.leases().read(key, |l| l.expires_at)
}

fn promises(e: &E) -> Vec<(&'static str, u32)> {
    let mut v = Vec::new();
    e.for_each_promise(|k, t, _| v.push((*k, *t)));
    v.sort();
    v
}

fn table(e: &E) -> BTreeMap<&'static str, (&'static str, Micros)> {
    let mut m = BTreeMap::new();
    e.leases().for_each(|k, l| {
        m.insert(*k, (l.value, l.expires_at));
    });
    m
}

// ---------------------------------------------------------------- promises

#[test]
fn one_live_promise_per_key() {
    let mut e = engine();
    assert_eq!(e.get_write_lock("k", Expect::Absent, 1, T0), Ok(()));
    assert_eq!(
        e.get_write_lock("k", Expect::Absent, 2, T0),
        Err(LockError::AlreadyLocked)
    );
    // The promise check comes before the value check.
    assert_eq!(
        e.get_write_lock("k", Expect::Value(&"x"), 2, T0),
        Err(LockError::AlreadyLocked)
    );
    assert_eq!(
        e.get_write_lock("k", Expect::Absent, 1, T0),
        Err(LockError::AlreadyLocked)
    );
    assert_eq!(e.get_write_lock("other", Expect::Absent, 2, T0), Ok(()));
    assert_eq!(promises(&e), [("k", 1), ("other", 2)]);
    assert_eq!(e.summary().promises, 2);
}

#[test]
fn promise_expires_lazily_at_get_write_lock() {
    let mut e = ttl(100);
    e.get_write_lock("k", Expect::Absent, 1, T0).unwrap();
    let mut deadline = 0;
    e.for_each_promise(|_, _, d| deadline = d);
    assert_eq!(deadline, T0 + ms(100));
    assert_eq!(
        e.get_write_lock("k", Expect::Absent, 2, T0 + ms(100) - 1),
        Err(LockError::AlreadyLocked)
    );
    assert_eq!(
        e.get_write_lock("k", Expect::Absent, 2, T0 + ms(100)),
        Ok(())
    );
    assert_eq!(promises(&e), [("k", 2)]);
    // The dropped promise's tag no longer holds anything.
    e.release_write_lock(&1);
    assert_eq!(promises(&e), [("k", 2)]);
}

#[test]
fn promise_expires_via_sweep() {
    let mut e = ttl(100);
    e.get_write_lock("a", Expect::Absent, 1, T0).unwrap();
    e.get_write_lock("b", Expect::Absent, 2, T0 + ms(50))
        .unwrap();
    assert_eq!(e.sweep(T0 + ms(100) - 1, 100).promises_expired, 0);
    let r = e.sweep(T0 + ms(100), 100);
    assert_eq!((r.promises_expired, r.done), (1, true));
    assert_eq!(promises(&e), [("b", 2)]);
    assert_eq!(e.sweep(T0 + ms(150), 100).promises_expired, 1);
    assert_eq!(e.summary().promises, 0);
    assert_eq!(
        e.get_write_lock("a", Expect::Absent, 3, T0 + ms(150)),
        Ok(())
    );
}

#[test]
fn release_write_lock_frees_the_key() {
    let mut e = engine();
    e.get_write_lock("k", Expect::Absent, 1, T0).unwrap();
    e.release_write_lock(&2); // another tag: no effect
    e.release_write_lock(&42); // unknown tag: no effect
    assert_eq!(
        e.get_write_lock("k", Expect::Absent, 2, T0),
        Err(LockError::AlreadyLocked)
    );
    e.release_write_lock(&1);
    assert_eq!(e.summary().promises, 0);
    assert_eq!(e.get_write_lock("k", Expect::Absent, 2, T0), Ok(()));
}

#[test]
fn phase_two_drops_the_tags_promise() {
    let mut e = engine();
    put(&mut e, "held", "v", 10_000, T0);
    // The promise is dropped by tag, whatever key phase two names.
    e.get_write_lock("a", Expect::Absent, 1, T0).unwrap();
    e.write(&1, "elsewhere", "v", 1_000, T0).unwrap();
    assert_eq!(e.summary().promises, 0);

    // Without a promise on the key it names, phase two does not replace
    // another value there, and still drops the tag's promise.
    e.get_write_lock("b", Expect::Absent, 2, T0).unwrap();
    assert_eq!(e.update(&2, "held", "w", T0), Err(CommitError::NoPromise));
    assert_eq!(e.summary().promises, 0);

    e.get_write_lock("c", Expect::Absent, 3, T0).unwrap();
    assert_eq!(
        e.extend_lease(&3, "held", "w", 1_000, 0, T0),
        Err(CommitError::NoPromise)
    );
    assert_eq!(e.summary().promises, 0);

    // release drops the promise whatever its outcome.
    e.get_write_lock("d", Expect::Absent, 4, T0).unwrap();
    assert_eq!(
        e.release(&"nope", &"v", &4, T0),
        Err(ReleaseError::NotFound)
    );
    e.get_write_lock("d", Expect::Absent, 5, T0).unwrap();
    assert_eq!(
        e.release(&"held", &"other", &5, T0),
        Err(ReleaseError::NotOwner)
    );
    e.get_write_lock("d", Expect::Absent, 6, T0).unwrap();
    assert!(e.release(&"held", &"v", &6, T0).is_ok());
    assert_eq!(e.summary().promises, 0);
}

#[test]
fn reused_tag_is_fully_released() {
    let mut e = engine();
    for k in ["a", "b", "c"] {
        e.get_write_lock(k, Expect::Absent, 7, T0).unwrap();
    }
    assert_eq!(promises(&e), [("a", 7), ("b", 7), ("c", 7)]);
    e.release_write_lock(&7);
    assert_eq!(e.summary().promises, 0);
    for k in ["a", "b", "c"] {
        assert_eq!(e.get_write_lock(k, Expect::Absent, 8, T0), Ok(()));
    }
    // Reused again by phase two: one write drops all of them.
    e.write(&8, "a", "v", 1_000, T0).unwrap();
    assert_eq!(e.summary().promises, 0);
}

#[test]
fn reused_tag_after_its_first_promise_expired() {
    for via_sweep in [false, true] {
        let mut e = ttl(100);
        e.get_write_lock("a", Expect::Absent, 1, T0).unwrap();
        e.get_write_lock("b", Expect::Absent, 1, T0 + ms(50))
            .unwrap();
        let t = T0 + ms(100);
        if via_sweep {
            assert_eq!(e.sweep(t, 100).promises_expired, 1);
        } else {
            e.get_write_lock("a", Expect::Absent, 2, t).unwrap();
        }
        e.release_write_lock(&1);
        assert_eq!(
            e.get_write_lock("b", Expect::Absent, 3, t),
            Ok(()),
            "via_sweep={via_sweep}"
        );
        // Tag 1 can be used afresh.
        e.get_write_lock("c", Expect::Absent, 1, t).unwrap();
        e.release_write_lock(&1);
        assert_eq!(e.get_write_lock("c", Expect::Absent, 4, t), Ok(()));
    }
}

// ---------------------------------------------------------- expected value

#[test]
fn expect_absent() {
    let mut e = engine();
    assert_eq!(e.get_write_lock("k", Expect::Absent, 1, T0), Ok(()));
    e.write(&1, "k", "v", 1_000, T0).unwrap();
    assert_eq!(
        e.get_write_lock("k", Expect::Absent, 2, T0),
        Err(LockError::NotExpectedValue)
    );
    assert_eq!(e.summary().promises, 0, "a refusal records no promise");
}

#[test]
fn expect_value() {
    let mut e = engine();
    assert_eq!(
        e.get_write_lock("k", Expect::Value(&"v"), 1, T0),
        Err(LockError::NotExpectedValue)
    );
    put(&mut e, "k", "v", 1_000, T0);
    assert_eq!(
        e.get_write_lock("k", Expect::Value(&"w"), 1, T0),
        Err(LockError::NotExpectedValue)
    );
    assert_eq!(e.get_write_lock("k", Expect::Value(&"v"), 1, T0), Ok(()));
}

#[test]
fn expect_value_or_absent() {
    let mut e = engine();
    let nf = "not_found";
    assert_eq!(
        e.get_write_lock("k", Expect::ValueOrAbsent(&nf), 1, T0),
        Ok(())
    );
    e.write(&1, "k", nf, 1_000, T0).unwrap();
    // The atom stored as a value matches too.
    assert_eq!(
        e.get_write_lock("k", Expect::ValueOrAbsent(&nf), 2, T0),
        Ok(())
    );
    e.write(&2, "k", "v", 1_000, T0).unwrap();
    assert_eq!(
        e.get_write_lock("k", Expect::ValueOrAbsent(&nf), 3, T0),
        Err(LockError::NotExpectedValue)
    );
}

#[test]
fn expired_unswept_lease_counts_as_absent() {
    let mut e = engine();
    put(&mut e, "k", "v", 10, T0);
    let t = T0 + ms(10);
    assert_eq!(e.summary().leases, 1, "not swept yet");
    assert_eq!(
        e.get_write_lock("k", Expect::Value(&"v"), 1, t),
        Err(LockError::NotExpectedValue)
    );
    assert_eq!(
        e.get_write_lock("k", Expect::ValueOrAbsent(&"v"), 1, t),
        Ok(())
    );
    e.release_write_lock(&1);
    assert_eq!(e.get_write_lock("k", Expect::Absent, 1, t), Ok(()));
}

// ----------------------------------------------------------------- release

#[test]
fn release_outcomes() {
    let mut e = engine();
    put(&mut e, "k", "v", 100, T0);
    assert_eq!(
        e.release(&"absent", &"v", &1, T0),
        Err(ReleaseError::NotFound)
    );
    assert_eq!(e.release(&"k", &"w", &1, T0), Err(ReleaseError::NotOwner));
    assert_eq!(get(&e, "k", T0), Some("v"));
    assert_eq!(e.release(&"k", &"v", &1, T0), Ok(vec![]));
    assert_eq!(get(&e, "k", T0), None);
    assert_eq!(e.summary().leases, 0);
    assert_eq!(e.release(&"k", &"v", &1, T0), Err(ReleaseError::NotFound));
}

#[test]
fn release_of_expired_lease_is_not_found() {
    let mut e = engine();
    put(&mut e, "k", "v", 100, T0);
    assert_eq!(
        e.release(&"k", &"v", &1, T0 + ms(100)),
        Err(ReleaseError::NotFound)
    );
    assert_eq!(
        e.release(&"k", &"w", &1, T0 + ms(100)),
        Err(ReleaseError::NotFound)
    );
}

// ------------------------------------------------------------------ update

#[test]
fn update_keeps_expiry() {
    let mut e = logging();
    put(&mut e, "k", "v", 100, T0);
    e.get_write_lock("k", Expect::Value(&"v"), 1, T0 + ms(50))
        .unwrap();
    e.update(&1, "k", "w", T0 + ms(50)).unwrap();
    assert_eq!(get(&e, "k", T0 + ms(50)), Some("w"));
    assert_eq!(expires_at(&e, "k"), Some(T0 + ms(100)));
    assert_eq!(get(&e, "k", T0 + ms(100)), None);
}

#[test]
fn update_of_absent_or_expired_key_is_a_logged_no_op() {
    let mut e = logging();
    // Without a promise, an update of an absent key changes nothing and
    // is not logged.
    assert_eq!(e.update(&1, "absent", "w", T0), Err(CommitError::NoPromise));
    assert_eq!(e.summary().leases, 0);
    // Under a promise, a lease that expired meanwhile is not revived.
    e.get_write_lock("absent", Expect::Absent, 1, T0).unwrap();
    e.update(&1, "absent", "w", T0).unwrap();
    put(&mut e, "k", "v", 10, T0);
    e.get_write_lock("k", Expect::Value(&"v"), 1, T0).unwrap();
    e.update(&1, "k", "w", T0 + ms(10)).unwrap();
    assert_eq!(
        e.leases().read("k", |l| l.value),
        Some("v"),
        "an expired lease is not revived"
    );
    assert_eq!(get(&e, "k", T0 + ms(10)), None);
    let log = e.take_log(usize::MAX);
    assert_eq!(
        log[0],
        LogEntry::Update {
            key: "absent",
            value: "w"
        }
    );
    assert_eq!(
        log[2],
        LogEntry::Update {
            key: "k",
            value: "w"
        }
    );
}

// ------------------------------------------------------------------ expiry

#[test]
fn lease_is_valid_strictly_before_expiry() {
    let mut e = engine();
    put(&mut e, "k", "v", 1, T0);
    assert_eq!(expires_at(&e, "k"), Some(T0 + 1_000));
    assert_eq!(get(&e, "k", T0), Some("v"));
    assert_eq!(get(&e, "k", T0 + 999), Some("v"));
    assert_eq!(get(&e, "k", T0 + 1_000), None);
    // A zero lease is never valid.
    put(&mut e, "z", "v", 0, T0);
    assert_eq!(get(&e, "z", T0), None);
}

#[test]
fn sweep_removes_expired_leases_only() {
    let mut e = engine();
    put(&mut e, "short", "v", 10, T0);
    put(&mut e, "long", "v", 1_000, T0);
    assert_eq!(e.sweep(T0 + ms(10) - 1, 100).leases_expired, 0);
    // Swept within the millisecond after expiry.
    let r = e.sweep(T0 + ms(11), 100);
    assert_eq!((r.leases_expired, r.done), (1, true));
    assert_eq!(e.summary().leases, 1);
    assert_eq!(get(&e, "long", T0 + ms(11)), Some("v"));
    assert_eq!(e.sweep(T0 + ms(1_001), 100).leases_expired, 1);
    assert_eq!(e.summary(), Default::default());
}

#[test]
fn sweep_returns_leases_in_deadline_order() {
    let keys = ["k30", "k10", "k20", "k11"];
    let lease = [30, 10, 20, 11];
    for budget in [1, 100] {
        let mut e = engine();
        for (i, (k, l)) in keys.iter().zip(lease).enumerate() {
            put(&mut e, k, "v", l, T0);
            assert_eq!(
                e.wait_for_release(k, i as u64, 60_000, T0),
                WaitOutcome::Pending
            );
        }
        let mut woken = Vec::new();
        loop {
            let r = e.sweep(T0 + ms(100), budget);
            assert_eq!(r.leases_expired, r.wakes.len());
            woken.extend(r.wakes);
            if r.done {
                break;
            }
        }
        let order: Vec<_> = [1, 3, 2, 0].into_iter().map(Wake::Released).collect();
        assert_eq!(woken, order, "budget {budget}");
    }
}

#[test]
fn extended_lease_survives_its_stale_index_entry() {
    let mut e = engine();
    put(&mut e, "k", "v", 10, T0);
    e.extend_lease(&1, "k", "v", 100, 0, T0 + ms(5)).unwrap();
    assert_eq!(e.summary().expiry_entries, 2);
    let r = e.sweep(T0 + ms(50), 100);
    assert_eq!((r.leases_expired, r.done), (0, true));
    assert_eq!(e.summary().expiry_entries, 1);
    assert_eq!(get(&e, "k", T0 + ms(50)), Some("v"));
    assert_eq!(e.sweep(T0 + ms(106), 100).leases_expired, 1);
    assert_eq!(e.summary().expiry_entries, 0);

    // A shortened lease expires on its new deadline; the later stale
    // entry finds nothing.
    put(&mut e, "s", "v", 100, T0);
    e.extend_lease(&1, "s", "v", 10, 0, T0).unwrap();
    assert_eq!(e.sweep(T0 + ms(11), 100).leases_expired, 1);
    assert_eq!(e.sweep(T0 + ms(101), 100).leases_expired, 0);
    assert_eq!(e.summary(), Default::default());
}

#[test]
fn joint_extension_never_shortens_a_live_lease() {
    // Not joint: an extension may shorten (the holder's choice).
    let mut e = engine();
    put(&mut e, "k", "v", 60_000, T0);
    e.extend_lease(&1, "k", "v", 200, 0, T0).unwrap();
    assert_eq!(expires_at(&e, "k"), Some(T0 + ms(200)));

    // Joint (issue 13): the later expiry is kept, so the master's horizon
    // still covers the lease its holder counts on if the extension fails
    // on the new side; lengthening still lengthens.
    let mut e = engine();
    e.set_joint(true);
    put(&mut e, "k", "v", 60_000, T0);
    e.extend_lease(&1, "k", "v", 200, 0, T0).unwrap();
    assert_eq!(expires_at(&e, "k"), Some(T0 + ms(60_000)));
    assert_eq!(e.summary().expiry_entries, 1);
    assert_eq!(get(&e, "k", T0 + ms(59_000)), Some("v"));
    e.extend_lease(&2, "k", "v", 90_000, 0, T0).unwrap();
    assert_eq!(expires_at(&e, "k"), Some(T0 + ms(90_000)));
    // Another value is not kept (it is no extension), nor an expired lease.
    put(&mut e, "x", "v", 10, T0);
    e.extend_lease(&3, "x", "v", 5, 0, T0 + ms(20)).unwrap();
    assert_eq!(expires_at(&e, "x"), Some(T0 + ms(25)));
    // Left joint: shortening applies again.
    e.set_joint(false);
    e.extend_lease(&4, "k", "v", 200, 0, T0).unwrap();
    assert_eq!(expires_at(&e, "k"), Some(T0 + ms(200)));
}

/// Model of the joint rule: over random extensions, releases and relocks
/// of one key while joint, the expiry of a live lease of one value never
/// goes down, and is exactly the later of the two; not joint, it is what
/// the extension asked.
#[test]
fn joint_rule_matches_its_model() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for joint in [true, false] {
        let mut e = engine();
        e.set_joint(joint);
        let mut now = T0;
        let mut tag = 10;
        for _ in 0..2_000 {
            now += ms(next(50));
            tag += 1;
            let value = ["v", "w"][next(2) as usize];
            let live = e.leases().read("k", |l| {
                (l.value == value && l.is_valid_at(now)).then_some(l.expires_at)
            });
            match next(4) {
                0 => {
                    let _ = e.release(&"k", &value, &tag, now);
                }
                1 if get(&e, "k", now).is_none() => put(&mut e, "k", value, next(500), now),
                _ => {
                    let lease = next(500);
                    if e.extend_lease(&tag, "k", value, lease, 0, now).is_ok() {
                        let asked = now + ms(lease);
                        let want = match live.flatten() {
                            Some(l) if joint => l.max(asked),
                            _ => asked,
                        };
                        assert_eq!(expires_at(&e, "k"), Some(want));
                    }
                }
            }
        }
    }
}

#[test]
fn rewritten_expired_lease_is_not_swept_by_the_old_entry() {
    let mut e = engine();
    put(&mut e, "k", "v", 10, T0);
    put(&mut e, "k", "w", 100, T0 + ms(20)); // expired, never swept, rewritten
    assert_eq!(e.sweep(T0 + ms(30), 100).leases_expired, 0);
    assert_eq!(get(&e, "k", T0 + ms(30)), Some("w"));
}

#[test]
fn sweep_with_small_budget_finishes_over_several_calls() {
    let mut e = ttl(10);
    for (i, k) in ["a", "b", "c", "d", "e", "f", "g"].into_iter().enumerate() {
        put(&mut e, k, "v", 1 + i as u64, T0);
        e.get_write_lock(k, Expect::Value(&"v"), i as u32, T0)
            .unwrap();
        assert_eq!(
            e.wait_for(["x", "y", "z"][i % 3], i as u64, 5, T0),
            WaitOutcome::Pending
        );
    }
    let now = T0 + ms(100);
    let (mut leases, mut promises, mut timed_out, mut calls) = (0, 0, 0, 0);
    loop {
        let r = e.sweep(now, 3);
        calls += 1;
        assert!(r.leases_expired <= 3 && r.promises_expired <= 3 && r.timed_out.len() <= 3);
        leases += r.leases_expired;
        promises += r.promises_expired;
        timed_out += r.timed_out.len();
        if r.done {
            break;
        }
        assert!(calls < 10);
    }
    assert_eq!((leases, promises, timed_out), (7, 7, 7));
    assert!(calls >= 3);
    assert_eq!(e.summary(), Default::default());
    // Budget 0 still makes progress.
    put(&mut e, "a", "v", 1, T0);
    assert_eq!(e.sweep(now, 0).leases_expired, 1);
}

#[test]
fn sweep_many_leases_in_chunks() {
    let n: u32 = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let mut e: Engine<u32, u32, u32> = Engine::new(Config::default());
    for k in 0..n {
        // Spread over 1000 distinct milliseconds.
        e.write(&0, k, k, 1_000 + u64::from(k % 1_000), T0).unwrap();
    }
    assert_eq!(e.summary().leases, n as usize);
    let now = T0 + ms(3_000);
    let (mut total, mut calls) = (0, 0);
    loop {
        let r = e.sweep(now, 10_000);
        assert!(r.leases_expired <= 10_000);
        total += r.leases_expired;
        calls += 1;
        if r.done {
            break;
        }
    }
    assert_eq!(total, n as usize);
    assert_eq!(calls, (n as usize).div_ceil(10_000));
    assert_eq!((e.summary().leases, e.summary().expiry_entries), (0, 0));
}

#[test]
fn forever_lease_does_not_overflow() {
    let mut e = engine();
    put(&mut e, "k", "v", u64::MAX, T0);
    assert_eq!(expires_at(&e, "k"), Some(u64::MAX));
    assert_eq!(e.wait_for_release("k", 1, 10, T0), WaitOutcome::Pending);
    assert_eq!(e.next_wakeup(), Some(T0 + ms(10)));
    let r = e.sweep(T0 + ms(1_000_000), 100);
    assert_eq!((r.leases_expired, r.timed_out, r.done), (0, vec![1], true));
    assert_eq!(get(&e, "k", u64::MAX - 1), Some("v"));
}

// ----------------------------------------------------------------- waiters

#[test]
fn wait_for_present_key_answers_now() {
    let mut e = engine();
    put(&mut e, "k", "v", 100, T0);
    assert_eq!(e.wait_for("k", 1, 1_000, T0), WaitOutcome::Value("v"));
    assert_eq!(e.summary().waiters, 0);
    // Expired but unswept: waits.
    assert_eq!(
        e.wait_for("k", 1, 1_000, T0 + ms(100)),
        WaitOutcome::Pending
    );
}

#[test]
fn wait_for_is_woken_by_write_in_arrival_order() {
    let mut e = engine();
    for id in [3, 1, 2] {
        assert_eq!(e.wait_for("k", id, 1_000, T0), WaitOutcome::Pending);
    }
    assert_eq!(e.wait_for("other", 9, 1_000, T0), WaitOutcome::Pending);
    let wakes = e.write(&0, "k", "v", 100, T0).unwrap();
    assert_eq!(
        wakes,
        [
            Wake::Value(3, "v"),
            Wake::Value(1, "v"),
            Wake::Value(2, "v")
        ]
    );
    assert_eq!(e.summary().waiters, 1);
    // Without a promise, a write does not replace another value.
    assert_eq!(e.write(&0, "k", "w", 100, T0), Err(CommitError::NoPromise));
}

#[test]
fn wait_for_is_woken_by_extend_lease() {
    let mut e = engine();
    e.wait_for("k", 1, 1_000, T0);
    assert_eq!(
        e.extend_lease(&0, "k", "v", 100, 0, T0).unwrap(),
        [Wake::Value(1, "v")]
    );
}

#[test]
fn wait_for_is_woken_by_replay() {
    let mut e = engine();
    e.wait_for("k", 1, 1_000, T0);
    e.wait_for("k", 2, 1_000, T0);
    let w = LogEntry::Write {
        key: "k",
        value: "v",
        lease_ms: 100,
    };
    assert_eq!(e.replay(w, T0), [Wake::Value(1, "v"), Wake::Value(2, "v")]);
    assert_eq!(get(&e, "k", T0), Some("v"));
    e.wait_for("j", 3, 1_000, T0);
    let x = LogEntry::ExtendLease {
        key: "j",
        value: "u",
        lease_ms: 100,
    };
    assert_eq!(e.replay(x, T0), [Wake::Value(3, "u")]);
    assert_eq!(e.summary().waiters, 0);
}

#[test]
fn wait_for_release_of_absent_key_answers_now() {
    let mut e = engine();
    assert_eq!(e.wait_for_release("k", 1, 1_000, T0), WaitOutcome::Released);
    put(&mut e, "k", "v", 10, T0);
    assert_eq!(
        e.wait_for_release("k", 1, 1_000, T0 + ms(10)),
        WaitOutcome::Released
    );
    assert_eq!(e.summary().waiters, 0);
}

#[test]
fn wait_for_release_is_woken_by_release() {
    let mut e = engine();
    put(&mut e, "k", "v", 100, T0);
    e.wait_for_release("k", 1, 1_000, T0);
    e.wait_for_release("k", 2, 1_000, T0);
    assert!(e.release(&"k", &"w", &0, T0).is_err());
    assert_eq!(e.summary().waiters, 2);
    assert_eq!(
        e.release(&"k", &"v", &0, T0),
        Ok(vec![Wake::Released(1), Wake::Released(2)])
    );
    assert_eq!(e.summary().waiters, 0);
}

#[test]
fn wait_for_release_is_woken_by_replayed_release() {
    let mut e = engine();
    put(&mut e, "k", "v", 100, T0);
    e.wait_for_release("k", 1, 1_000, T0);
    assert!(e.replay(LogEntry::Release { key: "absent" }, T0).is_empty());
    assert_eq!(
        e.replay(LogEntry::Release { key: "k" }, T0),
        [Wake::Released(1)]
    );
    assert_eq!(get(&e, "k", T0), None);
}

#[test]
fn wait_for_release_is_woken_by_sweep_at_expiry() {
    let mut e = engine();
    put(&mut e, "k", "v", 1, T0);
    e.wait_for_release("k", 1, 60_000, T0);
    let at = e.next_wakeup().unwrap();
    assert!(
        (T0 + ms(1)..T0 + ms(2)).contains(&at),
        "within a millisecond of expiry"
    );
    assert!(e.sweep(at - 1, 100).wakes.is_empty());
    let r = e.sweep(at, 100);
    assert_eq!((r.leases_expired, r.wakes), (1, vec![Wake::Released(1)]));
    assert!(r.timed_out.is_empty());
    assert_eq!(e.next_wakeup(), None);
}

#[test]
fn waiters_time_out_via_sweep() {
    let mut e = engine();
    put(&mut e, "held", "v", 60_000, T0);
    e.wait_for("k", 1, 50, T0);
    e.wait_for_release("held", 2, 50, T0);
    e.wait_for("k", 3, 80, T0);
    assert!(e.sweep(T0 + ms(50) - 1, 100).timed_out.is_empty());
    let r = e.sweep(T0 + ms(50), 100);
    assert_eq!(r.timed_out, [1, 2]);
    assert!(r.wakes.is_empty());
    assert_eq!(e.summary().waiters, 1);
    // The timed-out waiters are forgotten.
    assert_eq!(
        e.write(&0, "k", "v", 100, T0 + ms(60)).unwrap(),
        [Wake::Value(3, "v")]
    );
    assert_eq!(e.release(&"held", &"v", &0, T0 + ms(60)), Ok(vec![]));
}

#[test]
fn next_wakeup_is_the_earliest_watched_expiry_or_deadline() {
    let mut e = engine();
    assert_eq!(e.next_wakeup(), None);
    put(&mut e, "a", "v", 100, T0);
    put(&mut e, "b", "v", 50, T0);
    put(&mut e, "unwatched", "v", 1, T0);
    assert_eq!(e.next_wakeup(), None, "leases nobody waits on do not count");
    e.wait_for("c", 1, 300, T0);
    assert_eq!(e.next_wakeup(), Some(T0 + ms(300)));
    e.wait_for_release("a", 2, 1_000, T0);
    let a = e.next_wakeup().unwrap();
    assert!((T0 + ms(100)..T0 + ms(101)).contains(&a));
    e.wait_for_release("b", 3, 1_000, T0);
    let b = e.next_wakeup().unwrap();
    assert!((T0 + ms(50)..T0 + ms(51)).contains(&b));
    // Extending the watched lease moves the wakeup.
    e.extend_lease(&0, "b", "v", 500, 0, T0).unwrap();
    assert_eq!(e.next_wakeup(), Some(a));
    e.wait_for("d", 4, 20, T0);
    assert_eq!(e.next_wakeup(), Some(T0 + ms(20)));
}

// --------------------------------------------------------- transaction log

#[test]
fn nothing_is_logged_when_disabled() {
    let mut e = engine();
    put(&mut e, "k", "v", 100, T0);
    e.get_write_lock("k", Expect::Value(&"v"), 0, T0).unwrap();
    e.update(&0, "k", "w", T0).unwrap();
    e.get_write_lock("k", Expect::Value(&"w"), 0, T0).unwrap();
    e.extend_lease(&0, "k", "w", 100, 0, T0).unwrap();
    e.release(&"k", &"w", &0, T0).unwrap();
    assert_eq!(e.summary().log, 0);
    assert!(e.take_log(10).is_empty());

    e.set_log_enabled(true);
    put(&mut e, "k", "v", 100, T0);
    assert_eq!(e.summary().log, 1);
    e.set_log_enabled(false);
    assert_eq!(e.summary().log, 0, "disabling clears the log");
}

#[test]
fn log_entries_in_order_with_wire_shapes() {
    let mut e = logging();
    put(&mut e, "k", "v", 100, T0);
    e.get_write_lock("k", Expect::Value(&"v"), 0, T0).unwrap();
    e.update(&0, "k", "w", T0).unwrap();
    e.get_write_lock("k", Expect::Value(&"w"), 0, T0).unwrap();
    e.extend_lease(&0, "k", "w", 200, 0, T0).unwrap();
    assert_eq!(e.release(&"k", &"x", &0, T0), Err(ReleaseError::NotOwner));
    e.release(&"k", &"w", &0, T0).unwrap();
    assert_eq!(e.release(&"k", &"w", &0, T0), Err(ReleaseError::NotFound));
    e.release_write_lock(&0);
    e.get_write_lock("j", Expect::Absent, 1, T0).unwrap();
    assert_eq!(
        e.take_log(100),
        [
            LogEntry::Write {
                key: "k",
                value: "v",
                lease_ms: 100
            },
            LogEntry::Update {
                key: "k",
                value: "w"
            },
            LogEntry::ExtendLease {
                key: "k",
                value: "w",
                lease_ms: 200
            },
            LogEntry::Release { key: "k" },
        ]
    );
    assert_eq!(e.summary().log, 0);
}

#[test]
fn take_log_takes_oldest_first() {
    let mut e = logging();
    for (k, l) in [("a", 1), ("b", 2), ("c", 3)] {
        e.write(&0, k, "v", l, T0).unwrap();
    }
    let keys = |v: Vec<LogEntry<&'static str, &'static str>>| {
        v.into_iter()
            .map(|e| match e {
                LogEntry::Write { key, .. } => key,
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(e.take_log(2)), ["a", "b"]);
    assert_eq!(e.summary().log, 1);
    assert_eq!(keys(e.take_log(0)), Vec::<&str>::new());
    assert_eq!(keys(e.take_log(5)), ["c"]);
    assert!(e.take_log(5).is_empty());
}

#[test]
fn log_limit_drops_oldest() {
    let mut e = with(Config {
        log_enabled: true,
        log_limit: 2,
        ..Config::default()
    });
    for (k, l) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        e.write(&0, k, "v", l, T0).unwrap();
    }
    assert_eq!((e.summary().log, e.summary().log_dropped), (2, 2));
    assert_eq!(
        e.take_log(10),
        [
            LogEntry::Write {
                key: "c",
                value: "v",
                lease_ms: 3
            },
            LogEntry::Write {
                key: "d",
                value: "v",
                lease_ms: 4
            },
        ]
    );

    let mut z = with(Config {
        log_enabled: true,
        log_limit: 0,
        ..Config::default()
    });
    z.write(&0, "a", "v", 1, T0).unwrap();
    z.write(&0, "b", "v", 1, T0).unwrap();
    assert_eq!((z.summary().log, z.summary().log_dropped), (0, 2));
}

#[test]
fn replay_reproduces_the_masters_lease_table() {
    fn ship(m: &mut E, r: &mut E, now: Micros) {
        for entry in m.take_log(usize::MAX) {
            r.replay(entry, now);
        }
        assert_eq!(table(m), table(r));
    }
    let (mut m, mut r) = (logging(), engine());
    let mut now = T0;
    put(&mut m, "a", "1", 100, now);
    put(&mut m, "b", "1", 50, now);
    put(&mut m, "c", "1", 10, now);
    ship(&mut m, &mut r, now);
    now += ms(20);
    m.get_write_lock("a", Expect::Value(&"1"), 0, now).unwrap();
    m.update(&0, "a", "2", now).unwrap();
    m.get_write_lock("c", Expect::ValueOrAbsent(&"1"), 0, now)
        .unwrap();
    m.update(&0, "c", "2", now).unwrap(); // expired: a no-op on both
    m.get_write_lock("b", Expect::Value(&"1"), 0, now).unwrap();
    m.extend_lease(&0, "b", "1", 500, 0, now).unwrap();
    ship(&mut m, &mut r, now);
    now += ms(20);
    m.release(&"a", &"2", &0, now).unwrap();
    m.write(&0, "d", "9", 30, now).unwrap();
    m.extend_lease(&0, "e", "7", 5, 0, now).unwrap();
    ship(&mut m, &mut r, now);
    now += ms(200);
    assert_eq!(m.sweep(now, 100), r.sweep(now, 100));
    ship(&mut m, &mut r, now);
    assert_eq!(table(&m).keys().copied().collect::<Vec<_>>(), ["b"]);
}

// ------------------------------------------------------------ housekeeping

#[test]
fn reset_volatile_and_clear() {
    let mut e = logging();
    put(&mut e, "k", "v", 100, T0);
    e.get_write_lock("j", Expect::Absent, 1, T0).unwrap();
    e.wait_for("j", 1, 100, T0);
    e.reset_volatile();
    let s = e.summary();
    assert_eq!((s.leases, s.promises, s.waiters, s.log), (1, 0, 0, 1));
    e.clear();
    assert_eq!(e.summary(), Default::default());
    assert_eq!(e.next_wakeup(), None);
}

#[test]
fn the_wakeup_timer_runs_past_the_next_wakeup_by_the_margin() {
    let mut e = engine();
    assert_eq!(e.wakeup_in(T0), None);
    e.wait_for("c", 1, 300, T0);
    let at = e.next_wakeup().unwrap();
    let now = T0 + 17;
    assert_eq!(
        e.wakeup_in(now),
        Some(at - now + locker_core::WAKEUP_MARGIN)
    );
    // Past due: the margin only.
    assert_eq!(e.wakeup_in(at + 5), Some(locker_core::WAKEUP_MARGIN));
}
